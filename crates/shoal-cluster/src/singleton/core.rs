//! The singleton manager's decisions, without I/O: which node runs the singleton, when it
//! may start, when it must stop, whom to ask for the hand-over.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_remote::{RemoteReplyTo, UniqueAddress};
use tokio::time::Instant;

use crate::member::{Member, MemberStatus};
use crate::membership::ClusterState;

/// What singleton managers tell each other (and what proxies ask).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ManagerMessage {
    /// "I am the oldest now: stop yours and confirm." Sent by the designated node to older
    /// members that are leaving or down.
    HandOverToMe,
    /// "This incarnation runs no singleton and never will again." Sent only once the sender
    /// is itself `Leaving` or later (its status can never go back to `Up`).
    Stopped,
    /// A proxy asks whether the singleton runs here.
    Identify(RemoteReplyTo<bool>),
}

/// An effect of the core, for the manager task to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start the singleton here.
    Start,
    /// Stop the singleton here and call [`Core::stopped`] once it has terminated.
    Stop,
    /// Ask these older members to hand over.
    RequestHandOver(Vec<UniqueAddress>),
    /// Tell these members this node runs no singleton and never will again.
    ConfirmStopped(Vec<UniqueAddress>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    Running,
    Stopping,
}

/// The designated singleton node in `state`: the oldest `Up` member with `role`.
pub(crate) fn designated(state: &ClusterState, role: Option<&str>) -> Option<UniqueAddress> {
    state
        .members
        .iter()
        .filter(|m| m.status == MemberStatus::Up && has_role(m, role))
        .min_by(|a, b| a.age_cmp(b))
        .map(|m| m.address)
}

fn has_role(member: &Member, role: Option<&str>) -> bool {
    role.is_none_or(|r| member.has_role(r))
}

/// One node's singleton manager state.
#[derive(Debug)]
pub(crate) struct Core {
    me: UniqueAddress,
    role: Option<String>,
    removal_margin: Duration,
    retry_interval: Duration,
    phase: Phase,
    /// This node is `Leaving` or later: it will never start the singleton again.
    retired: bool,
    /// Members that confirmed they run none and never will.
    confirmed: BTreeSet<UniqueAddress>,
    /// Members of the role in the last view.
    listed: BTreeMap<UniqueAddress, Member>,
    /// Older members that disappeared without confirming, and when.
    removed: BTreeMap<UniqueAddress, Instant>,
    last_request: Option<Instant>,
}

impl Core {
    pub(crate) fn new(
        me: UniqueAddress,
        role: Option<String>,
        removal_margin: Duration,
        retry_interval: Duration,
    ) -> Self {
        Core {
            me,
            role,
            removal_margin,
            retry_interval,
            phase: Phase::Idle,
            retired: false,
            confirmed: BTreeSet::new(),
            listed: BTreeMap::new(),
            removed: BTreeMap::new(),
            last_request: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether this node has retired for good.
    #[cfg(test)]
    pub(crate) fn retired(&self) -> bool {
        self.retired
    }

    /// Re-evaluate after the view changed, a message arrived or time passed.
    pub(crate) fn evaluate(&mut self, state: &ClusterState, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        self.track_removals(state, now);
        let self_status = if state.terminated {
            Some(MemberStatus::Removed)
        } else {
            state.self_status
        };
        let up = self_status == Some(MemberStatus::Up);
        if !self.retired && self_status.is_some_and(|s| s > MemberStatus::Up) {
            self.retired = true;
            if self.phase == Phase::Idle {
                actions.push(self.confirm_to_all());
            }
        }
        let designated_here = up && designated(state, self.role.as_deref()) == Some(self.me);
        match self.phase {
            Phase::Running if !designated_here => {
                self.phase = Phase::Stopping;
                actions.push(Action::Stop);
            }
            Phase::Idle if designated_here => {
                let (asked, waiting) = self.blockers(now);
                if asked.is_empty() && !waiting {
                    self.phase = Phase::Running;
                    actions.push(Action::Start);
                } else if !asked.is_empty()
                    && self
                        .last_request
                        .is_none_or(|at| now.duration_since(at) >= self.retry_interval)
                {
                    self.last_request = Some(now);
                    actions.push(Action::RequestHandOver(asked));
                }
            }
            _ => {}
        }
        actions
    }

    /// The singleton has terminated after [`Action::Stop`].
    pub(crate) fn stopped(&mut self, state: &ClusterState, now: Instant) -> Vec<Action> {
        self.phase = Phase::Idle;
        let mut actions = Vec::new();
        if self.retired {
            actions.push(self.confirm_to_all());
        }
        actions.extend(self.evaluate(state, now));
        actions
    }

    /// A manager message other than `Identify`.
    pub(crate) fn received(
        &mut self,
        from: UniqueAddress,
        message: &ManagerMessage,
        state: &ClusterState,
        now: Instant,
    ) -> Vec<Action> {
        match message {
            ManagerMessage::HandOverToMe => {
                if self.phase == Phase::Idle && self.retired {
                    vec![Action::ConfirmStopped(vec![from])]
                } else {
                    // Running: evaluate stops it once this node sees it is no longer the
                    // oldest, and confirms after the stop.
                    self.evaluate(state, now)
                }
            }
            ManagerMessage::Stopped => {
                self.confirmed.insert(from);
                self.removed.remove(&from);
                self.evaluate(state, now)
            }
            ManagerMessage::Identify(_) => Vec::new(),
        }
    }

    /// Older members that may still run the singleton: those listed (leaving or down, to be
    /// asked) and whether any removed one is still within the removal margin.
    fn blockers(&self, now: Instant) -> (Vec<UniqueAddress>, bool) {
        let Some(me) = self.listed.get(&self.me) else {
            return (Vec::new(), true);
        };
        let asked = self
            .listed
            .values()
            .filter(|m| m.address != self.me && m.up_number.is_some())
            .filter(|m| m.age_cmp(me).is_lt() && !self.confirmed.contains(&m.address))
            .map(|m| m.address)
            .collect();
        let waiting = self
            .removed
            .values()
            .any(|at| now.duration_since(*at) < self.removal_margin);
        (asked, waiting)
    }

    fn track_removals(&mut self, state: &ClusterState, now: Instant) {
        let role = self.role.as_deref();
        let current: BTreeMap<UniqueAddress, Member> = state
            .members
            .iter()
            .filter(|m| has_role(m, role))
            .map(|m| (m.address, m.clone()))
            .collect();
        let me = current.get(&self.me).or_else(|| self.listed.get(&self.me));
        for (address, member) in &self.listed {
            if current.contains_key(address) || self.confirmed.contains(address) {
                continue;
            }
            let older = me.is_none_or(|me| member.age_cmp(me).is_lt());
            if older && member.up_number.is_some() && *address != self.me {
                self.removed.entry(*address).or_insert(now);
            }
        }
        let margin = self.removal_margin;
        self.removed
            .retain(|_, at| now.duration_since(*at) < margin);
        self.listed = current;
    }

    fn confirm_to_all(&self) -> Action {
        Action::ConfirmStopped(
            self.listed
                .keys()
                .copied()
                .filter(|a| *a != self.me)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const MARGIN: Duration = Duration::from_secs(3);
    const RETRY: Duration = Duration::from_secs(1);

    fn node(port: u16) -> UniqueAddress {
        UniqueAddress::new(
            format!("127.0.0.1:{port}").parse().unwrap(),
            u64::from(port),
        )
    }

    fn member(port: u16, status: MemberStatus, up: Option<u64>) -> Member {
        Member {
            address: node(port),
            status,
            roles: BTreeSet::new(),
            up_number: up,
        }
    }

    fn view(me: u16, members: Vec<Member>) -> ClusterState {
        let self_status = members
            .iter()
            .find(|m| m.address == node(me))
            .map(|m| m.status);
        ClusterState {
            self_node: node(me),
            self_status,
            members,
            unreachable: BTreeSet::new(),
            leader: None,
            converged: true,
            terminated: false,
        }
    }

    fn core(me: u16) -> Core {
        Core::new(node(me), None, MARGIN, RETRY)
    }

    use MemberStatus::*;

    #[test]
    fn the_oldest_up_member_starts_at_once_and_no_one_else() {
        let t = Instant::now();
        let members = vec![
            member(1, Up, Some(2)),
            member(2, Up, Some(1)),
            member(3, Joining, None),
        ];
        let mut oldest = core(2);
        assert_eq!(
            oldest.evaluate(&view(2, members.clone()), t),
            vec![Action::Start]
        );
        assert_eq!(oldest.evaluate(&view(2, members.clone()), t), vec![]);
        for other in [1, 3] {
            assert_eq!(
                core(other).evaluate(&view(other, members.clone()), t),
                vec![]
            );
        }
    }

    #[test]
    fn a_joining_or_not_yet_listed_node_never_starts() {
        let t = Instant::now();
        let mut c = core(1);
        assert_eq!(
            c.evaluate(&view(1, vec![member(1, Joining, None)]), t),
            vec![]
        );
        assert_eq!(c.evaluate(&view(1, vec![]), t), vec![]);
    }

    #[test]
    fn a_role_restricts_the_candidates() {
        let t = Instant::now();
        let mut with_role = member(2, Up, Some(2));
        with_role.roles.insert("worker".into());
        let members = vec![member(1, Up, Some(1)), with_role];
        let mut c = Core::new(node(2), Some("worker".into()), MARGIN, RETRY);
        assert_eq!(c.evaluate(&view(2, members), t), vec![Action::Start]);
    }

    #[test]
    fn leaving_hands_over_only_after_the_old_one_confirms() {
        let t = Instant::now();
        let mut old = core(1);
        let mut young = core(2);
        let before = vec![member(1, Up, Some(1)), member(2, Up, Some(2))];
        assert_eq!(
            old.evaluate(&view(1, before.clone()), t),
            vec![Action::Start]
        );
        assert_eq!(young.evaluate(&view(2, before), t), vec![]);

        // The old one leaves. The young one sees it first: asks, does not start.
        let leaving = vec![member(1, Leaving, Some(1)), member(2, Up, Some(2))];
        assert_eq!(
            young.evaluate(&view(2, leaving.clone()), t),
            vec![Action::RequestHandOver(vec![node(1)])]
        );
        // No repeat before the retry interval, then again.
        assert_eq!(
            young.evaluate(&view(2, leaving.clone()), t + RETRY / 2),
            vec![]
        );
        assert_eq!(
            young.evaluate(&view(2, leaving.clone()), t + RETRY),
            vec![Action::RequestHandOver(vec![node(1)])]
        );

        // The old one sees itself leaving: stops; confirms once stopped.
        assert_eq!(
            old.evaluate(&view(1, leaving.clone()), t),
            vec![Action::Stop]
        );
        assert_eq!(
            old.received(
                node(2),
                &ManagerMessage::HandOverToMe,
                &view(1, leaving.clone()),
                t
            ),
            vec![],
            "no confirmation while it still runs"
        );
        assert_eq!(
            old.stopped(&view(1, leaving.clone()), t),
            vec![Action::ConfirmStopped(vec![node(2)])]
        );
        // Later requests are answered at once.
        assert_eq!(
            old.received(
                node(2),
                &ManagerMessage::HandOverToMe,
                &view(1, leaving.clone()),
                t
            ),
            vec![Action::ConfirmStopped(vec![node(2)])]
        );
        assert_eq!(
            young.received(node(1), &ManagerMessage::Stopped, &view(2, leaving), t),
            vec![Action::Start]
        );
    }

    #[test]
    fn an_up_node_that_does_not_run_it_never_confirms() {
        let t = Instant::now();
        // Node 2 is Up and not the oldest: it must not promise anything.
        let members = vec![member(1, Up, Some(1)), member(2, Up, Some(2))];
        let mut c = core(2);
        c.evaluate(&view(2, members.clone()), t);
        assert_eq!(
            c.received(node(3), &ManagerMessage::HandOverToMe, &view(2, members), t),
            vec![]
        );
    }

    #[test]
    fn a_downed_oldest_blocks_until_removed_plus_the_margin() {
        let t = Instant::now();
        let mut young = core(2);
        let up = vec![member(1, Up, Some(1)), member(2, Up, Some(2))];
        assert_eq!(young.evaluate(&view(2, up), t), vec![]);
        // Down but still listed: asked (it may be reachable again), not started.
        let down = vec![member(1, Down, Some(1)), member(2, Up, Some(2))];
        assert_eq!(
            young.evaluate(&view(2, down), t),
            vec![Action::RequestHandOver(vec![node(1)])]
        );
        // Removed: wait out the margin.
        let removed = vec![member(2, Up, Some(2))];
        let at = t + Duration::from_secs(1);
        assert_eq!(young.evaluate(&view(2, removed.clone()), at), vec![]);
        assert_eq!(
            young.evaluate(&view(2, removed.clone()), at + MARGIN / 2),
            vec![]
        );
        assert_eq!(
            young.evaluate(&view(2, removed), at + MARGIN),
            vec![Action::Start]
        );
    }

    #[test]
    fn a_confirmed_member_needs_no_margin_when_removed() {
        let t = Instant::now();
        let mut young = core(2);
        let leaving = vec![member(1, Leaving, Some(1)), member(2, Up, Some(2))];
        young.evaluate(&view(2, leaving.clone()), t);
        assert_eq!(
            young.received(node(1), &ManagerMessage::Stopped, &view(2, leaving), t),
            vec![Action::Start]
        );
        let only_me = vec![member(2, Up, Some(2))];
        assert_eq!(young.evaluate(&view(2, only_me), t), vec![]);
        assert_eq!(young.phase(), Phase::Running);
    }

    #[test]
    fn a_downed_or_terminated_node_stops_and_retires() {
        let t = Instant::now();
        let mut c = core(1);
        let up = vec![member(1, Up, Some(1)), member(2, Up, Some(2))];
        assert_eq!(c.evaluate(&view(1, up.clone()), t), vec![Action::Start]);
        let mut terminated = view(1, up);
        terminated.terminated = true;
        assert_eq!(c.evaluate(&terminated, t), vec![Action::Stop]);
        assert!(c.retired());
        assert_eq!(
            c.stopped(&terminated, t),
            vec![Action::ConfirmStopped(vec![node(2)])]
        );
        // And never starts again.
        let alone = vec![member(1, Down, Some(1))];
        assert_eq!(c.evaluate(&view(1, alone), t + MARGIN * 10), vec![]);
    }

    #[test]
    fn a_member_that_never_was_up_is_no_blocker() {
        let t = Instant::now();
        let mut c = core(2);
        let members = vec![member(1, Down, None), member(2, Up, Some(1))];
        assert_eq!(c.evaluate(&view(2, members), t), vec![Action::Start]);
    }
}

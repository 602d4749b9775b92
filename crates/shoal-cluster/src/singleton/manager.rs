//! The manager task: one per singleton per node of the role. Carries out the core's actions.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_actor::{Actor, ActorRef, ActorSystem, Props};
use shoal_remote::{Remote, RemoteInbox, UniqueAddress};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::core::{Action, Core, ManagerMessage};
use crate::membership::ClusterState;

/// How often the manager re-evaluates without news (margins, hand-over retries).
const TICK: Duration = Duration::from_millis(100);

pub(crate) struct Manager<A: Actor> {
    pub(crate) core: Core,
    pub(crate) state: watch::Receiver<ClusterState>,
    pub(crate) inbox: RemoteInbox<ManagerMessage>,
    pub(crate) remote: Remote,
    pub(crate) system: ActorSystem,
    pub(crate) singleton_name: String,
    pub(crate) manager_name: String,
    pub(crate) props: Box<dyn FnMut() -> Props<A> + Send>,
    pub(crate) stop_message: Option<Box<dyn FnMut() -> A::Msg + Send>>,
    pub(crate) hand_over_timeout: Duration,
}

impl<A> Manager<A>
where
    A: Actor,
    A::Msg: Serialize + DeserializeOwned,
{
    pub(crate) async fn run(mut self) {
        let mut actor: Option<ActorRef<A::Msg>> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut state_open = true;
        loop {
            let actions = tokio::select! {
                changed = self.state.changed(), if state_open => {
                    if changed.is_err() {
                        // The cluster task has ended: this node is out for good.
                        state_open = false;
                    }
                    let state = self.current_state(state_open);
                    self.core.evaluate(&state, Instant::now())
                }
                message = self.inbox.recv() => {
                    let Some((from, message)) = message else { break };
                    if let ManagerMessage::Identify(reply) = message {
                        let running = actor.as_ref().is_some_and(|a| a.stop_reason().is_none());
                        reply.send(running);
                        continue;
                    }
                    let state = self.current_state(state_open);
                    self.core.received(from, &message, &state, Instant::now())
                }
                _ = tick.tick() => {
                    let state = self.current_state(state_open);
                    self.core.evaluate(&state, Instant::now())
                }
            };
            let mut pending = actions;
            while !pending.is_empty() {
                let mut next = Vec::new();
                for action in pending {
                    match action {
                        Action::Start => actor = self.start(),
                        Action::Stop => {
                            if let Some(running) = actor.take() {
                                self.stop(running).await;
                            }
                            let state = self.current_state(state_open);
                            next.extend(self.core.stopped(&state, Instant::now()));
                        }
                        Action::RequestHandOver(nodes) => {
                            for node in nodes {
                                self.send(node, ManagerMessage::HandOverToMe);
                            }
                        }
                        Action::ConfirmStopped(nodes) => {
                            for node in nodes {
                                self.send(node, ManagerMessage::Stopped);
                            }
                        }
                    }
                }
                pending = next;
            }
        }
        if let Some(running) = actor.take() {
            self.stop(running).await;
        }
    }

    fn current_state(&self, open: bool) -> ClusterState {
        let mut state = self.state.borrow().clone();
        if !open {
            state.terminated = true;
        }
        state
    }

    fn start(&mut self) -> Option<ActorRef<A::Msg>> {
        let props = (self.props)();
        let actor = self.system.spawn(&self.singleton_name, props);
        if let Err(e) = self.remote.register(&self.singleton_name, actor.clone()) {
            tracing::error!(singleton = %self.singleton_name, error = %e,
                "singleton started but could not be registered: unreachable from other nodes");
        }
        tracing::info!(singleton = %self.singleton_name, node = %self.remote.local(), "singleton started");
        Some(actor)
    }

    async fn stop(&mut self, actor: ActorRef<A::Msg>) {
        if actor.stop_reason().is_none() {
            match self.stop_message.as_mut() {
                Some(make) => {
                    if actor.tell(make()).is_err() {
                        actor.stop().await;
                    }
                }
                None => actor.stop().await,
            }
            if tokio::time::timeout(self.hand_over_timeout, actor.terminated())
                .await
                .is_err()
            {
                tracing::warn!(singleton = %self.singleton_name, timeout = ?self.hand_over_timeout,
                    "singleton did not stop within the hand-over timeout: killed");
                actor.kill();
                actor.terminated().await;
            }
        }
        self.remote.unregister(&self.singleton_name);
        tracing::info!(singleton = %self.singleton_name, node = %self.remote.local(), "singleton stopped");
    }

    fn send(&self, to: UniqueAddress, message: ManagerMessage) {
        let target = self
            .remote
            .resolve::<ManagerMessage>(to, &self.manager_name);
        if let Err(e) = target.tell(message) {
            tracing::debug!(%to, reason = %e.reason, "singleton manager message not sent");
        }
    }
}

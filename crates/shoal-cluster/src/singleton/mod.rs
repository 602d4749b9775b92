//! Cluster singletons: one instance of an actor in the whole cluster, on the oldest `Up`
//! member (optionally of a role), handed over when that member leaves, restarted elsewhere
//! when it crashes — and a proxy on every node that finds it and buffers while it moves.
//!
//! ```text
//!  node A (oldest)            node B                     node C (no role)
//!  ┌──────────────┐          ┌──────────────┐           ┌──────────────┐
//!  │ manager ──── singleton  │ manager      │           │              │
//!  │ proxy ───────┘  ▲       │ proxy ───────┼──► A      │ proxy ───────┼──► A
//!  └──────────────┘  │       └──────────────┘           └──────────────┘
//! ```
//!
//! # Who runs it
//!
//! Every node of the role runs a *manager*. The designated node is the oldest `Up` member of
//! the role in the manager's own view ([`Member::age_cmp`](crate::Member::age_cmp): the order
//! members became `Up`, which every node agrees on). A designated manager starts the singleton
//! only when no older member could still run one:
//!
//! * an older member that is `Leaving`, `Exiting` or `Down` but still listed is asked
//!   (`HandOverToMe`, repeated every `hand_over_retry_interval`) until it answers `Stopped`.
//!   A manager sends `Stopped` only once its node is `Leaving` or later — a status that never
//!   returns to `Up` — and its singleton has terminated, so the answer is a promise for good;
//! * an older member that disappeared from the view without confirming (downed and removed,
//!   typically after a crash or on the other side of a partition) blocks for
//!   `removal_margin` after its removal. The default equals the resolver's `stable_after`:
//!   the other side of a partition takes the same decision after the same wait and stops its
//!   singleton when it sees itself downed, before this side starts a new one (Akka's
//!   `down-removal-margin`).
//!
//! A manager whose node is no longer designated (it leaves, is downed, or its cluster task
//! ended) stops the singleton — with the stop message if one was given, killed after
//! `hand_over_timeout` — and then confirms. A singleton that stops by itself is not
//! restarted until the singleton moves (supervise it with a restart strategy instead).
//!
//! # The proxy
//!
//! [`SingletonProxy`] (on every node, with or without the role) asks the designated node's
//! manager whether the singleton runs there (every `identify_interval` until it does), then
//! sends directly. While the designated node changes it buffers up to `buffer_size`
//! messages, dropping the oldest first.
//!
//! # Guarantees
//!
//! * At most one running singleton per cluster as long as the split-brain resolver's two
//!   sides decide within `removal_margin` of each other. A side that decides later (for
//!   example by down-all-when-unstable, up to `stable_after` + `down_all_when_unstable` after
//!   its first unreachability) runs its old singleton beside the new one until it does; the
//!   simulation (`tests/turmoil_sim.rs`) checks after every step that this is the only way
//!   two ever run at once, and `docs/cluster.md` gives the seeds that show it.
//! * Delivery through the proxy is at most once; messages in flight when the singleton's node
//!   crashes are lost. A singleton that must not lose work persists it (event sourcing).

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_actor::{Actor, ActorSystem, Props};
use shoal_remote::{RegisterError, Remote};

use crate::runner::Cluster;

mod core;
mod manager;
mod proxy;

pub use proxy::SingletonProxy;

/// Settings of one singleton (the same on every node).
#[derive(Debug, Clone, PartialEq)]
pub struct SingletonSettings {
    /// The singleton's name, unique per cluster. It is registered on the Remote as
    /// `shoal.singleton.{name}`.
    pub name: String,
    /// Run only on members with this role (the proxy works on every node).
    pub role: Option<String>,
    /// How long a designated node waits after an older member disappeared without
    /// confirming that it stopped. Default 3.5 s (the resolver's default `stable_after`).
    pub removal_margin: Duration,
    /// How often a designated node repeats `HandOverToMe`. Default 1 s.
    pub hand_over_retry_interval: Duration,
    /// How long a stopping singleton may take before it is killed. Default 10 s.
    pub hand_over_timeout: Duration,
    /// Messages a proxy buffers while the singleton is not located. Default 1000 (Akka's).
    pub buffer_size: usize,
    /// How often a proxy asks the designated node whether the singleton runs there.
    /// Default 200 ms.
    pub identify_interval: Duration,
}

impl SingletonSettings {
    /// Defaults for a singleton called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        SingletonSettings {
            name: name.into(),
            role: None,
            removal_margin: Duration::from_millis(3500),
            hand_over_retry_interval: Duration::from_secs(1),
            hand_over_timeout: Duration::from_secs(10),
            buffer_size: 1000,
            identify_interval: Duration::from_millis(200),
        }
    }

    /// Run only on members with `role`.
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// Set the removal margin (see [`removal_margin`](Self::removal_margin)).
    pub fn with_removal_margin(mut self, margin: Duration) -> Self {
        self.removal_margin = margin;
        self
    }

    fn singleton_name(&self) -> String {
        format!("shoal.singleton.{}", self.name)
    }

    fn manager_name(&self) -> String {
        format!("shoal.singleton.{}.manager", self.name)
    }
}

/// Why a singleton could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SingletonError {
    /// The name is empty, too long, or already used on this node.
    #[error("singleton {name:?}: {source}")]
    Register {
        /// The singleton's name.
        name: String,
        /// What the Remote said.
        source: RegisterError,
    },
    /// A setting is out of range.
    #[error("singleton {name:?}: {reason}")]
    InvalidSettings {
        /// The singleton's name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Entry points: run a singleton ([`start`](Self::start)) or only reach one
/// ([`proxy`](Self::proxy)).
#[derive(Debug)]
pub struct ClusterSingleton;

impl ClusterSingleton {
    /// Run the singleton's manager on this node (if it has the role) and return a proxy.
    /// `props` makes the actor each time this node becomes the singleton's home; it is
    /// stopped gracefully ([`ActorRef::stop`](shoal_actor::ActorRef::stop)) on hand-over.
    pub fn start<A>(
        cluster: &Cluster,
        remote: &Remote,
        system: &ActorSystem,
        settings: SingletonSettings,
        props: impl FnMut() -> Props<A> + Send + 'static,
    ) -> Result<SingletonProxy<A::Msg>, SingletonError>
    where
        A: Actor,
        A::Msg: Serialize + DeserializeOwned,
    {
        Self::start_inner(cluster, remote, system, settings, Box::new(props), None)
    }

    /// [`start`](Self::start), stopping the singleton on hand-over by sending it the message
    /// `stop` makes (so a persistent singleton can finish its work first); it is killed if it
    /// has not stopped within `hand_over_timeout`.
    pub fn start_with_stop_message<A>(
        cluster: &Cluster,
        remote: &Remote,
        system: &ActorSystem,
        settings: SingletonSettings,
        props: impl FnMut() -> Props<A> + Send + 'static,
        stop: impl FnMut() -> A::Msg + Send + 'static,
    ) -> Result<SingletonProxy<A::Msg>, SingletonError>
    where
        A: Actor,
        A::Msg: Serialize + DeserializeOwned,
    {
        Self::start_inner(
            cluster,
            remote,
            system,
            settings,
            Box::new(props),
            Some(Box::new(stop)),
        )
    }

    fn start_inner<A>(
        cluster: &Cluster,
        remote: &Remote,
        system: &ActorSystem,
        settings: SingletonSettings,
        props: Box<dyn FnMut() -> Props<A> + Send>,
        stop_message: Option<Box<dyn FnMut() -> A::Msg + Send>>,
    ) -> Result<SingletonProxy<A::Msg>, SingletonError>
    where
        A: Actor,
        A::Msg: Serialize + DeserializeOwned,
    {
        check(&settings)?;
        let proxy = Self::proxy(cluster, remote, settings.clone())?;
        let has_role = settings
            .role
            .as_ref()
            .is_none_or(|r| cluster.roles().contains(r));
        if has_role {
            let (_, inbox) = remote
                .register_channel::<core::ManagerMessage>(&settings.manager_name(), 1024)
                .map_err(|source| SingletonError::Register {
                    name: settings.name.clone(),
                    source,
                })?;
            let manager = manager::Manager {
                core: core::Core::new(
                    cluster.self_node(),
                    settings.role.clone(),
                    settings.removal_margin,
                    settings.hand_over_retry_interval,
                ),
                state: cluster.state(),
                inbox,
                remote: remote.clone(),
                system: system.clone(),
                singleton_name: settings.singleton_name(),
                manager_name: settings.manager_name(),
                props,
                stop_message,
                hand_over_timeout: settings.hand_over_timeout,
            };
            let span = tracing::info_span!("singleton", name = %settings.name);
            tokio::spawn(tracing::Instrument::instrument(manager.run(), span));
        }
        Ok(proxy)
    }

    /// A proxy to the singleton `settings.name`, running wherever it runs (this node needs
    /// no role for it).
    pub fn proxy<M>(
        cluster: &Cluster,
        remote: &Remote,
        settings: SingletonSettings,
    ) -> Result<SingletonProxy<M>, SingletonError>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        check(&settings)?;
        let (proxy, rx, target) = proxy::channel(settings.buffer_size, remote);
        let task = proxy::ProxyTask {
            state: cluster.state(),
            remote: remote.clone(),
            role: settings.role.clone(),
            singleton_name: settings.singleton_name(),
            manager_name: settings.manager_name(),
            buffer_size: settings.buffer_size,
            identify_interval: settings.identify_interval,
            rx,
            target,
            dropped: proxy.dropped_counter(),
        };
        tokio::spawn(task.run());
        Ok(proxy)
    }
}

fn check(settings: &SingletonSettings) -> Result<(), SingletonError> {
    let invalid = |reason| {
        Err(SingletonError::InvalidSettings {
            name: settings.name.clone(),
            reason,
        })
    };
    if settings.name.is_empty() {
        return invalid("the name is empty");
    }
    if settings.buffer_size == 0 {
        return invalid("buffer_size must be at least 1");
    }
    if settings.identify_interval.is_zero() || settings.hand_over_retry_interval.is_zero() {
        return invalid("identify_interval and hand_over_retry_interval must be positive");
    }
    Ok(())
}

//! The thin runner: one tokio task that owns a [`Membership`] core, feeds it ticks, messages
//! and commands, and carries out its effects. [`Cluster`] is the cheap handle.
//!
//! The runner knows nothing of the protocol: everything it does is dictated by the core's
//! effects. The network is reached through a [`ClusterLink`] (an adapter for a
//! `shoal_remote::Endpoint` is in [`EndpointLink`]); inbound messages arrive on a channel.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use shoal_remote::UniqueAddress;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

use crate::config::{ClusterConfig, ConfigError};
use crate::event::ClusterEvent;
use crate::membership::{ClusterState, Effect, Input, Membership, ShutdownReason};
use crate::message::ClusterMessage;
use crate::sbr::Lease;
use crate::time::Timestamp;

mod endpoint;
mod remote;

pub use endpoint::{EndpointLink, decode_inbound};
pub use remote::{CLUSTER_RECIPIENT, RemoteLink};

/// How the runner reaches other nodes. Sends never wait: a message that cannot be queued is
/// dropped (the protocol repeats heartbeats, gossip and join requests).
pub trait ClusterLink: Send + Sync + 'static {
    /// Queue `message` for this incarnation.
    fn send(&self, to: UniqueAddress, message: &ClusterMessage);
    /// Queue `message` for whatever incarnation listens at `to`.
    fn send_to_address(&self, to: SocketAddr, message: &ClusterMessage);
    /// `node` was removed from the cluster: refuse it from now on. The default does nothing.
    fn quarantine(&self, node: UniqueAddress) {
        let _ = node;
    }
}

/// Capacity of the event broadcast: a subscriber that lags further misses events (it is told
/// so by `RecvError::Lagged`) and should re-read the `watch` state.
pub const EVENT_CAPACITY: usize = 1024;

/// Commands (join, leave, down) queued beyond this are refused, with a warning.
pub const COMMAND_CAPACITY: usize = 64;

/// Handle to a running cluster node. Cheap to clone; dropping every handle stops the node.
///
/// Commands never wait: they are queued (up to [`COMMAND_CAPACITY`]) for the task.
#[derive(Clone)]
pub struct Cluster {
    self_node: UniqueAddress,
    roles: Arc<BTreeSet<String>>,
    commands: mpsc::Sender<Input>,
    stop: Arc<watch::Sender<bool>>,
    state: watch::Receiver<ClusterState>,
    events: broadcast::Sender<ClusterEvent>,
    stopped: watch::Receiver<Option<ShutdownReason>>,
}

impl Cluster {
    /// Start the node's membership task. If `config.seed_nodes` is set it starts joining
    /// through them; otherwise call [`join`](Self::join). `inbound` carries the messages
    /// other nodes sent (sender identity, message); `lease` serves the lease-majority
    /// strategy (without one, lease requests count as refused).
    pub fn start(
        config: ClusterConfig,
        self_node: UniqueAddress,
        link: Arc<dyn ClusterLink>,
        inbound: mpsc::Receiver<(UniqueAddress, ClusterMessage)>,
        lease: Option<Arc<dyn Lease>>,
        rng_seed: u64,
    ) -> Result<Cluster, ConfigError> {
        let seeds = config.seed_nodes.clone();
        let roles = Arc::new(config.roles.clone());
        let core = Membership::new(config, self_node, rng_seed)?;
        let (state_tx, state) = watch::channel(core.state());
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (stop, stop_rx) = watch::channel(false);
        let (stopped_tx, stopped) = watch::channel(None);
        let task = ClusterCore {
            core,
            link,
            lease,
            state: state_tx,
            events: events.clone(),
            stopped: stopped_tx,
            started: Instant::now(),
        };
        let span = tracing::info_span!("cluster", node = %self_node);
        tokio::spawn(task.run(stop_rx, command_rx, inbound).instrument(span));
        let cluster = Cluster {
            self_node,
            roles,
            commands,
            stop: Arc::new(stop),
            state,
            events,
            stopped,
        };
        if !seeds.is_empty() {
            cluster.input(Input::JoinSeedNodes(seeds));
        }
        Ok(cluster)
    }

    /// This node.
    pub fn self_node(&self) -> UniqueAddress {
        self.self_node
    }

    /// The roles this node declared.
    pub fn roles(&self) -> &BTreeSet<String> {
        &self.roles
    }

    /// The current view, kept up to date. Use `wait_for` to wait for a condition.
    pub fn state(&self) -> watch::Receiver<ClusterState> {
        self.state.clone()
    }

    /// Cluster events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    /// Why the node stopped, once it has (`None` while running or after [`stop`](Self::stop)).
    pub fn stopped(&self) -> watch::Receiver<Option<ShutdownReason>> {
        self.stopped.clone()
    }

    /// Join the cluster of the node at `address` (own address: form a new cluster).
    pub fn join(&self, address: SocketAddr) {
        self.input(Input::Join(address));
    }

    /// Join through these seed nodes.
    pub fn join_seed_nodes(&self, seeds: Vec<SocketAddr>) {
        self.input(Input::JoinSeedNodes(seeds));
    }

    /// Ask the member at `address` (this node included) to leave gracefully.
    pub fn leave(&self, address: SocketAddr) {
        self.input(Input::Leave(address));
    }

    /// Declare the member at `address` dead.
    pub fn down(&self, address: SocketAddr) {
        self.input(Input::Down(address));
    }

    /// Stop the task now, without leaving (what a crash looks like to the others).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    fn input(&self, input: Input) {
        match self.commands.try_send(input) {
            Ok(()) => {}
            // A stopped task has dropped its receiver: nothing to do any more.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(input)) => {
                tracing::warn!(node = %self.self_node, ?input, "cluster command queue full: command refused");
            }
        }
    }
}

/// The task: owns the core.
struct ClusterCore {
    core: Membership,
    link: Arc<dyn ClusterLink>,
    lease: Option<Arc<dyn Lease>>,
    state: watch::Sender<ClusterState>,
    events: broadcast::Sender<ClusterEvent>,
    stopped: watch::Sender<Option<ShutdownReason>>,
    started: Instant,
}

impl ClusterCore {
    async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        mut commands: mpsc::Receiver<Input>,
        mut inbound: mpsc::Receiver<(UniqueAddress, ClusterMessage)>,
    ) {
        let node = self.core.self_node();
        let mut ticker = tokio::time::interval(self.core.config().tick_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let (lease_tx, mut lease_rx) = mpsc::channel::<bool>(4);
        loop {
            let input = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                command = commands.recv() => match command {
                    Some(input) => input,
                    None => break,
                },
                Some(granted) = lease_rx.recv() => Input::LeaseResult { granted },
                message = inbound.recv() => match message {
                    Some((from, message)) => Input::Received { from, message },
                    None => break,
                },
                _ = ticker.tick() => Input::Tick,
            };
            let now = Timestamp::from_duration(self.started.elapsed());
            let effects = self.core.handle(now, input);
            let mut shutdown = None;
            for effect in effects {
                match effect {
                    Effect::Send { to, message } => self.link.send(to, &message),
                    Effect::SendToAddress { to, message } => {
                        self.link.send_to_address(to, &message)
                    }
                    Effect::Publish(event) => {
                        if let ClusterEvent::MemberRemoved { member, .. } = &event
                            && member.address != node
                        {
                            self.link.quarantine(member.address);
                        }
                        // No subscriber is fine.
                        let _ = self.events.send(event);
                    }
                    Effect::AcquireLease => self.acquire_lease(lease_tx.clone()),
                    Effect::ReleaseLease => self.release_lease(),
                    Effect::Shutdown(reason) => shutdown = Some(reason),
                }
            }
            let current = self.core.state();
            self.state.send_if_modified(|s| {
                let changed = *s != current;
                if changed {
                    *s = current;
                }
                changed
            });
            if let Some(reason) = shutdown {
                let _ = self.stopped.send(Some(reason));
                break;
            }
        }
        tracing::debug!("cluster task stopped");
    }

    fn acquire_lease(&self, results: mpsc::Sender<bool>) {
        let owner = self.core.self_node().to_string();
        match self.lease.clone() {
            Some(lease) => {
                tokio::spawn(async move {
                    let granted = match lease.acquire(&owner).await {
                        Ok(granted) => granted,
                        Err(e) => {
                            tracing::warn!(error = %e, "lease acquisition failed: counts as refused");
                            false
                        }
                    };
                    let _ = results.send(granted).await;
                });
            }
            None => {
                tracing::warn!("lease-majority without a lease: counts as refused");
                let _ = results.try_send(false);
            }
        }
    }

    fn release_lease(&self) {
        let owner = self.core.self_node().to_string();
        if let Some(lease) = self.lease.clone() {
            tokio::spawn(async move {
                if let Err(e) = lease.release(&owner).await {
                    tracing::warn!(error = %e, "lease release failed");
                }
            });
        }
    }
}

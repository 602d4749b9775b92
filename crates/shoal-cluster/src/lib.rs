//! Cluster membership for Shoal: join, gossip, phi-accrual failure detection, member
//! lifecycle, roles, and a split-brain resolver that is on by default.
//!
//! Everything here is protocol logic **without I/O**: plain structs that take an input and
//! the current time and return effects. A thin runner task (over a `shoal-remote`
//! transport) feeds them ticks and messages and carries out the effects; tests and
//! simulations drive them step by step.
//!
//! # The core: [`Membership`]
//!
//! ```
//! use shoal_cluster::{ClusterConfig, Effect, Input, Membership, Timestamp};
//! use shoal_remote::UniqueAddress;
//!
//! let me = UniqueAddress::new("127.0.0.1:2551".parse().unwrap(), 1);
//! let mut node = Membership::new(ClusterConfig::default(), me, 42).unwrap();
//! // The only seed node is this node: it forms a new cluster at once.
//! let effects = node.handle(Timestamp::ZERO, Input::JoinSeedNodes(vec![me.addr]));
//! assert!(matches!(effects.last(), Some(Effect::Publish(_))));
//! assert!(node.state().converged);
//! assert_eq!(node.state().leader, Some(me));
//! ```
//!
//! [`Input`]s: `Tick` (every `tick_interval`), `Received { from, message }` (gossip,
//! heartbeats, join handshake), `JoinSeedNodes`, `Join`, `Leave`, `Down`, `LeaseResult`.
//! [`Effect`]s: `Send`/`SendToAddress` a [`ClusterMessage`], `Publish` a [`ClusterEvent`],
//! `AcquireLease`/`ReleaseLease`, `Shutdown`. [`Membership::state`] is the view for a
//! `watch` channel.
//!
//! # The runner: [`Cluster`]
//!
//! [`Cluster::start`] spawns one tokio task that owns the core, ticks it every
//! `tick_interval`, feeds it inbound messages and commands (`join`, `leave`, `down`), and
//! carries out its effects through a [`ClusterLink`] ([`EndpointLink`] for a
//! `shoal_remote::Endpoint`). The handle gives the current [`ClusterState`] on a `watch`
//! channel and events on a broadcast subscription.
//!
//! [`RemoteLink`] runs membership over a `shoal_remote::Remote` (one endpoint for membership,
//! singletons and user actors).
//!
//! # Singletons: [`ClusterSingleton`]
//!
//! One instance of an actor per cluster, on the oldest `Up` member (optionally of a role),
//! handed over on leave, replaced after a crash once the old one is removed plus a margin; a
//! [`SingletonProxy`] on every node finds it and buffers while it moves. See [`singleton`].
//!
//! # Member lifecycle
//!
//! ```text
//!   join accepted
//!        │
//!        ▼
//!     Joining ──── leader, converged ────► Up
//!        │                                 │
//!        │ leave                     leave │
//!        ▼                                 │
//!     Leaving ◄────────────────────────────┘
//!        │ leader, converged
//!        ▼
//!     Exiting ──── leader, converged ────► Removed   (tombstone: the
//!                                             ▲         incarnation never returns)
//!     Down ────── leader, converged ──────────┘
//!       ▲
//!       └── down (operator or split-brain resolver) from Joining, Up, Leaving or Exiting
//! ```
//!
//! Transitions are checked ([`MemberStatus::can_move_to`]); every allowed one goes up in
//! `Joining < Up < Leaving < Exiting < Down < Removed`, so merging gossip by maximum never
//! moves a member backwards. A node that sees itself `Down` or `Removed` emits
//! [`Effect::Shutdown`] and ignores everything afterwards. A restarted node is a new
//! incarnation ([`UniqueAddress`]): its join first gets the old incarnation downed.
//!
//! # Gossip and convergence
//!
//! [`Gossip`] is a state-based CRDT (members merge by lifecycle maximum, reachability by
//! per-observer version, tombstones win) with a *seen* set of the nodes holding exactly that
//! state. It has **converged** when every reachable `Up`/`Leaving`/`Exiting` member has seen
//! it and every unreachable member is `Down` or `Exiting`. The **leader** is the first member
//! in address order that is `Up` or `Leaving` and reachable; only it moves members
//! (`Joining → Up` once `min_nr_of_members` is met, `Leaving → Exiting`, `Exiting`/`Down` →
//! `Removed`) and only on convergence. Local changes are pushed at once; one random member
//! gets the gossip every `gossip_interval`.
//!
//! # Failure detection
//!
//! Each node sends heartbeats to `monitored_by_nr_of_members` (9) nodes after it on a hashed
//! ring — a new member at once, then every second — and feeds their answers to a
//! [`PhiAccrualFailureDetector`] (Akka's defaults: heartbeat 1 s, threshold 8, acceptable
//! pause 3 s). Its verdicts go into its row of the gossiped [`Reachability`] table: a member
//! is unreachable when any member that is not `Down` reports it so.
//!
//! # Split-brain resolution ([`sbr`])
//!
//! On by default with keep-majority, `stable_after` 3.5 s, down-all-when-unstable after
//! 3.5 + 4 s. With the defaults a crashed node is removed ≈ 8.2 s after the crash in the worst
//! case, ≈ 9.0 s if it crashes right after joining (see [`config`] for the budget).
//! Strategies are [`sbr::DowningStrategy`] implementations returning [`sbr::Decision`]
//! values.

pub mod config;
pub mod detector;
pub mod event;
pub mod gossip;
pub(crate) mod heartbeat;
pub mod member;
pub mod membership;
pub mod message;
pub mod reachability;
pub mod runner;
pub mod sbr;
pub mod singleton;
pub mod time;

pub use config::{
    ClusterConfig, ConfigError, DowningStrategyConfig, FailureDetectorConfig,
    SplitBrainResolverConfig,
};
pub use detector::PhiAccrualFailureDetector;
pub use event::ClusterEvent;
pub use gossip::Gossip;
pub use member::{IllegalTransition, Member, MemberStatus};
pub use membership::{ClusterState, Effect, Input, Membership, ShutdownReason};
pub use message::ClusterMessage;
pub use reachability::{Reachability, ReachabilityStatus};
pub use runner::{Cluster, ClusterLink, EndpointLink, RemoteLink};
pub use sbr::SplitBrainResolver;
pub use shoal_remote::UniqueAddress;
pub use singleton::{ClusterSingleton, SingletonProxy, SingletonSettings};
pub use time::Timestamp;

//! [`Remote`]: actors reachable from other nodes, serializable refs, remote asks.

mod envelope;
mod refs;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_actor::{ActorRef, AskError, StopReason, TellError};
use tokio::sync::{broadcast, mpsc, oneshot};

pub use refs::{RemoteRef, RemoteReplyTo};

use crate::address::UniqueAddress;
use crate::codec::{Codec, Json};
use crate::config::EndpointConfig;
use crate::endpoint::{BindError, Endpoint, InboundHandler, PeerEvent, SendError};
use crate::transport::Transport;
use envelope::Envelope;
use refs::{DecodeScope, Link};

/// Requests waiting for replies at once, per node; more asks fail with `MailboxFull`.
const MAX_PENDING_ASKS: usize = 1 << 16;
/// Events buffered per subscriber of [`Remote::subscribe_events`].
const EVENT_BUFFER: usize = 256;

/// Why a [`RemoteRef::tell`] did not hand its message on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UndeliveredReason {
    /// The endpoint refused it (queue full, unreachable, too large, gone incarnation, …).
    #[error(transparent)]
    Send(#[from] SendError),
    /// The reference is not attached to a running [`Remote`].
    #[error("reference is not attached to a running Remote")]
    Detached,
    /// No recipient of that name on this node.
    #[error("no recipient named {0:?} on this node")]
    NoRecipient(String),
    /// The name is registered with another message type.
    #[error("recipient {0:?} takes another message type")]
    WrongType(String),
    /// The local recipient's mailbox is full.
    #[error("mailbox full")]
    MailboxFull,
    /// The local recipient has stopped.
    #[error("recipient stopped")]
    Stopped,
}

impl UndeliveredReason {
    /// Whether the recipient's mailbox or the peer's outbound queue was full (back-pressure,
    /// not a missing recipient).
    pub fn is_full(&self) -> bool {
        matches!(
            self,
            UndeliveredReason::MailboxFull | UndeliveredReason::Send(SendError::QueueFull(_))
        )
    }
}

/// A message that was not handed on, and why. Nothing was sent; retrying `MailboxFull` or
/// `Send(QueueFull)` later is safe.
#[derive(PartialEq, Eq, thiserror::Error)]
#[error("undelivered: {reason}")]
pub struct Undelivered<M> {
    /// Why.
    pub reason: UndeliveredReason,
    /// The message, handed back.
    pub message: M,
}

impl<M> fmt::Debug for Undelivered<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Undelivered({:?})", self.reason)
    }
}

/// The receiving end of a [`Remote::register_channel`]: messages with their sender.
pub type RemoteInbox<M> = mpsc::Receiver<(UniqueAddress, M)>;

/// Why a name could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// Another recipient holds the name.
    #[error("name {0:?} is taken")]
    NameTaken(String),
    /// Names have 1 to 255 bytes.
    #[error("invalid name {0:?} (1 to 255 bytes)")]
    InvalidName(String),
}

/// Counters of a [`Remote`] (the transport's own are in [`Endpoint::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteStats {
    /// Inbound messages for a name nobody has registered (dropped).
    pub unknown_recipient: u64,
    /// Inbound envelopes or bodies that did not decode (dropped).
    pub undecodable: u64,
    /// Inbound messages a local recipient refused (mailbox full or stopped; dropped).
    pub refused_by_recipient: u64,
    /// Replies that arrived after their ask had ended (timed out).
    pub late_replies: u64,
    /// Replies this node could not hand on (the requesting node gone or unreachable, or the
    /// local asker gone).
    pub replies_dropped: u64,
}

#[derive(Default)]
struct Counters {
    unknown_recipient: AtomicU64,
    undecodable: AtomicU64,
    refused_by_recipient: AtomicU64,
    late_replies: AtomicU64,
    replies_dropped: AtomicU64,
}

/// A registered recipient: decodes bodies and hands them to an actor or channel.
trait Recipient: Send + Sync + 'static {
    fn deliver(&self, from: UniqueAddress, body: &[u8]) -> Result<(), String>;
    fn as_any(&self) -> &dyn Any;
    /// The actor stopped or the channel's receiver is gone: the name can be taken over.
    fn is_gone(&self) -> bool;
}

struct ActorRecipient<M> {
    actor: ActorRef<M>,
    codec: Arc<dyn Codec<M>>,
}

impl<M: Send + 'static> Recipient for ActorRecipient<M> {
    fn deliver(&self, _from: UniqueAddress, body: &[u8]) -> Result<(), String> {
        let msg = self
            .codec
            .decode(body)
            .map_err(|e| format!("undecodable: {e}"))?;
        self.actor.tell(msg).map_err(|e| match e {
            TellError::Full(_) => "mailbox full".to_string(),
            TellError::Closed(_) => "recipient stopped".to_string(),
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn is_gone(&self) -> bool {
        self.actor.stop_reason().is_some()
    }
}

struct ChannelRecipient<M> {
    tx: mpsc::Sender<(UniqueAddress, M)>,
    codec: Arc<dyn Codec<M>>,
}

impl<M: Send + 'static> Recipient for ChannelRecipient<M> {
    fn deliver(&self, from: UniqueAddress, body: &[u8]) -> Result<(), String> {
        let msg = self
            .codec
            .decode(body)
            .map_err(|e| format!("undecodable: {e}"))?;
        self.tx.try_send((from, msg)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => "mailbox full".to_string(),
            mpsc::error::TrySendError::Closed(_) => "recipient stopped".to_string(),
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }
}

#[derive(Clone)]
struct Registration {
    id: u64,
    recipient: Arc<dyn Recipient>,
}

/// A request waiting for its reply.
trait PendingReply: Send {
    fn complete_bytes(self: Box<Self>, reply: Result<&[u8], String>);
    fn complete_value(self: Box<Self>, reply: Result<Box<dyn Any + Send>, String>);
}

struct Slot<R> {
    tx: oneshot::Sender<Result<R, String>>,
    codec: Arc<dyn Codec<R>>,
}

impl<R: Send + 'static> PendingReply for Slot<R> {
    fn complete_bytes(self: Box<Self>, reply: Result<&[u8], String>) {
        let value = reply.and_then(|b| {
            self.codec
                .decode(b)
                .map_err(|e| format!("undecodable reply: {e}"))
        });
        let _ = self.tx.send(value);
    }

    fn complete_value(self: Box<Self>, reply: Result<Box<dyn Any + Send>, String>) {
        let value = reply.and_then(|v| {
            v.downcast::<R>()
                .map(|v| *v)
                .map_err(|_| "reply of another type than asked for".to_string())
        });
        let _ = self.tx.send(value);
    }
}

/// The endpoint's handler: routes inbound envelopes into the Remote.
#[derive(Default)]
struct Router {
    remote: OnceLock<Weak<RemoteInner>>,
}

impl InboundHandler for Router {
    fn on_message(&self, from: UniqueAddress, payload: &[u8]) {
        if let Some(remote) = self.remote.get().and_then(Weak::upgrade) {
            remote.dispatch(from, payload);
        }
    }

    fn on_event(&self, event: PeerEvent) {
        if let Some(remote) = self.remote.get().and_then(Weak::upgrade) {
            let _ = remote.events.send(event);
        }
    }
}

/// A node that hosts actors reachable from other nodes: the actor-level API over an
/// [`Endpoint`].
///
/// * [`register`](Self::register) an actor under a name → a serializable [`RemoteRef<M>`]
///   that any node can `tell` and `ask`.
/// * [`resolve`](Self::resolve) `(node, name)` → a [`RemoteRef<M>`] to a recipient elsewhere.
/// * Requests carry [`RemoteReplyTo<R>`] handles (requesting node + request id), so a reply
///   finds its way back; a reply to a node that has gone is dropped and counted.
/// * [`register_channel`](Self::register_channel) gives a plain bounded receiver instead of
///   an actor (for protocol runners such as cluster membership).
///
/// Message bodies are encoded per type with the codec set by [`set_codec`](Self::set_codec),
/// [`Json`] by default. Cheap to clone; the node stops on [`shutdown`](Self::shutdown) or when
/// the last clone is dropped.
#[derive(Clone)]
pub struct Remote {
    inner: Arc<RemoteInner>,
}

pub(crate) struct RemoteInner {
    endpoint: Endpoint,
    me: UniqueAddress,
    registry: RwLock<HashMap<Arc<str>, Registration>>,
    next_registration: AtomicU64,
    pending: Mutex<HashMap<u64, Box<dyn PendingReply>>>,
    next_request: AtomicU64,
    codecs: RwLock<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    events: broadcast::Sender<PeerEvent>,
    counters: Counters,
    warned_inbound: AtomicBool,
    warned_replies: AtomicBool,
    /// Ask deadlines: one shared timer per 5 ms slot, not a tokio timer per ask.
    deadlines: shoal_actor::CoarseDeadlines,
}

impl Remote {
    /// Binds an [`Endpoint`] on `addr` over `transport` and starts routing its messages.
    pub async fn bind(
        transport: Arc<dyn Transport>,
        addr: SocketAddr,
        config: EndpointConfig,
    ) -> Result<Self, BindError> {
        let router = Arc::new(Router::default());
        let endpoint = Endpoint::bind(transport, addr, config, router.clone()).await?;
        let inner = Arc::new(RemoteInner {
            me: endpoint.local(),
            endpoint,
            registry: RwLock::new(HashMap::new()),
            next_registration: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            codecs: RwLock::new(HashMap::new()),
            events: broadcast::channel(EVENT_BUFFER).0,
            counters: Counters::default(),
            warned_inbound: AtomicBool::new(false),
            warned_replies: AtomicBool::new(false),
            deadlines: shoal_actor::CoarseDeadlines::new(),
        });
        let _ = router.remote.set(Arc::downgrade(&inner));
        Ok(Self { inner })
    }

    /// This node's identity.
    pub fn local(&self) -> UniqueAddress {
        self.inner.me
    }

    /// The endpoint underneath (connected peers, quarantine, transport counters).
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Uses `codec` for every message of type `T` this node encodes or decodes from now on
    /// (set it before registering or resolving recipients of `T`; both sides must agree).
    pub fn set_codec<T: 'static>(&self, codec: impl Codec<T>) {
        let codec: Arc<dyn Codec<T>> = Arc::new(codec);
        self.inner
            .codecs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(TypeId::of::<T>(), Arc::new(codec));
    }

    /// Makes `actor` reachable from other nodes as `name`; returns its serializable
    /// reference. The name is freed when the actor stops (at once for a new registration;
    /// the entry itself soon after) or by [`unregister`](Self::unregister).
    pub fn register<M>(&self, name: &str, actor: ActorRef<M>) -> Result<RemoteRef<M>, RegisterError>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        let recipient = Arc::new(ActorRecipient {
            actor: actor.clone(),
            codec: self.inner.codec::<M>(),
        });
        let (reference, id) = self.insert(name, recipient)?;
        let weak = Arc::downgrade(&self.inner);
        let name: Arc<str> = Arc::from(name);
        tokio::spawn(async move {
            actor.terminated().await;
            if let Some(inner) = weak.upgrade() {
                inner.unregister_if(&name, id);
            }
        });
        Ok(reference)
    }

    /// Registers a bounded channel as `name`: messages sent to the returned reference arrive
    /// on the receiver with their sender's identity. What does not fit is dropped and
    /// counted. The name is free again once the receiver is dropped, or after
    /// [`unregister`](Self::unregister).
    pub fn register_channel<M>(
        &self,
        name: &str,
        capacity: usize,
    ) -> Result<(RemoteRef<M>, RemoteInbox<M>), RegisterError>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(capacity);
        let recipient = Arc::new(ChannelRecipient {
            tx,
            codec: self.inner.codec::<M>(),
        });
        let (reference, _) = self.insert(name, recipient)?;
        Ok((reference, rx))
    }

    fn insert<M>(
        &self,
        name: &str,
        recipient: Arc<dyn Recipient>,
    ) -> Result<(RemoteRef<M>, u64), RegisterError>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        if name.is_empty() || name.len() > envelope::MAX_NAME_LEN {
            return Err(RegisterError::InvalidName(name.to_string()));
        }
        let name: Arc<str> = Arc::from(name);
        let id = self.inner.next_registration.fetch_add(1, Ordering::Relaxed);
        {
            let mut registry = self
                .inner
                .registry
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if registry.get(&name).is_some_and(|r| !r.recipient.is_gone()) {
                return Err(RegisterError::NameTaken(name.to_string()));
            }
            registry.insert(name.clone(), Registration { id, recipient });
        }
        let link = Link::new(&self.inner);
        Ok((RemoteRef::new(self.inner.me, name, Some(link)), id))
    }

    /// Frees `name`; returns whether it was registered.
    pub fn unregister(&self, name: &str) -> bool {
        self.inner
            .registry
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some()
    }

    /// A reference to the recipient registered as `name` on `node` (which may be this node).
    /// Nothing is checked until a message is sent.
    pub fn resolve<M>(&self, node: UniqueAddress, name: &str) -> RemoteRef<M>
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        RemoteRef::new(node, Arc::from(name), Some(Link::new(&self.inner)))
    }

    /// Runs `f` with this Remote as the decoding context: [`RemoteRef`]s and
    /// [`RemoteReplyTo`]s deserialized inside attach to it (for messages that arrived some
    /// other way, e.g. through a raw [`Endpoint`] channel).
    pub fn attach<T>(&self, f: impl FnOnce() -> T) -> T {
        let _scope = DecodeScope::enter(Arc::downgrade(&self.inner));
        f()
    }

    /// Ask through any route: `make` builds the request around a reply handle answered to
    /// this node, `send` delivers it however the caller routes messages (a sharding region,
    /// a singleton proxy), and the answer is awaited up to `timeout`. An error from `send`
    /// is returned as is.
    pub async fn ask_via<M, R>(
        &self,
        make: impl FnOnce(RemoteReplyTo<R>) -> M,
        send: impl FnOnce(M) -> Result<(), AskError>,
        timeout: Duration,
    ) -> Result<R, AskError>
    where
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.inner.ask_via(make, |_, msg| send(msg), timeout).await
    }

    /// Connection events of the endpoint (bounded: a subscriber that lags loses the oldest
    /// and is told so by `RecvError::Lagged`). The current set of connected peers is in
    /// [`Endpoint::connected`].
    pub fn subscribe_events(&self) -> broadcast::Receiver<PeerEvent> {
        self.inner.events.subscribe()
    }

    /// The Remote's counters.
    pub fn stats(&self) -> RemoteStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RemoteStats {
            unknown_recipient: get(&c.unknown_recipient),
            undecodable: get(&c.undecodable),
            refused_by_recipient: get(&c.refused_by_recipient),
            late_replies: get(&c.late_replies),
            replies_dropped: get(&c.replies_dropped),
        }
    }

    /// Stops the endpoint and fails every ask still waiting with [`AskError::NoReply`].
    pub async fn shutdown(&self) {
        self.inner.endpoint.shutdown().await;
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Remote({})", self.inner.me)
    }
}

/// Removes an ask's slot when the ask ends (answered, timed out or cancelled).
struct SlotGuard<'a> {
    remote: &'a RemoteInner,
    id: u64,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.remote.take_slot(self.id);
    }
}

impl RemoteInner {
    pub(crate) fn codec<T>(&self) -> Arc<dyn Codec<T>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
    {
        self.codecs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&TypeId::of::<T>())
            .and_then(|c| c.downcast_ref::<Arc<dyn Codec<T>>>().cloned())
            .unwrap_or_else(|| Arc::new(Json))
    }

    fn unregister_if(&self, name: &str, id: u64) {
        let mut registry = self.registry.write().unwrap_or_else(|e| e.into_inner());
        if registry.get(name).is_some_and(|r| r.id == id) {
            registry.remove(name);
        }
    }

    fn lookup(&self, name: &str) -> Option<Arc<dyn Recipient>> {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map(|r| r.recipient.clone())
    }

    fn take_slot(&self, id: u64) -> Option<Box<dyn PendingReply>> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    fn warn_inbound(&self, from: UniqueAddress, why: &str) {
        if !self.warned_inbound.swap(true, Ordering::Relaxed) {
            tracing::warn!(node = %self.me, from = %from, why,
                "dropped an inbound message (further drops are logged at debug level and counted in stats())");
        } else {
            tracing::debug!(node = %self.me, from = %from, why, "dropped an inbound message");
        }
    }

    /// Handles one inbound envelope (on the connection's reader task).
    fn dispatch(self: &Arc<Self>, from: UniqueAddress, payload: &[u8]) {
        match envelope::parse(payload) {
            Some(Envelope::Tell { ask, name, body }) => {
                let outcome = match self.lookup(name) {
                    None => {
                        self.counters
                            .unknown_recipient
                            .fetch_add(1, Ordering::Relaxed);
                        Err(format!("no recipient named {name:?} on {}", self.me))
                    }
                    Some(recipient) => {
                        let _scope = DecodeScope::enter(Arc::downgrade(self));
                        recipient.deliver(from, body).inspect_err(|why| {
                            let counter = if why.starts_with("undecodable") {
                                &self.counters.undecodable
                            } else {
                                &self.counters.refused_by_recipient
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                        })
                    }
                };
                if let Err(why) = outcome {
                    self.warn_inbound(from, &why);
                    if let Some(id) = ask {
                        let _ = self.endpoint.send_with(from, |buf| {
                            envelope::put_failure(buf, id, &why);
                            Ok::<(), std::convert::Infallible>(())
                        });
                    }
                }
            }
            Some(Envelope::Reply { id, body }) => match self.take_slot(id) {
                Some(slot) => slot.complete_bytes(Ok(body)),
                None => {
                    self.counters.late_replies.fetch_add(1, Ordering::Relaxed);
                }
            },
            Some(Envelope::ReplyFailure { id, reason }) => match self.take_slot(id) {
                Some(slot) => slot.complete_bytes(Err(reason.to_string())),
                None => {
                    self.counters.late_replies.fetch_add(1, Ordering::Relaxed);
                }
            },
            None => {
                self.counters.undecodable.fetch_add(1, Ordering::Relaxed);
                self.warn_inbound(from, "malformed envelope");
            }
        }
    }

    /// Tells `msg` to `name` on `node` (directly when `node` is this node).
    fn tell<M: Send + 'static>(
        &self,
        node: UniqueAddress,
        name: &str,
        ask: Option<u64>,
        msg: M,
        codec: &dyn Codec<M>,
    ) -> Result<(), Undelivered<M>> {
        let fail = |reason, message| Err(Undelivered { reason, message });
        if node == self.me {
            let Some(recipient) = self.lookup(name) else {
                return fail(UndeliveredReason::NoRecipient(name.to_string()), msg);
            };
            let any = recipient.as_any();
            if let Some(r) = any.downcast_ref::<ActorRecipient<M>>() {
                return r.actor.tell(msg).map_err(|e| match e {
                    TellError::Full(m) => Undelivered {
                        reason: UndeliveredReason::MailboxFull,
                        message: m,
                    },
                    TellError::Closed(m) => Undelivered {
                        reason: UndeliveredReason::Stopped,
                        message: m,
                    },
                });
            }
            if let Some(r) = any.downcast_ref::<ChannelRecipient<M>>() {
                return r.tx.try_send((self.me, msg)).map_err(|e| match e {
                    mpsc::error::TrySendError::Full((_, m)) => Undelivered {
                        reason: UndeliveredReason::MailboxFull,
                        message: m,
                    },
                    mpsc::error::TrySendError::Closed((_, m)) => Undelivered {
                        reason: UndeliveredReason::Stopped,
                        message: m,
                    },
                });
            }
            return fail(UndeliveredReason::WrongType(name.to_string()), msg);
        }
        let sent = self.endpoint.send_with(node, |buf| {
            envelope::put_tell(buf, ask, name);
            codec.encode(&msg, buf)
        });
        match sent {
            Ok(()) => Ok(()),
            Err(e) => fail(UndeliveredReason::Send(e), msg),
        }
    }

    async fn ask<M, R>(
        self: &Arc<Self>,
        node: UniqueAddress,
        name: &str,
        make: impl FnOnce(RemoteReplyTo<R>) -> M,
        codec: Arc<dyn Codec<M>>,
        timeout: Duration,
    ) -> Result<R, AskError>
    where
        M: Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.ask_via(
            make,
            |id, msg| {
                self.tell(node, name, Some(id), msg, codec.as_ref())
                    .map_err(|e| match e.reason {
                        reason if reason.is_full() => AskError::MailboxFull,
                        UndeliveredReason::Stopped => AskError::Stopped(StopReason::Stopped),
                        other => AskError::Failed(other.to_string()),
                    })
            },
            timeout,
        )
        .await
    }

    /// An ask whose request is routed by `send` (which gets the request id and the message).
    async fn ask_via<M, R>(
        self: &Arc<Self>,
        make: impl FnOnce(RemoteReplyTo<R>) -> M,
        send: impl FnOnce(u64, M) -> Result<(), AskError>,
        timeout: Duration,
    ) -> Result<R, AskError>
    where
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let link = Link::<R>::new(self);
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.len() >= MAX_PENDING_ASKS {
                return Err(AskError::MailboxFull);
            }
            let slot = Slot {
                tx,
                codec: link.codec.clone(),
            };
            pending.insert(id, Box::new(slot));
        }
        let _guard = SlotGuard { remote: self, id };
        let msg = make(RemoteReplyTo::new(self.me, id, Some(link)));
        send(id, msg)?;
        match self.deadlines.within(timeout, rx).await {
            Some(Ok(Ok(value))) => Ok(value),
            Some(Ok(Err(reason))) => Err(AskError::Failed(reason)),
            Some(Err(_)) => Err(AskError::NoReply),
            None => Err(AskError::Timeout),
        }
    }

    /// Sends a reply (or failure) for request `id` to `node`. Returns whether it was handed on.
    fn reply<R: Send + 'static>(
        &self,
        node: UniqueAddress,
        id: u64,
        reply: Result<R, String>,
        codec: &dyn Codec<R>,
    ) -> bool {
        let handed_on = if node == self.me {
            match self.take_slot(id) {
                Some(slot) => {
                    slot.complete_value(reply.map(|v| Box::new(v) as Box<dyn Any + Send>));
                    true
                }
                None => false,
            }
        } else {
            let sent = self.endpoint.send_with(node, |buf| match &reply {
                Ok(value) => {
                    envelope::put_reply(buf, id);
                    codec.encode(value, buf)
                }
                Err(reason) => {
                    envelope::put_failure(buf, id, reason);
                    Ok(())
                }
            });
            sent.is_ok()
        };
        if !handed_on {
            let n = self
                .counters
                .replies_dropped
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if !self.warned_replies.swap(true, Ordering::Relaxed) {
                tracing::warn!(node = %self.me, to = %node, request = id,
                    "dropped a reply: the requesting node or asker is gone \
                     (further ones are logged at debug level and counted in stats())");
            } else {
                tracing::debug!(node = %self.me, to = %node, request = id, dropped = n,
                    "dropped a reply");
            }
        }
        handed_on
    }
}

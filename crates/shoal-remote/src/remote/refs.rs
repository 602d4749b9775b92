//! Serializable actor references and reply handles.

use std::cell::RefCell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shoal_actor::AskError;

use super::{RemoteInner, Undelivered, UndeliveredReason};
use crate::address::UniqueAddress;
use crate::codec::Codec;

thread_local! {
    /// The Remote that is decoding a message on this thread: references deserialized meanwhile
    /// attach to it.
    static DECODING: RefCell<Option<Weak<RemoteInner>>> = const { RefCell::new(None) };
}

/// Sets the decoding context for its lifetime (restores the previous one, also on panic).
pub(crate) struct DecodeScope {
    previous: Option<Weak<RemoteInner>>,
}

impl DecodeScope {
    pub(crate) fn enter(remote: Weak<RemoteInner>) -> Self {
        let previous = DECODING.with(|d| d.replace(Some(remote)));
        Self { previous }
    }
}

impl Drop for DecodeScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        DECODING.with(|d| *d.borrow_mut() = previous);
    }
}

fn decoding() -> Option<Arc<RemoteInner>> {
    DECODING.with(|d| d.borrow().as_ref().and_then(Weak::upgrade))
}

/// What a reference needs to send: the node's Remote and the codec for its message type.
pub(crate) struct Link<T> {
    pub(crate) remote: Weak<RemoteInner>,
    pub(crate) codec: Arc<dyn Codec<T>>,
}

impl<T> Clone for Link<T> {
    fn clone(&self) -> Self {
        Self {
            remote: self.remote.clone(),
            codec: self.codec.clone(),
        }
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Link<T> {
    pub(crate) fn new(remote: &Arc<RemoteInner>) -> Self {
        Self {
            remote: Arc::downgrade(remote),
            codec: remote.codec::<T>(),
        }
    }
}

/// A serializable reference to an actor (or channel) registered under `name` on `node`.
///
/// Send it inside messages; the receiving node can `tell` and `ask` through it. A reference
/// is *attached* to the local [`Remote`](crate::Remote) it was made by ([`Remote::resolve`](crate::Remote::resolve)
///, [`Remote::register`](crate::Remote::register)) or decoded by
/// (a message arriving at a Remote, or [`Remote::attach`](crate::Remote::attach)); a reference
/// decoded elsewhere is detached and its sends fail with [`UndeliveredReason::Detached`].
///
/// Equal and hashed by `(node, name)`. Serialized as `{"node": …, "name": …}`.
pub struct RemoteRef<M> {
    node: UniqueAddress,
    name: Arc<str>,
    link: Option<Link<M>>,
}

impl<M> Clone for RemoteRef<M> {
    fn clone(&self) -> Self {
        Self {
            node: self.node,
            name: self.name.clone(),
            link: self.link.clone(),
        }
    }
}

impl<M> RemoteRef<M> {
    pub(crate) fn new(node: UniqueAddress, name: Arc<str>, link: Option<Link<M>>) -> Self {
        Self { node, name, link }
    }

    /// The node the recipient lives on.
    pub fn node(&self) -> UniqueAddress {
        self.node
    }

    /// The recipient's registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the reference can send (attached to a running Remote).
    pub fn is_attached(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.remote.strong_count() > 0)
    }
}

impl<M: Serialize + DeserializeOwned + Send + 'static> RemoteRef<M> {
    /// Sends `msg` without waiting. A local recipient gets it directly (no encoding); a
    /// remote one through the node's outbound queue. On failure the message comes back.
    /// Delivery to a remote node is at most once: success means queued, not delivered.
    pub fn tell(&self, msg: M) -> Result<(), Undelivered<M>> {
        let Some(remote) = self.link.as_ref().and_then(|l| l.remote.upgrade()) else {
            return Err(Undelivered {
                reason: UndeliveredReason::Detached,
                message: msg,
            });
        };
        let codec = &self.link.as_ref().expect("checked above").codec;
        remote.tell(self.node, &self.name, None, msg, codec.as_ref())
    }

    /// Sends the request built by `make` (which receives a serializable reply handle) and
    /// waits up to `timeout` for the answer.
    ///
    /// Errors: [`AskError::Timeout`]; [`AskError::MailboxFull`] (the recipient's mailbox or
    /// this node's outbound queue is full; nothing was delivered); [`AskError::Failed`] (the
    /// recipient answered with a failure, or it does not exist, or the request could not be
    /// sent or decoded); [`AskError::NoReply`] (this node shut down while waiting).
    pub async fn ask<R>(
        &self,
        make: impl FnOnce(RemoteReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError>
    where
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let Some(remote) = self.link.as_ref().and_then(|l| l.remote.upgrade()) else {
            return Err(AskError::Failed(UndeliveredReason::Detached.to_string()));
        };
        let codec = self.link.as_ref().expect("checked above").codec.clone();
        RemoteInner::ask(&remote, self.node, &self.name, make, codec, timeout).await
    }
}

impl<M> PartialEq for RemoteRef<M> {
    fn eq(&self, other: &Self) -> bool {
        self.node == other.node && self.name == other.name
    }
}

impl<M> Eq for RemoteRef<M> {}

impl<M> Hash for RemoteRef<M> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.node.hash(state);
        self.name.hash(state);
    }
}

impl<M> fmt::Debug for RemoteRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteRef({}@{})", self.name, self.node)
    }
}

#[derive(Serialize)]
struct RefWire<'a> {
    node: UniqueAddress,
    name: &'a str,
}

#[derive(Deserialize)]
struct RefWireOwned {
    node: UniqueAddress,
    name: String,
}

impl<M> Serialize for RemoteRef<M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RefWire {
            node: self.node,
            name: &self.name,
        }
        .serialize(s)
    }
}

impl<'de, M: Serialize + DeserializeOwned + Send + 'static> Deserialize<'de> for RemoteRef<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = RefWireOwned::deserialize(d)?;
        if wire.name.len() > super::envelope::MAX_NAME_LEN {
            return Err(serde::de::Error::custom(
                "recipient name longer than 255 bytes",
            ));
        }
        let link = decoding().map(|r| Link::new(&r));
        Ok(Self::new(wire.node, Arc::from(wire.name), link))
    }
}

/// A serializable handle to answer a request with: the requesting node plus a request id.
///
/// Carried inside request messages (like [`shoal_actor::ReplyTo`], but it survives being
/// sent to another node). Answer once with [`send`](Self::send) or [`fail`](Self::fail). A
/// handle dropped unanswered lets the asker time out. An answer to a node that has gone is
/// dropped and counted (see [`RemoteStats::replies_dropped`](crate::RemoteStats)), never
/// retried.
///
/// Serialized as `{"node": …, "id": …}`; attached like [`RemoteRef`].
pub struct RemoteReplyTo<R> {
    node: UniqueAddress,
    id: u64,
    link: Option<Link<R>>,
}

impl<R> RemoteReplyTo<R> {
    pub(crate) fn new(node: UniqueAddress, id: u64, link: Option<Link<R>>) -> Self {
        Self { node, id, link }
    }

    /// The node waiting for the answer.
    pub fn node(&self) -> UniqueAddress {
        self.node
    }

    /// The request id on that node.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl<R: Send + 'static> RemoteReplyTo<R> {
    /// Answers with `value`. Returns whether the answer was handed on (queued for the
    /// requesting node, or given to a local asker still waiting); false means it was dropped
    /// (asker gone, node unreachable, handle detached).
    pub fn send(self, value: R) -> bool {
        let Some(link) = &self.link else {
            return false;
        };
        let Some(remote) = link.remote.upgrade() else {
            return false;
        };
        remote.reply(self.node, self.id, Ok(value), link.codec.as_ref())
    }

    /// Answers with a failure; the asker gets [`AskError::Failed`].
    pub fn fail(self, reason: impl Into<String>) -> bool {
        let Some(link) = &self.link else {
            return false;
        };
        let Some(remote) = link.remote.upgrade() else {
            return false;
        };
        remote.reply(self.node, self.id, Err(reason.into()), link.codec.as_ref())
    }
}

impl<R: Send + 'static> shoal_actor::Reply<R> for RemoteReplyTo<R> {
    fn send(self, value: R) -> bool {
        RemoteReplyTo::send(self, value)
    }

    fn fail(self, reason: String) -> bool {
        RemoteReplyTo::fail(self, reason)
    }
}

impl<R> fmt::Debug for RemoteReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteReplyTo({}#{})", self.node, self.id)
    }
}

#[derive(Serialize, Deserialize)]
struct ReplyWire {
    node: UniqueAddress,
    id: u64,
}

impl<R> Serialize for RemoteReplyTo<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ReplyWire {
            node: self.node,
            id: self.id,
        }
        .serialize(s)
    }
}

impl<'de, R: Serialize + DeserializeOwned + Send + 'static> Deserialize<'de> for RemoteReplyTo<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = ReplyWire::deserialize(d)?;
        let link = decoding().map(|r| Link::new(&r));
        Ok(Self::new(wire.node, wire.id, link))
    }
}

//! The proxy: routes messages to wherever the singleton runs, buffering while it moves.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_actor::{AskError, TellError};
use shoal_remote::{Remote, RemoteRef, RemoteReplyTo, UniqueAddress};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use super::core::{ManagerMessage, designated};
use crate::membership::ClusterState;

/// A handle to a cluster singleton from any node: messages go to wherever it runs now.
///
/// `tell` and `ask` go through the node's proxy task, which keeps the order of one sender's
/// messages (an ask sent after a tell arrives after it), forwards them directly once it knows
/// where the singleton runs, and buffers them (bounded: the oldest are dropped first, counted
/// in [`dropped`](Self::dropped)) while the singleton is moving or not started yet. Delivery is at most once, as with Akka: a message
/// in flight when the singleton's node crashes is lost.
///
/// Cheap to clone; the proxy task ends when the last handle is dropped.
pub struct SingletonProxy<M> {
    tx: mpsc::Sender<M>,
    target: watch::Receiver<Option<RemoteRef<M>>>,
    dropped: Arc<AtomicU64>,
    /// This node's Remote, which waits for ask answers.
    remote: Remote,
}

impl<M> Clone for SingletonProxy<M> {
    fn clone(&self) -> Self {
        SingletonProxy {
            tx: self.tx.clone(),
            target: self.target.clone(),
            dropped: self.dropped.clone(),
            remote: self.remote.clone(),
        }
    }
}

impl<M> std::fmt::Debug for SingletonProxy<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingletonProxy")
            .field("location", &self.location())
            .finish_non_exhaustive()
    }
}

impl<M> SingletonProxy<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Sends `msg` to the singleton without waiting. `Full` when the proxy's own queue
    /// (the buffer size) is full, `Closed` when the node's Remote is gone; otherwise the
    /// message is forwarded or buffered.
    pub fn tell(&self, msg: M) -> Result<(), TellError<M>> {
        self.tx.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(m) => TellError::Full(m),
            mpsc::error::TrySendError::Closed(m) => TellError::Closed(m),
        })
    }

    /// Sends the request built by `make` through the proxy (after this sender's earlier
    /// messages) and waits for the answer; `timeout` covers locating the singleton too.
    pub async fn ask<R>(
        &self,
        make: impl FnOnce(RemoteReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError>
    where
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.remote
            .ask_via(
                make,
                |msg| {
                    self.tell(msg).map_err(|e| match e {
                        TellError::Full(_) => AskError::MailboxFull,
                        TellError::Closed(_) => {
                            AskError::Failed("this node's singleton proxy has stopped".into())
                        }
                    })
                },
                timeout,
            )
            .await
    }

    /// Messages dropped by this proxy (buffer overflow, or refused by the singleton's
    /// node).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl<M> SingletonProxy<M> {
    /// Where the singleton runs as far as this proxy knows (`None` while it is being
    /// located or moving).
    pub fn location(&self) -> Option<UniqueAddress> {
        self.target.borrow().as_ref().map(|t| t.node())
    }

    pub(crate) fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

pub(crate) struct ProxyTask<M> {
    pub(crate) state: watch::Receiver<ClusterState>,
    pub(crate) remote: Remote,
    pub(crate) role: Option<String>,
    pub(crate) singleton_name: String,
    pub(crate) manager_name: String,
    pub(crate) buffer_size: usize,
    pub(crate) identify_interval: Duration,
    pub(crate) rx: mpsc::Receiver<M>,
    pub(crate) target: watch::Sender<Option<RemoteRef<M>>>,
    pub(crate) dropped: Arc<AtomicU64>,
}

/// Make a proxy handle and the task that serves it.
pub(crate) fn channel<M>(
    buffer_size: usize,
    remote: &Remote,
) -> (
    SingletonProxy<M>,
    mpsc::Receiver<M>,
    watch::Sender<Option<RemoteRef<M>>>,
) {
    let (tx, rx) = mpsc::channel(buffer_size.max(1));
    let (target_tx, target) = watch::channel(None);
    let proxy = SingletonProxy {
        tx,
        target,
        dropped: Arc::new(AtomicU64::new(0)),
        remote: remote.clone(),
    };
    (proxy, rx, target_tx)
}

impl<M> ProxyTask<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    pub(crate) async fn run(mut self) {
        let mut buffer: VecDeque<M> = VecDeque::new();
        let mut located: Option<RemoteRef<M>> = None;
        let mut oldest = designated(&self.state.borrow(), self.role.as_deref());
        let (found_tx, mut found_rx) = mpsc::channel::<(UniqueAddress, bool)>(4);
        let mut identifying = false;
        let mut tick = tokio::time::interval(self.identify_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut state_open = true;
        let mut warned = false;
        loop {
            tokio::select! {
                changed = self.state.changed(), if state_open => {
                    if changed.is_err() {
                        state_open = false;
                        continue;
                    }
                    oldest = designated(&self.state.borrow(), self.role.as_deref());
                    if located.as_ref().is_some_and(|t| Some(t.node()) != oldest) {
                        located = None;
                        self.target.send_replace(None);
                    }
                }
                message = self.rx.recv() => {
                    let Some(message) = message else { break };
                    buffer.push_back(message);
                }
                _ = tick.tick(), if located.is_none() && oldest.is_some() && !identifying => {
                    let node = oldest.expect("checked");
                    identifying = true;
                    let manager = self.remote.resolve::<ManagerMessage>(node, &self.manager_name);
                    let found = found_tx.clone();
                    let timeout = self.identify_interval.max(Duration::from_millis(500));
                    tokio::spawn(async move {
                        let running = manager.ask(ManagerMessage::Identify, timeout).await;
                        let _ = found.send((node, running.unwrap_or(false))).await;
                    });
                }
                Some((node, running)) = found_rx.recv() => {
                    identifying = false;
                    if running && oldest == Some(node) {
                        located = Some(self.remote.resolve::<M>(node, &self.singleton_name));
                        tracing::debug!(singleton = %self.singleton_name, %node, "singleton located");
                    }
                }
            }
            // Forward what can go; keep the rest (in order) for later.
            while let Some(target) = located.as_ref() {
                let Some(message) = buffer.pop_front() else {
                    break;
                };
                if let Err(undelivered) = target.tell(message) {
                    match undelivered.reason {
                        ref reason if reason.is_full() => {
                            self.drop_one(&mut warned, "the singleton's queue is full");
                        }
                        reason => {
                            // Gone from there: locate it again and retry then.
                            tracing::debug!(singleton = %self.singleton_name, %reason, "singleton moved");
                            buffer.push_front(undelivered.message);
                            located = None;
                        }
                    }
                }
            }
            // Published only after the buffer went out, so that asks follow buffered tells.
            let published = self.target.borrow().as_ref().map(|t| t.node());
            if published != located.as_ref().map(|t| t.node()) {
                self.target.send_replace(located.clone());
            }
            while buffer.len() > self.buffer_size {
                buffer.pop_front();
                self.drop_one(&mut warned, "the proxy's buffer is full");
            }
        }
    }

    fn drop_one(&self, warned: &mut bool, why: &str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if !*warned {
            *warned = true;
            tracing::warn!(singleton = %self.singleton_name, why,
                "singleton proxy dropped a message (logged once, counted in dropped())");
        } else {
            tracing::debug!(singleton = %self.singleton_name, why, "singleton proxy dropped a message");
        }
    }
}

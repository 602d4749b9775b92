//! The local receptionist: actors register under a typed [`ServiceKey`]; others find them or
//! subscribe to the listing.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::{ActorRef, StopReason};

/// Names a service whose actors accept messages of type `M`. Two keys are the same service
/// when both the id and the message type match.
pub struct ServiceKey<M> {
    id: Arc<str>,
    _msg: PhantomData<fn(M)>,
}

impl<M> ServiceKey<M> {
    /// A key with this id.
    pub fn new(id: &str) -> Self {
        Self {
            id: Arc::from(id),
            _msg: PhantomData,
        }
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl<M> Clone for ServiceKey<M> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            _msg: PhantomData,
        }
    }
}

impl<M> fmt::Debug for ServiceKey<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceKey({})", self.id)
    }
}

/// The actors registered under one key, in registration order.
pub type Listing<M> = Vec<ActorRef<M>>;

type Slot = Box<dyn Any + Send + Sync>;
type Services = HashMap<(Arc<str>, TypeId), Slot>;

/// The registry behind [`ActorSystem::receptionist`](crate::ActorSystem::receptionist).
///
/// Registrations end when the actor stops (or on [`deregister`](Self::deregister)).
/// Listings are published on a `watch` channel per key, so subscribers never message or lock
/// anything to read them.
#[derive(Default, Clone)]
pub struct Receptionist {
    /// Per key: a `watch::Sender<Listing<M>>`, type-erased.
    services: Arc<Mutex<Services>>,
}

impl Receptionist {
    fn with_listing<M: Send + 'static, T>(
        &self,
        key: &ServiceKey<M>,
        f: impl FnOnce(&watch::Sender<Listing<M>>) -> T,
    ) -> T {
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        let slot = services
            .entry((key.id.clone(), TypeId::of::<M>()))
            .or_insert_with(|| Box::new(watch::Sender::new(Listing::<M>::new())));
        let sender = slot
            .downcast_ref::<watch::Sender<Listing<M>>>()
            .expect("slot type is fixed by the TypeId in its key");
        f(sender)
    }

    /// Registers `actor` under `key` (once; registering again changes nothing). The
    /// registration ends when the actor stops: by the time its
    /// [`terminated`](ActorRef::terminated) returns, it is no longer listed.
    pub fn register<M: Send + 'static>(&self, key: &ServiceKey<M>, actor: ActorRef<M>) {
        let added = self.with_listing(key, |tx| {
            tx.send_if_modified(|refs| {
                if refs.contains(&actor) {
                    false
                } else {
                    refs.push(actor.clone());
                    true
                }
            })
        });
        if added {
            // Runs before the actor's `terminated()` returns, or at once if it already has.
            let this = self.clone();
            let key = key.clone();
            let registered = actor.clone();
            actor.cell().on_stop(Box::new(move |_: &StopReason| {
                this.deregister(&key, &registered);
            }));
        }
    }

    /// Removes `actor` from `key`'s listing.
    pub fn deregister<M: Send + 'static>(&self, key: &ServiceKey<M>, actor: &ActorRef<M>) {
        self.with_listing(key, |tx| {
            tx.send_if_modified(|refs| {
                let before = refs.len();
                refs.retain(|r| r != actor);
                refs.len() != before
            });
        });
    }

    /// The actors registered under `key` now.
    pub fn find<M: Send + 'static>(&self, key: &ServiceKey<M>) -> Listing<M> {
        self.with_listing(key, |tx| tx.borrow().clone())
    }

    /// A receiver that always holds the current listing of `key` and is notified when it
    /// changes.
    pub fn subscribe<M: Send + 'static>(&self, key: &ServiceKey<M>) -> watch::Receiver<Listing<M>> {
        self.with_listing(key, |tx| tx.subscribe())
    }

    /// Delivers the listing of `key` to `subscriber` now and after every change, until the
    /// subscriber stops. A listing that finds the subscriber's mailbox full is skipped; a
    /// newer one follows with the next change.
    pub fn subscribe_actor<M: Send + 'static>(
        &self,
        key: &ServiceKey<M>,
        subscriber: ActorRef<Listing<M>>,
    ) {
        let mut rx = self.subscribe(key);
        tokio::spawn(async move {
            loop {
                let listing = rx.borrow_and_update().clone();
                if let Err(crate::TellError::Closed(_)) = subscriber.tell(listing) {
                    return;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    _ = subscriber.terminated() => return,
                }
            }
        });
    }
}

impl fmt::Debug for Receptionist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Receptionist")
    }
}

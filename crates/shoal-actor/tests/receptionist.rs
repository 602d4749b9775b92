//! The receptionist: register, find, subscribe, automatic deregistration.

use std::time::Duration;

use shoal_actor::{
    Actor, ActorError, ActorRef, ActorSystem, Context, Listing, Props, ReplyTo, ServiceKey,
};
use tokio::sync::mpsc;

const ASK: Duration = Duration::from_secs(5);

struct Service;

enum Msg {
    Ping(ReplyTo<()>),
}

impl Actor for Service {
    type Msg = Msg;

    async fn handle(&mut self, _ctx: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
        match msg {
            Msg::Ping(reply) => {
                reply.send(());
            }
        }
        Ok(())
    }
}

fn service(system: &ActorSystem, name: &str) -> ActorRef<Msg> {
    system.spawn(name, Props::new(|| Service))
}

fn names<M: Send + 'static>(listing: &Listing<M>) -> Vec<String> {
    listing.iter().map(|r| r.name().to_owned()).collect()
}

#[tokio::test]
async fn register_then_find() {
    let system = ActorSystem::new("t");
    let key = ServiceKey::<Msg>::new("svc");
    assert_eq!(key.id(), "svc");
    let receptionist = system.receptionist();
    assert!(receptionist.find(&key).is_empty());

    let a = service(&system, "a");
    let b = service(&system, "b");
    receptionist.register(&key, a.clone());
    receptionist.register(&key, b.clone());
    // A duplicate registration changes nothing.
    receptionist.register(&key, a.clone());
    let found = receptionist.find(&key);
    assert_eq!(found, vec![a.clone(), b.clone()]);
    // The listed refs work.
    found[1].ask(Msg::Ping, ASK).await.unwrap();

    receptionist.deregister(&key, &a);
    assert_eq!(receptionist.find(&key), vec![b.clone()]);
    system.shutdown().await;
}

#[tokio::test]
async fn keys_are_distinguished_by_id_and_message_type() {
    let system = ActorSystem::new("t");
    let a = service(&system, "a");
    let receptionist = system.receptionist();
    receptionist.register(&ServiceKey::<Msg>::new("svc"), a.clone());
    assert!(
        receptionist
            .find(&ServiceKey::<Msg>::new("other"))
            .is_empty()
    );
    assert!(receptionist.find(&ServiceKey::<u32>::new("svc")).is_empty());
    assert_eq!(receptionist.find(&ServiceKey::<Msg>::new("svc")), vec![a]);
    system.shutdown().await;
}

#[tokio::test]
async fn subscribe_sees_every_change() {
    let system = ActorSystem::new("t");
    let key = ServiceKey::<Msg>::new("svc");
    let receptionist = system.receptionist();
    let mut listing = receptionist.subscribe(&key);
    assert!(listing.borrow_and_update().is_empty());

    let a = service(&system, "a");
    receptionist.register(&key, a.clone());
    listing.changed().await.unwrap();
    assert_eq!(names(&listing.borrow_and_update()), vec!["a"]);

    let b = service(&system, "b");
    receptionist.register(&key, b.clone());
    listing.changed().await.unwrap();
    assert_eq!(names(&listing.borrow_and_update()), vec!["a", "b"]);

    // A duplicate does not notify.
    receptionist.register(&key, b.clone());
    assert!(!listing.has_changed().unwrap());

    a.stop().await;
    let now = listing.wait_for(|l| l.len() == 1).await.unwrap().clone();
    assert_eq!(now, vec![b]);
    system.shutdown().await;
}

/// Once `terminated()` returned, the actor is no longer listed. Repeated on two worker
/// threads to catch a deregistration that lags behind the termination notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_actor_is_deregistered_before_terminated_returns() {
    let system = ActorSystem::new("t");
    let key = ServiceKey::<Msg>::new("svc");
    let receptionist = system.receptionist();
    for i in 0..200 {
        let actor = service(&system, "a");
        receptionist.register(&key, actor.clone());
        assert_eq!(receptionist.find(&key), vec![actor.clone()]);
        actor.kill();
        actor.terminated().await;
        assert!(receptionist.find(&key).is_empty(), "iteration {i}");
    }
}

#[tokio::test]
async fn registering_a_stopped_actor_lists_nothing() {
    let system = ActorSystem::new("t");
    let key = ServiceKey::<Msg>::new("svc");
    let receptionist = system.receptionist();
    let actor = service(&system, "a");
    actor.kill();
    actor.terminated().await;
    let mut listing = receptionist.subscribe(&key);
    receptionist.register(&key, actor);
    // Either it is never added, or removed at once; it ends up absent.
    let now = listing.wait_for(|l| l.is_empty()).await.unwrap().clone();
    assert!(now.is_empty());
    assert!(receptionist.find(&key).is_empty());
}

/// Forwards every listing it receives to the test.
struct Subscriber {
    out: mpsc::UnboundedSender<Vec<String>>,
}

impl Actor for Subscriber {
    type Msg = Listing<Msg>;

    async fn handle(
        &mut self,
        _ctx: &mut Context<Self>,
        listing: Listing<Msg>,
    ) -> Result<(), ActorError> {
        let _ = self.out.send(names(&listing));
        Ok(())
    }
}

#[tokio::test]
async fn subscribe_actor_delivers_listings_to_an_actor() {
    let system = ActorSystem::new("t");
    let key = ServiceKey::<Msg>::new("svc");
    let receptionist = system.receptionist();
    let a = service(&system, "a");
    receptionist.register(&key, a.clone());

    let (tx, mut listings) = mpsc::unbounded_channel();
    let subscriber = system.spawn("sub", Props::new(move || Subscriber { out: tx.clone() }));
    receptionist.subscribe_actor(&key, subscriber.clone());
    // The current listing first.
    assert_eq!(listings.recv().await.unwrap(), vec!["a"]);

    let b = service(&system, "b");
    receptionist.register(&key, b.clone());
    assert_eq!(listings.recv().await.unwrap(), vec!["a", "b"]);

    a.stop().await;
    assert_eq!(listings.recv().await.unwrap(), vec!["b"]);

    // After the subscriber stops, nothing more is delivered and nothing is dead-lettered.
    subscriber.stop().await;
    subscriber.terminated().await;
    let dead = system.dead_letter_count();
    let c = service(&system, "c");
    receptionist.register(&key, c.clone());
    c.ask(Msg::Ping, ASK).await.unwrap();
    assert_eq!(receptionist.find(&key), vec![b, c]);
    assert_eq!(system.dead_letter_count(), dead);
    system.shutdown().await;
}

#[tokio::test]
async fn an_adapter_can_subscribe() {
    /// Receives listings through an adapter of its own protocol.
    struct Watcher {
        out: mpsc::UnboundedSender<usize>,
    }
    enum WatcherMsg {
        Listing(Listing<Msg>),
        Subscribe(ServiceKey<Msg>, ReplyTo<()>),
    }
    impl Actor for Watcher {
        type Msg = WatcherMsg;
        async fn handle(
            &mut self,
            ctx: &mut Context<Self>,
            msg: WatcherMsg,
        ) -> Result<(), ActorError> {
            match msg {
                WatcherMsg::Listing(l) => {
                    let _ = self.out.send(l.len());
                }
                WatcherMsg::Subscribe(key, reply) => {
                    let adapter = ctx.message_adapter(WatcherMsg::Listing);
                    ctx.system().receptionist().subscribe_actor(&key, adapter);
                    reply.send(());
                }
            }
            Ok(())
        }
    }
    let system = ActorSystem::new("t");
    let key = ServiceKey::<Msg>::new("svc");
    let (tx, mut counts) = mpsc::unbounded_channel();
    let watcher = system.spawn("w", Props::new(move || Watcher { out: tx.clone() }));
    watcher
        .ask(|r| WatcherMsg::Subscribe(key.clone(), r), ASK)
        .await
        .unwrap();
    assert_eq!(counts.recv().await, Some(0));
    let a = service(&system, "a");
    system.receptionist().register(&key, a);
    assert_eq!(counts.recv().await, Some(1));
    system.shutdown().await;
}

//! Remote actors over TCP on 127.0.0.1:0: tell, ask, refs inside messages, timeouts, late
//! replies, replies to a gone node, failures reported back to the asker.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_actor::{Actor, ActorError, ActorSystem, AskError, Context, Props};
use shoal_remote::testing::{WAIT, any_port, test_config};
use shoal_remote::{
    Direction, PeerEvent, RegisterError, Remote, RemoteRef, RemoteReplyTo, TcpTransport, Transport,
    UndeliveredReason,
};
use tokio::sync::mpsc;

const ASK: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
struct Note(String);

#[derive(Debug, Serialize, Deserialize)]
enum EchoMsg {
    Ping { n: u64, reply: RemoteReplyTo<u64> },
    Record(String),
    Forward { to: RemoteRef<Note>, text: String },
    Hold { reply: RemoteReplyTo<u64> },
    Release,
}

/// Answers pings, records tells, forwards through refs it receives, holds replies on request.
struct Echo {
    seen: mpsc::Sender<String>,
    held: Vec<RemoteReplyTo<u64>>,
}

impl Actor for Echo {
    type Msg = EchoMsg;
    async fn handle(&mut self, _: &mut Context<Self>, msg: EchoMsg) -> Result<(), ActorError> {
        match msg {
            EchoMsg::Ping { n, reply } => {
                reply.send(n + 1);
            }
            EchoMsg::Record(s) => {
                let _ = self.seen.try_send(s);
            }
            EchoMsg::Forward { to, text } => {
                to.tell(Note(text))
                    .map_err(|e| ActorError::new(e.to_string()))?;
            }
            EchoMsg::Hold { reply } => {
                self.held.push(reply);
                let _ = self.seen.try_send(format!("held {}", self.held.len()));
            }
            EchoMsg::Release => {
                for (i, r) in self.held.drain(..).enumerate() {
                    r.send(1000 + i as u64);
                }
            }
        }
        Ok(())
    }
}

struct Collector(mpsc::Sender<String>);

impl Actor for Collector {
    type Msg = Note;
    async fn handle(&mut self, _: &mut Context<Self>, Note(s): Note) -> Result<(), ActorError> {
        let _ = self.0.try_send(s);
        Ok(())
    }
}

fn tcp() -> Arc<dyn Transport> {
    Arc::new(TcpTransport::new())
}

async fn node() -> Remote {
    Remote::bind(tcp(), any_port(), test_config())
        .await
        .expect("bind")
}

struct Hosted {
    remote: Remote,
    system: ActorSystem,
    echo: shoal_actor::ActorRef<EchoMsg>,
    seen: mpsc::Receiver<String>,
}

async fn host_echo() -> Hosted {
    let remote = node().await;
    let system = ActorSystem::new("host");
    let (tx, seen) = mpsc::channel(1024);
    let echo = system.spawn(
        "echo",
        Props::new(move || Echo {
            seen: tx.clone(),
            held: Vec::new(),
        }),
    );
    remote.register("echo", echo.clone()).expect("register");
    Hosted {
        remote,
        system,
        echo,
        seen,
    }
}

async fn next(rx: &mut mpsc::Receiver<String>) -> String {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("nothing arrived in time")
        .expect("channel open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tell_and_ask_across_two_nodes() {
    let mut b = host_echo().await;
    let a = node().await;
    let echo: RemoteRef<EchoMsg> = a.resolve(b.remote.local(), "echo");
    echo.tell(EchoMsg::Record("hello".into())).expect("tell");
    assert_eq!(next(&mut b.seen).await, "hello");
    let n = echo
        .ask(|reply| EchoMsg::Ping { n: 41, reply }, ASK)
        .await
        .expect("ask");
    assert_eq!(n, 42);
    // 64 concurrent asks, each answered with its own value.
    let asks: Vec<_> = (0..64u64)
        .map(|i| {
            let echo = echo.clone();
            tokio::spawn(async move { echo.ask(|reply| EchoMsg::Ping { n: i, reply }, ASK).await })
        })
        .collect();
    for (i, t) in asks.into_iter().enumerate() {
        assert_eq!(t.await.expect("task").expect("ask"), i as u64 + 1);
    }
    assert!(a.endpoint().stats().frames_sent >= 66);
    b.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refs_travel_inside_messages() {
    let b = host_echo().await;
    let a = node().await;
    let system = ActorSystem::new("a");
    let (tx, mut collected) = mpsc::channel(16);
    let collector = system.spawn("collector", Props::new(move || Collector(tx.clone())));
    let collector_ref = a.register("collector", collector).expect("register");
    let echo: RemoteRef<EchoMsg> = a.resolve(b.remote.local(), "echo");
    // B decodes the ref (attached to B's Remote) and tells A's collector through it.
    echo.tell(EchoMsg::Forward {
        to: collector_ref.clone(),
        text: "via b".into(),
    })
    .expect("tell");
    assert_eq!(next(&mut collected).await, "via b");
    // A ref decoded outside any Remote is detached; attach() fixes that.
    let json = serde_json::to_string(&collector_ref).expect("encode");
    let detached: RemoteRef<Note> = serde_json::from_str(&json).expect("decode");
    assert_eq!(detached, collector_ref);
    assert!(!detached.is_attached());
    let err = detached.tell(Note("x".into())).expect_err("detached");
    assert_eq!(err.reason, UndeliveredReason::Detached);
    let attached: RemoteRef<Note> = b
        .remote
        .attach(|| serde_json::from_str(&json).expect("decode"));
    attached.tell(Note("attached at b".into())).expect("tell");
    assert_eq!(next(&mut collected).await, "attached at b");
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_times_out_and_a_late_reply_is_counted() {
    let mut b = host_echo().await;
    let a = node().await;
    let echo: RemoteRef<EchoMsg> = a.resolve(b.remote.local(), "echo");
    let started = tokio::time::Instant::now();
    let r = echo
        .ask(|reply| EchoMsg::Hold { reply }, Duration::from_millis(200))
        .await;
    assert_eq!(r, Err(AskError::Timeout));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(next(&mut b.seen).await, "held 1");
    // Release sends the held reply; the ping's reply follows it on the same connection, so
    // once the ping is answered the late reply has been dropped and counted.
    b.echo.tell(EchoMsg::Release).expect("release");
    let n = echo
        .ask(|reply| EchoMsg::Ping { n: 1, reply }, ASK)
        .await
        .expect("ask");
    assert_eq!(n, 2);
    assert_eq!(a.stats().late_replies, 1);
    b.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_an_unknown_recipient_fails_at_once() {
    let b = host_echo().await;
    let a = node().await;
    let nobody: RemoteRef<EchoMsg> = a.resolve(b.remote.local(), "nobody");
    let r = nobody.ask(|reply| EchoMsg::Ping { n: 1, reply }, ASK).await;
    assert!(
        matches!(&r, Err(AskError::Failed(why)) if why.contains("no recipient")),
        "{r:?}"
    );
    assert_eq!(b.remote.stats().unknown_recipient, 1);
    b.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_request_is_reported_to_the_asker() {
    #[derive(Serialize, Deserialize)]
    struct NotAnEchoMsg {
        reply: RemoteReplyTo<u64>,
    }
    let b = host_echo().await;
    let a = node().await;
    let wrong: RemoteRef<NotAnEchoMsg> = a.resolve(b.remote.local(), "echo");
    let r = wrong.ask(|reply| NotAnEchoMsg { reply }, ASK).await;
    assert!(
        matches!(&r, Err(AskError::Failed(why)) if why.contains("undecodable")),
        "{r:?}"
    );
    assert_eq!(b.remote.stats().undecodable, 1);
    b.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_a_gone_node_is_dropped_without_a_storm() {
    const N: usize = 50;
    let mut b = host_echo().await;
    let a = node().await;
    let a_id = a.local();
    let echo: RemoteRef<EchoMsg> = a.resolve(b.remote.local(), "echo");
    let asks: Vec<_> = (0..N)
        .map(|_| {
            let echo = echo.clone();
            tokio::spawn(async move { echo.ask(|reply| EchoMsg::Hold { reply }, ASK).await })
        })
        .collect();
    for i in 1..=N {
        assert_eq!(next(&mut b.seen).await, format!("held {i}"));
    }
    a.shutdown().await;
    for t in asks {
        assert_eq!(
            t.await.expect("task"),
            Err(AskError::NoReply),
            "asks end when their node stops"
        );
    }
    let mut events = b.remote.subscribe_events();
    b.echo.tell(EchoMsg::Release).expect("release");
    // Every reply is dropped, and counted, after a few failed dials.
    let dead = || b.remote.endpoint().stats().dead_letters + b.remote.stats().replies_dropped;
    while dead() < N as u64 {
        let e = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("a failed dial to the gone node")
            .expect("events");
        if let PeerEvent::ConnectFailed {
            addr, direction, ..
        } = e
        {
            assert_eq!((addr, direction), (a_id.addr, Direction::Outbound));
        }
    }
    assert_eq!(dead(), N as u64);
    let attempts = b.remote.endpoint().stats().connect_attempts;
    assert!(attempts <= 5, "{attempts} dials for {N} replies: a storm");
    // B carries on.
    let c = node().await;
    let echo: RemoteRef<EchoMsg> = c.resolve(b.remote.local(), "echo");
    assert_eq!(
        echo.ask(|reply| EchoMsg::Ping { n: 7, reply }, ASK).await,
        Ok(8)
    );
    b.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_refs_skip_the_network() {
    let b = host_echo().await;
    let echo: RemoteRef<EchoMsg> = b.remote.resolve(b.remote.local(), "echo");
    assert_eq!(
        echo.ask(|reply| EchoMsg::Ping { n: 1, reply }, ASK).await,
        Ok(2)
    );
    assert_eq!(b.remote.endpoint().stats().frames_sent, 0);
    let missing: RemoteRef<EchoMsg> = b.remote.resolve(b.remote.local(), "missing");
    let err = missing.tell(EchoMsg::Release).expect_err("no such name");
    assert_eq!(err.reason, UndeliveredReason::NoRecipient("missing".into()));
    b.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_until_their_actor_stops() {
    let b = host_echo().await;
    assert_eq!(
        b.remote.register("echo", b.echo.clone()).map(|_| ()),
        Err(RegisterError::NameTaken("echo".into()))
    );
    assert_eq!(
        b.remote.register("", b.echo.clone()).map(|_| ()),
        Err(RegisterError::InvalidName(String::new()))
    );
    b.echo.stop().await;
    b.echo.terminated().await;
    let (tx, _seen) = mpsc::channel(4);
    let again = b.system.spawn(
        "echo2",
        Props::new(move || Echo {
            seen: tx.clone(),
            held: Vec::new(),
        }),
    );
    b.remote
        .register("echo", again)
        .expect("the name of a stopped actor is free");
    b.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_recipient_gets_the_senders_identity() {
    let b = node().await;
    let a = node().await;
    let (_, mut rx) = b
        .register_channel::<Note>("membership", 16)
        .expect("register");
    let target: RemoteRef<Note> = a.resolve(b.local(), "membership");
    target.tell(Note("gossip".into())).expect("tell");
    let (from, Note(text)) = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!((from, text.as_str()), (a.local(), "gossip"));
    let mut events = b.subscribe_events();
    drop(events.try_recv());
    a.shutdown().await;
    loop {
        let e = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("disconnect event")
            .expect("events");
        if matches!(e, PeerEvent::Disconnected { peer, .. } if peer == a.local()) {
            break;
        }
    }
}

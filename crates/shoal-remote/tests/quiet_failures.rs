//! A burst of replies to a node that has gone is dropped and counted, with a bounded number
//! of warnings (its own test binary: it installs a global log counter).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_actor::{Actor, ActorError, ActorSystem, Context, Props};
use shoal_remote::testing::{WAIT, any_port, test_config};
use shoal_remote::{Remote, RemoteRef, RemoteReplyTo, TcpTransport};
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt;

static WARNINGS: AtomicUsize = AtomicUsize::new(0);

struct CountWarnings;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            WARNINGS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Serialize, Deserialize)]
enum Msg {
    Hold(RemoteReplyTo<u64>),
    Release,
}

struct Holder(Vec<RemoteReplyTo<u64>>, mpsc::Sender<usize>);

impl Actor for Holder {
    type Msg = Msg;
    async fn handle(&mut self, _: &mut Context<Self>, msg: Msg) -> Result<(), ActorError> {
        match msg {
            Msg::Hold(r) => {
                self.0.push(r);
                let _ = self.1.try_send(self.0.len());
            }
            Msg::Release => {
                for r in self.0.drain(..) {
                    r.send(1);
                }
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_to_a_gone_node_cost_a_counter_not_a_log_storm() {
    let _ =
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(CountWarnings));
    const N: usize = 500;
    let b = Remote::bind(Arc::new(TcpTransport::new()), any_port(), test_config())
        .await
        .expect("bind");
    let system = ActorSystem::new("b");
    let (tx, mut held) = mpsc::channel(N);
    let holder = system.spawn("holder", Props::new(move || Holder(Vec::new(), tx.clone())));
    b.register("holder", holder.clone()).expect("register");
    let a = Remote::bind(Arc::new(TcpTransport::new()), any_port(), test_config())
        .await
        .expect("bind");
    let target: RemoteRef<Msg> = a.resolve(b.local(), "holder");
    for _ in 0..N {
        let target = target.clone();
        tokio::spawn(async move { target.ask(Msg::Hold, Duration::from_secs(30)).await });
    }
    loop {
        let n = tokio::time::timeout(WAIT, held.recv())
            .await
            .expect("held")
            .expect("open");
        if n == N {
            break;
        }
    }
    a.shutdown().await;
    let before = WARNINGS.load(Ordering::Relaxed);
    let mut events = b.subscribe_events();
    holder.tell(Msg::Release).expect("release");
    while b.endpoint().stats().dead_letters + b.stats().replies_dropped < N as u64 {
        tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("a failed dial")
            .expect("events");
    }
    let warnings = WARNINGS.load(Ordering::Relaxed) - before;
    assert!(
        warnings >= 1,
        "the first failure must be logged (is the counter installed?)"
    );
    assert!(warnings <= 3, "{warnings} warnings for {N} dropped replies");
    eprintln!(
        "warnings: {warnings}, dials: {}",
        b.endpoint().stats().connect_attempts
    );
    assert!(b.endpoint().stats().connect_attempts <= 5);
    system.shutdown().await;
}

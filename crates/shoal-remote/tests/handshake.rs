//! The handshake over TCP: a recorded handshake cannot be replayed, the secret never travels,
//! an acceptor must be who the dialer dialed, bad configs are refused at bind.

use std::sync::{Arc, Mutex};

use shoal_remote::testing::{TestNode, WAIT, any_port, test_config};
use shoal_remote::{
    BindError, ClusterSecret, Direction, Endpoint, PeerEvent, TcpTransport, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn tcp() -> Arc<dyn Transport> {
    Arc::new(TcpTransport::new())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Forwards a connection to `to`, recording what the dialer sends.
async fn relay(mut from: TcpStream, to: std::net::SocketAddr, tap: Arc<Mutex<Vec<u8>>>) {
    let mut to = TcpStream::connect(to).await.expect("connect");
    let (mut ar, mut aw) = from.split();
    let (mut br, mut bw) = to.split();
    let up = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = ar.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            tap.lock().unwrap().extend_from_slice(&buf[..n]);
            if bw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = tokio::io::copy(&mut br, &mut aw);
    let _ = tokio::join!(up, down);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_handshake_cannot_be_replayed_and_the_secret_never_travels() {
    let t = tcp();
    let secret = b"test-secret-0123456789abcdef";
    // B advertises the proxy's address, so A dials the proxy, which records what A sends.
    let proxy = TcpListener::bind(any_port()).await.expect("proxy");
    let mut config = test_config();
    config.advertised_addr = Some(proxy.local_addr().expect("addr"));
    let mut b = TestNode::bind(&t, any_port(), config).await;
    let b_real = b.endpoint.listen_addr();
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let tap = recorded.clone();
    tokio::spawn(async move {
        loop {
            let (from_a, _) = proxy.accept().await.expect("accept");
            tokio::spawn(relay(from_a, b_real, tap.clone()));
        }
    });
    let a = TestNode::start(&t).await;
    a.endpoint.send(b.id(), b"through the proxy").expect("send");
    assert_eq!(
        b.next_message().await,
        (a.id(), b"through the proxy".to_vec())
    );
    let wire = recorded.lock().unwrap().clone();
    assert!(!wire.is_empty());
    assert!(!contains(&wire, secret), "the secret travelled in clear");
    assert!(
        !contains(&wire, &secret[..8]),
        "part of the secret travelled in clear"
    );

    // Replaying A's bytes (hello, proof, data) to B fails: B's fresh nonce needs a new proof.
    let mut replay = TcpStream::connect(b_real).await.expect("connect");
    replay.write_all(&wire).await.expect("write");
    let mut sink = Vec::new();
    tokio::time::timeout(WAIT, replay.read_to_end(&mut sink))
        .await
        .expect("B must close the replayed connection")
        .ok();
    let e = b
        .next_event("replay refused", |e| {
            matches!(
                e,
                PeerEvent::ConnectFailed {
                    direction: Direction::Inbound,
                    ..
                }
            )
        })
        .await;
    assert!(format!("{e:?}").contains("prove"), "{e:?}");
    // Nothing from the replay was delivered.
    let c = TestNode::start(&t).await;
    c.endpoint.send(b.id(), b"marker").expect("send");
    assert_eq!(b.next_message().await, (c.id(), b"marker".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acceptor_must_be_who_was_dialed() {
    let t = tcp();
    let mut config = test_config();
    config.advertised_addr = Some("127.0.0.1:1".parse().unwrap());
    let b = TestNode::bind(&t, any_port(), config).await;
    let mut a = TestNode::start(&t).await;
    a.endpoint
        .send_to_addr(b.endpoint.listen_addr(), b"x")
        .expect("queued");
    let e = a
        .next_event("refusal", |e| {
            matches!(
                e,
                PeerEvent::ConnectFailed {
                    direction: Direction::Outbound,
                    ..
                }
            )
        })
        .await;
    assert!(format!("{e:?}").contains("dialed"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconsistent_configs_are_refused_at_bind() {
    let mut config = test_config();
    config.secret = ClusterSecret::new("");
    let r = Endpoint::bind_with_channel(tcp(), any_port(), config, 8).await;
    assert!(
        matches!(r, Err(BindError::Config(ref e)) if e.0.contains("secret")),
        "{r:?}"
    );
    let mut config = test_config();
    config.max_frame_len = 10;
    let r = Endpoint::bind_with_channel(tcp(), any_port(), config, 8).await;
    assert!(
        matches!(r, Err(BindError::Config(ref e)) if e.0.contains("max_frame_len")),
        "{r:?}"
    );
}

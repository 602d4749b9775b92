//! Abuse of the wire format over real TCP sockets: garbage, huge lengths, wrong magic or
//! version, before and after the handshake. Each bad connection is closed with a logged
//! reason; the node keeps serving everyone else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_remote::frame::{self, FrameKind, HEADER_LEN, MAGIC, PROTOCOL_VERSION};
use shoal_remote::testing::{TestNode, WAIT, any_port, dial_raw, test_config};
use shoal_remote::{Connection, Direction, PeerEvent, TcpTransport, Transport, UniqueAddress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn tcp() -> Arc<dyn Transport> {
    Arc::new(TcpTransport::new())
}

fn header(magic: [u8; 4], version: u8, kind: u8, len: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(&magic);
    h.push(version);
    h.push(kind);
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&len.to_be_bytes());
    h
}

/// Waits until the node closes the connection: a read returns EOF or an error.
async fn assert_closed<S: tokio::io::AsyncRead + Unpin + ?Sized>(conn: &mut S, what: &str) {
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // A Reject frame may come first.
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{what}: the node did not close the connection"
    );
}

/// The node still takes messages from a well-behaved peer.
async fn still_serves(t: &Arc<dyn Transport>, node: &mut TestNode, tag: &str) {
    let friend = TestNode::start(t).await;
    friend
        .endpoint
        .send(node.id(), tag.as_bytes())
        .expect("send");
    let (from, payload) = node.next_message().await;
    assert_eq!(
        (from, payload.as_slice()),
        (friend.id(), tag.as_bytes()),
        "node stopped serving after {tag}"
    );
    friend.stop().await;
}

async fn refused_inbound(node: &mut TestNode, needle: &str) {
    let e = node
        .next_event("inbound refusal", |e| {
            matches!(
                e,
                PeerEvent::ConnectFailed {
                    direction: Direction::Inbound,
                    ..
                }
            )
        })
        .await;
    assert!(
        format!("{e:?}").contains(needle),
        "expected a reason mentioning {needle:?}: {e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bytes_before_the_handshake_close_only_that_connection() {
    let t = tcp();
    let mut node = TestNode::start(&t).await;
    let addr = node.id().addr;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "magic",
        ),
        (
            "wrong magic",
            header(*b"AKKA", PROTOCOL_VERSION, FrameKind::Hello as u8, 10),
            "magic",
        ),
        (
            "wrong version",
            header(MAGIC, PROTOCOL_VERSION + 1, FrameKind::Hello as u8, 10),
            "version",
        ),
        (
            "unknown kind",
            header(MAGIC, PROTOCOL_VERSION, 200, 10),
            "kind",
        ),
        (
            "huge length",
            header(MAGIC, PROTOCOL_VERSION, FrameKind::Hello as u8, u32::MAX),
            "exceeds",
        ),
        (
            "data before hello",
            frame::encode(FrameKind::Data, &[0; 16]),
            "Data",
        ),
        (
            "malformed hello",
            frame::encode(FrameKind::Hello, b"\x00\x04test\x09"),
            "malformed",
        ),
    ];
    for (what, bytes, needle) in cases {
        let mut raw = TcpStream::connect(addr).await.expect("connect");
        raw.write_all(&bytes).await.expect("write");
        assert_closed(&mut raw, what).await;
        refused_inbound(&mut node, needle).await;
        still_serves(&t, &mut node, what).await;
    }
    assert!(node.endpoint.stats().inbound_refused >= 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let t = tcp();
    let mut config = test_config();
    config.handshake_timeout = Duration::from_millis(200);
    let mut node = TestNode::bind(&t, any_port(), config).await;
    let mut raw = TcpStream::connect(node.id().addr).await.expect("connect");
    assert_closed(&mut raw, "silent").await;
    refused_inbound(&mut node, "timed out").await;
    still_serves(&t, &mut node, "after silence").await;
}

async fn raw_peer(t: &Arc<dyn Transport>, node: &TestNode) -> (Box<dyn Connection>, UniqueAddress) {
    // The raw client claims an address nobody listens on; the node only receives on it.
    let me = UniqueAddress::new(SocketAddr::from(([127, 0, 0, 1], 9)), 77);
    dial_raw(t, me, node.id().addr, &test_config())
        .await
        .expect("handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_after_the_handshake_close_only_that_connection() {
    let t = tcp();
    let mut config = test_config();
    config.max_frame_len = 64 * 1024;
    let mut node = TestNode::bind(&t, any_port(), config).await;
    let mut data = 1u64.to_be_bytes().to_vec();
    data.extend_from_slice(b"fine");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", vec![0xAB; 64], "magic"),
        (
            "wrong version",
            header(MAGIC, 0, FrameKind::Data as u8, 8),
            "version",
        ),
        (
            "over the limit",
            header(MAGIC, PROTOCOL_VERSION, FrameKind::Data as u8, 64 * 1024),
            "exceeds",
        ),
        (
            "huge length",
            header(MAGIC, PROTOCOL_VERSION, FrameKind::Data as u8, u32::MAX),
            "exceeds",
        ),
        (
            "data without incarnation",
            frame::encode(FrameKind::Data, &[1, 2, 3]),
            "malformed",
        ),
        (
            "handshake frame again",
            frame::encode(FrameKind::Hello, &[]),
            "Hello",
        ),
        (
            "reserved bits",
            {
                let mut f = frame::encode(FrameKind::Data, &data);
                f[6] = 0x80;
                f
            },
            "reserved",
        ),
    ];
    for (what, bytes, needle) in cases {
        let (mut conn, _) = raw_peer(&t, &node).await;
        let raw_id = UniqueAddress::new(SocketAddr::from(([127, 0, 0, 1], 9)), 77);
        node.next_event("raw peer connected", |e| {
            matches!(e, PeerEvent::Connected { peer, direction: Direction::Inbound } if *peer == raw_id)
        })
        .await;
        // A valid frame first (incarnation 0 = any), then the bad one.
        let mut ok = 0u64.to_be_bytes().to_vec();
        ok.extend_from_slice(what.as_bytes());
        conn.write_all(&frame::encode(FrameKind::Data, &ok))
            .await
            .expect("write");
        conn.write_all(&bytes).await.expect("write");
        assert_eq!(
            node.next_message().await,
            (raw_id, what.as_bytes().to_vec())
        );
        assert_closed(&mut conn, what).await;
        let e = node
            .next_event("protocol violation", |e| {
                matches!(e, PeerEvent::Disconnected { peer, direction: Direction::Inbound, .. } if *peer == raw_id)
            })
            .await;
        assert!(
            format!("{e:?}").contains(needle),
            "{what}: expected {needle:?} in {e:?}"
        );
        still_serves(&t, &mut node, what).await;
    }
    assert!(node.endpoint.stats().inbound_refused >= 7);
}

/// A peer with a larger frame limit sending a frame over this node's limit: this node closes
/// the connection; the sender sees the disconnect, and the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_receivers_limit_closes_the_connection() {
    let t = tcp();
    let mut small = test_config();
    small.max_frame_len = 16 * 1024;
    let mut node = TestNode::bind(&t, any_port(), small).await;
    let mut big = test_config();
    big.max_frame_len = 1024 * 1024;
    let mut sender = TestNode::bind(&t, any_port(), big).await;
    sender.endpoint.send(node.id(), b"small").expect("send");
    assert_eq!(node.next_message().await.1, b"small");
    sender
        .endpoint
        .send(node.id(), &vec![7u8; 100_000])
        .expect("within the sender's limit");
    let e = node
        .next_event("violation", |e| {
            matches!(
                e,
                PeerEvent::Disconnected {
                    direction: Direction::Inbound,
                    ..
                }
            )
        })
        .await;
    assert!(format!("{e:?}").contains("exceeds the limit"), "{e:?}");
    sender
        .next_event("closed by the receiver", |e| {
            matches!(
                e,
                PeerEvent::Disconnected {
                    direction: Direction::Outbound,
                    ..
                }
            )
        })
        .await;
    still_serves(&t, &mut node, "after an oversized frame").await;
}

//! Outbound queues are bounded: what does not fit is refused as a dead letter, and a failed
//! connection attempt drops (and counts) what was queued.

use std::time::Duration;

use shoal_remote::testing::{TestNode, any_port, test_config};
use shoal_remote::{Direction, MemoryNetwork, PeerEvent, SendError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_and_counts_dead_letters() {
    let net = MemoryNetwork::new();
    let t = net.transport();
    // A listener that never accepts: the dial succeeds, the handshake waits, nothing drains.
    let silent = t.listen(any_port()).await.expect("listen");
    let mut config = test_config();
    config.max_frame_len = 4 * 1024;
    config.outbound_queue_bytes = 64 * 1024;
    config.handshake_timeout = Duration::from_millis(300);
    let mut a = TestNode::bind(&t, any_port(), config).await;
    let payload = [7u8; 100];
    let frame_len = 12 + 8 + payload.len();
    let mut queued = 0u64;
    let refused = loop {
        match a.endpoint.send_to_addr(silent.local_addr(), &payload) {
            Ok(()) => queued += 1,
            Err(e) => break e,
        }
        assert!(queued < 10_000, "the queue is not bounded");
    };
    assert_eq!(refused, SendError::QueueFull(silent.local_addr()));
    assert_eq!(
        queued,
        (64 * 1024 / frame_len) as u64,
        "the queue holds what fits in its bytes"
    );
    for _ in 0..9 {
        assert_eq!(
            a.endpoint.send_to_addr(silent.local_addr(), &payload),
            Err(SendError::QueueFull(silent.local_addr()))
        );
    }
    assert_eq!(a.endpoint.stats().dead_letters, 10);
    // The handshake times out: the queued messages become dead letters too.
    let e = a
        .next_event("handshake timeout", |e| {
            matches!(
                e,
                PeerEvent::ConnectFailed {
                    direction: Direction::Outbound,
                    ..
                }
            )
        })
        .await;
    assert!(format!("{e:?}").contains("timed out"), "{e:?}");
    assert_eq!(a.endpoint.stats().dead_letters, 10 + queued);
    drop(silent);
}

//! The load test against an in-process artifact-state node (memory store), and against the
//! bare handler: every request answered with the right shape.

use std::time::Duration;

use artifact_state::Config;
use loadtest::{BareServer, Kind, Scenario, Target, run};
use shoal::store_url::StoreUrl;

fn short() -> Scenario {
    Scenario {
        users: 8,
        ramp: Duration::from_secs(1),
        duration: Duration::from_secs(3),
        // Few pairs: users often share one, so concurrent writes to one entity happen.
        artifacts: 10,
        user_ids: 3,
        ..Scenario::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_seconds_against_a_node_without_errors() {
    let config = Config {
        http: "127.0.0.1:0".to_owned(),
        cluster: "127.0.0.1:0".parse().expect("valid"),
        store: StoreUrl::Memory,
        ..Config::default()
    };
    let server = artifact_state::start(config).await.expect("node starts");
    let target = Target::from_addr(server.http_addr().expect("an endpoint node"));

    let report = run(&target, &short(), false).await.expect("the run");
    let markdown = report.to_markdown("artifact-state");
    assert_eq!(report.errors(), 0, "{markdown}");
    assert!(report.failures.is_empty(), "{markdown}");
    assert!(report.reads.requests > 0, "{markdown}");
    assert!(report.writes.requests > 0, "{markdown}");
    assert_eq!(
        report.all().latencies.len() as u64,
        report.requests(),
        "one latency per answered request"
    );
    assert!(markdown.contains("| writes (set…) |"), "{markdown}");

    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bare_handler_answers_every_shape() {
    let server = BareServer::start().await.expect("bare server");
    let scenario = Scenario {
        duration: Duration::from_secs(1),
        ramp: Duration::ZERO,
        ..short()
    };
    let report = run(&Target::from_addr(server.addr()), &scenario, false)
        .await
        .expect("the run");
    assert_eq!(report.errors(), 0, "{}", report.to_markdown("bare"));
    assert!(report.reads.requests > 0 && report.writes.requests > 0);

    let writes_only = Scenario {
        only: Some(Kind::Write),
        ..scenario
    };
    let report = run(&Target::from_addr(server.addr()), &writes_only, false)
        .await
        .expect("the run");
    let markdown = report.to_markdown("bare, writes only");
    assert_eq!(report.errors(), 0, "{markdown}");
    assert_eq!(report.reads.requests, 0, "{markdown}");
    assert!(report.writes.requests > 0, "{markdown}");
    assert!(markdown.contains("writes only"), "{markdown}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn nothing_listening_is_a_clear_error() {
    // Bind then drop: the port is (almost certainly) closed right after.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let error = run(&Target::from_addr(addr), &short(), false)
        .await
        .expect_err("nothing listens");
    assert!(format!("{error:#}").contains("cannot connect"), "{error:#}");
}

#[tokio::test]
async fn target_urls() {
    let t = Target::parse("http://127.0.0.1:8082")
        .await
        .expect("parses");
    assert_eq!(t.addr(), "127.0.0.1:8082".parse().unwrap());
    assert_eq!(t.url(), "http://127.0.0.1:8082");
    let t = Target::parse("http://127.0.0.1:9/api/")
        .await
        .expect("parses");
    assert_eq!(t.url(), "http://127.0.0.1:9/api");
    assert!(Target::parse("https://127.0.0.1:8082").await.is_err());
    assert!(Target::parse("not a url").await.is_err());
}

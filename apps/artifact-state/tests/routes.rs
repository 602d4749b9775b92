//! Every route of the seed's API against an in-process single node over real HTTP.

mod common;

use std::time::Duration;

use artifact_state::Role;
use artifact_state::entity::{ENTITY_TYPE, entity_id};
use common::{Http, config, roles, start_memory, start_with};
use hyper::{Method, StatusCode};
use serde_json::json;
use shoal::persistence::store::PersistenceId;
use shoal::store_url::StoreUrl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_state_is_set_and_answered() {
    let (server, http) = start_memory().await;
    assert!(!http.is("isArtifactReadByUser", 1, "Michael").await);
    http.set("setArtifactReadByUser", 1, "Michael").await;
    assert!(http.is("isArtifactReadByUser", 1, "Michael").await);
    // Setting it again succeeds and changes nothing.
    http.set("setArtifactReadByUser", 1, "Michael").await;
    assert!(http.is("isArtifactReadByUser", 1, "Michael").await);
    assert!(!http.is("isArtifactInUserFeed", 1, "Michael").await);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_state_is_added_and_removed() {
    let (server, http) = start_memory().await;
    assert!(!http.is("isArtifactInUserFeed", 7, "Ann").await);
    http.set("setArtifactAddedToUserFeed", 7, "Ann").await;
    assert!(http.is("isArtifactInUserFeed", 7, "Ann").await);
    assert_eq!(http.states(7, "Ann").await, (false, true));
    http.set("setArtifactRemovedFromUserFeed", 7, "Ann").await;
    assert!(!http.is("isArtifactInUserFeed", 7, "Ann").await);
    // Removing what is not there succeeds.
    http.set("setArtifactRemovedFromUserFeed", 7, "Ann").await;
    assert!(!http.is("isArtifactReadByUser", 7, "Ann").await);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_states_by_post_and_by_get() {
    let (server, http) = start_memory().await;
    assert_eq!(http.states(1, "Michael").await, (false, false));
    assert_eq!(http.states_by_get(1, "Michael").await, (false, false));
    http.set("setArtifactReadByUser", 1, "Michael").await;
    let body = http.call("getAllStates", 1, "Michael").await.ok_json();
    assert_eq!(
        body,
        json!({"artifactId": 1, "userId": "Michael", "artifactRead": true, "artifactInUserFeed": false})
    );
    let body = http
        .get("/artifactState/getAllStates?artifactId=1&userId=Michael")
        .await
        .ok_json();
    assert_eq!(
        body,
        json!({"artifactId": 1, "userId": "Michael", "artifactRead": true, "artifactInUserFeed": false})
    );
    http.set("setArtifactAddedToUserFeed", 1, "Michael").await;
    assert_eq!(http.states_by_get(1, "Michael").await, (true, true));
    // A percent-encoded user id in the query.
    http.set("setArtifactReadByUser", 2, "a b&c").await;
    let body = http
        .get("/artifactState/getAllStates?artifactId=2&userId=a%20b%26c")
        .await
        .ok_json();
    assert_eq!(body["userId"], "a b&c");
    assert_eq!(body["artifactRead"], true);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_and_artifact_pair_is_its_own_state() {
    let (server, http) = start_memory().await;
    http.set("setArtifactReadByUser", 1, "2:x").await;
    // `1` + `2:x` and `12` + `:x` would collide under a naive concatenation.
    assert_eq!(http.states(1, "2:x").await, (true, false));
    assert_eq!(http.states(12, ":x").await, (false, false));
    assert_eq!(http.states(1, "Michael").await, (false, false));
    assert_eq!(http.states(2, "2:x").await, (false, false));
    http.set("setArtifactAddedToUserFeed", u64::MAX, "ünïcødé 🦀")
        .await;
    assert_eq!(http.states(u64::MAX, "ünïcødé 🦀").await, (false, true));
    let long = "u".repeat(256);
    http.set("setArtifactReadByUser", 0, &long).await;
    assert_eq!(http.states(0, &long).await, (true, false));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_stored_as_events_and_repeats_write_nothing() {
    let (server, http) = start_memory().await;
    http.set("setArtifactReadByUser", 3, "Bob").await;
    http.set("setArtifactReadByUser", 3, "Bob").await;
    http.set("setArtifactAddedToUserFeed", 3, "Bob").await;
    http.set("setArtifactRemovedFromUserFeed", 3, "Bob").await;
    http.set("setArtifactRemovedFromUserFeed", 3, "Bob").await;
    let pid = PersistenceId::of(ENTITY_TYPE, &entity_id(3, "Bob")).unwrap();
    assert_eq!(pid.as_str(), "ArtifactState|3:Bob");
    let events = server.store().replay(pid, 1, u64::MAX, 1000).await.unwrap();
    let types: Vec<String> = events
        .iter()
        .map(|e| {
            let payload: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
            payload["type"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        types,
        [
            "ArtifactRead",
            "ArtifactAddedToUserFeed",
            "ArtifactRemovedFromUserFeed"
        ]
    );
    assert!(events.iter().all(|e| e.manifest == "ArtifactStateEvent"));
    server.shutdown().await.unwrap();
}

const POST_ROUTES: [&str; 6] = [
    "setArtifactReadByUser",
    "setArtifactAddedToUserFeed",
    "setArtifactRemovedFromUserFeed",
    "isArtifactReadByUser",
    "isArtifactInUserFeed",
    "getAllStates",
];

async fn bad_body(http: &Http, route: &str, body: &str, status: StatusCode) -> String {
    let reply = http
        .send(
            Method::POST,
            &format!("/artifactState/{route}"),
            Some("application/json"),
            body.to_owned(),
        )
        .await;
    let message = reply.expect_error(status);
    assert!(!message.is_empty(), "{route} {body}");
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_refused_with_json_errors() {
    let (server, http) = start_memory().await;
    let too_long = format!(r#"{{"artifactId":1,"userId":"{}"}}"#, "u".repeat(257));
    for route in POST_ROUTES {
        // Not JSON.
        bad_body(&http, route, "{", StatusCode::BAD_REQUEST).await;
        bad_body(&http, route, "", StatusCode::BAD_REQUEST).await;
        // Missing fields, wrong types: 422.
        bad_body(&http, route, "{}", StatusCode::UNPROCESSABLE_ENTITY).await;
        bad_body(
            &http,
            route,
            r#"{"artifactId":1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        bad_body(
            &http,
            route,
            r#"{"userId":"x"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        bad_body(
            &http,
            route,
            r#"{"artifactId":"1","userId":"x"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        bad_body(
            &http,
            route,
            r#"{"artifactId":1,"userId":5}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        bad_body(&http, route, "\"x\"", StatusCode::UNPROCESSABLE_ENTITY).await;
        bad_body(&http, route, "null", StatusCode::UNPROCESSABLE_ENTITY).await;
        // Not a non-negative integer: 400.
        for id in ["-1", "1.5", "1e3", "18446744073709551616"] {
            let message = bad_body(
                &http,
                route,
                &format!(r#"{{"artifactId":{id},"userId":"x"}}"#),
                StatusCode::BAD_REQUEST,
            )
            .await;
            assert!(message.contains("artifactId"), "{message}");
        }
        // Bad user ids: 400.
        let message = bad_body(
            &http,
            route,
            r#"{"artifactId":1,"userId":""}"#,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(message.contains("userId"), "{message}");
        let message = bad_body(&http, route, &too_long, StatusCode::BAD_REQUEST).await;
        assert!(message.contains("256"), "{message}");
        bad_body(
            &http,
            route,
            r#"{"artifactId":1,"userId":"a\nb"}"#,
            StatusCode::BAD_REQUEST,
        )
        .await;
        // Wrong or missing content type: 415.
        let path = format!("/artifactState/{route}");
        let body = r#"{"artifactId":1,"userId":"x"}"#;
        http.send(Method::POST, &path, Some("text/plain"), body)
            .await
            .expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        http.send(Method::POST, &path, None, body)
            .await
            .expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    // Nothing of it was stored.
    assert_eq!(http.states(1, "x").await, (false, false));
    // A body over the limit: 413.
    let huge = format!(r#"{{"artifactId":1,"userId":"{}"}}"#, "u".repeat(3 << 20));
    bad_body(
        &http,
        "setArtifactReadByUser",
        &huge,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_are_refused_with_json_errors() {
    let (server, http) = start_memory().await;
    for query in [
        "",
        "?artifactId=1",
        "?userId=x",
        "?artifactId=&userId=x",
        "?artifactId=-1&userId=x",
        "?artifactId=+1&userId=x",
        "?artifactId=1.0&userId=x",
        "?artifactId=abc&userId=x",
        "?artifactId=18446744073709551616&userId=x",
        "?artifactId=1&userId=",
        "?artifactId=1&userId=%0A",
    ] {
        http.get(&format!("/artifactState/getAllStates{query}"))
            .await
            .expect_error(StatusCode::BAD_REQUEST);
    }
    let long = "u".repeat(257);
    http.get(&format!(
        "/artifactState/getAllStates?artifactId=1&userId={long}"
    ))
    .await
    .expect_error(StatusCode::BAD_REQUEST);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_get_json_errors() {
    let (server, http) = start_memory().await;
    for path in [
        "/",
        "/artifactState",
        "/artifactState/",
        "/artifactState/nope",
        "/artifactState/getAllStates/1",
        "/artifactstate/getAllStates",
    ] {
        http.get(path).await.expect_error(StatusCode::NOT_FOUND);
        http.post_json(path, &json!({"artifactId": 1, "userId": "x"}))
            .await
            .expect_error(StatusCode::NOT_FOUND);
    }
    for route in POST_ROUTES {
        let path = format!("/artifactState/{route}");
        for method in [Method::PUT, Method::DELETE, Method::PATCH] {
            http.send(method, &path, None, "")
                .await
                .expect_error(StatusCode::METHOD_NOT_ALLOWED);
        }
        if route != "getAllStates" {
            let reply = http.get(&path).await;
            reply.expect_error(StatusCode::METHOD_NOT_ALLOWED);
            let allow = reply.headers.get("allow").and_then(|v| v.to_str().ok());
            assert!(
                allow.is_some_and(|a| a.contains("POST")),
                "{path}: Allow {allow:?}"
            );
        }
    }
    server.shutdown().await.unwrap();
}

/// A node without entity nodes to reach: every entity request answers 503 (not a hang),
/// validation still answers 4xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_entities_answer_503_within_the_ask_timeout() {
    let mut config = config(StoreUrl::Memory);
    config.roles = roles(&[Role::Endpoint]);
    config.ask_timeout = Duration::from_millis(300);
    let (server, http) = start_with(config).await;
    for route in POST_ROUTES {
        let reply = http.call(route, 1, "Michael").await;
        let message = reply.expect_error(StatusCode::SERVICE_UNAVAILABLE);
        assert!(message.contains("did not answer"), "{message}");
        assert_eq!(
            reply
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }
    http.get("/artifactState/getAllStates?artifactId=1&userId=Michael")
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE);
    http.call("getAllStates", 1, "")
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    server.shutdown().await.unwrap();
}

/// Answers stay right when many requests for many entities run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_reach_their_own_entities() {
    let (server, http) = start_memory().await;
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("user-{}", i % 4);
            if i % 2 == 0 {
                http.set("setArtifactReadByUser", i, &user).await;
            } else {
                http.set("setArtifactAddedToUserFeed", i, &user).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for i in 0..40u64 {
        let user = format!("user-{}", i % 4);
        assert_eq!(http.states(i, &user).await, (i % 2 == 0, i % 2 == 1), "{i}");
    }
    server.shutdown().await.unwrap();
}

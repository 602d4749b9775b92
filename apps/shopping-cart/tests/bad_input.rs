//! Every kind of bad input gets a 4xx with a JSON `{"error": …}` body, never a 500, and
//! leaves the stored carts exactly as they were.

mod common;

use common::{Http, journal, start_memory};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde_json::Value;
use shopping_cart::Server;

const BAD: StatusCode = StatusCode::BAD_REQUEST;
const UNPROCESSABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;
const UNSUPPORTED: StatusCode = StatusCode::UNSUPPORTED_MEDIA_TYPE;
const NOT_FOUND: StatusCode = StatusCode::NOT_FOUND;

/// One bad request and the status it must get.
struct Case {
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Bytes,
    status: StatusCode,
    /// A word the error message must contain, so the client learns what was wrong.
    mentions: &'static str,
}

fn json_post(body: &str, status: StatusCode, mentions: &'static str) -> Case {
    Case {
        method: Method::POST,
        path: "/carts/c1/items".to_owned(),
        content_type: Some("application/json"),
        body: Bytes::copy_from_slice(body.as_bytes()),
        status,
        mentions,
    }
}

fn bare(method: Method, path: String, status: StatusCode, mentions: &'static str) -> Case {
    Case {
        method,
        path,
        content_type: None,
        body: Bytes::new(),
        status,
        mentions,
    }
}

/// A server with carts `c1` and `default` holding one item each.
async fn seeded() -> (Server, Http, Value, Value) {
    let (server, http) = start_memory().await;
    http.set_item("c1", "keep", 1).await;
    http.post("/cart?id=keep&quantity=5").await.ok_json();
    let c1 = http.get("/carts/c1").await.ok_json();
    let default = http.get("/cart").await.ok_json();
    (server, http, c1, default)
}

async fn check(cases: Vec<Case>) {
    let (server, http, c1, default) = seeded().await;
    let events_before = (
        journal(server.store(), "c1").await.len(),
        journal(server.store(), "default").await.len(),
    );
    for case in cases {
        let what = format!(
            "{} {} {:?}",
            case.method,
            if case.path.len() > 80 {
                &case.path[..80]
            } else {
                &case.path
            },
            String::from_utf8_lossy(&case.body[..case.body.len().min(80)])
        );
        // A fresh connection: the server closes a connection whose request body it refused
        // unread (413), and a pooled client could otherwise reuse it for the next request.
        let reply = Http::new(common::http_addr(&server))
            .send(case.method, &case.path, case.content_type, case.body)
            .await;
        assert!(
            reply.status.is_client_error(),
            "{what}: status {} body {}",
            reply.status,
            reply.text()
        );
        let message = reply.expect_error(case.status);
        assert!(
            message
                .to_lowercase()
                .contains(&case.mentions.to_lowercase()),
            "{what}: error {message:?} does not mention {:?}",
            case.mentions
        );
        assert_eq!(http.get("/carts/c1").await.ok_json(), c1, "{what}");
        assert_eq!(http.get("/cart").await.ok_json(), default, "{what}");
    }
    let events_after = (
        journal(server.store(), "c1").await.len(),
        journal(server.store(), "default").await.len(),
    );
    assert_eq!(events_before, events_after, "bad requests wrote no events");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_bodies_are_refused() {
    let long = "x".repeat(257);
    check(vec![
        // Not JSON at all, or cut short.
        json_post(r#"{"itemId":"a","quantity":"#, BAD, "json"),
        json_post("not json", BAD, "json"),
        json_post("", BAD, "json"),
        // JSON of the wrong shape.
        json_post("[]", UNPROCESSABLE, "deserialize"),
        json_post("null", UNPROCESSABLE, "invalid type"),
        json_post(r#"{"quantity":2}"#, UNPROCESSABLE, "itemId"),
        json_post(r#"{"itemId":"a"}"#, UNPROCESSABLE, "quantity"),
        json_post(r#"{}"#, UNPROCESSABLE, "missing field"),
        json_post(
            r#"{"itemId":"a","quantity":"2"}"#,
            UNPROCESSABLE,
            "quantity",
        ),
        json_post(
            r#"{"itemId":"a","quantity":2.5}"#,
            UNPROCESSABLE,
            "quantity",
        ),
        json_post(
            r#"{"itemId":"a","quantity":null}"#,
            UNPROCESSABLE,
            "quantity",
        ),
        json_post(
            r#"{"itemId":"a","quantity":99999999999999999999}"#,
            UNPROCESSABLE,
            "quantity",
        ),
        json_post(r#"{"itemId":7,"quantity":2}"#, UNPROCESSABLE, "itemId"),
        json_post(r#"{"itemId":null,"quantity":2}"#, UNPROCESSABLE, "itemId"),
        // Well-formed but out of range.
        json_post(r#"{"itemId":"a","quantity":0}"#, BAD, "quantity"),
        json_post(r#"{"itemId":"a","quantity":-1}"#, BAD, "quantity"),
        json_post(
            r#"{"itemId":"a","quantity":-9223372036854775808}"#,
            BAD,
            "quantity",
        ),
        json_post(r#"{"itemId":"a","quantity":4294967296}"#, BAD, "quantity"),
        json_post(r#"{"itemId":"","quantity":1}"#, BAD, "itemId"),
        json_post(
            &format!(r#"{{"itemId":"{long}","quantity":1}}"#),
            BAD,
            "itemId",
        ),
        json_post(r#"{"itemId":"a\u0000b","quantity":1}"#, BAD, "itemId"),
        json_post(r#"{"itemId":"a\nb","quantity":1}"#, BAD, "itemId"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_json_or_too_large_are_refused() {
    let body = br#"{"itemId":"a","quantity":1}"#;
    let mut cases = vec![
        Case {
            method: Method::POST,
            path: "/carts/c1/items".to_owned(),
            content_type: None,
            body: Bytes::from_static(body),
            status: UNSUPPORTED,
            mentions: "content-type",
        },
        Case {
            method: Method::POST,
            path: "/carts/c1/items".to_owned(),
            content_type: Some("text/plain"),
            body: Bytes::from_static(body),
            status: UNSUPPORTED,
            mentions: "content-type",
        },
    ];
    // Over the 2 MB body limit.
    let huge = format!(
        r#"{{"itemId":"{}","quantity":1}}"#,
        "a".repeat(3 * 1024 * 1024)
    );
    cases.push(json_post(
        &huge,
        StatusCode::PAYLOAD_TOO_LARGE,
        "length limit",
    ));
    check(cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_in_the_path_are_refused() {
    let long = "c".repeat(257);
    check(vec![
        bare(Method::GET, format!("/carts/{long}"), BAD, "cartId"),
        bare(Method::GET, "/carts/%FF".to_owned(), BAD, "utf-8"),
        bare(Method::GET, "/carts/a%01b".to_owned(), BAD, "cartId"),
        Case {
            path: format!("/carts/{long}/items"),
            ..json_post(r#"{"itemId":"a","quantity":1}"#, BAD, "cartId")
        },
        Case {
            path: "/carts/%C3%28/items".to_owned(),
            ..json_post(r#"{"itemId":"a","quantity":1}"#, BAD, "utf-8")
        },
        bare(
            Method::DELETE,
            format!("/carts/{long}/items/keep"),
            BAD,
            "cartId",
        ),
        bare(
            Method::DELETE,
            format!("/carts/c1/items/{}", "k".repeat(257)),
            BAD,
            "itemId",
        ),
        bare(
            Method::DELETE,
            "/carts/c1/items/%FF".to_owned(),
            BAD,
            "utf-8",
        ),
        bare(
            Method::DELETE,
            "/carts/c1/items/a%0Ab".to_owned(),
            BAD,
            "itemId",
        ),
        // An empty id at the end of the path matches no route.
        bare(Method::GET, "/carts/".to_owned(), NOT_FOUND, "no route"),
        bare(
            Method::DELETE,
            "/carts/c1/items/".to_owned(),
            NOT_FOUND,
            "no route",
        ),
        // An empty segment inside the path does match, and is refused as an empty id.
        bare(
            Method::DELETE,
            "/carts//items/keep".to_owned(),
            BAD,
            "cartId",
        ),
        bare(Method::POST, "/carts//items".to_owned(), BAD, "cartId"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_on_the_seeds_routes_are_refused() {
    let long = "q".repeat(257);
    check(vec![
        bare(Method::POST, "/cart".to_owned(), BAD, "missing field"),
        bare(Method::POST, "/cart?id=a".to_owned(), BAD, "quantity"),
        bare(Method::POST, "/cart?quantity=1".to_owned(), BAD, "id"),
        bare(
            Method::POST,
            "/cart?id=a&quantity=x".to_owned(),
            BAD,
            "quantity",
        ),
        bare(
            Method::POST,
            "/cart?id=a&quantity=".to_owned(),
            BAD,
            "quantity",
        ),
        bare(
            Method::POST,
            "/cart?id=a&quantity=1.5".to_owned(),
            BAD,
            "quantity",
        ),
        bare(
            Method::POST,
            "/cart?id=a&quantity=0".to_owned(),
            BAD,
            "quantity",
        ),
        bare(
            Method::POST,
            "/cart?id=a&quantity=-3".to_owned(),
            BAD,
            "quantity",
        ),
        bare(
            Method::POST,
            "/cart?id=a&quantity=4294967296".to_owned(),
            BAD,
            "quantity",
        ),
        bare(Method::POST, "/cart?id=&quantity=1".to_owned(), BAD, "id"),
        bare(
            Method::POST,
            format!("/cart?id={long}&quantity=1"),
            BAD,
            "id",
        ),
        bare(Method::DELETE, "/cart".to_owned(), BAD, "missing field"),
        bare(Method::DELETE, "/cart?id=".to_owned(), BAD, "id"),
        bare(Method::DELETE, format!("/cart?id={long}"), BAD, "id"),
    ])
    .await;
}

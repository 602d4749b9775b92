//! Read-only management HTTP for a Shoal node, fed by the cluster state on a `watch` channel
//! (the handlers never message or lock the cluster's task).
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /cluster/members` | every member: address, incarnation, status, roles, reachability, up number; this node, the leader, convergence |
//! | `GET /ready` | 200 `{"ready":true,…}` once this node is `Up`, else 503 |
//! | `GET /alive` | 200 while the membership runs, 503 once it has shut down (downed or removed) |
//!
//! Anything else gets a JSON error: 404 for an unknown route, 405 for a wrong method. The
//! default address is [`DEFAULT_ADDR`] (`127.0.0.1:8558`, as Akka Management).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::json;
use shoal_cluster::{ClusterState, MemberStatus};
use tokio::sync::watch;

/// Where management listens unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8558";

/// One member as `GET /cluster/members` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MemberView {
    address: String,
    incarnation: u64,
    status: String,
    roles: Vec<String>,
    reachable: bool,
    up_number: Option<u64>,
    leader: bool,
}

/// The answer of `GET /cluster/members`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MembersView {
    self_node: String,
    self_status: Option<String>,
    leader: Option<String>,
    converged: bool,
    members: Vec<MemberView>,
}

fn members_view(state: &ClusterState) -> MembersView {
    MembersView {
        self_node: state.self_node.to_string(),
        self_status: state.self_status.map(|s| s.to_string()),
        leader: state.leader.map(|l| l.to_string()),
        converged: state.converged,
        members: state
            .members
            .iter()
            .map(|m| MemberView {
                address: m.address.addr.to_string(),
                incarnation: m.address.incarnation,
                status: m.status.to_string(),
                roles: m.roles.iter().cloned().collect(),
                reachable: !state.unreachable.contains(&m.address),
                up_number: m.up_number,
                leader: state.leader == Some(m.address),
            })
            .collect(),
    }
}

type ClusterWatch = watch::Receiver<ClusterState>;

async fn members(State(state): State<ClusterWatch>) -> Json<MembersView> {
    Json(members_view(&state.borrow()))
}

async fn ready(State(state): State<ClusterWatch>) -> Response {
    let status = state.borrow().self_status;
    let ready = status == Some(MemberStatus::Up);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let status = status.map(|s| s.to_string());
    (code, Json(json!({ "ready": ready, "status": status }))).into_response()
}

async fn alive(State(state): State<ClusterWatch>) -> Response {
    let alive = !state.borrow().terminated;
    let code = if alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({ "alive": alive }))).into_response()
}

fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

/// The management routes over `state` (mount them into another router, or [`serve`] them).
pub fn router(state: watch::Receiver<ClusterState>) -> Router {
    Router::new()
        .route("/cluster/members", get(members))
        .route("/ready", get(ready))
        .route("/alive", get(alive))
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed; management is read-only",
            )
        })
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .with_state(state)
}

/// Binds `addr` and serves [`router`] on a background task; returns the bound address (pass
/// port 0 for a free one). The task ends when the runtime does.
pub async fn serve(
    addr: SocketAddr,
    state: watch::Receiver<ClusterState>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(state);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "management server failed");
        }
    });
    tracing::info!(%bound, "management listening");
    Ok(bound)
}

//! Read-only management HTTP for a Shoal node, fed by the cluster state on a `watch` channel
//! (the handlers never message or lock the cluster's task).
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /cluster/members` | every member: address, incarnation, status, roles, reachability, up number; this node, the leader, convergence |
//! | `GET /ready` | 200 `{"ready":true,…}` once this node is `Up`, else 503 |
//! | `GET /alive` | 200 while the membership runs, 503 once it has shut down (downed or removed) |
//! | `GET /cluster/shards/{type}` | with sharding ([`router_with_sharding`]): the regions of entity type `type`, their shards and running entity counts; 404 for a type not started on this node, 503 when the coordinator does not answer within [`SHARDS_TIMEOUT`] |
//!
//! Anything else gets a JSON error: 404 for an unknown route, 405 for a wrong method. The
//! default address is [`DEFAULT_ADDR`] (`127.0.0.1:8558`, as Akka Management).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::json;
use shoal_cluster::{ClusterState, MemberStatus};
use shoal_sharding::{RegionShards, Sharding};
use tokio::sync::watch;

/// Where management listens unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8558";

/// How long `GET /cluster/shards/{type}` waits for the coordinator, and then for each region.
/// A region that does not answer in time is shown `"reachable": false`.
pub const SHARDS_TIMEOUT: Duration = Duration::from_secs(3);

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

/// One shard as `GET /cluster/shards/{type}` shows it.
#[derive(Debug, Serialize)]
struct ShardView {
    id: String,
    /// Running entities; `null` when the region did not answer.
    entities: Option<usize>,
}

/// One region as `GET /cluster/shards/{type}` shows it.
#[derive(Debug, Serialize)]
struct RegionView {
    address: String,
    incarnation: u64,
    shards: Vec<ShardView>,
    reachable: bool,
}

/// The answer of `GET /cluster/shards/{type}`.
#[derive(Debug, Serialize)]
struct ShardsView {
    #[serde(rename = "type")]
    type_name: String,
    regions: Vec<RegionView>,
}

fn shards_view(type_name: String, regions: Vec<RegionShards>) -> ShardsView {
    ShardsView {
        type_name,
        regions: regions
            .into_iter()
            .map(|r| {
                let mut shards: Vec<ShardView> = r
                    .shards
                    .into_iter()
                    .map(|(id, entities)| ShardView {
                        id: id.to_string(),
                        entities,
                    })
                    .collect();
                // Numeric ids in numeric order ("9" before "10"), other ids after, by text.
                shards.sort_by(|a, b| (a.id.len(), &a.id).cmp(&(b.id.len(), &b.id)));
                RegionView {
                    address: r.region.addr.to_string(),
                    incarnation: r.region.incarnation,
                    shards,
                    reachable: r.reachable,
                }
            })
            .collect(),
    }
}

async fn shards(State(sharding): State<Sharding>, Path(type_name): Path<String>) -> Response {
    if !sharding.type_names().contains(&type_name) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no sharded entity type {type_name:?} on this node"),
        );
    }
    match sharding
        .shard_distribution(&type_name, SHARDS_TIMEOUT)
        .await
    {
        Ok(regions) => Json(shards_view(type_name, regions)).into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the shard coordinator of {type_name:?} did not answer: {e}"),
        ),
    }
}

fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

/// The management routes over `state` (mount them into another router, or [`serve`] them).
/// Without sharding: `GET /cluster/shards/{type}` is not served (404).
pub fn router(state: watch::Receiver<ClusterState>) -> Router {
    routes(state, None)
}

/// [`router`] plus `GET /cluster/shards/{type}`, answered from `sharding`.
pub fn router_with_sharding(state: watch::Receiver<ClusterState>, sharding: Sharding) -> Router {
    routes(state, Some(sharding))
}

fn routes(state: watch::Receiver<ClusterState>, sharding: Option<Sharding>) -> Router {
    let mut app = Router::new()
        .route("/cluster/members", get(members))
        .route("/ready", get(ready))
        .route("/alive", get(alive))
        .with_state(state);
    if let Some(sharding) = sharding {
        app = app.merge(
            Router::new()
                .route("/cluster/shards/{type}", get(shards))
                .with_state(sharding),
        );
    }
    app.method_not_allowed_fallback(|| async {
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed; management is read-only",
        )
    })
    .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
}

/// Binds `addr` and serves [`router`] on a background task; returns the bound address (pass
/// port 0 for a free one). The task ends when the runtime does.
pub async fn serve(
    addr: SocketAddr,
    state: watch::Receiver<ClusterState>,
) -> std::io::Result<SocketAddr> {
    serve_router(addr, router(state)).await
}

/// Binds `addr` and serves [`router_with_sharding`] on a background task; returns the bound
/// address (pass port 0 for a free one). The task ends when the runtime does.
pub async fn serve_with_sharding(
    addr: SocketAddr,
    state: watch::Receiver<ClusterState>,
    sharding: Sharding,
) -> std::io::Result<SocketAddr> {
    serve_router(addr, router_with_sharding(state, sharding)).await
}

async fn serve_router(addr: SocketAddr, app: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "management server failed");
        }
    });
    tracing::info!(%bound, "management listening");
    Ok(bound)
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

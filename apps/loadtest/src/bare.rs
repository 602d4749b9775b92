//! The ceiling: a bare axum server with the artifact-state routes and handlers of the same
//! shape — the JSON body (or query) is parsed and the same JSON is answered — but no entity,
//! no persistence and no state. It answers "read" and "not in the feed" for every pair, so
//! that the scenario's read-your-write check on `artifactRead` holds.

use std::future::IntoFuture;
use std::net::SocketAddr;

use axum::extract::Query;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_service::ApiError;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The POST body, parsed as the service parses it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactAndUser {
    artifact_id: serde_json::Number,
    user_id: String,
}

/// The GET query.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactAndUserQuery {
    artifact_id: String,
    user_id: String,
}

#[derive(Serialize)]
struct OkayResponse {
    success: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExtResponse {
    artifact_id: u64,
    user_id: String,
    answer: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AllStatesResponse {
    artifact_id: u64,
    user_id: String,
    artifact_read: bool,
    artifact_in_user_feed: bool,
}

type Body = Result<Json<ArtifactAndUser>, JsonRejection>;

/// The validated pair, or the error answer.
fn target(body: Body) -> Result<(u64, String), ApiError> {
    let Json(body) = body.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let artifact_id = body
        .artifact_id
        .as_u64()
        .ok_or_else(|| ApiError::bad_request(format!("bad artifactId {}", body.artifact_id)))?;
    if body.user_id.is_empty() {
        return Err(ApiError::bad_request("userId must not be empty"));
    }
    Ok((artifact_id, body.user_id))
}

async fn set(body: Body) -> Result<Json<OkayResponse>, ApiError> {
    target(body)?;
    Ok(Json(OkayResponse { success: true }))
}

async fn is_read(body: Body) -> Result<Json<ExtResponse>, ApiError> {
    let (artifact_id, user_id) = target(body)?;
    Ok(Json(ExtResponse {
        artifact_id,
        user_id,
        answer: true,
    }))
}

async fn is_in_feed(body: Body) -> Result<Json<ExtResponse>, ApiError> {
    let (artifact_id, user_id) = target(body)?;
    Ok(Json(ExtResponse {
        artifact_id,
        user_id,
        answer: false,
    }))
}

fn all_states(artifact_id: u64, user_id: String) -> Json<AllStatesResponse> {
    Json(AllStatesResponse {
        artifact_id,
        user_id,
        artifact_read: true,
        artifact_in_user_feed: false,
    })
}

async fn get_all_states(body: Body) -> Result<Json<AllStatesResponse>, ApiError> {
    let (artifact_id, user_id) = target(body)?;
    Ok(all_states(artifact_id, user_id))
}

async fn get_all_states_query(
    query: Result<Query<ArtifactAndUserQuery>, QueryRejection>,
) -> Result<Json<AllStatesResponse>, ApiError> {
    let Query(query) = query.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let artifact_id = query
        .artifact_id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("bad artifactId {:?}", query.artifact_id)))?;
    Ok(all_states(artifact_id, query.user_id))
}

/// The bare router: the seed's seven routes.
pub fn router() -> Router {
    Router::new()
        .route("/artifactState/setArtifactReadByUser", post(set))
        .route("/artifactState/setArtifactAddedToUserFeed", post(set))
        .route("/artifactState/setArtifactRemovedFromUserFeed", post(set))
        .route("/artifactState/isArtifactReadByUser", post(is_read))
        .route("/artifactState/isArtifactInUserFeed", post(is_in_feed))
        .route(
            "/artifactState/getAllStates",
            get(get_all_states_query).post(get_all_states),
        )
}

/// A running bare server. Stop it with [`BareServer::shutdown`].
pub struct BareServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<std::io::Result<()>>,
}

impl BareServer {
    /// Serves [`router`] on a free loopback port, on the current tokio runtime.
    pub async fn start() -> std::io::Result<BareServer> {
        Self::start_on("127.0.0.1:0".parse().expect("a valid address")).await
    }

    /// Serves [`router`] on `addr` (port 0: a free one), on the current tokio runtime.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<BareServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serve = axum::serve(listener, router())
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .into_future();
        Ok(BareServer {
            addr,
            stop,
            serving: tokio::spawn(serve),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets open connections finish, and waits for it.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.serving.await??;
        Ok(())
    }
}

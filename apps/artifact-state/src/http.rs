//! The HTTP API: seed 001's routes, input validation and the mapping of every failure to a
//! JSON error.
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /artifactState/setArtifactReadByUser` | `{"success":true}` once stored |
//! | `POST /artifactState/setArtifactAddedToUserFeed` | `{"success":true}` once stored |
//! | `POST /artifactState/setArtifactRemovedFromUserFeed` | `{"success":true}` once stored |
//! | `POST /artifactState/isArtifactReadByUser` | `{"artifactId":1,"userId":"Michael","answer":true}` |
//! | `POST /artifactState/isArtifactInUserFeed` | `{"artifactId":1,"userId":"Michael","answer":false}` |
//! | `POST /artifactState/getAllStates` | `{"artifactId":1,"userId":"Michael","artifactRead":true,"artifactInUserFeed":false}` |
//! | `GET /artifactState/getAllStates?artifactId=1&userId=Michael` | the same |
//!
//! POST bodies are `{"artifactId":1,"userId":"Michael"}` with `content-type:
//! application/json`. `artifactId` is a whole number from 0 to 2^64 − 1; `userId` is 1 to
//! 256 bytes of UTF-8 without control characters. A client's mistake gets a 4xx with
//! `{"error":"…"}`; an entity that does not answer within the ask timeout (or cannot store
//! the change) gets a 503 with `{"error":"…"}` and `Retry-After: 1`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::middleware;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal::prelude::AskError;
use shoal::remote::RemoteReplyTo;
use shoal::sharding::ShardRegion;
use shoal_service::{AskMessages, log_request, method_not_allowed, not_found};

pub use shoal_service::ApiError;

use crate::entity::{ArtifactCommand, ArtifactState, entity_id};

/// The longest user id accepted, in bytes.
pub const MAX_USER_ID_BYTES: usize = 256;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    region: ShardRegion<ArtifactCommand>,
    ask_timeout: Duration,
}

impl AppState {
    /// Handlers asking the entities through `region`, waiting at most `ask_timeout` for each
    /// answer.
    pub fn new(region: ShardRegion<ArtifactCommand>, ask_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                region,
                ask_timeout,
            }),
        }
    }
}

/// The router with every route, the JSON 404 and 405 fallbacks and request logging.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/artifactState/setArtifactReadByUser",
            post(set_artifact_read_by_user),
        )
        .route(
            "/artifactState/setArtifactAddedToUserFeed",
            post(set_artifact_added_to_user_feed),
        )
        .route(
            "/artifactState/setArtifactRemovedFromUserFeed",
            post(set_artifact_removed_from_user_feed),
        )
        .route(
            "/artifactState/isArtifactReadByUser",
            post(is_artifact_read_by_user),
        )
        .route(
            "/artifactState/isArtifactInUserFeed",
            post(is_artifact_in_user_feed),
        )
        .route(
            "/artifactState/getAllStates",
            get(get_all_states_query).post(get_all_states),
        )
        // After the routes: it applies to the routes added so far.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// The body of every POST: `{"artifactId":1,"userId":"Michael"}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactAndUser {
    /// Any JSON number, so that a negative or fractional id gets a clear message.
    artifact_id: serde_json::Number,
    user_id: String,
}

/// The query of `GET /artifactState/getAllStates?artifactId=1&userId=Michael`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactAndUserQuery {
    artifact_id: String,
    user_id: String,
}

/// The answer of the `set…` routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkayResponse {
    /// Always true: failures are errors.
    pub success: bool,
}

/// The answer of the `is…` routes (the seed's `ExtResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtResponse {
    /// The artifact.
    pub artifact_id: u64,
    /// The user.
    pub user_id: String,
    /// The answer to the question asked.
    pub answer: bool,
}

/// The answer of `getAllStates` (the seed's `AllStatesResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllStatesResponse {
    /// The artifact.
    pub artifact_id: u64,
    /// The user.
    pub user_id: String,
    /// Whether the user has read the artifact.
    pub artifact_read: bool,
    /// Whether the artifact is in the user's feed.
    pub artifact_in_user_feed: bool,
}

/// Checks a user id: 1 to [`MAX_USER_ID_BYTES`] bytes, no control characters.
pub fn validate_user_id(user_id: &str) -> Result<(), ApiError> {
    if user_id.is_empty() {
        return Err(ApiError::bad_request("userId must not be empty"));
    }
    if user_id.len() > MAX_USER_ID_BYTES {
        return Err(ApiError::bad_request(format!(
            "userId is {} bytes long; the limit is {MAX_USER_ID_BYTES}",
            user_id.len()
        )));
    }
    if user_id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "userId must not contain control characters",
        ));
    }
    Ok(())
}

fn invalid_artifact_id(got: &str) -> ApiError {
    ApiError::bad_request(format!(
        "artifactId must be a whole number from 0 to {}; got {got}",
        u64::MAX
    ))
}

/// Checks a JSON artifact id: a whole number from 0 to `u64::MAX`.
fn validate_artifact_id(number: &serde_json::Number) -> Result<u64, ApiError> {
    number
        .as_u64()
        .ok_or_else(|| invalid_artifact_id(&number.to_string()))
}

/// Checks a query-string artifact id: decimal digits only, at most `u64::MAX`.
fn parse_artifact_id(text: &str) -> Result<u64, ApiError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid_artifact_id(&format!("{text:?}")));
    }
    text.parse()
        .map_err(|_| invalid_artifact_id(&format!("{text:?}")))
}

/// A validated `(artifactId, userId)`.
struct Target {
    artifact_id: u64,
    user_id: String,
}

impl TryFrom<Result<Json<ArtifactAndUser>, JsonRejection>> for Target {
    type Error = ApiError;

    fn try_from(body: Result<Json<ArtifactAndUser>, JsonRejection>) -> Result<Self, ApiError> {
        let Json(body) = body?;
        let artifact_id = validate_artifact_id(&body.artifact_id)?;
        validate_user_id(&body.user_id)?;
        Ok(Target {
            artifact_id,
            user_id: body.user_id,
        })
    }
}

type Body = Result<Json<ArtifactAndUser>, JsonRejection>;

async fn set_artifact_read_by_user(
    State(app): State<AppState>,
    body: Body,
) -> Result<Json<OkayResponse>, ApiError> {
    let target = Target::try_from(body)?;
    app.set(target, |reply| ArtifactCommand::SetArtifactRead { reply })
        .await
}

async fn set_artifact_added_to_user_feed(
    State(app): State<AppState>,
    body: Body,
) -> Result<Json<OkayResponse>, ApiError> {
    let target = Target::try_from(body)?;
    app.set(target, |reply| {
        ArtifactCommand::SetArtifactAddedToUserFeed { reply }
    })
    .await
}

async fn set_artifact_removed_from_user_feed(
    State(app): State<AppState>,
    body: Body,
) -> Result<Json<OkayResponse>, ApiError> {
    let target = Target::try_from(body)?;
    app.set(target, |reply| {
        ArtifactCommand::SetArtifactRemovedFromUserFeed { reply }
    })
    .await
}

async fn is_artifact_read_by_user(
    State(app): State<AppState>,
    body: Body,
) -> Result<Json<ExtResponse>, ApiError> {
    let target = Target::try_from(body)?;
    let state = app.state_of(&target).await?;
    Ok(Json(ExtResponse {
        artifact_id: target.artifact_id,
        user_id: target.user_id,
        answer: state.artifact_read,
    }))
}

async fn is_artifact_in_user_feed(
    State(app): State<AppState>,
    body: Body,
) -> Result<Json<ExtResponse>, ApiError> {
    let target = Target::try_from(body)?;
    let state = app.state_of(&target).await?;
    Ok(Json(ExtResponse {
        artifact_id: target.artifact_id,
        user_id: target.user_id,
        answer: state.artifact_in_user_feed,
    }))
}

async fn get_all_states(
    State(app): State<AppState>,
    body: Body,
) -> Result<Json<AllStatesResponse>, ApiError> {
    let target = Target::try_from(body)?;
    app.all_states(target).await
}

async fn get_all_states_query(
    State(app): State<AppState>,
    query: Result<Query<ArtifactAndUserQuery>, QueryRejection>,
) -> Result<Json<AllStatesResponse>, ApiError> {
    let Query(query) = query?;
    let artifact_id = parse_artifact_id(&query.artifact_id)?;
    validate_user_id(&query.user_id)?;
    app.all_states(Target {
        artifact_id,
        user_id: query.user_id,
    })
    .await
}

impl AppState {
    async fn set(
        &self,
        target: Target,
        make: impl FnOnce(RemoteReplyTo<bool>) -> ArtifactCommand,
    ) -> Result<Json<OkayResponse>, ApiError> {
        let success = self.ask(&target, make).await?;
        Ok(Json(OkayResponse { success }))
    }

    async fn state_of(&self, target: &Target) -> Result<ArtifactState, ApiError> {
        self.ask(target, |reply| ArtifactCommand::GetState { reply })
            .await
    }

    async fn all_states(&self, target: Target) -> Result<Json<AllStatesResponse>, ApiError> {
        let state = self.state_of(&target).await?;
        Ok(Json(AllStatesResponse {
            artifact_id: target.artifact_id,
            user_id: target.user_id,
            artifact_read: state.artifact_read,
            artifact_in_user_feed: state.artifact_in_user_feed,
        }))
    }

    /// Asks the entity of `target` (already validated) and turns every way of not getting an
    /// answer into a 503.
    async fn ask<R>(
        &self,
        target: &Target,
        make: impl FnOnce(RemoteReplyTo<R>) -> ArtifactCommand,
    ) -> Result<R, ApiError>
    where
        R: Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        let id = entity_id(target.artifact_id, &target.user_id);
        let entity = self
            .inner
            .region
            .entity_ref(id.as_str())
            .map_err(|e| ApiError::invalid_id("artifactId/userId", e))?;
        let timeout = self.inner.ask_timeout;
        // The ask has its own timeout; this one only makes sure no request outlives it.
        let answer = tokio::time::timeout(
            timeout + Duration::from_millis(250),
            entity.ask(make, timeout),
        )
        .await
        .unwrap_or(Err(AskError::Timeout));
        answer.map_err(|error| {
            tracing::warn!(entity = %id, %error, "entity did not answer");
            let what = format!(
                "the state of artifact {} for user {:?}",
                target.artifact_id, target.user_id
            );
            ApiError::from_ask(
                error,
                timeout,
                AskMessages {
                    what: &what,
                    read: "it",
                    failed: "is unavailable",
                    stopped: "is restarting or moving",
                },
            )
        })
    }
}

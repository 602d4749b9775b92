//! JSON errors: a status and `{"error": message}`, for every way a request can fail.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::Request;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shoal::prelude::AskError;

/// An error answer: a status and `{"error": message}` (and `Retry-After: 1` on a 503).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the client.
    pub message: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// A 400: the client's mistake.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 503: try again later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// A 400 for an id sharding refuses (`EntityRefError`): `invalid {what}: {error}`.
    pub fn invalid_id(what: &str, error: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("invalid {what}: {error}"))
    }

    /// A 503 for an entity that did not answer an ask within `timeout`, worded by
    /// `messages`: whether a change may have been applied, and what to do.
    pub fn from_ask(error: AskError, timeout: Duration, messages: AskMessages<'_>) -> Self {
        let AskMessages {
            what,
            read,
            failed,
            stopped,
        } = messages;
        Self::unavailable(match error {
            AskError::Timeout => format!(
                "{what} did not answer within {timeout:?}; a change may or may not have been \
                 applied, read {read} before retrying"
            ),
            AskError::Failed(reason) => format!("{what} {failed} ({reason}); retry later"),
            AskError::MailboxFull => {
                format!("{what} is overloaded; nothing was applied, retry later")
            }
            AskError::Stopped(_) | AskError::NoReply => format!(
                "{what} {stopped}; a change may or may not have been applied, read {read} \
                 before retrying"
            ),
        })
    }
}

/// How a service words an entity that did not answer (see [`ApiError::from_ask`]).
#[derive(Debug, Clone, Copy)]
pub struct AskMessages<'a> {
    /// The entity as the client knows it: `cart "c1"`.
    pub what: &'a str,
    /// What to read before retrying: `it`, `the cart`.
    pub read: &'a str,
    /// Said of an ask that failed (the store refused or lost the write): `is unavailable`.
    pub failed: &'a str,
    /// Said of an entity that stopped before answering: `is restarting`.
    pub stopped: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        // A path that matched a route but whose parameter cannot be decoded (bad
        // percent-encoding, not UTF-8) is the client's mistake, whatever axum's default says.
        let status = if rejection.status().is_client_error() {
            rejection.status()
        } else {
            StatusCode::BAD_REQUEST
        };
        Self::new(status, rejection.body_text())
    }
}

/// The fallback handler: a 404 naming the method and path.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

/// The method-not-allowed fallback: a 405 naming the method and path.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

/// Middleware logging every request: server errors at `warn`, the rest at `debug`.
pub async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    if status.is_server_error() {
        tracing::warn!(%method, %path, status = status.as_u16(), elapsed = ?started.elapsed(), "request failed");
    } else {
        tracing::debug!(%method, %path, status = status.as_u16(), elapsed = ?started.elapsed(), "request");
    }
    response
}

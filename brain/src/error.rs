//! Errors at the HTTP edge.
//!
//! Which error type is used where:
//! - `store/` returns [`StoreError`](crate::store::StoreError): what went wrong in the database.
//! - Handlers and extractors return [`ApiError`], the only error that becomes a response. Every
//!   response body is `{"error": {"code", "message", "field"?}}`; the status mapping lives in
//!   one place, [`ApiError::status`].
//! - Server errors (5xx) are logged here, where they are handled; their detail never reaches
//!   the client. Authentication failures are vague on the wire and specific in the log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::refusal::Refusal;
use crate::store::StoreError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or breaks a rule; `field` names the offending input.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable reason, snake_case.
        code: &'static str,
        /// What is wrong and, where possible, what is accepted.
        message: String,
        /// The JSON path, query parameter or path parameter at fault.
        field: Option<String>,
    },
    /// No usable credentials (missing, unknown, revoked or expired token).
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    /// Authenticated, but the role is too low for this action.
    #[error("{0}")]
    Forbidden(String),
    /// The thing does not exist, or the caller may not know it exists.
    #[error("{0} not found")]
    NotFound(String),
    /// The path exists but not with this method.
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// The request conflicts with existing state (a taken name).
    #[error("{0}")]
    Conflict(String),
    /// The audit chain does not verify: the brain will not sign a checkpoint over it.
    #[error("{0}")]
    AuditChainBroken(String),
    /// A purge's confirm token was made for another depth than the queue has now.
    #[error("{message}")]
    DepthChanged {
        /// What happened and what to do.
        message: String,
        /// The depth the agent last reported, if any.
        current_depth: Option<u64>,
    },
    /// Too many requests from this caller on this route; retry after the given time.
    #[error("too many requests: retry in {} s", .0.as_secs().max(1))]
    RateLimited(std::time::Duration),
    /// The body did not arrive whole within the body deadline.
    #[error("{0}")]
    RequestTimeout(String),
    /// The body is over the size limit.
    #[error("request body is larger than the {0} byte limit")]
    PayloadTooLarge(usize),
    /// The body is not JSON (wrong or missing `Content-Type`).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The route exists but its feature has not been built yet.
    #[error("{0}")]
    NotImplemented(String),
    /// The store cannot be reached; retry later.
    #[error("service temporarily unavailable")]
    Unavailable(String),
    /// A read the caller shaped (filter, order, search) ran out of its time budget and was
    /// stopped, so it cannot hold connections other callers need.
    #[error(
        "the query did not finish within its {} ms budget (--query-budget-ms) and was stopped: \
         narrow the filter, or sort by an indexed field (received_at, started_at, finished_at, \
         runtime_ms, name)",
        .0.as_millis()
    )]
    OverBudget(std::time::Duration),
    /// This caller already has as many list or export requests running as it may.
    #[error("this caller already has {0} list or export requests running; wait for one to finish")]
    TooManyConcurrent(usize),
    /// A bug or a broken database; details are logged, not returned.
    #[error("internal server error")]
    Internal(String),
}

impl ApiError {
    /// A 400 naming the field at fault.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        Refusal::invalid_field(field, message).into()
    }

    /// A 400 for a required field that is absent (`path` is its JSON path).
    pub fn missing_field(path: impl Into<String>) -> ApiError {
        Refusal::missing_field(path).into()
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_)
            | ApiError::DepthChanged { .. }
            | ApiError::AuditChainBroken(_) => StatusCode::CONFLICT,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) | ApiError::OverBudget(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyConcurrent(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::DepthChanged { .. } => "depth_changed",
            ApiError::AuditChainBroken(_) => "audit_chain_broken",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::NotImplemented(_) => "not_implemented",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::OverBudget(_) => "query_over_budget",
            ApiError::TooManyConcurrent(_) => "too_many_concurrent_requests",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::NotFound => ApiError::NotFound("resource".into()),
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::Unavailable(detail) => ApiError::Unavailable(detail),
            StoreError::OverBudget(budget) => ApiError::OverBudget(budget),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        match refusal {
            Refusal::Invalid {
                code,
                message,
                field,
            } => ApiError::BadRequest {
                code,
                message,
                field,
            },
            Refusal::NotFound(what) => ApiError::NotFound(what),
            Refusal::Conflict(message) => ApiError::Conflict(message),
            Refusal::DepthChanged {
                message,
                current_depth,
            } => ApiError::DepthChanged {
                message,
                current_depth,
            },
            Refusal::Store(err) => err.into(),
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code to branch on.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The input at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `depth_changed`: the queue's depth now, to show the operator before they confirm again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_depth: Option<u64>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(detail) => tracing::error!(%detail, "request failed"),
            ApiError::Unavailable(detail) => tracing::warn!(%detail, "store unavailable"),
            _ => {}
        }
        let field = match &self {
            ApiError::BadRequest { field, .. } => field.clone(),
            _ => None,
        };
        let current_depth = match &self {
            ApiError::DepthChanged { current_depth, .. } => *current_depth,
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
                field,
                current_depth,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::RateLimited(wait) = &self {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs.max(1)),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

//! Liveness, readiness, metrics and the OpenAPI document.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::tags;
use crate::app::AppState;
use crate::audit::watch::ChainBreak;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};

/// Health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or (readiness only) `degraded` while an audit chain does not verify.
    pub status: &'static str,
    /// The broken audit chains (readiness only; absent while every chain verifies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<Vec<ChainBreak>>,
}

/// Liveness: the process answers. No auth, touches nothing.
#[utoipa::path(get, path = "/healthz", tag = tags::OPERATIONS, security(()),
    responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        audit: None,
    })
}

/// How long readiness waits for the store: a load balancer must learn within a second that
/// the database is gone, not after the pool's own 10 s timeout.
const READY_WITHIN: Duration = Duration::from_secs(1);

/// Readiness: the store answers a query within a second. No auth. While an audit chain does
/// not verify the answer is `degraded`, naming the chain, its first bad row and why: still
/// 200, so traffic keeps flowing, unless the server runs with `--readyz-fail-on-audit` (503).
#[utoipa::path(get, path = "/readyz", tag = tags::OPERATIONS, security(()),
    responses((status = 200, body = Health), (status = 503, body = Health,
        description = "An audit chain is broken and the server runs with --readyz-fail-on-audit"),
        (status = 503, body = ErrorBody, description = "The store does not answer")))]
pub async fn readyz(State(state): State<AppState>) -> Result<(StatusCode, Json<Health>), ApiError> {
    match tokio::time::timeout(READY_WITHIN, state.store.ping()).await {
        Ok(answered) => answered?,
        Err(_) => {
            return Err(ApiError::Unavailable(format!(
                "the store did not answer within {} s",
                READY_WITHIN.as_secs()
            )));
        }
    }
    if !state.audit_watch.any_broken() {
        return Ok((
            StatusCode::OK,
            Json(Health {
                status: "ok",
                audit: None,
            }),
        ));
    }
    let status = if state.settings.readyz_fail_on_audit {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Health {
            status: "degraded",
            audit: Some(state.audit_watch.breaks()),
        }),
    ))
}

/// Prometheus metrics. Needs a token unless the server runs with `--metrics-public`.
#[utoipa::path(get, path = "/metrics", tag = tags::OPERATIONS,
    responses((status = 200, description = "OpenMetrics text format (Prometheus reads it)",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 401, body = ErrorBody)))]
pub async fn metrics(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
) -> Result<impl IntoResponse, ApiError> {
    if !state.settings.metrics_public {
        caller?;
    }
    Ok((
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    ))
}

//! Every route of the brain, wired in one place, and the OpenAPI document generated from the
//! same handler annotations (so the two cannot drift).

mod probe_class;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::middleware;
use axum::response::IntoResponse;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::extract::BODY_LIMIT;
use crate::api::{
    agents, audit, cleanup, commands, common_responses, health, members, projects, runtime,
    schedules, tasks, tokens, users,
};
use crate::app::AppState;
use crate::error::ApiError;
use crate::hub;
use probe_class::ProbeAwareClassifier;

/// Header carrying the request id, set when the client did not send one.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Taskward brain API",
        description = "Control plane for Celery: projects, members, tokens, agents. Every \
                       /api/v1 route needs `Authorization: Bearer <token>`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(projects::list, projects::create))
        .routes(routes!(projects::get, projects::update, projects::delete))
        .routes(routes!(members::list, members::add))
        .routes(routes!(members::remove))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::delete))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(agents::list, agents::create))
        .routes(routes!(agents::get, agents::delete))
        .routes(routes!(audit::queues))
        .routes(routes!(runtime::stale))
        .routes(routes!(schedules::list, schedules::create))
        .routes(routes!(
            schedules::get,
            schedules::update,
            schedules::delete
        ))
        .routes(routes!(schedules::run))
        .routes(routes!(cleanup::list))
        .routes(routes!(cleanup::get))
        .routes(routes!(cleanup::retry))
        .routes(routes!(cleanup::tree))
        .routes(routes!(tasks::list))
        .routes(routes!(tasks::get))
        .routes(routes!(tasks::tree))
        .routes(routes!(tasks::bulk_delete))
        .routes(routes!(commands::list))
        .routes(routes!(commands::get))
        .routes(routes!(commands::retry_task))
        .routes(routes!(commands::cancel_task))
        .routes(routes!(commands::bulk_retry))
        .routes(routes!(commands::bulk_retry_dry_run))
        .routes(routes!(commands::purge_queue))
        .routes(routes!(commands::restart_worker))
        .routes(routes!(commands::pool_resize))
        .routes(routes!(commands::add_consumer))
        .routes(routes!(commands::cancel_consumer))
        .routes(routes!(commands::rate_limit))
        .routes(routes!(commands::ping_workers))
        .routes(routes!(audit::signing_keys))
        .routes(routes!(audit::list))
        .routes(routes!(audit::export))
        .routes(routes!(audit::site_export))
        .routes(routes!(audit::checkpoint))
        .routes(routes!(audit::site_checkpoint))
        .routes(routes!(hub::session::enroll))
        .routes(routes!(hub::session::connect))
}

/// The OpenAPI 3.1 document of the API (served at `/api/v1/openapi.json`, committed as
/// `docs/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes_and_document().1
}

/// The API's routes and their document, with the error answers every route shares added
/// (`api::common_responses`).
fn routes_and_document() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut doc) = api().split_for_parts();
    common_responses::add_to(&mut doc);
    (routes, doc)
}

/// The complete HTTP service.
pub fn router(state: AppState) -> Router {
    let (routes, doc) = routes_and_document();
    let doc_json = doc.to_pretty_json().expect("OpenAPI document serializes");
    routes
        .merge(crate::dashboard::routes(state.clone()))
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    doc_json,
                )
            }),
        )
        .fallback(|| async { ApiError::NotFound("route".into()).into_response() })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed.into_response() })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(catch_panic))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            track_requests,
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new(ProbeAwareClassifier).make_span_with(|req: &Request<_>| {
                let request_id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                // The path only: query strings and headers (Authorization) are never logged.
                tracing::info_span!(
                    "request",
                    method = %req.method(),
                    path = %req.uri().path(),
                    request_id,
                    user = tracing::field::Empty,
                )
            }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// Answers a request whose handler panicked with a 500 in the API's error shape (`internal`),
/// logging the panic, instead of dropping the connection. Inside the trace span and the
/// request metrics, so the log line carries the request id and the 500 is counted.
pub async fn catch_panic(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            // `ApiError::Internal` logs the detail at ERROR and sends only "internal".
            ApiError::Internal(format!("handler panicked: {what}")).into_response()
        }
    }
}

/// Counts every request by method, matched route (not the raw path, so ids do not explode
/// the label set) and status.
async fn track_requests(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    state.metrics.record_request(
        &method,
        route.as_deref(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

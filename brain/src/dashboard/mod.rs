//! The operator dashboard: server-rendered pages (maud) over the same store reads and role
//! checks as the REST API, plus one small script.
//!
//! Reading needs no JavaScript. Actions (retry, cancel, purge, …) are sent by the script to the
//! REST API itself, with the session cookie and the session's CSRF token: the API's handlers,
//! validation and role checks are the only implementation. Live updates come from
//! [`live`]: a Server-Sent Events stream of a durable change counter, on which the page
//! re-fetches itself.

mod access;
mod agents;
mod assets;
mod audit;
mod audit_banner;
mod cleanup;
mod commands;
mod layout;
mod live;
mod login;
mod projects;
mod schedules;
mod tasks;

use std::marker::PhantomData;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::app::AppState;
use crate::auth::{Caller, Credential, ProjectAccess, RoleFloor};
use crate::error::ApiError;

/// The dashboard's routes (merged beside `/api/v1`).
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(projects::index))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/assets/{name}", get(assets::serve))
        .route("/p/{slug}", get(projects::overview))
        .route("/p/{slug}/live", get(live::stream))
        .route("/p/{slug}/tasks", get(tasks::list))
        .route("/p/{slug}/tasks/{engine}/{task_id}", get(tasks::detail))
        .route("/p/{slug}/commands", get(commands::list))
        .route("/p/{slug}/commands/{id}", get(commands::detail))
        .route("/p/{slug}/agents", get(agents::list))
        .route("/p/{slug}/schedules", get(schedules::list))
        .route("/p/{slug}/schedules/new", get(schedules::new))
        .route("/p/{slug}/schedules/preview", get(schedules::preview))
        .route("/p/{slug}/schedules/{id}", get(schedules::detail))
        .route("/p/{slug}/audit", get(audit::list))
        .route("/p/{slug}/audit/verify", get(audit::verify))
        .route("/p/{slug}/members", get(access::members))
        .route("/tokens", get(access::tokens))
        .route("/cleanup", get(cleanup::list))
        .route("/cleanup/{id}", get(cleanup::tree))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            audit_banner::layer,
        ))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Headers on every dashboard response: no inline script may run (CSP), no other site may
/// frame a page, content types are taken as sent, and no page is cached.
async fn security_headers(request: axum::extract::Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
             object-src 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A dashboard page's failure, shown as a page (or a redirect to sign in).
#[derive(Debug)]
pub struct PageError {
    error: ApiError,
    /// Where to come back after signing in.
    next: String,
}

impl PageError {
    fn new(error: ApiError, uri: &Uri) -> PageError {
        PageError {
            error,
            next: uri
                .path_and_query()
                .map_or("/".to_owned(), |p| p.as_str().to_owned()),
        }
    }
}

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> PageError {
        PageError {
            error,
            next: "/".into(),
        }
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(error: crate::store::StoreError) -> PageError {
        PageError::from(ApiError::from(error))
    }
}

impl From<crate::refusal::Refusal> for PageError {
    fn from(refusal: crate::refusal::Refusal) -> PageError {
        PageError::from(ApiError::from(refusal))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if matches!(self.error, ApiError::Unauthenticated) {
            let next: String = form_urlencoded::byte_serialize(self.next.as_bytes()).collect();
            return Redirect::to(&format!("/login?next={next}")).into_response();
        }
        let status = self.error.status();
        if status.is_server_error() {
            tracing::error!(error = %self.error, "dashboard page failed");
        }
        let message = if status.is_server_error() {
            "Something went wrong on the brain; the error is in its log.".to_owned()
        } else {
            self.error.to_string()
        };
        (
            status,
            layout::bare(
                &format!("{} {}", status.as_u16(), reason(status)),
                maud::html! {
                    h1 { (status.as_u16()) " " (reason(status)) }
                    p.error { (message) }
                    p { a href="/" { "Back to projects" } }
                },
            ),
        )
            .into_response()
    }
}

fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

/// A signed-in caller on a page outside any project (the project list).
pub struct SignedIn {
    /// Who.
    pub caller: Caller,
    /// The session's CSRF token (empty for bearer callers, who need none).
    pub csrf: String,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let caller = Caller::from_request_parts(parts, state)
            .await
            .map_err(|e| PageError::new(e, &parts.uri))?;
        Ok(SignedIn {
            csrf: csrf_of(&caller),
            caller,
        })
    }
}

/// A project page: the API's [`ProjectAccess`] check (same roles, same 404 for non-members),
/// with failures shown as pages.
pub struct Page<R> {
    /// The checked access.
    pub access: ProjectAccess<R>,
    /// The session's CSRF token, embedded for the script.
    pub csrf: String,
    floor: PhantomData<R>,
}

impl<R: RoleFloor> FromRequestParts<AppState> for Page<R> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let access = ProjectAccess::<R>::from_request_parts(parts, state)
            .await
            .map_err(|e| PageError::new(e, &parts.uri))?;
        Ok(Page {
            csrf: csrf_of(&access.caller),
            access,
            floor: PhantomData,
        })
    }
}

impl<R> Page<R> {
    /// The shell around this page: the user, the project, their role and the CSRF token,
    /// with the page's title and section, live when `watermark` is given.
    pub fn chrome<'a>(
        &'a self,
        title: &'a str,
        section: layout::Section,
        watermark: Option<&'a str>,
    ) -> layout::Chrome<'a> {
        layout::Chrome {
            title,
            user: &self.access.caller.user_name,
            project: (&self.access.project.slug, &self.access.project.name),
            role: self.access.role,
            csrf: &self.csrf,
            section,
            watermark,
        }
    }
}

/// A page's query string without empty parameters: an empty form field means "any".
fn without_empty(raw: Option<&str>) -> String {
    let pairs =
        form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).filter(|(_, v)| !v.is_empty());
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn csrf_of(caller: &Caller) -> String {
    match &caller.via {
        Credential::Session { csrf_token } => csrf_token.clone(),
        Credential::Token(_) => String::new(),
    }
}

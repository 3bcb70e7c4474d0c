//! The banner a site admin sees on every dashboard page while an audit chain does not verify.
//!
//! A layer rather than a part of each page's shell: every page, including error pages and
//! pages added later, gets it, and while nothing is broken it costs one atomic load.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::Response;
use maud::html;

use crate::app::AppState;
use crate::audit::watch::ChainBreak;
use crate::auth::Caller;

/// Largest page the banner is put into; bigger responses pass unchanged.
const MAX_PAGE: usize = 16 << 20;

/// Puts the banner at the top of `<main>` of HTML pages answered to a site admin.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.audit_watch.any_broken() || !request.method().is_safe() {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    // Cached in the request's extensions: the page's own extractor does not look it up again.
    let site_admin = Caller::from_request_parts(&mut parts, &state)
        .await
        .is_ok_and(|caller| caller.site_admin);
    let response = next.run(Request::from_parts(parts, body)).await;
    let html = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !site_admin || !html {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PAGE).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let page = String::from_utf8_lossy(&bytes);
    let with_banner = insert_banner(&page, &state.audit_watch.breaks());
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(with_banner))
}

/// The page with the banner right after the opening `<main …>` tag (or after `<body …>`).
fn insert_banner(page: &str, breaks: &[ChainBreak]) -> String {
    let banner = html! {
        div.audit-banner role="alert" {
            strong { "The audit log does not verify." }
            " The database no longer holds what the brain signed, and no checkpoint of these \
             chains is signed until this is investigated:"
            ul {
                @for found in breaks {
                    li { "chain " code { (found.chain) } ", first bad row " (found.first_bad_seq) ": " (found.why) }
                }
            }
            "Check with " code { "taskward-brain audit verify" } " and see docs/security.md."
        }
    }
    .into_string();
    let at = ["<main", "<body"].iter().find_map(|tag| {
        let start = page.find(tag)?;
        Some(start + page[start..].find('>')? + 1)
    });
    match at {
        Some(at) => format!("{}{}{}", &page[..at], banner, &page[at..]),
        None => format!("{banner}{page}"),
    }
}

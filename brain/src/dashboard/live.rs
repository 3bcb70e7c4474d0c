//! Live pages. A project's change watermark is two durable numbers: the sum of its agents'
//! ingest counters (one more per stored batch of events) and its newest command status change.
//! A page is rendered with the watermark of that moment; `GET /p/{slug}/live` is a
//! Server-Sent Events stream that sends the watermark whenever it moves, and the page's script
//! re-fetches itself when what it receives differs from what it was rendered at. Because the
//! numbers live in the database (not in one brain's memory), a page that reconnects, or
//! reconnects to another replica, compares and catches up instead of missing changes.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};

use super::{Page, PageError};
use crate::app::AppState;
use crate::auth::Viewer;
use crate::store::{AnyConnection, StoreResult, agents, commands};

/// How often an open stream reads the watermark.
const POLL: Duration = Duration::from_secs(1);

/// The project's change watermark, as the page embeds it.
pub fn watermark(conn: &mut AnyConnection, project_id: &str) -> StoreResult<String> {
    Ok(format!(
        "{}-{}",
        agents::events_seq(conn, project_id)?,
        commands::last_status_change(conn, project_id)?
    ))
}

/// The watermark now, for a page about to render.
pub async fn current(state: &AppState, project_id: &str) -> Result<String, PageError> {
    let project_id = project_id.to_owned();
    Ok(state
        .store
        .read("dashboard_watermark", move |conn| {
            watermark(conn, &project_id)
        })
        .await?)
}

/// `GET /p/{slug}/live`: the watermark, sent when it changes (at once on connect when it
/// differs from `Last-Event-ID`).
pub async fn stream(
    State(state): State<AppState>,
    page: Page<Viewer>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, PageError> {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let project_id = page.access.project.id.clone();
    let page_state = state.clone();
    let events = futures_util::stream::unfold(
        (state, project_id, last, true),
        |(state, project_id, mut last, first)| async move {
            if !first {
                tokio::time::sleep(POLL).await;
            }
            loop {
                let id = project_id.clone();
                match state
                    .store
                    .read("dashboard_live", move |conn| watermark(conn, &id))
                    .await
                {
                    Ok(current) if last.as_deref() != Some(current.as_str()) => {
                        last = Some(current.clone());
                        let event = Event::default().id(current.clone()).data(current);
                        return Some((Ok(event), (state, project_id, last, false)));
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%err, "live watermark unavailable"),
                }
                tokio::time::sleep(POLL).await;
            }
        },
    );
    // The stream ends when the server starts shutting down, so an open tab never holds a
    // SIGTERM up (the page's script reconnects, to this brain once it is back or another).
    let mut stopping = page_state.stopping();
    let events = events.take_until(async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

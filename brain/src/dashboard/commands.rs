//! Commands: the list (status changes arrive live) and a command's page with its payload,
//! issuer, outcome and the signed audit rows behind it, each with its signature check.

use axum::extract::{Path, RawQuery, State};
use axum::response::Html;
use maud::html;

use super::layout::{self, Section, badge, text, time};
use super::{Page, PageError};
use crate::api::commands::command_detail;
use crate::api::extract::parse_query;
use crate::app::AppState;
use crate::auth::Viewer;
use crate::commands::list::{ListQuery, read_page};

/// Statuses offered in the filter.
const STATUSES: [&str; 5] = ["issued", "dispatched", "succeeded", "failed", "timed_out"];

/// `GET /p/{slug}/commands`.
pub async fn list(
    State(state): State<AppState>,
    page: Page<Viewer>,
    RawQuery(raw): RawQuery,
) -> Result<Html<String>, PageError> {
    let project = &page.access.project;
    let query: ListQuery = parse_query(raw.as_deref().unwrap_or_default())?;
    let status = form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "status")
        .map(|(_, v)| v.into_owned());
    let secret = state.keys.confirm_secret();
    let _slot = page.access.caller.read_slot(&state)?;
    let budget = state.settings.query_budget;
    let (rows, next_cursor) = read_page(&state.store, budget, secret, &project.id, &query).await?;
    let watermark = super::live::current(&state, &project.id).await?;
    let slug = &project.slug;
    let body = html! {
        h1 { "Commands" }
        nav.chips {
            a href={ "/p/" (slug) "/commands" } aria-current=[status.is_none().then_some("page")] { "all" }
            @for s in STATUSES {
                a href={ "/p/" (slug) "/commands?status=" (s) } aria-current=[(status.as_deref() == Some(s)).then_some("page")] { (s) }
            }
        }
        div.scroll {
            table {
                thead { tr { th { "Issued" } th { "Kind" } th { "Status" } th { "Issuer" } th { "Agent" } th { "Detail" } } }
                tbody {
                    @for c in &rows {
                        tr data-command=(c.id) {
                            td { a href={ "/p/" (slug) "/commands/" (c.id) } { (time(Some(c.issued_at))) } }
                            td { (c.kind) @if c.critical { " " span.badge.s-failed { "critical" } } }
                            td { (badge(c.status.as_str())) @if c.late { " " span.muted { "late" } } }
                            td { (c.issuer_type) ": " (c.issuer_name) }
                            td.mono { (c.agent_id.get(..8).unwrap_or(&c.agent_id)) }
                            td { (text(c.detail.as_deref())) }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() { p.muted.empty { "No command yet." } }
        @if let Some(next) = &next_cursor {
            @let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
            nav.pager { a.button href={ "/p/" (slug) "/commands?cursor=" (next) @if let Some(s) = &status { "&status=" (s) } } { "Next page" } }
        }
    };
    Ok(layout::page(
        &page.chrome("Commands", Section::Commands, Some(&watermark)),
        body,
    ))
}

/// `GET /p/{slug}/commands/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    page: Page<Viewer>,
    Path((_slug, id)): Path<(String, String)>,
) -> Result<Html<String>, PageError> {
    let project = &page.access.project;
    let detail = command_detail(&state, &project.id, &id).await?;
    let watermark = super::live::current(&state, &project.id).await?;
    let c = &detail.command;
    let slug = &project.slug;
    let status = serde_json::to_value(c.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let body = html! {
        p.crumbs { a href={ "/p/" (slug) "/commands" } { "Commands" } " / " span.mono { (c.id) } }
        h1 { (c.kind) " " span data-status=(status) { (badge(&status)) } }
        section.grid {
            dl {
                dt { "Issuer" } dd { (c.issuer.kind) ": " (c.issuer.name) }
                dt { "Agent" } dd.mono { (c.agent_id) }
                dt { "Critical" } dd { @if c.critical { span.badge.s-failed { "yes" } } @else { "no" } }
                dt { "Outcome" } dd { (text(c.detail.as_deref())) @if c.late { " (arrived late)" } }
                @if let Some(depth) = c.bound_depth { dt { "Bound depth" } dd { (depth) } }
            }
            ol.timeline {
                li { span.label { "Issued" } (time(Some(c.issued_at.timestamp_millis()))) }
                li { span.label { "Deadline" } (time(Some(c.deadline_at.timestamp_millis()))) }
                li { span.label { "Expires" } (time(Some(c.expires_at.timestamp_millis()))) }
                li { span.label { "Last change" } (time(Some(c.updated_at.timestamp_millis()))) }
            }
        }
        section {
            h2 { "Payload" }
            pre { (serde_json::to_string_pretty(&c.payload).unwrap_or_default()) }
        }
        section {
            h2 { "Audit rows" }
            div.scroll { table {
                thead { tr { th { "Seq" } th { "Kind" } th { "Signature" } th { "Key" } th { "Hash" } } }
                tbody { @for row in &detail.audit_rows {
                    tr {
                        td { (row.seq) }
                        td { (row.kind) }
                        td { @if row.signature_valid { span.badge.s-succeeded { "valid" } } @else { span.badge.s-failed { "INVALID" } } }
                        td.mono { (row.key_id.get(..12).unwrap_or(&row.key_id)) }
                        td.mono { (row.hash.get(..16).unwrap_or(&row.hash)) "…" }
                    }
                } }
            } }
        }
    };
    Ok(layout::page(
        &page.chrome(&c.kind, Section::Commands, Some(&watermark)),
        body,
    ))
}

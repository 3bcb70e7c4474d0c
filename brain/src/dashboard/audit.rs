//! The project's audit log: its signed rows page by page (each with its signature check),
//! "verify now" over the whole chain with the first bad row named, a signed checkpoint to keep,
//! and the JSON Lines export an auditor verifies offline.

use axum::extract::{RawQuery, State};
use axum::response::Html;
use maud::html;

use super::layout::{self, Section, text};
use super::{Page, PageError};
use crate::api::audit::{AuditQuery, audit_page};
use crate::api::extract::parse_query;
use crate::app::AppState;
use crate::audit::verify_live;
use crate::auth::Viewer;
use crate::error::ApiError;
use crate::store::audit as audit_store;
use taskward_shared::audit::verify::TrustedKeys;

/// Kinds offered in the filter (any kind can be typed).
const KINDS: [&str; 15] = [
    "command.issued",
    "command.succeeded",
    "command.failed",
    "command.timed_out",
    "agent.created",
    "agent.enrollment_reissued",
    "agent.deleted",
    "member.role_set",
    "member.removed",
    "schedule.created",
    "schedule.updated",
    "schedule.deleted",
    "schedule.alert",
    "tasks.deleted",
    "project.deletion_started",
];

/// `GET /p/{slug}/audit`: rows oldest first, in pages, optionally of one kind.
pub async fn list(
    State(state): State<AppState>,
    page: Page<Viewer>,
    RawQuery(raw): RawQuery,
) -> Result<Html<String>, PageError> {
    let text_query = super::without_empty(raw.as_deref());
    let query: AuditQuery = parse_query(&text_query)?;
    let kind = form_urlencoded::parse(text_query.as_bytes())
        .find(|(k, _)| k == "kind")
        .map(|(_, v)| v.into_owned());
    let rows = audit_page(&state, &page.access.project.id, &query).await?;
    let project = &page.access.project;
    let slug = &project.slug;
    let api = format!("/api/v1/projects/{slug}/audit");
    let next_page = rows.next_cursor.as_deref().map(|cursor| {
        let mut params = form_urlencoded::Serializer::new(String::new());
        if let Some(kind) = &kind {
            params.append_pair("kind", kind);
        }
        format!(
            "/p/{slug}/audit?{}",
            params.append_pair("cursor", cursor).finish()
        )
    });
    let body = html! {
        h1 { "Audit log" }
        p.muted { "Every command and change in this project is a signed row chained to the one before it. An auditor checks the export with the public keys alone: "
            code { "taskward-brain audit verify --file export.jsonl --keys keys.json" } "." }
        div.toolbar {
            a.button href={ "/p/" (slug) "/audit/verify" } { "Verify now" }
            a.button.secondary href={ (api) "/checkpoint" } download={ "checkpoint-" (slug) ".json" } { "Download a signed checkpoint" }
            a.button.secondary href={ (api) "/export" } download={ "audit-" (slug) ".jsonl" } { "Export (JSON Lines)" }
            a.button.secondary href="/api/v1/signing-keys" download="keys.json" { "Public keys" }
        }
        form.filters method="get" action={ "/p/" (slug) "/audit" } {
            label.wide { "Kind"
                input name="kind" list="kinds" value=[kind.as_deref()] placeholder="any";
                datalist id="kinds" { @for k in KINDS { option value=(k) {} } }
            }
            button type="submit" { "Filter" }
            a.button.secondary href={ "/p/" (slug) "/audit" } { "Clear" }
        }
        div.scroll { table {
            thead { tr { th.num { "Seq" } th { "Kind" } th { "Actor" } th { "Time" } th { "Signature" } th { "Hash" } } }
            tbody { @for row in &rows.items {
                @let actor = &row.statement["actor"];
                tr {
                    td.num { (row.seq) }
                    td { @match &row.command_id {
                        Some(id) => { a href={ "/p/" (slug) "/commands/" (id) } { (row.kind) } },
                        None => { (row.kind) },
                    } }
                    td { (actor["type"].as_str().unwrap_or("")) ": " (actor["name"].as_str().unwrap_or("")) }
                    td { (text(row.statement["time"].as_str())) }
                    td { @if row.signature_valid { span.badge.s-succeeded { "valid" } } @else { span.badge.s-failed { "INVALID" } } }
                    td.mono { (row.hash.get(..16).unwrap_or(&row.hash)) "…" }
                }
            } }
        } }
        @if rows.items.is_empty() { p.muted.empty { "No row." } }
        @if let Some(next) = &next_page {
            nav.pager { a.button href=(next) { "Next page" } }
        }
    };
    Ok(layout::page(
        &page.chrome("Audit log", Section::Audit, None),
        body,
    ))
}

/// `GET /p/{slug}/audit/verify`: checks the whole chain now, as `audit verify` does.
pub async fn verify(
    State(state): State<AppState>,
    page: Page<Viewer>,
) -> Result<Html<String>, PageError> {
    let project = &page.access.project;
    let chain = audit_store::project_chain(&project.id);
    let trusted = TrustedKeys::from_infos(&state.keys.public_keys()).map_err(ApiError::Internal)?;
    let store = state.store.clone();
    let started = std::time::Instant::now();
    let verdict =
        tokio::task::spawn_blocking(move || verify_live(&store, trusted, &chain, None, |_| {}))
            .await
            .map_err(|e| ApiError::Internal(format!("verification stopped: {e}")))??;
    let took = started.elapsed();
    let slug = &project.slug;
    let body = html! {
        p.crumbs { a href={ "/p/" (slug) "/audit" } { "Audit log" } " / verify" }
        @match &verdict {
            Ok(summary) => {
                h1 { "Verified " span.badge.s-succeeded { "intact" } }
                p data-verdict="ok" { (summary.rows) " rows checked in " (took.as_millis()) " ms: every signature is valid and every row chains to the one before it. Head hash " code { (summary.head) } "." }
            },
            Err(failure) => {
                h1 { "Verification failed " span.badge.s-failed { "altered" } }
                p.error data-verdict="failed" { "First bad row: " strong { (failure.seq) } ": " (failure.problem.to_string()) }
            },
        }
        p { a.button.secondary href={ "/p/" (slug) "/audit" } { "Back to the log" } }
    };
    Ok(layout::page(
        &page.chrome("Verify audit log", Section::Audit, None),
        body,
    ))
}

//! The project's audit log: its signed rows page by page (each with its signature check),
//! "verify now" over the whole chain with the first bad row named, a signed checkpoint to keep,
//! and the JSON Lines export an auditor verifies offline.

use axum::extract::{RawQuery, State};
use axum::response::Html;
use maud::html;

use super::layout::{self, Section, text};
use super::{Page, PageError};
use serde::Deserialize;

use crate::api::audit::AuditRowPublic;
use crate::api::extract::parse_query;
use crate::app::AppState;
use crate::audit::verify_live;
use crate::auth::Viewer;
use crate::error::ApiError;
use crate::store::audit as audit_store;
use taskward_shared::audit::verify::TrustedKeys;

/// What the log page takes: a kind to show only, and the seq to continue after.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    kind: Option<String>,
    after: Option<u64>,
}

/// Kinds offered in the filter (any kind can be typed).
const KINDS: [&str; 14] = [
    "command.issued",
    "command.succeeded",
    "command.failed",
    "command.timed_out",
    "agent.created",
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

/// Rows per page of the log.
const ROWS: i64 = 100;

/// `GET /p/{slug}/audit`: rows oldest first, in pages, optionally of one kind.
pub async fn list(
    State(state): State<AppState>,
    page: Page<Viewer>,
    RawQuery(raw): RawQuery,
) -> Result<Html<String>, PageError> {
    let query: LogQuery = parse_query(
        &form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes())
                    .filter(|(_, v)| !v.is_empty()),
            )
            .finish(),
    )?;
    let project = &page.access.project;
    let chain = audit_store::project_chain(&project.id);
    let kind = query.kind.clone();
    let after = query.after.unwrap_or(0);
    let rows = state
        .store
        .read("dashboard_audit", move |conn| {
            audit_store::page_of_kind(conn, &chain, kind.as_deref(), after, ROWS + 1)
        })
        .await?;
    let trusted = TrustedKeys::from_infos(&state.keys.public_keys()).map_err(ApiError::Internal)?;
    let more = rows.len() as i64 > ROWS;
    let items: Vec<AuditRowPublic> = rows
        .into_iter()
        .take(ROWS as usize)
        .map(|r| AuditRowPublic::new(r, &trusted))
        .collect();
    let slug = &project.slug;
    let api = format!("/api/v1/projects/{slug}/audit");
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
                input name="kind" list="kinds" value=[query.kind.as_deref()] placeholder="any";
                datalist id="kinds" { @for k in KINDS { option value=(k) {} } }
            }
            button type="submit" { "Filter" }
            a.button.secondary href={ "/p/" (slug) "/audit" } { "Clear" }
        }
        div.scroll { table {
            thead { tr { th.num { "Seq" } th { "Kind" } th { "Actor" } th { "Time" } th { "Signature" } th { "Hash" } } }
            tbody { @for row in &items {
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
        @if items.is_empty() { p.muted.empty { "No row." } }
        @if let (true, Some(last)) = (more, items.last()) {
            @let kind: String = query.kind.as_deref().map(|k| form_urlencoded::byte_serialize(k.as_bytes()).collect()).unwrap_or_default();
            nav.pager { a.button href={ "/p/" (slug) "/audit?after=" (last.seq) @if !kind.is_empty() { "&kind=" (kind) } } { "Next page" } }
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

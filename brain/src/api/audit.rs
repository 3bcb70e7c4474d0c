//! The audit log over HTTP: published signing keys, a project's chain page by page, its
//! streamed export, and signed checkpoints. Also the queues view purges are confirmed from.

use std::convert::Infallible;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use taskward_shared::audit::verify::TrustedKeys;
use taskward_shared::audit::{AuditRow, Checkpoint, PublicKeyInfo};
use taskward_shared::crypto::confirm_token;
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{ApiPath, ApiQuery};
use super::{tags, timestamp};
use crate::app::AppState;
use crate::audit::export::write_chain;
use crate::audit::{CheckpointError, checkpoint_now};
use crate::auth::{ProjectAccess, SiteAdmin, Viewer};
use crate::cursor;
use crate::error::{ApiError, ErrorBody};
use crate::query::page::parse_limit;
use crate::role::Role;
use crate::store::{StoreError, agents, audit as audit_store, commands, run_blocking};

/// A published signing key.
#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyPublic {
    /// Derived key id.
    pub key_id: String,
    /// Hex ed25519 public key.
    pub public_key: String,
    /// Start of validity, ms since the epoch.
    pub valid_from_ms: i64,
    /// End of validity (after a rotation), ms since the epoch.
    pub valid_until_ms: Option<i64>,
}

/// All signing keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeys {
    /// Oldest first; the one without `valid_until_ms` signs now.
    pub keys: Vec<SigningKeyPublic>,
}

fn key_public(info: PublicKeyInfo) -> SigningKeyPublic {
    SigningKeyPublic {
        key_id: info.key_id,
        public_key: info.public_key,
        valid_from_ms: info.valid_from_ms,
        valid_until_ms: info.valid_until_ms,
    }
}

/// The brain's public signing keys. No auth: they are public, and auditors need them.
#[utoipa::path(get, path = "/api/v1/signing-keys", tag = tags::AUDIT, security(()),
    responses((status = 200, body = SigningKeys)))]
pub async fn signing_keys(State(state): State<AppState>) -> Json<SigningKeys> {
    Json(SigningKeys {
        keys: state
            .keys
            .public_keys()
            .into_iter()
            .map(key_public)
            .collect(),
    })
}

/// An audit row as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditRowPublic {
    /// Chain name.
    pub chain: String,
    /// Position, from 1.
    pub seq: u64,
    /// Kind, e.g. `command.issued`.
    pub kind: String,
    /// Command the row belongs to.
    pub command_id: Option<String>,
    /// The signed statement (parsed for reading; verify against `statement_bytes`).
    #[schema(value_type = Object)]
    pub statement: serde_json::Value,
    /// The exact signed statement bytes.
    pub statement_bytes: String,
    /// Hex hash of the previous row.
    pub prev_hash: String,
    /// Hex hash of this row.
    pub hash: String,
    /// Signing key id.
    pub key_id: String,
    /// Hex signature.
    pub signature: String,
    /// Whether the signature verifies with a published key (the chain itself is checked by
    /// `taskward-brain audit verify`).
    pub signature_valid: bool,
}

impl AuditRowPublic {
    /// Shows a row, checking its signature against `trusted`.
    pub fn new(row: AuditRow, trusted: &TrustedKeys) -> AuditRowPublic {
        let signature_valid = signature_ok(&row, trusted);
        AuditRowPublic {
            statement: serde_json::from_str(&row.statement).unwrap_or(serde_json::Value::Null),
            chain: row.chain,
            seq: row.seq,
            kind: row.kind,
            command_id: row.command_id,
            statement_bytes: row.statement,
            prev_hash: row.prev_hash,
            hash: row.hash,
            key_id: row.key_id,
            signature: row.signature,
            signature_valid,
        }
    }
}

fn signature_ok(row: &AuditRow, trusted: &TrustedKeys) -> bool {
    taskward_shared::audit::verify::check_row(trusted, row).is_ok()
}

/// A page of audit rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// In chain order.
    pub items: Vec<AuditRowPublic>,
    /// Pass as `cursor` for the next page; null at the head.
    pub next_cursor: Option<String>,
}

/// Query of the audit list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    kind: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// Largest page of audit rows.
pub const MAX_AUDIT_LIMIT: i64 = 1000;

/// Longest row kind the audit list filters by.
pub const MAX_KIND_LEN: usize = 64;

/// A project's audit chain, oldest first, in keyset pages.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/audit", tag = tags::AUDIT,
    params(("slug" = String, Path, description = "Project slug"),
        ("kind" = Option<String>, Query, description = "Only rows of this kind, e.g. command.issued"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("limit" = Option<i64>, Query, description = "1..1000, default 100")),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    access: ProjectAccess<Viewer>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    Ok(Json(audit_page(&state, &access.project.id, &query).await?))
}

/// A page of a project's audit chain, with each row's signature check (the API's list and
/// the dashboard's audit page).
pub async fn audit_page(
    state: &AppState,
    project_id: &str,
    query: &AuditQuery,
) -> Result<AuditPage, ApiError> {
    let limit = parse_limit(query.limit, 100, MAX_AUDIT_LIMIT)?;
    if let Some(kind) = &query.kind
        && (kind.is_empty()
            || kind.len() > MAX_KIND_LEN
            || !kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'))
    {
        return Err(ApiError::invalid_field(
            "kind",
            format!(
                "kind: 1 to {MAX_KIND_LEN} of a-z, '.', '_' (like command.issued), got {kind:?}"
            ),
        ));
    }
    let chain = audit_store::project_chain(project_id);
    let secret = state.keys.confirm_secret();
    // A cursor belongs to its filter: one from another kind's pages is refused.
    let scope = match &query.kind {
        Some(kind) => format!("audit:{chain}:{kind}"),
        None => format!("audit:{chain}"),
    };
    let after: u64 = query
        .cursor
        .as_deref()
        .map(|c| cursor::decode(secret, &scope, c))
        .transpose()?
        .unwrap_or(0);
    let (owned, kind) = (chain.clone(), query.kind.clone());
    let rows = state
        .store
        .read("audit_page", move |conn| {
            audit_store::page_of_kind(conn, &owned, kind.as_deref(), after, limit + 1)
        })
        .await?;
    let more = rows.len() as i64 > limit;
    let trusted = TrustedKeys::from_infos(&state.keys.public_keys()).map_err(ApiError::Internal)?;
    let mut items: Vec<AuditRowPublic> = rows
        .into_iter()
        .take(limit as usize)
        .map(|r| AuditRowPublic::new(r, &trusted))
        .collect();
    let next_cursor = match items.last() {
        Some(last) if more => Some(cursor::encode(secret, &scope, &last.seq)),
        _ => None,
    };
    items.shrink_to_fit();
    Ok(AuditPage { items, next_cursor })
}

/// Streams a project's whole chain as JSON Lines: a header with the public keys, then one row
/// per line. Memory stays flat whatever the size: rows are read and sent page by page.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/audit/export", tag = tags::AUDIT,
    params(("slug" = String, Path, description = "Project slug")),
    responses((status = 200, description = "JSON Lines export", content_type = "application/x-ndjson"),
        (status = 404, body = ErrorBody)))]
pub async fn export(State(state): State<AppState>, access: ProjectAccess<Viewer>) -> Response {
    let chain = audit_store::project_chain(&access.project.id);
    stream_export(
        &state,
        chain,
        format!("taskward-audit-{}.jsonl", access.project.slug),
    )
}

/// Streams the site chain (the first start, users, passwords set, tokens, projects created,
/// key rotations; members and agents are on project chains) as JSON Lines, like a project export; `taskward-brain audit verify --file`
/// verifies it offline. Site admins only.
#[utoipa::path(get, path = "/api/v1/audit/export", tag = tags::AUDIT,
    responses((status = 200, description = "JSON Lines export of the site chain", content_type = "application/x-ndjson"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn site_export(State(state): State<AppState>, _admin: SiteAdmin) -> Response {
    let chain = state.store.site_chain();
    stream_export(&state, chain, "taskward-audit-site.jsonl".to_owned())
}

/// The streaming response of an export: a blocking task reads pages and hands them over a
/// small channel, so the reader runs ahead by at most a few pages.
fn stream_export(state: &AppState, chain: String, filename: String) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let store = state.store.clone();
    let keys = state.keys.public_keys();
    tokio::task::spawn_blocking(move || {
        let sent = write_chain(&store, keys, &chain, |chunk| {
            tx.blocking_send(Bytes::from(chunk)).is_ok()
        });
        if let Err(err) = sent {
            // The client sees a truncated stream, which verification reports.
            tracing::error!(%err, %chain, "audit export stopped");
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    (
        [
            (CONTENT_TYPE, "application/x-ndjson".to_owned()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Signs a checkpoint of the project's chain now (also appended to `checkpoints.log`). Keep it:
/// `taskward-brain audit verify --checkpoint` then detects a log cut or rewritten after it.
/// The brain first verifies the rows since its last verified point and signs exactly what it
/// verified; over a broken chain it signs nothing (409 `audit_chain_broken`).
#[utoipa::path(get, path = "/api/v1/projects/{slug}/audit/checkpoint", tag = tags::AUDIT,
    params(("slug" = String, Path, description = "Project slug")),
    responses((status = 200, body = Checkpoint), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The chain does not verify (`audit_chain_broken`)")))]
pub async fn checkpoint(
    State(state): State<AppState>,
    access: ProjectAccess<Viewer>,
) -> Result<Json<Checkpoint>, ApiError> {
    let chain = audit_store::project_chain(&access.project.id);
    sign_checkpoint(&state, chain).await
}

/// Signs a checkpoint of the site chain now, as the project endpoint does for a project's
/// chain: kept outside the brain, it catches a site chain (key rotations, users, tokens,
/// projects) cut short or rewritten after it. Site admins only.
#[utoipa::path(get, path = "/api/v1/audit/checkpoint", tag = tags::AUDIT,
    responses((status = 200, body = Checkpoint), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The chain does not verify (`audit_chain_broken`)")))]
pub async fn site_checkpoint(
    State(state): State<AppState>,
    _admin: SiteAdmin,
) -> Result<Json<Checkpoint>, ApiError> {
    let chain = state.store.site_chain();
    sign_checkpoint(&state, chain).await
}

/// Verifies `chain` up to its head and signs a checkpoint of it ([`checkpoint_now`]).
async fn sign_checkpoint(state: &AppState, chain: String) -> Result<Json<Checkpoint>, ApiError> {
    let app = state.clone();
    let cp = run_blocking(move || {
        checkpoint_now(
            &app.store,
            &app.keys,
            &app.data_dir,
            &app.audit_watch,
            &chain,
        )
    })
    .await
    .map_err(|e| match e {
        CheckpointError::Store(err) => ApiError::from(err),
        CheckpointError::Broken(found) => ApiError::AuditChainBroken(found.to_string()),
    })?;
    Ok(Json(cp))
}

/// A queue an agent reported.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuePublic {
    /// Queue name.
    pub queue: String,
    /// Messages waiting when last observed.
    pub depth: u64,
    /// When the agent observed it.
    pub observed_at: DateTime<Utc>,
    /// Token that confirms a purge of exactly this depth (admins only; null for others).
    pub confirm_token: Option<String>,
}

/// Queues of an agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueList {
    /// By name; empty until the agent reports.
    pub items: Vec<QueuePublic>,
}

/// The queues an agent watches with their last depths, and (for admins) the confirm token
/// a purge of that depth needs.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/agents/{agent_id}/queues", tag = tags::AGENTS,
    params(("slug" = String, Path, description = "Project slug"), ("agent_id" = String, Path, description = "Agent id")),
    responses((status = 200, body = QueueList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn queues(
    State(state): State<AppState>,
    access: ProjectAccess<Viewer>,
    ApiPath((_slug, agent_id)): ApiPath<(String, Uuid)>,
) -> Result<Json<QueueList>, ApiError> {
    let project_id = access.project.id.clone();
    let id = agent_id.to_string();
    let depths = state
        .store
        .read("agent_queues", move |conn| {
            agents::find(conn, &project_id, &id)?;
            commands::queue_depths(conn, &id)
        })
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound(format!("agent {agent_id}")),
            other => other.into(),
        })?;
    let admin = access.role >= Role::Admin;
    let secret = state.keys.confirm_secret();
    let id = agent_id.to_string();
    Ok(Json(QueueList {
        items: depths
            .into_iter()
            .map(|d| QueuePublic {
                confirm_token: admin.then(|| confirm_token(secret, &id, &d.queue, d.depth as u64)),
                queue: d.queue,
                depth: d.depth as u64,
                observed_at: timestamp(d.observed_at),
            })
            .collect(),
    }))
}

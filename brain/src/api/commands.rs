//! `/api/v1/projects/{slug}/commands`: list and read commands, and issue the nine kinds.
//!
//! Issuing: validate the payload (bounds from `taskward_shared::command`) → role (in the
//! handler's signature) → rate limit (bulk retry, purge) → in one transaction: idempotency key,
//! the agent belongs to the project, purge confirm token against the last reported depth, then
//! the signed `command.issued` audit row and the command itself. If the audit append fails,
//! nothing is written and the caller gets 503.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use taskward_shared::audit::verify::TrustedKeys;
use taskward_shared::command::{Command, CommandKind};
use utoipa::ToSchema;
use uuid::Uuid;

use super::audit::AuditRowPublic;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{tags, timestamp};
use crate::app::AppState;
use crate::auth::{Admin, Caller, Operator, ProjectAccess, Viewer};
use crate::commands::list::{self, ListQuery};
use crate::commands::request::{
    BulkRetryRequest, CancelTaskRequest, ConsumerChangeRequest, PingWorkersRequest,
    PoolResizeRequest, PurgeQueueRequest, RateLimitRequest, RestartWorkerRequest, RetryTaskRequest,
};
use crate::commands::retry::preview_bulk;
use crate::commands::{Issue, issue_in, parse_request};
use crate::error::{ApiError, ErrorBody};
use crate::store::commands::{self, CommandRecord, CommandStatus};
use crate::store::projects::Project;
use crate::store::{StoreError, audit as audit_store};

/// Largest page of the commands list.
pub const MAX_LIMIT: i64 = 5000;
/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 100;

/// Who issued a command.
#[derive(Debug, Serialize, ToSchema)]
pub struct Issuer {
    /// `user` or `schedule`.
    #[serde(rename = "type")]
    pub kind: String,
    /// User or schedule id.
    pub id: String,
    /// Name at the time.
    pub name: String,
}

/// Where a command's signed row sits in the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditRef {
    /// Chain name.
    pub chain: String,
    /// Seq of the `command.issued` row.
    pub seq: u64,
}

/// A command as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandPublic {
    /// Command id.
    pub id: String,
    /// Project id.
    pub project_id: String,
    /// The agent that must run it (the signed audience).
    pub agent_id: String,
    /// Kind, e.g. `retry-task`.
    pub kind: String,
    /// The validated payload, as signed.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Current status, from the latest outcome row.
    pub status: CommandStatus,
    /// Outcome detail or refusal reason.
    pub detail: Option<String>,
    /// A result arrived after the command had ended (recorded, status unchanged).
    pub late: bool,
    /// Who issued it.
    pub issuer: Issuer,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// Flagged critical: a forced purge or a global throttle.
    pub critical: bool,
    /// A rate limit sent to every worker.
    pub global_throttle: bool,
    /// The queue depth a confirmed purge is bound to.
    pub bound_depth: Option<u64>,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// After this the agent refuses to run it (signed).
    pub expires_at: DateTime<Utc>,
    /// The brain marks it `timed_out` if no result arrived by then: the kind's deadline (60 s;
    /// restart-worker 120 s; bulk-retry 300 s), never past `expires_at`.
    pub deadline_at: DateTime<Utc>,
    /// Last status change.
    pub updated_at: DateTime<Utc>,
    /// Its signed row.
    pub audit: AuditRef,
}

impl From<CommandRecord> for CommandPublic {
    fn from(c: CommandRecord) -> CommandPublic {
        CommandPublic {
            payload: serde_json::from_str(&c.payload).unwrap_or(serde_json::Value::Null),
            status: c.status,
            issuer: Issuer {
                kind: c.issuer_type,
                id: c.issuer_id,
                name: c.issuer_name,
            },
            audit: AuditRef {
                chain: c.audit_chain,
                seq: c.audit_seq as u64,
            },
            id: c.id,
            project_id: c.project_id,
            agent_id: c.agent_id,
            kind: c.kind.as_str().to_owned(),
            detail: c.detail,
            late: c.late,
            idempotency_key: c.idempotency_key,
            critical: c.critical,
            global_throttle: c.global_throttle,
            bound_depth: c.bound_depth.map(|d| d as u64),
            issued_at: timestamp(c.issued_at),
            expires_at: timestamp(c.expires_at),
            deadline_at: timestamp(c.deadline_at),
            updated_at: timestamp(c.updated_at),
        }
    }
}

/// A command with the audit rows behind it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandDetail {
    /// The command.
    #[serde(flatten)]
    pub command: CommandPublic,
    /// Its signed rows (issued, then each outcome), with their signature status.
    pub audit_rows: Vec<AuditRowPublic>,
}

/// A page of commands.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandList {
    /// Newest first.
    pub items: Vec<CommandPublic>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Lists a project's commands, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/commands", tag = tags::COMMANDS,
    params(("slug" = String, Path, description = "Project slug"),
        ("status" = Option<String>, Query, description = "issued, dispatched, succeeded, failed or timed_out"),
        ("kind" = Option<String>, Query, description = "Command kind, e.g. retry-task"),
        ("since" = Option<String>, Query, description = "RFC 3339; issued at or after"),
        ("until" = Option<String>, Query, description = "RFC 3339; issued at or before"),
        ("filter" = Option<String>, Query, description = "Nested filter, JSON (the tasks list's grammar); relations agent, issuer"),
        ("orderBy" = Option<String>, Query, description = "JSON array of {field: direction}; default issued_at desc"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("limit" = Option<i64>, Query, description = "1..5000, default 100")),
    responses((status = 200, body = CommandList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "Too many lists or exports of this caller at once"),
        (status = 503, body = ErrorBody, description = "Over the query budget, or the store is unavailable")))]
pub async fn list(
    State(state): State<AppState>,
    access: ProjectAccess<Viewer>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<CommandList>, ApiError> {
    let secret = state.keys.confirm_secret();
    let _slot = access.caller.read_slot(&state)?;
    let budget = state.settings.query_budget;
    let (items, next_cursor) =
        list::read_page(&state.store, budget, secret, &access.project.id, &query).await?;
    Ok(Json(CommandList {
        items: items.into_iter().map(CommandPublic::from).collect(),
        next_cursor,
    }))
}

/// Reads a command with its signed audit rows.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/commands/{command_id}", tag = tags::COMMANDS,
    params(("slug" = String, Path, description = "Project slug"), ("command_id" = String, Path, description = "Command id")),
    responses((status = 200, body = CommandDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    access: ProjectAccess<Viewer>,
    ApiPath((_slug, command_id)): ApiPath<(String, Uuid)>,
) -> Result<Json<CommandDetail>, ApiError> {
    Ok(Json(
        command_detail(&state, &access.project.id, &command_id.to_string()).await?,
    ))
}

/// A command of the project with its audit rows and their signature checks (the API's detail
/// and the dashboard's command page).
pub async fn command_detail(
    state: &AppState,
    project_id: &str,
    command_id: &str,
) -> Result<CommandDetail, ApiError> {
    let (project_id, id) = (project_id.to_owned(), command_id.to_owned());
    let (command, rows) = state
        .store
        .read("get_command", move |conn| {
            let command = commands::find(conn, &project_id, &id)?;
            let rows = audit_store::rows_of_command(conn, &command.audit_chain, &id)?;
            Ok((command, rows))
        })
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound(format!("command {command_id}")),
            other => other.into(),
        })?;
    let trusted = TrustedKeys::from_infos(&state.keys.public_keys()).map_err(ApiError::Internal)?;
    Ok(CommandDetail {
        command: command.into(),
        audit_rows: rows
            .into_iter()
            .map(|r| AuditRowPublic::new(r, &trusted))
            .collect(),
    })
}

/// Issues a command for a caller who passed the route's role check.
async fn issue(
    state: AppState,
    caller: Caller,
    project: Project,
    kind: CommandKind,
    body: serde_json::Value,
) -> Result<(StatusCode, Json<CommandPublic>), ApiError> {
    let request = parse_request(kind, body)?;
    if matches!(kind, CommandKind::BulkRetry | CommandKind::PurgeQueue) {
        state
            .bulk_limiter
            .check(&format!("{kind}:{}", caller.user_id))
            .map_err(ApiError::RateLimited)?;
    }
    let issue = Issue {
        ctx: state.audit_as(caller.actor()),
        issuer_id: caller.user_id.clone(),
        project_id: project.id.clone(),
        agent_id: request.agent_id,
        idempotency_key: request.idempotency_key,
        command: request.command,
        secret: state.keys.confirm_secret().to_vec(),
        ttl_ms: state.settings.command_ttl.as_millis() as i64,
    };
    // Two requests with one new idempotency key can race (PostgreSQL): the loser's second
    // attempt finds the winner's command.
    let issued = state
        .store
        .write_retrying("issue_command", move |conn| issue_in(conn, &issue))
        .await?;
    issued.log();
    if issued.replay {
        return Ok((StatusCode::OK, Json(issued.record.into())));
    }
    state.hub.wake(&issued.record.agent_id);
    Ok((StatusCode::ACCEPTED, Json(issued.record.into())))
}

/// What a bulk retry would do now.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkRetryPreview {
    /// Every task the filter matches that is not in flight (and, unless the filter includes
    /// them, not retried before), whatever `max` is.
    pub matched: i64,
    /// Of those, the ones this bulk retry would take: the most recently changed, up to `max`.
    pub selected: usize,
    /// Of the selected, tasks whose arguments can be republished.
    pub retryable: usize,
    /// The other selected tasks, with the reason each is not retryable.
    #[schema(value_type = Vec<Object>)]
    pub skipped_not_retryable: Vec<taskward_shared::command::Skipped>,
}

/// Counts what a bulk retry with this body would retry, without issuing anything (operator).
#[utoipa::path(post, path = "/api/v1/projects/{slug}/commands/bulk-retry/dry-run", tag = tags::COMMANDS,
    request_body = BulkRetryRequest,
    params(("slug" = String, Path, description = "Project slug")),
    responses((status = 200, body = BulkRetryPreview), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn bulk_retry_dry_run(
    State(state): State<AppState>,
    access: ProjectAccess<Operator>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<BulkRetryPreview>, ApiError> {
    // The same body as bulk-retry, so a dashboard can preview exactly what it will send.
    let Command::BulkRetry(bulk) = parse_request(CommandKind::BulkRetry, body)?.command else {
        unreachable!("parse_request returns the kind it is given")
    };
    let project_id = access.project.id;
    let (matched, resolved) = state
        .store
        .read("bulk_retry_dry_run", move |conn| {
            preview_bulk(conn, &project_id, &bulk)
        })
        .await?;
    Ok(Json(BulkRetryPreview {
        matched,
        selected: resolved.tasks.len() + resolved.skipped_not_retryable.len(),
        retryable: resolved.tasks.len(),
        skipped_not_retryable: resolved.skipped_not_retryable,
    }))
}

macro_rules! command_route {
    ($(#[$doc:meta])* $name:ident, $path:literal, $floor:ty, $kind:expr, $request:ty) => {
        $(#[$doc])*
        #[utoipa::path(post, path = $path, tag = tags::COMMANDS,
            request_body = $request,
            params(("slug" = String, Path, description = "Project slug")),
            responses(
                (status = 202, body = CommandPublic, description = "Minted, signed and chained"),
                (status = 200, body = CommandPublic, description = "Idempotent replay: the first command"),
                (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
                (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
                (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
        pub async fn $name(
            State(state): State<AppState>,
            access: ProjectAccess<$floor>,
            ApiJson(body): ApiJson<serde_json::Value>,
        ) -> Result<(StatusCode, Json<CommandPublic>), ApiError> {
            issue(state, access.caller, access.project, $kind, body).await
        }
    };
}

command_route!(
    /// Retries one task, optionally with new kwargs (operator).
    retry_task, "/api/v1/projects/{slug}/commands/retry-task", Operator, CommandKind::RetryTask, RetryTaskRequest
);
command_route!(
    /// Cancels (revokes) one task (operator).
    cancel_task, "/api/v1/projects/{slug}/commands/cancel-task", Operator, CommandKind::CancelTask, CancelTaskRequest
);
command_route!(
    /// Retries up to `max` (1..10000) tasks matching a filter (operator; rate limited).
    bulk_retry, "/api/v1/projects/{slug}/commands/bulk-retry", Operator, CommandKind::BulkRetry, BulkRetryRequest
);
command_route!(
    /// Purges a queue: needs `confirm_token` for the current depth, or `force` (admin; rate
    /// limited; a forced purge is flagged critical).
    purge_queue, "/api/v1/projects/{slug}/commands/purge-queue", Admin, CommandKind::PurgeQueue, PurgeQueueRequest
);
command_route!(
    /// Gracefully restarts a worker (admin).
    restart_worker, "/api/v1/projects/{slug}/commands/restart-worker", Admin, CommandKind::RestartWorker, RestartWorkerRequest
);
command_route!(
    /// Grows or shrinks a worker's pool by `delta` (-100..100, not 0) (admin).
    pool_resize, "/api/v1/projects/{slug}/commands/pool-resize", Admin, CommandKind::PoolResize, PoolResizeRequest
);
command_route!(
    /// Makes a worker consume a queue (admin).
    add_consumer, "/api/v1/projects/{slug}/commands/add-consumer", Admin, CommandKind::AddConsumer, ConsumerChangeRequest
);
command_route!(
    /// Makes a worker stop consuming a queue (admin).
    cancel_consumer, "/api/v1/projects/{slug}/commands/cancel-consumer", Admin, CommandKind::CancelConsumer, ConsumerChangeRequest
);
command_route!(
    /// Sets a task's rate limit (`^\d+(/[smh])?$`, "0" clears); without `worker_name`, on every
    /// worker, flagged as a global throttle (admin).
    rate_limit, "/api/v1/projects/{slug}/commands/rate-limit", Admin, CommandKind::RateLimit, RateLimitRequest
);
command_route!(
    /// Asks workers whether they are alive; the result names those that did not answer
    /// (operator). Health-check schedules send it.
    ping_workers, "/api/v1/projects/{slug}/commands/ping-workers", Operator, CommandKind::PingWorkers, PingWorkersRequest
);

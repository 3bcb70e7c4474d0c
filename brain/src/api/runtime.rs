//! Stale runtime cleanup (`../shared/spec/stale-runtime-cleanup.txt` as mapped in the spec
//! README): an admin removes one agent that has been inactive for `inactive_hours`, with its
//! workers, never its task records or command log; what was removed is archived in the
//! response and the audit log first.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::ApiJson;
use super::{tags, timestamp};
use crate::app::AppState;
use crate::auth::{Admin, ProjectAccess};
use crate::error::{ApiError, ErrorBody};
use crate::store::{StoreError, agents, audit, now_ms, runtime};

/// Longest inactivity window accepted: a year.
pub const MAX_INACTIVE_HOURS: i64 = 8760;

fn default_hours() -> i64 {
    24
}

fn yes() -> bool {
    true
}

/// What to clean up.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaleCleanup {
    /// The agent to remove if it is stale.
    pub agent_id: Uuid,
    /// Hours without activity before removal is allowed (1..8760, default 24).
    #[serde(default = "default_hours")]
    pub inactive_hours: i64,
    /// Report what would happen without removing anything.
    #[serde(default)]
    pub dry_run: bool,
    /// Put the agent's last known state and workers in the response and audit row first.
    #[serde(default = "yes")]
    pub archive_before_delete: bool,
}

/// The outcome for the agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentCleanup {
    /// The agent.
    pub agent_id: String,
    /// Whether it was removed.
    pub deleted: bool,
    /// Whether it was left alone (see `reason`).
    pub skipped: bool,
    /// `not_stale`, `connected`, `preserved`, `dry_run` or `deleted`.
    pub reason: String,
    /// Names of its workers (removed, or that would be).
    pub workers: Vec<String>,
    /// Tasks started on those workers, marked lost (or that would be).
    pub lost_tasks: usize,
    /// Its last activity.
    pub last_updated_at: DateTime<Utc>,
    /// When it becomes stale.
    pub eligible_after: DateTime<Utc>,
    /// Its last known state and workers, when archived.
    #[schema(value_type = Object)]
    pub archive: Option<Value>,
}

/// The results.
#[derive(Debug, Serialize, ToSchema)]
pub struct CleanupResults {
    /// The agent's outcome.
    pub agent: AgentCleanup,
}

/// The response: the request as understood, and the results.
#[derive(Debug, Serialize, ToSchema)]
pub struct StaleCleanupReply {
    /// The agent.
    pub agent_id: String,
    /// The window applied.
    pub inactive_hours: i64,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Whether the agent was archived before removal.
    pub archive_before_delete: bool,
    /// What happened.
    pub results: CleanupResults,
}

/// Removes one agent and its workers if it has been inactive for `inactive_hours`. A connected
/// agent is never stale, a `preserve` agent is never removed, and task records and commands
/// are never deleted; tasks started on the removed workers become `lost`.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/runtime-cleanup/stale", tag = tags::AGENTS,
    params(("slug" = String, Path, description = "Project slug")),
    request_body = StaleCleanup,
    responses((status = 200, body = StaleCleanupReply), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn stale(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    ApiJson(body): ApiJson<StaleCleanup>,
) -> Result<Json<StaleCleanupReply>, ApiError> {
    if !(1..=MAX_INACTIVE_HOURS).contains(&body.inactive_hours) {
        return Err(ApiError::invalid_field(
            "inactive_hours",
            format!(
                "inactive_hours: between 1 and {MAX_INACTIVE_HOURS}, got {}",
                body.inactive_hours
            ),
        ));
    }
    let agent_id = body.agent_id.to_string();
    let connected = state.hub.is_online(&agent_id);
    let ctx = state.audit_as(&access.caller);
    let project_id = access.project.id.clone();
    let (id, hours, dry_run, archive_first) = (
        agent_id.clone(),
        body.inactive_hours,
        body.dry_run,
        body.archive_before_delete,
    );
    let outcome = state
        .store
        .write("stale_runtime_cleanup", move |conn| {
            clean_up_agent(
                conn,
                &ctx,
                &project_id,
                &id,
                connected,
                Rule {
                    inactive_hours: hours,
                    dry_run,
                    archive_first,
                },
            )
        })
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound(format!("agent {agent_id}")),
            other => other.into(),
        })?;
    if outcome.deleted {
        tracing::info!(agent = %outcome.agent_id, project = %access.project.slug,
            workers = outcome.workers.len(), lost = outcome.lost_tasks, "stale agent removed");
    }
    Ok(Json(StaleCleanupReply {
        agent_id: body.agent_id.to_string(),
        inactive_hours: body.inactive_hours,
        dry_run: body.dry_run,
        archive_before_delete: body.archive_before_delete,
        results: CleanupResults { agent: outcome },
    }))
}

/// How the stale rule is applied.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Hours without activity before removal is allowed.
    pub inactive_hours: i64,
    /// Report only.
    pub dry_run: bool,
    /// Archive the agent's last state in the outcome and the audit row.
    pub archive_first: bool,
}

/// Applies the stale rule to one agent in the caller's transaction (the API for one agent, a
/// stale-cleanup schedule for each agent of a project). `connected`: the agent has a session
/// with this brain, so it is never stale.
pub fn clean_up_agent(
    conn: &mut crate::store::AnyConnection,
    ctx: &audit::AuditContext,
    project_id: &str,
    id: &str,
    connected: bool,
    rule: Rule,
) -> crate::store::StoreResult<AgentCleanup> {
    let Rule {
        inactive_hours: hours,
        dry_run,
        archive_first,
    } = rule;
    let agent = agents::find(conn, project_id, id)?;
    let workers = runtime::workers_with_updates(conn, id)?;
    let now = now_ms();
    let last = runtime::last_activity(&agent, &workers);
    let eligible = last.saturating_add(hours * 3_600_000);
    let names: Vec<String> = workers.iter().map(|(w, _)| w.name.clone()).collect();
    let reason = if connected {
        "connected"
    } else if agent.preserve {
        "preserved"
    } else if now < eligible {
        "not_stale"
    } else if dry_run {
        "dry_run"
    } else {
        "deleted"
    };
    let archive = serde_json::json!({
        "agent": {
            "id": agent.id,
            "name": agent.name,
            "hostname": agent.hostname,
            "enrolled_at": agent.enrolled_at.map(timestamp),
            "last_seen_at": agent.last_seen_at.map(timestamp),
            "public_key": agent.public_key,
            "dropped_events": agent.dropped_events,
        },
        "workers": workers.iter().map(|(w, updated)| serde_json::json!({
            "name": w.name,
            "online": w.online,
            "last_heartbeat_at": w.last_heartbeat_at.map(timestamp),
            "pool": w.pool,
            "concurrency": w.concurrency,
            "queues": w.queues.as_deref().and_then(|q| serde_json::from_str::<Value>(q).ok()),
            "updated_at": timestamp(*updated),
        })).collect::<Vec<_>>(),
    });
    let lost = match reason {
        "deleted" => {
            let lost = runtime::remove_agent(conn, project_id, id, &names, now)?;
            audit::append(
                conn,
                ctx,
                &audit::project_chain(project_id),
                "agent.stale_removed",
                None,
                serde_json::json!({
                    "agent": {"id": agent.id, "name": agent.name},
                    "inactive_hours": hours,
                    "last_updated_at": timestamp(last),
                    "workers": names,
                    "lost_tasks": lost,
                    "archive": archive_first.then(|| archive.clone()),
                }),
            )?;
            lost
        }
        "dry_run" => runtime::started_on(conn, project_id, id, &names)?,
        _ => 0,
    };
    Ok(AgentCleanup {
        agent_id: id.to_owned(),
        deleted: reason == "deleted",
        skipped: !matches!(reason, "deleted" | "dry_run"),
        reason: reason.to_owned(),
        workers: names,
        lost_tasks: lost,
        last_updated_at: timestamp(last),
        eligible_after: timestamp(eligible),
        archive: (archive_first && matches!(reason, "deleted" | "dry_run")).then_some(archive),
    })
}

//! Stale runtime cleanup (`../shared/spec/stale-runtime-cleanup.txt` as mapped in the spec
//! README): an admin removes one agent that has been inactive for `inactive_hours`, with its
//! workers, never its task records or command log; what was removed is archived in the
//! response and the audit log first.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::ApiJson;
use super::tags;
use crate::agents::stale::{self, AgentCleanup, MAX_INACTIVE_HOURS, Rule};
use crate::app::AppState;
use crate::auth::{Admin, ProjectAccess};
use crate::error::{ApiError, ErrorBody};

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
    let ctx = state.audit_as(access.caller.actor());
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
            stale::clean_up_agent(
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
        .await?;
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

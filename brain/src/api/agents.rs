//! `/api/v1/projects/{slug}/agents`: the agents registered in a project. Admins create them
//! (receiving a one-time enrollment token) and delete them; viewers list them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath};
use super::{tags, timestamp};
use crate::agents::registry;
use crate::app::AppState;
use crate::auth::{Admin, ProjectAccess, Viewer};
use crate::error::{ApiError, ErrorBody};
use crate::hub::Hub;
use crate::names::AgentName;
use crate::store::StoreError;
use crate::store::agents::{self, Agent};
use crate::store::tasks::{self, WorkerRow};

/// An agent as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentPublic {
    /// Stable id; commands name it as their audience.
    pub id: String,
    /// Name, unique in the project.
    pub name: String,
    /// Whether the agent has spent its enrollment token.
    pub enrolled: bool,
    /// Until when the enrollment token can be spent, while unenrolled.
    pub enrollment_expires_at: Option<DateTime<Utc>>,
    /// Preserved agents are never removed by stale cleanup.
    pub preserve: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last contact.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Connected to this brain now.
    pub online: bool,
    /// `online`, `degraded` (connected, but its broker is unreachable: see `broker`) or
    /// `offline`.
    pub status: &'static str,
    /// The engine's broker as the connected agent last reported it; absent while offline or
    /// before its first report.
    pub broker: Option<BrokerPublic>,
    /// Host the agent enrolled from.
    pub hostname: Option<String>,
    /// Id of the agent's own signing key (results are verified with it).
    pub public_key_id: Option<String>,
    /// Events the agent reports it dropped (cumulative).
    pub dropped_events: i64,
    /// Updates from the agent that the brain refused to store (cumulative): numbers that
    /// cannot be true, or a value the store rejects even alone.
    pub rejected_events: i64,
    /// Which update was refused last and why (never its field values).
    pub last_rejection: Option<String>,
    /// The workers this agent reports.
    pub workers: Vec<WorkerPublic>,
}

/// Whether an agent reaches its broker, as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrokerPublic {
    /// The broker answered the agent's last check.
    pub up: bool,
    /// Why it did not, while down (the broker client's error, without the password).
    pub error: Option<String>,
    /// Since when it has been up or down (the agent's clock).
    pub since: DateTime<Utc>,
}

/// A worker as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerPublic {
    /// Engine-native name, e.g. `celery@host-1`.
    pub name: String,
    /// `online` or `offline` as the agent last saw it; `unknown` while the agent is not
    /// connected (nobody watches the worker then).
    pub status: &'static str,
    /// Last heartbeat or event.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Pool kind (`prefork`, `solo`, ...).
    pub pool: Option<String>,
    /// Pool size.
    pub concurrency: Option<i32>,
    /// Queues consumed.
    pub queues: Vec<String>,
}

impl WorkerPublic {
    /// Shows a worker of an agent that is (or is not) connected now.
    pub fn new(w: WorkerRow, agent_linked: bool) -> WorkerPublic {
        WorkerPublic {
            status: w.status(agent_linked).as_str(),
            last_heartbeat_at: w.last_heartbeat_at.map(timestamp),
            queues: w
                .queues
                .as_deref()
                .and_then(|q| serde_json::from_str(q).ok())
                .unwrap_or_default(),
            name: w.name,
            pool: w.pool,
            concurrency: w.concurrency,
        }
    }
}

impl AgentPublic {
    /// Shows an agent; whether it is connected and its broker's state come from the hub.
    pub fn new(a: Agent, hub: &Hub, workers: Vec<WorkerPublic>) -> AgentPublic {
        let online = hub.is_online(&a.id);
        let broker = online.then(|| hub.broker(&a.id)).flatten();
        let status = match &broker {
            _ if !online => "offline",
            Some(b) if !b.up => "degraded",
            _ => "online",
        };
        AgentPublic {
            workers,
            online,
            status,
            broker: broker.map(|b| BrokerPublic {
                up: b.up,
                error: b.error,
                since: timestamp(b.since_ms),
            }),
            dropped_events: a.dropped_events,
            rejected_events: a.rejected_events,
            last_rejection: a.last_rejection.clone(),
            hostname: a.hostname.clone(),
            public_key_id: a
                .public_key
                .as_deref()
                .and_then(|k| taskward_shared::crypto::parse_public_key(k).ok())
                .map(|k| taskward_shared::crypto::key_id(&k)),
            id: a.id,
            name: a.name,
            enrolled: a.enrolled_at.is_some(),
            enrollment_expires_at: a.enrollment_expires_at.map(timestamp),
            preserve: a.preserve,
            created_at: timestamp(a.created_at),
            last_seen_at: a.last_seen_at.map(timestamp),
        }
    }
}

/// Agents of a project.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    /// By name.
    pub items: Vec<AgentPublic>,
}

/// Body of `POST .../agents`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// Name, `^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$` (a host name fits).
    pub name: AgentName,
    /// Never remove this agent in stale cleanup.
    #[serde(default)]
    pub preserve: bool,
}

/// A registered agent with its enrollment token, shown only in this response.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedAgent {
    /// The agent.
    pub agent: AgentPublic,
    /// Pass to `taskward-agent run --enroll` (or `taskward-agent enroll --token`); valid once,
    /// for 24 hours.
    pub enrollment_token: String,
}

/// Lists a project's agents.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/agents", tag = tags::AGENTS,
    params(("slug" = String, Path, description = "Project slug")),
    responses((status = 200, body = AgentList), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    access: ProjectAccess<Viewer>,
) -> Result<Json<AgentList>, ApiError> {
    let project_id = access.project.id;
    let (items, workers) = state
        .store
        .read("list_agents", move |conn| {
            Ok((
                agents::list(conn, &project_id)?,
                tasks::workers_of_project(conn, &project_id)?,
            ))
        })
        .await?;
    let mut by_agent: std::collections::HashMap<String, Vec<WorkerPublic>> =
        std::collections::HashMap::new();
    for worker in workers {
        let linked = state.hub.is_online(&worker.agent_id);
        by_agent
            .entry(worker.agent_id.clone())
            .or_default()
            .push(WorkerPublic::new(worker, linked));
    }
    Ok(Json(AgentList {
        items: items
            .into_iter()
            .map(|a| {
                let workers = by_agent.remove(&a.id).unwrap_or_default();
                AgentPublic::new(a, &state.hub, workers)
            })
            .collect(),
    }))
}

/// Registers an agent (admin) and returns its one-time enrollment token.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/agents", tag = tags::AGENTS, request_body = CreateAgent,
    params(("slug" = String, Path, description = "Project slug")),
    responses((status = 201, body = CreatedAgent), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    ApiJson(body): ApiJson<CreateAgent>,
) -> Result<(StatusCode, Json<CreatedAgent>), ApiError> {
    let project_id = access.project.id.clone();
    let ctx = state.audit_as(access.caller.actor());
    let (agent, secret) = state
        .store
        .write("create_agent", move |conn| {
            registry::register(conn, &ctx, &project_id, &body.name, body.preserve)
        })
        .await?;
    tracing::info!(agent = %agent.name, project = %access.project.slug, "agent registered");
    Ok((
        StatusCode::CREATED,
        Json(CreatedAgent {
            agent: AgentPublic::new(agent, &state.hub, Vec::new()),
            enrollment_token: secret.expose().to_owned(),
        }),
    ))
}

/// Reads one agent.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/agents/{agent_id}", tag = tags::AGENTS,
    params(("slug" = String, Path, description = "Project slug"), ("agent_id" = String, Path, description = "Agent id")),
    responses((status = 200, body = AgentPublic), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    access: ProjectAccess<Viewer>,
    ApiPath((_slug, agent_id)): ApiPath<(String, Uuid)>,
) -> Result<Json<AgentPublic>, ApiError> {
    let project_id = access.project.id;
    let agent = state
        .store
        .read("get_agent", move |conn| {
            agents::find(conn, &project_id, &agent_id.to_string())
        })
        .await
        .map_err(|e| agent_error(e, agent_id))?;
    let online = state.hub.is_online(&agent.id);
    let (project_id, agent_id) = (agent.project_id.clone(), agent.id.clone());
    let workers = state
        .store
        .read("agent_workers", move |conn| {
            tasks::workers_of_project(conn, &project_id)
        })
        .await?
        .into_iter()
        .filter(|w| w.agent_id == agent_id)
        .map(|w| WorkerPublic::new(w, online))
        .collect();
    Ok(Json(AgentPublic::new(agent, &state.hub, workers)))
}

/// Deletes an agent (admin). Its tasks stay; it can no longer connect.
#[utoipa::path(delete, path = "/api/v1/projects/{slug}/agents/{agent_id}", tag = tags::AGENTS,
    params(("slug" = String, Path, description = "Project slug"), ("agent_id" = String, Path, description = "Agent id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    ApiPath((_slug, agent_id)): ApiPath<(String, Uuid)>,
) -> Result<StatusCode, ApiError> {
    let project_id = access.project.id.clone();
    let ctx = state.audit_as(access.caller.actor());
    let agent = state
        .store
        .write("delete_agent", move |conn| {
            registry::delete(conn, &ctx, &project_id, &agent_id.to_string())
        })
        .await?;
    tracing::info!(agent = %agent.name, project = %access.project.slug, "agent deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn agent_error(err: StoreError, agent_id: Uuid) -> ApiError {
    match err {
        StoreError::NotFound => ApiError::NotFound(format!("agent {agent_id}")),
        other => other.into(),
    }
}

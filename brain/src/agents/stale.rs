//! Stale runtime cleanup as a domain action (`../shared/spec/stale-runtime-cleanup.txt` as
//! mapped in the spec README): an agent inactive for `inactive_hours` is removed with its
//! workers — never its task records or command log; tasks started on its workers become
//! `lost` — and an `agent.stale_removed` row archives what was removed, in one transaction.
//! The API applies it to one agent, a stale-cleanup schedule to every agent of a project.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::clock::{now_ms, timestamp};
use crate::refusal::{Refusal, or_not_found};
use crate::store::audit::{self, AuditContext};
use crate::store::{AnyConnection, agents, runtime};

/// Longest inactivity window accepted: a year.
pub const MAX_INACTIVE_HOURS: i64 = 8760;

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
    #[schema(value_type = Option<Object>)]
    pub archive: Option<Value>,
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
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    project_id: &str,
    id: &str,
    connected: bool,
    rule: Rule,
) -> Result<AgentCleanup, Refusal> {
    let Rule {
        inactive_hours: hours,
        dry_run,
        archive_first,
    } = rule;
    let agent = or_not_found(agents::find(conn, project_id, id), || format!("agent {id}"))?;
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

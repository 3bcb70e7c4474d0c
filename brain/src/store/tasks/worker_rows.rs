//! Workers as agents report them.

use diesel::prelude::*;

use super::super::schema::workers;
use super::super::{AnyConnection, StoreResult};

/// A worker as reported.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = workers)]
pub struct WorkerRow {
    /// The agent that reports it.
    pub agent_id: String,
    /// Engine-native name.
    pub name: String,
    /// Online after its last event.
    pub online: bool,
    /// Last heartbeat or event, ms.
    pub last_heartbeat_at: Option<i64>,
    /// Pool kind.
    pub pool: Option<String>,
    /// Pool size.
    pub concurrency: Option<i32>,
    /// Queues consumed, JSON array.
    pub queues: Option<String>,
}

/// What can be said of a worker's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerStatus {
    /// Its agent is linked and last saw it alive.
    Online,
    /// Its agent is linked and saw it go (or stop sending heartbeats).
    Offline,
    /// Its agent is not linked: nobody watches the worker, whatever it was last seen as.
    Unknown,
}

impl WorkerStatus {
    /// The API and dashboard spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Online => "online",
            WorkerStatus::Offline => "offline",
            WorkerStatus::Unknown => "unknown",
        }
    }
}

impl WorkerRow {
    /// The worker's liveness, given whether its agent is linked now: a row says what the agent
    /// saw last, which stops being news when the agent goes away.
    pub fn status(&self, agent_linked: bool) -> WorkerStatus {
        match (agent_linked, self.online) {
            (false, _) => WorkerStatus::Unknown,
            (true, true) => WorkerStatus::Online,
            (true, false) => WorkerStatus::Offline,
        }
    }
}

/// Workers of a project's agents, by agent and name.
pub fn workers_of_project(
    conn: &mut AnyConnection,
    project_id: &str,
) -> StoreResult<Vec<WorkerRow>> {
    Ok(workers::table
        .filter(workers::project_id.eq(project_id))
        .order((workers::agent_id.asc(), workers::name.asc()))
        .select(WorkerRow::as_select())
        .load(conn)?)
}

/// The workers a health check pings, as `(agent_id, name)`: every worker online, and every
/// worker that went offline at or after `offline_since` (ms, the brain's clock), so a worker
/// that vanished between two checks is reported by the next one, once.
pub fn workers_to_ping(
    conn: &mut AnyConnection,
    project_id: &str,
    offline_since: i64,
) -> StoreResult<Vec<(String, String)>> {
    Ok(workers::table
        .filter(workers::project_id.eq(project_id))
        .filter(
            workers::online
                .eq(true)
                .or(workers::updated_at.ge(offline_since)),
        )
        .order((workers::agent_id.asc(), workers::name.asc()))
        .select((workers::agent_id, workers::name))
        .load(conn)?)
}

/// An agent's workers by name, with whether each is online.
pub fn workers_of_agent(
    conn: &mut AnyConnection,
    agent_id: &str,
) -> StoreResult<Vec<(String, bool)>> {
    Ok(workers::table
        .filter(workers::agent_id.eq(agent_id))
        .order(workers::name.asc())
        .select((workers::name, workers::online))
        .load(conn)?)
}

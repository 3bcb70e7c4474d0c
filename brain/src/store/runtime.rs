//! Stale runtime cleanup: removing an agent (and the workers it reported) that has been
//! silent too long. Task records and the command log are never touched, except that tasks
//! still `started` on a removed worker become `lost`: nothing will ever finish them.

use diesel::prelude::*;
use taskward_shared::events::TaskState;

use super::agents::{self, Agent};
use super::schema::{tasks, workers};
use super::tasks::{StateOrder, WorkerRow};
use super::{AnyConnection, StoreResult};

/// An agent's last sign of activity: its last contact, enrollment or creation, or the latest
/// update of one of its workers, whichever is newest.
pub fn last_activity(agent: &Agent, workers: &[(WorkerRow, i64)]) -> i64 {
    [
        agent.last_seen_at,
        agent.enrolled_at,
        Some(agent.created_at),
        workers.iter().map(|(_, updated)| *updated).max(),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(agent.created_at)
}

/// An agent's workers with each one's last update, ms.
pub fn workers_with_updates(
    conn: &mut AnyConnection,
    agent_id: &str,
) -> StoreResult<Vec<(WorkerRow, i64)>> {
    Ok(workers::table
        .filter(workers::agent_id.eq(agent_id))
        .order(workers::name.asc())
        .select((WorkerRow::as_select(), workers::updated_at))
        .load(conn)?)
}

/// Removes the agent and its workers; tasks started on those workers become lost. Returns
/// how many tasks were marked lost.
pub fn remove_agent(
    conn: &mut AnyConnection,
    project_id: &str,
    agent_id: &str,
    worker_names: &[String],
    now: i64,
) -> StoreResult<usize> {
    let lost = if worker_names.is_empty() {
        0
    } else {
        diesel::update(
            tasks::table
                .filter(tasks::project_id.eq(project_id))
                .filter(tasks::agent_id.eq(agent_id))
                .filter(tasks::state.eq(TaskState::Started.as_str()))
                .filter(tasks::worker_name.eq_any(worker_names)),
        )
        .set((
            tasks::state.eq(TaskState::Lost.as_str()),
            // Lost in the attempt it was running (the packed form of `StateOrder`).
            tasks::state_rank.eq(tasks::state_rank / StateOrder::STAGES * StateOrder::STAGES
                + TaskState::Lost.rank()),
            tasks::state_at.eq(now),
            tasks::finished_at.eq(now),
            tasks::exception.eq("its worker was removed by stale runtime cleanup"),
            tasks::updated_at.eq(now),
        ))
        .execute(conn)?
    };
    // Workers and queue depths go with the agent (ON DELETE CASCADE).
    agents::delete(conn, project_id, agent_id)?;
    Ok(lost)
}

/// How many tasks are started on these workers of the agent (what a removal would mark lost).
pub fn started_on(
    conn: &mut AnyConnection,
    project_id: &str,
    agent_id: &str,
    worker_names: &[String],
) -> StoreResult<usize> {
    let n: i64 = tasks::table
        .filter(tasks::project_id.eq(project_id))
        .filter(tasks::agent_id.eq(agent_id))
        .filter(tasks::state.eq(TaskState::Started.as_str()))
        .filter(tasks::worker_name.eq_any(worker_names))
        .count()
        .get_result(conn)?;
    Ok(usize::try_from(n).unwrap_or(0))
}

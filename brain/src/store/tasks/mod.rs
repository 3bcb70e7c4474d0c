//! Tasks and workers as agents report them: batches of normalized updates merged into rows.
//!
//! Merging is idempotent and order-insensitive: a task's `state` moves only to an event with a
//! later `(attempt, time, stage)` than the one that set it (a retry's outcome wins over the
//! `retried` of the run before it even when that arrives last with a later clock; see
//! [`StateOrder`]); `received_at` keeps the earliest receipt;
//! other fields take the values events carry. Replaying a batch therefore changes nothing,
//! and an older update arriving late never overwrites a newer state.

//!
//! - here: the task row and what reads a few of them (find, tree, counts, bulk-retry matches);
//! - [`ingest`]: merging update batches into rows;
//! - [`worker_rows`]: workers as agents report them;
//! - [`page`]: list pages in the grammar's order, search through the term index, positions;
//! - [`delete`]: deleting task records (all-or-nothing ids, or what a filter matches).

mod delete;
mod ingest;
mod page;
mod worker_rows;

pub use delete::{IN_FLIGHT, IdsDelete, delete_ids, delete_matching};
pub use ingest::{apply_updates, merge, record_dropped};
pub use page::{SEARCH_BRANCHES, SearchTerms, Selection, page, page_query, position, search_terms};
pub use worker_rows::{
    WorkerRow, WorkerStatus, workers_of_agent, workers_of_project, workers_to_ping,
};

use diesel::prelude::*;
use taskward_shared::events::TaskState;

use super::schema::{task_retries, tasks};
use super::{AnyConnection, StoreResult};

/// Where a task's state stands in the order states replace each other: by attempt (Celery's
/// `retries`), then time, then stage ([`TaskState::rank`]). The attempt and the stage are
/// stored together in `state_rank` as `attempt × 8 + rank`, so no column was added and rows
/// from before attempts were recorded read as attempt 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StateOrder {
    /// The run the state belongs to: 0, then 1, 2… on retries.
    pub attempt: i32,
    /// The event's time, ms.
    pub at_ms: i64,
    /// The stage.
    pub rank: i32,
}

impl StateOrder {
    /// Stages per attempt in the packed form (ranks are 0 to 4).
    pub const STAGES: i32 = 8;
    /// Attempts beyond this compare as equal (and order by time); no task retries that often.
    const ATTEMPT_MAX: i32 = i32::MAX / StateOrder::STAGES - 1;

    /// The order of a row's current state.
    pub fn of_row(state_rank: i32, state_at: i64) -> StateOrder {
        StateOrder {
            attempt: state_rank.div_euclid(StateOrder::STAGES),
            at_ms: state_at,
            rank: state_rank.rem_euclid(StateOrder::STAGES),
        }
    }

    /// The order of an event's state; an event that names no attempt is of `current`.
    pub fn of_event(
        attempt: Option<i32>,
        current: i32,
        at_ms: i64,
        state: TaskState,
    ) -> StateOrder {
        StateOrder {
            attempt: attempt.unwrap_or(current).clamp(0, StateOrder::ATTEMPT_MAX),
            at_ms,
            rank: state.rank(),
        }
    }

    /// The packed form stored in `state_rank`.
    pub fn packed(self) -> i32 {
        self.attempt * StateOrder::STAGES + self.rank
    }
}
use crate::query::filter::Scalar;
use crate::query::sql::{Sql, dialect_of, load_sql};

/// A task row.
#[derive(
    Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable, AsChangeset,
)]
#[diesel(table_name = tasks, treat_none_as_null = true, treat_none_as_default_value = false)]
pub struct TaskRow {
    /// Row id.
    pub id: String,
    /// Project.
    pub project_id: String,
    /// Agent that reported it.
    pub agent_id: Option<String>,
    /// Engine.
    pub engine: String,
    /// Engine task id.
    pub task_id: String,
    /// Task name.
    pub name: Option<String>,
    /// Queue.
    pub queue: Option<String>,
    /// Current state.
    pub state: String,
    /// Attempt and stage of the event that set `state`, packed ([`StateOrder`]).
    pub state_rank: i32,
    /// Time of the event that set `state`, ms.
    pub state_at: i64,
    /// Priority label.
    pub priority: Option<String>,
    /// Args JSON (redacted on the host).
    pub args: Option<String>,
    /// Kwargs JSON (redacted on the host).
    pub kwargs: Option<String>,
    /// Result text.
    pub result: Option<String>,
    /// Exception text.
    pub exception: Option<String>,
    /// Traceback.
    pub traceback: Option<String>,
    /// Retries.
    pub retry_count: i32,
    /// ETA, ms.
    pub eta: Option<i64>,
    /// First receipt, ms.
    pub received_at: Option<i64>,
    /// Start, ms.
    pub started_at: Option<i64>,
    /// End, ms.
    pub finished_at: Option<i64>,
    /// Runtime, ms.
    pub runtime_ms: Option<i64>,
    /// Worker.
    pub worker_name: Option<String>,
    /// Parent task id.
    pub parent_task_id: Option<String>,
    /// Root task id.
    pub root_task_id: Option<String>,
    /// First seen by the brain, ms.
    pub created_at: i64,
    /// Last changed, ms.
    pub updated_at: i64,
    /// Why the task cannot be retried (its real arguments are unavailable), if so.
    pub args_unavailable: Option<String>,
    /// Fields whose value was cut to its size cap, comma-separated (see
    /// `taskward_shared::events::storable`).
    pub truncated: Option<String>,
}

impl TaskRow {
    /// The names of the fields whose stored value was cut.
    pub fn truncated_fields(&self) -> Vec<String> {
        self.truncated
            .as_deref()
            .map(|t| {
                t.split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Bytes of the row's text fields: what a page of it costs to send, roughly.
    pub fn text_bytes(&self) -> usize {
        [
            &self.args,
            &self.kwargs,
            &self.result,
            &self.exception,
            &self.traceback,
            &self.args_unavailable,
        ]
        .iter()
        .map(|f| f.as_ref().map_or(0, String::len))
        .sum::<usize>()
            + 512
    }
}

/// Tasks per state in a project (overview counts; also what ingest tests check).
pub fn count_by_state(
    conn: &mut AnyConnection,
    project_id: &str,
) -> StoreResult<Vec<(String, i64)>> {
    Ok(tasks::table
        .filter(tasks::project_id.eq(project_id))
        .group_by(tasks::state)
        .select((tasks::state, diesel::dsl::count_star()))
        .order(tasks::state.asc())
        .load(conn)?)
}

/// Tasks received since `since_ms`, counted per hour and state: `(hour start ms, state,
/// count)`. Walks the received-time index over that window only, so its cost follows the
/// window's volume, not the project's size.
pub fn activity(
    conn: &mut AnyConnection,
    project_id: &str,
    since_ms: i64,
) -> StoreResult<Vec<(i64, String, i64)>> {
    #[derive(QueryableByName)]
    struct Bucket {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        hour: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        state: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut sql = Sql::new(dialect_of(conn));
    sql.push("SELECT (t.received_at / 3600000) * 3600000 AS hour, t.state, COUNT(*) AS n FROM tasks t WHERE t.project_id = ")
        .bind(Scalar::Text(project_id.to_owned()))
        .push(" AND t.received_at >= ")
        .bind(Scalar::Int(since_ms))
        .push(" GROUP BY 1, 2 ORDER BY 1, 2");
    let rows: Vec<Bucket> = load_sql!(conn, sql, Bucket)?;
    Ok(rows.into_iter().map(|b| (b.hour, b.state, b.n)).collect())
}

/// The tasks a bulk-retry filter takes, as a query to load or count: finished (not in
/// flight), matching each field the filter gives, and not already run again by an earlier
/// retry unless the filter asks for those too.
fn bulk_retry_candidates<'a>(
    project_id: &'a str,
    filter: &'a taskward_shared::command::BulkRetryFilter,
) -> tasks::BoxedQuery<'a, super::connection::MultiBackend> {
    let mut query = tasks::table
        .filter(tasks::project_id.eq(project_id))
        .filter(tasks::state.ne_all([TaskState::Received.as_str(), TaskState::Started.as_str()]))
        .into_boxed();
    if let Some(state) = &filter.state {
        query = query.filter(tasks::state.eq(state.clone()));
    }
    if let Some(queue) = &filter.queue {
        query = query.filter(tasks::queue.eq(queue.clone()));
    }
    if let Some(name) = &filter.name {
        query = query.filter(tasks::name.eq(name.clone()));
    }
    if !filter.include_retried {
        query = query.filter(diesel::dsl::not(diesel::dsl::exists(
            task_retries::table.filter(task_retries::task_row_id.eq(tasks::id)),
        )));
    }
    query
}

/// Up to `limit` tasks a bulk retry with this filter takes, most recent state first.
pub fn matching(
    conn: &mut AnyConnection,
    project_id: &str,
    filter: &taskward_shared::command::BulkRetryFilter,
    limit: i64,
) -> StoreResult<Vec<TaskRow>> {
    Ok(bulk_retry_candidates(project_id, filter)
        .order((tasks::state_at.desc(), tasks::id.desc()))
        .limit(limit)
        .select(TaskRow::as_select())
        .load(conn)?)
}

/// How many tasks a bulk retry with this filter could take, whatever its `max`.
pub fn count_matching(
    conn: &mut AnyConnection,
    project_id: &str,
    filter: &taskward_shared::command::BulkRetryFilter,
) -> StoreResult<i64> {
    Ok(bulk_retry_candidates(project_id, filter)
        .count()
        .get_result(conn)?)
}

/// Records that `command_id` runs these task rows again, so later bulk retries skip them
/// (a row retried before now names the newer command).
pub fn mark_retried(
    conn: &mut AnyConnection,
    row_ids: &[String],
    command_id: &str,
    now_ms: i64,
) -> StoreResult<()> {
    for chunk in row_ids.chunks(500) {
        diesel::delete(task_retries::table.filter(task_retries::task_row_id.eq_any(chunk)))
            .execute(conn)?;
    }
    // One row per statement: the multi-backend connection has no batch insert, and a bulk
    // retry takes at most 10,000 tasks.
    for id in row_ids {
        diesel::insert_into(task_retries::table)
            .values((
                task_retries::task_row_id.eq(id),
                task_retries::command_id.eq(command_id),
                task_retries::retried_at.eq(now_ms),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// One task by engine id.
pub fn find(
    conn: &mut AnyConnection,
    project_id: &str,
    engine: &str,
    task_id: &str,
) -> StoreResult<TaskRow> {
    Ok(tasks::table
        .filter(tasks::project_id.eq(project_id))
        .filter(tasks::engine.eq(engine))
        .filter(tasks::task_id.eq(task_id))
        .select(TaskRow::as_select())
        .first(conn)?)
}

/// Whether a project other than `project_id` recorded this task (the unique index leads with
/// `task_id`, so this is one index probe).
pub fn recorded_elsewhere(
    conn: &mut AnyConnection,
    project_id: &str,
    engine: &str,
    task_id: &str,
) -> StoreResult<bool> {
    let found: Option<String> = tasks::table
        .filter(tasks::task_id.eq(task_id))
        .filter(tasks::engine.eq(engine))
        .filter(tasks::project_id.ne(project_id))
        .select(tasks::id)
        .first(conn)
        .optional()?;
    Ok(found.is_some())
}

/// The most tasks a tree returns.
pub const TREE_CAP: i64 = 500;

/// Every task sharing `root` (the root itself included), oldest first, up to `cap`.
pub fn tree(
    conn: &mut AnyConnection,
    project_id: &str,
    engine: &str,
    root: &str,
    cap: i64,
) -> StoreResult<Vec<TaskRow>> {
    Ok(tasks::table
        .filter(tasks::project_id.eq(project_id))
        .filter(tasks::engine.eq(engine))
        // The tree index leaves out self-rooted tasks (`root_task_id <> task_id`); the root
        // itself comes through its task id.
        .filter(
            tasks::root_task_id
                .eq(root)
                .and(tasks::root_task_id.ne(tasks::task_id.nullable()))
                .or(tasks::task_id.eq(root)),
        )
        .order((tasks::received_at.asc(), tasks::id.asc()))
        .limit(cap)
        .select(TaskRow::as_select())
        .load(conn)?)
}

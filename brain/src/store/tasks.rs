//! Tasks and workers as agents report them: batches of normalized updates merged into rows.
//!
//! Merging is idempotent and order-insensitive: a task's `state` moves only to an event with a
//! later `(time, stage)` than the one that set it; `received_at` keeps the earliest receipt;
//! other fields take the values events carry. Replaying a batch therefore changes nothing,
//! and an older update arriving late never overwrites a newer state.

use std::collections::HashMap;

use diesel::prelude::*;
use taskward_shared::events::{TaskState, TaskUpdate, Update, WorkerUpdate};

use super::schema::{agents, task_terms, tasks, workers};
use super::{AnyConnection, StoreResult, commands};
use crate::query::filter::{Filter, Scalar};
use crate::query::order::SortKey;
use crate::query::sql::{Count, Dialect, Sql, dialect_of, execute_sql, load_sql};

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
    /// Stage of the event that set `state`.
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
}

/// The columns an update changed, and only those: an `UPDATE` that sets a column makes the
/// database rewrite every index over it even when the value is the same, so setting the whole
/// row on each event (seven indexes on SQLite) cost most of the ingest time. `None` leaves a
/// column as it is; merging never clears a column, so "set to NULL" is never needed.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = tasks)]
struct TaskChanges {
    agent_id: Option<String>,
    name: Option<String>,
    queue: Option<String>,
    state: Option<String>,
    state_rank: Option<i32>,
    state_at: Option<i64>,
    priority: Option<String>,
    args: Option<String>,
    kwargs: Option<String>,
    result: Option<String>,
    exception: Option<String>,
    traceback: Option<String>,
    retry_count: Option<i32>,
    eta: Option<i64>,
    received_at: Option<i64>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    runtime_ms: Option<i64>,
    worker_name: Option<String>,
    parent_task_id: Option<String>,
    root_task_id: Option<String>,
    updated_at: Option<i64>,
    args_unavailable: Option<String>,
}

impl TaskChanges {
    fn between(before: &TaskRow, after: &TaskRow) -> TaskChanges {
        macro_rules! changed {
            (required: $($r:ident),*; nullable: $($n:ident),*) => {
                TaskChanges {
                    $($r: (before.$r != after.$r).then(|| after.$r.clone()),)*
                    $($n: (before.$n != after.$n).then(|| after.$n.clone()).flatten(),)*
                }
            };
        }
        changed!(
            required: state, state_rank, state_at, retry_count, updated_at;
            nullable: agent_id, name, queue, priority, args, kwargs, result, exception, traceback,
                eta, received_at, started_at, finished_at, runtime_ms, worker_name,
                parent_task_id, root_task_id, args_unavailable
        )
    }
}

/// Rows looked up per query while ingesting (bounded bind parameters).
const LOOKUP_CHUNK: usize = 500;

/// Rows per multi-row insert: 28 columns × 500 rows stays under SQLite's and PostgreSQL's
/// bind-parameter limits.
const INSERT_CHUNK: usize = 500;

/// Applies a batch of updates from one agent. Runs inside the caller's transaction.
pub fn apply_updates(
    conn: &mut AnyConnection,
    project_id: &str,
    agent_id: &str,
    updates: &[Update],
    now: i64,
) -> StoreResult<()> {
    // What live dashboard pages watch: one more stored batch from this agent.
    diesel::update(agents::table.find(agent_id))
        .set(agents::events_seq.eq(agents::events_seq + 1))
        .execute(conn)?;
    let mut task_updates: Vec<&TaskUpdate> = Vec::new();
    for update in updates {
        match update {
            Update::Task(t) => task_updates.push(t.as_ref()),
            Update::Worker(w) => apply_worker(conn, project_id, agent_id, w, now)?,
            Update::QueueDepth {
                queue,
                depth,
                at_ms,
            } => {
                commands::report_queue_depth(conn, agent_id, queue, *depth, *at_ms)?;
            }
        }
    }
    if task_updates.is_empty() {
        return Ok(());
    }
    // Load the rows these updates touch, by engine, in chunks.
    let mut rows: HashMap<(String, String), (TaskRow, Option<TaskRow>)> = HashMap::new();
    let mut by_engine: HashMap<&str, Vec<&str>> = HashMap::new();
    for t in &task_updates {
        by_engine
            .entry(t.engine.as_str())
            .or_default()
            .push(t.task_id.as_str());
    }
    for (engine, ids) in by_engine {
        let mut ids = ids;
        ids.sort_unstable();
        ids.dedup();
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            let found: Vec<TaskRow> = tasks::table
                .filter(tasks::project_id.eq(project_id))
                .filter(tasks::engine.eq(engine))
                .filter(tasks::task_id.eq_any(chunk))
                .select(TaskRow::as_select())
                .load(conn)?;
            for row in found {
                rows.insert(
                    (row.engine.clone(), row.task_id.clone()),
                    (row.clone(), Some(row)),
                );
            }
        }
    }
    for t in &task_updates {
        let key = (t.engine.clone(), t.task_id.clone());
        let (row, _) = rows
            .entry(key)
            .or_insert_with(|| (new_row(project_id, agent_id, t, now), None));
        merge(row, t);
    }
    let mut inserts = Vec::new();
    for (mut row, before) in rows.into_values() {
        match before {
            None => {
                row.updated_at = now;
                inserts.push(row);
            }
            Some(before) if before != row => {
                row.updated_at = now;
                diesel::update(tasks::table.find(row.id.clone()))
                    .set(&TaskChanges::between(&before, &row))
                    .execute(conn)?;
            }
            Some(_) => {}
        }
    }
    insert_rows(conn, &inserts)?;
    note_terms(conn, project_id, &task_updates)
}

/// Records the names, queues and workers a batch mentions in `task_terms`, what search looks
/// through (a handful of distinct values per batch; known ones are ignored).
fn note_terms(
    conn: &mut AnyConnection,
    project_id: &str,
    updates: &[&TaskUpdate],
) -> StoreResult<()> {
    let mut terms = std::collections::BTreeSet::new();
    for t in updates {
        for (field, value) in [
            ("name", &t.name),
            ("queue", &t.queue),
            ("worker", &t.worker),
        ] {
            if let Some(value) = value {
                terms.insert((field, value.as_str()));
            }
        }
    }
    let rows: Vec<_> = terms
        .into_iter()
        .map(|(field, value)| {
            (
                task_terms::project_id.eq(project_id),
                task_terms::field.eq(field),
                task_terms::value.eq(value),
            )
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    match conn {
        AnyConnection::Postgresql(c) => {
            diesel::insert_into(task_terms::table)
                .values(&rows)
                .on_conflict_do_nothing()
                .execute(c)?;
        }
        AnyConnection::Sqlite(c) => {
            diesel::insert_or_ignore_into(task_terms::table)
                .values(&rows)
                .execute(c)?;
        }
    }
    Ok(())
}

/// New tasks go in multi-row inserts: one round trip per chunk instead of per task. Diesel's
/// multi-backend connection has no batch insert, so this is one of the few places that matches
/// on the backend (same statement on both).
fn insert_rows(conn: &mut AnyConnection, rows: &[TaskRow]) -> StoreResult<()> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        match conn {
            AnyConnection::Postgresql(c) => {
                diesel::insert_into(tasks::table).values(chunk).execute(c)?;
            }
            // One prepared statement, cached by the connection and run per row: a multi-row
            // insert is prepared anew for each chunk (its text depends on the row count), and
            // preparing 500 rows of bind parameters cost more than running them on SQLite.
            AnyConnection::Sqlite(c) => {
                for row in chunk {
                    diesel::insert_into(tasks::table).values(row).execute(c)?;
                }
            }
        }
    }
    Ok(())
}

fn new_row(project_id: &str, agent_id: &str, t: &TaskUpdate, now: i64) -> TaskRow {
    TaskRow {
        // Time-ordered (UUIDv7): new rows go to the end of the primary-key index instead of a
        // random page of it.
        id: uuid::Uuid::now_v7().to_string(),
        project_id: project_id.to_owned(),
        agent_id: Some(agent_id.to_owned()),
        engine: t.engine.clone(),
        task_id: t.task_id.clone(),
        name: None,
        queue: None,
        // A task first seen through a late event starts as received at rank 0, so any real
        // state event wins.
        state: TaskState::Received.as_str().to_owned(),
        state_rank: 0,
        state_at: i64::MIN,
        priority: None,
        args: None,
        kwargs: None,
        result: None,
        exception: None,
        traceback: None,
        retry_count: 0,
        eta: None,
        received_at: None,
        started_at: None,
        finished_at: None,
        runtime_ms: None,
        worker_name: None,
        parent_task_id: None,
        root_task_id: None,
        created_at: now,
        updated_at: now,
        args_unavailable: None,
    }
}

/// Merges one update into a row (pure; see the module doc for the rules).
pub fn merge(row: &mut TaskRow, t: &TaskUpdate) {
    if let Some(state) = t.state {
        if (t.at_ms, state.rank()) > (row.state_at, row.state_rank) {
            row.state = state.as_str().to_owned();
            row.state_rank = state.rank();
            row.state_at = t.at_ms;
        }
        match state {
            TaskState::Received => {
                row.received_at = Some(row.received_at.map_or(t.at_ms, |r| r.min(t.at_ms)));
            }
            TaskState::Started => {
                row.started_at = Some(row.started_at.map_or(t.at_ms, |r| r.max(t.at_ms)));
            }
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::Lost => {
                row.finished_at = Some(row.finished_at.map_or(t.at_ms, |r| r.max(t.at_ms)));
            }
            TaskState::Retried => {}
        }
    }
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
    set(&mut row.name, &t.name);
    set(&mut row.queue, &t.queue);
    set(&mut row.worker_name, &t.worker);
    set(&mut row.priority, &t.priority);
    set(&mut row.args, &json(&t.args));
    set(&mut row.kwargs, &json(&t.kwargs));
    set(&mut row.result, &t.result);
    set(&mut row.exception, &t.exception);
    set(&mut row.traceback, &t.traceback);
    set(&mut row.eta, &t.eta_ms);
    set(&mut row.runtime_ms, &t.runtime_ms);
    set(&mut row.parent_task_id, &t.parent_id);
    set(&mut row.root_task_id, &t.root_id);
    set(&mut row.args_unavailable, &t.args_unavailable);
    if let Some(retries) = t.retries {
        row.retry_count = row.retry_count.max(retries);
    }
}

fn set<T: Clone>(field: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        field.clone_from(value);
    }
}

fn apply_worker(
    conn: &mut AnyConnection,
    project_id: &str,
    agent_id: &str,
    w: &WorkerUpdate,
    now: i64,
) -> StoreResult<()> {
    let queues = w
        .queues
        .as_ref()
        .map(|q| serde_json::to_string(q).expect("queues serialize"));
    let existing: Option<i64> = workers::table
        .find((agent_id, &w.name))
        .select(workers::state_at)
        .first(conn)
        .optional()?;
    match existing {
        None => {
            diesel::insert_into(workers::table)
                .values((
                    workers::project_id.eq(project_id),
                    workers::agent_id.eq(agent_id),
                    workers::name.eq(&w.name),
                    workers::online.eq(w.online),
                    workers::state_at.eq(w.at_ms),
                    workers::last_heartbeat_at.eq(w.at_ms),
                    workers::pool.eq(&w.pool),
                    workers::concurrency.eq(w.concurrency),
                    workers::queues.eq(&queues),
                    workers::updated_at.eq(now),
                ))
                .execute(conn)?;
        }
        Some(at) if w.at_ms >= at => {
            let target = workers::table.find((agent_id, &w.name));
            diesel::update(target)
                .set((
                    workers::online.eq(w.online),
                    workers::state_at.eq(w.at_ms),
                    workers::last_heartbeat_at.eq(w.at_ms),
                    workers::updated_at.eq(now),
                ))
                .execute(conn)?;
            if w.pool.is_some() || w.concurrency.is_some() || queues.is_some() {
                let target = workers::table.find((agent_id, &w.name));
                diesel::update(target)
                    .set((
                        workers::pool.eq(&w.pool),
                        workers::concurrency.eq(w.concurrency),
                        workers::queues.eq(&queues),
                    ))
                    .execute(conn)?;
            }
        }
        Some(_) => {}
    }
    Ok(())
}

/// Records an agent's cumulative dropped-event count (never decreasing).
pub fn record_dropped(
    conn: &mut AnyConnection,
    agent_id: &str,
    dropped_total: u64,
) -> StoreResult<()> {
    diesel::update(
        agents::table
            .find(agent_id)
            .filter(agents::dropped_events.lt(dropped_total as i64)),
    )
    .set(agents::dropped_events.eq(dropped_total as i64))
    .execute(conn)?;
    Ok(())
}

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

/// Up to `limit` tasks of a project matching a bulk-retry filter and not in flight, most
/// recently changed first.
pub fn matching(
    conn: &mut AnyConnection,
    project_id: &str,
    filter: &taskward_shared::command::BulkRetryFilter,
    limit: i64,
) -> StoreResult<Vec<TaskRow>> {
    let mut query = tasks::table
        .filter(tasks::project_id.eq(project_id))
        .filter(tasks::state.ne_all([TaskState::Received.as_str(), TaskState::Started.as_str()]))
        .order((tasks::state_at.desc(), tasks::id.desc()))
        .limit(limit)
        .select(TaskRow::as_select())
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
    Ok(query.load(conn)?)
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

/// The most tasks a tree returns.
pub const TREE_CAP: i64 = 500;

/// What a task list selects, and in which order.
pub struct Selection<'a> {
    /// What rows must match.
    pub filter: &'a Filter,
    /// Text in name, queue or worker (case-insensitive; through the search index).
    pub search: Option<&'a str>,
    /// The full order (with its tiebreak).
    pub order: &'a [SortKey],
}

/// One page of a project's tasks, after `position` (a keyset cursor's values).
pub fn page(
    conn: &mut AnyConnection,
    project_id: &str,
    selection: &Selection,
    position: Option<&[Option<Scalar>]>,
    limit: i64,
) -> StoreResult<Vec<TaskRow>> {
    let terms = match selection.search {
        Some(text) => Some(search_terms(conn, project_id, text)?),
        None => None,
    };
    let sql = page_query(
        dialect_of(conn),
        project_id,
        selection,
        terms.as_ref(),
        position,
        limit,
    );
    let rows: Vec<ByPosition> = load_sql!(conn, sql, ByPosition)?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// The columns of [`TaskRow`] in its field order: what a page selects, so that its rows decode
/// by position ([`ByPosition`]).
const TASK_COLUMNS: &str = "t.id, t.project_id, t.agent_id, t.engine, t.task_id, t.name, \
     t.queue, t.state, t.state_rank, t.state_at, t.priority, t.args, t.kwargs, t.result, \
     t.exception, t.traceback, t.retry_count, t.eta, t.received_at, t.started_at, \
     t.finished_at, t.runtime_ms, t.worker_name, t.parent_task_id, t.root_task_id, \
     t.created_at, t.updated_at, t.args_unavailable";

/// A [`TaskRow`] read from a hand-written statement by column position. Diesel reads such
/// statements by column name, looking each of the 28 names up in the row for every row; at a
/// million rows that lookup was a good share of an export's time.
struct ByPosition(TaskRow);

impl<DB> diesel::deserialize::QueryableByName<DB> for ByPosition
where
    DB: diesel::backend::Backend,
    TaskRow: diesel::deserialize::FromSqlRow<tasks::SqlType, DB>,
{
    fn build<'a>(row: &impl diesel::row::NamedRow<'a, DB>) -> diesel::deserialize::Result<Self> {
        Ok(ByPosition(<TaskRow as diesel::deserialize::FromSqlRow<
            tasks::SqlType,
            DB,
        >>::build_from_row(row)?))
    }
}

/// The most distinct values a search answers with one index range each; past it the list
/// is walked in order and each task tested against the values.
pub const SEARCH_BRANCHES: usize = 32;

/// The names, queues and workers of a project that contain a search text.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchTerms {
    /// Few enough values for one index range per value: `(column, value)`.
    Values(Vec<(&'static str, String)>),
    /// More than [`SEARCH_BRANCHES`] values match: a broad text, whose tasks are dense in
    /// the list, so walking the list in order finds a page quickly.
    Broad(String),
}

/// The columns search looks in, with the `task_terms.field` that records their values.
const SEARCH_COLUMNS: [(&str, &str); 3] = [
    ("name", "name"),
    ("queue", "queue"),
    ("worker_name", "worker"),
];

/// Finds the project's recorded values containing `text` (case-insensitive), through the
/// trigram index over the values (migration 0009).
pub fn search_terms(
    conn: &mut AnyConnection,
    project_id: &str,
    text: &str,
) -> StoreResult<SearchTerms> {
    #[derive(QueryableByName)]
    struct Term {
        #[diesel(sql_type = diesel::sql_types::Text)]
        field: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        value: String,
    }
    let mut sql = Sql::new(dialect_of(conn));
    sql.push("SELECT v.field, v.value FROM task_terms v WHERE ");
    matching_terms(&mut sql, project_id, text);
    sql.push(" LIMIT ")
        .bind(Scalar::Int(SEARCH_BRANCHES as i64 + 1));
    let found: Vec<Term> = load_sql!(conn, sql, Term)?;
    if found.len() > SEARCH_BRANCHES {
        return Ok(SearchTerms::Broad(text.to_owned()));
    }
    Ok(SearchTerms::Values(
        found
            .into_iter()
            .filter_map(|t| {
                SEARCH_COLUMNS
                    .iter()
                    .find(|(_, field)| *field == t.field)
                    .map(|(column, _)| (*column, t.value))
            })
            .collect(),
    ))
}

/// Appends the condition on `task_terms v` that its value belongs to the project and
/// contains `text`, case-insensitively.
fn matching_terms(sql: &mut Sql, project_id: &str, text: &str) {
    sql.push("v.project_id = ")
        .bind(Scalar::Text(project_id.to_owned()))
        .push(" AND ");
    match sql.dialect {
        Dialect::Sqlite => {
            // An FTS5 phrase: the trigram tokenizer matches it as a substring.
            let phrase = format!("\"{}\"", text.replace('"', "\"\""));
            sql.push("v.id IN (SELECT rowid FROM task_terms_search WHERE task_terms_search MATCH ")
                .bind(Scalar::Text(phrase))
                .push(")");
        }
        Dialect::Postgres => {
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            sql.push("v.value ILIKE ")
                .bind(Scalar::Text(format!("%{escaped}%")));
        }
    }
}

/// The statement [`page`] runs, given the search's terms (public so tests can check its plan).
pub fn page_query(
    dialect: Dialect,
    project_id: &str,
    selection: &Selection,
    terms: Option<&SearchTerms>,
    position: Option<&[Option<Scalar>]>,
    limit: i64,
) -> Sql {
    let mut sql = Sql::new(dialect);
    let base = |sql: &mut Sql| {
        sql.push(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t WHERE t.project_id = "
        ))
        .bind(Scalar::Text(project_id.to_owned()))
        .push(" AND ");
        sql.filter("t", selection.filter);
    };
    match terms {
        None => sql.keyset_page("t", selection.order, position, limit, &base),
        Some(SearchTerms::Values(values)) if values.is_empty() => {
            base(&mut sql);
            sql.push(" AND 1=0");
        }
        Some(SearchTerms::Values(values)) => {
            // One page per value, each a range of that column's index in list order
            // (tasks_by_name, tasks_by_queue, tasks_by_worker), merged; UNION drops a task
            // found through two of its columns.
            sql.push("SELECT * FROM (");
            for (i, (column, value)) in values.iter().enumerate() {
                if i > 0 {
                    sql.push(" UNION ");
                }
                sql.push("SELECT * FROM (");
                sql.keyset_page("t", selection.order, position, limit, &|sql: &mut Sql| {
                    base(sql);
                    sql.push(&format!(" AND t.{column} = "))
                        .bind(Scalar::Text(value.clone()));
                });
                sql.push(&format!(") v{i}"));
            }
            sql.push(") t");
            sql.order_by("t", selection.order);
            sql.push(" LIMIT ").bind(Scalar::Int(limit));
        }
        Some(SearchTerms::Broad(text)) => {
            sql.keyset_page("t", selection.order, position, limit, &|sql: &mut Sql| {
                base(sql);
                sql.push(" AND (");
                for (i, (column, field)) in SEARCH_COLUMNS.iter().enumerate() {
                    if i > 0 {
                        sql.push(" OR ");
                    }
                    sql.push(&format!(
                        "t.{column} IN (SELECT v.value FROM task_terms v WHERE v.field = '{field}' AND "
                    ));
                    matching_terms(sql, project_id, text);
                    sql.push(")");
                }
                sql.push(")");
            })
        }
    }
    sql
}

/// In-flight states: what may not be deleted.
pub const IN_FLIGHT: [&str; 2] = ["received", "started"];

/// What an explicit-ids delete found: the ids that are not in the project and the ones still
/// in flight (it deletes only when both are empty).
#[derive(Debug, Default, PartialEq)]
pub struct IdsDelete {
    /// Ids with no task in the project.
    pub missing: Vec<String>,
    /// Ids of tasks still received or started.
    pub in_flight: Vec<String>,
    /// Rows deleted.
    pub deleted: usize,
}

/// Deletes the tasks with these engine task ids, all or nothing: nothing is deleted if any id
/// is unknown in the project or still in flight.
pub fn delete_ids(
    conn: &mut AnyConnection,
    project_id: &str,
    ids: &[String],
) -> StoreResult<IdsDelete> {
    let found: Vec<(String, String, String)> = tasks::table
        .filter(tasks::project_id.eq(project_id))
        .filter(tasks::task_id.eq_any(ids))
        .select((tasks::id, tasks::task_id, tasks::state))
        .load(conn)?;
    let known: std::collections::HashSet<&str> = found.iter().map(|(_, t, _)| t.as_str()).collect();
    let mut outcome = IdsDelete {
        missing: ids
            .iter()
            .filter(|id| !known.contains(id.as_str()))
            .cloned()
            .collect(),
        in_flight: found
            .iter()
            .filter(|(_, _, state)| IN_FLIGHT.contains(&state.as_str()))
            .map(|(_, t, _)| t.clone())
            .collect(),
        deleted: 0,
    };
    outcome.missing.dedup();
    outcome.in_flight.sort();
    outcome.in_flight.dedup();
    if outcome.missing.is_empty() && outcome.in_flight.is_empty() {
        let rows: Vec<&str> = found.iter().map(|(id, _, _)| id.as_str()).collect();
        outcome.deleted =
            diesel::delete(tasks::table.filter(tasks::id.eq_any(rows))).execute(conn)?;
    }
    Ok(outcome)
}

/// Deletes a project's tasks matching `filter` that are not in flight; returns (deleted,
/// skipped because in flight).
pub fn delete_matching(
    conn: &mut AnyConnection,
    project_id: &str,
    filter: &Filter,
) -> StoreResult<(usize, i64)> {
    let select = |conn: &AnyConnection, head: &str, in_flight: bool| {
        let mut sql = Sql::new(dialect_of(conn));
        sql.push(head)
            .push(" FROM tasks t WHERE t.project_id = ")
            .bind(Scalar::Text(project_id.to_owned()))
            .push(" AND ");
        sql.filter("t", filter);
        sql.push(if in_flight {
            " AND t.state IN ("
        } else {
            " AND t.state NOT IN ("
        });
        for (i, state) in IN_FLIGHT.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(Scalar::Text((*state).to_owned()));
        }
        sql.push(")");
        sql
    };
    let skipped = load_sql!(conn, select(conn, "SELECT COUNT(*) AS n", true), Count)?
        .first()
        .map_or(0, |c| c.n);
    let doomed = select(conn, "SELECT t.id", false);
    let mut sql = Sql::new(doomed.dialect);
    sql.push("DELETE FROM tasks WHERE id IN (");
    sql.text.push_str(&doomed.text);
    sql.binds.extend(doomed.binds);
    sql.push(")");
    let deleted = execute_sql!(conn, sql)?;
    Ok((deleted, skipped))
}

/// The sort values of a row, as a cursor stores them (times in ms).
pub fn position(row: &TaskRow, order: &[SortKey]) -> Vec<serde_json::Value> {
    use serde_json::Value;
    let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
    let int = |v: Option<i64>| v.map_or(Value::Null, Value::from);
    order
        .iter()
        .map(|key| match key.field.name {
            "id" => Value::String(row.id.clone()),
            "engine" => Value::String(row.engine.clone()),
            "task_id" => Value::String(row.task_id.clone()),
            "state" => Value::String(row.state.clone()),
            "name" => text(&row.name),
            "queue" => text(&row.queue),
            "priority" => text(&row.priority),
            "worker_name" => text(&row.worker_name),
            "agent_id" => text(&row.agent_id),
            "result" => text(&row.result),
            "exception" => text(&row.exception),
            "parent_task_id" => text(&row.parent_task_id),
            "root_task_id" => text(&row.root_task_id),
            "retry_count" => Value::from(row.retry_count),
            "eta" => int(row.eta),
            "received_at" => int(row.received_at),
            "started_at" => int(row.started_at),
            "finished_at" => int(row.finished_at),
            "runtime_ms" => int(row.runtime_ms),
            "created_at" => Value::from(row.created_at),
            "updated_at" => Value::from(row.updated_at),
            other => unreachable!("task field {other} has no position"),
        })
        .collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn update(state: TaskState, at_ms: i64) -> TaskUpdate {
        TaskUpdate {
            engine: "celery".into(),
            task_id: "t1".into(),
            state: Some(state),
            at_ms,
            ..TaskUpdate::default()
        }
    }

    #[test]
    fn merging_is_order_insensitive_and_idempotent() {
        let events = [
            update(TaskState::Received, 10),
            update(TaskState::Started, 20),
            update(TaskState::Succeeded, 30),
        ];
        let mut in_order = new_row("p", "a", &events[0], 0);
        for e in &events {
            merge(&mut in_order, e);
        }
        let mut reversed = new_row("p", "a", &events[0], 0);
        for e in events.iter().rev() {
            merge(&mut reversed, e);
        }
        reversed.id = in_order.id.clone();
        assert_eq!(in_order, reversed);
        assert_eq!(in_order.state, "succeeded");
        assert_eq!(
            (
                in_order.received_at,
                in_order.started_at,
                in_order.finished_at
            ),
            (Some(10), Some(20), Some(30))
        );
        let before = in_order.clone();
        for e in &events {
            merge(&mut in_order, e);
        }
        assert_eq!(in_order, before, "replaying changed the row");
        // Same timestamp: the later stage wins.
        let mut tie = new_row("p", "a", &events[0], 0);
        merge(&mut tie, &update(TaskState::Succeeded, 5));
        merge(&mut tie, &update(TaskState::Started, 5));
        assert_eq!(tie.state, "succeeded");
    }
}

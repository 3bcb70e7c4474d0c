//! Merging batches of normalized updates into task and worker rows (see the parent module
//! for the merge rules), in as few statements as the backend allows.

use std::collections::HashMap;

use diesel::prelude::*;
use taskward_shared::events::{TaskState, TaskUpdate, Update, WorkerUpdate};

use super::super::schema::{agents, task_terms, tasks, workers};
use super::super::{AnyConnection, StoreResult, commands};

use super::{StateOrder, TaskRow};

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
    truncated: Option<String>,
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
                parent_task_id, root_task_id, args_unavailable, truncated
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
        truncated: None,
    }
}

/// Merges one update into a row (pure; see the module doc for the rules).
pub fn merge(row: &mut TaskRow, t: &TaskUpdate) {
    if let Some(state) = t.state {
        let current = StateOrder::of_row(row.state_rank, row.state_at);
        let order = StateOrder::of_event(t.retries, current.attempt, t.at_ms, state);
        if order > current {
            row.state = state.as_str().to_owned();
            row.state_rank = order.packed();
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
    mark_truncated(row, t);
    if let Some(retries) = t.retries {
        row.retry_count = row.retry_count.max(retries);
    }
}

/// Keeps `row.truncated` true to the values now stored: a field this update set is marked cut
/// when the update says it was cut, and unmarked when the update brought it whole. Marks use
/// the task's column names (what the API shows), not the update's field names.
fn mark_truncated(row: &mut TaskRow, t: &TaskUpdate) {
    // (the update's field, the task's column, whether this update set it)
    let set_by_update = [
        ("name", "name", t.name.is_some()),
        ("queue", "queue", t.queue.is_some()),
        ("worker", "worker_name", t.worker.is_some()),
        ("priority", "priority", t.priority.is_some()),
        ("args", "args", t.args.is_some()),
        ("kwargs", "kwargs", t.kwargs.is_some()),
        ("result", "result", t.result.is_some()),
        ("exception", "exception", t.exception.is_some()),
        ("traceback", "traceback", t.traceback.is_some()),
        ("parent_id", "parent_task_id", t.parent_id.is_some()),
        ("root_id", "root_task_id", t.root_id.is_some()),
        (
            "args_unavailable",
            "args_unavailable",
            t.args_unavailable.is_some(),
        ),
    ];
    let cut = |field: &str| t.truncated.iter().any(|f| f == field);
    let mut fields = row.truncated_fields();
    let before = fields.clone();
    for (field, column, set) in set_by_update {
        if !set {
            continue;
        }
        fields.retain(|f| f != column);
        if cut(field) {
            fields.push(column.to_owned());
        }
    }
    // The identity fields are the same in every update of the task: a cut stays marked.
    for field in ["engine", "task_id"] {
        if cut(field) && !fields.iter().any(|f| f == field) {
            fields.push(field.to_owned());
        }
    }
    if fields != before {
        fields.sort();
        row.truncated = (!fields.is_empty()).then(|| fields.join(","));
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

    fn attempt(state: TaskState, at_ms: i64, retries: i32) -> TaskUpdate {
        TaskUpdate {
            retries: Some(retries),
            ..update(state, at_ms)
        }
    }

    /// The flaky task of the issue: the retry ran and failed on another worker before the
    /// first run's `task-retried` arrived, with a later clock. A later attempt's state wins,
    /// in any order of arrival, and replays change nothing.
    #[test]
    fn a_later_attempt_wins_over_an_earlier_whatever_the_clock() {
        let events = [
            attempt(TaskState::Received, 100, 0),
            attempt(TaskState::Started, 110, 0),
            attempt(TaskState::Received, 120, 1),
            attempt(TaskState::Started, 130, 1),
            attempt(TaskState::Failed, 140, 1),
            // Attempt 0's retry, stamped by a worker whose clock runs ahead.
            attempt(TaskState::Retried, 500, 0),
        ];
        for order in [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [2, 5, 0, 4, 1, 3]] {
            let mut row = new_row("p", "a", &events[0], 0);
            for i in order.into_iter().chain(order) {
                merge(&mut row, &events[i]);
            }
            assert_eq!(row.state, "failed", "order {order:?}");
            assert_eq!(row.state_at, 140);
            assert_eq!(row.retry_count, 1);
        }
    }

    /// Events that name no attempt (older agents, the brain's own) are of the current one and
    /// order by time as before.
    #[test]
    fn events_without_an_attempt_order_by_time_within_the_current_one() {
        let mut row = new_row("p", "a", &update(TaskState::Received, 0), 0);
        merge(&mut row, &attempt(TaskState::Started, 200, 2));
        merge(&mut row, &update(TaskState::Succeeded, 150));
        assert_eq!(row.state, "started", "an earlier time does not win");
        merge(&mut row, &update(TaskState::Succeeded, 250));
        assert_eq!(row.state, "succeeded");
        assert_eq!(
            StateOrder::of_row(row.state_rank, row.state_at).attempt,
            2,
            "the attempt is kept"
        );
        // A retry count no task reaches still orders (and does not overflow).
        merge(&mut row, &attempt(TaskState::Started, 300, i32::MAX));
        assert_eq!(row.state, "started");
    }

    /// Marks name the task's columns, follow the value now stored, and a whole value clears
    /// its mark.
    #[test]
    fn truncation_marks_follow_the_stored_values_by_column_name() {
        let mut cut = update(TaskState::Failed, 10);
        cut.worker = Some("w".into());
        cut.traceback = Some("t".into());
        cut.truncated = vec!["traceback".into(), "worker".into()];
        let mut row = new_row("p", "a", &cut, 0);
        merge(&mut row, &cut);
        assert_eq!(row.truncated.as_deref(), Some("traceback,worker_name"));
        // An update that does not carry the traceback leaves its mark alone.
        merge(&mut row, &update(TaskState::Failed, 11));
        assert_eq!(row.truncated.as_deref(), Some("traceback,worker_name"));
        let mut whole = update(TaskState::Failed, 12);
        whole.traceback = Some("all of it".into());
        whole.worker = Some("w".into());
        merge(&mut row, &whole);
        assert_eq!(row.truncated, None);
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

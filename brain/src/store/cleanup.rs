//! Cleanup tasks: long deletions as trees of small steps, worked through in the background.
//!
//! Deleting a project hides it at once (`projects.deleting_since`) and records a
//! `delete_project` task with children: one `delete_agent` per agent and one
//! `delete_task_records` that removes task rows in batches. A step is claimed with a lease
//! (another brain, or this one after a crash, takes it over when the lease runs out), runs in
//! its own short transaction, and either completes, asks to run again (more batches), or
//! fails; failures are retried with exponential backoff up to `max_attempts`, then stay
//! `failed` until an admin retries them. The parent completes last, removing the project row;
//! the project's audit chain has no foreign key to it and is never deleted.

use diesel::prelude::*;
use serde_json::{Value, json};

use super::schema::{agents, cleanup_tasks, schedules, task_terms, tasks};
use super::{AnyConnection, StoreError, StoreResult};
use crate::query::filter::{Filter, Scalar};
use crate::query::order::SortKey;
use crate::query::sql::{Count, Sql, dialect_of, load_sql};

/// Attempts before a step is left `failed`.
pub const MAX_ATTEMPTS: i32 = 5;
/// Task rows deleted per step: a short write transaction, so the API never waits long.
pub const TASK_BATCH: i64 = 5_000;
/// How long a claimed step is ours before another worker may take it over.
pub const LEASE_MS: i64 = 15_000;
/// Longest wait between retries.
const MAX_BACKOFF_MS: i64 = 300_000;

/// Statuses.
pub mod status {
    /// Waiting to run (or to run again).
    pub const PENDING: &str = "pending";
    /// Claimed by a worker.
    pub const IN_PROGRESS: &str = "in_progress";
    /// Done.
    pub const COMPLETED: &str = "completed";
    /// Out of attempts; an admin may retry it.
    pub const FAILED: &str = "failed";
    /// Every status.
    pub const ALL: [&str; 4] = [PENDING, IN_PROGRESS, COMPLETED, FAILED];
}

/// Resource types.
pub mod resource {
    /// A project and everything under it.
    pub const DELETE_PROJECT: &str = "delete_project";
    /// An agent with its workers and queue depths.
    pub const DELETE_AGENT: &str = "delete_agent";
    /// A project's task records, in batches.
    pub const DELETE_TASK_RECORDS: &str = "delete_task_records";
    /// A schedule.
    pub const DELETE_SCHEDULE: &str = "delete_schedule";
    /// Every type.
    pub const ALL: [&str; 4] = [
        DELETE_PROJECT,
        DELETE_AGENT,
        DELETE_TASK_RECORDS,
        DELETE_SCHEDULE,
    ];
}

/// A cleanup task row.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = cleanup_tasks)]
pub struct CleanupTask {
    /// `ct_…`.
    pub id: String,
    /// The task this one is a step of.
    pub parent_id: Option<String>,
    /// The project whose resources it deletes.
    pub project_id: String,
    /// What caused it (the audit row `<chain>#<seq>` of the request).
    pub source_event_id: Option<String>,
    /// One of [`resource::ALL`].
    pub resource_type: String,
    /// The id of what it deletes.
    pub resource_id: String,
    /// JSON: names, progress (`deleted`).
    pub metadata: String,
    /// One of [`status::ALL`].
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// Attempts allowed before it stays failed.
    pub max_attempts: i32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it may run next, ms.
    pub next_attempt_at: i64,
    /// Until when a worker holds it, ms.
    pub lease_until: Option<i64>,
    /// Created, ms.
    pub created_at: i64,
    /// Last change, ms.
    pub updated_at: i64,
    /// Completed, ms.
    pub completed_at: Option<i64>,
}

fn new_task(
    project_id: &str,
    parent_id: Option<&str>,
    source_event_id: Option<&str>,
    resource_type: &str,
    resource_id: &str,
    metadata: Value,
    now: i64,
) -> CleanupTask {
    CleanupTask {
        id: format!("ct_{}", uuid::Uuid::new_v4().simple()),
        parent_id: parent_id.map(str::to_owned),
        project_id: project_id.to_owned(),
        source_event_id: source_event_id.map(str::to_owned),
        resource_type: resource_type.to_owned(),
        resource_id: resource_id.to_owned(),
        metadata: metadata.to_string(),
        status: status::PENDING.to_owned(),
        attempts: 0,
        max_attempts: MAX_ATTEMPTS,
        last_error: None,
        next_attempt_at: now,
        lease_until: None,
        created_at: now,
        updated_at: now,
        completed_at: None,
    }
}

/// Starts deleting a project: hides it and records the tree. Returns the root task.
pub fn delete_project(
    conn: &mut AnyConnection,
    project: &super::projects::Project,
    source_event_id: Option<&str>,
    now: i64,
) -> StoreResult<CleanupTask> {
    use super::schema::projects;
    diesel::update(projects::table.find(&project.id))
        .set(projects::deleting_since.eq(now))
        .execute(conn)?;
    let root = new_task(
        &project.id,
        None,
        source_event_id,
        resource::DELETE_PROJECT,
        &project.id,
        json!({"slug": project.slug, "name": project.name}),
        now,
    );
    let mut all = vec![root.clone()];
    let project_agents: Vec<(String, String)> = agents::table
        .filter(agents::project_id.eq(&project.id))
        .select((agents::id, agents::name))
        .load(conn)?;
    for (id, name) in project_agents {
        all.push(new_task(
            &project.id,
            Some(&root.id),
            source_event_id,
            resource::DELETE_AGENT,
            &id,
            json!({"name": name}),
            now,
        ));
    }
    for (id, name) in super::schedules::ids_of_project(conn, &project.id)? {
        all.push(new_task(
            &project.id,
            Some(&root.id),
            source_event_id,
            resource::DELETE_SCHEDULE,
            &id,
            json!({"name": name}),
            now,
        ));
    }
    all.push(new_task(
        &project.id,
        Some(&root.id),
        source_event_id,
        resource::DELETE_TASK_RECORDS,
        &project.id,
        json!({"deleted": 0}),
        now,
    ));
    insert(conn, &all)?;
    Ok(root)
}

/// Starts deleting a project's task records last changed before `cutoff` (ms), skipping tasks
/// in flight (a retention schedule). Returns the cleanup task.
pub fn delete_old_task_records(
    conn: &mut AnyConnection,
    project_id: &str,
    cutoff: i64,
    source_event_id: Option<&str>,
    now: i64,
) -> StoreResult<CleanupTask> {
    let task = new_task(
        project_id,
        None,
        source_event_id,
        resource::DELETE_TASK_RECORDS,
        project_id,
        json!({"deleted": 0, "olderThan": cutoff}),
        now,
    );
    insert(conn, std::slice::from_ref(&task))?;
    Ok(task)
}

fn insert(conn: &mut AnyConnection, rows: &[CleanupTask]) -> StoreResult<()> {
    for row in rows {
        diesel::insert_into(cleanup_tasks::table)
            .values(row)
            .execute(conn)?;
    }
    Ok(())
}

/// Claims the oldest due step (pending and due, or held past its lease), for `LEASE_MS`.
pub fn claim(conn: &mut AnyConnection, now: i64) -> StoreResult<Option<CleanupTask>> {
    let due = cleanup_tasks::status
        .eq(status::PENDING)
        .and(cleanup_tasks::next_attempt_at.le(now))
        .or(cleanup_tasks::status
            .eq(status::IN_PROGRESS)
            .and(cleanup_tasks::lease_until.lt(now)));
    let candidates: Vec<String> = cleanup_tasks::table
        .filter(due)
        // Steps before the parents that wait on them, then oldest first.
        .order((
            cleanup_tasks::parent_id.is_null().asc(),
            cleanup_tasks::created_at.asc(),
            cleanup_tasks::id.asc(),
        ))
        .select(cleanup_tasks::id)
        .limit(8)
        .load(conn)?;
    for id in candidates {
        // Only one worker wins the row: the update re-checks that it is still due.
        let won = diesel::update(cleanup_tasks::table.find(&id).filter(due))
            .set((
                cleanup_tasks::status.eq(status::IN_PROGRESS),
                cleanup_tasks::lease_until.eq(now + LEASE_MS),
                cleanup_tasks::attempts.eq(cleanup_tasks::attempts + 1),
                cleanup_tasks::updated_at.eq(now),
            ))
            .execute(conn)?;
        if won == 1 {
            return Ok(Some(find(conn, &id)?));
        }
    }
    Ok(None)
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Finished.
    Done,
    /// More to do: run again at once (a batch was deleted).
    Again,
    /// Waiting for its children.
    Waiting,
}

/// Runs one step of a claimed task and records its progress, in the caller's transaction. A
/// failure is returned unrecorded: the caller rolls back and records it with [`fail`] in a
/// transaction of its own.
pub fn run_step(conn: &mut AnyConnection, task: &CleanupTask, now: i64) -> StoreResult<Step> {
    let outcome = match task.resource_type.as_str() {
        resource::DELETE_TASK_RECORDS => delete_task_batch(conn, task),
        resource::DELETE_AGENT => diesel::delete(
            agents::table
                .find(&task.resource_id)
                .filter(agents::project_id.eq(&task.project_id)),
        )
        .execute(conn)
        .map(|_| Step::Done)
        .map_err(StoreError::from),
        resource::DELETE_SCHEDULE => diesel::delete(
            schedules::table
                .find(&task.resource_id)
                .filter(schedules::project_id.eq(&task.project_id)),
        )
        .execute(conn)
        .map(|_| Step::Done)
        .map_err(StoreError::from),
        resource::DELETE_PROJECT => finish_project(conn, task),
        other => Err(StoreError::Database(
            diesel::result::Error::QueryBuilderError(
                format!("unknown cleanup resource type {other}").into(),
            ),
        )),
    };
    let step = outcome?;
    record(conn, task, &step, now)?;
    Ok(step)
}

fn delete_task_batch(conn: &mut AnyConnection, task: &CleanupTask) -> StoreResult<Step> {
    let mut metadata: Value = serde_json::from_str(&task.metadata).unwrap_or(json!({}));
    // A retention cleanup deletes only records older than its cutoff, never tasks in flight;
    // a project deletion deletes every record.
    let cutoff = metadata["olderThan"].as_i64();
    let mut query = tasks::table
        .filter(tasks::project_id.eq(&task.project_id))
        .select(tasks::id)
        .limit(TASK_BATCH)
        .into_boxed();
    if let Some(cutoff) = cutoff {
        query = query
            .filter(
                tasks::received_at.lt(cutoff).or(tasks::received_at
                    .is_null()
                    .and(tasks::created_at.lt(cutoff))),
            )
            .filter(tasks::state.ne_all(["received", "started"]));
    }
    let batch: Vec<String> = query.load(conn)?;
    let deleted = diesel::delete(tasks::table.filter(tasks::id.eq_any(&batch))).execute(conn)?;
    let before = metadata["deleted"].as_u64().unwrap_or(0);
    metadata["deleted"] = json!(before + deleted as u64);
    diesel::update(cleanup_tasks::table.find(&task.id))
        .set(cleanup_tasks::metadata.eq(metadata.to_string()))
        .execute(conn)?;
    if (deleted as i64) < TASK_BATCH {
        if cutoff.is_none() {
            // The search terms of the project's tasks go last.
            diesel::delete(task_terms::table.filter(task_terms::project_id.eq(&task.project_id)))
                .execute(conn)?;
        }
        Ok(Step::Done)
    } else {
        Ok(Step::Again)
    }
}

fn finish_project(conn: &mut AnyConnection, task: &CleanupTask) -> StoreResult<Step> {
    use super::schema::projects;
    let open: i64 = cleanup_tasks::table
        .filter(cleanup_tasks::parent_id.eq(&task.id))
        .filter(cleanup_tasks::status.ne(status::COMPLETED))
        .count()
        .get_result(conn)?;
    if open > 0 {
        return Ok(Step::Waiting);
    }
    // Memberships, commands and whatever is left go with the row (ON DELETE CASCADE).
    diesel::delete(projects::table.find(&task.resource_id)).execute(conn)?;
    Ok(Step::Done)
}

fn record(conn: &mut AnyConnection, task: &CleanupTask, step: &Step, now: i64) -> StoreResult<()> {
    let target = cleanup_tasks::table.find(&task.id);
    match step {
        Step::Done => diesel::update(target)
            .set((
                cleanup_tasks::status.eq(status::COMPLETED),
                cleanup_tasks::lease_until.eq(None::<i64>),
                cleanup_tasks::completed_at.eq(now),
                cleanup_tasks::updated_at.eq(now),
            ))
            .execute(conn)?,
        // Progress and waiting are not failed attempts.
        Step::Again | Step::Waiting => diesel::update(target)
            .set((
                cleanup_tasks::status.eq(status::PENDING),
                cleanup_tasks::lease_until.eq(None::<i64>),
                cleanup_tasks::attempts.eq(cleanup_tasks::attempts - 1),
                cleanup_tasks::next_attempt_at.eq(if *step == Step::Again {
                    now
                } else {
                    now + 1_000
                }),
                cleanup_tasks::updated_at.eq(now),
            ))
            .execute(conn)?,
    };
    Ok(())
}

/// Records a failed attempt: retried after a backoff, or left failed when out of attempts.
pub fn fail(
    conn: &mut AnyConnection,
    task: &CleanupTask,
    error: &str,
    now: i64,
) -> StoreResult<()> {
    let out_of_attempts = task.attempts >= task.max_attempts;
    let backoff = (1_000_i64 << task.attempts.clamp(0, 20)).min(MAX_BACKOFF_MS);
    diesel::update(cleanup_tasks::table.find(&task.id))
        .set((
            cleanup_tasks::status.eq(if out_of_attempts {
                status::FAILED
            } else {
                status::PENDING
            }),
            cleanup_tasks::lease_until.eq(None::<i64>),
            cleanup_tasks::last_error.eq(error),
            cleanup_tasks::next_attempt_at.eq(now + backoff),
            cleanup_tasks::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// A cleanup task by id.
pub fn find(conn: &mut AnyConnection, id: &str) -> StoreResult<CleanupTask> {
    Ok(cleanup_tasks::table
        .find(id)
        .select(CleanupTask::as_select())
        .first(conn)?)
}

/// Re-queues a failed task with a fresh set of attempts; `false` if it is not failed.
pub fn retry(conn: &mut AnyConnection, id: &str, now: i64) -> StoreResult<bool> {
    let changed = diesel::update(
        cleanup_tasks::table
            .find(id)
            .filter(cleanup_tasks::status.eq(status::FAILED)),
    )
    .set((
        cleanup_tasks::status.eq(status::PENDING),
        cleanup_tasks::attempts.eq(0),
        cleanup_tasks::next_attempt_at.eq(now),
        cleanup_tasks::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

/// A task and all its descendants, parents before children.
pub fn tree(conn: &mut AnyConnection, root: &CleanupTask) -> StoreResult<Vec<CleanupTask>> {
    let mut all = vec![root.clone()];
    let mut frontier = vec![root.id.clone()];
    while !frontier.is_empty() {
        let children: Vec<CleanupTask> = cleanup_tasks::table
            .filter(cleanup_tasks::parent_id.eq_any(&frontier))
            .order((cleanup_tasks::created_at.asc(), cleanup_tasks::id.asc()))
            .select(CleanupTask::as_select())
            .load(conn)?;
        frontier = children.iter().map(|c| c.id.clone()).collect();
        all.extend(children);
    }
    Ok(all)
}

/// Who is asking: a caller sees the cleanup tasks of projects where they are admin; site
/// admins see all.
pub struct Scope<'a> {
    /// The caller.
    pub user_id: &'a str,
    /// Site admin.
    pub site_admin: bool,
}

/// Appends the visibility condition for `scope` over alias `c`.
fn visible_to(sql: &mut Sql, scope: &Scope) {
    if scope.site_admin {
        sql.push("1=1");
    } else {
        sql.push(
            "c.project_id IN (SELECT m.project_id FROM memberships m \
             WHERE m.role = 'admin' AND m.user_id = ",
        )
        .bind(Scalar::Text(scope.user_id.to_owned()))
        .push(")");
    }
}

/// Whether the caller may see this task.
pub fn may_see(conn: &mut AnyConnection, scope: &Scope, task: &CleanupTask) -> StoreResult<bool> {
    use super::schema::memberships;
    if scope.site_admin {
        return Ok(true);
    }
    let n: i64 = memberships::table
        .filter(memberships::project_id.eq(&task.project_id))
        .filter(memberships::user_id.eq(scope.user_id))
        .filter(memberships::role.eq("admin"))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

/// One page of the cleanup tasks `scope` may see, matching `filter`, in `order`, after
/// `position`.
pub fn page(
    conn: &mut AnyConnection,
    scope: &Scope,
    filter: &Filter,
    order: &[SortKey],
    position: Option<&[Option<Scalar>]>,
    limit: i64,
) -> StoreResult<Vec<CleanupTask>> {
    let mut sql = Sql::new(dialect_of(conn));
    let select = |sql: &mut Sql| {
        sql.push("SELECT c.* FROM cleanup_tasks c WHERE ");
        visible_to(sql, scope);
        sql.push(" AND ").budget_check();
        sql.filter("c", filter);
    };
    sql.keyset_page("c", order, position, limit, &select);
    Ok(load_sql!(conn, sql, CleanupTask)?)
}

/// How many cleanup tasks `scope` may see match `filter`.
pub fn count(conn: &mut AnyConnection, scope: &Scope, filter: &Filter) -> StoreResult<i64> {
    let mut sql = Sql::new(dialect_of(conn));
    sql.push("SELECT COUNT(*) AS n FROM cleanup_tasks c WHERE ");
    visible_to(&mut sql, scope);
    sql.push(" AND ").budget_check();
    sql.filter("c", filter);
    Ok(load_sql!(conn, sql, Count)?.first().map_or(0, |c| c.n))
}

/// The sort values of a task, as a cursor stores them (times in ms).
pub fn position(row: &CleanupTask, order: &[SortKey]) -> Vec<Value> {
    let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
    order
        .iter()
        .map(|key| match key.field.column {
            "id" => Value::String(row.id.clone()),
            "parent_id" => text(&row.parent_id),
            "project_id" => Value::String(row.project_id.clone()),
            "source_event_id" => text(&row.source_event_id),
            "resource_type" => Value::String(row.resource_type.clone()),
            "resource_id" => Value::String(row.resource_id.clone()),
            "status" => Value::String(row.status.clone()),
            "attempts" => Value::from(row.attempts),
            "last_error" => text(&row.last_error),
            "created_at" => Value::from(row.created_at),
            "updated_at" => Value::from(row.updated_at),
            "completed_at" => row.completed_at.map_or(Value::Null, Value::from),
            other => unreachable!("cleanup task column {other} has no position"),
        })
        .collect()
}

//! Schedules and their runs.
//!
//! A due time is claimed by moving `next_run_at` forward with an `UPDATE … WHERE next_run_at =
//! <due>`: on PostgreSQL the row lock makes a second brain re-check and find nothing to update;
//! on SQLite the single writer does the same. The run row (unique on `(schedule_id, due_at)`)
//! and whatever the run writes commit in that same transaction, so a due time fires exactly
//! once, or not at all if the brain dies first.

use diesel::prelude::*;

use super::text_enum::{Parsed, text_enum};

use super::schema::{schedule_runs, schedules};
use super::{AnyConnection, StoreResult};

/// Runs kept per schedule; older ones are dropped as new ones are recorded.
pub const MAX_RUNS_KEPT: i64 = 500;

/// Where a schedule run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for the results of the commands it issued.
    Running,
    /// Done, and everything it did worked.
    Success,
    /// Done, and something failed (see `error` and `result`).
    Failed,
    /// A due time missed while no brain ran, not run (the `skip` policy).
    Skipped,
}

impl RunStatus {
    /// Every status.
    pub const ALL: [RunStatus; 4] = [
        RunStatus::Running,
        RunStatus::Success,
        RunStatus::Failed,
        RunStatus::Skipped,
    ];

    /// The stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Success => "success",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
        }
    }
}

taskward_shared::spelled_enum!(RunStatus, |s| format!("unknown run status {s:?}"));

impl From<RunStatus> for String {
    fn from(status: RunStatus) -> String {
        status.as_str().to_owned()
    }
}

text_enum!(RunStatus);

/// What made a run happen.
pub mod trigger {
    /// Its due time came.
    pub const CRON: &str = "cron";
    /// Its due time passed while no brain was running; run once on start.
    pub const CATCH_UP: &str = "catch_up";
    /// `POST …/run`.
    pub const MANUAL: &str = "manual";
}

/// A schedule row.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = schedules)]
pub struct ScheduleRow {
    /// `sch_…`.
    pub id: String,
    /// Its project.
    pub project_id: String,
    /// Display name.
    pub name: String,
    /// The type, as the API spells it.
    pub kind: String,
    /// Whether it fires.
    pub enabled: bool,
    /// Five-field cron expression.
    pub cron: String,
    /// IANA zone the expression is read in.
    pub timezone: String,
    /// The type's settings, JSON.
    pub config: String,
    /// Next due time, ms; null while disabled or when the expression never matches again.
    pub next_run_at: Option<i64>,
    /// Last run's start, ms.
    pub last_run_at: Option<i64>,
    /// Last run's status.
    pub last_status: Option<String>,
    /// The user who created it.
    pub created_by: String,
    /// Created, ms.
    pub created_at: i64,
    /// Last change, ms.
    pub updated_at: i64,
}

/// A run row.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = schedule_runs)]
pub struct RunRow {
    /// `run_…`.
    pub id: String,
    /// Its schedule.
    pub schedule_id: String,
    /// The due time it fired for; null for a manual run.
    pub due_at: Option<i64>,
    /// One of [`trigger`].
    pub trigger_kind: String,
    /// Where it stands.
    #[diesel(deserialize_as = Parsed<RunStatus>, serialize_as = String)]
    pub status: RunStatus,
    /// Started, ms.
    pub started_at: i64,
    /// Finished, ms (null while running).
    pub finished_at: Option<i64>,
    /// JSON: what it did.
    pub result: String,
    /// JSON array of command ids it issued.
    pub command_ids: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// Inserts a schedule.
pub fn insert(conn: &mut AnyConnection, row: &ScheduleRow) -> StoreResult<()> {
    diesel::insert_into(schedules::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// Writes every column of a schedule but its id, project and creation.
pub fn save(conn: &mut AnyConnection, row: &ScheduleRow) -> StoreResult<()> {
    diesel::update(schedules::table.find(&row.id))
        .set((
            schedules::name.eq(&row.name),
            schedules::enabled.eq(row.enabled),
            schedules::cron.eq(&row.cron),
            schedules::timezone.eq(&row.timezone),
            schedules::config.eq(&row.config),
            schedules::next_run_at.eq(row.next_run_at),
            schedules::updated_at.eq(row.updated_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// A project's schedule.
pub fn find(conn: &mut AnyConnection, project_id: &str, id: &str) -> StoreResult<ScheduleRow> {
    Ok(schedules::table
        .find(id)
        .filter(schedules::project_id.eq(project_id))
        .select(ScheduleRow::as_select())
        .first(conn)?)
}

/// A schedule by id alone (the scheduler, which serves every project).
pub fn find_any(conn: &mut AnyConnection, id: &str) -> StoreResult<ScheduleRow> {
    Ok(schedules::table
        .find(id)
        .select(ScheduleRow::as_select())
        .first(conn)?)
}

/// A project's schedules, oldest first, optionally of one type and enabled state.
pub fn list(
    conn: &mut AnyConnection,
    project_id: &str,
    kind: Option<&str>,
    enabled: Option<bool>,
) -> StoreResult<Vec<ScheduleRow>> {
    let mut query = schedules::table
        .filter(schedules::project_id.eq(project_id))
        .select(ScheduleRow::as_select())
        .order((schedules::created_at.asc(), schedules::id.asc()))
        .into_boxed();
    if let Some(kind) = kind {
        query = query.filter(schedules::kind.eq(kind.to_owned()));
    }
    if let Some(enabled) = enabled {
        query = query.filter(schedules::enabled.eq(enabled));
    }
    Ok(query.load(conn)?)
}

/// How many schedules a project has.
pub fn count(conn: &mut AnyConnection, project_id: &str) -> StoreResult<i64> {
    Ok(schedules::table
        .filter(schedules::project_id.eq(project_id))
        .count()
        .get_result(conn)?)
}

/// Deletes a schedule (its runs go with it); false if it was not there.
pub fn delete(conn: &mut AnyConnection, project_id: &str, id: &str) -> StoreResult<bool> {
    let n = diesel::delete(
        schedules::table
            .find(id)
            .filter(schedules::project_id.eq(project_id)),
    )
    .execute(conn)?;
    Ok(n == 1)
}

/// A project's schedule ids (for a project deletion's cleanup tree).
pub fn ids_of_project(
    conn: &mut AnyConnection,
    project_id: &str,
) -> StoreResult<Vec<(String, String)>> {
    Ok(schedules::table
        .filter(schedules::project_id.eq(project_id))
        .select((schedules::id, schedules::name))
        .load(conn)?)
}

/// Schedules whose due time has come, soonest first: `(id, due)`.
pub fn due(conn: &mut AnyConnection, now: i64, limit: i64) -> StoreResult<Vec<(String, i64)>> {
    let rows: Vec<(String, Option<i64>)> = schedules::table
        .filter(schedules::next_run_at.le(now))
        .filter(schedules::enabled.eq(true))
        .order(schedules::next_run_at.asc())
        .select((schedules::id, schedules::next_run_at))
        .limit(limit)
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, at)| at.map(|at| (id, at)))
        .collect())
}

/// Claims due time `due` of a schedule by moving it to `next`. True if this caller won.
pub fn claim(
    conn: &mut AnyConnection,
    id: &str,
    due: i64,
    next: Option<i64>,
    now: i64,
) -> StoreResult<bool> {
    let n = diesel::update(
        schedules::table
            .find(id)
            .filter(schedules::next_run_at.eq(due))
            .filter(schedules::enabled.eq(true)),
    )
    .set((
        schedules::next_run_at.eq(next),
        schedules::last_run_at.eq(now),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Records a run and the schedule's last status; drops runs beyond [`MAX_RUNS_KEPT`].
pub fn record_run(conn: &mut AnyConnection, run: &RunRow) -> StoreResult<()> {
    diesel::insert_into(schedule_runs::table)
        .values(run.clone())
        .execute(conn)?;
    diesel::update(schedules::table.find(&run.schedule_id))
        .set((
            schedules::last_run_at.eq(run.started_at),
            schedules::last_status.eq(run.status.as_str()),
        ))
        .execute(conn)?;
    let cutoff: Option<i64> = schedule_runs::table
        .filter(schedule_runs::schedule_id.eq(&run.schedule_id))
        .order(schedule_runs::started_at.desc())
        .select(schedule_runs::started_at)
        .offset(MAX_RUNS_KEPT)
        .first(conn)
        .optional()?;
    if let Some(cutoff) = cutoff {
        diesel::delete(
            schedule_runs::table
                .filter(schedule_runs::schedule_id.eq(&run.schedule_id))
                .filter(schedule_runs::started_at.le(cutoff))
                .filter(schedule_runs::status.ne(RunStatus::Running.as_str())),
        )
        .execute(conn)?;
    }
    Ok(())
}

/// Finishes a running run; the schedule's last status follows if this is its latest run.
pub fn finish_run(
    conn: &mut AnyConnection,
    run: &RunRow,
    status: RunStatus,
    result: &str,
    error: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    diesel::update(
        schedule_runs::table
            .find(&run.id)
            .filter(schedule_runs::status.eq(RunStatus::Running.as_str())),
    )
    .set((
        schedule_runs::status.eq(status.as_str()),
        schedule_runs::result.eq(result),
        schedule_runs::error.eq(error),
        schedule_runs::finished_at.eq(now),
    ))
    .execute(conn)?;
    diesel::update(
        schedules::table
            .find(&run.schedule_id)
            .filter(schedules::last_run_at.eq(run.started_at)),
    )
    .set(schedules::last_status.eq(status.as_str()))
    .execute(conn)?;
    Ok(())
}

/// A schedule's newest runs, newest first.
pub fn runs(conn: &mut AnyConnection, schedule_id: &str, limit: i64) -> StoreResult<Vec<RunRow>> {
    Ok(schedule_runs::table
        .filter(schedule_runs::schedule_id.eq(schedule_id))
        .order((schedule_runs::started_at.desc(), schedule_runs::id.desc()))
        .select(RunRow::as_select())
        .limit(limit)
        .load(conn)?)
}

/// A run by id.
pub fn find_run(conn: &mut AnyConnection, id: &str) -> StoreResult<Option<RunRow>> {
    Ok(schedule_runs::table
        .find(id)
        .select(RunRow::as_select())
        .first(conn)
        .optional()?)
}

/// Runs still waiting on commands, oldest first, with their schedule.
pub fn open_runs(conn: &mut AnyConnection, limit: i64) -> StoreResult<Vec<(RunRow, ScheduleRow)>> {
    Ok(schedule_runs::table
        .inner_join(schedules::table)
        .filter(schedule_runs::status.eq(RunStatus::Running.as_str()))
        .order(schedule_runs::started_at.asc())
        .select((RunRow::as_select(), ScheduleRow::as_select()))
        .limit(limit)
        .load(conn)?)
}

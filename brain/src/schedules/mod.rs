//! Schedules of operator actions, run by the brain itself.
//!
//! - [`cron`]: the five-field grammar and due times in IANA zones.
//! - [`action`]: the schedule types and their settings.
//! - Here: firing. Each second the server looks for due schedules ([`tick`]). A due time is
//!   claimed, the action runs and the run is recorded in one write transaction (every action
//!   is a database write: minting signed commands, recording a cleanup task, removing stale
//!   agents), so it happens exactly once per due time, with any number of brains, across
//!   restarts. Runs that issued commands stay `running` until every command has an outcome
//!   ([`finish_open_runs`]); a health check whose pings fail raises an alert then.
//! - A due time more than [`MISSED_AFTER_MS`] old was missed (no brain ran): it fires once,
//!   saying how many were missed, or is recorded as skipped ([`MissedRuns`]); never a burst.

pub mod action;
pub mod cron;
pub mod manage;

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};
use taskward_shared::audit::{Actor, ActorKind};
use taskward_shared::command::{Command, PingWorkers};

use self::action::{Action, ScheduleKind};
use self::cron::CronSchedule;
use crate::agents::stale::{Rule, clean_up_agent};
use crate::clock::timestamp;
use crate::commands::{Issue, issue_in};
use crate::refusal::Refusal;
use crate::store::audit::{self, AuditContext, Signer};
use crate::store::commands::{self, CommandStatus};
use crate::store::schedules::{self, RunRow, RunStatus, ScheduleRow, trigger};
use crate::store::{AnyConnection, StoreError, StoreResult, agents, cleanup, tasks};

/// A due time older than this when a brain gets to it was missed.
pub const MISSED_AFTER_MS: i64 = 60_000;

/// Most schedules fired per tick; the rest fire on the next.
pub const DUE_PER_TICK: i64 = 50;

/// What to do with due times missed while no brain was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MissedRuns {
    /// Run once on start, with the number missed in the run's result.
    #[default]
    RunOnce,
    /// Record a skipped run and wait for the next due time.
    Skip,
}

/// What a firing needs from the running server, taken before its transaction.
#[derive(Clone)]
pub struct FireEnv {
    /// The signing keys.
    pub signer: Signer,
    /// The confirm-token secret.
    pub secret: Vec<u8>,
    /// The lifetime of the commands it issues.
    pub ttl_ms: i64,
    /// Agents with a session on this brain: never stale.
    pub connected: HashSet<String>,
}

impl FireEnv {
    fn audit_as(&self, schedule: &ScheduleRow) -> AuditContext {
        as_schedule(&self.signer, schedule)
    }
}

/// The schedule as the actor of what it does (its commands, retention, alerts).
fn as_schedule(signer: &Signer, schedule: &ScheduleRow) -> AuditContext {
    AuditContext {
        signer: signer.clone(),
        actor: Actor {
            kind: ActorKind::Schedule,
            id: schedule.id.clone(),
            name: schedule.name.clone(),
        },
    }
}

/// A recorded run, and the agents that have new commands.
#[derive(Debug)]
pub struct Fired {
    /// The run.
    pub run: RunRow,
    /// Agents to wake (commands were minted for them).
    pub wake: Vec<String>,
}

/// What an action did.
struct Outcome {
    status: RunStatus,
    result: Value,
    command_ids: Vec<String>,
    error: Option<String>,
    wake: Vec<String>,
}

impl Outcome {
    fn done(result: Value) -> Outcome {
        Outcome {
            status: RunStatus::Success,
            result,
            command_ids: Vec::new(),
            error: None,
            wake: Vec::new(),
        }
    }

    fn failed(result: Value, error: String) -> Outcome {
        Outcome {
            status: RunStatus::Failed,
            error: Some(error),
            ..Outcome::done(result)
        }
    }
}

/// A stored schedule's action, checked again (an agent may have gone since it was written).
fn checked_action(schedule: &ScheduleRow) -> Result<Action, String> {
    let kind = ScheduleKind::parse(&schedule.kind)
        .ok_or_else(|| format!("unknown schedule type {:?}", schedule.kind))?;
    let config: Value = serde_json::from_str(&schedule.config).unwrap_or(Value::Null);
    action::check(kind, &config)
        .map(|(_, action)| action)
        .map_err(|e| e.to_string())
}

/// Runs a schedule's action now and records the run, in the caller's transaction.
/// `due_at` is the due time it fires for (none for "run now"); `missed` counts due times that
/// passed unrun before it.
pub fn fire_in(
    conn: &mut AnyConnection,
    env: &FireEnv,
    schedule: &ScheduleRow,
    trigger_kind: &str,
    due_at: Option<i64>,
    missed: usize,
    now: i64,
) -> StoreResult<Fired> {
    let mut outcome = match checked_action(schedule) {
        Ok(action) => perform(conn, env, schedule, action, now)?,
        Err(why) => Outcome::failed(
            json!({}),
            format!("the schedule's settings no longer hold: {why}"),
        ),
    };
    if missed > 0 {
        outcome.result["missed"] = json!(missed);
    }
    let finished = outcome.status != RunStatus::Running;
    let run = RunRow {
        id: format!("run_{}", uuid::Uuid::new_v4().simple()),
        schedule_id: schedule.id.clone(),
        due_at,
        trigger_kind: trigger_kind.to_owned(),
        status: outcome.status,
        started_at: now,
        finished_at: finished.then_some(now),
        result: outcome.result.to_string(),
        command_ids: json!(outcome.command_ids).to_string(),
        error: outcome.error,
    };
    schedules::record_run(conn, &run)?;
    Ok(Fired {
        run,
        wake: outcome.wake,
    })
}

/// Records a due time missed and skipped (the `skip` policy).
fn skip_in(
    conn: &mut AnyConnection,
    schedule: &ScheduleRow,
    due_at: i64,
    missed: usize,
    now: i64,
) -> StoreResult<Fired> {
    let run = RunRow {
        id: format!("run_{}", uuid::Uuid::new_v4().simple()),
        schedule_id: schedule.id.clone(),
        due_at: Some(due_at),
        trigger_kind: trigger::CATCH_UP.to_owned(),
        status: RunStatus::Skipped,
        started_at: now,
        finished_at: Some(now),
        result: json!({"missed": missed, "reason": "due while no brain was running; the missed-run policy is skip"}).to_string(),
        command_ids: "[]".to_owned(),
        error: None,
    };
    schedules::record_run(conn, &run)?;
    Ok(Fired {
        run,
        wake: Vec::new(),
    })
}

fn perform(
    conn: &mut AnyConnection,
    env: &FireEnv,
    schedule: &ScheduleRow,
    action: Action,
    now: i64,
) -> StoreResult<Outcome> {
    let ctx = env.audit_as(schedule);
    match action {
        Action::Issue { agent_id, command } => {
            let mut issued = Vec::new();
            let refusal = issue_one(conn, env, &ctx, schedule, agent_id, command, &mut issued)?;
            Ok(match refusal {
                None => running(issued, json!({})),
                Some(why) => Outcome::failed(json!({"commands": []}), why),
            })
        }
        Action::Retention { older_than_days } => {
            retention(conn, &ctx, schedule, older_than_days, now)
        }
        Action::HealthCheck { .. } => health_check(conn, env, &ctx, schedule),
        Action::StaleCleanup { inactive_hours } => {
            stale_cleanup(conn, env, &ctx, schedule, inactive_hours)
        }
    }
}

/// Records a cleanup task deleting the project's task records older than the window
/// (skipping tasks in flight), with a `schedule.retention` row naming the cutoff.
fn retention(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    schedule: &ScheduleRow,
    older_than_days: i64,
    now: i64,
) -> StoreResult<Outcome> {
    let project_id = &schedule.project_id;

    let cutoff = now - older_than_days * 86_400_000;
    let chain = audit::project_chain(project_id);
    let row = audit::append(
        conn,
        ctx,
        &chain,
        "schedule.retention",
        None,
        json!({
            "schedule": {"id": schedule.id, "name": schedule.name},
            "older_than_days": older_than_days,
            "cutoff": timestamp(cutoff),
        }),
    )?;
    let task = cleanup::delete_old_task_records(
        conn,
        project_id,
        cutoff,
        Some(&format!("{chain}#{}", row.seq)),
        now,
    )?;
    Ok(Outcome::done(json!({
        "cleanupTaskId": task.id,
        "olderThan": timestamp(cutoff),
    })))
}

/// Pings every worker online, and those gone offline since the previous check (each
/// departure is reported once); the run stays open until the pings have outcomes.
fn health_check(
    conn: &mut AnyConnection,
    env: &FireEnv,
    ctx: &AuditContext,
    schedule: &ScheduleRow,
) -> StoreResult<Outcome> {
    let project_id = &schedule.project_id;

    // Workers online, and those gone offline (crashed or shut down) since the previous
    // check, or since the schedule was made: each departure is reported once.
    let since = schedule.last_run_at.unwrap_or(schedule.created_at);
    let mut by_agent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (agent, worker) in tasks::workers_to_ping(conn, project_id, since)? {
        by_agent.entry(agent).or_default().push(worker);
    }
    if by_agent.is_empty() {
        return Ok(Outcome::done(
            json!({"workers": 0, "note": "no workers are known in this project"}),
        ));
    }
    let workers: usize = by_agent.values().map(Vec::len).sum();
    let mut issued = Vec::new();
    let mut refused = Vec::new();
    for (agent, names) in by_agent {
        let Ok(agent_id) = agent.parse() else {
            refused.push(json!({"agent_id": agent, "workers": names, "error": "not an agent id"}));
            continue;
        };
        let ping = Command::PingWorkers(PingWorkers {
            worker_names: names.clone(),
        });
        if let Some(why) = issue_one(conn, env, ctx, schedule, agent_id, ping, &mut issued)? {
            refused.push(json!({"agent_id": agent, "workers": names, "error": why}));
        }
    }
    let result = json!({"workers": workers, "refused": refused});
    Ok(if issued.is_empty() {
        Outcome::failed(result, "no ping could be issued".to_owned())
    } else {
        running(issued, result)
    })
}

/// Applies the stale rule to every agent of the project (connected agents never are).
fn stale_cleanup(
    conn: &mut AnyConnection,
    env: &FireEnv,
    ctx: &AuditContext,
    schedule: &ScheduleRow,
    inactive_hours: i64,
) -> StoreResult<Outcome> {
    let project_id = &schedule.project_id;

    let mut removed = Vec::new();
    let mut kept = 0;
    for agent in agents::list(conn, project_id)? {
        let outcome = match clean_up_agent(
            conn,
            ctx,
            project_id,
            &agent.id,
            env.connected.contains(&agent.id),
            Rule {
                inactive_hours,
                dry_run: false,
                archive_first: true,
            },
        ) {
            Ok(outcome) => outcome,
            // Listed a moment ago in this same transaction: a store failure.
            Err(Refusal::Store(err)) => return Err(err),
            Err(refusal) => return Err(StoreError::Unavailable(refusal.to_string())),
        };
        if outcome.deleted {
            removed.push(json!({
                "agent_id": outcome.agent_id,
                "name": agent.name,
                "workers": outcome.workers,
                "lost_tasks": outcome.lost_tasks,
            }));
        } else {
            kept += 1;
        }
    }
    Ok(Outcome::done(json!({"removed": removed, "kept": kept})))
}

/// An outcome waiting on the commands it issued.
fn running(issued: Vec<(String, String, String)>, mut result: Value) -> Outcome {
    result["commands"] = issued
        .iter()
        .map(|(id, kind, agent)| json!({"id": id, "kind": kind, "agent_id": agent}))
        .collect();
    Outcome {
        status: RunStatus::Running,
        command_ids: issued.iter().map(|(id, _, _)| id.clone()).collect(),
        wake: issued.into_iter().map(|(_, _, agent)| agent).collect(),
        result,
        error: None,
    }
}

/// Mints one command as the schedule; pushes `(id, kind, agent)` or returns the refusal.
fn issue_one(
    conn: &mut AnyConnection,
    env: &FireEnv,
    ctx: &AuditContext,
    schedule: &ScheduleRow,
    agent_id: uuid::Uuid,
    command: Command,
    issued_out: &mut Vec<(String, String, String)>,
) -> StoreResult<Option<String>> {
    let issue = Issue {
        ctx: ctx.clone(),
        issuer_id: schedule.id.clone(),
        project_id: schedule.project_id.clone(),
        agent_id,
        idempotency_key: None,
        command,
        secret: env.secret.clone(),
        ttl_ms: env.ttl_ms,
    };
    Ok(match issue_in(conn, &issue) {
        Ok(issued) => {
            issued.log();
            let record = issued.record;
            issued_out.push((record.id, record.kind.as_str().to_owned(), record.agent_id));
            None
        }
        Err(Refusal::Store(err)) => return Err(err),
        Err(refusal) => Some(refusal.to_string()),
    })
}

/// A health check's verdict, for the log and `/metrics`.
#[derive(Debug, Clone)]
pub struct Alert {
    /// The project.
    pub project_id: String,
    /// The schedule.
    pub schedule_id: String,
    /// Its name.
    pub schedule_name: String,
    /// What did not answer, one line each.
    pub failures: Vec<String>,
}

/// Where a running run stands.
#[derive(Debug)]
pub enum RunFinish {
    /// A command it issued is still open (or another brain finished the run first).
    Open,
    /// Finished now; a failing health check with `alertOnFailure` raised this alert.
    Finished(Option<Alert>),
}

/// Finishes a run whose commands have all ended, in the caller's transaction: success if
/// every one succeeded. A failing health check with `alertOnFailure` appends a signed
/// `schedule.alert` row and returns the alert. A run another brain finished since it was read
/// is left alone.
pub fn finish_open_in(
    conn: &mut AnyConnection,
    signer: &Signer,
    run: &RunRow,
    schedule: &ScheduleRow,
    now: i64,
) -> StoreResult<RunFinish> {
    let still_open =
        schedules::find_run(conn, &run.id)?.is_some_and(|r| r.status == RunStatus::Running);
    if !still_open {
        return Ok(RunFinish::Open);
    }
    let ids: Vec<String> = serde_json::from_str(&run.command_ids).unwrap_or_default();
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for id in &ids {
        let command = match commands::find(conn, &schedule.project_id, id) {
            Err(crate::store::StoreError::NotFound) => {
                failures.push(format!("command {id} no longer exists"));
                continue;
            }
            other => other?,
        };
        let status = command.status;
        if !status.is_terminal() {
            return Ok(RunFinish::Open);
        }
        if status != CommandStatus::Succeeded {
            failures.push(format!(
                "{} on agent {}: {} ({})",
                command.kind,
                command.agent_id,
                status.as_str(),
                command.detail.as_deref().unwrap_or("no detail")
            ));
        }
        outcomes.push(json!({
            "id": command.id,
            "kind": command.kind.as_str(),
            "agent_id": command.agent_id,
            "status": status.as_str(),
            "detail": command.detail,
        }));
    }
    let mut result: Value = serde_json::from_str(&run.result).unwrap_or(json!({}));
    result["commands"] = json!(outcomes);
    let refused = result["refused"].as_array().map_or(0, Vec::len);
    let (status, error) = if failures.is_empty() && refused == 0 {
        (RunStatus::Success, None)
    } else {
        (RunStatus::Failed, Some(failures.join("; ")))
    };
    schedules::finish_run(
        conn,
        run,
        status,
        &result.to_string(),
        error.as_deref(),
        now,
    )?;
    // The settings as `action::check` reads them (one place for the default).
    let alerting = matches!(
        checked_action(schedule),
        Ok(Action::HealthCheck {
            alert_on_failure: true
        })
    );
    if status == RunStatus::Failed && alerting {
        audit::append(
            conn,
            &as_schedule(signer, schedule),
            &audit::project_chain(&schedule.project_id),
            "schedule.alert",
            None,
            json!({
                "schedule": {"id": schedule.id, "name": schedule.name},
                "run": run.id,
                "failures": failures,
            }),
        )?;
        return Ok(RunFinish::Finished(Some(Alert {
            project_id: schedule.project_id.clone(),
            schedule_id: schedule.id.clone(),
            schedule_name: schedule.name.clone(),
            failures,
        })));
    }
    Ok(RunFinish::Finished(None))
}

/// Claims one due time and fires it (or records it skipped), in the caller's transaction;
/// `None` if another brain (or an earlier tick) had it. The claim is an `UPDATE … WHERE
/// next_run_at = <due>`: PostgreSQL's row lock makes a second brain re-check and update
/// nothing, SQLite's single writer serialises.
pub fn fire_due_in(
    conn: &mut AnyConnection,
    env: &FireEnv,
    policy: MissedRuns,
    id: &str,
    due_at: i64,
    now: i64,
) -> StoreResult<Option<Fired>> {
    let schedule = schedules::find_any(conn, id)?;
    if schedule.next_run_at != Some(due_at) || !schedule.enabled {
        return Ok(None);
    }
    let cron = CronSchedule::parse(&schedule.cron, &schedule.timezone).ok();
    // The next due time after now, not after this one: missed times never pile up.
    let next = cron.as_ref().and_then(|c| c.next_after(now));
    if !schedules::claim(conn, id, due_at, next, now)? {
        return Ok(None);
    }
    let late = now - due_at > MISSED_AFTER_MS;
    let missed = match (&cron, late) {
        (Some(c), true) => c.count_between(due_at - 1, now, 1000),
        _ => 0,
    };
    Ok(Some(match (late, policy) {
        (true, MissedRuns::Skip) => skip_in(conn, &schedule, due_at, missed, now)?,
        (true, MissedRuns::RunOnce) => fire_in(
            conn,
            env,
            &schedule,
            trigger::CATCH_UP,
            Some(due_at),
            missed,
            now,
        )?,
        (false, _) => fire_in(conn, env, &schedule, trigger::CRON, Some(due_at), 0, now)?,
    }))
}

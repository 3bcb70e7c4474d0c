//! The scheduler loop's work on a running server: each second, fire the due schedules and
//! finish the runs whose commands ended, each in its own write transaction through the domain
//! functions of [`crate::schedules`]; then wake the agents that have new commands and log.

use crate::app::AppState;
use crate::schedules::{DUE_PER_TICK, FireEnv, Fired, RunFinish, finish_open_in, fire_due_in};
use crate::store::StoreResult;
use crate::store::schedules::{self, RunRow};

/// What a firing needs from this server: its keys, command lifetime and connected agents.
pub fn fire_env(state: &AppState) -> FireEnv {
    FireEnv {
        signer: state.keys.clone(),
        secret: state.keys.confirm_secret().to_vec(),
        ttl_ms: state.settings.command_ttl.as_millis() as i64,
        connected: state.hub.online_agents(),
    }
}

/// Fires every due schedule (at most [`DUE_PER_TICK`]) and finishes runs whose commands
/// ended. Returns the runs recorded.
pub async fn tick(state: &AppState, now: i64) -> StoreResult<Vec<RunRow>> {
    let due = state
        .store
        .read("schedules_due", move |conn| {
            schedules::due(conn, now, DUE_PER_TICK)
        })
        .await?;
    let mut runs = Vec::new();
    if !due.is_empty() {
        let env = fire_env(state);
        let policy = state.settings.missed_schedules;
        for (id, due_at) in due {
            let env = env.clone();
            let fired = state
                .store
                .write("schedule_fire", move |conn| {
                    fire_due_in(conn, &env, policy, &id, due_at, now)
                })
                .await?;
            runs.extend(fired.map(|fired| announce(state, fired)));
        }
    }
    finish_open_runs(state, now).await?;
    Ok(runs)
}

/// Wakes the agents a run has commands for, and logs it.
pub fn announce(state: &AppState, fired: Fired) -> RunRow {
    for agent in &fired.wake {
        state.hub.wake(agent);
    }
    let run = fired.run;
    tracing::info!(schedule = %run.schedule_id, run = %run.id, trigger = %run.trigger_kind,
        status = %run.status, "schedule fired");
    if let Some(error) = &run.error {
        tracing::warn!(schedule = %run.schedule_id, run = %run.id, %error, "schedule run failed");
    }
    run
}

/// Finishes runs whose commands all ended; raises health-check alerts.
pub async fn finish_open_runs(state: &AppState, now: i64) -> StoreResult<usize> {
    let signer: crate::store::audit::Signer = state.keys.clone();
    // Read first: most seconds nothing is open, and no write lock is taken.
    let open = state
        .store
        .read("schedule_open_runs", |conn| schedules::open_runs(conn, 200))
        .await?;
    let mut finished = 0;
    let mut alerts = Vec::new();
    // Each run in its own transaction: one that cannot finish does not hold up the others.
    for (run, schedule) in open {
        let signer = signer.clone();
        let id = run.id.clone();
        match state
            .store
            .write("schedule_finish_run", move |conn| {
                finish_open_in(conn, &signer, &run, &schedule, now)
            })
            .await
        {
            Ok(RunFinish::Finished(alert)) => {
                finished += 1;
                alerts.extend(alert);
            }
            Ok(RunFinish::Open) => {}
            Err(err) => tracing::warn!(run = %id, %err, "cannot finish a schedule run"),
        }
    }
    for alert in alerts {
        tracing::warn!(schedule = %alert.schedule_id, name = %alert.schedule_name,
            failures = %alert.failures.join("; "), "ALERT: health check failed");
        state
            .metrics
            .record_alert(&alert.project_id, &alert.schedule_id);
    }
    Ok(finished)
}

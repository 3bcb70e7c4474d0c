//! The server's periodic work, each a loop on its own task:
//! - time out commands whose deadline passed (a signed `command.timed_out` row each);
//! - checkpoint every chain that grew (into `checkpoints.log`), at least every interval, and
//!   then remove the dashboard sessions that ended;
//! - pick up a keyring rotated by `taskward-brain keys rotate` in another process, every half
//!   second, and tell the connected agents (`keyring`);
//! - work through due cleanup steps (project deletions), a few hundred per tick;
//! - fire due schedules and finish the runs whose commands ended (`schedules`);
//! - verify the audit log continuously (`audit_watch`).

pub mod audit_watch;
pub mod keyring;
pub mod schedules;

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, interval};

use crate::app::AppState;
use crate::audit::checkpoint_grown_chains;
use crate::commands::lifecycle::{self, Event};
use crate::store::commands;
use crate::store::{StoreError, StoreResult, now_ms, run_blocking};

/// Most commands timed out per sweep; the rest wait for the next tick.
const SWEEP_BATCH: i64 = 200;

/// Why a command timed out, shown on the command.
pub use taskward_shared::protocol::TIMEOUT_DETAIL;

/// Starts the loops; abort the handles to stop them.
pub fn spawn(state: AppState) -> Vec<JoinHandle<()>> {
    let sweeper = every(state.settings.sweep_interval, &state, |state| async move {
        reload_keys(&state);
        if let Err(err) = time_out_overdue(&state).await {
            tracing::warn!(%err, "timing out overdue commands failed");
        }
    });
    let checkpointer = every(
        state.settings.checkpoint_interval,
        &state,
        |state| async move {
            if let Err(err) = checkpoint_and_reload(&state).await {
                tracing::warn!(%err, "periodic checkpoint failed");
            }
            if let Err(err) = prune_sessions(&state).await {
                tracing::warn!(%err, "removing ended dashboard sessions failed");
            }
        },
    );
    let scheduler = every(SCHEDULE_TICK, &state, |state| async move {
        if let Err(err) = schedules::tick(&state, now_ms()).await {
            tracing::warn!(%err, "firing schedules failed");
        }
    });
    let cleaner = every(CLEANUP_TICK, &state, |state| async move {
        if let Err(err) = run_cleanup_steps(&state, CLEANUP_STEPS_PER_TICK).await {
            tracing::warn!(%err, "cleanup steps failed");
        }
    });
    let keyring = tokio::spawn(keyring::watch_keyring(state.clone()));
    let mut handles = vec![sweeper, checkpointer, scheduler, cleaner, keyring];
    handles.extend(audit_watch::spawn(state));
    handles
}

/// Runs `work` on a task of its own every `period`, from now until the handle is aborted; a
/// tick that comes late (the work took longer) delays the next ones rather than bunching
/// them up. Every loop of the server's periodic work is one of these.
fn every<F, Fut>(period: Duration, state: &AppState, work: F) -> JoinHandle<()>
where
    F: Fn(AppState) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            work(state.clone()).await;
        }
    })
}

/// How often due schedules are looked for (cron's resolution is a minute).
const SCHEDULE_TICK: Duration = Duration::from_secs(1);

/// How often due cleanup steps are looked for.
const CLEANUP_TICK: Duration = Duration::from_millis(500);

/// Most cleanup steps per tick (each a short transaction; other writers interleave).
const CLEANUP_STEPS_PER_TICK: usize = 200;

/// Claims and runs due cleanup steps, at most `max`; a failed step is recorded (retry with
/// backoff, or failed) in a transaction of its own. Returns how many steps ran.
pub async fn run_cleanup_steps(state: &AppState, max: usize) -> StoreResult<usize> {
    use crate::store::cleanup;
    let mut ran = 0;
    while ran < max {
        let Some(task) = state
            .store
            .write("cleanup_claim", |conn| cleanup::claim(conn, now_ms()))
            .await?
        else {
            break;
        };
        ran += 1;
        let step_task = task.clone();
        let result = state
            .store
            .write("cleanup_step", move |conn| {
                cleanup::run_step(conn, &step_task, now_ms())
            })
            .await;
        if let Err(err) = result {
            tracing::warn!(task = %task.id, kind = %task.resource_type, attempts = task.attempts, %err,
                "cleanup step failed");
            let error = err.to_string();
            state
                .store
                .write("cleanup_fail", move |conn| {
                    cleanup::fail(conn, &task, &error, now_ms())
                })
                .await?;
        }
    }
    Ok(ran)
}

/// Times out every open command whose deadline passed. Returns how many.
pub async fn time_out_overdue(state: &AppState) -> StoreResult<usize> {
    let ctx = state.audit_as_system();
    let done = state
        .store
        .write("time_out_commands", move |conn| {
            let overdue = commands::overdue(conn, now_ms(), SWEEP_BATCH)?;
            for command in &overdue {
                lifecycle::record(
                    conn,
                    &ctx,
                    command,
                    Event::DeadlinePassed,
                    Some(TIMEOUT_DETAIL),
                    None,
                )?;
            }
            Ok::<_, StoreError>(overdue.len())
        })
        .await?;
    if done > 0 {
        tracing::info!(commands = done, "timed out overdue commands");
    }
    Ok(done)
}

/// Picks up a keyring rotated by another process (one `stat` when nothing changed).
fn reload_keys(state: &AppState) {
    match state.keys.reload_if_changed() {
        Ok(true) => tracing::info!("signing keyring changed on disk; reloaded"),
        Ok(false) => {}
        Err(err) => tracing::error!(%err, "cannot reload the signing keyring"),
    }
}

/// Removes dashboard sessions that ended (idle or past their absolute end), so the table
/// holds live sessions only; returns how many.
pub async fn prune_sessions(state: &AppState) -> StoreResult<usize> {
    let now = now_ms();
    state
        .store
        .write("prune_sessions", move |conn| {
            crate::store::sessions::delete_expired(conn, now)
        })
        .await
}

/// Checkpoints every chain that grew since its last checkpoint, at the point verified just
/// before (broken chains are skipped).
pub async fn checkpoint_and_reload(state: &AppState) -> StoreResult<usize> {
    let state = state.clone();
    run_blocking(move || {
        reload_keys(&state);
        checkpoint_grown_chains(
            &state.store,
            &state.keys,
            &state.data_dir,
            &state.audit_watch,
        )
    })
    .await
}

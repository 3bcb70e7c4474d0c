//! The audit watch's two loops on a running server: every `audit_watch_interval`, verify the
//! rows each chain gained; every second, sweep `--audit-sweep-rate` rows of the whole log from
//! genesis. After each pass the chains' status goes to `/metrics`.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::every;
use crate::app::AppState;
use crate::store::{StoreResult, run_blocking};

/// How often the sweep takes its share of rows (`audit_sweep_rate` per second).
const SWEEP_TICK: Duration = Duration::from_secs(1);

/// Starts the incremental loop and the sweep loop; abort the handles to stop them.
pub fn spawn(state: AppState) -> Vec<JoinHandle<()>> {
    let incremental = every(
        state.settings.audit_watch_interval,
        &state,
        |state| async move {
            if let Err(err) = check_grown(&state).await {
                tracing::warn!(%err, "verifying new audit rows failed");
            }
        },
    );
    let sweeper = every(SWEEP_TICK, &state, |state| async move {
        let rows = state.settings.audit_sweep_rate;
        if rows == 0 {
            return;
        }
        if let Err(err) = sweep(&state, rows).await {
            tracing::warn!(%err, "sweeping the audit log failed");
        }
    });
    vec![incremental, sweeper]
}

/// Verifies the rows every chain gained since its verified point, then publishes each
/// chain's status. Returns how many chains are broken.
pub async fn check_grown(state: &AppState) -> StoreResult<usize> {
    let app = state.clone();
    run_blocking(move || app.audit_watch.advance_all(&app.store, &app.keys)).await?;
    Ok(publish(state))
}

/// Re-verifies up to `rows` rows of the log from genesis (continuing the last sweep), then
/// publishes each chain's status. Returns the chains swept to their head.
pub async fn sweep(state: &AppState, rows: u64) -> StoreResult<Vec<String>> {
    let app = state.clone();
    let verified = run_blocking(move || app.audit_watch.sweep(&app.store, &app.keys, rows)).await?;
    publish(state);
    Ok(verified)
}

/// Sets `taskward_audit_chain_ok` and `taskward_audit_first_bad_seq` for every chain the watch
/// knows; returns how many are broken.
fn publish(state: &AppState) -> usize {
    let mut broken = 0;
    for (chain, first_bad) in state.audit_watch.chains() {
        broken += usize::from(first_bad.is_some());
        state.metrics.record_audit_chain(&chain, first_bad);
    }
    broken
}

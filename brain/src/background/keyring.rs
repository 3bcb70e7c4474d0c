//! Picks up a keyring rotated by `taskward-brain keys rotate` (in this process or another) and
//! tells the connected agents: the push path of `hub::rotations`.

use tokio::time::{MissedTickBehavior, interval};

use crate::app::AppState;
use crate::hub::rotations::read_rotations;
use crate::keys::RELOAD_EVERY;

/// Re-reads the keyring every [`RELOAD_EVERY`] and, when its keys changed (here or in
/// another loop that reloaded it), publishes the rotation rows to the sessions. Runs until
/// aborted.
pub async fn watch_keyring(state: AppState) {
    let mut tick = interval(RELOAD_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut published: Option<Vec<String>> = None;
    loop {
        tick.tick().await;
        match state.keys.reload_if_changed() {
            Ok(true) => tracing::info!("signing keyring changed on disk; reloaded"),
            Ok(false) => {}
            Err(err) => tracing::error!(%err, "cannot reload the signing keyring"),
        }
        let ids: Vec<String> = state
            .keys
            .public_keys()
            .into_iter()
            .map(|k| k.key_id)
            .collect();
        if published.as_ref() == Some(&ids) {
            continue;
        }
        match read_rotations(&state.store).await {
            Ok(rows) => {
                if published.is_some() {
                    tracing::info!(
                        rotations = rows.len(),
                        "key rotation learned; telling connected agents"
                    );
                }
                state.hub.rotations.publish(rows);
                published = Some(ids);
            }
            Err(err) => tracing::warn!(%err, "cannot read key rotations; trying again"),
        }
    }
}

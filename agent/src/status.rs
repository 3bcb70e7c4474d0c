//! The agent's local status (`<state_dir>/status.json`), written by `run` and printed by
//! `status`, so an operator on the host can see the link without asking the brain.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What `taskward-agent status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `connecting`, `connected` or `disconnected`.
    pub link: String,
    /// The brain's URL.
    pub brain: String,
    /// The current session generation.
    pub session: Option<u64>,
    /// The last command handled: id, kind, outcome.
    pub last_command: Option<LastCommand>,
    /// Results waiting for the brain's acknowledgement.
    pub results_pending: usize,
    /// Command ids remembered by the seen-store.
    pub seen_commands: usize,
    /// Bytes in the event spool (the event stream arrives with the Celery adapter).
    pub spool_bytes: u64,
    /// Events dropped because the spool was full.
    pub dropped_events: u64,
    /// Frames refused as not genuine (bad signature, other audience).
    pub rejected_frames: u64,
    /// The last link error.
    pub last_error: Option<String>,
    /// The engine's broker: `reachable` or `unreachable: <error>` (none without a broker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// When this was written, ms since the epoch.
    pub updated_at_ms: i64,
}

/// The last command handled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastCommand {
    /// Command id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// `succeeded`, `failed`, `refused`, `interrupted`.
    pub outcome: String,
}

impl Status {
    /// Writes the status atomically.
    pub fn save(&self, state_dir: &Path) {
        let tmp = state_dir.join("status.json.tmp");
        let text = serde_json::to_string_pretty(self).expect("status serializes");
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, state_dir.join("status.json"));
        }
    }

    /// Reads the status, if `run` ever wrote one.
    pub fn load(state_dir: &Path) -> Option<Status> {
        let text = std::fs::read_to_string(state_dir.join("status.json")).ok()?;
        serde_json::from_str(&text).ok()
    }
}

//! The agent's status as the link keeps it: every change is stamped and written to
//! `<state_dir>/status.json` at once, so `taskward-agent status` shows the link as it is.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::clock::now_ms;
use crate::status::Status;

/// The shared status and where it is written; cloned into whatever reports on the link.
#[derive(Clone)]
pub(super) struct Board {
    status: Arc<Mutex<Status>>,
    state_dir: PathBuf,
}

impl Board {
    pub fn new(status: Status, state_dir: PathBuf) -> Board {
        Board {
            status: Arc::new(Mutex::new(status)),
            state_dir,
        }
    }

    /// Applies `change`, stamps the time and writes the file.
    pub fn set(&self, change: impl FnOnce(&mut Status)) {
        let mut status = self.status.lock().expect("status lock");
        change(&mut status);
        status.updated_at_ms = now_ms();
        status.save(&self.state_dir);
    }
}

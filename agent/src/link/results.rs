//! Command results: signed with the agent's key and made durable in the seen-store before
//! anything sends them, so a finished command is never reported as interrupted after a crash
//! and a lost link loses nothing (unacknowledged results are resent on every reconnect).

use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
use taskward_shared::command::IssuedCommand;
use taskward_shared::protocol::{CommandResult, Outcome, SignedResult};

use crate::clock::now_ms;
use crate::seen::SeenStore;

/// A finished command, on its way from the task that ran it to the session.
pub(super) struct Finished {
    pub result: SignedResult,
    pub kind: String,
}

/// Signs results and records each in the seen-store.
#[derive(Clone)]
pub(super) struct Recorder {
    key: Arc<SigningKey>,
    agent_id: String,
    seen: Arc<Mutex<SeenStore>>,
}

impl Recorder {
    pub fn new(key: Arc<SigningKey>, agent_id: String, seen: Arc<Mutex<SeenStore>>) -> Recorder {
        Recorder {
            key,
            agent_id,
            seen,
        }
    }

    /// Reports the commands claimed before a crash and never finished as interrupted; they are
    /// never run again.
    pub fn report_interrupted(&self) -> Result<(), String> {
        let mut seen = self.seen.lock().expect("seen lock");
        for (id, row_hash, expires_at_ms) in seen.interrupted() {
            tracing::warn!(command = %id, "command was interrupted by a restart; reporting it, not running it again");
            let result = self.sign(
                0,
                &id,
                &row_hash,
                Outcome::Interrupted,
                "the agent stopped while running it; not run again".into(),
            );
            seen.finish(&id, expires_at_ms, result)
                .map_err(|e| format!("seen-store: {e}"))?;
        }
        Ok(())
    }

    /// Signs the result of `issued` and records it as finished.
    pub fn finish(
        &self,
        session: u64,
        issued: &IssuedCommand,
        row_hash: &str,
        outcome: Outcome,
        detail: String,
    ) -> SignedResult {
        let result = self.sign(session, &issued.id, row_hash, outcome, detail);
        let expires = issued.expires_at().unwrap_or_default();
        if let Err(e) =
            self.seen
                .lock()
                .expect("seen lock")
                .finish(&issued.id, expires, result.clone())
        {
            tracing::error!(error = %e, "cannot record a result");
        }
        result
    }

    fn sign(
        &self,
        session: u64,
        command_id: &str,
        row_hash: &str,
        outcome: Outcome,
        detail: String,
    ) -> SignedResult {
        SignedResult::sign(
            CommandResult {
                command_id: command_id.to_owned(),
                row_hash: row_hash.to_owned(),
                agent_id: self.agent_id.clone(),
                session,
                outcome,
                detail,
                finished_at_ms: now_ms().to_string(),
            },
            &self.key,
        )
    }
}

//! Commands the brain delivers: each is checked (`checks`), claimed in the seen-store before it
//! runs (so it never runs twice), and run on its own task; its signed result reaches the session
//! through a channel. Refusals and replays are answered at once.

use std::sync::{Arc, Mutex};

use taskward_shared::audit::AuditRow;
use taskward_shared::audit::verify::TrustedKeys;
use taskward_shared::command::IssuedCommand;
use taskward_shared::protocol::{AgentFrame, Outcome, SignedResult};
use tokio::sync::mpsc;

use crate::checks::{CheckContext, Verdict, check};
use crate::clock::now_ms;
use crate::config::AgentConfig;
use crate::engines::EngineAdapter;
use crate::seen::{Entry, SeenStore};
use crate::status::LastCommand;

use super::board::Board;
use super::results::{Finished, Recorder};

/// What deciding about and running a command needs; lives as long as the agent.
pub(super) struct Commands {
    agent_id: String,
    project_id: String,
    /// Allowed clock difference, ms.
    skew_ms: i64,
    seen: Arc<Mutex<SeenStore>>,
    engine: Arc<dyn EngineAdapter>,
    recorder: Recorder,
    results_tx: mpsc::UnboundedSender<Finished>,
    board: Board,
}

impl Commands {
    pub fn new(
        config: &AgentConfig,
        seen: Arc<Mutex<SeenStore>>,
        engine: Arc<dyn EngineAdapter>,
        recorder: Recorder,
        results_tx: mpsc::UnboundedSender<Finished>,
        board: Board,
    ) -> Commands {
        Commands {
            agent_id: config.agent_id.clone(),
            project_id: config.project_id.clone(),
            skew_ms: config.clock_skew_secs as i64 * 1000,
            seen,
            engine,
            recorder,
            results_tx,
            board,
        }
    }

    /// Decides about a command delivered in `session`, checking its signature against `keys`;
    /// returns the frame to answer with right away.
    pub fn on_command(
        &self,
        keys: &TrustedKeys,
        session: u64,
        row: AuditRow,
    ) -> Option<AgentFrame> {
        let now = now_ms();
        let ctx = CheckContext {
            keys,
            agent_id: &self.agent_id,
            project_id: &self.project_id,
            skew_ms: self.skew_ms,
        };
        let verdict = {
            let seen = self.seen.lock().expect("seen lock");
            check(&ctx, &row, &seen, now)
        };
        match verdict {
            Verdict::Reject { claimed_id, reason } => {
                tracing::warn!(command = ?claimed_id, %reason, "refused a frame that is not a genuine command for this agent");
                self.board.set(|s| s.rejected_frames += 1);
                Some(AgentFrame::Rejected {
                    claimed_command_id: claimed_id,
                    reason,
                })
            }
            Verdict::Seen { id } => {
                tracing::warn!(command = %id, "command id seen before; not run again");
                let seen = self.seen.lock().expect("seen lock");
                match seen.get(&id) {
                    Some(Entry::Done { result, .. }) => Some(AgentFrame::Result(result.clone())),
                    _ => None,
                }
            }
            Verdict::Refuse { issued, reason } => {
                tracing::warn!(command = %issued.id, %reason, "refused a command");
                if !self.claim(&issued, &row.hash, issued.expires_at().unwrap_or_default()) {
                    return None;
                }
                let result =
                    self.recorder
                        .finish(session, &issued, &row.hash, Outcome::Refused, reason);
                Some(self.answered(&issued, result))
            }
            Verdict::Run { issued, command } => {
                if !self.claim(&issued, &row.hash, issued.expires_at().unwrap_or(now)) {
                    return None;
                }
                if !self.engine.supports(command.kind()) {
                    let detail = format!(
                        "{} is not supported by the {} engine",
                        command.kind(),
                        self.engine.name()
                    );
                    let result =
                        self.recorder
                            .finish(session, &issued, &row.hash, Outcome::Failed, detail);
                    return Some(self.answered(&issued, result));
                }
                tracing::info!(command = %issued.id, kind = %command.kind(), "running command");
                let (engine, recorder, tx) = (
                    self.engine.clone(),
                    self.recorder.clone(),
                    self.results_tx.clone(),
                );
                let row_hash = row.hash.clone();
                tokio::spawn(async move {
                    let (outcome, detail) = match engine.execute(&command, &issued).await {
                        Ok(detail) => (Outcome::Succeeded, detail),
                        Err(error) => (Outcome::Failed, error.to_string()),
                    };
                    let result = recorder.finish(session, &issued, &row_hash, outcome, detail);
                    let _ = tx.send(Finished {
                        result,
                        kind: command.kind().to_string(),
                    });
                });
                Some(AgentFrame::Claimed {
                    command_id: row.command_id.clone().unwrap_or_default(),
                })
            }
        }
    }

    /// Records the command as seen (fsync'ed) before anything else happens to it; false when
    /// it was already claimed or the record failed (then it must not run).
    fn claim(&self, issued: &IssuedCommand, row_hash: &str, expires: i64) -> bool {
        let claimed = self
            .seen
            .lock()
            .expect("seen lock")
            .claim(&issued.id, row_hash, expires);
        match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::error!(error = %e, "cannot record the command; not running it");
                false
            }
        }
    }

    /// Shows a command finished at once (refusals, unsupported kinds) in the status and
    /// answers with its result.
    fn answered(&self, issued: &IssuedCommand, result: SignedResult) -> AgentFrame {
        let outcome = format!("{:?}", result.result.outcome).to_lowercase();
        self.board.set(|s| {
            s.last_command = Some(LastCommand {
                id: issued.id.clone(),
                kind: issued.kind.to_string(),
                outcome,
            })
        });
        AgentFrame::Result(result)
    }
}

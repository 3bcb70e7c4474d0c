//! The link to the brain: one session at a time over a WebSocket, reconnecting with capped
//! exponential backoff and full jitter, to each of the configured brains in turn. A session
//! authenticates (credential in the upgrade request, then the agent's signature over the brain's
//! challenge), learns key rotations (all of them at connect, then each as the brain pushes it),
//! resends results the brain has not acknowledged, and then takes commands.
//!
//! Commands run on their own tasks; their results are written to the seen-store first (so a
//! lost link loses nothing) and then sent, and resent on every reconnect until acknowledged.
//!
//! The parts, each depending only on those listed before it:
//! - `wire`: the socket, and one frame sent or received;
//! - `handshake`: opening a session (upgrade, challenge, signed hello, welcome);
//! - `rotation`: which brain is tried next, and the backoff before it;
//! - `board`: the local status file, kept current;
//! - `events`: updates batched into the spool, and sent under a window of unacknowledged batches;
//! - `results`: signed results, durable before they are sent;
//! - `commands`: checking, claiming and running a delivered command;
//! - `session`: the agent's state and one session, serving all of the above;
//! - this module: [`run`], the reconnect loop.

mod board;
mod commands;
mod events;
mod handshake;
mod results;
mod rotation;
mod session;
mod wire;

use std::time::Duration;

use crate::config::AgentConfig;

use session::{Agent, SessionEnd};

/// Why `run` returned.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The agent could not start (files, keys).
    #[error("{0}")]
    Setup(String),
    /// Another process with this identity connected; this one steps aside.
    #[error("another agent process with this identity connected; this one stops")]
    Replaced,
}

/// Runs the agent until it is replaced by another process with the same identity (or fails to
/// start). Link failures are retried forever.
pub async fn run(config: AgentConfig) -> Result<(), RunError> {
    let mut agent = Agent::start(config).await.map_err(RunError::Setup)?;
    let cap = Duration::from_secs(agent.config.reconnect_max_secs.max(1));
    loop {
        let brain = agent.brains.current().base().to_owned();
        agent.board.set(|s| {
            s.link = "connecting".into();
            s.brain = brain.clone();
        });
        let Err(end) = agent.session().await;
        agent.board.set(|s| {
            s.link = "disconnected".into();
            s.session = None;
        });
        let established = match end {
            SessionEnd::Replaced => return Err(RunError::Replaced),
            SessionEnd::Failed {
                reason,
                established,
            } => {
                tracing::warn!(%reason, %brain, "link to the brain lost");
                agent.board.set(|s| s.last_error = Some(reason));
                established
            }
        };
        tokio::time::sleep(agent.brains.next(established, cap)).await;
    }
}

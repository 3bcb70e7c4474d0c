//! The adapter of an agent with no engine configured: it links to the brain, and refuses every
//! command with a reason an operator can act on.

use taskward_shared::command::{Command, CommandKind, IssuedCommand};

use super::{BoxFuture, EngineAdapter, EngineError};

/// No engine.
pub struct NoEngine;

impl EngineAdapter for NoEngine {
    fn name(&self) -> &'static str {
        "none"
    }

    fn supports(&self, _kind: CommandKind) -> bool {
        false
    }

    fn execute<'a>(
        &'a self,
        _command: &'a Command,
        _issued: &'a IssuedCommand,
    ) -> BoxFuture<'a, Result<String, EngineError>> {
        Box::pin(async {
            Err(EngineError::Refused(
                "no engine adapter is configured on this agent".to_owned(),
            ))
        })
    }
}

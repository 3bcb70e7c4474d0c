//! What a command must pass before it runs. Nothing here trusts the brain's word: the row's
//! signature is checked with keys the agent pinned, the audience must be this agent, the
//! command must not have expired (with a clock-skew allowance), must not have been seen, and its
//! payload is validated again.

use taskward_shared::audit::AuditRow;
use taskward_shared::audit::verify::TrustedKeys;
use taskward_shared::command::{Command, IssuedCommand};

use crate::seen::SeenStore;
use crate::trust::verify_row_signature;

/// The decision about one delivered command.
#[derive(Debug)]
pub enum Verdict {
    /// Run it.
    Run {
        /// What the signed row says.
        issued: IssuedCommand,
        /// The typed command.
        command: Command,
    },
    /// A genuine command for this agent that must not run (expired, invalid): answered with a
    /// signed `refused` result so the reason shows on the command.
    Refuse {
        /// What the signed row says.
        issued: IssuedCommand,
        /// Why.
        reason: String,
    },
    /// Not a genuine command for this agent (bad signature, other audience): reported to the
    /// brain as rejected, never answered with a result.
    Reject {
        /// The id the frame claimed.
        claimed_id: Option<String>,
        /// Why.
        reason: String,
    },
    /// Seen before: never run again.
    Seen {
        /// The command id.
        id: String,
    },
}

/// Who this agent is, and what it trusts.
pub struct CheckContext<'a> {
    /// Keys to verify brain signatures with.
    pub keys: &'a TrustedKeys,
    /// This agent's id.
    pub agent_id: &'a str,
    /// This agent's project.
    pub project_id: &'a str,
    /// Allowed clock difference, ms.
    pub skew_ms: i64,
}

/// Checks a delivered command row.
pub fn check(ctx: &CheckContext<'_>, row: &AuditRow, seen: &SeenStore, now_ms: i64) -> Verdict {
    let claimed_id = row.command_id.clone();
    let reject = |reason: String| Verdict::Reject {
        claimed_id: claimed_id.clone(),
        reason,
    };
    let statement = match verify_row_signature(ctx.keys, row) {
        Ok(statement) => statement,
        Err(reason) => return reject(reason),
    };
    if statement.kind != "command.issued" {
        return reject(format!("a {} row is not a command", statement.kind));
    }
    let issued: IssuedCommand = match serde_json::from_value(statement.payload["command"].clone()) {
        Ok(issued) => issued,
        Err(e) => return reject(format!("malformed command: {e}")),
    };
    if statement.command_id.as_deref() != Some(issued.id.as_str()) {
        return reject("the row and its command disagree on the command id".into());
    }
    if issued.audience != ctx.agent_id {
        return reject(format!(
            "addressed to agent {}, not this one",
            issued.audience
        ));
    }
    if issued.project_id != ctx.project_id {
        return reject(format!(
            "for project {}, not this agent's",
            issued.project_id
        ));
    }
    if seen.get(&issued.id).is_some() {
        return Verdict::Seen { id: issued.id };
    }
    let (Some(issued_at), Some(expires_at)) = (issued.issued_at(), issued.expires_at()) else {
        return reject("command without valid issue and expiry times".into());
    };
    if now_ms > expires_at + ctx.skew_ms {
        return Verdict::Refuse {
            reason: format!("expired {} ms ago", now_ms - expires_at),
            issued,
        };
    }
    if issued_at > now_ms + ctx.skew_ms {
        return Verdict::Refuse {
            reason: format!(
                "issued {} ms in this agent's future: the clocks differ by more than the allowed skew",
                issued_at - now_ms
            ),
            issued,
        };
    }
    match issued.command() {
        Ok(command) => Verdict::Run { issued, command },
        Err(e) => Verdict::Refuse {
            reason: format!("invalid payload: {e}"),
            issued,
        },
    }
}

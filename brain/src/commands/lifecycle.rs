//! A command's life as one status machine. Every move — the agent claimed it, the agent's
//! signed result arrived, its deadline passed — goes through [`transition`], a pure function
//! of the current status and the event, and then through [`record`], which writes what the
//! transition says (a signed outcome row and the status cache, in the caller's transaction).
//!
//! ```text
//! issued ──claimed──▶ dispatched ──result──▶ succeeded | failed
//!    │                    │
//!    └──────result────────┤
//!    └──────deadline──────┴───────────────▶ timed_out
//! ended + result (first time) ─▶ recorded as late, status unchanged; later ones ignored
//! ```

use taskward_shared::protocol::{Outcome, SignedResult};

use crate::store::audit::{self, AuditContext};
use crate::store::commands::{self, CommandRecord, CommandStatus};
use crate::store::{AnyConnection, StoreError, StoreResult};

/// What happened to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The agent recorded it in its seen-store and will run it (at most once).
    Claimed,
    /// The agent's signed result: it worked.
    Succeeded,
    /// The agent's signed result: it failed, was refused or was interrupted.
    Failed,
    /// No result by the command's deadline (the timeout sweeper).
    DeadlinePassed,
}

/// What to do about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Move to this status (a signed outcome row, then the status cache).
    To(CommandStatus),
    /// A result after the command ended: record it once, as late, status unchanged.
    Late(CommandStatus),
    /// Nothing to record (a repeated claim, a claim after the result, a second late result,
    /// a deadline after the end).
    Ignore,
}

/// The status machine (see the module header). `already_late`: a late result was recorded
/// before, so another one is ignored (an agent cannot grow the log without bound).
pub fn transition(current: CommandStatus, already_late: bool, event: Event) -> Transition {
    use CommandStatus::{Dispatched, Failed, Issued, Succeeded, TimedOut};
    let result = match event {
        Event::Succeeded => Some(Succeeded),
        Event::Failed => Some(Failed),
        Event::Claimed | Event::DeadlinePassed => None,
    };
    match (current, event, result) {
        (Issued, Event::Claimed, _) => Transition::To(Dispatched),
        (Issued | Dispatched, Event::DeadlinePassed, _) => Transition::To(TimedOut),
        (Issued | Dispatched, _, Some(status)) => Transition::To(status),
        (Succeeded | Failed | TimedOut, _, Some(status)) if !already_late => {
            Transition::Late(status)
        }
        _ => Transition::Ignore,
    }
}

/// Applies `event` to `command` in the caller's transaction: appends the signed outcome row
/// (`command.<status>`, with the detail and the agent's signed result as evidence) and moves
/// the status cache, or marks a late result. Returns the command as it now is, or `None` when
/// the event changed nothing.
///
/// `command` may be stale (read before another transaction moved it): the store's conditional
/// update then refuses, and the event is decided again on the command as it is now, so a
/// result racing the timeout sweeper or another result is recorded at most once, as late.
pub fn record(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    command: &CommandRecord,
    event: Event,
    detail: Option<&str>,
    evidence: Option<serde_json::Value>,
) -> StoreResult<Option<CommandRecord>> {
    let mut current = command.clone();
    // A command moves at most twice more (to an end, then late), so three looks suffice.
    for _ in 0..3 {
        let (status, late) = match transition(current.status, current.late, event) {
            Transition::Ignore => return Ok(None),
            Transition::To(status) => (status, false),
            Transition::Late(status) => (status, true),
        };
        if let Some(updated) =
            commands::record_outcome(conn, ctx, &current, status, late, detail, evidence.clone())?
        {
            return Ok(Some(updated));
        }
        current = commands::find_any(conn, &current.id)?;
    }
    Ok(None)
}

/// The event and the detail an agent's result stands for, by the table the verifier holds
/// rows to ([`Outcome::recorded`]): a refusal or an interruption is a failure, its detail
/// saying which.
pub fn result_event(result: &SignedResult) -> (Event, String) {
    let recorded = result.result.outcome.recorded();
    let event = match result.result.outcome {
        Outcome::Succeeded => Event::Succeeded,
        Outcome::Failed | Outcome::Refused | Outcome::Interrupted => Event::Failed,
    };
    debug_assert_eq!(recorded.status == "succeeded", event == Event::Succeeded);
    (event, recorded.detail(&result.result.detail))
}

/// Records an agent's verified result as its command's outcome. `Ok(false)` when the result
/// does not belong to this agent's command (logged, not acknowledged); a result already
/// recorded (the agent resends until acknowledged) is acknowledged again without a new row.
pub fn record_result(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    agent_id: &str,
    agent_name: &str,
    signed: &SignedResult,
) -> StoreResult<bool> {
    // Locked: two results for one command (a resend racing the first, or two different
    // results) are decided one after the other, each seeing what the other recorded.
    let command = match commands::find_any_locked(conn, &signed.result.command_id) {
        Err(StoreError::NotFound) => {
            tracing::warn!(agent = %agent_name, command = %signed.result.command_id,
                "result for an unknown command ignored");
            return Ok(false);
        }
        other => other?,
    };
    let issued = audit::row_at(conn, &command.audit_chain, command.audit_seq as u64)?;
    if command.agent_id != agent_id || issued.hash != signed.result.row_hash {
        tracing::warn!(agent = %agent_name, command = %command.id,
            "result does not match the command it names");
        return Ok(false);
    }
    let already = audit::rows_of_command(conn, &command.audit_chain, &command.id)?
        .iter()
        .any(|row| row.statement.contains(&signed.signature));
    if already {
        return Ok(true);
    }
    let (event, detail) = result_event(signed);
    let evidence = serde_json::to_value(signed).expect("results serialize");
    record(conn, ctx, &command, event, Some(&detail), Some(evidence))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use CommandStatus::*;

    /// Every (status, late, event) pair, with what must happen.
    #[test]
    fn every_status_and_event_has_one_transition() {
        let cases: &[(CommandStatus, bool, Event, Transition)] = &[
            (Issued, false, Event::Claimed, Transition::To(Dispatched)),
            (Issued, false, Event::Succeeded, Transition::To(Succeeded)),
            (Issued, false, Event::Failed, Transition::To(Failed)),
            (
                Issued,
                false,
                Event::DeadlinePassed,
                Transition::To(TimedOut),
            ),
            (Dispatched, false, Event::Claimed, Transition::Ignore),
            (
                Dispatched,
                false,
                Event::Succeeded,
                Transition::To(Succeeded),
            ),
            (Dispatched, false, Event::Failed, Transition::To(Failed)),
            (
                Dispatched,
                false,
                Event::DeadlinePassed,
                Transition::To(TimedOut),
            ),
            (Succeeded, false, Event::Claimed, Transition::Ignore),
            (
                Succeeded,
                false,
                Event::Succeeded,
                Transition::Late(Succeeded),
            ),
            (Succeeded, false, Event::Failed, Transition::Late(Failed)),
            (Succeeded, false, Event::DeadlinePassed, Transition::Ignore),
            (Failed, false, Event::Claimed, Transition::Ignore),
            (Failed, false, Event::Succeeded, Transition::Late(Succeeded)),
            (Failed, false, Event::Failed, Transition::Late(Failed)),
            (Failed, false, Event::DeadlinePassed, Transition::Ignore),
            (TimedOut, false, Event::Claimed, Transition::Ignore),
            (
                TimedOut,
                false,
                Event::Succeeded,
                Transition::Late(Succeeded),
            ),
            (TimedOut, false, Event::Failed, Transition::Late(Failed)),
            (TimedOut, false, Event::DeadlinePassed, Transition::Ignore),
        ];
        for &(status, late, event, want) in cases {
            assert_eq!(
                transition(status, late, event),
                want,
                "{status} + {event:?}"
            );
        }
        // The table covers every pair once.
        assert_eq!(cases.len(), CommandStatus::ALL.len() * 4);
    }

    /// Once a late result is recorded, no further result changes anything; open commands are
    /// never late.
    #[test]
    fn a_second_late_result_is_ignored() {
        for status in [Succeeded, Failed, TimedOut] {
            for event in [Event::Succeeded, Event::Failed] {
                assert_eq!(transition(status, true, event), Transition::Ignore);
            }
        }
        assert_eq!(
            transition(Issued, true, Event::Succeeded),
            Transition::To(Succeeded)
        );
    }
}

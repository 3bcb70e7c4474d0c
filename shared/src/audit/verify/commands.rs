//! What the rows of a project chain say about agents and commands, checked against each other:
//! an agent's enrolled key (`agent.enrolled`), each command's issued row, and each outcome row.
//!
//! An outcome an agent reported carries the agent's own signed result (`payload.agent_result`).
//! Whoever holds the brain's key can re-sign rows but cannot sign as an agent, so the result
//! must verify with the key the agent enrolled earlier in the same chain, and must say what the
//! row says: the same command, the hash of that command's issued row, the command's audience,
//! the same outcome. An outcome row an agent's result stands behind must carry that result.

use std::collections::HashMap;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Problem;
use super::format::lower_hex;
use super::kinds::{self, SIGNED_RESULT, Type};
use super::signatures::{Pending, Signer};
use crate::audit::canonical;
use crate::audit::{Hash, Statement};
use crate::command::{Command, CommandKind};
use crate::crypto::{key_id, parse_public_key};
use crate::protocol::{CommandResult, RESULT_TAG, SignedResult, TIMEOUT_DETAIL, result_message};

/// A command's status, as its rows so far leave it (the brain's `commands::lifecycle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Issued,
    Dispatched,
    Succeeded,
    Failed,
    TimedOut,
}

impl Status {
    fn parse(text: &str) -> Option<Status> {
        Some(match text {
            "issued" => Status::Issued,
            "dispatched" => Status::Dispatched,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            "timed_out" => Status::TimedOut,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Status::Issued => "issued",
            Status::Dispatched => "dispatched",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
        }
    }

    fn open(self) -> bool {
        matches!(self, Status::Issued | Status::Dispatched)
    }
}

/// One command as its rows so far tell it.
struct CommandState {
    issued_hash: Hash,
    audience: String,
    status: Status,
    late: bool,
}

/// The members of `payload.command` in a `command.issued` row; `resolved` only for the kinds
/// the brain resolves something for.
const COMMAND: &[(&str, Type)] = &[
    ("id", Type::Str),
    ("project_id", Type::Str),
    ("audience", Type::Str),
    ("kind", Type::Str),
    ("payload", Type::AnyObject),
    ("issued_at_ms", Type::Decimal),
    ("expires_at_ms", Type::Decimal),
    ("critical", Type::Bool),
    ("global_throttle", Type::Bool),
    ("bound_depth", Type::OrNull(&Type::Decimal)),
    ("idempotency_key", Type::OrNull(&Type::Str)),
];
const COMMAND_RESOLVED: &[(&str, Type)] = &[
    ("id", Type::Str),
    ("project_id", Type::Str),
    ("audience", Type::Str),
    ("kind", Type::Str),
    ("payload", Type::AnyObject),
    ("issued_at_ms", Type::Decimal),
    ("expires_at_ms", Type::Decimal),
    ("critical", Type::Bool),
    ("global_throttle", Type::Bool),
    ("bound_depth", Type::OrNull(&Type::Decimal)),
    ("idempotency_key", Type::OrNull(&Type::Str)),
    ("resolved", Type::AnyObject),
];

/// Agents' keys and commands seen so far in one chain.
pub(super) struct Ledger {
    /// The project the chain belongs to (`project:<id>`), if it is a project chain.
    project_id: Option<String>,
    /// Whether the ledger saw the chain from its first row; a resumed verifier did not, and
    /// cannot hold commands and agents from before it to these rules.
    complete: bool,
    agents: HashMap<String, VerifyingKey>,
    commands: HashMap<String, CommandState>,
}

impl Ledger {
    pub fn new(chain: &str, complete: bool) -> Ledger {
        Ledger {
            project_id: chain.strip_prefix("project:").map(str::to_owned),
            complete,
            agents: HashMap::new(),
            commands: HashMap::new(),
        }
    }

    /// Checks a row's meaning against the rows before it and records what it adds. Returns the
    /// agent signature to check, if the row carries one. The row's kind, actor and payload
    /// members were checked already ([`kinds::check`]).
    pub fn check(
        &mut self,
        seq: u64,
        statement: &Statement,
        hash: &Hash,
    ) -> Result<Option<Pending>, Problem> {
        match statement.kind.as_str() {
            "agent.enrolled" => self.enrolled(statement).map(|()| None),
            "command.issued" => self.issued(statement, hash).map(|()| None),
            kind => match kind.strip_prefix("command.").and_then(Status::parse) {
                Some(status) => self.outcome(seq, statement, status),
                None => Ok(None),
            },
        }
    }

    fn enrolled(&mut self, statement: &Statement) -> Result<(), Problem> {
        let bad = |why: &str| Problem::Malformed(format!("agent.enrolled: {why}"));
        let payload = &statement.payload;
        let agent = payload["agent"]["id"]
            .as_str()
            .ok_or_else(|| bad("no agent.id"))?;
        if statement.actor.id != agent {
            return Err(Problem::Actor(format!(
                "agent {agent} enrolled by {:?}, not by itself",
                statement.actor.id
            )));
        }
        let public = payload["public_key"]
            .as_str()
            .ok_or_else(|| bad("no public_key"))?;
        if lower_hex::<32>(public).is_none() {
            return Err(Problem::NotLowerHex("payload.public_key"));
        }
        let key = parse_public_key(public).map_err(|e| bad(&e))?;
        if payload["key_id"].as_str() != Some(key_id(&key).as_str()) {
            return Err(bad("key_id does not belong to public_key"));
        }
        if self.agents.insert(agent.to_owned(), key).is_some() {
            return Err(bad(&format!("agent {agent} enrolled a second time")));
        }
        Ok(())
    }

    fn issued(&mut self, statement: &Statement, hash: &Hash) -> Result<(), Problem> {
        let id = statement.command_id.as_deref().unwrap_or_default();
        let bad = |why: String| Problem::Payload(format!("command.issued: {why}"));
        let value = &statement.payload["command"];
        let object = value.as_object().ok_or_else(|| bad("no command".into()))?;
        let shape = match object.contains_key("resolved") {
            true => COMMAND_RESOLVED,
            false => COMMAND,
        };
        kinds::members(object, shape, "command").map_err(bad)?;
        // Read in place (the members' types are checked): no copy of the command per row.
        let text = |name: &str| object[name].as_str().unwrap_or_default();
        let kind: CommandKind = text("kind")
            .parse()
            .map_err(|e: String| bad(format!("command: {e}")))?;
        Command::from_parts(kind, &object["payload"])
            .map_err(|e| bad(format!("the payload is not a {kind}'s: {e}")))?;
        if object.contains_key("resolved")
            && !matches!(kind, CommandKind::RetryTask | CommandKind::BulkRetry)
        {
            return Err(bad(format!("a {kind} carries `resolved`")));
        }
        let named = text("id");
        if named != id {
            return Err(Problem::Command(format!(
                "issued row for {id} carries command {named}"
            )));
        }
        let project = text("project_id");
        if let Some(chain_project) = &self.project_id
            && project != chain_project
        {
            return Err(Problem::Command(format!(
                "command {id} of project {project} issued in the chain of {chain_project}"
            )));
        }
        if self.commands.contains_key(id) {
            return Err(Problem::Command(format!("command {id} issued twice")));
        }
        self.commands.insert(
            id.to_owned(),
            CommandState {
                issued_hash: *hash,
                audience: text("audience").to_owned(),
                status: Status::Issued,
                late: false,
            },
        );
        Ok(())
    }

    fn outcome(
        &mut self,
        seq: u64,
        statement: &Statement,
        status: Status,
    ) -> Result<Option<Pending>, Problem> {
        let id = statement.command_id.as_deref().unwrap_or_default();
        let payload = statement.payload.as_object().expect("checked by kinds");
        let said = payload["status"].as_str().unwrap_or_default();
        if said != status.as_str() {
            return Err(Problem::Command(format!(
                "row kind says {} but its payload says {said}",
                status.as_str()
            )));
        }
        let late = payload["late"].as_bool() == Some(true);
        let detail = payload["detail"].as_str();
        let result = agent_result(payload, status)?;
        if let Some(signed) = &result {
            held_to_result(statement, status, detail, &signed.result)?;
        } else {
            no_result(status, detail)?;
        }
        let Some(command) = self.commands.get_mut(id) else {
            if self.complete {
                return Err(Problem::Command(format!(
                    "outcome for command {id}, not issued earlier in the chain"
                )));
            }
            // Issued before a resumed verifier's start: nothing to hold the result to.
            return Ok(None);
        };
        next_status(id, command, status, late, payload)?;
        if statement.actor.kind == crate::audit::ActorKind::Agent
            && statement.actor.id != command.audience
        {
            return Err(Problem::Actor(format!(
                "{} by agent {}, not the command's audience {}",
                statement.kind, statement.actor.id, command.audience
            )));
        }
        let Some(signed) = result else {
            return Ok(None);
        };
        let r = &signed.result;
        let Some(key) = self.agents.get(&r.agent_id) else {
            if self.complete {
                return Err(Problem::AgentResult(format!(
                    "agent {} has no key enrolled earlier in the chain",
                    r.agent_id
                )));
            }
            return Ok(None);
        };
        if lower_hex::<32>(&r.row_hash) != Some(command.issued_hash) {
            return Err(Problem::AgentResult(
                "the agent's result names another issued row than the command's".into(),
            ));
        }
        if command.audience != r.agent_id {
            return Err(Problem::AgentResult(format!(
                "the result is from agent {}, not the command's audience",
                r.agent_id
            )));
        }
        let signature =
            lower_hex::<64>(&signed.signature).ok_or(Problem::NotLowerHex("agent signature"))?;
        Ok(Some(Pending {
            seq,
            signer: Signer::Agent,
            message: signed_message(r),
            signature: Signature::from_bytes(&signature),
            key: *key,
        }))
    }
}

/// Moves `command` by an outcome row, as the status machine of `docs/protocol.md` allows:
/// `dispatched` only from `issued`; an end (`succeeded`, `failed`, `timed_out`) from `issued`
/// or `dispatched`; then at most one late result, status unchanged. `previous_status` must be
/// the status the earlier rows left.
fn next_status(
    id: &str,
    command: &mut CommandState,
    status: Status,
    late: bool,
    payload: &Map<String, Value>,
) -> Result<(), Problem> {
    let previous = payload["previous_status"].as_str().unwrap_or_default();
    if previous != command.status.as_str() {
        return Err(Problem::Command(format!(
            "previous_status says {previous} but command {id}'s earlier rows left it {}",
            command.status.as_str()
        )));
    }
    if late {
        if !matches!(status, Status::Succeeded | Status::Failed) {
            return Err(Problem::Command(format!(
                "a late {} row (only an agent's result arrives late)",
                status.as_str()
            )));
        }
        if command.status.open() {
            return Err(Problem::Command(format!(
                "late outcome for command {id}, which had not ended"
            )));
        }
        if command.late {
            return Err(Problem::SecondLate(id.to_owned()));
        }
        command.late = true;
        return Ok(());
    }
    let allowed = match status {
        Status::Issued => false,
        Status::Dispatched => command.status == Status::Issued,
        Status::Succeeded | Status::Failed | Status::TimedOut => command.status.open(),
    };
    if !allowed {
        return Err(Problem::Command(format!(
            "command {id} cannot go from {} to {}",
            command.status.as_str(),
            status.as_str()
        )));
    }
    command.status = status;
    Ok(())
}

/// The agent's signed result of an outcome row: exactly `{result, signature}` with the seven
/// members of a result, present on `succeeded`/`failed` and `null` otherwise.
fn agent_result(
    payload: &Map<String, Value>,
    status: Status,
) -> Result<Option<SignedResult>, Problem> {
    let value = &payload["agent_result"];
    let wants_result = matches!(status, Status::Succeeded | Status::Failed);
    match (value.as_object(), wants_result) {
        (None, false) => Ok(None),
        (Some(_), false) => Err(Problem::AgentResult(format!(
            "a {} row carries an agent's result",
            status.as_str()
        ))),
        (None, true) => Err(Problem::AgentResult(format!(
            "a {} outcome without the agent's signed result",
            status.as_str()
        ))),
        (Some(object), true) => {
            kinds::members(object, SIGNED_RESULT, "agent_result").map_err(Problem::AgentResult)?;
            SignedResult::deserialize(value)
                .map(Some)
                .map_err(|e| Problem::AgentResult(format!("agent_result: {e}")))
        }
    }
}

/// A row with the agent's result says what the brain derives from it ([`Outcome::recorded`]):
/// its kind and detail, for the command the row names, caused by the agent that signed it.
///
/// [`Outcome::recorded`]: crate::protocol::Outcome::recorded
fn held_to_result(
    statement: &Statement,
    status: Status,
    detail: Option<&str>,
    result: &CommandResult,
) -> Result<(), Problem> {
    let id = statement.command_id.as_deref().unwrap_or_default();
    if result.command_id != id {
        return Err(Problem::AgentResult(format!(
            "the agent's result is for command {}",
            result.command_id
        )));
    }
    if statement.actor.id != result.agent_id {
        return Err(Problem::Actor(format!(
            "the row is by {:?} but the result was signed by agent {}",
            statement.actor.id, result.agent_id
        )));
    }
    let recorded = result.outcome.recorded();
    if recorded.status != status.as_str() {
        return Err(Problem::AgentResult(format!(
            "the agent reported {:?} but the row says {}",
            result.outcome,
            status.as_str()
        )));
    }
    if !detail.is_some_and(|d| recorded.detail_matches(d, &result.detail)) {
        return Err(Problem::AgentResult(format!(
            "the row's detail is not what the brain derives from the agent's ({:?})",
            recorded.detail(&result.detail)
        )));
    }
    Ok(())
}

/// A row without an agent's result has the detail its kind fixes: none when dispatched, the
/// timeout text when timed out.
fn no_result(status: Status, detail: Option<&str>) -> Result<(), Problem> {
    let want = match status {
        Status::TimedOut => Some(TIMEOUT_DETAIL),
        _ => None,
    };
    if detail != want {
        return Err(Problem::Command(format!(
            "a {} row's detail must be {}",
            status.as_str(),
            want.map_or("null".to_owned(), |w| format!("{w:?}"))
        )));
    }
    Ok(())
}

/// The bytes the agent signed ([`result_message`]), built with the fast canonical encoder.
fn signed_message(result: &CommandResult) -> Vec<u8> {
    let value = serde_json::to_value(result).expect("results serialize");
    let Some(body) = canonical::encode(&value) else {
        return result_message(result);
    };
    let mut message = Vec::with_capacity(RESULT_TAG.len() + 4 + body.len());
    message.extend_from_slice(RESULT_TAG);
    message.extend_from_slice(&(body.len() as u32).to_be_bytes());
    message.extend_from_slice(&body);
    message
}

/// [`signed_message`] for the tests that hold it to the agent's own encoding.
#[cfg(test)]
pub(super) fn signed_message_for_test(result: &CommandResult) -> Vec<u8> {
    signed_message(result)
}

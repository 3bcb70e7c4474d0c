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
use serde_json::Value;

use super::Problem;
use super::format::lower_hex;
use super::signatures::{Pending, Signer};
use crate::audit::canonical;
use crate::audit::{Hash, Statement};
use crate::crypto::{key_id, parse_public_key};
use crate::protocol::{CommandResult, Outcome, RESULT_TAG, SignedResult, result_message};

/// Outcome statuses that come from an agent's signed result; `refused` and `interrupted` are
/// spelled out here too so rows that name them (rather than `failed`) verify the same way.
const AGENT_STATUSES: [&str; 4] = ["succeeded", "failed", "refused", "interrupted"];
/// The outcome the brain decides alone.
const TIMED_OUT: &str = "timed_out";

/// One command as its rows so far tell it.
struct CommandState {
    issued_hash: Hash,
    audience: Option<String>,
    ended: bool,
    late: bool,
}

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
    /// agent signature to check, if the row carries one.
    pub fn check(
        &mut self,
        seq: u64,
        statement: &Statement,
        hash: &Hash,
    ) -> Result<Option<Pending>, Problem> {
        match statement.kind.as_str() {
            "agent.enrolled" => self.enrolled(statement).map(|()| None),
            "command.issued" => self.issued(statement, hash).map(|()| None),
            kind => match kind.strip_prefix("command.") {
                Some(status) if AGENT_STATUSES.contains(&status) || status == TIMED_OUT => {
                    self.outcome(seq, statement, status)
                }
                _ => Ok(None),
            },
        }
    }

    fn enrolled(&mut self, statement: &Statement) -> Result<(), Problem> {
        let bad = |why: &str| Problem::Malformed(format!("agent.enrolled: {why}"));
        let payload = &statement.payload;
        let agent = payload["agent"]["id"]
            .as_str()
            .ok_or_else(|| bad("no agent.id"))?;
        let public = payload["public_key"]
            .as_str()
            .ok_or_else(|| bad("no public_key"))?;
        if lower_hex::<32>(public).is_none() {
            return Err(Problem::NotLowerHex("payload.public_key"));
        }
        let key = parse_public_key(public).map_err(|e| bad(&e))?;
        if let Some(id) = payload.get("key_id").and_then(Value::as_str)
            && id != key_id(&key)
        {
            return Err(bad("key_id does not belong to public_key"));
        }
        self.agents.insert(agent.to_owned(), key);
        Ok(())
    }

    fn issued(&mut self, statement: &Statement, hash: &Hash) -> Result<(), Problem> {
        let id = statement
            .command_id
            .as_deref()
            .ok_or_else(|| Problem::Command("command.issued without a command_id".into()))?;
        let command = &statement.payload["command"];
        if let Some(named) = command["id"].as_str()
            && named != id
        {
            return Err(Problem::Command(format!(
                "issued row for {id} carries command {named}"
            )));
        }
        if let (Some(project), Some(chain_project)) =
            (command["project_id"].as_str(), &self.project_id)
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
                audience: command["audience"].as_str().map(str::to_owned),
                ended: false,
                late: false,
            },
        );
        Ok(())
    }

    fn outcome(
        &mut self,
        seq: u64,
        statement: &Statement,
        status: &str,
    ) -> Result<Option<Pending>, Problem> {
        let id = statement
            .command_id
            .as_deref()
            .ok_or_else(|| Problem::Command(format!("{} without a command_id", statement.kind)))?;
        let payload = &statement.payload;
        if let Some(said) = payload.get("status").and_then(Value::as_str)
            && said != status
        {
            return Err(Problem::Command(format!(
                "row kind says {status} but its payload says {said}"
            )));
        }
        let late = payload.get("late").and_then(Value::as_bool) == Some(true);
        let result = match payload.get("agent_result") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                SignedResult::deserialize(value)
                    .map_err(|e| Problem::Malformed(format!("agent_result: {e}")))?,
            ),
        };
        let Some(command) = self.commands.get_mut(id) else {
            if self.complete {
                return Err(Problem::Command(format!(
                    "outcome for command {id}, not issued earlier in the chain"
                )));
            }
            // Issued before a resumed verifier's start: nothing to hold the result to.
            return Ok(None);
        };
        if late {
            if !command.ended {
                return Err(Problem::Command(format!(
                    "late outcome for command {id}, which had not ended"
                )));
            }
            if command.late {
                return Err(Problem::SecondLate(id.to_owned()));
            }
            command.late = true;
        } else {
            // Not held to one: a timeout and a result racing on two connections may both be
            // recorded as the end, and neither is a forgery.
            command.ended = true;
        }
        let Some(signed) = result else {
            if status == TIMED_OUT {
                return Ok(None);
            }
            return Err(Problem::AgentResult(format!(
                "a {status} outcome without the agent's signed result"
            )));
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
        if r.command_id != id {
            return Err(Problem::AgentResult(format!(
                "the agent's result is for command {}",
                r.command_id
            )));
        }
        if lower_hex::<32>(&r.row_hash) != Some(command.issued_hash) {
            return Err(Problem::AgentResult(
                "the agent's result names another issued row than the command's".into(),
            ));
        }
        if command.audience.as_deref().is_some_and(|a| a != r.agent_id) {
            return Err(Problem::AgentResult(format!(
                "the result is from agent {}, not the command's audience",
                r.agent_id
            )));
        }
        if !outcome_matches(r.outcome, status) {
            return Err(Problem::AgentResult(format!(
                "the agent reported {:?} but the row says {status}",
                r.outcome
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

/// Whether an outcome row's status is what the agent reported: a refusal or an interruption
/// is recorded as a failure (or under its own name).
fn outcome_matches(outcome: Outcome, status: &str) -> bool {
    match outcome {
        Outcome::Succeeded => status == "succeeded",
        Outcome::Failed => status == "failed",
        Outcome::Refused => matches!(status, "failed" | "refused"),
        Outcome::Interrupted => matches!(status, "failed" | "interrupted"),
    }
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

//! The body of a command request, read the same way for the API and for the commands a
//! schedule carries: the target agent, an optional idempotency key, and the kind's own
//! fields, validated by `taskward_shared::command` (the bounds the agent checks again).

use serde::Deserialize;
use sha2::{Digest, Sha256};
use taskward_shared::command::{Command, CommandKind};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::input::parse_json_value;
use crate::refusal::Refusal;

/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The body of every command: the target agent, an optional idempotency key, and the kind's
/// own fields beside them.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CommandRequest<P> {
    /// The agent that must run the command (in this project).
    pub agent_id: Uuid,
    /// Same caller, kind and key within 24 h returns the first command (200) instead of a new
    /// one (202); the same key with another body is 409. At most 255 characters.
    pub idempotency_key: Option<String>,
    /// The kind's fields.
    #[serde(flatten)]
    pub payload: P,
}

/// A command request, read and validated.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    /// The agent that must run it.
    pub agent_id: Uuid,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// The validated command.
    pub command: Command,
}

/// Splits a body into agent id, idempotency key and the kind's payload, naming any bad field.
pub fn parse_request(kind: CommandKind, body: serde_json::Value) -> Result<ParsedRequest, Refusal> {
    let serde_json::Value::Object(mut fields) = body else {
        return Err(Refusal::Invalid {
            code: "invalid_json",
            message: "the body must be a JSON object".into(),
            field: None,
        });
    };
    let agent_id = match fields.remove("agent_id") {
        None => return Err(Refusal::missing_field("agent_id")),
        Some(value) => value
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| {
                Refusal::invalid_field("agent_id", "agent_id: must be an agent id (UUID)")
            })?,
    };
    let idempotency_key = match fields.remove("idempotency_key") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(key))
            if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_LEN =>
        {
            Some(key)
        }
        Some(_) => {
            return Err(Refusal::invalid_field(
                "idempotency_key",
                format!(
                    "idempotency_key: must be a string of 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"
                ),
            ));
        }
    };
    let payload = serde_json::Value::Object(fields);
    let command = match kind {
        CommandKind::RetryTask => Command::RetryTask(parse_json_value(payload)?),
        CommandKind::CancelTask => Command::CancelTask(parse_json_value(payload)?),
        CommandKind::BulkRetry => Command::BulkRetry(parse_json_value(payload)?),
        CommandKind::PurgeQueue => Command::PurgeQueue(parse_json_value(payload)?),
        CommandKind::RestartWorker => Command::RestartWorker(parse_json_value(payload)?),
        CommandKind::PoolResize => Command::PoolResize(parse_json_value(payload)?),
        CommandKind::AddConsumer => Command::AddConsumer(parse_json_value(payload)?),
        CommandKind::CancelConsumer => Command::CancelConsumer(parse_json_value(payload)?),
        CommandKind::RateLimit => Command::RateLimit(parse_json_value(payload)?),
        CommandKind::PingWorkers => Command::PingWorkers(parse_json_value(payload)?),
    };
    command.validate()?;
    Ok(ParsedRequest {
        agent_id,
        idempotency_key,
        command,
    })
}

/// The digest an idempotency key is bound to: agent, kind and payload, canonical JSON, so a
/// replay of the same request matches whatever order its fields came in.
pub fn request_hash(agent_id: &Uuid, command: &Command) -> String {
    hex::encode(Sha256::digest(
        serde_json_canonicalizer::to_vec(&serde_json::json!({
            "agent_id": agent_id,
            "kind": command.kind(),
            "payload": command.payload(),
        }))
        .expect("request serializes"),
    ))
}

//! The body of a command request, read the same way for the API and for the commands a
//! schedule carries: the target agent, an optional idempotency key, and the kind's own
//! fields, validated by `taskward_shared::command` (the bounds the agent checks again).

use sha2::{Digest, Sha256};
use std::borrow::Cow;
use taskward_shared::command::{
    BulkRetry, CancelTask, Command, CommandKind, ConsumerChange, PingWorkers, PoolResize,
    PurgeQueue, RateLimit, RestartWorker, RetryTask,
};

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use crate::input::parse_json_value;
use crate::refusal::Refusal;

/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The OpenAPI schema of a command body: one object with the target agent, an optional
/// idempotency key and the payload `P`'s own fields side by side. Built by hand rather than
/// derived with `#[serde(flatten)]`, because the derived `allOf` pairs the payload's
/// `additionalProperties: false` with `agent_id` in another branch, which no body can satisfy.
fn command_request_schema<P: ToSchema>() -> RefOr<Schema> {
    let RefOr::T(Schema::Object(mut object)) = P::schema() else {
        unreachable!("every command payload is a plain object schema")
    };
    object.properties.insert(
        "agent_id".into(),
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .description(Some(
                "The agent that must run the command (in this project).",
            ))
            .into(),
    );
    object.properties.insert(
        "idempotency_key".into(),
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .min_length(Some(1))
            .max_length(Some(MAX_IDEMPOTENCY_KEY_LEN))
            .description(Some(
                "Same caller, kind and key within 24 h returns the first command (200) instead \
                 of a new one (202); the same key with another body is 409.",
            ))
            .into(),
    );
    object.required.insert(0, "agent_id".into());
    object.description = Some(format!(
        "The body of a {} command: the target agent, an optional idempotency key and the \
         kind's own fields beside them.",
        P::name()
    ));
    RefOr::T(Schema::Object(object))
}

/// Declares the documented body of one command kind (the handlers read the body as JSON and
/// split it with [`parse_request`]; these types exist for the OpenAPI document only).
macro_rules! command_request {
    ($($name:ident => $payload:ident),* $(,)?) => {$(
        #[doc = concat!("The documented body of a command whose payload is [`", stringify!($payload), "`].")]
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                command_request_schema::<$payload>()
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(concat!("CommandRequest_", stringify!($payload)))
            }

            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                // What the payload's schema refers to (`BulkRetryFilter`, …).
                <$payload as ToSchema>::schemas(schemas);
            }
        }
    )*};
}

command_request! {
    RetryTaskRequest => RetryTask,
    CancelTaskRequest => CancelTask,
    BulkRetryRequest => BulkRetry,
    PurgeQueueRequest => PurgeQueue,
    RestartWorkerRequest => RestartWorker,
    PoolResizeRequest => PoolResize,
    ConsumerChangeRequest => ConsumerChange,
    RateLimitRequest => RateLimit,
    PingWorkersRequest => PingWorkers,
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

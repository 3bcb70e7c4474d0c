//! The agent link: frames exchanged over the WebSocket at `/api/v1/agent/connect`, one JSON
//! object per text message, tagged by `type`. Both binaries compile against these enums, so a
//! frame either side does not know is a decode error, never a dispatch by name.
//!
//! A session: the agent opens the socket with `Authorization: Bearer <agent credential>`; the
//! brain sends [`BrainFrame::Challenge`]; the agent answers [`AgentFrame::Hello`] signed by its
//! own key; the brain answers [`BrainFrame::Welcome`] with the session generation and then
//! sends every pending command as [`BrainFrame::Command`], and each key rotation as
//! [`BrainFrame::Rotation`] as soon as it learns of it. The agent checks each command
//! (`docs/protocol.md`, "Commands on the link"), records it in its durable seen-store, answers
//! [`AgentFrame::Claimed`], runs it, and sends a [`SignedResult`].

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditRow, PublicKeyInfo};

/// Version of the frames; both sides refuse another.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side accepts: a bulk retry of 10,000 tasks carries every task's
/// resolved arguments; anything else is far smaller.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Domain tag of the agent's answer to the challenge.
pub const HELLO_TAG: &[u8] = b"taskward/agent-hello/v1\0";
/// Domain tag of a signed command result.
pub const RESULT_TAG: &[u8] = b"taskward/agent-result/v1\0";

/// The [`BrainFrame::Welcome`] feature saying the brain reads [`AgentFrame::BrokerHealth`].
pub const FEATURE_BROKER_HEALTH: &str = "broker_health";

/// Whether the agent reaches its engine's broker, and since when: what the agent reports
/// with [`AgentFrame::BrokerHealth`] on connect and on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerHealth {
    /// The broker answered the last check.
    pub up: bool,
    /// Why it did not (the broker client's error, password removed), while down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When this state began, ms since the epoch (agent's clock).
    pub since_ms: i64,
}

/// Frames from the brain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BrainFrame {
    /// First frame: a fresh nonce the agent must sign.
    Challenge {
        /// [`PROTOCOL_VERSION`].
        version: u32,
        /// Hex, 32 random bytes.
        nonce: String,
    },
    /// The session is open.
    Welcome {
        /// This session's generation; a newer one closes this one.
        session: u64,
        /// Brain keys published so far, for display; the agent trusts only keys it pinned or
        /// learned through `rotations`.
        keys: Vec<PublicKeyInfo>,
        /// Signed `key.rotated` rows from the site chain, oldest first.
        rotations: Vec<AuditRow>,
        /// Optional frames this brain reads (e.g. [`FEATURE_BROKER_HEALTH`]): an agent sends
        /// such a frame only to a brain that lists it, since an older brain would take an
        /// unknown frame for a broken session.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
    },
    /// A command to check and run: its signed `command.issued` audit row.
    Command {
        /// The row.
        row: AuditRow,
    },
    /// A key rotation during the session: the site chain's signed `key.rotated` row, sent
    /// before the new key signs anything (and, at the latest, before the first command signed
    /// by it). The agent trusts the new key only if a key it already trusts signed the row.
    Rotation {
        /// The row.
        row: AuditRow,
    },
    /// Every event batch up to and including `seq` is stored (the agent may drop them).
    EventsAck {
        /// Highest stored batch.
        seq: u64,
    },
    /// The brain stored a result (the agent may forget it).
    ResultRecorded {
        /// The command.
        command_id: String,
    },
    /// Liveness.
    Ping {
        /// Sender's clock, ms.
        time_ms: i64,
    },
    /// Answer to a ping.
    Pong {
        /// The ping's time.
        time_ms: i64,
    },
    /// The brain closes the session.
    Close {
        /// Why.
        reason: CloseReason,
    },
}

/// Why the brain closed a session. On the wire it is the text it has always been (a version-1
/// agent matches `"replaced"` in it), so old agents and old brains still understand each other;
/// a text this version does not know reads as [`CloseReason::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum CloseReason {
    /// A newer session of the same agent took over: this process must stop, not reconnect
    /// (two processes with one identity would each replace the other forever).
    Replaced,
    /// The handshake failed: wrong protocol version, agent id or signature.
    BadHello,
    /// A reason from a newer brain; the agent treats it as a failed session and reconnects.
    Other(String),
}

impl CloseReason {
    const REPLACED: &str = "replaced by a newer session";
    const BAD_HELLO: &str = "bad hello";

    /// The wire text.
    pub fn as_str(&self) -> &str {
        match self {
            CloseReason::Replaced => Self::REPLACED,
            CloseReason::BadHello => Self::BAD_HELLO,
            CloseReason::Other(text) => text,
        }
    }
}

impl From<String> for CloseReason {
    fn from(text: String) -> CloseReason {
        match text.as_str() {
            Self::REPLACED => CloseReason::Replaced,
            Self::BAD_HELLO => CloseReason::BadHello,
            _ => CloseReason::Other(text),
        }
    }
}

impl From<CloseReason> for String {
    fn from(reason: CloseReason) -> String {
        match reason {
            CloseReason::Other(text) => text,
            known => known.as_str().to_owned(),
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Frames from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentFrame {
    /// Answer to the challenge.
    Hello {
        /// [`PROTOCOL_VERSION`].
        version: u32,
        /// The agent's id.
        agent_id: String,
        /// Hex signature over [`hello_message`].
        signature: String,
    },
    /// The command is recorded in the seen-store and will run (at most once).
    Claimed {
        /// The command.
        command_id: String,
    },
    /// A command's outcome, signed by the agent.
    Result(SignedResult),
    /// A batch of engine events.
    Events(crate::events::EventBatch),
    /// A frame that did not pass the checks and has no trustworthy command id (bad signature,
    /// unparseable row): reported so an operator can see it.
    Rejected {
        /// The id the frame claimed, if any.
        claimed_command_id: Option<String>,
        /// Why it was refused.
        reason: String,
    },
    /// Liveness.
    Ping {
        /// Sender's clock, ms.
        time_ms: i64,
    },
    /// Answer to a ping.
    Pong {
        /// The ping's time.
        time_ms: i64,
    },
    /// The engine's broker is reachable or not (sent only to a brain whose welcome lists
    /// [`FEATURE_BROKER_HEALTH`]).
    BrokerHealth(BrokerHealth),
}

/// How an [`AgentFrame::Events`] frame starts as serde writes it: the tag first.
const EVENTS_FRAME_START: &str = r#"{"type":"events","#;

/// The text of an [`AgentFrame::Events`] frame for a batch already serialized as JSON (the
/// agent's spool holds batches as text), without decoding and encoding the updates again: the
/// frame is the batch's object with the `type` tag first, exactly what serde writes.
pub fn events_frame_text(batch_json: &str) -> String {
    let fields = batch_json
        .strip_prefix('{')
        .expect("a serialized EventBatch is a JSON object");
    let mut frame = String::with_capacity(EVENTS_FRAME_START.len() + fields.len());
    frame.push_str(EVENTS_FRAME_START);
    frame.push_str(fields);
    frame
}

/// Reads an agent frame. An `events` frame, nearly all of the traffic, is read as its batch
/// directly (the batch ignores the `type` field), skipping serde's buffering of internally
/// tagged enums; any other frame takes the derived path.
pub fn decode_agent_frame(text: &str) -> Result<AgentFrame, serde_json::Error> {
    if text.starts_with(EVENTS_FRAME_START) {
        return serde_json::from_str(text).map(AgentFrame::Events);
    }
    serde_json::from_str(text)
}

/// The message an agent signs to prove it holds its key: tag, nonce, agent id.
pub fn hello_message(nonce: &str, agent_id: &str) -> Vec<u8> {
    let mut message = HELLO_TAG.to_vec();
    for field in [nonce, agent_id] {
        message.extend_from_slice(&(field.len() as u32).to_be_bytes());
        message.extend_from_slice(field.as_bytes());
    }
    message
}

/// How a command ended on the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Ran and worked.
    Succeeded,
    /// Ran and failed.
    Failed,
    /// Not run: a check failed (audience, expiry, seen before, policy).
    Refused,
    /// Recorded before a crash and never finished: not run again.
    Interrupted,
}

/// How the brain records an agent's outcome in its `command.*` row: the row's status and the
/// text put before the agent's detail. One table for the brain that writes the row and for the
/// verifier that holds the row to the agent's signed result (`docs/protocol.md`, "The agent's
/// outcome and the brain's row"), so the two cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedOutcome {
    /// `succeeded` or `failed`: the row is `command.<status>`.
    pub status: &'static str,
    /// What precedes the agent's detail in the row's `detail`.
    pub detail_prefix: &'static str,
}

impl Outcome {
    /// How the brain records this outcome: a refusal or an interruption is a failure whose
    /// detail says which.
    pub fn recorded(self) -> RecordedOutcome {
        let (status, detail_prefix) = match self {
            Outcome::Succeeded => ("succeeded", ""),
            Outcome::Failed => ("failed", ""),
            Outcome::Refused => ("failed", "refused by agent: "),
            Outcome::Interrupted => ("failed", "interrupted: "),
        };
        RecordedOutcome {
            status,
            detail_prefix,
        }
    }
}

impl RecordedOutcome {
    /// The row's `detail` for the agent's `detail`.
    pub fn detail(self, agent_detail: &str) -> String {
        format!("{}{agent_detail}", self.detail_prefix)
    }

    /// Whether `row_detail` is what [`RecordedOutcome::detail`] makes of `agent_detail`,
    /// without building it.
    pub fn detail_matches(self, row_detail: &str, agent_detail: &str) -> bool {
        row_detail.strip_prefix(self.detail_prefix) == Some(agent_detail)
    }
}

/// The `detail` of a `command.timed_out` row, which the brain writes alone.
pub const TIMEOUT_DETAIL: &str = "no result from the agent before the command's deadline";

/// What an agent reports about one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command.
    pub command_id: String,
    /// Hex hash of the command's audit row, binding the result to exactly that command.
    pub row_hash: String,
    /// The reporting agent.
    pub agent_id: String,
    /// The session generation the agent was in.
    pub session: u64,
    /// The outcome.
    pub outcome: Outcome,
    /// Human-readable detail (error text, refusal reason).
    pub detail: String,
    /// When the agent finished, ms.
    pub finished_at_ms: String,
}

/// A result with the agent's signature over `RESULT_TAG || u32be(len) || canonical JSON`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedResult {
    /// The result.
    pub result: CommandResult,
    /// Hex Ed25519 signature.
    pub signature: String,
}

/// The bytes an agent signs for a result (also what an auditor checks a recorded result with).
pub fn result_message(result: &CommandResult) -> Vec<u8> {
    let body = serde_json_canonicalizer::to_vec(result).expect("results serialize");
    let mut message = RESULT_TAG.to_vec();
    message.extend_from_slice(&(body.len() as u32).to_be_bytes());
    message.extend_from_slice(&body);
    message
}

impl SignedResult {
    /// Signs a result with the agent's key.
    pub fn sign(result: CommandResult, key: &SigningKey) -> SignedResult {
        let signature = key.sign(&result_message(&result));
        SignedResult {
            result,
            signature: hex::encode(signature.to_bytes()),
        }
    }

    /// Checks the signature against the agent's enrolled key.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        let Some(signature) = hex::decode(&self.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
        else {
            return false;
        };
        key.verify_strict(
            &result_message(&self.result),
            &Signature::from_bytes(&signature),
        )
        .is_ok()
    }
}

/// Checks a hello signature.
pub fn verify_hello(key: &VerifyingKey, nonce: &str, agent_id: &str, signature: &str) -> bool {
    let Some(signature) = hex::decode(signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
    else {
        return false;
    };
    key.verify_strict(
        &hello_message(nonce, agent_id),
        &Signature::from_bytes(&signature),
    )
    .is_ok()
}

/// Body of `POST /api/v1/agent/enroll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time enrollment token (`twe_...`).
    pub enrollment_token: String,
    /// The agent's own Ed25519 public key, hex.
    pub public_key: String,
    /// The host the agent runs on, for operators.
    #[serde(default)]
    pub hostname: Option<String>,
}

/// Answer to a successful enrollment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The agent's id: the audience of its commands.
    pub agent_id: String,
    /// The agent's project id.
    pub project_id: String,
    /// The agent's credential for `/api/v1/agent/connect` (`twa_...`), shown once.
    pub credential: String,
    /// The brain's public keys to pin.
    pub brain_keys: Vec<PublicKeyInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::generate_signing_key;

    #[test]
    fn frames_round_trip_and_unknown_types_are_errors() {
        let frame = AgentFrame::Claimed {
            command_id: "c1".into(),
        };
        let text = serde_json::to_string(&frame).unwrap();
        assert_eq!(text, r#"{"type":"claimed","command_id":"c1"}"#);
        assert_eq!(serde_json::from_str::<AgentFrame>(&text).unwrap(), frame);
        assert!(serde_json::from_str::<AgentFrame>(r#"{"type":"exec","cmd":"rm"}"#).is_err());
        let down = AgentFrame::BrokerHealth(BrokerHealth {
            up: false,
            error: Some("broker: connection refused".into()),
            since_ms: 5,
        });
        let text = serde_json::to_string(&down).unwrap();
        assert_eq!(
            text,
            r#"{"type":"broker_health","up":false,"error":"broker: connection refused","since_ms":5}"#
        );
        assert_eq!(decode_agent_frame(&text).unwrap(), down);
    }

    #[test]
    fn a_welcome_without_features_is_read_as_none() {
        let text = r#"{"type":"welcome","session":1,"keys":[],"rotations":[]}"#;
        let BrainFrame::Welcome { features, .. } = serde_json::from_str(text).unwrap() else {
            panic!("not a welcome");
        };
        assert!(features.is_empty());
    }

    #[test]
    fn close_reasons_keep_their_wire_text() {
        for (reason, text) in [
            (
                CloseReason::Replaced,
                r#"{"type":"close","reason":"replaced by a newer session"}"#,
            ),
            (
                CloseReason::BadHello,
                r#"{"type":"close","reason":"bad hello"}"#,
            ),
            (
                CloseReason::Other("maintenance".into()),
                r#"{"type":"close","reason":"maintenance"}"#,
            ),
        ] {
            let frame = BrainFrame::Close { reason };
            assert_eq!(serde_json::to_string(&frame).unwrap(), text);
            assert_eq!(serde_json::from_str::<BrainFrame>(text).unwrap(), frame);
        }
    }

    #[test]
    fn an_events_frame_from_spooled_text_is_the_frame_serde_writes() {
        let batch = crate::events::EventBatch {
            seq: 7,
            dropped_total: 2,
            updates: vec![crate::events::Update::QueueDepth {
                queue: "celery".into(),
                depth: 3,
                at_ms: 1,
            }],
        };
        let text = events_frame_text(&serde_json::to_string(&batch).unwrap());
        let frame = AgentFrame::Events(batch);
        assert_eq!(text, serde_json::to_string(&frame).unwrap());
        assert_eq!(serde_json::from_str::<AgentFrame>(&text).unwrap(), frame);
        assert_eq!(decode_agent_frame(&text).unwrap(), frame);
        // Other frames, and an events frame with its tag elsewhere, read as serde reads them.
        let claimed = r#"{"type":"claimed","command_id":"c1"}"#;
        assert!(matches!(
            decode_agent_frame(claimed).unwrap(),
            AgentFrame::Claimed { .. }
        ));
        let late = r#"{"seq":1,"dropped_total":0,"updates":[],"type":"events"}"#;
        assert!(matches!(decode_agent_frame(late).unwrap(), AgentFrame::Events(b) if b.seq == 1));
        assert!(decode_agent_frame(r#"{"type":"events","seq":"x"}"#).is_err());
    }

    #[test]
    fn results_are_bound_to_their_signature() {
        let key = generate_signing_key();
        let result = CommandResult {
            command_id: "c1".into(),
            row_hash: "00".into(),
            agent_id: "a1".into(),
            session: 3,
            outcome: Outcome::Succeeded,
            detail: "ok".into(),
            finished_at_ms: "1".into(),
        };
        let signed = SignedResult::sign(result, &key);
        assert!(signed.verify(&key.verifying_key()));
        let mut forged = signed.clone();
        forged.result.outcome = Outcome::Failed;
        assert!(!forged.verify(&key.verifying_key()));
        assert!(!signed.verify(&generate_signing_key().verifying_key()));
    }

    #[test]
    fn hello_signatures_bind_nonce_and_agent() {
        let key = generate_signing_key();
        let sig = hex::encode(key.sign(&hello_message("n1", "a1")).to_bytes());
        assert!(verify_hello(&key.verifying_key(), "n1", "a1", &sig));
        assert!(!verify_hello(&key.verifying_key(), "n2", "a1", &sig));
        assert!(!verify_hello(&key.verifying_key(), "n1", "a2", &sig));
    }
}

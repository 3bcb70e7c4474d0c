//! The audit log's byte formats: statements, row hashes, signatures and checkpoints.
//!
//! `docs/protocol.md` specifies these byte for byte; `docs/audit-test-vectors.json` holds
//! vectors a test checks. A row is signed as bytes, never re-encoded: the statement is stored
//! verbatim (RFC 8785 canonical JSON) and verification hashes exactly what was stored.

mod canonical;
pub mod verify;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::key_id;

/// Domain tag of row hashes.
pub const ROW_TAG: &[u8] = b"taskward/audit-row/v1\0";
/// Domain tag of the message a row signature covers.
pub const SIGNATURE_TAG: &[u8] = b"taskward/audit-sig/v1\0";
/// Domain tag of a chain's genesis `prev_hash`.
pub const GENESIS_TAG: &[u8] = b"taskward/audit-genesis/v1\0";
/// Domain tag of checkpoint signatures.
pub const CHECKPOINT_TAG: &[u8] = b"taskward/checkpoint/v1\0";

/// Version of the statement schema, inside every statement as `"v"`.
pub const STATEMENT_VERSION: u32 = 1;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev_hash` of a chain's first row: `SHA-256(GENESIS_TAG || u32be(len) || chain)`.
pub fn genesis_hash(chain: &str) -> Hash {
    Sha256::new()
        .chain_update(GENESIS_TAG)
        .chain_update((chain.len() as u32).to_be_bytes())
        .chain_update(chain.as_bytes())
        .finalize()
        .into()
}

/// A row's hash: `SHA-256(ROW_TAG || u64be(seq) || prev_hash || u32be(len) || statement)`.
pub fn row_hash(seq: u64, prev_hash: &Hash, statement: &[u8]) -> Hash {
    Sha256::new()
        .chain_update(ROW_TAG)
        .chain_update(seq.to_be_bytes())
        .chain_update(prev_hash)
        .chain_update((statement.len() as u32).to_be_bytes())
        .chain_update(statement)
        .finalize()
        .into()
}

/// The message a row signature covers: `SIGNATURE_TAG || u8(len) || key_id || row_hash`, so the
/// signature also binds which key made it.
pub fn signature_message(key_id: &str, row_hash: &Hash) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNATURE_TAG.len() + 1 + key_id.len() + 32);
    message.extend_from_slice(SIGNATURE_TAG);
    message.push(key_id.len() as u8);
    message.extend_from_slice(key_id.as_bytes());
    message.extend_from_slice(row_hash);
    message
}

/// The message a checkpoint signature covers:
/// `CHECKPOINT_TAG || u32be(len) || chain || u64be(size) || head || i64be(time_ms)`.
pub fn checkpoint_message(chain: &str, size: u64, head: &Hash, time_ms: i64) -> Vec<u8> {
    let mut message = Vec::with_capacity(CHECKPOINT_TAG.len() + 4 + chain.len() + 48);
    message.extend_from_slice(CHECKPOINT_TAG);
    message.extend_from_slice(&(chain.len() as u32).to_be_bytes());
    message.extend_from_slice(chain.as_bytes());
    message.extend_from_slice(&size.to_be_bytes());
    message.extend_from_slice(head);
    message.extend_from_slice(&time_ms.to_be_bytes());
    message
}

/// Who caused a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `user`, `schedule`, `agent` or `system`.
    #[serde(rename = "type")]
    pub kind: ActorKind,
    /// Stable id of the actor (user id, schedule id, agent id, or `brain` for the system).
    pub id: String,
    /// Name at the time (user name, schedule name, agent name).
    pub name: String,
}

/// The kinds of actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// An operator, through the API, dashboard or CLI.
    User,
    /// A schedule firing.
    Schedule,
    /// An agent reporting an outcome.
    Agent,
    /// The brain itself (bootstrap, key rotation, timeouts).
    System,
}

impl ActorKind {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::Schedule => "schedule",
            ActorKind::Agent => "agent",
            ActorKind::System => "system",
        }
    }
}

/// What a row says. Serialized as RFC 8785 canonical JSON, which is what is hashed and stored.
/// Integers that may exceed 2^53 (the sequence number) are strings, so every JSON parser reads
/// them exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// Schema version, [`STATEMENT_VERSION`].
    pub v: u32,
    /// The chain's name.
    pub chain: String,
    /// The row's sequence number, decimal.
    pub seq: String,
    /// When the row was appended, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Who caused it.
    pub actor: Actor,
    /// What happened, e.g. `command.issued`, `token.created`.
    pub kind: String,
    /// The command the row belongs to, for command rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// Details, specific to the kind.
    pub payload: serde_json::Value,
}

impl Statement {
    /// The canonical bytes to store and hash (RFC 8785).
    pub fn to_canonical(&self) -> Vec<u8> {
        canonical::encode_statement(self).unwrap_or_else(|| {
            serde_json_canonicalizer::to_vec(self).expect("statements always serialize")
        })
    }
}

/// A row as stored in the database and written to exports: everything needed to verify it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    /// Chain name.
    pub chain: String,
    /// Position in the chain, from 1, gapless.
    pub seq: u64,
    /// Hex hash of the previous row (genesis hash for row 1).
    pub prev_hash: String,
    /// Hex [`row_hash`] of this row.
    pub hash: String,
    /// Id of the signing key.
    pub key_id: String,
    /// Hex ed25519 signature over [`signature_message`].
    pub signature: String,
    /// The statement bytes (canonical JSON text), verbatim.
    pub statement: String,
    /// Index copy of the statement's kind; the verifier checks it matches.
    pub kind: String,
    /// Index copy of the statement's command id; the verifier checks it matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
}

impl AuditRow {
    /// Builds and signs the row that follows `prev_hash` at `seq`.
    pub fn sign(seq: u64, prev_hash: &Hash, statement: &Statement, key: &SigningKey) -> AuditRow {
        let text = String::from_utf8(statement.to_canonical()).expect("canonical JSON is UTF-8");
        Self::sign_text(seq, prev_hash, statement, text, key)
    }

    /// Row `seq` after `prev_hash` over `text`, the bytes `statement` is stored as, signed by
    /// `key`. The brain passes the canonical bytes ([`AuditRow::sign`]); tests of the verifier
    /// pass others, as someone holding the key could.
    pub fn sign_text(
        seq: u64,
        prev_hash: &Hash,
        statement: &Statement,
        text: String,
        key: &SigningKey,
    ) -> AuditRow {
        let hash = row_hash(seq, prev_hash, text.as_bytes());
        let key_id = key_id(&key.verifying_key());
        let signature: Signature = key.sign(&signature_message(&key_id, &hash));
        AuditRow {
            chain: statement.chain.clone(),
            seq,
            prev_hash: hex::encode(prev_hash),
            hash: hex::encode(hash),
            key_id,
            signature: hex::encode(signature.to_bytes()),
            statement: text,
            kind: statement.kind.clone(),
            command_id: statement.command_id.clone(),
        }
    }
}

/// A signed statement of a chain's size and head: kept outside the database, it lets an
/// auditor detect a log cut off or rewritten after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Checkpoint {
    /// Chain name.
    pub chain: String,
    /// Number of rows covered (the head's seq).
    pub size: u64,
    /// Hex hash of row `size` (the genesis hash for an empty chain).
    pub head: String,
    /// When it was signed, ms since the epoch.
    pub time_ms: i64,
    /// Signing key id.
    pub key_id: String,
    /// Hex signature over [`checkpoint_message`].
    pub signature: String,
}

impl Checkpoint {
    /// Signs a checkpoint of `chain` at `size` rows with head `head`.
    pub fn sign(chain: &str, size: u64, head: &Hash, time_ms: i64, key: &SigningKey) -> Checkpoint {
        let signature = key.sign(&checkpoint_message(chain, size, head, time_ms));
        Checkpoint {
            chain: chain.to_owned(),
            size,
            head: hex::encode(head),
            time_ms,
            key_id: key_id(&key.verifying_key()),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

/// One published public key, as served by `GET /api/v1/signing-keys` and read by verifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyInfo {
    /// Derived key id.
    pub key_id: String,
    /// Hex ed25519 public key.
    pub public_key: String,
    /// When the key started signing, ms since the epoch.
    pub valid_from_ms: i64,
    /// When it stopped (replaced by rotation), if it has.
    pub valid_until_ms: Option<i64>,
}

impl PublicKeyInfo {
    /// `key` as it is published: its derived id and hex bytes, signing from `valid_from_ms`
    /// until `valid_until_ms` (none while it still signs).
    pub fn of(
        key: &VerifyingKey,
        valid_from_ms: i64,
        valid_until_ms: Option<i64>,
    ) -> PublicKeyInfo {
        PublicKeyInfo {
            key_id: key_id(key),
            public_key: hex::encode(key.as_bytes()),
            valid_from_ms,
            valid_until_ms,
        }
    }
}

/// Decodes a 32-byte hex hash.
pub fn parse_hash(text: &str) -> Option<Hash> {
    hex::decode(text).ok()?.try_into().ok()
}

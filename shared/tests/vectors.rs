//! The test vectors in `docs/audit-test-vectors.json` are what this code produces from fixed
//! inputs, and every preimage is built here exactly as `docs/protocol.md` describes it (so the
//! document and the code cannot drift): row hashes, row and checkpoint signature messages,
//! canonical statements, and the agents' signed results, which are signed here from the
//! document's recipe and then compared with what `taskward_shared::protocol` produces.
//!
//! The vectors hold two chains with every kind of command row (issued, dispatched, succeeded,
//! failed, refused, timed out, late, interrupted), an enrolled agent, a key rotation whose later
//! rows are signed by the new key, and checkpoints signed after their head rows. A checker
//! written from the document's rules (not from the verifier's code) accepts them, and so does
//! the shared crate's verifier.
//!
//! Regenerate with `UPDATE_VECTORS=1 cargo test -p taskward-shared --test vectors`.

use std::collections::HashMap;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use taskward_shared::audit::verify::{ChainVerifier, TrustedKeys};
use taskward_shared::audit::{
    Actor, ActorKind, AuditRow, CHECKPOINT_TAG, Checkpoint, GENESIS_TAG, Hash, PublicKeyInfo,
    ROW_TAG, SIGNATURE_TAG, Statement, checkpoint_message, genesis_hash, parse_hash, row_hash,
    signature_message,
};
use taskward_shared::command::{Command, IssuedCommand};
use taskward_shared::crypto::{CONFIRM_TAG, KEY_ID_TAG, confirm_token, key_id};
use taskward_shared::protocol::{CommandResult, RESULT_TAG, SignedResult};

const INSTALL_ID: &str = "00000000-0000-4000-8000-0000000000f0";
const PROJECT_ID: &str = "00000000-0000-4000-8000-000000000001";
const AGENT_ID: &str = "00000000-0000-4000-8000-0000000000b1";
const AGENT_NAME: &str = "worker-host-1";
const ADMIN_ID: &str = "00000000-0000-4000-8000-0000000000aa";

/// 2026-11-25T12:00:00.000Z.
const T0: i64 = 1_795_608_000_000;
/// When the first brain key started signing.
const KEY1_FROM: i64 = T0 - 60_000;
/// The rotation's `switch_at_ms`: the first key's window ends, the second's begins.
const SWITCH_AT: i64 = T0 + 30_000;
/// When both final checkpoints are signed (after every head row).
const CHECKPOINT_AT: i64 = T0 + 300_000;

/// Every vector command's time to live.
const COMMAND_TTL_MS: i64 = 300_000;
const CONFIRM_SECRET: [u8; 32] = [0x42; 32];
const TIMEOUT_DETAIL: &str = "no result from the agent before the command's deadline";

fn site_chain() -> String {
    format!("site:{INSTALL_ID}")
}

fn project_chain() -> String {
    format!("project:{PROJECT_ID}")
}

/// 32 bytes counting up from `first`: fixed seeds anyone can rebuild the keys from.
fn seed(first: u8) -> [u8; 32] {
    std::array::from_fn(|i| first.wrapping_add(i as u8))
}

struct Keys {
    /// The brain's first key, valid `[KEY1_FROM, SWITCH_AT)`.
    brain1: SigningKey,
    /// The brain's second key, valid from `SWITCH_AT`.
    brain2: SigningKey,
    /// The agent's own key, enrolled on the project chain.
    agent: SigningKey,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            brain1: SigningKey::from_bytes(&seed(0x01)),
            brain2: SigningKey::from_bytes(&seed(0x41)),
            agent: SigningKey::from_bytes(&seed(0x81)),
        }
    }

    /// The brain key whose window holds `ms`.
    fn brain_at(&self, ms: i64) -> &SigningKey {
        assert!(ms >= KEY1_FROM, "no brain key before {KEY1_FROM}");
        if ms < SWITCH_AT {
            &self.brain1
        } else {
            &self.brain2
        }
    }

    /// The keys file an auditor is given (`GET /api/v1/signing-keys`), with the windows.
    fn published(&self) -> Vec<PublicKeyInfo> {
        let info =
            |key: &SigningKey, from, until| PublicKeyInfo::of(&key.verifying_key(), from, until);
        vec![
            info(&self.brain1, KEY1_FROM, Some(SWITCH_AT)),
            info(&self.brain2, SWITCH_AT, None),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// Times: `YYYY-MM-DDTHH:MM:SS.mmmZ` <-> ms since the epoch (proleptic Gregorian calendar, UTC).

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A statement's `time` for an instant.
fn rfc3339(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    let t = ms.rem_euclid(86_400_000);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        t / 3_600_000,
        t / 60_000 % 60,
        t / 1000 % 60,
        t % 1000
    )
}

/// A statement's `time` as ms, or an error if it is not exactly `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn time_ms(text: &str) -> Result<i64, String> {
    let b = text.as_bytes();
    let shape_ok = b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return Err(format!("time {text:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ"));
    }
    let n = |from: usize, to: usize| text[from..to].parse::<i64>().expect("digits");
    let ms = (days_from_civil(n(0, 4), n(5, 7), n(8, 10)) * 86_400
        + n(11, 13) * 3600
        + n(14, 16) * 60
        + n(17, 19))
        * 1000
        + n(20, 23);
    if rfc3339(ms) != text {
        return Err(format!("time {text:?} is not a valid instant"));
    }
    Ok(ms)
}

// ---------------------------------------------------------------------------------------------
// Building the chains as the brain does, each preimage by the document's recipe.

fn user(name: &str) -> Actor {
    Actor {
        kind: ActorKind::User,
        id: ADMIN_ID.into(),
        name: name.into(),
    }
}

fn agent_actor() -> Actor {
    Actor {
        kind: ActorKind::Agent,
        id: AGENT_ID.into(),
        name: AGENT_NAME.into(),
    }
}

fn system(name: &str) -> Actor {
    Actor {
        kind: ActorKind::System,
        id: "brain".into(),
        name: name.into(),
    }
}

/// One chain being appended to, and its vectors.
struct Chain<'k> {
    name: String,
    keys: &'k Keys,
    prev: Hash,
    rows: Vec<AuditRow>,
    vectors: Vec<Value>,
}

impl<'k> Chain<'k> {
    fn new(name: String, keys: &'k Keys) -> Chain<'k> {
        Chain {
            prev: genesis_hash(&name),
            name,
            keys,
            rows: Vec::new(),
            vectors: Vec::new(),
        }
    }

    /// Appends a row at `at_ms`, signed by the brain key valid then; `extra` goes into the
    /// row's vector (agent result preimages).
    fn append(
        &mut self,
        at_ms: i64,
        actor: Actor,
        kind: &str,
        command_id: Option<&str>,
        payload: Value,
        extra: Option<Value>,
    ) -> AuditRow {
        let seq = self.rows.len() as u64 + 1;
        let statement = Statement {
            v: 1,
            chain: self.name.clone(),
            seq: seq.to_string(),
            time: rfc3339(at_ms),
            actor,
            kind: kind.into(),
            command_id: command_id.map(str::to_owned),
            payload,
        };
        let key = self.keys.brain_at(at_ms);
        let id = key_id(&key.verifying_key());
        let row = AuditRow::sign(seq, &self.prev, &statement, key);
        let bytes = row.statement.as_bytes();
        // Canonical: the bytes are RFC 8785 of what they parse to.
        let parsed: Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(
            serde_json_canonicalizer::to_vec(&parsed).unwrap(),
            bytes,
            "statement bytes are canonical"
        );
        let mut row_preimage = ROW_TAG.to_vec();
        row_preimage.extend_from_slice(&seq.to_be_bytes());
        row_preimage.extend_from_slice(&self.prev);
        row_preimage.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        row_preimage.extend_from_slice(bytes);
        let hash = row_hash(seq, &self.prev, bytes);
        assert_eq!(Sha256::digest(&row_preimage).as_slice(), hash);
        let mut sig_message = SIGNATURE_TAG.to_vec();
        sig_message.push(id.len() as u8);
        sig_message.extend_from_slice(id.as_bytes());
        sig_message.extend_from_slice(&hash);
        assert_eq!(sig_message, signature_message(&id, &hash));
        assert_eq!(
            hex::encode(key.sign(&sig_message).to_bytes()),
            row.signature
        );
        let mut vector = json!({
            "export_row": row,
            "statement_object": parsed,
            "row_hash_preimage_hex": hex::encode(&row_preimage),
            "signature_message_hex": hex::encode(&sig_message),
        });
        if let Some(Value::Object(extra)) = extra {
            vector.as_object_mut().unwrap().extend(extra);
        }
        self.vectors.push(vector);
        self.prev = hash;
        self.rows.push(row.clone());
        row
    }

    /// A checkpoint of the chain as it is now, signed at `at_ms` by the key valid then.
    fn checkpoint(&self, at_ms: i64) -> (Checkpoint, Value) {
        let size = self.rows.len() as u64;
        let key = self.keys.brain_at(at_ms);
        let checkpoint = Checkpoint::sign(&self.name, size, &self.prev, at_ms, key);
        let mut message = CHECKPOINT_TAG.to_vec();
        message.extend_from_slice(&(self.name.len() as u32).to_be_bytes());
        message.extend_from_slice(self.name.as_bytes());
        message.extend_from_slice(&size.to_be_bytes());
        message.extend_from_slice(&self.prev);
        message.extend_from_slice(&at_ms.to_be_bytes());
        assert_eq!(
            message,
            checkpoint_message(&self.name, size, &self.prev, at_ms)
        );
        assert_eq!(
            hex::encode(key.sign(&message).to_bytes()),
            checkpoint.signature
        );
        let vector = json!({
            "checkpoint": checkpoint,
            "message_hex": hex::encode(&message),
        });
        (checkpoint, vector)
    }
}

/// A `command.issued` payload's `command`, with every member the document lists. Checked
/// against the code's type: it reads it, writes it back unchanged, and validates its payload.
fn command(
    id: &str,
    kind: &str,
    payload: Value,
    resolved: Option<Value>,
    issued_at: i64,
    bound_depth: Option<&str>,
    idempotency_key: Option<&str>,
) -> Value {
    // The flags as the brain derives them from the validated command.
    let typed: Command = serde_json::from_value(json!({"kind": kind, "payload": payload})).unwrap();
    let critical = typed.is_critical();
    let global_throttle = matches!(&typed, Command::RateLimit(r) if r.is_global());
    let mut command = json!({
        "id": id,
        "project_id": PROJECT_ID,
        "audience": AGENT_ID,
        "kind": kind,
        "payload": payload,
        "issued_at_ms": issued_at.to_string(),
        "expires_at_ms": (issued_at + COMMAND_TTL_MS).to_string(),
        "critical": critical,
        "global_throttle": global_throttle,
        "bound_depth": bound_depth,
        "idempotency_key": idempotency_key,
    });
    if let Some(resolved) = resolved {
        command["resolved"] = resolved;
    }
    let typed: IssuedCommand = serde_json::from_value(command.clone()).unwrap();
    typed.command().expect("a valid command payload");
    assert_eq!(serde_json::to_value(&typed).unwrap(), command);
    json!({ "command": command })
}

/// An outcome row's payload, every member present.
fn outcome(
    status: &str,
    previous: &str,
    late: bool,
    detail: Option<&str>,
    agent_result: Option<&Value>,
) -> Value {
    json!({
        "status": status,
        "previous_status": previous,
        "late": late,
        "detail": detail,
        "agent_result": agent_result,
    })
}

/// The row kind's status and the row's detail for an agent's outcome and detail (the table
/// "The agent's outcome and the brain's row").
fn row_for_outcome(outcome: &str, detail: &str) -> Result<(&'static str, String), String> {
    Ok(match outcome {
        "succeeded" => ("succeeded", detail.to_owned()),
        "failed" => ("failed", detail.to_owned()),
        "refused" => ("failed", format!("refused by agent: {detail}")),
        "interrupted" => ("failed", format!("interrupted: {detail}")),
        other => return Err(format!("unknown outcome {other:?}")),
    })
}

/// The agent's signed result, made by the document's recipe with the agent's key, and
/// compared with what the shared crate's `SignedResult::sign` makes. Returns
/// `payload.agent_result` and the preimages for the vectors.
fn agent_result(
    keys: &Keys,
    issued: &AuditRow,
    session: u64,
    outcome: &str,
    detail: &str,
    finished_at_ms: i64,
) -> (Value, Value) {
    let result = json!({
        "command_id": issued.command_id.as_deref().unwrap(),
        "row_hash": issued.hash,
        "agent_id": AGENT_ID,
        "session": session,
        "outcome": outcome,
        "detail": detail,
        "finished_at_ms": finished_at_ms.to_string(),
    });
    let body = serde_json_canonicalizer::to_vec(&result).unwrap();
    let mut message = b"taskward/agent-result/v1\0".to_vec();
    message.extend_from_slice(&(body.len() as u32).to_be_bytes());
    message.extend_from_slice(&body);
    let signature = hex::encode(keys.agent.sign(&message).to_bytes());
    let agent_result = json!({"result": result, "signature": signature});

    // The code agrees: Ed25519 signatures are deterministic, so the same signature means the
    // same message; and the code's own check accepts it.
    assert_eq!(RESULT_TAG, b"taskward/agent-result/v1\0");
    let typed: CommandResult = serde_json::from_value(result.clone()).unwrap();
    let signed = SignedResult::sign(typed, &keys.agent);
    assert_eq!(signed.signature, signature, "the code signs other bytes");
    assert_eq!(serde_json::to_value(&signed).unwrap(), agent_result);
    let parsed: SignedResult = serde_json::from_value(agent_result.clone()).unwrap();
    assert!(parsed.verify(&keys.agent.verifying_key()));

    let extra = json!({
        "agent_result_body_utf8": String::from_utf8(body).unwrap(),
        "agent_result_message_hex": hex::encode(&message),
    });
    (agent_result, extra)
}

/// Appends a result row as the brain does for an agent's result: kind, status and detail
/// derived from the outcome, the signed result verbatim.
#[allow(clippy::too_many_arguments)]
fn append_result(
    chain: &mut Chain<'_>,
    at_ms: i64,
    issued: &AuditRow,
    previous: &str,
    late: bool,
    session: u64,
    outcome_text: &str,
    detail: &str,
) -> AuditRow {
    let keys = chain.keys;
    let (result, extra) = agent_result(keys, issued, session, outcome_text, detail, at_ms - 50);
    let (status, row_detail) = row_for_outcome(outcome_text, detail).unwrap();
    chain.append(
        at_ms,
        agent_actor(),
        &format!("command.{status}"),
        issued.command_id.as_deref(),
        outcome(status, previous, late, Some(&row_detail), Some(&result)),
        Some(extra),
    )
}

fn dispatched(chain: &mut Chain<'_>, at_ms: i64, issued: &AuditRow) -> AuditRow {
    chain.append(
        at_ms,
        agent_actor(),
        "command.dispatched",
        issued.command_id.as_deref(),
        outcome("dispatched", "issued", false, None, None),
        None,
    )
}

/// `seconds` after `T0`.
fn at(seconds: i64) -> i64 {
    T0 + seconds * 1000
}

/// Everything the vectors hold, and the rows and checkpoints for the checks.
struct Built {
    keys: Keys,
    site: Vec<AuditRow>,
    project: Vec<AuditRow>,
    checkpoints: Vec<Checkpoint>,
    json: Value,
}

fn build() -> Built {
    let keys = Keys::new();
    let mut site = Chain::new(site_chain(), &keys);
    let mut project = Chain::new(project_chain(), &keys);
    let mut checkpoints = Vec::new();
    let mut checkpoint_vectors = Vec::new();

    // The site chain: the project announced, the key rotated, a row by the new key.
    site.append(
        T0 + 500,
        user("admin"),
        "project.created",
        None,
        json!({"project": {"id": PROJECT_ID, "slug": "default"}, "chain": project_chain()}),
        None,
    );

    // The project chain, under the first key.
    project.append(
        at(1),
        user("admin"),
        "agent.created",
        None,
        json!({"agent": {"id": AGENT_ID, "name": AGENT_NAME, "preserve": false}}),
        None,
    );
    let agent_public = keys.agent.verifying_key();
    project.append(
        at(2),
        agent_actor(),
        "agent.enrolled",
        None,
        json!({
            "agent": {"id": AGENT_ID, "name": AGENT_NAME},
            "public_key": hex::encode(agent_public.as_bytes()),
            "key_id": key_id(&agent_public),
            "hostname": "host-1.example.com",
        }),
        None,
    );

    // 1. Issued, dispatched, succeeded: a retry with new kwargs and what the brain resolved.
    let c1 = project.append(
        at(3),
        user("admin"),
        "command.issued",
        Some("00000000-0000-4000-8000-0000000000c1"),
        command(
            "00000000-0000-4000-8000-0000000000c1",
            "retry-task",
            json!({"engine": "celery", "task_id": "9d2c", "override_kwargs": {"to": "ops@example.com", "n": 1.5, "é": "\u{1F600}"}}),
            Some(json!({
                "name": "mail.send",
                "queue": "default",
                "priority": null,
                "args": ["<email>"],
                "kwargs": {"to": "<email>", "n": 1},
                "override_kwargs": {"to": "ops@example.com", "n": 1.5, "é": "\u{1F600}"},
                "original_task_id": "9d2c",
                "root_id": null,
            })),
            at(3),
            None,
            Some("retry-9d2c-1"),
        ),
        None,
    );
    dispatched(&mut project, at(4), &c1);
    append_result(
        &mut project,
        at(5),
        &c1,
        "dispatched",
        false,
        7,
        "succeeded",
        "published as task 4f1e",
    );

    // 2. A confirmed purge (bound to the depth the operator saw), which fails.
    let depth = 12u64;
    let token = confirm_token(&CONFIRM_SECRET, AGENT_ID, "default", depth);
    let c2 = project.append(
        at(6),
        user("admin"),
        "command.issued",
        Some("00000000-0000-4000-8000-0000000000c2"),
        command(
            "00000000-0000-4000-8000-0000000000c2",
            "purge-queue",
            json!({"queue": "default", "confirm_token": token, "force": false}),
            None,
            at(6),
            Some(&depth.to_string()),
            None,
        ),
        None,
    );
    dispatched(&mut project, at(7), &c2);
    append_result(
        &mut project,
        at(8),
        &c2,
        "dispatched",
        false,
        7,
        "failed",
        "broker unreachable: connection refused",
    );

    // 3. A global throttle (critical), refused by the agent: answered at once, so no
    //    dispatched row.
    let c3 = project.append(
        at(10),
        user("admin"),
        "command.issued",
        Some("00000000-0000-4000-8000-0000000000c3"),
        command(
            "00000000-0000-4000-8000-0000000000c3",
            "rate-limit",
            json!({"task_name": "mail.send", "rate": "10/m"}),
            None,
            at(10),
            None,
            None,
        ),
        None,
    );
    append_result(
        &mut project,
        at(11),
        &c3,
        "issued",
        false,
        7,
        "refused",
        "issued 45000 ms in this agent's future: the clocks differ by more than the allowed skew",
    );

    // A checkpoint under the first key, signed after its head row.
    let (cp, vector) = project.checkpoint(at(20));
    checkpoints.push(cp);
    checkpoint_vectors.push(vector);

    // The rotation: signed by the outgoing key before the switch.
    let new_public = keys.brain2.verifying_key();
    site.append(
        at(20),
        system("cli:root"),
        "key.rotated",
        None,
        json!({
            "old_key_id": key_id(&keys.brain1.verifying_key()),
            "new_key_id": key_id(&new_public),
            "new_public_key": hex::encode(new_public.as_bytes()),
            "switch_at_ms": SWITCH_AT,
        }),
        None,
    );
    // From here on every row is signed by the new key.
    site.append(
        at(40),
        user("admin"),
        "token.created",
        None,
        json!({
            "token_id": "00000000-0000-4000-8000-0000000000d1",
            "prefix": "twt_3kq9",
            "name": "ci",
            "owner": "admin",
            "expires_at_ms": (T0 + 86_400_000).to_string(),
        }),
        None,
    );

    // 4. Timed out after dispatch, then one late success.
    let c4 = project.append(
        at(31),
        user("admin"),
        "command.issued",
        Some("00000000-0000-4000-8000-0000000000c4"),
        command(
            "00000000-0000-4000-8000-0000000000c4",
            "restart-worker",
            json!({"worker_name": "celery@host-1"}),
            None,
            at(31),
            None,
            None,
        ),
        None,
    );
    dispatched(&mut project, at(32), &c4);
    project.append(
        at(31 + 120),
        system("brain"),
        "command.timed_out",
        c4.command_id.as_deref(),
        outcome("timed_out", "dispatched", false, Some(TIMEOUT_DETAIL), None),
        None,
    );
    append_result(
        &mut project,
        at(160),
        &c4,
        "timed_out",
        true,
        7,
        "succeeded",
        "worker restarted",
    );

    // 5. Interrupted: claimed, then the agent stopped; reported after its restart (session 0).
    let c5 = project.append(
        at(180),
        user("admin"),
        "command.issued",
        Some("00000000-0000-4000-8000-0000000000c5"),
        command(
            "00000000-0000-4000-8000-0000000000c5",
            "ping-workers",
            json!({"worker_names": ["celery@host-1"]}),
            None,
            at(180),
            None,
            None,
        ),
        None,
    );
    dispatched(&mut project, at(181), &c5);
    append_result(
        &mut project,
        at(200),
        &c5,
        "dispatched",
        false,
        0,
        "interrupted",
        "the agent stopped while running it; not run again",
    );

    for chain in [&site, &project] {
        let (cp, vector) = chain.checkpoint(CHECKPOINT_AT);
        checkpoints.push(cp);
        checkpoint_vectors.push(vector);
    }

    let preimage = |key: &VerifyingKey| {
        let mut preimage = KEY_ID_TAG.to_vec();
        preimage.extend_from_slice(key.as_bytes());
        assert_eq!(hex::encode(&Sha256::digest(&preimage)[..16]), key_id(key));
        hex::encode(&preimage)
    };
    let key_vector = |key: &SigningKey| {
        json!({
            "seed_hex": hex::encode(key.to_bytes()),
            "public_key_hex": hex::encode(key.verifying_key().as_bytes()),
            "key_id_preimage_hex": preimage(&key.verifying_key()),
            "key_id": key_id(&key.verifying_key()),
        })
    };
    let genesis_vector = |chain: &str| {
        let mut preimage = GENESIS_TAG.to_vec();
        preimage.extend_from_slice(&(chain.len() as u32).to_be_bytes());
        preimage.extend_from_slice(chain.as_bytes());
        let genesis = genesis_hash(chain);
        assert_eq!(Sha256::digest(&preimage).as_slice(), genesis);
        json!({"preimage_hex": hex::encode(&preimage), "hash": hex::encode(genesis)})
    };

    let mut confirm_message = CONFIRM_TAG.to_vec();
    for field in [AGENT_ID, "default"] {
        confirm_message.extend_from_slice(&(field.len() as u32).to_be_bytes());
        confirm_message.extend_from_slice(field.as_bytes());
    }
    confirm_message.extend_from_slice(&depth.to_be_bytes());

    let (site_rows, project_rows) = (site.rows.clone(), project.rows.clone());
    let chains: Vec<Value> = [site, project]
        .map(|chain| {
            json!({
                "chain": chain.name,
                "genesis": genesis_vector(&chain.name),
                // An export is this line, then each row's `export_row`, one JSON object per line.
                "export_header": {
                    "format": "taskward-audit-export/v1",
                    "chain": chain.name,
                    "keys": keys.published(),
                },
                "rows": chain.vectors,
            })
        })
        .into();
    let json = json!({
        "description": "Taskward audit log test vectors; see docs/protocol.md. All hex is lowercase. \
            Times are ms since the epoch. Each chain's rows are in seq order; export_row is the row \
            as an export line carries it.",
        "brain_keys": [key_vector(&keys.brain1), key_vector(&keys.brain2)],
        "signing_keys": {"keys": keys.published()},
        "agent_key": key_vector(&keys.agent),
        "chains": chains,
        "checkpoints": checkpoint_vectors,
        "purge_confirm_token": {
            "secret_hex": hex::encode(CONFIRM_SECRET),
            "agent_id": AGENT_ID,
            "queue": "default",
            "depth": depth,
            "hmac_message_hex": hex::encode(&confirm_message),
            "token": token,
        }
    });
    Built {
        site: site_rows,
        project: project_rows,
        keys,
        checkpoints,
        json,
    }
}

// ---------------------------------------------------------------------------------------------
// The document's rules, written from docs/protocol.md ("Verifying a chain", "Commands", "Agent
// results", "Key rotation", "Checkpoints"), independently of the verifier's code.

macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn members(value: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = value
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    names.sort_unstable();
    names
}

fn sorted<'a>(names: &[&'a str]) -> Vec<&'a str> {
    let mut names = names.to_vec();
    names.sort_unstable();
    names
}

fn public_key(text: &str) -> Result<VerifyingKey, String> {
    ensure!(
        is_lower_hex(text, 64),
        "public key {text:?} is not 32 bytes of lowercase hex"
    );
    let bytes: [u8; 32] = hex::decode(text).unwrap().try_into().unwrap();
    let key = VerifyingKey::from_bytes(&bytes).map_err(|e| e.to_string())?;
    ensure!(!key.is_weak(), "weak public key");
    Ok(key)
}

fn verify_strict(key: &VerifyingKey, message: &[u8], signature: &str) -> Result<(), String> {
    ensure!(
        is_lower_hex(signature, 128),
        "signature is not 64 bytes of lowercase hex"
    );
    let bytes: [u8; 64] = hex::decode(signature).unwrap().try_into().unwrap();
    key.verify_strict(message, &Signature::from_bytes(&bytes))
        .map_err(|_| "bad signature".to_owned())
}

/// The brain key `id` and whether `ms` lies in its window `[valid_from_ms, valid_until_ms)`.
fn brain_key_at(keys: &[PublicKeyInfo], id: &str, ms: i64) -> Result<VerifyingKey, String> {
    let info = keys
        .iter()
        .find(|k| k.key_id == id)
        .ok_or_else(|| format!("key {id} is not trusted"))?;
    let key = public_key(&info.public_key)?;
    ensure!(
        key_id(&key) == info.key_id,
        "key id {id} does not belong to its public key"
    );
    ensure!(
        info.valid_from_ms <= ms && info.valid_until_ms.is_none_or(|until| ms < until),
        "key {id} is not valid at {ms} (window [{}, {:?}))",
        info.valid_from_ms,
        info.valid_until_ms
    );
    Ok(key)
}

/// What the checker keeps about a command.
struct CommandState {
    issued_hash: String,
    audience: String,
    status: String,
    late_recorded: bool,
}

/// Checks one chain by the document; `Err` names the first bad row (or checkpoint) and why.
fn check_by_the_spec(
    chain: &str,
    rows: &[AuditRow],
    keys: &[PublicKeyInfo],
    checkpoints: &[Checkpoint],
) -> Result<(), String> {
    let mut prev = genesis_hash(chain);
    let mut times: Vec<i64> = Vec::new();
    let mut commands: HashMap<String, CommandState> = HashMap::new();
    let mut agent_keys: HashMap<String, VerifyingKey> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let seq = i as u64 + 1;
        let time = check_row(
            chain,
            seq,
            row,
            &prev,
            &times,
            keys,
            &mut commands,
            &mut agent_keys,
        )
        .map_err(|why| format!("row {seq}: {why}"))?;
        prev = parse_hash(&row.hash).unwrap();
        times.push(time);
    }
    let mine: Vec<&Checkpoint> = checkpoints.iter().filter(|c| c.chain == chain).collect();
    ensure!(!mine.is_empty(), "no checkpoint for {chain}");
    for checkpoint in mine {
        let size = checkpoint.size as usize;
        let key = brain_key_at(keys, &checkpoint.key_id, checkpoint.time_ms)
            .map_err(|why| format!("checkpoint of size {size}: {why}"))?;
        ensure!(
            is_lower_hex(&checkpoint.head, 64),
            "checkpoint head is not lowercase hex"
        );
        let head = parse_hash(&checkpoint.head).unwrap();
        verify_strict(
            &key,
            &checkpoint_message(chain, checkpoint.size, &head, checkpoint.time_ms),
            &checkpoint.signature,
        )
        .map_err(|why| format!("checkpoint of size {size}: {why}"))?;
        ensure!(
            size <= rows.len(),
            "row {}: truncated below a checkpoint of size {size}",
            rows.len() + 1
        );
        if size == 0 {
            ensure!(
                head == genesis_hash(chain),
                "checkpoint of size 0 without the genesis head"
            );
        } else {
            ensure!(
                rows[size - 1].hash == checkpoint.head,
                "row {size}: rewritten after its checkpoint"
            );
            ensure!(
                checkpoint.time_ms >= times[size - 1],
                "checkpoint of size {size} is signed before its head row"
            );
        }
    }
    Ok(())
}

/// The chain and payload members (sorted; alternatives for kinds with two shapes) each kind
/// has under "Row kinds" of the document.
fn kind_members(kind: &str) -> Option<(&'static str, &'static [&'static [&'static str]])> {
    const OUTCOME: &[&str] = &[
        "agent_result",
        "detail",
        "late",
        "previous_status",
        "status",
    ];
    const TOKEN: &[&str] = &["expires_at_ms", "name", "owner", "prefix", "token_id"];
    Some(match kind {
        "site.bootstrapped" => ("site:", &[&["admin", "created", "project", "token_prefix"]]),
        "user.created" | "user.password_set" | "user.deleted" => ("site:", &[&["user"]]),
        "token.created" | "token.revoked" => ("site:", &[TOKEN]),
        "project.created" => ("site:", &[&["chain", "project"]]),
        "key.rotated" => (
            "site:",
            &[
                &["new_key_id", "new_public_key", "old_key_id", "switch_at_ms"],
                &["new_key_id", "new_public_key", "old_key_id"],
            ],
        ),
        "project.deletion_started" => ("project:", &[&["project"]]),
        "member.role_set" => ("project:", &[&["added", "role", "user"]]),
        "member.removed" => ("project:", &[&["user"]]),
        "agent.created" | "agent.deleted" => ("project:", &[&["agent"]]),
        "agent.enrollment_reissued" => ("project:", &[&["agent", "expires_at"]]),
        "agent.enrolled" => (
            "project:",
            &[&["agent", "hostname", "key_id", "public_key"]],
        ),
        "agent.stale_removed" => (
            "project:",
            &[&[
                "agent",
                "archive",
                "inactive_hours",
                "last_updated_at",
                "lost_tasks",
                "workers",
            ]],
        ),
        "schedule.created" | "schedule.updated" | "schedule.deleted" => {
            ("project:", &[&["schedule"]])
        }
        "schedule.retention" => ("project:", &[&["cutoff", "older_than_days", "schedule"]]),
        "schedule.alert" => ("project:", &[&["failures", "run", "schedule"]]),
        "tasks.deleted" => (
            "project:",
            &[
                &["deleted_count", "task_ids"],
                &["deleted_count", "filter", "skipped_in_flight"],
            ],
        ),
        "command.issued" => ("project:", &[&["command"]]),
        "command.dispatched" | "command.succeeded" | "command.failed" | "command.timed_out" => {
            ("project:", &[OUTCOME])
        }
        _ => return None,
    })
}

/// The members of `command.issued`'s `command` (`resolved` only for the two retry kinds).
const COMMAND_MEMBERS: &[&str] = &[
    "audience",
    "bound_depth",
    "critical",
    "expires_at_ms",
    "global_throttle",
    "id",
    "idempotency_key",
    "issued_at_ms",
    "kind",
    "payload",
    "project_id",
];

/// Checks one row by the document; returns its time in ms.
#[allow(clippy::too_many_arguments)]
fn check_row(
    chain: &str,
    seq: u64,
    row: &AuditRow,
    prev: &Hash,
    times: &[i64],
    keys: &[PublicKeyInfo],
    commands: &mut HashMap<String, CommandState>,
    agent_keys: &mut HashMap<String, VerifyingKey>,
) -> Result<i64, String> {
    ensure!(row.chain == chain, "belongs to {}", row.chain);
    ensure!(row.seq == seq, "seq {} where {seq} was expected", row.seq);
    for (name, value, len) in [
        ("prev_hash", &row.prev_hash, 64),
        ("hash", &row.hash, 64),
        ("key_id", &row.key_id, 32),
        ("signature", &row.signature, 128),
    ] {
        ensure!(
            is_lower_hex(value, len),
            "{name} is not {len} lowercase hex digits"
        );
    }
    let bytes = row.statement.as_bytes();
    let st: Value = serde_json::from_slice(bytes).map_err(|e| format!("statement: {e}"))?;
    ensure!(
        serde_json_canonicalizer::to_vec(&st).unwrap() == bytes,
        "the statement is not canonical (RFC 8785)"
    );
    let kind = st["kind"].as_str().ok_or("kind is not a string")?;
    let command_row = kind.starts_with("command.");
    let mut want = vec!["actor", "chain", "kind", "payload", "seq", "time", "v"];
    if command_row {
        want.push("command_id");
    }
    ensure!(
        members(&st) == sorted(&want),
        "statement fields {:?}",
        members(&st)
    );
    ensure!(st["v"] == 1, "v is not 1");
    ensure!(
        st["chain"] == chain && st["seq"] == seq.to_string().as_str(),
        "moved: the statement names another position"
    );
    let actor = &st["actor"];
    ensure!(
        members(actor) == ["id", "name", "type"],
        "actor fields {:?}",
        members(actor)
    );
    let actor_type = actor["type"].as_str().unwrap_or_default();
    ensure!(
        ["user", "schedule", "agent", "system"].contains(&actor_type),
        "actor type {actor_type:?}"
    );
    ensure!(
        row.prev_hash == hex::encode(prev),
        "prev_hash does not link to the row before"
    );
    ensure!(
        row.hash == hex::encode(row_hash(seq, prev, bytes)),
        "hash does not match the row"
    );
    ensure!(row.kind == kind, "kind column differs from the statement");
    ensure!(
        row.command_id.as_deref() == st["command_id"].as_str(),
        "command_id column differs from the statement"
    );
    let time = time_ms(st["time"].as_str().ok_or("time is not a string")?)?;
    ensure!(
        times.last().is_none_or(|&last| time >= last),
        "time goes backwards"
    );
    let key = brain_key_at(keys, &row.key_id, time)?;
    verify_strict(
        &key,
        &signature_message(&row.key_id, &parse_hash(&row.hash).unwrap()),
        &row.signature,
    )?;

    let payload = &st["payload"];
    let (home, shapes) = kind_members(kind).ok_or(format!("unknown kind {kind:?}"))?;
    ensure!(chain.starts_with(home), "{kind} on the wrong chain");
    ensure!(
        shapes.iter().any(|shape| members(payload) == *shape),
        "{kind} payload fields {:?}",
        members(payload)
    );
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .ok_or("not a string".to_owned())
    };
    match kind {
        "agent.enrolled" => {
            ensure!(
                chain.starts_with("project:"),
                "agent.enrolled outside a project chain"
            );
            let agent_id = text(&payload["agent"]["id"])?;
            ensure!(
                actor_type == "agent" && actor["id"] == agent_id.as_str(),
                "enrolled by another actor"
            );
            let key = public_key(&text(&payload["public_key"])?)?;
            ensure!(
                payload["key_id"] == key_id(&key).as_str(),
                "agent key id does not match its key"
            );
            ensure!(
                agent_keys.insert(agent_id, key).is_none(),
                "agent enrolled twice"
            );
        }
        "key.rotated" => {
            ensure!(
                chain.starts_with("site:"),
                "key.rotated outside the site chain"
            );
            ensure!(
                members(payload) == ["new_key_id", "new_public_key", "old_key_id", "switch_at_ms"],
                "key.rotated fields {:?}",
                members(payload)
            );
            ensure!(
                payload["old_key_id"] == row.key_id.as_str(),
                "rotation not signed by the old key"
            );
            let switch = payload["switch_at_ms"]
                .as_i64()
                .ok_or("switch_at_ms is not an integer")?;
            ensure!(time < switch, "rotation row at or after its switch");
            let new = public_key(&text(&payload["new_public_key"])?)?;
            ensure!(
                payload["new_key_id"] == key_id(&new).as_str(),
                "new key id does not match"
            );
            let window = |id: &Value| keys.iter().find(|k| *id == k.key_id.as_str());
            ensure!(
                window(&payload["old_key_id"]).is_some_and(|k| k.valid_until_ms == Some(switch))
                    && window(&payload["new_key_id"]).is_some_and(|k| k.valid_from_ms == switch),
                "the published windows do not meet at switch_at_ms"
            );
        }
        "command.issued" => {
            let command = &payload["command"];
            let mut want = COMMAND_MEMBERS.to_vec();
            if matches!(command["kind"].as_str(), Some("retry-task" | "bulk-retry")) {
                want.push("resolved");
            }
            let got = members(command);
            ensure!(
                got == sorted(&want) || got == sorted(COMMAND_MEMBERS),
                "command fields {got:?}"
            );
            ensure!(
                serde_json::from_value::<Command>(
                    json!({"kind": command["kind"], "payload": command["payload"]})
                )
                .is_ok(),
                "the command's payload is not its kind's"
            );
            let id = text(&command["id"])?;
            ensure!(
                st["command_id"] == id.as_str(),
                "command id differs from the row's"
            );
            ensure!(
                format!("project:{}", text(&command["project_id"])?) == chain,
                "command of another project"
            );
            let state = CommandState {
                issued_hash: row.hash.clone(),
                audience: text(&command["audience"])?,
                status: "issued".into(),
                late_recorded: false,
            };
            ensure!(commands.insert(id, state).is_none(), "command issued twice");
        }
        _ if command_row => {
            let id = text(&st["command_id"])?;
            let state = commands
                .get_mut(&id)
                .ok_or("outcome of a command not issued before")?;
            ensure!(
                members(payload)
                    == [
                        "agent_result",
                        "detail",
                        "late",
                        "previous_status",
                        "status"
                    ],
                "outcome fields {:?}",
                members(payload)
            );
            let status = &kind["command.".len()..];
            ensure!(payload["status"] == status, "status differs from the kind");
            ensure!(
                payload["previous_status"] == state.status.as_str(),
                "previous_status is not the command's status"
            );
            let late = payload["late"].as_bool().ok_or("late is not a bool")?;
            let open = matches!(state.status.as_str(), "issued" | "dispatched");
            if late {
                ensure!(!open, "a late row for an open command");
                ensure!(!state.late_recorded, "a second late row for one command");
                ensure!(
                    matches!(status, "succeeded" | "failed"),
                    "a late {status} row"
                );
                state.late_recorded = true;
            } else {
                ensure!(
                    match status {
                        "dispatched" => state.status == "issued",
                        "succeeded" | "failed" | "timed_out" => open,
                        _ => false,
                    },
                    "{} -> {status} is not a transition",
                    state.status
                );
                state.status = status.to_owned();
            }
            let result = &payload["agent_result"];
            match status {
                "timed_out" => ensure!(
                    actor_type == "system" && result.is_null(),
                    "timed_out is the brain's, without a result"
                ),
                _ => ensure!(
                    actor_type == "agent" && actor["id"] == state.audience.as_str(),
                    "outcome by someone other than the command's agent"
                ),
            }
            if status == "dispatched" {
                ensure!(
                    result.is_null() && payload["detail"].is_null(),
                    "dispatched with a result"
                );
            }
            if matches!(status, "succeeded" | "failed") {
                check_agent_result(&id, state, payload, status, agent_keys)?;
            }
        }
        _ => {}
    }
    Ok(time)
}

fn check_agent_result(
    command_id: &str,
    state: &CommandState,
    payload: &Value,
    status: &str,
    agent_keys: &HashMap<String, VerifyingKey>,
) -> Result<(), String> {
    let signed = &payload["agent_result"];
    ensure!(
        members(signed) == ["result", "signature"],
        "agent_result fields {:?}",
        members(signed)
    );
    let result = &signed["result"];
    ensure!(
        members(result)
            == [
                "agent_id",
                "command_id",
                "detail",
                "finished_at_ms",
                "outcome",
                "row_hash",
                "session"
            ],
        "result fields {:?}",
        members(result)
    );
    ensure!(
        result["command_id"] == command_id,
        "the result is for another command"
    );
    ensure!(
        result["row_hash"] == state.issued_hash.as_str(),
        "the result is for another command row"
    );
    ensure!(
        result["agent_id"] == state.audience.as_str(),
        "the result is from another agent"
    );
    ensure!(result["session"].is_u64(), "session is not an integer");
    let finished = result["finished_at_ms"].as_str().unwrap_or_default();
    ensure!(
        !finished.is_empty() && finished.bytes().all(|b| b.is_ascii_digit()),
        "finished_at_ms"
    );
    let agent_id = result["agent_id"].as_str().unwrap();
    let key = agent_keys
        .get(agent_id)
        .ok_or("no agent.enrolled row for the agent earlier in this chain")?;
    let body = serde_json_canonicalizer::to_vec(result).unwrap();
    let mut message = b"taskward/agent-result/v1\0".to_vec();
    message.extend_from_slice(&(body.len() as u32).to_be_bytes());
    message.extend_from_slice(&body);
    verify_strict(
        key,
        &message,
        signed["signature"].as_str().unwrap_or_default(),
    )
    .map_err(|why| format!("agent result: {why}"))?;
    let (want_status, want_detail) = row_for_outcome(
        result["outcome"].as_str().unwrap_or_default(),
        result["detail"].as_str().ok_or("detail is not a string")?,
    )?;
    ensure!(
        status == want_status,
        "the row says {status}, the agent said {}",
        result["outcome"]
    );
    ensure!(
        payload["detail"] == want_detail.as_str(),
        "the row's detail is not the agent's"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn committed_vectors_match_the_code() {
    let generated = serde_json::to_string_pretty(&build().json).unwrap() + "\n";
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/audit-test-vectors.json"
    );
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/audit-test-vectors.json differs from what the code produces; if the format change \
         is intended, bump the version tags and run UPDATE_VECTORS=1 cargo test -p taskward-shared --test vectors"
    );
}

#[test]
fn the_vectors_cover_every_command_outcome_and_key_event() {
    let built = build();
    let kinds: Vec<(String, Value)> = built
        .site
        .iter()
        .chain(&built.project)
        .map(|row| {
            let st: Value = serde_json::from_str(&row.statement).unwrap();
            (row.kind.clone(), st["payload"].clone())
        })
        .collect();
    for kind in [
        "command.issued",
        "command.dispatched",
        "command.succeeded",
        "command.failed",
        "command.timed_out",
        "agent.enrolled",
        "key.rotated",
    ] {
        assert!(kinds.iter().any(|(k, _)| k == kind), "no {kind} row");
    }
    let outcome = |p: &Value| {
        p["agent_result"]["result"]["outcome"]
            .as_str()
            .map(str::to_owned)
    };
    for agent_said in ["succeeded", "failed", "refused", "interrupted"] {
        assert!(
            kinds
                .iter()
                .any(|(_, p)| outcome(p).as_deref() == Some(agent_said)),
            "no {agent_said} result"
        );
    }
    assert_eq!(kinds.iter().filter(|(_, p)| p["late"] == true).count(), 1);
    // Rows after the switch are signed by the new key, before it by the old one.
    let new_id = key_id(&built.keys.brain2.verifying_key());
    for row in built.site.iter().chain(&built.project) {
        let st: Value = serde_json::from_str(&row.statement).unwrap();
        let after = time_ms(st["time"].as_str().unwrap()).unwrap() >= SWITCH_AT;
        assert_eq!(
            row.key_id == new_id,
            after,
            "row {} of {}",
            row.seq,
            row.chain
        );
    }
    // Every checkpoint is signed after its head row (checked by the rules below, too).
    assert_eq!(built.checkpoints.len(), 3);
}

#[test]
fn the_vectors_follow_every_rule_of_the_spec() {
    let built = build();
    let keys = built.keys.published();
    check_by_the_spec(&site_chain(), &built.site, &keys, &built.checkpoints).unwrap();
    check_by_the_spec(&project_chain(), &built.project, &keys, &built.checkpoints).unwrap();
    assert_eq!(rfc3339(T0), "2026-11-25T12:00:00.000Z");
    assert_eq!(time_ms("2026-11-25T12:00:00.000Z"), Ok(T0));
}

/// Verifies a chain with the shared crate's verifier, from the published keys and the chain's
/// newest checkpoint; returns the rows verified. (One place to follow the verifier's API.)
fn verify_with_the_shared_verifier(
    chain: &str,
    rows: &[AuditRow],
    keys: &[PublicKeyInfo],
    checkpoints: &[Checkpoint],
) -> u64 {
    shared_verdict(chain, rows, keys, checkpoints).unwrap()
}

/// What the shared verifier says of a chain, holding it to every checkpoint of the chain.
fn shared_verdict(
    chain: &str,
    rows: &[AuditRow],
    keys: &[PublicKeyInfo],
    checkpoints: &[Checkpoint],
) -> Result<u64, String> {
    let trusted = TrustedKeys::from_infos(keys).unwrap();
    let mine = checkpoints.iter().filter(|c| c.chain == chain).cloned();
    let mut verifier = ChainVerifier::new(chain, trusted, mine).map_err(|f| f.to_string())?;
    for row in rows {
        verifier.push(row).map_err(|f| f.to_string())?;
    }
    verifier.finish().map(|s| s.rows).map_err(|f| f.to_string())
}

#[test]
fn the_shared_verifier_accepts_the_vector_chains() {
    let built = build();
    let keys = built.keys.published();
    for (chain, rows) in [
        (site_chain(), &built.site),
        (project_chain(), &built.project),
    ] {
        assert_eq!(
            verify_with_the_shared_verifier(&chain, rows, &keys, &built.checkpoints),
            rows.len() as u64
        );
    }
}

/// Rewrites row `index` with `edit` on its statement and re-signs it and every later row with
/// the brain key valid at each row's time (or `signer` for the edited row), as someone holding
/// the brain's keys but not the agent's could.
fn forge(
    chain: &str,
    rows: &[AuditRow],
    keys: &Keys,
    index: usize,
    signer: Option<&SigningKey>,
    edit: impl FnOnce(&mut Value),
) -> Vec<AuditRow> {
    let mut out = rows[..index].to_vec();
    let mut prev = match index {
        0 => genesis_hash(chain),
        _ => parse_hash(&rows[index - 1].hash).unwrap(),
    };
    let mut edit = Some(edit);
    for row in &rows[index..] {
        let mut statement: Value = serde_json::from_str(&row.statement).unwrap();
        let mut key = None;
        if let Some(edit) = edit.take() {
            edit(&mut statement);
            key = signer;
        }
        let time = time_ms(statement["time"].as_str().unwrap()).unwrap();
        let key = key.unwrap_or(keys.brain_at(time));
        let statement: Statement = serde_json::from_value(statement).unwrap();
        let forged = AuditRow::sign(row.seq, &prev, &statement, key);
        prev = parse_hash(&forged.hash).unwrap();
        out.push(forged);
    }
    out
}

/// The rules reject what the outside auditor found accepted (issue 17), naming the row.
#[test]
fn the_spec_rules_reject_what_the_auditor_tried() {
    let built = build();
    let keys = built.keys.published();
    let chain = project_chain();
    // Both verifiers must refuse each tamper: the one written from the spec alone, and the
    // shared one `audit verify` runs, naming the same row.
    let check = |rows: &[AuditRow], checkpoints: &[Checkpoint]| {
        let why = check_by_the_spec(&chain, rows, &keys, checkpoints).unwrap_err();
        let mine = checkpoints.iter().filter(|c| c.chain == chain).count();
        // A file without this chain's checkpoint is refused by the CLI (it knows a file was
        // given); the library verifies what it was handed.
        if mine > 0 {
            let shared = shared_verdict(&chain, rows, &keys, checkpoints).unwrap_err();
            let named = |text: &str| {
                text.strip_prefix("row ")
                    .and_then(|t| t.split(':').next())
                    .map(str::to_owned)
            };
            let spec_row = named(&why).or_else(|| {
                why.strip_prefix("checkpoint of size ")
                    .and_then(|t| t.split(' ').next())
                    .map(str::to_owned)
            });
            assert_eq!(named(&shared), spec_row, "spec: {why}\nshared: {shared}");
        }
        why
    };
    let rows = &built.project;
    let cps = &built.checkpoints;
    let some_rows_only: Vec<Checkpoint> =
        cps.iter().filter(|c| c.chain != chain).cloned().collect();

    // A failure rewritten as a success, every brain row re-signed.
    let forged = forge(&chain, rows, &built.keys, 7, None, |st| {
        st["kind"] = json!("command.succeeded");
        st["payload"]["status"] = json!("succeeded");
        st["payload"]["agent_result"]["result"]["outcome"] = json!("succeeded");
    });
    let why = check(&forged, &some_rows_only);
    assert!(
        why.starts_with("row 8: agent result: bad signature"),
        "{why}"
    );

    // The agent's signature replaced by one of another key.
    let forged = forge(&chain, rows, &built.keys, 4, None, |st| {
        let signed = &mut st["payload"]["agent_result"];
        let body = serde_json_canonicalizer::to_vec(&signed["result"]).unwrap();
        let mut message = RESULT_TAG.to_vec();
        message.extend_from_slice(&(body.len() as u32).to_be_bytes());
        message.extend_from_slice(&body);
        let other = SigningKey::from_bytes(&seed(0xc1));
        signed["signature"] = json!(hex::encode(other.sign(&message).to_bytes()));
    });
    let why = check(&forged, &some_rows_only);
    assert!(
        why.starts_with("row 5: agent result: bad signature"),
        "{why}"
    );

    // The outcome changed in the brain's row only.
    let forged = forge(&chain, rows, &built.keys, 7, None, |st| {
        st["kind"] = json!("command.succeeded");
        st["payload"]["status"] = json!("succeeded");
    });
    let why = check(&forged, &some_rows_only);
    assert!(why.starts_with("row 8: the row says succeeded"), "{why}");

    // Back-dated before the new key existed.
    let forged = forge(
        &chain,
        rows,
        &built.keys,
        10,
        Some(&built.keys.brain2),
        |st| {
            st["time"] = json!(rfc3339(SWITCH_AT - 1));
        },
    );
    let why = check(&forged, &some_rows_only);
    assert!(
        why.starts_with("row 11: key ") && why.contains("is not valid at"),
        "{why}"
    );

    // Signed by the retired key after its window.
    let forged = forge(
        &chain,
        rows,
        &built.keys,
        11,
        Some(&built.keys.brain1),
        |_| {},
    );
    let why = check(&forged, &some_rows_only);
    assert!(
        why.starts_with("row 12: key ") && why.contains("is not valid at"),
        "{why}"
    );

    // Time going backwards.
    let forged = forge(&chain, rows, &built.keys, 15, None, |st| {
        st["time"] = json!(rfc3339(at(179)));
    });
    let why = check(&forged, &some_rows_only);
    assert!(why.starts_with("row 16: time goes backwards"), "{why}");

    // A second late row for one command (the agent can sign as many results as it likes).
    let mut longer = rows.clone();
    let mut chain_builder = Chain::new(chain.clone(), &built.keys);
    chain_builder.rows = rows.clone();
    chain_builder.prev = parse_hash(&rows.last().unwrap().hash).unwrap();
    let c4 = &rows[10];
    append_result(
        &mut chain_builder,
        at(240),
        c4,
        "timed_out",
        true,
        8,
        "failed",
        "again",
    );
    longer.push(chain_builder.rows.last().unwrap().clone());
    let why = check(&longer, &some_rows_only);
    assert!(why.starts_with("row 18: a second late row"), "{why}");

    // Uppercase hex.
    let mut upper = rows.clone();
    upper[2].hash = upper[2].hash.to_uppercase();
    let why = check(&upper, &some_rows_only);
    assert!(
        why.starts_with("row 3: hash is not 64 lowercase hex"),
        "{why}"
    );

    // A statement that is not canonical, hashed and signed as it is.
    let mut spaced = rows.clone();
    let statement: Value = serde_json::from_str(&rows[1].statement).unwrap();
    spaced[1].statement = serde_json::to_string_pretty(&statement).unwrap();
    let prev = parse_hash(&spaced[1].prev_hash).unwrap();
    let hash = row_hash(2, &prev, spaced[1].statement.as_bytes());
    spaced[1].hash = hex::encode(hash);
    spaced[1].signature = hex::encode(
        built
            .keys
            .brain1
            .sign(&signature_message(&spaced[1].key_id, &hash))
            .to_bytes(),
    );
    let why = check(&spaced[..2], &some_rows_only);
    assert!(
        why.starts_with("row 2: the statement is not canonical"),
        "{why}"
    );

    // No checkpoint for the chain; a checkpoint signed before its head row; a truncated tail.
    assert_eq!(
        check(rows, &some_rows_only),
        format!("no checkpoint for {chain}")
    );
    let early = Checkpoint::sign(
        &chain,
        17,
        &parse_hash(&rows[16].hash).unwrap(),
        at(199),
        &built.keys.brain2,
    );
    let why = check(rows, &[early]);
    assert!(why.contains("signed before its head row"), "{why}");
    let why = check(&rows[..16], cps);
    assert!(why.starts_with("row 17: truncated"), "{why}");
}

/// Both verifiers refuse `rows`, naming row `seq`: the checker written from the document and
/// the shared one `audit verify` and the brain's sweep run. Returns the shared verifier's
/// reason.
fn both_refuse_at(
    chain: &str,
    rows: &[AuditRow],
    keys: &[PublicKeyInfo],
    checkpoints: &[Checkpoint],
    seq: u64,
) -> String {
    let spec = check_by_the_spec(chain, rows, keys, checkpoints).unwrap_err();
    let shared = shared_verdict(chain, rows, keys, checkpoints).unwrap_err();
    let at = format!("row {seq}: ");
    assert!(spec.starts_with(&at), "spec: {spec}");
    assert!(shared.starts_with(&at), "shared: {shared}");
    shared
}

/// What the outside auditor's second round found accepted (issue 17, items 1-7): each forgery
/// is re-signed with the brain's keys, so only the rows' meaning gives it away.
#[test]
fn the_meaning_of_every_row_is_checked() {
    let built = build();
    let keys = built.keys.published();
    let cps = &built.checkpoints;
    let project = project_chain();
    let rows = &built.project;
    let forged = |index: usize, edit: &dyn Fn(&mut Value)| {
        forge(&project, rows, &built.keys, index, None, |st| edit(st))
    };
    let refused = |rows: &[AuditRow], seq: u64| both_refuse_at(&project, rows, &keys, cps, seq);

    // 1. The outcome's detail rewritten, or dropped, under the agent's unchanged result.
    let why = refused(
        &forged(4, &|st| st["payload"]["detail"] = json!("all good")),
        5,
    );
    assert!(
        why.contains("detail is not what the brain derives"),
        "{why}"
    );
    refused(&forged(4, &|st| st["payload"]["detail"] = Value::Null), 5);
    // 2. An agent's outcome row attributed to the admin.
    let why = refused(&forged(4, &|st| st["actor"] = json!(user("admin"))), 5);
    assert!(why.contains("actor"), "{why}");
    // 3. An extra member in the agent's result wrapper, or in the outcome payload.
    let why = refused(
        &forged(4, &|st| st["payload"]["agent_result"]["note"] = json!("x")),
        5,
    );
    assert!(why.contains("\"note\""), "{why}");
    let why = refused(&forged(4, &|st| st["payload"]["note"] = json!("x")), 5);
    assert!(why.contains("\"note\""), "{why}");
    // 4. A previous status no earlier row left.
    let why = refused(
        &forged(3, &|st| {
            st["payload"]["previous_status"] = json!("dispatched")
        }),
        4,
    );
    assert!(why.contains("previous_status"), "{why}");
    // 5. A kind the protocol does not define, reported at once.
    let why = refused(
        &forged(3, &|st| st["kind"] = json!("command.teleported")),
        4,
    );
    assert!(why.contains("unknown kind \"command.teleported\""), "{why}");
    // 6. An extra member in the signed command; the kind changed under the same payload.
    let why = refused(
        &forged(2, &|st| st["payload"]["command"]["note"] = json!("x")),
        3,
    );
    assert!(why.contains("\"note\""), "{why}");
    let why = refused(
        &forged(2, &|st| {
            st["payload"]["command"]["kind"] = json!("purge-queue")
        }),
        3,
    );
    assert!(why.contains("not a purge-queue's"), "{why}");

    // 5. On the site chain: an unknown kind, a payload replaced, a command id on a site row.
    let site = site_chain();
    let site_rows = &built.site;
    let site_forged = |index: usize, signer: Option<&SigningKey>, edit: &dyn Fn(&mut Value)| {
        forge(&site, site_rows, &built.keys, index, signer, |st| edit(st))
    };
    for edit in [
        &(|st: &mut Value| st["kind"] = json!("token.teleported")) as &dyn Fn(&mut Value),
        &|st: &mut Value| st["payload"] = json!({"anything": true}),
        &|st: &mut Value| st["command_id"] = json!("00000000-0000-4000-8000-0000000000c1"),
    ] {
        both_refuse_at(&site, &site_forged(0, None, edit), &keys, cps, 1);
    }
    // 7. The switch moved by a second, re-signed by the outgoing key; and the site chain
    // checked with the keys as they were before the rotation.
    let moved = site_forged(1, Some(&built.keys.brain1), &|st| {
        let at = st["payload"]["switch_at_ms"].as_i64().unwrap();
        st["payload"]["switch_at_ms"] = json!(at + 1000);
    });
    let why = both_refuse_at(&site, &moved, &keys, cps, 2);
    assert!(why.contains("key rotation: switch_at_ms"), "{why}");
    let before = vec![PublicKeyInfo {
        valid_until_ms: None,
        ..keys[0].clone()
    }];
    let why = both_refuse_at(&site, site_rows, &before, &[], 2);
    assert!(why.contains("do not include the new key"), "{why}");
}

/// The vectors as an auditor uses them with a verifier's command line, in
/// `docs/audit-vectors/`: the keys file, each chain's export, `checkpoints.log` exactly as the
/// brain writes it (one checkpoint per line), and tampered exports in `negative/` with the row
/// each must fail at (`negative/expected.json`). Both verifiers are held to every negative
/// here; the committed files must be what this produces (`UPDATE_VECTORS=1` rewrites them).
#[test]
fn the_auditor_files_match_the_code() {
    let built = build();
    let keys = built.keys.published();
    let cps = &built.checkpoints;
    let (site, project) = (site_chain(), project_chain());
    let export = |chain: &str, rows: &[AuditRow]| {
        let header = json!({"format": "taskward-audit-export/v1", "chain": chain, "keys": keys});
        let mut text = header.to_string() + "\n";
        for row in rows {
            text += &(serde_json::to_string(row).unwrap() + "\n");
        }
        text
    };
    let mut files: Vec<(String, String)> = vec![
        (
            "keys.json".into(),
            serde_json::to_string_pretty(&json!({"keys": keys})).unwrap() + "\n",
        ),
        ("site.jsonl".into(), export(&site, &built.site)),
        ("project.jsonl".into(), export(&project, &built.project)),
        (
            "checkpoints.log".into(),
            cps.iter()
                .map(|cp| serde_json::to_string(cp).unwrap() + "\n")
                .collect(),
        ),
    ];
    let p = |index: usize, edit: &dyn Fn(&mut Value)| {
        forge(&project, &built.project, &built.keys, index, None, |st| {
            edit(st)
        })
    };
    let s = |index: usize, edit: &dyn Fn(&mut Value)| {
        forge(
            &site,
            &built.site,
            &built.keys,
            index,
            Some(&built.keys.brain1),
            |st| edit(st),
        )
    };
    let truncated = built.project[..built.project.len() - 1].to_vec();
    let negatives: Vec<(&str, &str, Vec<AuditRow>, u64)> = vec![
        (
            "project-detail-rewritten",
            "the outcome's detail changed under the agent's signed result",
            p(4, &|st| st["payload"]["detail"] = json!("all good")),
            5,
        ),
        (
            "project-actor-changed",
            "an agent's outcome row attributed to a user",
            p(4, &|st| st["actor"] = json!(user("admin"))),
            5,
        ),
        (
            "project-failure-as-success",
            "a failure rewritten as a success, the agent's result edited to match",
            p(7, &|st| {
                st["kind"] = json!("command.succeeded");
                st["payload"]["status"] = json!("succeeded");
                st["payload"]["agent_result"]["result"]["outcome"] = json!("succeeded");
            }),
            8,
        ),
        (
            "project-previous-status",
            "a previous_status no earlier row left",
            p(3, &|st| {
                st["payload"]["previous_status"] = json!("dispatched")
            }),
            4,
        ),
        (
            "project-extra-command-member",
            "a member added to the signed command",
            p(2, &|st| st["payload"]["command"]["note"] = json!("x")),
            3,
        ),
        (
            "project-truncated",
            "the last row cut off (caught by checkpoints.log)",
            truncated.clone(),
            truncated.len() as u64 + 1,
        ),
        (
            "site-unknown-kind",
            "a kind the protocol does not define",
            s(0, &|st| st["kind"] = json!("token.teleported")),
            1,
        ),
        (
            "site-switch-moved",
            "key.rotated's switch_at_ms moved by a second, re-signed by the outgoing key",
            s(1, &|st| {
                let at = st["payload"]["switch_at_ms"].as_i64().unwrap();
                st["payload"]["switch_at_ms"] = json!(at + 1000);
            }),
            2,
        ),
    ];
    let mut expected = Vec::new();
    for (name, what, rows, seq) in negatives {
        let chain = if name.starts_with("site") {
            &site
        } else {
            &project
        };
        let why = both_refuse_at(chain, &rows, &keys, cps, seq);
        files.push((format!("negative/{name}.jsonl"), export(chain, &rows)));
        expected.push(json!({
            "file": format!("{name}.jsonl"),
            "tamper": what,
            "fails_at_row": seq,
            "reference_verifier_says": why,
        }));
    }
    files.push((
        "negative/expected.json".into(),
        serde_json::to_string_pretty(&expected).unwrap() + "\n",
    ));
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/audit-vectors");
    let update = std::env::var_os("UPDATE_VECTORS").is_some();
    for (name, text) in files {
        let path = format!("{dir}/{name}");
        if update {
            std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "docs/audit-vectors/{name} differs from what the code produces; run \
             UPDATE_VECTORS=1 cargo test -p taskward-shared --test vectors"
        );
    }
}

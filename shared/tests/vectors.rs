//! The test vectors in `docs/audit-test-vectors.json` are what this code produces from fixed
//! inputs, and each preimage is built here exactly as `docs/protocol.md` describes it (so the
//! document and the code cannot drift). Regenerate with
//! `UPDATE_VECTORS=1 cargo test -p taskward-shared --test vectors`.

use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use taskward_shared::audit::PublicKeyInfo;
use taskward_shared::audit::verify::{ChainVerifier, TrustedKeys};
use taskward_shared::audit::{
    Actor, ActorKind, AuditRow, CHECKPOINT_TAG, Checkpoint, GENESIS_TAG, ROW_TAG, SIGNATURE_TAG,
    Statement, checkpoint_message, genesis_hash, parse_hash, row_hash, signature_message,
};
use taskward_shared::crypto::{CONFIRM_TAG, KEY_ID_TAG, confirm_token, key_id};

const CHAIN: &str = "project:00000000-0000-4000-8000-000000000001";

fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    seed
}

fn statement(seq: u64, kind: &str, payload: Value) -> Statement {
    Statement {
        v: 1,
        chain: CHAIN.into(),
        seq: seq.to_string(),
        time: format!("2026-11-25T12:00:0{seq}.000Z"),
        actor: Actor {
            kind: ActorKind::User,
            id: "00000000-0000-4000-8000-0000000000aa".into(),
            name: "admin".into(),
        },
        kind: kind.into(),
        command_id: (kind == "command.issued")
            .then(|| "00000000-0000-4000-8000-0000000000c1".into()),
        payload,
    }
}

fn vectors() -> Value {
    let key = SigningKey::from_bytes(&seed());
    let public = key.verifying_key();
    let id = key_id(&public);
    let mut key_id_preimage = KEY_ID_TAG.to_vec();
    key_id_preimage.extend_from_slice(public.as_bytes());
    assert_eq!(hex::encode(&Sha256::digest(&key_id_preimage)[..16]), id);

    let mut genesis_preimage = GENESIS_TAG.to_vec();
    genesis_preimage.extend_from_slice(&(CHAIN.len() as u32).to_be_bytes());
    genesis_preimage.extend_from_slice(CHAIN.as_bytes());
    let genesis = genesis_hash(CHAIN);
    assert_eq!(Sha256::digest(&genesis_preimage).as_slice(), genesis);

    let statements = [
        statement(
            1,
            "agent.created",
            json!({"agent": {"id": "00000000-0000-4000-8000-0000000000b1", "name": "worker-host-1", "preserve": false}}),
        ),
        statement(
            2,
            "command.issued",
            json!({"command": {"kind": "retry-task", "payload": {"engine": "celery", "task_id": "9d2c", "override_kwargs": {"to": "ops@example.com", "n": 1.5, "é": "\u{1F600}"}}}}),
        ),
    ];
    let mut prev = genesis;
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for (i, st) in statements.iter().enumerate() {
        let seq = i as u64 + 1;
        let row = AuditRow::sign(seq, &prev, st, &key);
        let bytes = row.statement.as_bytes();
        let mut row_preimage = ROW_TAG.to_vec();
        row_preimage.extend_from_slice(&seq.to_be_bytes());
        row_preimage.extend_from_slice(&prev);
        row_preimage.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        row_preimage.extend_from_slice(bytes);
        let hash = row_hash(seq, &prev, bytes);
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
        json_rows.push(json!({
            "statement_object": serde_json::to_value(st).unwrap(),
            "statement_bytes_utf8": row.statement,
            "seq": seq,
            "prev_hash": row.prev_hash,
            "row_hash_preimage_hex": hex::encode(&row_preimage),
            "hash": row.hash,
            "signature_message_hex": hex::encode(&sig_message),
            "key_id": row.key_id,
            "signature": row.signature,
        }));
        prev = parse_hash(&row.hash).unwrap();
        rows.push(row);
    }

    let time_ms = 1_795_600_000_000_i64;
    let checkpoint = Checkpoint::sign(CHAIN, 2, &prev, time_ms, &key);
    let mut cp_message = CHECKPOINT_TAG.to_vec();
    cp_message.extend_from_slice(&(CHAIN.len() as u32).to_be_bytes());
    cp_message.extend_from_slice(CHAIN.as_bytes());
    cp_message.extend_from_slice(&2u64.to_be_bytes());
    cp_message.extend_from_slice(&prev);
    cp_message.extend_from_slice(&time_ms.to_be_bytes());
    assert_eq!(cp_message, checkpoint_message(CHAIN, 2, &prev, time_ms));

    // The vectors verify with the verifier, from the public key alone.
    let trusted = TrustedKeys::from_infos(&[PublicKeyInfo {
        key_id: id.clone(),
        public_key: hex::encode(public.as_bytes()),
        valid_from_ms: 0,
        valid_until_ms: None,
    }])
    .unwrap();
    let mut verifier = ChainVerifier::new(CHAIN, trusted, Some(checkpoint.clone())).unwrap();
    for row in &rows {
        verifier.push(row).unwrap();
    }
    assert_eq!(verifier.finish().unwrap().rows, 2);

    let confirm_secret = [0x42u8; 32];
    let mut confirm_message = CONFIRM_TAG.to_vec();
    for field in ["00000000-0000-4000-8000-0000000000b1", "default"] {
        confirm_message.extend_from_slice(&(field.len() as u32).to_be_bytes());
        confirm_message.extend_from_slice(field.as_bytes());
    }
    confirm_message.extend_from_slice(&12u64.to_be_bytes());

    json!({
        "description": "Taskward audit log test vectors; see docs/protocol.md. All hex is lowercase.",
        "key": {
            "seed_hex": hex::encode(seed()),
            "public_key_hex": hex::encode(public.as_bytes()),
            "key_id_preimage_hex": hex::encode(&key_id_preimage),
            "key_id": id,
        },
        "chain": CHAIN,
        "genesis": {
            "preimage_hex": hex::encode(&genesis_preimage),
            "hash": hex::encode(genesis),
        },
        "rows": json_rows,
        "checkpoint": {
            "size": 2,
            "head": checkpoint.head,
            "time_ms": time_ms,
            "message_hex": hex::encode(&cp_message),
            "key_id": checkpoint.key_id,
            "signature": checkpoint.signature,
        },
        "purge_confirm_token": {
            "secret_hex": hex::encode(confirm_secret),
            "agent_id": "00000000-0000-4000-8000-0000000000b1",
            "queue": "default",
            "depth": 12,
            "hmac_message_hex": hex::encode(&confirm_message),
            "token": confirm_token(&confirm_secret, "00000000-0000-4000-8000-0000000000b1", "default", 12),
        }
    })
}

#[test]
fn committed_vectors_match_the_code() {
    let generated = serde_json::to_string_pretty(&vectors()).unwrap() + "\n";
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

//! The verifier against chains made here, tampered with one way at a time.

use ed25519_dalek::SigningKey;

use super::*;
use crate::audit::{Actor, ActorKind, PublicKeyInfo, STATEMENT_VERSION};
use crate::crypto::key_id;

const CHAIN: &str = "project:test";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32])
}

fn trusted(key: &SigningKey) -> TrustedKeys {
    TrustedKeys::from_infos(&[PublicKeyInfo {
        key_id: key_id(&key.verifying_key()),
        public_key: hex::encode(key.verifying_key().as_bytes()),
        valid_from_ms: 0,
        valid_until_ms: None,
    }])
    .unwrap()
}

fn chain(n: u64, key: &SigningKey) -> Vec<AuditRow> {
    let mut prev = genesis_hash(CHAIN);
    (1..=n)
        .map(|seq| {
            let statement = Statement {
                v: STATEMENT_VERSION,
                chain: CHAIN.into(),
                seq: seq.to_string(),
                time: "2026-11-25T00:00:00.000Z".into(),
                actor: Actor {
                    kind: ActorKind::User,
                    id: "u1".into(),
                    name: "admin".into(),
                },
                kind: "test.row".into(),
                command_id: None,
                payload: serde_json::json!({"n": seq}),
            };
            let row = AuditRow::sign(seq, &prev, &statement, key);
            prev = parse_hash(&row.hash).unwrap();
            row
        })
        .collect()
}

fn verify(
    rows: &[AuditRow],
    keys: TrustedKeys,
    cp: Option<Checkpoint>,
) -> Result<Summary, Failure> {
    let mut v = ChainVerifier::new(CHAIN, keys, cp)?;
    for row in rows {
        v.push(row)?;
    }
    v.finish()
}

#[test]
fn an_honest_chain_verifies_across_batches() {
    let k = key();
    let rows = chain(300, &k);
    let summary = verify(&rows, trusted(&k), None).unwrap();
    assert_eq!(summary.rows, 300);
    assert_eq!(summary.head, rows[299].hash);
}

#[test]
fn each_kind_of_tampering_names_the_first_bad_row() {
    let k = key();
    let rows = chain(300, &k);

    let mut edited = rows.clone();
    edited[199].statement = edited[199].statement.replace("\"n\":200", "\"n\":201");
    assert_eq!(verify(&edited, trusted(&k), None).unwrap_err().seq, 200);

    let mut removed = rows.clone();
    removed.remove(49);
    let err = verify(&removed, trusted(&k), None).unwrap_err();
    assert_eq!(
        (err.seq, &err.problem),
        (
            51,
            &Problem::Gap {
                expected: 50,
                found: 51
            }
        )
    );

    let mut swapped = rows.clone();
    swapped.swap(9, 10);
    (swapped[9].seq, swapped[10].seq) = (10, 11);
    let err = verify(&swapped, trusted(&k), None).unwrap_err();
    assert_eq!(err.seq, 10);
    assert!(matches!(err.problem, Problem::Moved { .. }), "{err}");

    // A late row re-signed by a stranger's key.
    let stranger = SigningKey::from_bytes(&[1u8; 32]);
    let mut forged = rows.clone();
    let statement: Statement = serde_json::from_str(&forged[250].statement).unwrap();
    let prev = parse_hash(&forged[250].prev_hash).unwrap();
    forged[250] = AuditRow::sign(251, &prev, &statement, &stranger);
    let err = verify(&forged, trusted(&k), None).unwrap_err();
    assert_eq!(err.seq, 251);
    assert!(matches!(err.problem, Problem::UnknownKey(_)));

    // A signature flipped deep inside a batch is found by the strict re-check.
    let mut bad_sig = rows.clone();
    let mut sig = hex::decode(&bad_sig[130].signature).unwrap();
    sig[0] ^= 1;
    bad_sig[130].signature = hex::encode(sig);
    let err = verify(&bad_sig, trusted(&k), None).unwrap_err();
    assert_eq!((err.seq, err.problem), (131, Problem::BadSignature));

    // A column changed under an intact statement.
    let mut column = rows.clone();
    column[5].kind = "other".into();
    assert_eq!(verify(&column, trusted(&k), None).unwrap_err().seq, 6);

    // Another public key published under the real key's id.
    let other = SigningKey::from_bytes(&[2u8; 32]);
    let forged_keys = TrustedKeys::from_infos(&[PublicKeyInfo {
        key_id: key_id(&k.verifying_key()),
        public_key: hex::encode(other.verifying_key().as_bytes()),
        valid_from_ms: 0,
        valid_until_ms: None,
    }]);
    assert!(forged_keys.is_err());
    let err = verify(&rows, trusted(&other), None).unwrap_err();
    assert_eq!(err.seq, 1);
    assert!(matches!(err.problem, Problem::UnknownKey(_)));
}

#[test]
fn checkpoints_catch_truncation_and_rewrites() {
    let k = key();
    let rows = chain(100, &k);
    let head = parse_hash(&rows[79].hash).unwrap();
    let cp = Checkpoint::sign(CHAIN, 80, &head, 1, &k);
    assert_eq!(
        verify(&rows, trusted(&k), Some(cp.clone())).unwrap().rows,
        100
    );

    let err = verify(&rows[..70], trusted(&k), Some(cp.clone())).unwrap_err();
    assert_eq!(err.seq, 71);
    assert_eq!(err.problem, Problem::Truncated { rows: 70, size: 80 });

    // A full rewrite with the real key (someone holding key and database) from row 50 on.
    let mut rewritten = rows[..49].to_vec();
    let mut prev = parse_hash(&rows[48].hash).unwrap();
    for row in &rows[49..] {
        let mut statement: Statement = serde_json::from_str(&row.statement).unwrap();
        statement.payload = serde_json::json!({"rewritten": true});
        let new = AuditRow::sign(row.seq, &prev, &statement, &k);
        prev = parse_hash(&new.hash).unwrap();
        rewritten.push(new);
    }
    assert!(
        verify(&rewritten, trusted(&k), None).is_ok(),
        "a rewrite is invisible without a checkpoint"
    );
    let err = verify(&rewritten, trusted(&k), Some(cp.clone())).unwrap_err();
    assert_eq!(err.problem, Problem::CheckpointMismatch { size: 80 });

    let mut forged_cp = cp;
    forged_cp.size = 90;
    assert!(matches!(
        verify(&rows, trusted(&k), Some(forged_cp))
            .unwrap_err()
            .problem,
        Problem::BadCheckpoint(_)
    ));
}

//! The verifier against chains made here, tampered with one way at a time.

use ed25519_dalek::SigningKey;
use serde_json::Value;

use super::*;
use crate::audit::{Actor, ActorKind, PublicKeyInfo, STATEMENT_VERSION};
use crate::crypto::key_id;

const CHAIN: &str = "project:test";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32])
}

fn trusted(key: &SigningKey) -> TrustedKeys {
    TrustedKeys::from_infos(&[PublicKeyInfo::of(&key.verifying_key(), 0, None)]).unwrap()
}

/// A chain of `n` rows: `statement` says what row `seq` states, `signer` which key signs it.
fn linked<'k>(
    n: u64,
    statement: impl Fn(u64) -> Statement,
    signer: impl Fn(u64) -> &'k SigningKey,
) -> Vec<AuditRow> {
    let mut prev = genesis_hash(CHAIN);
    (1..=n)
        .map(|seq| {
            let row = AuditRow::sign(seq, &prev, &statement(seq), signer(seq));
            prev = parse_hash(&row.hash).unwrap();
            row
        })
        .collect()
}

/// Row `seq` of the test chain: a `tasks.deleted` (a kind the protocol defines, so every
/// check but the one under test passes) by `actor` at `time`.
fn test_row(seq: u64, time: String, actor: Actor) -> Statement {
    Statement {
        v: STATEMENT_VERSION,
        chain: CHAIN.into(),
        seq: seq.to_string(),
        time,
        actor,
        kind: "tasks.deleted".into(),
        command_id: None,
        payload: serde_json::json!({"task_ids": [], "deleted_count": seq}),
    }
}

/// A chain of `n` rows by a user, all signed by `key`.
fn chain(n: u64, key: &SigningKey) -> Vec<AuditRow> {
    let admin = Actor {
        kind: ActorKind::User,
        id: "u1".into(),
        name: "admin".into(),
    };
    let time = "2026-11-25T00:00:00.000Z";
    linked(n, |seq| test_row(seq, time.into(), admin.clone()), |_| key)
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
    edited[199].statement = edited[199]
        .statement
        .replace("\"deleted_count\":200", "\"deleted_count\":201");
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
    // 2100-01-01: after every row.
    let cp = Checkpoint::sign(CHAIN, 80, &head, 4_102_444_800_000, &k);
    assert_eq!(
        verify(&rows, trusted(&k), Some(cp.clone())).unwrap().rows,
        100
    );
    // Dated before its head row: it cannot have been taken of this chain.
    let early = Checkpoint::sign(CHAIN, 80, &head, 1, &k);
    let err = verify(&rows, trusted(&k), Some(early)).unwrap_err();
    assert_eq!(err.seq, 80);
    assert!(
        matches!(err.problem, Problem::CheckpointBeforeHead { size: 80 }),
        "{err}"
    );

    let err = verify(&rows[..70], trusted(&k), Some(cp.clone())).unwrap_err();
    assert_eq!(err.seq, 71);
    assert_eq!(err.problem, Problem::Truncated { rows: 70, size: 80 });

    // A full rewrite with the real key (someone holding key and database) from row 50 on.
    let mut rewritten = rows[..49].to_vec();
    let mut prev = parse_hash(&rows[48].hash).unwrap();
    for row in &rows[49..] {
        let mut statement: Statement = serde_json::from_str(&row.statement).unwrap();
        statement.payload = serde_json::json!({"task_ids": ["rewritten"], "deleted_count": 1});
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

/// A row over raw statement bytes, signed like the brain signs (for non-canonical bytes).
fn sign_raw(seq: u64, prev: &Hash, statement: &str, key: &SigningKey) -> AuditRow {
    let parsed: Statement = serde_json::from_str(statement).unwrap();
    AuditRow::sign_text(seq, prev, &parsed, statement.to_owned(), key)
}

/// Re-signs rows from `from` on (0-based) with `key` after `edit` changed each statement,
/// relinking the rest: what someone holding a brain key and the database can do.
fn resign_from(
    rows: &[AuditRow],
    from: usize,
    key: &SigningKey,
    mut edit: impl FnMut(usize, &mut Statement),
) -> Vec<AuditRow> {
    let mut out = rows[..from].to_vec();
    let mut prev = parse_hash(&rows[from].prev_hash).unwrap();
    for (i, row) in rows.iter().enumerate().skip(from) {
        let mut statement: Statement = serde_json::from_str(&row.statement).unwrap();
        edit(i, &mut statement);
        let new = AuditRow::sign(row.seq, &prev, &statement, key);
        prev = parse_hash(&new.hash).unwrap();
        out.push(new);
    }
    out
}

fn verify_all(rows: &[AuditRow], keys: TrustedKeys) -> Result<Summary, Failure> {
    verify(rows, keys, None)
}

/// `rows` with row `n`'s statement changed by `edit` and re-signed with the brain's key, the
/// rows after it relinked: what someone holding the key and the database can do to one row.
fn edit_row(rows: &[AuditRow], n: usize, mut edit: impl FnMut(&mut Statement)) -> Vec<AuditRow> {
    resign_from(rows, n, &key(), |i, statement| {
        if i == n {
            edit(statement);
        }
    })
}

/// Why `rows` fail verification with the brain's key.
fn refusal(rows: &[AuditRow]) -> Failure {
    verify_all(rows, trusted(&key())).unwrap_err()
}

/// Asserts that `rows` are refused at the command's result (row 4) for a reason naming `why`.
fn assert_result_refused(rows: &[AuditRow], why: &str) {
    let err = refusal(rows);
    assert_eq!(err.seq, 4);
    assert!(
        matches!(&err.problem, Problem::AgentResult(w) if w.contains(why)),
        "{err}"
    );
}

#[test]
fn a_non_canonical_statement_is_refused_even_when_signed() {
    let k = key();
    let rows = chain(5, &k);
    for edit in [
        |s: &str| s.replace(r#""deleted_count":3"#, r#""deleted_count": 3"#),
        |s: &str| {
            s.replacen(
                r#""actor":{"id":"u1","name":"admin","type":"user"}"#,
                r#""actor":{"name":"admin","id":"u1","type":"user"}"#,
                1,
            )
        },
        |s: &str| s.replacen(r#""v":1}"#, r#""v":1,"extra":true}"#, 1),
    ] {
        let text = edit(&rows[2].statement);
        assert_ne!(text, rows[2].statement);
        let mut tampered = rows[..2].to_vec();
        let mut prev = parse_hash(&rows[1].hash).unwrap();
        tampered.push(sign_raw(3, &prev, &text, &k));
        prev = parse_hash(&tampered[2].hash).unwrap();
        for row in &rows[3..] {
            let st: Statement = serde_json::from_str(&row.statement).unwrap();
            tampered.push(AuditRow::sign(row.seq, &prev, &st, &k));
            prev = parse_hash(&tampered.last().unwrap().hash).unwrap();
        }
        let err = verify_all(&tampered, trusted(&k)).unwrap_err();
        assert_eq!((err.seq, err.problem), (3, Problem::NotCanonical), "{text}");
    }
}

#[test]
fn hex_fields_must_be_lowercase() {
    let k = key();
    let rows = chain(5, &k);
    for field in ["hash", "prev_hash", "signature", "key_id"] {
        let mut tampered = rows.clone();
        let row = &mut tampered[3];
        let value = match field {
            "hash" => &mut row.hash,
            "prev_hash" => &mut row.prev_hash,
            "signature" => &mut row.signature,
            _ => &mut row.key_id,
        };
        *value = value.to_uppercase();
        let err = verify_all(&tampered, trusted(&k)).unwrap_err();
        assert_eq!((err.seq, err.problem), (4, Problem::NotLowerHex(field)));
    }
}

/// Keys with windows: `old` signs until 12:00:10, `new` from then on.
fn rotated_keys(old: &SigningKey, new: &SigningKey) -> TrustedKeys {
    let info = |k: &SigningKey, from, until| PublicKeyInfo::of(&k.verifying_key(), from, until);
    let switch = format::time_ms("2026-11-25T12:00:10.000Z").unwrap();
    TrustedKeys::from_infos(&[info(old, 0, Some(switch)), info(new, switch, None)]).unwrap()
}

/// A chain of `n` rows one second apart from 12:00:01, each signed by `old` before 12:00:10
/// Asserts that `rows` are refused at row `seq` for a key used outside its window (`why`:
/// `before` it existed or `after` it was retired).
fn assert_outside_window(rows: &[AuditRow], keys: TrustedKeys, seq: u64, why: &str) {
    let err = verify_all(rows, keys).unwrap_err();
    assert_eq!(err.seq, seq);
    assert!(
        matches!(&err.problem, Problem::KeyOutsideWindow { why: w, .. } if w.contains(why)),
        "{err}"
    );
}

/// and by `new` from then on.
fn timed_chain(n: u64, old: &SigningKey, new: &SigningKey) -> Vec<AuditRow> {
    let admin = Actor {
        kind: ActorKind::User,
        id: "u1".into(),
        name: "admin".into(),
    };
    linked(
        n,
        |seq| {
            test_row(
                seq,
                format!("2026-11-25T12:00:{seq:02}.000Z"),
                admin.clone(),
            )
        },
        |seq| if seq < 10 { old } else { new },
    )
}

#[test]
fn keys_sign_only_inside_their_windows() {
    let (old, new) = (key(), SigningKey::from_bytes(&[3u8; 32]));
    let rows = timed_chain(20, &old, &new);
    assert_eq!(
        verify_all(&rows, rotated_keys(&old, &new)).unwrap().rows,
        20
    );

    // Re-signed with the retired key after its window.
    let retired = resign_from(&rows, 14, &old, |_, _| {});
    assert_outside_window(&retired, rotated_keys(&old, &new), 15, "after");
    // A grace covers a brain that kept signing briefly, and no more.
    let late = resign_from(&rows, 9, &old, |_, _| {});
    let grace = |ms| {
        let mut v =
            ChainVerifier::with_key_grace(CHAIN, rotated_keys(&old, &new), None, ms).unwrap();
        late.iter()
            .try_for_each(|r| v.push(r))
            .and_then(|()| v.finish())
    };
    assert_eq!(
        grace(0).unwrap_err().seq,
        10,
        "the window is half-open: at 12:00:10, the switch, only the new key signs"
    );
    assert_eq!(grace(1000).unwrap_err().seq, 11);
    assert!(grace(11_000).is_ok(), "the last row is at 12:00:20");

    // The new key before it existed.
    let early = resign_from(&rows, 4, &new, |_, _| {});
    assert_outside_window(&early, rotated_keys(&old, &new), 5, "before");
}

#[test]
fn a_back_dated_row_is_refused() {
    let (old, new) = (key(), SigningKey::from_bytes(&[3u8; 32]));
    let rows = timed_chain(20, &old, &new);
    let back = resign_from(&rows, 12, &new, |i, st| {
        if i == 12 {
            st.time = "2026-11-25T12:00:11.500Z".into();
        }
    });
    let err = verify_all(&back, rotated_keys(&old, &new)).unwrap_err();
    assert_eq!(err.seq, 13);
    assert!(matches!(err.problem, Problem::TimeWentBack { .. }), "{err}");
    // Equal times are fine (several rows in one millisecond).
    let same = resign_from(&rows, 12, &new, |i, st| {
        if i == 12 {
            st.time = "2026-11-25T12:00:12.000Z".into();
        }
    });
    assert!(verify_all(&same, rotated_keys(&old, &new)).is_ok());
    let bad = resign_from(&rows, 12, &new, |i, st| {
        if i == 12 {
            st.time = "2026-11-25T12:00:13Z".into();
        }
    });
    let err = verify_all(&bad, rotated_keys(&old, &new)).unwrap_err();
    assert!(matches!(err.problem, Problem::Malformed(_)), "{err}");
}

mod agents {
    use serde_json::json;

    use super::*;
    use crate::protocol::{CommandResult, Outcome, SignedResult, result_message};

    const AGENT: &str = "agent-1";

    fn agent_key() -> SigningKey {
        SigningKey::from_bytes(&[5u8; 32])
    }

    fn statement(seq: u64, kind: &str, command: Option<&str>, payload: Value) -> Statement {
        Statement {
            v: STATEMENT_VERSION,
            chain: CHAIN.into(),
            seq: seq.to_string(),
            time: format!("2026-11-25T12:00:{seq:02}.000Z"),
            actor: match kind {
                "command.issued" | "agent.created" => Actor {
                    kind: ActorKind::User,
                    id: "u1".into(),
                    name: "admin".into(),
                },
                _ => Actor {
                    kind: ActorKind::Agent,
                    id: AGENT.into(),
                    name: "host".into(),
                },
            },
            kind: kind.into(),
            command_id: command.map(str::to_owned),
            payload,
        }
    }

    fn result(command: &str, issued: &str, outcome: Outcome, agent: &SigningKey) -> Value {
        serde_json::to_value(SignedResult::sign(
            CommandResult {
                command_id: command.into(),
                row_hash: issued.into(),
                agent_id: AGENT.into(),
                session: 1,
                outcome,
                detail: "exit 1".into(),
                finished_at_ms: "1795608000000".into(),
            },
            agent,
        ))
        .unwrap()
    }

    fn outcome(status: &str, late: bool, result: Value) -> Value {
        let previous = if late { "failed" } else { "dispatched" };
        json!({"status": status, "detail": "exit 1", "late": late,
            "previous_status": previous, "agent_result": result})
    }

    /// enrolled(1), issued c1(2), dispatched(3), failed with the agent's result(4),
    /// late succeeded(5), then `extra` rows from the closure (given the issued hash).
    fn push(rows: &mut Vec<AuditRow>, kind: &str, command: Option<&str>, payload: Value) {
        let prev = rows
            .last()
            .map_or(genesis_hash(CHAIN), |r| parse_hash(&r.hash).unwrap());
        let seq = rows.len() as u64 + 1;
        let row = AuditRow::sign(seq, &prev, &statement(seq, kind, command, payload), &key());
        rows.push(row);
    }

    fn history(extra: impl Fn(&str) -> Vec<(&'static str, Value)>) -> Vec<AuditRow> {
        let agent = agent_key();
        let mut rows: Vec<AuditRow> = Vec::new();
        push(
            &mut rows,
            "agent.enrolled",
            None,
            json!({"agent": {"id": AGENT, "name": "host"},
                "public_key": hex::encode(agent.verifying_key().as_bytes()),
                "key_id": key_id(&agent.verifying_key()), "hostname": null}),
        );
        push(
            &mut rows,
            "command.issued",
            Some("c1"),
            json!({"command": {"id": "c1", "project_id": "test", "audience": AGENT,
                "kind": "ping-workers", "payload": {"worker_names": []},
                "issued_at_ms": "1795608000000", "expires_at_ms": "1795608060000",
                "critical": false, "global_throttle": false, "bound_depth": null,
                "idempotency_key": null}}),
        );
        let issued = rows[1].hash.clone();
        push(
            &mut rows,
            "command.dispatched",
            Some("c1"),
            json!({"status": "dispatched", "previous_status": "issued", "late": false,
                "detail": null, "agent_result": null}),
        );
        push(
            &mut rows,
            "command.failed",
            Some("c1"),
            outcome(
                "failed",
                false,
                result("c1", &issued, Outcome::Failed, &agent),
            ),
        );
        push(
            &mut rows,
            "command.succeeded",
            Some("c1"),
            outcome(
                "succeeded",
                true,
                result("c1", &issued, Outcome::Succeeded, &agent),
            ),
        );
        for (kind, payload) in extra(&issued) {
            push(&mut rows, kind, Some("c1"), payload);
        }
        rows
    }

    #[test]
    fn honest_results_verify_and_sign_what_the_agent_signs() {
        let rows = history(|_| Vec::new());
        assert_eq!(verify_all(&rows, trusted(&key())).unwrap().rows, 5);
        let signed: SignedResult = serde_json::from_value(
            serde_json::from_str::<Statement>(&rows[3].statement)
                .unwrap()
                .payload["agent_result"]
                .clone(),
        )
        .unwrap();
        assert_eq!(
            super::super::commands::signed_message_for_test(&signed.result),
            result_message(&signed.result)
        );
    }

    #[test]
    fn a_replaced_agent_signature_is_refused() {
        let rows = history(|_| Vec::new());
        let stranger = SigningKey::from_bytes(&[6u8; 32]);
        let forged = edit_row(&rows, 3, |st| {
            let issued = rows[1].hash.clone();
            st.payload = outcome(
                "failed",
                false,
                result("c1", &issued, Outcome::Failed, &stranger),
            );
        });
        let err = refusal(&forged);
        assert_eq!((err.seq, err.problem), (4, Problem::BadAgentSignature));
    }

    #[test]
    fn a_failure_rewritten_as_success_is_refused_though_re_signed_by_the_brain() {
        let rows = history(|_| Vec::new());
        // The kind and status changed, the agent's result kept.
        let rewritten = edit_row(&rows, 3, |st| {
            st.kind = "command.succeeded".into();
            st.payload["status"] = json!("succeeded");
        });
        assert_result_refused(&rewritten, "Failed");
        // The result's outcome edited too: the agent's signature no longer covers it.
        let edited = edit_row(&rows, 3, |st| {
            st.kind = "command.succeeded".into();
            st.payload["status"] = json!("succeeded");
            st.payload["agent_result"]["result"]["outcome"] = json!("succeeded");
        });
        let err = refusal(&edited);
        assert_eq!((err.seq, err.problem), (4, Problem::BadAgentSignature));
        // The result dropped.
        let dropped = edit_row(&rows, 3, |st| {
            st.kind = "command.succeeded".into();
            st.payload = json!({"status": "succeeded", "previous_status": "dispatched",
                "late": false, "detail": "exit 1", "agent_result": null});
        });
        assert_result_refused(&dropped, "");
    }

    #[test]
    fn results_must_match_their_command_and_enrolled_agent() {
        let rows = history(|_| Vec::new());
        // Re-enrolled under the forger's key: the real result no longer verifies.
        let rekeyed = edit_row(&rows, 0, |st| {
            let other = SigningKey::from_bytes(&[6u8; 32]).verifying_key();
            st.payload["public_key"] = json!(hex::encode(other.as_bytes()));
            st.payload["key_id"] = json!(key_id(&other));
        });
        // (Rewriting row 1 changes every later hash, so the agent's result also names
        // an issued row that no longer exists.)
        let err = refusal(&rekeyed);
        assert_eq!(err.seq, 4);
        assert!(
            matches!(
                err.problem,
                Problem::AgentResult(_) | Problem::BadAgentSignature
            ),
            "{err}"
        );
        // No enrollment before the result.
        let unenrolled = edit_row(&rows, 0, |st| {
            st.kind = "agent.deleted".into();
            st.actor = Actor {
                kind: ActorKind::User,
                id: "u1".into(),
                name: "admin".into(),
            };
            st.payload = json!({"agent": {"id": AGENT, "name": "host"}});
        });
        assert_result_refused(&unenrolled, "enrolled");
        // Another issued row (the audience changed) than the one the agent ran.
        let reissued = edit_row(&rows, 1, |st| {
            st.payload["command"]["audience"] = json!("agent-2");
        });
        // The agent's own dispatched row already disagrees with the new audience.
        let err = refusal(&reissued);
        assert_eq!(err.seq, 3);
        assert!(
            matches!(&err.problem, Problem::Actor(w) if w.contains("audience")),
            "{err}"
        );
    }

    #[test]
    fn at_most_one_late_outcome_per_command() {
        let rows = history(|issued| {
            vec![(
                "command.failed",
                outcome(
                    "failed",
                    true,
                    result("c1", issued, Outcome::Failed, &agent_key()),
                ),
            )]
        });
        let err = refusal(&rows);
        assert_eq!(
            (err.seq, err.problem),
            (6, Problem::SecondLate("c1".into()))
        );
    }
}

#[test]
fn every_checkpoint_counts_and_each_key_signs_inside_its_window() {
    let (old, new) = (key(), SigningKey::from_bytes(&[3u8; 32]));
    let rows = timed_chain(20, &old, &new);
    let keys = || rotated_keys(&old, &new);
    let head = |n: usize| parse_hash(&rows[n - 1].hash).unwrap();
    let at = |n: usize| format::time_ms(&format!("2026-11-25T12:00:{n:02}.500Z")).unwrap();
    let cp5 = Checkpoint::sign(CHAIN, 5, &head(5), at(5), &old);
    let cp15 = Checkpoint::sign(CHAIN, 15, &head(15), at(15), &new);
    let run = |cps: Vec<Checkpoint>, rows: &[AuditRow]| {
        let mut v = ChainVerifier::new(CHAIN, keys(), cps)?;
        rows.iter().try_for_each(|r| v.push(r))?;
        v.finish()
    };
    assert!(run(vec![cp15.clone(), cp5.clone()], &rows).is_ok());

    // Rows 3..=5 rewritten and re-signed, the rest relinked: only the earlier checkpoint
    // sees it, and it is not the last one in the file.
    let rewritten = resign_from(&rows, 2, &old, |i, st| {
        if i == 2 {
            st.payload = serde_json::json!({"task_ids": ["rewritten"], "deleted_count": 1});
        }
    });
    let rewritten: Vec<AuditRow> = rewritten
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            if i >= 9 {
                let st: Statement = serde_json::from_str(&r.statement).unwrap();
                AuditRow::sign(r.seq, &parse_hash(&r.prev_hash).unwrap(), &st, &new)
            } else {
                r
            }
        })
        .collect();
    let bad_cp15 = Checkpoint::sign(
        CHAIN,
        15,
        &parse_hash(&rewritten[14].hash).unwrap(),
        at(15),
        &new,
    );
    let err = run(vec![cp5.clone(), bad_cp15], &rewritten).unwrap_err();
    assert_eq!(
        (err.seq, err.problem),
        (5, Problem::CheckpointMismatch { size: 5 })
    );

    // A checkpoint signed by the retired key after its window.
    let stale = Checkpoint::sign(CHAIN, 15, &head(15), at(15), &old);
    let err = run(vec![cp5, stale], &rows).unwrap_err();
    assert_eq!(err.seq, 15);
    assert!(
        matches!(&err.problem, Problem::BadCheckpoint(w) if w.contains("after")),
        "{err}"
    );
}

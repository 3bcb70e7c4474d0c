//! `audit verify --file` against exports of a real brain holding agent-signed results, each
//! tampered with the way an auditor would try: every tamper is rejected with a non-zero exit
//! naming the first bad row, and the untampered export verifies.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use taskward_brain::app::system_actor;
use taskward_brain::audit::ExportHeader;
use taskward_brain::commands::lifecycle;
use taskward_brain::keys;
use taskward_brain::store::now_ms;
use taskward_brain::store::{audit as audit_store, commands as command_store};
use taskward_shared::audit::{Actor, ActorKind, AuditRow, Checkpoint, Statement, parse_hash};
use taskward_shared::crypto::{generate_signing_key, key_id};
use taskward_shared::protocol::{CommandResult, Outcome, SignedResult};

use crate::support::{Backend, TestApp};

const BIN: &str = env!("CARGO_BIN_EXE_taskward-brain");

/// A brain's default project with an enrolled agent and commands it answered: c1 failed, c2
/// succeeded, c3 failed then a late success; a key rotation between c2 and c3.
struct Fixture {
    app: TestApp,
    dir: tempfile::TempDir,
    chain: String,
    header: ExportHeader,
    rows: Vec<AuditRow>,
    keys: PathBuf,
    checkpoints: PathBuf,
    /// The brain key before the rotation (read from the data dir), and after.
    old_key: Arc<SigningKey>,
    new_key: Arc<SigningKey>,
}

impl Fixture {
    async fn new() -> Fixture {
        let app = TestApp::new(Backend::Sqlite).await;
        let t = app.admin_token.clone();
        let created = app.register_agent("default", "host-1").await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let agent_id = created.body["agent"]["id"].as_str().unwrap().to_owned();
        let agent_key = generate_signing_key();
        let enrolled = app
            .call(
                Method::POST,
                "/api/v1/agent/enroll",
                None,
                Some(json!({
                    "enrollment_token": created.body["enrollment_token"],
                    "public_key": hex::encode(agent_key.verifying_key().as_bytes()),
                    "hostname": "host-1",
                })),
            )
            .await;
        assert!(enrolled.status.is_success(), "{:?}", enrolled.body);
        app.seed_tasks("default", &agent_id, &["task-0", "task-1", "task-2"])
            .await;
        let project = app.get("/api/v1/projects/default", &t).await;
        let chain = audit_store::project_chain(project.body["id"].as_str().unwrap());
        let dir = tempfile::tempdir().unwrap();

        let old_key = app.keys.signer_at(now_ms());
        let c1 = issue(&app, &agent_id, "task-0").await;
        let c2 = issue(&app, &agent_id, "task-1").await;
        answer(&app, &agent_id, &agent_key, &c1, Outcome::Failed).await;
        answer(&app, &agent_id, &agent_key, &c2, Outcome::Succeeded).await;
        app.checkpoint(&chain).await;
        let (store, keys) = (app.store.clone(), app.keys.clone());
        let (switch, _) = tokio::task::spawn_blocking(move || {
            keys::rotate(&store, &keys, keys::MIN_LEAD, &system_actor("test"))
        })
        .await
        .unwrap()
        .unwrap();
        while now_ms() <= switch.switch_at_ms {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let c3 = issue(&app, &agent_id, "task-2").await;
        answer(&app, &agent_id, &agent_key, &c3, Outcome::Failed).await;
        answer(&app, &agent_id, &agent_key, &c3, Outcome::Succeeded).await;
        app.checkpoint(&chain).await;
        let new_key = app.keys.signer_at(now_ms());

        let text = export(&app).await;
        let mut lines = text.lines();
        let header: ExportHeader = serde_json::from_str(lines.next().unwrap()).unwrap();
        let rows: Vec<AuditRow> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
        let keys = dir.path().join("keys.json");
        let published = app
            .call(Method::GET, "/api/v1/signing-keys", None, None)
            .await;
        std::fs::write(&keys, published.body.to_string()).unwrap();
        let checkpoints = dir.path().join("checkpoints.log");
        std::fs::copy(app.data_dir.path().join("checkpoints.log"), &checkpoints).unwrap();
        Fixture {
            app,
            dir,
            chain,
            header,
            rows,
            keys,
            checkpoints,
            old_key,
            new_key,
        }
    }

    /// The first row (0-based index) of `kind` for the nth command issued (1-based).
    fn index_of(&self, kind: &str, command: usize) -> usize {
        let id = self
            .rows
            .iter()
            .filter(|r| r.kind == "command.issued")
            .nth(command - 1)
            .unwrap()
            .command_id
            .clone();
        self.rows
            .iter()
            .position(|r| r.kind == kind && r.command_id == id)
            .unwrap_or_else(|| panic!("no {kind} row for command {command}"))
    }

    fn write(&self, name: &str, rows: &[AuditRow]) -> PathBuf {
        let path = self.dir.path().join(name);
        let mut text = serde_json::to_string(&self.header).unwrap();
        for row in rows {
            text.push('\n');
            text.push_str(&serde_json::to_string(row).unwrap());
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `audit verify --file` with the published keys and `checkpoints`, plus `extra` flags.
    fn verify(&self, file: &Path, checkpoints: &Path, extra: &[&str]) -> Output {
        Command::new(BIN)
            .args(["--data-dir"])
            .arg(self.dir.path().join("no-data-dir"))
            .args(["audit", "verify", "--file"])
            .arg(file)
            .arg("--keys")
            .arg(&self.keys)
            .arg("--checkpoint")
            .arg(checkpoints)
            .args(extra)
            .output()
            .unwrap()
    }

    /// Writes `rows` and asserts the CLI rejects them at row `seq` for a reason containing
    /// `why`.
    fn assert_rejected(&self, name: &str, rows: &[AuditRow], seq: u64, why: &str) {
        let file = self.write(name, rows);
        let out = self.verify(&file, &self.checkpoints, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{name} verified: {stdout}");
        assert!(
            stdout.contains(&format!("FAILED at row {seq}: ")) && stdout.contains(why),
            "{name}: wanted row {seq} ({why}), got {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

async fn issue(app: &TestApp, agent: &str, task: &str) -> String {
    let reply = app
        .command_on_task(&app.admin_token, "retry-task", agent, task)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

/// The agent's signed result, recorded as the hub records it.
async fn answer(app: &TestApp, agent: &str, key: &SigningKey, command: &str, outcome: Outcome) {
    let ctx = app.state.audit_as(Actor {
        kind: ActorKind::Agent,
        id: agent.to_owned(),
        name: "host-1".into(),
    });
    let (agent, key, command) = (agent.to_owned(), key.clone(), command.to_owned());
    let recorded = app
        .store
        .write("test_result", move |conn| {
            let record = command_store::find_any(conn, &command)?;
            let issued = audit_store::row_at(conn, &record.audit_chain, record.audit_seq as u64)?;
            let signed = SignedResult::sign(
                CommandResult {
                    command_id: command.clone(),
                    row_hash: issued.hash,
                    agent_id: agent.clone(),
                    session: 1,
                    outcome,
                    detail: "exit 0".into(),
                    finished_at_ms: "1".into(),
                },
                &key,
            );
            lifecycle::record_result(conn, &ctx, &agent, "host-1", &signed)
        })
        .await
        .unwrap();
    assert!(recorded);
}

async fn export(app: &TestApp) -> String {
    let reply = app
        .get("/api/v1/projects/default/audit/export", &app.admin_token)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.text()
}

/// Signs raw statement bytes as row `seq` after `prev` (the brain signs canonical bytes; a
/// forger can sign anything).
fn sign_raw(template: &AuditRow, prev: &str, statement: &str, key: &SigningKey) -> AuditRow {
    let parsed: Statement = serde_json::from_str(statement).unwrap();
    let prev = parse_hash(prev).unwrap();
    AuditRow {
        chain: template.chain.clone(),
        ..AuditRow::sign_text(template.seq, &prev, &parsed, statement.to_owned(), key)
    }
}

/// Rows from index `from` on re-signed after `edit` changed their statements, and relinked:
/// what someone holding the brain's key and the database can do. Each row is signed by the
/// key that signed it (the brain's own keys, read from its data dir), unless `key` is given.
fn resign(
    f: &Fixture,
    rows: &[AuditRow],
    from: usize,
    key: Option<&SigningKey>,
    mut edit: impl FnMut(usize, &mut Value) -> Option<String>,
) -> Vec<AuditRow> {
    let mut out = rows[..from].to_vec();
    for (i, row) in rows.iter().enumerate().skip(from) {
        let mut value: Value = serde_json::from_str(&row.statement).unwrap();
        let raw = edit(i, &mut value);
        let text = raw.unwrap_or_else(|| {
            let statement: Statement = serde_json::from_value(value).unwrap();
            String::from_utf8(statement.to_canonical()).unwrap()
        });
        let signer = key.unwrap_or(if row.key_id == key_id(&f.old_key.verifying_key()) {
            &f.old_key
        } else {
            &f.new_key
        });
        let prev = out.last().map_or(row.prev_hash.clone(), |r| r.hash.clone());
        out.push(sign_raw(row, &prev, &text, signer));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tamper_is_rejected_at_its_row() {
    let f = Fixture::new().await;
    let seq = |i: usize| f.rows[i].seq;

    // Untampered (and re-signing nothing changes nothing).
    let honest = f.write("honest.jsonl", &f.rows);
    let out = f.verify(&honest, &f.checkpoints, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("OK {} rows", f.rows.len())),
        "{stdout}"
    );
    assert_eq!(resign(&f, &f.rows, 0, None, |_, _| None), f.rows);

    // The agent's signature replaced by another key's over the same result.
    let failed1 = f.index_of("command.failed", 1);
    let stranger = generate_signing_key();
    let replaced = resign(&f, &f.rows, failed1, None, |i, v| {
        if i == failed1 {
            let result: CommandResult =
                serde_json::from_value(v["payload"]["agent_result"]["result"].clone()).unwrap();
            v["payload"]["agent_result"] =
                serde_json::to_value(SignedResult::sign(result, &stranger)).unwrap();
        }
        None
    });
    f.assert_rejected(
        "agent-signature.jsonl",
        &replaced,
        seq(failed1),
        "bad agent signature",
    );

    // A failure rewritten as a success, the brain's rows re-signed with the brain's key.
    let rewritten = resign(&f, &f.rows, failed1, None, |i, v| {
        if i == failed1 {
            v["kind"] = json!("command.succeeded");
            v["payload"]["status"] = json!("succeeded");
            v["payload"]["detail"] = json!("exit 0");
        }
        None
    });
    f.assert_rejected(
        "rewritten.jsonl",
        &rewritten,
        seq(failed1),
        "agent reported Failed",
    );

    // A row after the rotation re-signed with the retired key.
    let failed3 = f.index_of("command.failed", 3);
    let retired = resign(&f, &f.rows, failed3, Some(&f.old_key), |_, _| None);
    f.assert_rejected(
        "retired-key.jsonl",
        &retired,
        seq(failed3),
        "after its validity window",
    );
    // ... which a grace as long as the whole test excuses (a signature does not change the
    // row's hash, so the rows are otherwise the brain's own).
    let file = f.write("retired-key-grace.jsonl", &retired);
    let out = f.verify(&file, &f.checkpoints, &["--key-grace-ms", "3600000"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // ... and says so: an auditor sees how many rows only the grace let through.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning:")
            && stderr.contains(&format!(
                "{} row(s) signed after their key's window were accepted only because of --key-grace-ms",
                f.rows.len() - failed3
            )),
        "{stderr}"
    );
    let out = f.verify(&honest, &f.checkpoints, &["--key-grace-ms", "3600000"]);
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("--key-grace-ms"),
        "no warning when the grace excused nothing"
    );

    // A row back-dated before the one it follows.
    let issued2 = f.index_of("command.issued", 2);
    let back = resign(&f, &f.rows, issued2, None, |i, v| {
        if i == issued2 {
            v["time"] = json!("2020-01-01T00:00:00.000Z");
        }
        None
    });
    f.assert_rejected("back-dated.jsonl", &back, seq(issued2), "time goes back");

    // Non-canonical statements, re-signed: keys reordered, spaces added.
    let reordered = resign(&f, &f.rows, issued2, None, |i, v| {
        (i == issued2).then(|| {
            let text = serde_json::to_string(v).unwrap();
            text.replacen(r#"{"actor":"#, r#"{"v":1,"actor":"#, 1)
                .replacen(r#","v":1}"#, "}", 1)
        })
    });
    f.assert_rejected("reordered.jsonl", &reordered, seq(issued2), "canonical");
    let spaced = resign(&f, &f.rows, issued2, None, |i, v| {
        (i == issued2).then(|| serde_json::to_string_pretty(v).unwrap())
    });
    f.assert_rejected("spaced.jsonl", &spaced, seq(issued2), "canonical");

    // Uppercase hex.
    let mut upper = f.rows.clone();
    upper[issued2].hash = upper[issued2].hash.to_uppercase();
    f.assert_rejected("uppercase.jsonl", &upper, seq(issued2), "lowercase hex");

    // A second late outcome for c3: the late row again, as a new row.
    let late = f
        .rows
        .iter()
        .rposition(|r| r.statement.contains(r#""late":true"#))
        .unwrap();
    let mut twice = f.rows.clone();
    let mut copy: Value = serde_json::from_str(&f.rows[late].statement).unwrap();
    let next = f.rows.last().unwrap().seq + 1;
    copy["seq"] = json!(next.to_string());
    let statement: Statement = serde_json::from_value(copy).unwrap();
    let template = AuditRow {
        seq: next,
        ..f.rows[late].clone()
    };
    twice.push(sign_raw(
        &template,
        &f.rows.last().unwrap().hash,
        std::str::from_utf8(&statement.to_canonical()).unwrap(),
        &f.new_key,
    ));
    let file = f.write("two-late.jsonl", &twice);
    // (The checkpoints cover the untampered chain; this one is judged on its rows.)
    let out = f.verify(&file, &f.checkpoints, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains(&format!("FAILED at row {next}: a second late outcome")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_checkpoint_is_held_and_a_missing_one_fails() {
    let f = Fixture::new().await;
    let honest = f.write("honest.jsonl", &f.rows);

    // A checkpoint file without this chain (another chain's only).
    let other: Vec<String> = std::fs::read_to_string(&f.checkpoints)
        .unwrap()
        .lines()
        .map(|l| {
            let mut cp: Checkpoint = serde_json::from_str(l).unwrap();
            cp.chain = "project:other".into();
            serde_json::to_string(&cp).unwrap()
        })
        .collect();
    let lacking = f.dir.path().join("lacking.log");
    std::fs::write(&lacking, other.join("\n")).unwrap();
    let out = f.verify(&honest, &lacking, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("FAILED: no checkpoint for this chain"),
        "{stdout}"
    );
    let out = f.verify(&honest, &lacking, &["--allow-missing-checkpoint"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning:") && stderr.contains(&f.chain),
        "{stderr}"
    );

    // A bad checkpoint that is not the last: signed by the brain's key over another head.
    let log = std::fs::read_to_string(&f.checkpoints).unwrap();
    let mut lines: Vec<Checkpoint> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let first = lines[0].clone();
    lines[0] = Checkpoint::sign(&f.chain, first.size, &[7u8; 32], first.time_ms, &f.old_key);
    let bad = f.dir.path().join("bad-first.log");
    std::fs::write(
        &bad,
        lines
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let out = f.verify(&honest, &bad, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("FAILED at row {}: rewritten", first.size)),
        "{stdout}"
    );
    drop(f.app);
}

/// A keys file is read as strictly as the rows: hex in lowercase only, key ids that are key ids,
/// and a file that is not a keys file says what one looks like.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_files_are_read_strictly() {
    let f = Fixture::new().await;
    let honest = f.write("honest.jsonl", &f.rows);
    let published: Value =
        serde_json::from_str(&std::fs::read_to_string(&f.keys).unwrap()).unwrap();
    let with_keys = |name: &str, keys: &Value| {
        let path = f.dir.path().join(name);
        std::fs::write(&path, keys.to_string()).unwrap();
        let out = Command::new(BIN)
            .args(["--data-dir"])
            .arg(f.dir.path().join("no-data-dir"))
            .args(["audit", "verify", "--file"])
            .arg(&honest)
            .arg("--keys")
            .arg(&path)
            .arg("--checkpoint")
            .arg(&f.checkpoints)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let mut upper = published.clone();
    let key = upper["keys"][0]["public_key"]
        .as_str()
        .unwrap()
        .to_uppercase();
    upper["keys"][0]["public_key"] = json!(key);
    let why = with_keys("upper-public.json", &upper);
    assert!(why.contains("the public_key is not lowercase hex"), "{why}");
    let mut upper_id = published.clone();
    let id = upper_id["keys"][0]["key_id"]
        .as_str()
        .unwrap()
        .to_uppercase();
    upper_id["keys"][0]["key_id"] = json!(id);
    let why = with_keys("upper-id.json", &upper_id);
    assert!(
        why.contains("the key_id is not 32 lowercase hex digits"),
        "{why}"
    );
    let why = with_keys("not-keys.json", &json!({"chain": "x"}));
    assert!(
        why.contains(r#"not a keys file (expected {"keys": [...]} or a bare array of keys)"#),
        "{why}"
    );
    drop(f.app);
}

//! The audit log: every action chained and signed, tampering of each kind detected with the
//! first bad row named, append-only at the database, concurrent appends never fork, exports
//! verify offline with the public key alone, keys rotate.

use std::process::Command;

use axum::http::StatusCode;
use diesel::RunQueryDsl;
use serde_json::json;
use taskward_brain::audit::verify_live;
use taskward_brain::store::{AnyConnection, audit as audit_store};
use taskward_shared::audit::verify::{Problem, TrustedKeys};
use taskward_shared::audit::{AuditRow, Checkpoint, Statement, parse_hash};
use taskward_shared::crypto::generate_signing_key;

use crate::both_backends;
use crate::support::{Backend, Reply, TestApp};

const BIN: &str = env!("CARGO_BIN_EXE_taskward-brain");

/// The default project's chain after a few actions: agents, members, commands.
async fn app_with_history(backend: Backend) -> (TestApp, String) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    let mut agents = Vec::new();
    for i in 0..3 {
        agents.push(app.create_agent("default", &format!("host-{i}")).await);
    }
    app.create_user("jane", false).await;
    app.add_member("default", "jane", "operator").await;
    app.seed_tasks("default", &agents[0], &["task-0", "task-1", "task-2"])
        .await;
    for (i, agent) in agents.iter().enumerate() {
        let reply = app
            .command_on_task(&t, "retry-task", agent, &format!("task-{i}"))
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    let chain = default_chain(&app).await;
    (app, chain)
}

async fn default_chain(app: &TestApp) -> String {
    audit_store::project_chain(&app.project_id("default").await)
}

async fn verify(
    app: &TestApp,
    chain: &str,
    checkpoint: Option<Checkpoint>,
) -> Result<u64, (u64, Problem)> {
    let trusted = TrustedKeys::from_infos(&app.keys.public_keys()).unwrap();
    let (store, chain) = (app.store.clone(), chain.to_owned());
    tokio::task::spawn_blocking(move || verify_live(&store, trusted, &chain, checkpoint, |_| {}))
        .await
        .unwrap()
        .unwrap()
        .map(|s| s.rows)
        .map_err(|f| (f.seq, f.problem))
}

/// Deletes the rows of `chain` that `which` (a condition on `seq`) selects, as `tamper` does.
async fn delete_rows(app: &TestApp, chain: &str, which: &str) {
    tamper(
        app,
        vec![format!(
            "DELETE FROM audit_rows WHERE chain_id = '{chain}' AND {which}"
        )],
    )
    .await;
}

/// Raw SQL as an attacker with database access would run it, after disabling the
/// append-only triggers.
pub(crate) async fn tamper(app: &TestApp, statements: Vec<String>) {
    let backend_guard_off = match app.store.backend() {
        taskward_brain::store::Backend::Sqlite => vec![
            "DROP TRIGGER audit_rows_no_update".to_owned(),
            "DROP TRIGGER audit_rows_no_delete".to_owned(),
        ],
        taskward_brain::store::Backend::Postgres => {
            vec!["ALTER TABLE audit_rows DISABLE TRIGGER USER".to_owned()]
        }
    };
    app.store
        .write("test_tamper", move |conn: &mut AnyConnection| {
            for sql in backend_guard_off.iter().chain(&statements) {
                diesel::sql_query(sql).execute(conn)?;
            }
            Ok::<_, taskward_brain::store::StoreError>(())
        })
        .await
        .unwrap();
}

async fn rows(app: &TestApp, chain: &str) -> Vec<AuditRow> {
    let chain = chain.to_owned();
    app.store
        .read("test_rows", move |conn| {
            audit_store::page(conn, &chain, 0, 10_000)
        })
        .await
        .unwrap()
}

/// The kind of every row of `chain`, in order.
async fn row_kinds(app: &TestApp, chain: &str) -> Vec<String> {
    rows(app, chain).await.into_iter().map(|r| r.kind).collect()
}

async fn every_action_is_chained_and_verifies(backend: Backend) {
    let (app, chain) = app_with_history(backend).await;
    assert_eq!(verify(&app, &chain, None).await, Ok(7));
    let kinds = row_kinds(&app, &chain).await;
    assert_eq!(
        kinds,
        [
            "agent.created",
            "agent.created",
            "agent.created",
            "member.role_set",
            "command.issued",
            "command.issued",
            "command.issued"
        ]
    );
    // Site chain: bootstrap, user created; then a token created and revoked.
    let t = app.admin_token.clone();
    let created = app.post("/api/v1/tokens", &t, json!({"name": "x"})).await;
    app.delete(
        &format!("/api/v1/tokens/{}", created.body["id"].as_str().unwrap()),
        &t,
    )
    .await;
    let site = app.store.site_chain();
    let site_kinds = row_kinds(&app, &site).await;
    assert_eq!(
        site_kinds,
        [
            "site.bootstrapped",
            // the admin's dashboard password, set at bootstrap
            "user.password_set",
            "user.created",
            // jane's first token, made with her user
            "token.created",
            "token.created",
            "token.revoked"
        ]
    );
    assert_eq!(verify(&app, &site, None).await, Ok(6));
    // No secret in any row.
    let all: String = rows(&app, &site)
        .await
        .into_iter()
        .map(|r| r.statement)
        .collect();
    assert!(!all.contains(created.body["token"].as_str().unwrap()));
    assert!(!all.contains(&app.admin_token));

    // The API pages through the same rows.
    let page = audit_page(&app, &t, "limit=4").await;
    assert_eq!(page.count("items"), 4);
    let next = page.body["next_cursor"].as_str().unwrap();
    let rest = audit_page(&app, &t, &format!("limit=4&cursor={next}")).await;
    assert_eq!(rest.body["items"][0]["seq"], 5);
    assert!(rest.body["next_cursor"].is_null());
    for bad in ["limit=0", "limit=1001", "cursor=zz"] {
        let r = audit_page(&app, &t, bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // Rows of one kind, paged; a cursor belongs to its kind.
    let first = audit_page(&app, &t, "kind=command.issued&limit=2").await;
    assert_eq!(
        first.texts("items", "kind"),
        ["command.issued", "command.issued"]
    );
    let next = first.body["next_cursor"].as_str().unwrap();
    let rest = audit_page(
        &app,
        &t,
        &format!("kind=command.issued&limit=2&cursor={next}"),
    )
    .await;
    assert_eq!(rest.texts("items", "kind"), ["command.issued"]);
    let unfiltered = audit_page(&app, &t, &format!("cursor={next}")).await;
    assert_eq!(
        (unfiltered.status, unfiltered.field()),
        (StatusCode::BAD_REQUEST, Some("cursor"))
    );
    let ok = audit_page(&app, &t, &format!("kind={}", "a".repeat(64))).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.texts("items", "kind").is_empty());
    for bad in ["", "Command.issued", "command-issued", &"a".repeat(65)] {
        let r = audit_page(&app, &t, &format!("kind={bad}")).await;
        assert_eq!(
            (r.status, r.field()),
            (StatusCode::BAD_REQUEST, Some("kind")),
            "{bad:?}"
        );
    }
}

async fn the_database_refuses_updates_and_deletes(backend: Backend) {
    let (app, chain) = app_with_history(backend).await;
    for sql in [
        format!("UPDATE audit_rows SET kind = 'x' WHERE chain_id = '{chain}' AND seq = 1"),
        format!("DELETE FROM audit_rows WHERE chain_id = '{chain}' AND seq = 7"),
    ] {
        let result = app
            .store
            .write("test_forbidden", move |conn| {
                Ok::<_, taskward_brain::store::StoreError>(diesel::sql_query(&sql).execute(conn)?)
            })
            .await;
        let err = result.expect_err("an audit row was changed");
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    assert_eq!(verify(&app, &chain, None).await, Ok(7));
}

async fn each_tampering_is_detected_at_its_row(backend: Backend) {
    // One changed byte in a payload.
    let (app, chain) = app_with_history(backend).await;
    tamper(&app, vec![format!(
        "UPDATE audit_rows SET statement = REPLACE(statement, 'host-1', 'host-7') WHERE chain_id = '{chain}' AND seq = 2"
    )])
    .await;
    assert_eq!(
        verify(&app, &chain, None).await,
        Err((2, Problem::HashMismatch))
    );

    // A row removed.
    let (app, chain) = app_with_history(backend).await;
    delete_rows(&app, &chain, "seq = 4").await;
    assert_eq!(
        verify(&app, &chain, None).await,
        Err((
            5,
            Problem::Gap {
                expected: 4,
                found: 5
            }
        ))
    );

    // Two rows swapped.
    let (app, chain) = app_with_history(backend).await;
    let w = format!("chain_id = '{chain}'");
    tamper(
        &app,
        vec![
            format!("UPDATE audit_rows SET seq = -1 WHERE {w} AND seq = 5"),
            format!("UPDATE audit_rows SET seq = 5 WHERE {w} AND seq = 6"),
            format!("UPDATE audit_rows SET seq = 6 WHERE {w} AND seq = -1"),
        ],
    )
    .await;
    let (seq, problem) = verify(&app, &chain, None).await.unwrap_err();
    assert_eq!(seq, 5);
    assert!(matches!(problem, Problem::Moved { .. }), "{problem}");

    // An index column changed under an intact statement.
    let (app, chain) = app_with_history(backend).await;
    tamper(
        &app,
        vec![format!(
            "UPDATE audit_rows SET kind = 'agent.created' WHERE {w2} AND seq = 5",
            w2 = format!("chain_id = '{chain}'")
        )],
    )
    .await;
    let (seq, problem) = verify(&app, &chain, None).await.unwrap_err();
    assert_eq!(seq, 5);
    assert!(
        matches!(problem, Problem::ColumnMismatch { column: "kind", .. }),
        "{problem}"
    );

    // The tail cut off: invisible to the chain alone, caught with an earlier checkpoint.
    let (app, chain) = app_with_history(backend).await;
    let checkpoint: Checkpoint = serde_json::from_value(
        app.get(
            "/api/v1/projects/default/audit/checkpoint",
            &app.admin_token,
        )
        .await
        .body,
    )
    .unwrap();
    assert_eq!(checkpoint.size, 7);
    assert_eq!(verify(&app, &chain, Some(checkpoint.clone())).await, Ok(7));
    delete_rows(&app, &chain, "seq >= 6").await;
    assert_eq!(
        verify(&app, &chain, None).await,
        Ok(5),
        "truncation alone is undetectable"
    );
    assert_eq!(
        verify(&app, &chain, Some(checkpoint)).await,
        Err((6, Problem::Truncated { rows: 5, size: 7 }))
    );

    // A row appended with a key the brain never published.
    let (app, chain) = app_with_history(backend).await;
    let last = rows(&app, &chain).await.pop().unwrap();
    let mut statement: Statement = serde_json::from_str(&last.statement).unwrap();
    statement.seq = "8".into();
    statement.kind = "command.issued".into();
    let forged = AuditRow::sign(
        8,
        &parse_hash(&last.hash).unwrap(),
        &statement,
        &generate_signing_key(),
    );
    tamper(&app, vec![insert_sql(&forged)]).await;
    let (seq, problem) = verify(&app, &chain, None).await.unwrap_err();
    assert_eq!(seq, 8);
    assert!(matches!(problem, Problem::UnknownKey(_)), "{problem}");

    // The whole chain re-signed with a swapped key: the auditor's pinned keys reject row 1.
    let (app, chain) = app_with_history(backend).await;
    let impostor = generate_signing_key();
    let mut prev = taskward_shared::audit::genesis_hash(&chain);
    let mut statements = vec![format!("DELETE FROM audit_rows WHERE chain_id = '{chain}'")];
    for row in rows(&app, &chain).await {
        let statement: Statement = serde_json::from_str(&row.statement).unwrap();
        let resigned = AuditRow::sign(row.seq, &prev, &statement, &impostor);
        prev = parse_hash(&resigned.hash).unwrap();
        statements.push(insert_sql(&resigned));
    }
    tamper(&app, statements).await;
    let (seq, problem) = verify(&app, &chain, None).await.unwrap_err();
    assert_eq!(seq, 1);
    assert!(matches!(problem, Problem::UnknownKey(_)), "{problem}");
}

fn insert_sql(row: &AuditRow) -> String {
    format!(
        "INSERT INTO audit_rows (chain_id, seq, prev_hash, hash, key_id, signature, statement, kind, command_id, created_at) \
         VALUES ('{}', {}, '{}', '{}', '{}', '{}', '{}', '{}', {}, 0)",
        row.chain,
        row.seq,
        row.prev_hash,
        row.hash,
        row.key_id,
        row.signature,
        row.statement.replace('\'', "''"),
        row.kind,
        row.command_id
            .as_ref()
            .map_or("NULL".to_owned(), |c| format!("'{c}'")),
    )
}

/// Eight writers issuing commands at once for a few seconds: one gapless chain.
async fn concurrent_appends_never_fork(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::new(backend).await);
    let agent = app.create_agent("default", "host").await;
    app.seed_tasks("default", &agent, &["t"]).await;
    let chain = default_chain(&app).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (app, agent) = (app.clone(), agent.clone());
        writers.push(tokio::spawn(async move {
            let mut ok = 0u64;
            for _ in 0..2_000 {
                if std::time::Instant::now() > deadline {
                    break;
                }
                let reply = app
                    .command_on_task(&app.admin_token, "cancel-task", &agent, "t")
                    .await;
                assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
                ok += 1;
            }
            ok
        }));
    }
    let mut issued = 0;
    for w in writers {
        issued += w.await.unwrap();
    }
    assert!(issued >= 16, "only {issued} commands in 3 s");
    assert_eq!(verify(&app, &chain, None).await, Ok(issued + 1));
}

/// Export, keys and a checkpoint fetched over HTTP; verified offline by the CLI with nothing
/// else; a one-byte change to the file is caught.
async fn exports_verify_offline(backend: Backend) {
    let (app, _) = app_with_history(backend).await;
    let t = app.admin_token.clone();
    let dir = tempfile::tempdir().unwrap();
    let export = app
        .send(
            axum::http::Request::builder()
                .uri("/api/v1/projects/default/audit/export")
                .header("authorization", format!("Bearer {t}"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(export.status, StatusCode::OK);
    assert_eq!(export.headers["content-type"], "application/x-ndjson");
    // The JSON Lines body did not parse as one JSON value; fetch it raw.
    let text = raw_body(&app, "/api/v1/projects/default/audit/export", &t).await;
    assert_eq!(text.lines().count(), 8, "header + 7 rows");
    let export_path = dir.path().join("export.jsonl");
    std::fs::write(&export_path, &text).unwrap();
    let keys = app
        .call(axum::http::Method::GET, "/api/v1/signing-keys", None, None)
        .await;
    let keys_path = dir.path().join("keys.json");
    std::fs::write(&keys_path, keys.body.to_string()).unwrap();
    let checkpoint = app
        .get("/api/v1/projects/default/audit/checkpoint", &t)
        .await;
    let checkpoint_path = dir.path().join("checkpoint.json");
    std::fs::write(&checkpoint_path, checkpoint.body.to_string()).unwrap();

    let run = |file: &std::path::Path| {
        Command::new(BIN)
            .current_dir(dir.path())
            .args(["audit", "verify", "--file"])
            .arg(file)
            .arg("--keys")
            .arg(&keys_path)
            .arg("--checkpoint")
            .arg(&checkpoint_path)
            .output()
            .unwrap()
    };
    let ok = run(&export_path);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.contains("OK 7 rows, head"), "{stdout}");

    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, text.replacen("task-1", "task-9", 1)).unwrap();
    let bad = run(&tampered);
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success());
    assert!(
        stdout.contains("FAILED at row 6: hash mismatch"),
        "{stdout}"
    );

    let truncated = dir.path().join("truncated.jsonl");
    let kept: Vec<&str> = text.lines().take(6).collect();
    std::fs::write(&truncated, kept.join("\n")).unwrap();
    let cut = run(&truncated);
    let stdout = String::from_utf8_lossy(&cut.stdout);
    assert!(!cut.status.success());
    assert!(stdout.contains("FAILED at row 6: truncated"), "{stdout}");
}

async fn raw_body(app: &TestApp, path: &str, token: &str) -> String {
    app.get(path, token).await.text()
}

/// `keys rotate --lead 2` (the real CLI on the same store and data directory): the old key
/// signs the rotation, both keys are published with windows that meet at the switch, rows
/// before the switch use the old key and rows from it on the new key, everything verifies.
async fn keys_rotate(backend: Backend) {
    let (app, chain) = app_with_history(backend).await;
    let before = app.keys.public_keys();
    taskward_testkit::process::run_ok(
        Command::new(BIN)
            .arg("--data-dir")
            .arg(app.data_dir.path())
            .args(["keys", "rotate", "--lead", "2"])
            .env("TASKWARD_DATABASE_URL", app.db.cli_url()),
    );
    assert!(app.keys.reload_if_changed().unwrap());
    let after = app.keys.public_keys();
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].key_id, before[0].key_id);
    assert_eq!(after[0].valid_until_ms, Some(after[1].valid_from_ms));
    assert!(after[1].valid_until_ms.is_none());
    let published = app
        .call(axum::http::Method::GET, "/api/v1/signing-keys", None, None)
        .await;
    assert_eq!(published.count("keys"), 2);

    let site_rows = rows(&app, &app.store.site_chain()).await;
    let rotation = site_rows.last().unwrap();
    assert_eq!(rotation.kind, "key.rotated");
    assert_eq!(
        rotation.key_id, before[0].key_id,
        "the old key signs the rotation"
    );
    let statement: serde_json::Value = serde_json::from_str(&rotation.statement).unwrap();
    assert_eq!(statement["payload"]["new_key_id"], after[1].key_id.as_str());

    let agent = app.create_agent("default", "before-the-switch").await;
    assert!(!agent.is_empty());
    let last = rows(&app, &chain).await.pop().unwrap();
    assert_eq!(
        last.key_id, after[0].key_id,
        "the old key signs until the switch"
    );
    let wait = after[1].valid_from_ms - taskward_brain::store::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(wait.max(0) as u64 + 10)).await;
    let agent = app.create_agent("default", "after-the-switch").await;
    assert!(!agent.is_empty());
    let last = rows(&app, &chain).await.pop().unwrap();
    assert_eq!(last.key_id, after[1].key_id);
    assert_eq!(verify(&app, &chain, None).await, Ok(9));
    assert!(verify(&app, &app.store.site_chain(), None).await.is_ok());
}

both_backends!(
    every_action_is_chained_and_verifies,
    the_database_refuses_updates_and_deletes,
    each_tampering_is_detected_at_its_row,
    concurrent_appends_never_fork,
    exports_verify_offline,
    keys_rotate,
);

/// The default project's audit log page `query` selects, as `token` reads it.
async fn audit_page(app: &TestApp, token: &str, query: &str) -> Reply {
    app.get(&format!("/api/v1/projects/default/audit?{query}"), token)
        .await
}

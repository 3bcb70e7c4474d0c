//! Continuous verification: a row altered in the database behind the brain's back is found
//! (by the sweep if it is old, at once if it is new), reported on `/metrics`, `/readyz` and the
//! dashboard, and no checkpoint is signed over it, while everything else keeps serving. Also
//! the site chain's export and the auditor's bundle, verified offline by the real CLI.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use taskward_brain::app::ServerSettings;
use taskward_brain::background::{self, audit_watch};
use taskward_brain::store::{AnyConnection, audit as audit_store};

use crate::both_backends;
use crate::support::{Backend, TestApp};

const BIN: &str = env!("CARGO_BIN_EXE_taskward-brain");

both_backends!(
    an_altered_old_row_is_reported_and_never_checkpointed,
    a_row_altered_before_it_was_checked_is_found_at_once,
    readyz_fails_with_the_flag_while_the_loops_run,
    an_untampered_brain_stays_ok,
    the_site_chain_exports_and_verifies_offline,
    the_bundle_holds_what_it_promises_and_verifies,
);

/// Agents (project chain rows 1..3) and a viewer member (row 4) in `default`; `jane` is not a
/// site admin. Returns the project chain's name and jane's token.
async fn history(app: &TestApp) -> (String, String) {
    for i in 0..3 {
        app.create_agent("default", &format!("host-{i}")).await;
    }
    let jane = app.create_user("jane", false).await;
    app.add_member("default", "jane", "viewer").await;
    let chain = audit_store::project_chain(&app.project_id("default").await);
    (chain, jane)
}

/// An `UPDATE` of an audit row as someone with database access runs it: on SQLite the
/// append-only triggers are dropped (the file's owner can), on PostgreSQL a superuser skips
/// them for the transaction with `session_replication_role = replica`.
async fn update_behind_the_brains_back(app: &TestApp, chain: &str, seq: u64, from: &str, to: &str) {
    let mut statements = match app.store.backend() {
        taskward_brain::store::Backend::Sqlite => {
            vec!["DROP TRIGGER IF EXISTS audit_rows_no_update".to_owned()]
        }
        taskward_brain::store::Backend::Postgres => {
            vec!["SET LOCAL session_replication_role = replica".to_owned()]
        }
    };
    statements.push(format!(
        "UPDATE audit_rows SET statement = REPLACE(statement, '{from}', '{to}') \
         WHERE chain_id = '{chain}' AND seq = {seq}"
    ));
    app.store
        .write("test_tamper", move |conn: &mut AnyConnection| {
            use diesel::RunQueryDsl;
            for sql in &statements {
                diesel::sql_query(sql).execute(conn)?;
            }
            Ok::<_, taskward_brain::store::StoreError>(())
        })
        .await
        .unwrap();
}

/// The value of a metric line `name{chain="…"}`, if present.
async fn gauge(app: &TestApp, name: &str, chain: &str) -> Option<i64> {
    let reply = app.get("/metrics", &app.admin_token).await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&reply.bytes).into_owned();
    let prefix = format!("{name}{{chain=\"{chain}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

async fn readyz(app: &TestApp) -> (StatusCode, Value) {
    let reply = app.call(Method::GET, "/readyz", None, None).await;
    (reply.status, reply.body)
}

/// A dashboard page's HTML as the holder of `token` gets it.
async fn page(app: &TestApp, path: &str, token: &str) -> String {
    let reply = app.get(path, token).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}");
    String::from_utf8_lossy(&reply.bytes).into_owned()
}

fn checkpoint_lines(app: &TestApp, chain: &str) -> usize {
    std::fs::read_to_string(app.data_dir.path().join("checkpoints.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"chain\":\"{chain}\"")))
        .count()
}

async fn an_altered_old_row_is_reported_and_never_checkpointed(backend: Backend) {
    let app = TestApp::new(backend).await;
    let (chain, jane) = history(&app).await;
    let t = app.admin_token.clone();
    assert_eq!(audit_watch::check_grown(&app.state).await.unwrap(), 0);
    assert_eq!(
        gauge(&app, "taskward_audit_chain_ok", &chain).await,
        Some(1)
    );
    let cp = app
        .get("/api/v1/projects/default/audit/checkpoint", &t)
        .await;
    assert_eq!(cp.status, StatusCode::OK, "{:?}", cp.body);
    assert_eq!(cp.body["size"], 4);

    // Row 2 was verified and checkpointed long ago; now it is rewritten in the database.
    update_behind_the_brains_back(&app, &chain, 2, "host-1", "host-7").await;
    // New rows alone do not show it: only the sweep reads old rows again.
    app.create_agent("default", "host-3").await;
    assert_eq!(audit_watch::check_grown(&app.state).await.unwrap(), 0);
    audit_watch::sweep(&app.state, 1_000_000).await.unwrap();

    assert_eq!(
        gauge(&app, "taskward_audit_chain_ok", &chain).await,
        Some(0)
    );
    assert_eq!(
        gauge(&app, "taskward_audit_first_bad_seq", &chain).await,
        Some(2)
    );
    let site = app.store.site_chain();
    assert_eq!(gauge(&app, "taskward_audit_chain_ok", &site).await, Some(1));

    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "traffic keeps flowing by default");
    assert_eq!(body["status"], "degraded");
    let audit = body["audit"].as_array().unwrap();
    assert_eq!(audit.len(), 1, "{body}");
    assert_eq!(audit[0]["chain"], chain.as_str());
    assert_eq!(audit[0]["first_bad_seq"], 2);
    assert!(
        audit[0]["why"].as_str().unwrap().contains("hash mismatch"),
        "{body}"
    );

    // No checkpoint over the broken chain: not on request, not in the background.
    let before = checkpoint_lines(&app, &chain);
    let refused = app
        .get("/api/v1/projects/default/audit/checkpoint", &t)
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.code(), "audit_chain_broken");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&chain),
        "{:?}",
        refused.body
    );
    background::checkpoint_and_reload(&app.state).await.unwrap();
    assert_eq!(checkpoint_lines(&app, &chain), before);

    // The banner, on every page, for site admins only.
    for path in ["/", "/p/default", "/p/default/tasks", "/tokens"] {
        let html = page(&app, path, &t).await;
        assert!(html.contains("audit-banner"), "{path}: {html}");
        assert!(html.contains(&chain), "{path}");
        assert!(html.contains("first bad row 2"), "{path}");
    }
    let html = page(&app, "/p/default", &jane).await;
    assert!(!html.contains("audit-banner"), "a viewer sees no banner");

    // Everything else keeps serving.
    assert_eq!(
        app.get("/api/v1/projects/default", &t).await.status,
        StatusCode::OK
    );
    app.create_agent("default", "host-4").await;
    assert_eq!(
        app.get("/api/v1/projects/default/audit?limit=2", &t)
            .await
            .status,
        StatusCode::OK
    );
    let healthz = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(healthz.body["status"], "ok");
}

async fn a_row_altered_before_it_was_checked_is_found_at_once(backend: Backend) {
    let app = TestApp::new(backend).await;
    let (chain, _) = history(&app).await;
    assert_eq!(audit_watch::check_grown(&app.state).await.unwrap(), 0);
    app.create_agent("default", "host-3").await;
    // Row 5, just appended, is altered before the watch looks at it: the incremental check
    // (no sweep) finds that it is not what the brain signed.
    update_behind_the_brains_back(&app, &chain, 5, "host-3", "host-9").await;
    assert_eq!(audit_watch::check_grown(&app.state).await.unwrap(), 1);
    let (_, body) = readyz(&app).await;
    assert_eq!(body["audit"][0]["first_bad_seq"], 5, "{body}");
    assert_eq!(
        gauge(&app, "taskward_audit_first_bad_seq", &chain).await,
        Some(5)
    );
}

async fn readyz_fails_with_the_flag_while_the_loops_run(backend: Backend) {
    let app = TestApp::with_settings(
        backend,
        ServerSettings {
            readyz_fail_on_audit: true,
            audit_watch_interval: Duration::from_millis(50),
            audit_sweep_rate: 100_000,
            ..ServerSettings::default()
        },
    )
    .await;
    history(&app).await;
    let loops = audit_watch::spawn(app.state.clone());
    let (status, body) = readyz(&app).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    assert!(body.get("audit").is_none(), "{body}");

    // The bootstrap row of the site chain, rewritten.
    let site = app.store.site_chain();
    update_behind_the_brains_back(&app, &site, 1, "\"v\":1", "\"v\":2").await;
    let mut seen = None;
    for _ in 0..100 {
        let (status, body) = readyz(&app).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            seen = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = seen.expect("readyz turned 503 within 5 s");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["audit"][0]["chain"], site.as_str());
    assert_eq!(body["audit"][0]["first_bad_seq"], 1);
    // Still serving.
    assert_eq!(
        app.get("/api/v1/projects", &app.admin_token).await.status,
        StatusCode::OK
    );
    for handle in loops {
        handle.abort();
    }
}

async fn an_untampered_brain_stays_ok(backend: Backend) {
    let app = TestApp::new(backend).await;
    let (chain, _) = history(&app).await;
    let t = app.admin_token.clone();
    for round in 0..3 {
        app.create_agent("default", &format!("more-{round}")).await;
        assert_eq!(audit_watch::check_grown(&app.state).await.unwrap(), 0);
        let swept = audit_watch::sweep(&app.state, 1_000_000).await.unwrap();
        assert!(swept.contains(&chain), "{swept:?}");
        let cp = app
            .get("/api/v1/projects/default/audit/checkpoint", &t)
            .await;
        assert_eq!(cp.status, StatusCode::OK);
        assert_eq!(cp.body["size"], 5 + round);
    }
    assert_eq!(
        background::checkpoint_and_reload(&app.state).await.unwrap(),
        1
    );
    for c in [&chain, &app.store.site_chain()] {
        assert_eq!(gauge(&app, "taskward_audit_chain_ok", c).await, Some(1));
        assert_eq!(
            gauge(&app, "taskward_audit_first_bad_seq", c).await,
            Some(0)
        );
    }
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));
    assert!(!page(&app, "/", &t).await.contains("audit-banner"));
}

/// Writes the brain's published keys where the CLI can read them.
async fn keys_file(app: &TestApp, dir: &Path) -> std::path::PathBuf {
    let keys = app
        .call(Method::GET, "/api/v1/signing-keys", None, None)
        .await;
    let path = dir.join("keys.json");
    std::fs::write(&path, keys.body.to_string()).unwrap();
    path
}

fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(app.data_dir.path())
        .args(args)
        .env("TASKWARD_DATABASE_URL", app.db.cli_url())
        .output()
        .unwrap()
}

fn verify_file(file: &Path, keys: &Path, checkpoints: Option<&Path>) -> (bool, String) {
    let mut command = Command::new(BIN);
    command
        .args(["audit", "verify", "--file"])
        .arg(file)
        .arg("--keys")
        .arg(keys);
    if let Some(checkpoints) = checkpoints {
        command.arg("--checkpoint").arg(checkpoints);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn the_site_chain_exports_and_verifies_offline(backend: Backend) {
    let app = TestApp::new(backend).await;
    let (_, jane) = history(&app).await;
    let t = app.admin_token.clone();
    let dir = tempfile::tempdir().unwrap();

    assert_eq!(
        app.get("/api/v1/audit/export", &jane).await.status,
        StatusCode::FORBIDDEN
    );
    let reply = app.get("/api/v1/audit/export", &t).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/x-ndjson");
    let text = reply.text();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["chain"], app.store.site_chain().as_str());
    let kinds: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(kinds.contains(&"user.created".to_owned()), "{kinds:?}");

    let keys = keys_file(&app, dir.path()).await;
    let site = dir.path().join("site.jsonl");
    std::fs::write(&site, &text).unwrap();
    let (ok, out) = verify_file(&site, &keys, None);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("OK {} rows", kinds.len())), "{out}");

    // The site chain has its own signed checkpoint, for site admins only, which the export
    // verifies against and which catches the export cut short.
    assert_eq!(
        app.get("/api/v1/audit/checkpoint", &jane).await.status,
        StatusCode::FORBIDDEN
    );
    let cp = app.get("/api/v1/audit/checkpoint", &t).await;
    assert_eq!(cp.status, StatusCode::OK, "{:?}", cp.body);
    assert_eq!(cp.body["chain"], app.store.site_chain().as_str());
    assert_eq!(cp.body["size"], kinds.len());
    let cp_file = dir.path().join("site-cp.json");
    std::fs::write(&cp_file, cp.body.to_string()).unwrap();
    let (ok, out) = verify_file(&site, &keys, Some(&cp_file));
    assert!(
        ok && out.contains(&format!("checkpoint covers row {}", kinds.len())),
        "{out}"
    );
    let cut = dir.path().join("site-cut.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&cut, lines[..lines.len() - 1].join("\n")).unwrap();
    let (ok, out) = verify_file(&cut, &keys, Some(&cp_file));
    assert!(!ok && out.contains("truncated"), "{out}");

    // The CLI writes the same export, offline.
    let out = cli(&app, &["audit", "export", "--site"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
    let out = cli(&app, &["audit", "export", "--project", "default"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = dir.path().join("default.jsonl");
    std::fs::write(&project, &out.stdout).unwrap();
    let (ok, out) = verify_file(&project, &keys, None);
    assert!(ok && out.contains("OK 4 rows"), "{out}");

    // A changed byte in the site export is caught.
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, text.replacen("jane", "joan", 1)).unwrap();
    let (ok, out) = verify_file(&tampered, &keys, None);
    assert!(!ok && out.contains("FAILED at row"), "{out}");
}

async fn the_bundle_holds_what_it_promises_and_verifies(backend: Backend) {
    let app = TestApp::new(backend).await;
    history(&app).await;
    background::checkpoint_and_reload(&app.state).await.unwrap();
    // After the last checkpoint the server signed: the bundle signs its own.
    app.create_project("billing").await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let out = cli(&app, &["audit", "bundle", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut names: Vec<String> = std::fs::read_dir(&bundle)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "README.md",
            "SHA256SUMS",
            "checkpoints.log",
            "keys.json",
            "project-billing.jsonl",
            "project-default.jsonl",
            "protocol.md",
            "site.jsonl"
        ]
    );
    let readme = std::fs::read_to_string(bundle.join("README.md")).unwrap();
    assert!(
        readme.contains("taskward-brain audit verify --file"),
        "{readme}"
    );
    assert!(readme.contains("project-default.jsonl"), "{readme}");
    let sums = std::fs::read_to_string(bundle.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 7, "{sums}");
    // Self-contained: the protocol itself, where the verifier comes from, what the site chain
    // holds.
    let protocol = std::fs::read_to_string(bundle.join("protocol.md")).unwrap();
    assert!(
        protocol.starts_with("# The audit log protocol"),
        "{protocol}"
    );
    assert!(
        readme.contains("`protocol.md` (in this bundle)"),
        "{readme}"
    );
    assert!(
        readme.contains("cargo build --release -p taskward-brain"),
        "{readme}"
    );
    assert!(!readme.contains(" 1 rows"), "{readme}");
    let keys: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("keys.json")).unwrap()).unwrap();
    assert_eq!(
        keys["keys"][0]["key_id"],
        app.keys.public_keys()[0].key_id.as_str()
    );

    for name in [
        "site.jsonl",
        "project-default.jsonl",
        "project-billing.jsonl",
    ] {
        let (ok, out) = verify_file(
            &bundle.join(name),
            &bundle.join("keys.json"),
            Some(&bundle.join("checkpoints.log")),
        );
        assert!(ok, "{name}: {out}");
        // The bundle's fresh checkpoints reach every row it holds.
        let rows = std::fs::read_to_string(bundle.join(name))
            .unwrap()
            .lines()
            .count()
            - 1;
        let counted = match rows {
            1 => "OK 1 row,".to_owned(),
            n => format!("OK {n} rows,"),
        };
        assert!(out.contains(&counted), "{name}: {out}");
        assert!(
            out.contains(&format!("checkpoint covers row {rows}")),
            "{name}: {out}"
        );
    }
    // So cutting the last row of any chain is caught.
    let site = std::fs::read_to_string(bundle.join("site.jsonl")).unwrap();
    let lines: Vec<&str> = site.lines().collect();
    let cut = dir.path().join("site-cut.jsonl");
    std::fs::write(&cut, lines[..lines.len() - 1].join("\n")).unwrap();
    let (ok, out) = verify_file(
        &cut,
        &bundle.join("keys.json"),
        Some(&bundle.join("checkpoints.log")),
    );
    assert!(!ok && out.contains("truncated"), "{out}");

    // A second bundle into the same directory is refused rather than mixed.
    let again = cli(&app, &["audit", "bundle", bundle.to_str().unwrap()]);
    assert!(!again.status.success());
}

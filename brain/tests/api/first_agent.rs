//! From nothing to an agent: while project `default` has no enrolled agent, each start of the
//! brain prints one `taskward-agent run` line whose token enrolls the pending `first-agent`;
//! a new start re-issues the token (the old one is refused), every step is in the audit log,
//! and once an agent enrolled nothing more is printed or issued.

use ed25519_dalek::SigningKey;
use reqwest::Method;
use serde_json::{Value, json};
use taskward_brain::agents::first;
use taskward_brain::app::ServerSettings;
use taskward_testkit::browser::Browser;
use taskward_testkit::{Api, BrainProcess};

use crate::binary::{cli, serve};
use crate::both_backends;
use crate::support::{Backend, TestApp, TestDb};

/// The first `taskward-agent run` line of a brain's stderr, as a person would copy it.
fn run_line(log: &str) -> Option<String> {
    log.lines()
        .find(|line| line.contains("taskward-agent run "))
        .map(|line| line.trim().to_owned())
}

/// The word after `flag` in a command line.
fn arg<'a>(line: &'a str, flag: &str) -> &'a str {
    let mut words = line.split_whitespace();
    words.find(|word| *word == flag);
    words
        .next()
        .unwrap_or_else(|| panic!("no {flag} in {line}"))
}

/// Presents `token` to the brain's enrollment endpoint as a fresh agent would; the status.
async fn enroll(brain: &Api, token: &str, seed: u8) -> u16 {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let body = json!({
        "enrollment_token": token,
        "public_key": hex::encode(key.verifying_key().as_bytes()),
        "hostname": "worker-1",
    });
    brain
        .call(Method::POST, "/api/v1/agent/enroll", Some(body))
        .await
        .0
}

/// The rows of `kind` in project `default`'s audit log.
async fn audit_rows(api: &Api, kind: &str) -> Vec<Value> {
    api.get_json(&format!("/api/v1/projects/default/audit?kind={kind}"))
        .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// The real `serve`: the first start prints the line, a restart re-issues the token (only
/// the new one enrolls), and a start after an agent enrolled prints nothing.
async fn each_start_prints_a_line_until_an_agent_enrolls(backend: Backend) {
    let db = TestDb::for_binary(backend).await;
    let db = db.as_ref();
    let cwd = tempfile::tempdir().unwrap();
    let cwd = cwd.path();

    let mut server = serve(cwd, db);
    let line = run_line(&server.log()).expect("the first start prints the run line");
    assert!(
        line.starts_with(&format!(
            "taskward-agent run --brain {} --enroll twe_",
            server.url()
        )),
        "{line}"
    );
    assert!(
        line.ends_with("--broker redis://127.0.0.1:6379/0"),
        "{line}"
    );
    let first_token = arg(&line, "--enroll").to_owned();
    assert!(
        !server
            .log()
            .lines()
            .any(|l| l.contains(&first_token) && !l.contains("taskward-agent run")),
        "the token appears only in the printed line"
    );
    server.terminate();

    let mut again = serve(cwd, db);
    let line = run_line(&again.log()).expect("a restart prints the line again");
    let second_token = arg(&line, "--enroll").to_owned();
    assert_ne!(first_token, second_token);
    let anonymous = Api::new(&again.url(), None);
    assert_eq!(
        enroll(&anonymous, &first_token, 1).await,
        401,
        "re-issuing ends the old token"
    );
    assert_eq!(enroll(&anonymous, &second_token, 1).await, 200);
    let agents = again
        .api()
        .get_json("/api/v1/projects/default/agents")
        .await;
    let agents = agents["items"].as_array().unwrap();
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(agents[0]["name"], first::NAME);
    assert_eq!(agents[0]["enrolled"], true);
    let created = audit_rows(&again.api(), "agent.created").await;
    let reissued = audit_rows(&again.api(), "agent.enrollment_reissued").await;
    assert_eq!(created.len(), 1);
    assert_eq!(reissued.len(), 1);
    for row in created.iter().chain(&reissued) {
        assert_eq!(row["statement"]["actor"]["name"], "first-start");
        assert_eq!(row["statement"]["payload"]["agent"]["name"], first::NAME);
        assert!(!row.to_string().contains(&second_token));
    }
    again.terminate();
    // The chain with the new rows verifies.
    let verified = cli(cwd, db, &["audit", "verify", "--project", "default"]);
    assert!(verified.status.success(), "{verified:?}");

    let mut enrolled = serve(cwd, db);
    let log = enrolled.terminate();
    assert_eq!(run_line(&log), None, "{log}");
}

/// `--agent-broker` is the broker the line names, a brain serving TLS is named `https://`,
/// and a brain listening on every address names itself by loopback with a hint to use the
/// host's name.
#[test]
fn the_line_names_the_agent_broker_and_a_reachable_brain() {
    let cwd = tempfile::tempdir().unwrap();
    let broker = "amqp://guest:guest@127.0.0.1:5672//";
    let ca = taskward_testkit::TestCa::new("first agent");
    let mut brain = BrainProcess::builder(env!("CARGO_BIN_EXE_taskward-brain"), cwd.path())
        .args(&["--agent-broker", broker])
        .tls(&ca)
        .start();
    let line = run_line(&brain.log()).unwrap();
    assert!(
        line.starts_with(&format!("taskward-agent run --brain {} ", brain.url())),
        "{line}"
    );
    assert!(brain.url().starts_with("https://"));
    assert!(line.ends_with(&format!("--broker {broker}")), "{line}");
    brain.terminate();

    let block = first::FirstAgent {
        token: taskward_shared::secret::Secret::generate(
            taskward_shared::secret::SecretKind::Enrollment,
        ),
        created: false,
    }
    .banner("0.0.0.0:7700".parse().unwrap(), true, broker);
    assert!(block.contains("put this host's name"), "{block}");
    assert_eq!(
        run_line(&block).unwrap(),
        block.trim_end().lines().last().unwrap(),
        "the block ends with the line"
    );
    assert!(
        run_line(&block)
            .unwrap()
            .starts_with("taskward-agent run --brain https://127.0.0.1:7700 --enroll twe_")
    );
}

/// The domain step on its own: issued tokens are spendable once and last an hour, and there
/// is nothing to issue without project `default`.
async fn first_agent_tokens_follow_the_rules(backend: Backend) {
    let app = TestApp::new(backend).await;
    let issue = || first::issue(&app.store, &app.keys);
    let created = issue().await.unwrap().expect("a token for a fresh site");
    assert!(created.created);
    let agents = app
        .get("/api/v1/projects/default/agents", &app.admin_token)
        .await;
    let expires = agents.body["items"][0]["enrollment_expires_at"]
        .as_str()
        .unwrap()
        .parse::<chrono::DateTime<chrono::Utc>>()
        .unwrap();
    let left = expires - chrono::Utc::now();
    assert!(
        left <= chrono::Duration::hours(1) && left > chrono::Duration::minutes(50),
        "{left}"
    );

    // Another pending agent does not stop it; re-issuing ends the previous token.
    let other = app.register_agent("default", "host-b").await;
    let reissued = issue().await.unwrap().expect("still no enrolled agent");
    assert!(!reissued.created);
    let enroll_with = |token: &str, seed: u8| {
        let key = SigningKey::from_bytes(&[seed; 32]);
        json!({
            "enrollment_token": token,
            "public_key": hex::encode(key.verifying_key().as_bytes()),
        })
    };
    let old = app
        .post(
            "/api/v1/agent/enroll",
            "",
            enroll_with(created.token.expose(), 8),
        )
        .await;
    assert_eq!(old.status, 401, "{:?}", old.body);

    // Once any agent of `default` enrolled, nothing more is issued; the pending token is left
    // as it was.
    let other_token = other.body["enrollment_token"].as_str().unwrap();
    let spent = app
        .post("/api/v1/agent/enroll", "", enroll_with(other_token, 9))
        .await;
    assert!(spent.status.is_success(), "{:?}", spent.body);
    assert!(issue().await.unwrap().is_none());
    let pending = app
        .post(
            "/api/v1/agent/enroll",
            "",
            enroll_with(reissued.token.expose(), 10),
        )
        .await;
    assert!(pending.status.is_success(), "{:?}", pending.body);
    assert_eq!(
        app.get(
            "/api/v1/projects/default/audit?kind=agent.enrollment_reissued",
            &app.admin_token
        )
        .await
        .count("items"),
        1
    );
}

/// No project `default` (deleted): nothing is registered or issued.
async fn no_default_project_no_first_agent(backend: Backend) {
    let app = TestApp::new(backend).await;
    let deleted = app
        .delete("/api/v1/projects/default", &app.admin_token)
        .await;
    assert!(deleted.status.is_success(), "{:?}", deleted.body);
    assert!(first::issue(&app.store, &app.keys).await.unwrap().is_none());
}

both_backends!(
    each_start_prints_a_line_until_an_agent_enrolls,
    first_agent_tokens_follow_the_rules,
    no_default_project_no_first_agent,
);

/// The dashboard's "Add agent": the dialog registers an agent and shows, once, the line its
/// host runs — the brain as the browser reaches it, a token that enrolls, the configured
/// broker — with a Copy button; closing it lists the new agent and forgets the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_add_agent_dialog_shows_the_line_to_run() {
    let broker = "amqp://guest:guest@rabbit.internal:5672//";
    let settings = ServerSettings {
        agent_broker: broker.into(),
        ..ServerSettings::default()
    };
    let app = TestApp::with_settings(Backend::Sqlite, settings).await;
    let base = app.serve().await;
    let browser = Browser::start().await;
    browser.size(1366, 768).await;
    browser
        .sign_in(&base, "admin", &app.admin_password(), "/p/default/agents")
        .await;
    browser.click_on("button[data-add-agent]").await;
    let name = browser.find("#add-agent-dialog input[name=name]").await;
    browser.fill(&name, "worker-7").await;
    browser
        .click_on("#add-agent-dialog button[type=submit]")
        .await;
    let line = browser
        .wait_text("[data-run-command]", "taskward-agent run")
        .await;
    assert!(
        line.starts_with(&format!("taskward-agent run --brain {base} --enroll twe_")),
        "{line}"
    );
    assert!(line.ends_with(&format!("--broker {broker}")), "{line}");
    browser.screenshot("add-agent-dialog-1366").await;
    browser.click_on("button[data-copy]").await;
    let copied = browser.wait_text("button[data-copy]", "C").await;
    assert_ne!(copied, "Copy", "the Copy button reports what it did");

    let token = arg(&line, "--enroll");
    let key = SigningKey::from_bytes(&[3; 32]);
    let enrolled = app
        .post(
            "/api/v1/agent/enroll",
            "",
            json!({"enrollment_token": token,
                   "public_key": hex::encode(key.verifying_key().as_bytes())}),
        )
        .await;
    assert!(enrolled.status.is_success(), "{:?}", enrolled.body);

    browser
        .click_on("#add-agent-dialog button[data-close-dialog]")
        .await;
    browser.wait_text("section.agent h2", "worker-7").await;
    assert!(
        !browser
            .run("return document.body.innerHTML")
            .await
            .as_str()
            .unwrap()
            .contains(token),
        "the token is gone once the dialog closed"
    );
}

//! The dashboard in a real headless Chromium (Debian's, through chromedriver) against the real
//! brain on a loopback port: sign in, find a failed task by filter, open its tree, retry it with
//! edited kwargs, watch the command change without reloading, purge through the confirm dialog;
//! a viewer sees no actions and forged requests are refused. Screenshots of each page at
//! 1366×768 and at 390 px wide go to `target/tmp/dashboard-screenshots/`.
//!
//! Below them, the sign-in and session rules over plain HTTP, on both backends.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use taskward_brain::app::ServerSettings;
use taskward_brain::limits::Limit;
use taskward_shared::events::{TaskState, TaskUpdate, Update};

use crate::both_backends;
use crate::support::{Backend, TestApp, celery_task};
use taskward_testkit::browser::Browser;

const VIEWER_PASSWORD: &str = "vera-password-1";

fn task(id: &str, state: TaskState, at: i64, parent: Option<&str>) -> Update {
    Update::Task(Box::new(TaskUpdate {
        name: Some(format!("app.{}", id.split('-').next().unwrap_or("task"))),
        queue: Some("emails".into()),
        worker: Some("celery@host-a".into()),
        args: Some(json!([1, 2])),
        kwargs: Some(json!({"to": "ops@example.com"})),
        exception: (state == TaskState::Failed).then(|| "ValueError('bad address')".into()),
        traceback: (state == TaskState::Failed)
            .then(|| "Traceback (most recent call last):\n  File \"tasks.py\", line 9\nValueError: bad address".into()),
        parent_id: parent.map(str::to_owned),
        root_id: parent.map(|_| "send-root".to_owned()),
        runtime_ms: Some(120),
        ..celery_task(id, state, at)
    }))
}

/// A project with a task family (one failed child), other tasks, a worker and a queue of 42.
async fn seeded() -> (TestApp, String) {
    let app = TestApp::new(Backend::Sqlite).await;
    let agent = app.create_agent("default", "host-a").await;
    let now = chrono::Utc::now().timestamp_millis();
    let mut updates = vec![
        task("send-root", TaskState::Succeeded, now - 5000, None),
        task(
            "send-child",
            TaskState::Failed,
            now - 4000,
            Some("send-root"),
        ),
        task(
            "send-grandchild",
            TaskState::Succeeded,
            now - 3000,
            Some("send-child"),
        ),
    ];
    for i in 0..12 {
        updates.push(task(
            &format!("report-{i}"),
            TaskState::Succeeded,
            now - 60_000 * i,
            None,
        ));
    }
    // Each task was received a moment before its last state.
    let received: Vec<Update> = updates
        .iter()
        .filter_map(|u| match u {
            Update::Task(t) => Some(Update::Task(Box::new(TaskUpdate {
                engine: t.engine.clone(),
                task_id: t.task_id.clone(),
                state: Some(TaskState::Received),
                at_ms: t.at_ms - 500,
                ..TaskUpdate::default()
            }))),
            _ => None,
        })
        .collect();
    updates.extend(received);
    updates.push(Update::Worker(taskward_shared::events::WorkerUpdate {
        name: "celery@host-a".into(),
        online: true,
        at_ms: now,
        pool: Some("prefork".into()),
        concurrency: Some(4),
        queues: Some(vec!["emails".into()]),
        ..Default::default()
    }));
    updates.push(Update::QueueDepth {
        queue: "emails".into(),
        depth: 42,
        at_ms: now,
    });
    app.apply_updates("default", &agent, updates).await;
    app.create_user("vera", false).await;
    app.add_member("default", "vera", "viewer").await;
    app.set_password("vera", VIEWER_PASSWORD).await;
    (app, agent)
}

/// POSTs JSON from the page's own script, with or without the session's CSRF token; gives
/// "status body".
async fn post_from_page(browser: &Browser, path: &str, body: Value, csrf: bool) -> String {
    let header = if csrf {
        "'x-csrf-token': document.querySelector('meta[name=csrf-token]').content,"
    } else {
        ""
    };
    let reply = browser
        .run(&format!(
            "const r = await fetch('{path}', {{method: 'POST', headers: {{{header}              'content-type': 'application/json'}}, body: JSON.stringify({body})}});              return r.status + ' ' + await r.text();"
        ))
        .await;
    reply.as_str().unwrap_or_default().to_owned()
}

/// A desktop-sized browser on `app` served on loopback, signed in as `user` and left on
/// `path`; the base URL beside it.
async fn signed_in_browser(
    app: &TestApp,
    user: &str,
    password: &str,
    path: &str,
) -> (String, Browser) {
    let base = app.serve().await;
    let browser = Browser::start().await;
    browser.size(1366, 768).await;
    browser.sign_in(&base, user, password, path).await;
    (base, browser)
}

/// Both window sizes the layout must read well at.
async fn shoot(browser: &Browser, name: &str) {
    browser.size(1366, 768).await;
    browser.screenshot(&format!("{name}-1366")).await;
    browser.size(390, 844).await;
    // Nothing wider than the phone's screen: wide tables scroll inside their own box.
    let fits = browser
        .run("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        .await;
    assert_eq!(fits, json!(true), "{name} overflows 390 px");
    browser.screenshot(&format!("{name}-390")).await;
    browser.size(1366, 768).await;
}

async fn commands_of(app: &TestApp) -> Vec<Value> {
    let reply = app
        .get("/api/v1/projects/default/commands", &app.admin_token)
        .await;
    reply.body["items"].as_array().unwrap().clone()
}

/// A command of `kind` in the default project (the test fails if there is none).
async fn command_of_kind(app: &TestApp, kind: &str) -> Value {
    commands_of(app)
        .await
        .into_iter()
        .find(|c| c["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} command"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_flows_in_a_real_browser() {
    let (app, agent) = seeded().await;
    let (base, browser) =
        signed_in_browser(&app, "admin", &app.admin_password(), "/p/default/tasks").await;
    shoot(&browser, "tasks").await;

    // Find the failed task by filter: the URL carries the filter (shareable).
    browser
        .click_on("select[name=state] option[value=failed]")
        .await;
    browser.click_on("form.filters button[type=submit]").await;
    let url = browser.wait_url(|u| u.contains("state=failed")).await;
    assert!(
        !url.contains("name="),
        "empty filters stay out of the URL: {url}"
    );
    let states: Vec<String> = {
        let mut out = Vec::new();
        for badge in browser.all("table.tasks tbody .badge").await {
            out.push(browser.text(&badge).await);
        }
        out
    };
    assert_eq!(states, ["failed"]);

    // Its page: the exception, and its tree with parent and child.
    browser
        .click_on("a[href$='/tasks/celery/send-child']")
        .await;
    browser
        .wait_url(|u| u.ends_with("/tasks/celery/send-child"))
        .await;
    browser.wait_text("p.error", "ValueError").await;
    let tree = browser.wait_text("ul.tree", "send-grandchild").await;
    assert!(
        tree.contains("send-root") && tree.contains("send-child"),
        "{tree}"
    );
    shoot(&browser, "task-detail").await;

    // Retry with edited kwargs: bad JSON is refused in the page and nothing is issued.
    let editor = browser.find("textarea[name=override_kwargs]").await;
    browser.fill(&editor, "{\"to\": ").await;
    browser.click_on("form.retry button[type=submit]").await;
    browser.wait_text("[data-result]", "not valid JSON").await;
    assert!(commands_of(&app).await.is_empty());
    browser.fill(&editor, "[1]").await;
    browser.click_on("form.retry button[type=submit]").await;
    browser
        .wait_text("[data-result]", "must be a JSON object")
        .await;
    browser
        .fill(&editor, "{\"to\": \"fixed@example.com\"}")
        .await;
    browser.click_on("form.retry button[type=submit]").await;
    browser
        .wait_text("[data-result]", "retry-task issued")
        .await;
    let commands = commands_of(&app).await;
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0]["kind"], "retry-task");
    assert_eq!(
        commands[0]["payload"]["override_kwargs"],
        json!({"to": "fixed@example.com"})
    );
    assert_eq!(commands[0]["issuer"]["name"], "admin");
    let command_id = commands[0]["id"].as_str().unwrap().to_owned();

    // The commands page changes without a reload when the outcome is recorded.
    browser.goto(&format!("{base}/p/default/commands")).await;
    browser.wait_text("table tbody .badge", "issued").await;
    browser.run("window.__notReloaded = 42; return 1").await;
    let ctx = app.state.audit_as_system();
    let project_id = app.project_id("default").await;
    let id = command_id.clone();
    app.store
        .write("test_outcome", move |conn| {
            use taskward_brain::store::commands;
            let command = commands::find(conn, &project_id, &id)?;
            taskward_brain::commands::lifecycle::record(
                conn,
                &ctx,
                &command,
                // An outcome the brain records itself, as the timeout sweeper does (detail
                // included): one from the agent must carry the agent's signed result, or
                // "verify now" below names its row.
                taskward_brain::commands::Event::DeadlinePassed,
                Some(taskward_brain::background::TIMEOUT_DETAIL),
                None,
            )
        })
        .await
        .unwrap();
    browser.wait_text("table tbody .badge", "timed_out").await;
    assert_eq!(
        browser.run("return window.__notReloaded").await,
        json!(42),
        "the page reloaded instead of updating"
    );
    shoot(&browser, "commands").await;

    // The command's page: payload, issuer, outcome and its signed audit rows.
    browser
        .goto(&format!("{base}/p/default/commands/{command_id}"))
        .await;
    let rows = browser.wait_text("table tbody", "valid").await;
    assert_eq!(rows.matches("valid").count(), 2, "{rows}");
    assert!(!rows.contains("INVALID"), "{rows}");
    shoot(&browser, "command-detail").await;

    // Bulk retry of what the list shows: counted first (dry run), then issued.
    browser
        .goto(&format!("{base}/p/default/tasks?state=failed"))
        .await;
    browser.click_on("details.more summary").await;
    // The failed task was retried above, so a bulk retry leaves it out unless asked.
    browser.click_on("form.bulk-retry button[data-count]").await;
    browser
        .wait_text(
            "form.bulk-retry [data-result]",
            "0 match; 0 would be retried",
        )
        .await;
    browser
        .click_on("form.bulk-retry input[name=include_retried]")
        .await;
    browser.click_on("form.bulk-retry button[data-count]").await;
    browser
        .wait_text(
            "form.bulk-retry [data-result]",
            "1 match; 1 would be retried",
        )
        .await;
    browser
        .click_on("form.bulk-retry button[type=submit]")
        .await;
    browser
        .wait_text("form.bulk-retry [data-result]", "bulk-retry issued")
        .await;
    let bulk = command_of_kind(&app, "bulk-retry").await;
    assert_eq!(
        bulk["payload"]["filter"],
        json!({"state": "failed", "include_retried": true})
    );

    // Purge through the dialog: it shows the depth the confirmation binds and wants the
    // queue's name typed.
    browser.goto(&format!("{base}/p/default/agents")).await;
    shoot(&browser, "agents").await;
    browser.click_on("button[data-purge]").await;
    browser.wait_text("[data-depth]", "42 message").await;
    let confirm = browser.find("button[data-confirm-purge]").await;
    assert_eq!(browser.property(&confirm, "disabled").await, json!(true));
    let typed = browser.find("dialog input[name=typed]").await;
    browser.type_text(&typed, "email").await;
    assert_eq!(browser.property(&confirm, "disabled").await, json!(true));
    browser.type_text(&typed, "s").await;
    assert_eq!(browser.property(&confirm, "disabled").await, json!(false));
    browser.screenshot("purge-dialog-1366").await;
    browser.click(&confirm).await;
    browser
        .wait_text("[data-result]", "Purge of emails issued")
        .await;
    let purge = command_of_kind(&app, "purge-queue").await;
    assert_eq!(purge["bound_depth"], 42);
    assert_eq!(purge["critical"], false);
    assert_eq!(purge["agent_id"], agent.as_str());

    // A state-changing request without the CSRF token is refused, even from the page itself;
    // the same request with it goes through.
    let ping = "/api/v1/projects/default/commands/ping-workers";
    let forged = post_from_page(&browser, ping, json!({"agent_id": agent}), false).await;
    assert!(
        forged.starts_with("403") && forged.contains("csrf"),
        "{forged}"
    );
    let sent = post_from_page(&browser, ping, json!({"agent_id": agent}), true).await;
    assert!(sent.starts_with("202"), "{sent}");

    // The audit log: rows with their signatures, and "verify now".
    browser.goto(&format!("{base}/p/default/audit")).await;
    browser.wait_text("table tbody", "command.issued").await;
    shoot(&browser, "audit").await;
    let kind = browser.find("form.filters input[name=kind]").await;
    browser.fill(&kind, "command.timed_out").await;
    browser.click_on("form.filters button[type=submit]").await;
    browser
        .wait_url(|u| u.contains("kind=command.timed_out"))
        .await;
    let shown = browser.wait_text("table tbody", "command.timed_out").await;
    assert!(!shown.contains("command.issued"), "{shown}");
    browser.click_on("a[href$='/audit/verify']").await;
    browser.wait_text("[data-verdict]", "rows checked").await;

    // A schedule, created with the preview of its next runs in its zone; a bad expression is
    // named before anything is sent.
    browser
        .goto(&format!("{base}/p/default/schedules/new"))
        .await;
    let cron = browser.find("input[name=cronExpression]").await;
    browser.fill(&cron, "0 25 * * *").await;
    browser.wait_text("[data-preview-error]", "hour").await;
    browser.fill(&cron, "30 2 * * *").await;
    let zone = browser.find("input[name=timezone]").await;
    browser.fill(&zone, "America/New_York").await;
    let upcoming = browser.wait_text("[data-upcoming]", "02:30 E").await;
    assert_eq!(
        browser.all("[data-upcoming] li").await.len(),
        5,
        "{upcoming}"
    );
    shoot(&browser, "schedule-new").await;
    let name = browser.find("form.schedule input[name=name]").await;
    browser.fill(&name, "nightly retention").await;
    browser.click_on("form.schedule button[type=submit]").await;
    browser
        .wait_url(|u| u.contains("/schedules/") && !u.ends_with("/new"))
        .await;
    browser.wait_text("h1", "nightly retention").await;
    browser
        .click_on("section.actions button[type=submit]")
        .await;
    browser.wait_text("[data-result]", "Ran: success").await;
    browser.wait_text("table tbody", "manual").await;
    shoot(&browser, "schedule").await;

    // Members (admin): add vera's colleague as an operator.
    app.create_user("omar", false).await;
    browser.goto(&format!("{base}/p/default/members")).await;
    let user = browser.find("input[name=user]").await;
    browser.fill(&user, "omar").await;
    browser
        .click_on("select[name=role] option[value=operator]")
        .await;
    browser
        .click_on("form.add-member button[type=submit]")
        .await;
    browser.wait_text("table tbody", "omar").await;
    let members = app
        .get("/api/v1/projects/default/members", &app.admin_token)
        .await;
    assert!(
        members.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user"] == "omar" && m["role"] == "operator")
    );
    shoot(&browser, "members").await;

    // API tokens: created and shown once.
    browser.goto(&format!("{base}/tokens")).await;
    let name = browser.find("input[name=name]").await;
    browser.fill(&name, "deploy script").await;
    browser
        .click_on("form[data-api='/api/v1/tokens'] button")
        .await;
    let shown = browser.wait_text("[data-result]", "tw_").await;
    let token = shown.split_whitespace().last().unwrap().to_owned();
    let works = app.get("/api/v1/projects", &token).await;
    assert_eq!(works.status, StatusCode::OK);
    shoot(&browser, "tokens").await;

    // Cleanup tasks: deleting a project runs as a tree of steps, shown as a tree.
    app.create_project("doomed").await;
    let deleted = app
        .delete("/api/v1/projects/doomed", &app.admin_token)
        .await;
    assert!(deleted.status.is_success(), "{}", deleted.body);
    browser.goto(&format!("{base}/cleanup")).await;
    browser.click_on("table tbody a").await;
    browser.wait_text("ul.tree", "delete_project").await;
    shoot(&browser, "cleanup").await;

    browser.goto(&format!("{base}/p/default")).await;
    browser.wait_text(".stats", "Workers online").await;
    shoot(&browser, "overview").await;
    browser.goto(&format!("{base}/")).await;
    shoot(&browser, "projects").await;
    browser.goto(&format!("{base}/login")).await;
    shoot(&browser, "login").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_actions_and_cannot_act() {
    let (app, agent) = seeded().await;
    let (base, browser) = signed_in_browser(
        &app,
        "vera",
        VIEWER_PASSWORD,
        "/p/default/tasks/celery/send-child",
    )
    .await;
    browser.wait_text("ul.tree", "send-root").await;
    assert!(browser.all("form[data-api]").await.is_empty());
    assert!(browser.all("textarea").await.is_empty());
    browser.goto(&format!("{base}/p/default/agents")).await;
    browser.wait_text("main", "celery@host-a").await;
    assert!(browser.all("button[data-purge]").await.is_empty());
    assert!(browser.all("form[data-api]").await.is_empty());
    browser.goto(&format!("{base}/p/default/tasks")).await;
    browser.find("table.tasks").await;
    assert!(browser.all("button[data-bulk-delete]").await.is_empty());
    // Even with the CSRF token, the API's role check refuses a viewer.
    let forged = post_from_page(
        &browser,
        "/api/v1/projects/default/commands/retry-task",
        json!({"agent_id": agent, "engine": "celery", "task_id": "send-child"}),
        true,
    )
    .await;
    assert!(forged.starts_with("403"), "{forged}");
    assert!(commands_of(&app).await.is_empty());
    // Signing out ends the session: the pages send the browser back to sign in.
    browser.click_on("form.user button").await;
    browser.wait_url(|u| u.ends_with("/login")).await;
    browser.goto(&format!("{base}/p/default/tasks")).await;
    browser.wait_url(|u| u.contains("/login?next=")).await;
}

// ---- Sign-in and sessions over HTTP, both backends --------------------------------------

struct Attempt {
    status: StatusCode,
    retry_after: Option<String>,
    cookie: Option<String>,
    location: Option<String>,
    body: String,
}

async fn post_login(app: &TestApp, form: &str, origin: Option<&str>) -> Attempt {
    let mut request = Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("host", "brain.example");
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let reply = app
        .send(request.body(Body::from(form.to_owned())).unwrap())
        .await;
    Attempt {
        status: reply.status,
        retry_after: reply
            .headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        cookie: reply
            .headers
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned()),
        location: reply
            .headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: String::from_utf8_lossy(&reply.bytes).into_owned(),
    }
}

fn session_of(cookie: &str) -> String {
    cookie.split(';').next().unwrap().trim().to_owned()
}

async fn with_session(
    app: &TestApp,
    method: &str,
    path: &str,
    session: &str,
    csrf: Option<&str>,
) -> crate::support::Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("cookie", session);
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    let body = if method == "POST" {
        request = request.header("content-type", "application/json");
        Body::from(r#"{"slug": "made-in-the-dashboard"}"#)
    } else {
        Body::empty()
    };
    app.send(request.body(body).unwrap()).await
}

/// The CSRF token a page embeds.
fn csrf_in(page: &[u8]) -> String {
    let text = String::from_utf8_lossy(page);
    let start = text.find("name=\"csrf-token\" content=\"").unwrap() + 27;
    text[start..start + text[start..].find('"').unwrap()].to_owned()
}

async fn sign_in_and_sessions(backend: Backend) {
    let app = TestApp::new(backend).await;
    let password = app.admin_password();
    assert!(password.len() >= 10);

    // Wrong password and unknown name: the same answer.
    let wrong = post_login(&app, "name=admin&password=nope-nope-nope", None).await;
    let unknown = post_login(&app, "name=nobody&password=nope-nope-nope", None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.cookie.is_none() && unknown.cookie.is_none());
    assert!(wrong.body.contains("Wrong name or password."));
    assert!(unknown.body.contains("Wrong name or password."));

    // A post from another site's page does not sign in (login CSRF).
    let cross = post_login(
        &app,
        &format!("name=admin&password={password}"),
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert!(cross.cookie.is_none());

    // Success: a session cookie, HttpOnly and SameSite=Lax, not Secure over plain HTTP; the
    // next page must be local.
    let ok = post_login(
        &app,
        &format!("name=admin&password={password}&next=//evil.example/x"),
        Some("http://brain.example"),
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.location.as_deref(), Some("/"));
    let cookie = ok.cookie.unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "{cookie}");
    let session = session_of(&cookie);
    let id = session.split_once('=').unwrap().1.to_owned();

    // Only a hash of the session id is stored.
    let stored: Vec<String> = {
        let id = id.clone();
        app.store
            .read("test_sessions", move |conn| {
                use diesel::prelude::*;
                use taskward_brain::store::schema::dashboard_sessions;
                let _ = &id;
                Ok(dashboard_sessions::table
                    .select(dashboard_sessions::id_hash)
                    .load::<String>(conn)?)
            })
            .await
            .unwrap()
    };
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], id);
    assert_eq!(stored[0], taskward_shared::secret::hash_secret(&id));

    // The session reads pages and the API; pages carry the security headers.
    let page = with_session(&app, "GET", "/p/default/tasks", &session, None).await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    let csrf = csrf_in(&page.bytes);
    assert!(csrf.starts_with("twc_"));
    let api = with_session(&app, "GET", "/api/v1/projects", &session, None).await;
    assert_eq!(api.status, StatusCode::OK);

    // Writes on a session need the CSRF token, and only the right one.
    let body_of = |r: &crate::support::Reply| r.body.to_string();
    for bad in [None, Some("twc_wrong")] {
        let refused = with_session(&app, "POST", "/api/v1/projects", &session, bad).await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{}",
            body_of(&refused)
        );
        assert!(body_of(&refused).contains("csrf"));
    }
    let allowed = with_session(&app, "POST", "/api/v1/projects", &session, Some(&csrf)).await;
    assert_eq!(allowed.status, StatusCode::CREATED, "{}", body_of(&allowed));
    assert_eq!(app.project_count().await, 2);

    // Sign-out needs the token too; then the session is gone.
    let logout = |csrf: String| {
        Request::post("/logout")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", session.clone())
            .body(Body::from(format!("csrf={csrf}")))
            .unwrap()
    };
    let refused = app.send(logout("twc_wrong".into())).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(projects_status(&app, &session).await, StatusCode::OK);
    let out = app.send(logout(csrf)).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = with_session(&app, "GET", "/p/default", &session, None).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert_eq!(after.headers["location"], "/login?next=%2Fp%2Fdefault");
    assert_eq!(
        projects_status(&app, &session).await,
        StatusCode::UNAUTHORIZED
    );

    // Idle and absolute expiry.
    let session = admin_session(&app).await;
    let idle = taskward_brain::store::sessions::IDLE_MS;
    app.execute_sql(&[&format!(
        "UPDATE dashboard_sessions SET last_seen_at = last_seen_at - {}",
        idle + 1000
    )])
    .await;
    assert_eq!(
        projects_status(&app, &session).await,
        StatusCode::UNAUTHORIZED
    );
    let session = admin_session(&app).await;
    app.execute_sql(&["UPDATE dashboard_sessions SET expires_at = 1"])
        .await;
    assert_eq!(
        projects_status(&app, &session).await,
        StatusCode::UNAUTHORIZED
    );
    // Ended sessions are removed by the periodic housekeeping; a live one stays.
    let live = admin_session(&app).await;
    assert_eq!(
        taskward_brain::background::prune_sessions(&app.state)
            .await
            .unwrap(),
        2
    );
    assert_eq!(projects_status(&app, &live).await, StatusCode::OK);

    // A member of no project sees the same 404 as for a project that does not exist.
    app.create_user("outsider", false).await;
    app.set_password("outsider", "outsider-password").await;
    let outsider = post_login(&app, "name=outsider&password=outsider-password", None).await;
    let session = session_of(&outsider.cookie.unwrap());
    for path in ["/p/default", "/p/nowhere"] {
        let page = with_session(&app, "GET", path, &session, None).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
    }
}

/// Ten attempts, refilled at one a minute: argon2 in a debug build on a busy machine can take
/// longer than the default six seconds a token takes to come back, which is not what this
/// test is about.
fn strict_login_limit() -> ServerSettings {
    ServerSettings {
        login_limit: Limit {
            burst: 10,
            per_minute: 1,
        },
        ..ServerSettings::default()
    }
}

async fn sign_in_is_rate_limited(backend: Backend) {
    let app = TestApp::with_settings(backend, strict_login_limit()).await;
    // The account's bucket: ten attempts, then 429 with Retry-After, even with the right
    // password.
    for _ in 0..10 {
        let attempt = post_login(&app, "name=admin&password=wrong-password", None).await;
        assert_eq!(attempt.status, StatusCode::UNAUTHORIZED);
    }
    let password = app.admin_password();
    let limited = post_login(&app, &format!("name=admin&password={password}"), None).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.retry_after.is_some());
    assert!(limited.cookie.is_none());
    assert!(limited.body.contains("Too many sign-in attempts"));

    // The address's bucket: one address trying many names is stopped as well.
    let app = TestApp::with_settings(backend, strict_login_limit()).await;
    for i in 0..10 {
        let attempt = post_login(&app, &format!("name=user{i}&password=guess-guess"), None).await;
        assert_eq!(attempt.status, StatusCode::UNAUTHORIZED);
    }
    let limited = post_login(&app, "name=someone-else&password=guess-guess", None).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.retry_after.is_some());
    // ...but the address is slowed, not locked out: another account's right password from
    // the same address (an office behind one NAT) still signs in.
    let password = app.admin_password();
    let admitted = post_login(&app, &format!("name=admin&password={password}"), None).await;
    assert_eq!(admitted.status, StatusCode::SEE_OTHER, "{}", admitted.body);
    assert!(admitted.cookie.is_some());
}

/// A sign-in attempt from `peer` (as the listener records it), carrying `forwarded` as
/// `X-Forwarded-For`.
async fn post_login_via(app: &TestApp, form: &str, peer: &str, forwarded: &str) -> Attempt {
    let mut request = Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("host", "brain.example")
        .header("x-forwarded-for", forwarded)
        .body(Body::from(form.to_owned()))
        .unwrap();
    let peer: std::net::SocketAddr = peer.parse().unwrap();
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    let reply = app.send(request).await;
    Attempt {
        status: reply.status,
        retry_after: None,
        cookie: None,
        location: None,
        body: String::from_utf8_lossy(&reply.bytes).into_owned(),
    }
}

/// Uses up the address limit of the client `forwarded` names, through the proxy at 10.0.0.2.
async fn exhaust_address(app: &TestApp, forwarded: &str) {
    for i in 0..10 {
        let form = format!("name=user{i}&password=guess-guess");
        let attempt = post_login_via(app, &form, "10.0.0.2:5000", forwarded).await;
        assert_eq!(attempt.status, StatusCode::UNAUTHORIZED, "{}", attempt.body);
    }
    let form = "name=user10&password=guess-guess";
    let limited = post_login_via(app, form, "10.0.0.2:5000", forwarded).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
}

async fn clients_behind_a_trusted_proxy_have_their_own_limits(backend: Backend) {
    let form = "name=someone&password=guess-guess";
    // Trusted: the proxy's X-Forwarded-For names the client, so one client's guessing does
    // not touch another's limit, and a client cannot pick its address by writing the header.
    let behind_proxy = ServerSettings {
        trusted_proxies: taskward_brain::client_addr::TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
        ]),
        ..strict_login_limit()
    };
    let app = TestApp::with_settings(backend, behind_proxy).await;
    exhaust_address(&app, "198.51.100.1").await;
    let other = post_login_via(&app, form, "10.0.0.2:5000", "198.51.100.2").await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED, "another client");
    let spoofed = "198.51.100.3, 198.51.100.1";
    let same = post_login_via(&app, form, "10.0.0.2:5000", spoofed).await;
    assert_eq!(
        same.status,
        StatusCode::TOO_MANY_REQUESTS,
        "a spoofed left hop"
    );

    // Untrusted (the default): the header is ignored and the proxy is the client.
    let app = TestApp::with_settings(backend, strict_login_limit()).await;
    exhaust_address(&app, "198.51.100.1").await;
    let other = post_login_via(&app, form, "10.0.0.2:5000", "198.51.100.2").await;
    assert_eq!(other.status, StatusCode::TOO_MANY_REQUESTS);
}

/// What `GET /api/v1/projects` answers on a session.
async fn projects_status(app: &TestApp, session: &str) -> StatusCode {
    with_session(app, "GET", "/api/v1/projects", session, None)
        .await
        .status
}

async fn admin_session(app: &TestApp) -> String {
    let password = app.admin_password();
    let ok = post_login(app, &format!("name=admin&password={password}"), None).await;
    session_of(&ok.cookie.unwrap())
}

async fn audit_page_verifies_and_names_the_first_bad_row(backend: Backend) {
    let (app, agent) = {
        let app = TestApp::new(backend).await;
        let agent = app.create_agent("default", "host-a").await;
        (app, agent)
    };
    app.seed_tasks("default", &agent, &["t1", "t2"]).await;
    for id in ["t1", "t2"] {
        let reply = app
            .command_on_task(&app.admin_token, "retry-task", &agent, id)
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    let session = admin_session(&app).await;
    let page = with_session(&app, "GET", "/p/default/audit", &session, None).await;
    let text = String::from_utf8_lossy(&page.bytes).into_owned();
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        text.matches(">valid<").count(),
        3,
        "agent created + 2 commands: {text}"
    );
    let verdict = with_session(&app, "GET", "/p/default/audit/verify", &session, None).await;
    let text = String::from_utf8_lossy(&verdict.bytes).into_owned();
    assert!(
        text.contains("data-verdict=\"ok\"") && text.contains("3 rows checked"),
        "{text}"
    );

    let project = app.project_id("default").await;
    let chain = format!("project:{project}");
    crate::audit_log::tamper(
        &app,
        vec![format!(
            "UPDATE audit_rows SET statement = REPLACE(statement, 't2', 't9') WHERE chain_id = '{chain}' AND seq = 3"
        )],
    )
    .await;
    let verdict = with_session(&app, "GET", "/p/default/audit/verify", &session, None).await;
    let text = String::from_utf8_lossy(&verdict.bytes).into_owned();
    assert!(text.contains("data-verdict=\"failed\""), "{text}");
    assert!(text.contains("First bad row: <strong>3</strong>"), "{text}");
}

/// The live stream answers at once when the page's watermark (`Last-Event-ID`) is not the
/// current one: a page that reconnects catches up instead of missing what changed meanwhile.
async fn a_reconnecting_page_catches_up(backend: Backend) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let app = TestApp::new(backend).await;
    let agent = app.create_agent("default", "host-a").await;
    let session = admin_session(&app).await;
    let first_event = |last: Option<String>| {
        let mut request = Request::get("/p/default/live").header("cookie", session.clone());
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        let router = app.router.clone();
        async move {
            let response = router
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            let mut body = response.into_body();
            let frame = tokio::time::timeout(std::time::Duration::from_millis(2500), body.frame())
                .await
                .ok()
                .flatten()
                .map(|f| String::from_utf8_lossy(&f.unwrap().into_data().unwrap()).into_owned());
            frame.and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
                    .map(str::to_owned)
            })
        }
    };
    let now = first_event(None).await.expect("a first event at once");
    // Up to date: nothing is sent (within the wait).
    assert_eq!(first_event(Some(now.clone())).await, None);
    // Events stored while the page was away: the stream says so at once.
    app.seed_tasks("default", &agent, &["t1"]).await;
    let after = first_event(Some(now.clone())).await.expect("caught up");
    assert_ne!(after, now);
}

both_backends!(
    a_reconnecting_page_catches_up,
    sign_in_and_sessions,
    sign_in_is_rate_limited,
    clients_behind_a_trusted_proxy_have_their_own_limits,
    audit_page_verifies_and_names_the_first_bad_row
);

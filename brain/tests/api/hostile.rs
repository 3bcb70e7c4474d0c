//! Hostile input (issue #18): no input panics a handler, NUL characters are refused with the
//! field named on both backends, sign-in returns only to this site, invented HTTP methods
//! cannot grow the metric label set, a first start completes what is missing, and a cancel
//! names only its own project's tasks, and ingest refuses numbers that cannot be true.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{Backend, Reply, TestApp, celery_task};

both_backends!(
    a_lifetime_ending_in_a_non_ascii_character_is_refused,
    invented_methods_fold_into_one_metric_series,
    implausible_updates_are_skipped_counted_and_the_rest_stored,
    an_uppercase_agent_key_is_refused_and_the_token_kept,
);

/// `expires_in: "1é"` used to split the text inside `é` and panic the handler.
async fn a_lifetime_ending_in_a_non_ascii_character_is_refused(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    for bad in ["1é", "é", "30dé", "1\u{1F600}", "١d"] {
        let reply = app.create_token(&t, "x", bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad:?}: {reply:?}");
        assert_eq!(reply.code(), "invalid_field", "{bad:?}");
        assert_eq!(reply.field(), Some("expires_in"), "{bad:?}");
    }
    let tokens = app.get("/api/v1/tokens", &t).await;
    assert_eq!(
        tokens.count("items"),
        1,
        "no token was created: {:?}",
        tokens.body
    );
}

/// The panic layer on a router of its own: a handler that panics answers 500 in the API's
/// error shape (the detail is logged, never sent), and the next request is served.
#[tokio::test]
async fn a_panicking_handler_answers_500_in_the_error_shape() {
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        let text = String::from("1é");
        // The bug this layer stands behind: slicing inside a character.
        let _ = &text[..2];
        "unreachable"
    }
    let router = axum::Router::new()
        .route("/boom", get(boom))
        .route("/fine", get(|| async { "fine" }))
        .layer(axum::middleware::from_fn(
            taskward_brain::router::catch_panic,
        ));
    let response = router
        .clone()
        .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "the API's error shape"
    );
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "internal");
    assert_eq!(body["error"]["message"], "internal server error");
    assert!(
        !body.to_string().contains("byte index"),
        "the panic message is not sent: {body}"
    );
    let fine = router
        .oneshot(Request::get("/fine").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(fine.status(), StatusCode::OK);
}

/// `token create --expires-in 1é` used to crash the CLI: now a clear message and a failure
/// exit, before any store is opened.
#[test]
fn the_cli_refuses_a_non_ascii_lifetime() {
    let cwd = tempfile::tempdir().unwrap();
    let out = crate::binary::cli(
        cwd.path(),
        None,
        &["token", "create", "admin", "--expires-in", "1é"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(out.status.code(), Some(2), "a usage error: {stderr}");
    assert!(stderr.contains("--expires-in"), "{stderr}");
    assert!(stderr.contains("is not a lifetime"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// 200 requests with invented methods leave one `method="other"` series, not 200.
async fn invented_methods_fold_into_one_metric_series(backend: Backend) {
    let app = TestApp::new(backend).await;
    for i in 0..200 {
        let method = Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        let reply = app
            .send(
                Request::builder()
                    .method(method)
                    .uri("/api/v1/projects")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert!(reply.status.is_client_error(), "{reply:?}");
    }
    let metrics = app.get("/metrics", &app.admin_token).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.text();
    assert!(
        !text.contains("INVENTED"),
        "an invented method became a label"
    );
    let other: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("taskward_http_requests_total{") && l.contains("method=\"other\"")
        })
        .collect();
    assert_eq!(other.len(), 1, "{other:#?}");
    assert!(other[0].ends_with(" 200"), "{other:?}");
}

both_backends!(nul_characters_are_refused_naming_the_field,);

const P: &str = "/api/v1/projects/default";

/// A raw request, JSON or form body, as the admin.
fn request(
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &str,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder
        .header("content-type", content_type)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

/// POSTs `body` as JSON text as written (escapes such as `\u0000` that `serde_json` values
/// would not carry through), as `token`.
async fn post_raw_json(app: &TestApp, path: &str, token: &str, body: &str) -> Reply {
    app.send(request(
        Method::POST,
        path,
        Some(token),
        "application/json",
        body,
    ))
    .await
}

fn assert_refused(reply: &Reply, field: &str, what: &str) {
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{what}: {reply:?}");
    assert_eq!(reply.code(), "invalid_field", "{what}: {reply:?}");
    assert_eq!(reply.field(), Some(field), "{what}: {reply:?}");
}

/// PostgreSQL's text cannot hold NUL, so these answered 500 there (and were stored on SQLite):
/// now 400 naming the field on both, and nothing is written.
async fn nul_characters_are_refused_naming_the_field(backend: Backend) {
    let (app, t, agent) = TestApp::with_agent(backend).await;
    app.seed_tasks("default", &agent, &["t1"]).await;
    let projects = app.project_count().await;

    // A JSON body field (JSON carries NUL only as the escape `\u0000`).
    let reply = post_raw_json(
        &app,
        "/api/v1/projects",
        &t,
        r#"{"slug": "nul", "description": "a\u0000b"}"#,
    )
    .await;
    assert_refused(&reply, "description", "JSON body field");
    // A nested field, named by its path.
    let body = format!(
        r#"{{"agent_id": "{agent}", "engine": "celery", "task_id": "t1", "override_kwargs": {{"k": ["ok", "x\u0000"]}}}}"#
    );
    let reply = post_raw_json(&app, &format!("{P}/commands/retry-task"), &t, &body).await;
    assert_refused(&reply, "override_kwargs.k[1]", "nested JSON field");
    // A command's idempotency key.
    let body = format!(
        r#"{{"agent_id": "{agent}", "engine": "celery", "task_id": "t1", "idempotency_key": "k\u0000"}}"#
    );
    let reply = post_raw_json(&app, &format!("{P}/commands/cancel-task"), &t, &body).await;
    assert_refused(&reply, "idempotency_key", "idempotency_key");
    // A query parameter, and a JSON-valued one.
    let reply = app.get(&format!("{P}/tasks?queue=a%00b"), &t).await;
    assert_refused(&reply, "queue", "query parameter");
    let reply = app
        .get(
            &format!("{P}/tasks?filter=%7B%22name%22%3A%7B%22equals%22%3A%22a%5Cu0000%22%7D%7D"),
            &t,
        )
        .await;
    assert_refused(&reply, "filter.name.equals", "filter");
    // A path segment.
    let reply = app.get(&format!("{P}/tasks/celery/t%001"), &t).await;
    assert_refused(&reply, "task_id", "path segment");
    // Bytes that are not UTF-8, in the project's slug and in a task id: 400, not 500.
    for path in ["/api/v1/projects/%FF%FE", &format!("{P}/tasks/celery/%FF")] {
        let reply = app.get(path, &t).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            reply.body
        );
        assert_eq!(
            reply.body["error"]["code"], "invalid_path_parameter",
            "{path}"
        );
    }
    let reply = app.delete("/api/v1/projects/%FF%FE", &t).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    // The unauthenticated sign-in form.
    let reply = app
        .send(request(
            Method::POST,
            "/login",
            None,
            "application/x-www-form-urlencoded",
            "name=ad%00min&password=whatever-password&next=%2F",
        ))
        .await;
    assert_refused(&reply, "name", "sign-in form");
    assert!(!reply.headers.contains_key("set-cookie"));

    // Nothing was written.
    assert_eq!(app.project_count().await, projects);
    let commands = app.get(&format!("{P}/commands"), &t).await;
    assert_eq!(commands.status, StatusCode::OK);
    assert_eq!(commands.body["items"], json!([]), "no command was minted");
}

both_backends!(sign_in_returns_only_to_this_site,);

/// `next` after sign-in: a local path is followed; `/%09/evil.example` (a tab, which browsers
/// drop, making `//evil.example`) and every other way off the site become `/`.
async fn sign_in_returns_only_to_this_site(backend: Backend) {
    let app = TestApp::new(backend).await;
    let password = app.admin_password();
    let sign_in = |next: &str| {
        let body = format!(
            "name=admin&password={password}&next={}",
            // The form encodes what the hidden field holds; `%09` stays a tab once decoded.
            next.replace('%', "%25")
                .replace('\t', "%09")
                .replace('&', "%26")
        );
        request(
            Method::POST,
            "/login",
            None,
            "application/x-www-form-urlencoded",
            &body,
        )
    };
    for (next, location) in [
        ("/p/default", "/p/default"),
        ("/\t/evil.example", "/"),
        ("/%09/evil.example", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
    ] {
        let reply = app.send(sign_in(next)).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{next:?}: {reply:?}");
        assert_eq!(reply.headers["location"], location, "{next:?}");
        assert!(reply.headers.contains_key("set-cookie"), "{next:?}");
    }
    // The form page keeps only a local `next` in its hidden field.
    let page = app
        .send(
            Request::get("/login?next=/%09/evil.example")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let html = page.text();
    assert!(html.contains(r#"name="next" value="/""#), "{html}");
    assert!(!html.contains("evil.example"), "{html}");
}

both_backends!(serve_starts_after_dev_seed_made_the_default_project,);

/// `dev seed --project default` on a fresh data dir creates the project before any first
/// start; `serve` then completes the bootstrap around it (admin, token, password, membership)
/// instead of refusing to start.
async fn serve_starts_after_dev_seed_made_the_default_project(backend: Backend) {
    use crate::binary::{cli, serve, stdout};
    use crate::support::TestDb;

    let db = TestDb::for_binary(backend).await;
    let db = db.as_ref();
    let cwd = tempfile::tempdir().unwrap();
    let cwd = cwd.path();
    stdout(&cli(
        cwd,
        db,
        &["dev", "seed", "--tasks", "5", "--project", "default"],
    ));
    let mut server = serve(cwd, db);
    let data_dir = cwd.join("taskward-data");
    assert!(data_dir.join("admin.password").exists());
    let api = server.api();
    let project = api.get_json("/api/v1/projects/default").await;
    assert_eq!(project["role"], "admin", "{project}");
    let tasks = api.get_json("/api/v1/projects/default/tasks").await;
    assert_eq!(
        tasks["items"].as_array().unwrap().len(),
        5,
        "the seeded tasks stay"
    );
    let log = server.terminate();
    assert!(log.contains("First start"), "{log}");
    // Bootstrapped once: a restart does not do it again.
    let mut again = serve(cwd, db);
    assert!(!again.terminate().contains("First start"));
}

both_backends!(cancel_task_names_only_tasks_of_its_project,);

/// `cancel-task` never reaches another project's task: its id is 404 naming the task, and
/// nothing is minted. A task nobody has reported yet may be cancelled (a message still
/// queued is revoked before any worker takes it), and so may the project's own.
async fn cancel_task_names_only_tasks_of_its_project(backend: Backend) {
    let (app, t, here, there) = TestApp::with_two_projects(backend).await;
    app.seed_tasks("default", &here, &["mine"]).await;
    app.seed_tasks("other", &there, &["theirs"]).await;
    let cancel = async |task: &str| app.command_on_task(&t, "cancel-task", &here, task).await;
    for task in ["theirs"] {
        let reply = cancel(task).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{task}: {reply:?}");
        assert_eq!(reply.code(), "not_found");
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("task celery/{task}")),
            "{reply:?}"
        );
    }
    let commands = app.get(&format!("{P}/commands"), &t).await;
    assert_eq!(commands.body["items"], json!([]), "nothing was minted");
    for task in ["mine", "never-seen"] {
        let reply = cancel(task).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{task}: {reply:?}");
    }
}

/// An agent (or anything holding its session) sends a batch with an event time at the end of
/// time, a negative runtime and a dropped count past what the store can hold, beside one
/// honest update. Before, the time showed as 1970 and the count as 0; now the two updates
/// are skipped and counted, the count is left as it was, and the honest update is stored.
async fn implausible_updates_are_skipped_counted_and_the_rest_stored(backend: Backend) {
    use taskward_shared::events::{EventBatch, TaskState, TaskUpdate, Update};
    let app = TestApp::new(backend).await;
    let agent_id = app.create_agent("default", "host-a").await;
    let agent = {
        let id = agent_id.clone();
        app.store
            .read("test_agent", move |conn| {
                let project =
                    taskward_brain::store::projects::find(conn, &"default".parse().unwrap())?;
                taskward_brain::store::agents::find(conn, &project.id, &id)
            })
            .await
            .unwrap()
    };
    let now = chrono::Utc::now().timestamp_millis();
    let task = |id: &str, at_ms: i64, runtime_ms: Option<i64>| {
        Update::Task(Box::new(TaskUpdate {
            runtime_ms,
            ..celery_task(id, TaskState::Succeeded, at_ms)
        }))
    };
    let mut writer = taskward_brain::hub::ingest::start(app.state.clone(), agent);
    let batch = EventBatch {
        seq: 1,
        dropped_total: u64::MAX,
        updates: vec![
            task("end-of-time", i64::MAX, None),
            task("honest", now, Some(1500)),
            task("negative-runtime", now, Some(-5)),
        ],
    };
    writer.batches.send(batch).await.unwrap();
    let stored = writer.stored.recv().await.expect("a report");
    assert_eq!(stored, Ok(vec![1]), "the batch is acknowledged");

    let tasks = app.get(&format!("{P}/tasks"), &app.admin_token).await;
    let ids: Vec<&str> = tasks.texts("items", "task_id");
    assert_eq!(ids, ["honest"]);
    let agents = app.get(&format!("{P}/agents"), &app.admin_token).await;
    assert_eq!(agents.body["items"][0]["dropped_events"], json!(0));
    // The agent's record says what was refused, not only the brain's log and metrics.
    assert_eq!(agents.body["items"][0]["rejected_events"], json!(2));
    let why = agents.body["items"][0]["last_rejection"]
        .as_str()
        .unwrap_or_default();
    assert!(why.starts_with("task celery/end-of-time: "), "{why}");
    let metrics = app.get("/metrics", &app.admin_token).await;
    let text = metrics.text();
    assert!(
        text.contains("taskward_events_rejected_total{agent=\"host-a\"} 2"),
        "{text}"
    );
}

/// Enrollment writes the agent's key into the signed `agent.enrolled` row as sent; an
/// uppercase key there made the row fail a strict verifier. Refused, and the one-time token
/// still works for the right key.
async fn an_uppercase_agent_key_is_refused_and_the_token_kept(backend: Backend) {
    let app = TestApp::new(backend).await;
    let created = app
        .post(
            &format!("{P}/agents"),
            &app.admin_token,
            json!({"name": "host-u"}),
        )
        .await;
    let token = created.body["enrollment_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = taskward_shared::crypto::generate_signing_key();
    let public = hex::encode(key.verifying_key().to_bytes());
    let enroll = |public_key: String| json!({"enrollment_token": token, "public_key": public_key});
    let upper = app
        .post("/api/v1/agent/enroll", "", enroll(public.to_uppercase()))
        .await;
    assert_refused(&upper, "public_key", "uppercase hex");
    let lower = app.post("/api/v1/agent/enroll", "", enroll(public)).await;
    assert_eq!(lower.status, StatusCode::OK, "{lower:?}");
}

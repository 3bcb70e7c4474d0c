//! Deleting a project through cleanup tasks: the tree, progress in batches, the audit chain
//! kept and verifiable, a failing child retried with backoff then by an admin, the list with
//! its cursors, and who may see what.

use axum::http::StatusCode;
use serde_json::{Value, json};
use taskward_brain::background::run_cleanup_steps;
use taskward_shared::events::{TaskState, Update};

use crate::both_backends;
use crate::support::{Backend, TestApp, celery_task, unique};

both_backends!(
    deleting_a_project_runs_a_cleanup_tree,
    a_failing_child_is_retried,
    the_list_pages_both_ways_and_scopes_by_role,
);

const C: &str = "/api/v1/cleanup-tasks";

async fn seed_tasks(app: &TestApp, slug: &str, agent: &str, n: usize) {
    let updates: Vec<Update> = (0..n)
        .map(|i| {
            Update::Task(Box::new(celery_task(
                format!("t{i}"),
                TaskState::Succeeded,
                1,
            )))
        })
        .collect();
    for chunk in updates.chunks(5_000) {
        app.apply_updates(slug, agent, chunk.to_vec()).await;
    }
}

async fn task_count(app: &TestApp, project_id: &str) -> i64 {
    use diesel::prelude::*;
    use taskward_brain::store::schema::tasks;
    let id = project_id.to_owned();
    app.store
        .read("test_count", move |conn| {
            Ok(tasks::table
                .filter(tasks::project_id.eq(id))
                .count()
                .get_result::<i64>(conn)?)
        })
        .await
        .unwrap()
}

async fn deleting_a_project_runs_a_cleanup_tree(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    app.create_project("doomed").await;
    let project_id = app.get("/api/v1/projects/doomed", &t).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a1 = app.create_agent("doomed", "a1").await;
    app.create_agent("doomed", "a2").await;
    seed_tasks(&app, "doomed", &a1, 12_000).await;
    let issued = app
        .post(
            "/api/v1/projects/doomed/commands/cancel-task",
            &t,
            json!({"agent_id": a1, "engine": "celery", "task_id": "t1"}),
        )
        .await;
    assert_eq!(issued.status, StatusCode::ACCEPTED);

    let reply = app.delete("/api/v1/projects/doomed", &t).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let root = reply.body["id"].as_str().unwrap().to_owned();
    assert!(root.starts_with("ct_"));
    assert_eq!(reply.body["resourceType"], "delete_project");
    assert_eq!(reply.body["status"], "pending");
    // Gone from the API at once.
    assert_eq!(
        app.get("/api/v1/projects/doomed", &t).await.status,
        StatusCode::NOT_FOUND
    );
    let listed = app.get("/api/v1/projects", &t).await;
    assert!(!listed.body.to_string().contains("doomed"));

    // The tree: the root, one child per agent, one for the task records.
    let tree = app.get(&format!("{C}/{root}/tree"), &t).await;
    assert_eq!(tree.status, StatusCode::OK, "{}", tree.body);
    let kinds: Vec<&str> = tree
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert_eq!(kinds[0], "delete_project");
    assert_eq!(kinds.iter().filter(|k| **k == "delete_agent").count(), 2);
    let records = tree
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["resourceType"] == "delete_task_records")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let source = reply.body["sourceEventId"].as_str().unwrap().to_owned();
    let by_source = app
        .get(&format!("{C}?source_event_id={}", urlencode(&source)), &t)
        .await;
    assert_eq!(by_source.body["pageInfo"]["total"], 4, "{}", by_source.body);

    // Step by step, progress shows: the task records go in batches of 5,000.
    let mut seen_progress = Vec::new();
    for _ in 0..50 {
        // (The root waits a second between checks on its children; no need to here.)
        set_due_now(&app).await;
        if run_cleanup_steps(&app.state, 1).await.unwrap() == 0 {
            break;
        }
        let node = app.get(&format!("{C}/{records}"), &t).await;
        seen_progress.push(node.body["metadata"]["deleted"].as_u64().unwrap());
    }
    assert!(
        seen_progress.contains(&5_000) && seen_progress.contains(&10_000),
        "{seen_progress:?}"
    );
    assert_eq!(*seen_progress.iter().max().unwrap(), 12_000);
    let done = app.get(&format!("{C}/{root}"), &t).await;
    assert_eq!(done.body["status"], "completed", "{}", done.body);
    assert!(done.body["completedAt"].is_string());
    assert_eq!(task_count(&app, &project_id).await, 0);
    let tree = app.get(&format!("{C}/{root}/tree"), &t).await;
    assert!(
        tree.body
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == "completed")
    );
    // The slug is free again, and the old chain still verifies, with the deletion in it.
    app.create_project("doomed").await;
    let keys =
        taskward_shared::audit::verify::TrustedKeys::from_infos(&app.keys.public_keys()).unwrap();
    let chain = taskward_brain::store::audit::project_chain(&project_id);
    let store = app.store.clone();
    let verdict = tokio::task::spawn_blocking(move || {
        taskward_brain::audit::verify_live(&store, keys, &chain, None, |_| {})
    })
    .await
    .unwrap()
    .unwrap();
    assert!(verdict.is_ok(), "{verdict:?}");
}

async fn set_due_now(app: &TestApp) {
    use diesel::prelude::*;
    use taskward_brain::store::schema::cleanup_tasks;
    app.store
        .write("test_due", |conn| {
            diesel::update(cleanup_tasks::table)
                .set(cleanup_tasks::next_attempt_at.eq(0_i64))
                .execute(conn)?;
            Ok::<_, taskward_brain::store::StoreError>(())
        })
        .await
        .unwrap();
}

async fn a_failing_child_is_retried(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    app.create_project("sticky").await;
    app.create_agent("sticky", "stuck").await;
    // A real failure: the database refuses to delete this agent.
    let refuse: Vec<&str> = match backend {
        Backend::Sqlite => vec![
            "CREATE TRIGGER stuck BEFORE DELETE ON agents WHEN old.name = 'stuck' \
             BEGIN SELECT RAISE(ABORT, 'stuck on purpose'); END",
        ],
        Backend::Postgres => vec![
            "CREATE FUNCTION refuse_stuck() RETURNS trigger AS $$ BEGIN \
             IF OLD.name = 'stuck' THEN RAISE EXCEPTION 'stuck on purpose'; END IF; \
             RETURN OLD; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER stuck BEFORE DELETE ON agents FOR EACH ROW EXECUTE FUNCTION refuse_stuck()",
        ],
    };
    app.execute_sql(&refuse).await;
    let root = app.delete("/api/v1/projects/sticky", &t).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let child = |tree: &Value| {
        tree.as_array()
            .unwrap()
            .iter()
            .find(|n| n["resourceType"] == "delete_agent")
            .unwrap()
            .clone()
    };
    for _ in 0..10 {
        set_due_now(&app).await;
        run_cleanup_steps(&app.state, 10).await.unwrap();
    }
    let tree = app.get(&format!("{C}/{root}/tree"), &t).await.body;
    let stuck = child(&tree);
    assert_eq!(stuck["status"], "failed", "{stuck}");
    assert_eq!(stuck["attempts"], 5);
    assert!(
        stuck["lastError"]
            .as_str()
            .unwrap()
            .contains("stuck on purpose"),
        "{stuck}"
    );
    assert_eq!(
        tree[0]["status"], "pending",
        "the root waits for its children"
    );
    // Retrying what has not failed is a conflict; retrying the failed child works once fixed.
    assert_eq!(
        app.post(&format!("{C}/{root}/retry"), &t, json!({}))
            .await
            .status,
        StatusCode::CONFLICT
    );
    app.execute_sql(&[match backend {
        Backend::Sqlite => "DROP TRIGGER stuck",
        Backend::Postgres => "DROP TRIGGER stuck ON agents",
    }])
    .await;
    let id = stuck["id"].as_str().unwrap();
    let retried = app.post(&format!("{C}/{id}/retry"), &t, json!({})).await;
    assert_eq!(
        (retried.status, retried.body.clone()),
        (StatusCode::OK, json!({"ok": true}))
    );
    for _ in 0..5 {
        set_due_now(&app).await;
        run_cleanup_steps(&app.state, 10).await.unwrap();
    }
    let tree = app.get(&format!("{C}/{root}/tree"), &t).await.body;
    assert!(
        tree.as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == "completed"),
        "{tree}"
    );
}

async fn the_list_pages_both_ways_and_scopes_by_role(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    let admin = unique("padmin");
    let admin_token = app.create_user(&admin, false).await;
    let viewer = unique("viewer");
    let viewer_token = app.create_user(&viewer, false).await;
    for slug in ["p1", "p2", "p3"] {
        app.create_project(slug).await;
        app.create_agent(slug, "host").await;
    }
    app.add_member("p1", &admin, "admin").await;
    app.add_member("p1", &viewer, "viewer").await;
    let mut roots = Vec::new();
    for slug in ["p1", "p2", "p3"] {
        roots.push(
            app.delete(&format!("/api/v1/projects/{slug}"), &t)
                .await
                .body["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // 3 trees of 3 tasks. Pages of 2 forwards, then backwards from the end.
    let mut forward = Vec::new();
    let mut after: Option<String> = None;
    let last_start = loop {
        let path = match &after {
            Some(c) => format!("{C}?limit=2&after={c}"),
            None => format!("{C}?limit=2"),
        };
        let page = app.get(&path, &t).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(page.body["pageInfo"]["total"], 9);
        assert_eq!(page.body["pageInfo"]["hasPreviousPage"], after.is_some());
        forward.extend(page.texts("data", "id").into_iter().map(str::to_owned));
        if page.body["pageInfo"]["hasNextPage"] == false {
            break page.body["pageInfo"]["startCursor"]
                .as_str()
                .map(str::to_owned);
        }
        after = page.body["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_owned);
    };
    assert_eq!(forward.len(), 9);
    let mut backward = Vec::new();
    let mut before = last_start;
    while let Some(c) = before {
        let page = app.get(&format!("{C}?limit=2&before={c}"), &t).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let ids = page.texts("data", "id").into_iter().map(str::to_owned);
        backward.splice(0..0, ids);
        before = (page.body["pageInfo"]["hasPreviousPage"] == true).then(|| {
            page.body["pageInfo"]["startCursor"]
                .as_str()
                .unwrap()
                .to_owned()
        });
    }
    assert_eq!(
        backward,
        forward[..forward.len() - 1],
        "before walks back to the start"
    );
    // Filters, the grammar, and their errors.
    let roots_only = app
        .get(&format!("{C}?resource_type=delete_project"), &t)
        .await;
    assert_eq!(roots_only.body["pageInfo"]["total"], 3);
    let filtered = app
        .get(
            &format!(
                "{C}?filter={}",
                urlencode(r#"{"parent": {"resourceType": {"eq": "delete_project"}}}"#)
            ),
            &t,
        )
        .await;
    assert_eq!(filtered.body["pageInfo"]["total"], 6, "{}", filtered.body);
    let by_ids = app
        .get(&format!("{C}?ids={},{}", roots[0], roots[1]), &t)
        .await;
    assert_eq!(by_ids.body["pageInfo"]["total"], 2);
    app.assert_queries_name_fields(
        C,
        &t,
        &[
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("status=done", "status"),
            ("resource_type=delete_everything", "resource_type"),
            ("after=forged", "after"),
            ("filter=%7B%22nope%22%3A1%7D", "filter.nope"),
        ],
    )
    .await;
    assert_eq!(
        app.get(&format!("{C}?limit=100"), &t).await.status,
        StatusCode::OK
    );
    // A project admin sees that project's tasks only; a viewer sees none; neither reaches
    // another project's task, by id, tree or retry.
    let own = app.get(C, &admin_token).await;
    assert_eq!(own.body["pageInfo"]["total"], 3, "{}", own.body);
    assert_eq!(app.get(C, &viewer_token).await.body["pageInfo"]["total"], 0);
    for path in [
        format!("{C}/{}", roots[1]),
        format!("{C}/{}/tree", roots[1]),
    ] {
        assert_eq!(
            app.get(&path, &admin_token).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(
        app.get(&format!("{C}/{}", roots[0]), &viewer_token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(&format!("{C}/{}/retry", roots[1]), &admin_token, json!({}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get(C, "").await.status, StatusCode::UNAUTHORIZED);
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

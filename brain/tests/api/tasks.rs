//! The tasks list, detail and tree: every parameter and bound, the filter and orderBy grammar,
//! keyset paging under every nulls variant while rows are inserted, and project isolation.

use std::collections::{BTreeSet, HashMap};

use axum::http::StatusCode;
use serde_json::{Value, json};
use taskward_shared::events::{TaskState, TaskUpdate, Update, WorkerUpdate};

use crate::both_backends;
use crate::support::{Backend, TestApp, celery_task};

both_backends!(
    parameters_and_bounds,
    the_grammar_selects_the_right_tasks,
    keyset_pages_are_exact_under_every_order,
    projects_never_see_each_other,
    trees_walk_to_the_root_and_cap_at_500,
    bulk_delete_follows_the_rules,
    bulk_delete_is_rate_limited,
    exports_parse_back_to_the_list,
    search_matches_text_through_its_index,
    the_common_sort_keys_are_read_off_an_index,
    a_runaway_filter_is_stopped_at_its_budget,
);

const P: &str = "/api/v1/projects/default/tasks";

/// A task update; `i` spreads names, queues, times and nulls over the rows.
fn task(id: &str, i: i64) -> Update {
    Update::Task(Box::new(TaskUpdate {
        engine: "celery".into(),
        task_id: id.to_owned(),
        state: Some(match i % 3 {
            0 => TaskState::Succeeded,
            1 => TaskState::Failed,
            _ => TaskState::Started,
        }),
        at_ms: 1_800_000_000_000 + i * 1000,
        name: (i % 5 != 0)
            .then(|| format!("app.{}", ["add", "mail", "Mail", "zip"][i as usize % 4])),
        queue: (i % 4 != 0).then(|| ["default", "emails", "Émails"][i as usize % 3].to_owned()),
        worker: Some(format!("w{}@host", i % 2)),
        retries: Some((i % 4) as i32),
        runtime_ms: (i % 6 != 0).then_some(i % 7),
        ..TaskUpdate::default()
    }))
}

/// A received event, so `received_at` is set (left null on every 7th task).
fn received(id: &str, i: i64) -> Option<Update> {
    (i % 7 != 0).then(|| {
        Update::Task(Box::new(TaskUpdate {
            engine: "celery".into(),
            task_id: id.to_owned(),
            state: Some(TaskState::Received),
            // Ties on purpose: pairs share a time.
            at_ms: 1_700_000_000_000 + (i / 2) * 1000,
            ..TaskUpdate::default()
        }))
    })
}

async fn seed(app: &TestApp, slug: &str, agent: &str, prefix: &str, n: i64) -> Vec<String> {
    let mut updates = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}{i:04}");
        updates.push(task(&id, i));
        updates.extend(received(&id, i));
        ids.push(id);
    }
    app.apply_updates(slug, agent, updates).await;
    ids
}

fn query(params: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    format!("{P}?{}", q.finish())
}

fn ids(reply: &crate::support::Reply) -> Vec<String> {
    reply
        .texts("items", "task_id")
        .into_iter()
        .map(str::to_owned)
        .collect()
}

async fn parameters_and_bounds(backend: Backend) {
    let (app, t, agent) = TestApp::with_agent(backend).await;
    seed(&app, "default", &agent, "t", 12).await;

    let ok = |params: &[(&str, &str)]| query(params);
    for (params, expected) in [
        (vec![("limit", "1")], 1),
        (vec![("limit", "5000")], 12),
        (vec![], 12),
        (vec![("state", "failed")], 4),
        (vec![("name", "app.mail")], 2),
        (vec![("queue", "emails")], 3),
        (vec![("worker", "w1@host")], 6),
        (vec![("priority", "5,7")], 0),
        (vec![("since", "2023-11-14T22:13:23Z")], 5),
        (vec![("until", "2023-11-14T22:13:22Z")], 5),
    ] {
        let reply = app.get(&ok(&params), &t).await;
        assert_eq!(reply.status, StatusCode::OK, "{params:?}: {}", reply.body);
        assert_eq!(ids(&reply).len(), expected, "{params:?}: {}", reply.body);
    }
    for (params, field) in [
        (vec![("limit", "0")], "limit"),
        (vec![("limit", "5001")], "limit"),
        (vec![("state", "done")], "state"),
        (vec![("since", "yesterday")], "since"),
        (vec![("until", "2026-13-01T00:00:00Z")], "until"),
        (vec![("priority", ",")], "priority"),
        (vec![("fields", "task_id,secret")], "fields"),
        (vec![("fields", ",")], "fields"),
        (vec![("filter", "{not json")], "filter"),
        (
            vec![("filter", r#"{"state": {"like": "x"}}"#)],
            "filter.state.like",
        ),
        (
            vec![("orderBy", r#"[{"state": "sideways"}]"#)],
            "orderBy[0].state",
        ),
        (vec![("cursor", "forged")], "cursor"),
        (vec![("bogus", "1")], "bogus"),
    ] {
        let reply = app.get(&ok(&params), &t).await;
        reply.assert_names_field(field, &format!("{params:?}"));
    }
    // A projection keeps only the fields asked for.
    let reply = app
        .get(&ok(&[("fields", "task_id,state"), ("limit", "2")]), &t)
        .await;
    let item = reply.body["items"][0].as_object().unwrap();
    assert_eq!(item.keys().collect::<Vec<_>>(), ["state", "task_id"]);
    // The full shape of a task.
    let one = app.get(&format!("{P}/celery/t0001"), &t).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    for key in taskward_brain::api::tasks::TASK_FIELDS {
        assert!(one.body.get(key).is_some(), "{key} missing: {}", one.body);
    }
    assert_eq!(one.body["received_at"], "2023-11-14T22:13:20Z");
    assert_eq!(
        app.get(&format!("{P}/celery/nope"), &t).await.status,
        StatusCode::NOT_FOUND
    );
    // A cursor only works with the query that made it.
    let first = app
        .get(&ok(&[("limit", "2"), ("state", "failed")]), &t)
        .await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let other = app
        .get(
            &ok(&[("limit", "2"), ("state", "succeeded"), ("cursor", &cursor)]),
            &t,
        )
        .await;
    assert_eq!(other.field(), Some("cursor"), "{}", other.body);
}

async fn the_grammar_selects_the_right_tasks(backend: Backend) {
    let (app, t, agent) = TestApp::with_agent(backend).await;
    seed(&app, "default", &agent, "g", 30).await;
    // A parent/child pair and a worker with a pool.
    app.apply_updates(
        "default",
        &agent,
        vec![
            Update::Task(Box::new(TaskUpdate {
                parent_id: Some("g0003".into()),
                ..celery_task("child", TaskState::Succeeded, 1)
            })),
            Update::Worker(WorkerUpdate {
                name: "w1@host".into(),
                online: true,
                at_ms: 1,
                pool: Some("prefork".into()),
                ..WorkerUpdate::default()
            }),
        ],
    )
    .await;
    let rows: Vec<Value> = app.get(&query(&[("limit", "5000")]), &t).await.body["items"]
        .as_array()
        .unwrap()
        .clone();
    let select = |pred: &dyn Fn(&Value) -> bool| -> BTreeSet<String> {
        rows.iter()
            .filter(|r| pred(r))
            .map(|r| r["task_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let s = |r: &Value, k: &str| r[k].as_str().map(str::to_owned);
    let cases: Vec<(Value, BTreeSet<String>)> = vec![
        (
            json!({"name": {"startsWith": "app.m"}}),
            select(&|r| s(r, "name").is_some_and(|n| n.starts_with("app.m"))),
        ),
        (
            json!({"name": {"startsWith": "app.mail"}}),
            select(&|r| s(r, "name").as_deref() == Some("app.mail")),
        ),
        (
            json!({"name": {"startsWith": "app.M"}}),
            select(&|r| s(r, "name").as_deref() == Some("app.Mail")),
        ),
        (
            json!({"name": {"startsWith": "app.\u{10FFFF}"}}),
            BTreeSet::new(),
        ),
        (
            json!({"queue": {"startsWith": "É"}}),
            select(&|r| s(r, "queue").as_deref() == Some("Émails")),
        ),
        (
            json!({"name": {"contains": "ail"}}),
            select(&|r| s(r, "name").is_some_and(|n| n.contains("ail"))),
        ),
        (
            json!({"queue": {"endsWith": "mails"}}),
            select(&|r| s(r, "queue").is_some_and(|n| n.ends_with("mails"))),
        ),
        (
            json!({"OR": [{"name": {"isNull": true}}, {"retry_count": {"gte": 3}}]}),
            select(&|r| r["name"].is_null() || r["retry_count"].as_i64().unwrap() >= 3),
        ),
        (
            json!({"NOT": {"state": {"in": ["failed", "started"]}}}),
            select(&|r| !["failed", "started"].contains(&r["state"].as_str().unwrap())),
        ),
        (
            json!({"AND": [{"runtime_ms": {"lt": 3}}, {"queue": {"ne": "default"}}]}),
            select(&|r| {
                r["runtime_ms"].as_i64().is_some_and(|m| m < 3)
                    && s(r, "queue").is_some_and(|q| q != "default")
            }),
        ),
        (
            json!({"received_at": {"gte": "2023-11-14T22:13:25Z"}, "name": {"notIn": ["app.zip"]}}),
            select(&|r| {
                s(r, "received_at").is_some_and(|t| t.as_str() >= "2023-11-14T22:13:25")
                    && s(r, "name").is_some_and(|n| n != "app.zip")
            }),
        ),
        (
            json!({"worker": {"pool": {"eq": "prefork"}}}),
            select(&|r| s(r, "worker_name").as_deref() == Some("w1@host")),
        ),
        (
            json!({"parent": {"task_id": {"eq": "g0003"}}}),
            BTreeSet::from(["child".to_owned()]),
        ),
        (
            json!({"agent": {"name": {"eq": "host"}}, "task_id": {"in": ["g0001", "child"]}}),
            BTreeSet::from(["g0001".to_owned(), "child".to_owned()]),
        ),
        (json!({}), select(&|_| true)),
    ];
    for (filter, expected) in cases {
        let reply = app
            .get(
                &query(&[("filter", &filter.to_string()), ("limit", "5000")]),
                &t,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{filter}: {}", reply.body);
        let got: BTreeSet<String> = ids(&reply).into_iter().collect();
        assert_eq!(got, expected, "{filter}");
    }
}

/// A sort key as the test spells it: field, descending, nulls first.
type Key<'a> = (&'a str, bool, bool);

/// The order a client asked for, computed here the way the API promises it: bytewise text,
/// explicit nulls, ties broken by row id in the first key's direction.
fn expected_order(rows: &[Value], keys: &[Key]) -> Vec<String> {
    let mut rows = rows.to_vec();
    let first_desc = keys.first().is_some_and(|k| k.1);
    rows.sort_by(|a, b| {
        for (field, desc, nulls_first) in keys {
            let (x, y) = (&a[*field], &b[*field]);
            let ord = match (x.is_null(), y.is_null()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => {
                    if *nulls_first {
                        std::cmp::Ordering::Less
                    } else {
                        std::cmp::Ordering::Greater
                    }
                }
                (false, true) => {
                    if *nulls_first {
                        std::cmp::Ordering::Greater
                    } else {
                        std::cmp::Ordering::Less
                    }
                }
                _ => {
                    let o = match (x.as_i64(), y.as_i64()) {
                        (Some(i), Some(j)) => i.cmp(&j),
                        _ => x
                            .as_str()
                            .unwrap()
                            .as_bytes()
                            .cmp(y.as_str().unwrap().as_bytes()),
                    };
                    if *desc { o.reverse() } else { o }
                }
            };
            if ord != std::cmp::Ordering::Equal {
                return ord;
            }
        }
        let o = a["id"].as_str().unwrap().cmp(b["id"].as_str().unwrap());
        if first_desc { o.reverse() } else { o }
    });
    rows.iter()
        .map(|r| r["task_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn keyset_pages_are_exact_under_every_order(backend: Backend) {
    let (app, t, agent) = TestApp::with_agent(backend).await;
    let seeded = seed(&app, "default", &agent, "k", 90).await;
    let all: Vec<Value> = app.get(&query(&[("limit", "5000")]), &t).await.body["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(all.len(), seeded.len());
    // (orderBy, the same as (field, descending, nulls first)); plain asc/desc put nulls where
    // the smallest value goes.
    let orders: Vec<(&str, Vec<Key>)> = vec![
        ("[]", vec![]),
        (r#"[{"name": "asc"}]"#, vec![("name", false, true)]),
        (r#"[{"name": "desc"}]"#, vec![("name", true, false)]),
        (
            r#"[{"queue": "asc_nulls_first"}, {"received_at": "desc"}]"#,
            vec![("queue", false, true), ("received_at", true, false)],
        ),
        (
            r#"[{"queue": "asc_nulls_last"}, {"name": "desc_nulls_last"}]"#,
            vec![("queue", false, false), ("name", true, false)],
        ),
        (
            r#"[{"received_at": "desc_nulls_first"}]"#,
            vec![("received_at", true, true)],
        ),
        (
            r#"[{"received_at": "asc_nulls_last"}]"#,
            vec![("received_at", false, false)],
        ),
        (
            r#"[{"runtime_ms": "desc_nulls_last"}, {"state": "asc"}]"#,
            vec![("runtime_ms", true, false), ("state", false, true)],
        ),
        (
            r#"[{"retry_count": "asc"}, {"name": "asc_nulls_first"}, {"queue": "desc"}]"#,
            vec![
                ("retry_count", false, true),
                ("name", false, true),
                ("queue", true, false),
            ],
        ),
    ];
    let mut extra = 0;
    for (order_by, keys) in orders {
        let expected = expected_order(&all, &keys);
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut params = vec![("limit", "7"), ("orderBy", order_by)];
            if let Some(c) = &cursor {
                params.push(("cursor", c));
            }
            let reply = app.get(&query(&params), &t).await;
            assert_eq!(reply.status, StatusCode::OK, "{order_by}: {}", reply.body);
            seen.extend(ids(&reply));
            // Rows arrive while the client pages.
            let fresh = format!("new{extra:04}");
            app.apply_updates(
                "default",
                &agent,
                [task(&fresh, extra)]
                    .into_iter()
                    .chain(received(&fresh, extra))
                    .collect(),
            )
            .await;
            extra += 1;
            match reply.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let originals: Vec<String> = seen
            .iter()
            .filter(|id| id.starts_with('k'))
            .cloned()
            .collect();
        assert_eq!(
            originals, expected,
            "{order_by}: pages differ from the promised order"
        );
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "{order_by}: a row came twice");
    }
}

async fn projects_never_see_each_other(backend: Backend) {
    let (app, t, here, there) = TestApp::with_two_projects(backend).await;
    seed(&app, "default", &here, "mine", 3).await;
    seed(&app, "other", &there, "theirs", 3).await;
    // The same engine task id in both projects: each sees its own.
    app.apply_updates("other", &there, vec![task("mine0001", 5)])
        .await;
    let list = app.get(&query(&[]), &t).await;
    assert!(
        ids(&list).iter().all(|id| id.starts_with("mine")),
        "{}",
        list.body
    );
    let filtered = app
        .get(
            &query(&[("filter", r#"{"task_id": {"startsWith": "theirs"}}"#)]),
            &t,
        )
        .await;
    assert!(ids(&filtered).is_empty());
    for path in ["celery/theirs0001", "celery/theirs0001/tree"] {
        assert_eq!(
            app.get(&format!("{P}/{path}"), &t).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let mine = app.get(&format!("{P}/celery/mine0001"), &t).await;
    assert_eq!(mine.body["name"], "app.mail", "{}", mine.body);
    // Exports hold only this project's rows.
    let csv = app.get(&query(&[("format", "csv")]), &t).await;
    let text = String::from_utf8_lossy(&csv.bytes);
    assert!(
        text.contains("mine0002") && !text.contains("theirs"),
        "{text}"
    );
    // A cursor from another project's list is refused.
    let theirs = app.get("/api/v1/projects/other/tasks?limit=1", &t).await;
    let cursor = theirs.body["next_cursor"].as_str().unwrap().to_owned();
    let reused = app
        .get(&query(&[("limit", "1"), ("cursor", &cursor)]), &t)
        .await;
    assert_eq!(reused.field(), Some("cursor"), "{}", reused.body);
    // A viewer of only the other project cannot read this one at all.
    let viewer = app.create_user("outsider", false).await;
    app.add_member("other", "outsider", "viewer").await;
    assert_eq!(
        app.get(&query(&[]), &viewer).await.status,
        StatusCode::NOT_FOUND
    );
}

async fn trees_walk_to_the_root_and_cap_at_500(backend: Backend) {
    let (app, t, agent) = TestApp::with_agent(backend).await;
    let node = |id: &str, parent: Option<&str>, root: Option<&str>, at: i64| {
        Update::Task(Box::new(TaskUpdate {
            parent_id: parent.map(str::to_owned),
            root_id: root.map(str::to_owned),
            ..celery_task(id, TaskState::Received, at)
        }))
    };
    app.apply_updates(
        "default",
        &agent,
        vec![
            // Celery names a top-level task its own root.
            node("root", None, Some("root"), 1),
            node("a", Some("root"), Some("root"), 2),
            node("b", Some("a"), Some("root"), 3),
            // A retry issued through Taskward: parent = the original, same root.
            node("b-retry", Some("b"), Some("root"), 4),
            node("elsewhere", None, None, 5),
        ],
    )
    .await;
    let tree = app.get(&format!("{P}/celery/b/tree"), &t).await;
    assert_eq!(tree.status, StatusCode::OK, "{}", tree.body);
    assert_eq!(tree.body["root_task_id"], "root");
    assert_eq!(tree.body["truncated"], false);
    let got: Vec<&str> = tree.texts("items", "task_id");
    assert_eq!(got, ["root", "a", "b", "b-retry"]);
    let parents: HashMap<&str, &str> = tree.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| Some((t["task_id"].as_str()?, t["parent_task_id"].as_str()?)))
        .collect();
    assert_eq!(parents["b-retry"], "b");

    // 500 share a root: all of them; 501: the first 500 and `truncated`.
    let wide = |n: usize| {
        (0..n)
            .map(|i| {
                node(
                    &format!("leaf{i:04}"),
                    Some("big"),
                    Some("big"),
                    10 + i as i64,
                )
            })
            .collect::<Vec<_>>()
    };
    app.apply_updates("default", &agent, wide(499)).await;
    app.apply_updates("default", &agent, vec![node("big", None, Some("big"), 9)])
        .await;
    let full = app.get(&format!("{P}/celery/leaf0003/tree"), &t).await;
    assert_eq!(full.count("items"), 500);
    assert_eq!(full.body["truncated"], false);
    app.apply_updates(
        "default",
        &agent,
        vec![node("leaf0499", Some("big"), Some("big"), 9999)],
    )
    .await;
    let capped = app.get(&format!("{P}/celery/big/tree"), &t).await;
    assert_eq!(capped.count("items"), 500);
    assert_eq!(capped.body["truncated"], true);
}

async fn bulk_delete_follows_the_rules(backend: Backend) {
    let app = TestApp::new(backend).await;
    let t = app.admin_token.clone();
    app.create_project("other").await;
    let agent = app.create_agent("default", "host").await;
    let there = app.create_agent("other", "there").await;
    // d0000..d0011: i % 3 == 2 are started (in flight), the rest finished.
    seed(&app, "default", &agent, "d", 12).await;
    seed(&app, "other", &there, "x", 2).await;
    let delete = |body: Value| {
        let app = &app;
        let t = t.clone();
        async move { app.post(&format!("{P}/bulk-delete"), &t, body).await }
    };
    let count = || async { ids(&app.get(&query(&[("limit", "5000")]), &t).await).len() };
    let many: Vec<String> = (0..1001).map(|i| format!("id{i}")).collect();
    for (body, field) in [
        (json!({}), "task_ids"),
        (json!({"task_ids": []}), "task_ids"),
        (json!({"task_ids": many}), "task_ids"),
        (
            json!({"task_ids": ["d0000"], "filter_state": "failed"}),
            "task_ids",
        ),
        (json!({"task_ids": ["d0000", ""]}), "task_ids[1]"),
        (json!({"filter_state": "gone"}), "filter_state"),
        (json!({"filter_since": "soon"}), "filter_since"),
        (json!({"bogus": 1}), "bogus"),
    ] {
        let reply = delete(body.clone()).await;
        reply.assert_names_field(field, &body.to_string());
    }
    assert_eq!(count().await, 12, "a refused delete changed something");
    // 1000 ids is the edge: accepted by the bound (then 404 for the unknown ones).
    let thousand: Vec<String> = (0..1000).map(|i| format!("id{i}")).collect();
    assert_eq!(
        delete(json!({"task_ids": thousand})).await.status,
        StatusCode::NOT_FOUND
    );
    // All or nothing: an unknown id (or another project's) is 404 naming it.
    let reply = delete(json!({"task_ids": ["d0000", "x0000", "nope"]})).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("x0000") && message.contains("nope"),
        "{message}"
    );
    assert!(!message.contains("d0000"), "{message}");
    // In flight: 400 naming them.
    let reply = delete(json!({"task_ids": ["d0000", "d0002", "d0005"]})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("d0002") && message.contains("d0005"),
        "{message}"
    );
    assert_eq!(count().await, 12, "a refused delete changed something");
    // Finished tasks go.
    let reply = delete(json!({"task_ids": ["d0000", "d0001"]})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, json!({"deleted_count": 2}));
    assert_eq!(count().await, 10);
    // Filter mode: what matches and is not in flight.
    let reply = delete(json!({"filter_name": "app.zip"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // app.zip: i % 4 == 3 and i % 5 != 0 -> 3, 7, 11; 11 is started.
    assert_eq!(
        reply.body,
        json!({"deleted_count": 2, "skipped_in_flight": 1})
    );
    assert_eq!(count().await, 8);
    // The other project is untouched, and each deletion is in the audit log.
    let other = app.get("/api/v1/projects/other/tasks", &t).await;
    assert_eq!(ids(&other).len(), 2);
    let audit = app
        .get("/api/v1/projects/default/audit?limit=1000", &t)
        .await;
    let deletions: Vec<&Value> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "tasks.deleted")
        .collect();
    assert_eq!(deletions.len(), 2, "{}", audit.body);
    let payload = |row: &Value| row["statement"]["payload"].clone();
    assert_eq!(payload(deletions[0])["task_ids"], json!(["d0000", "d0001"]));
    assert_eq!(payload(deletions[1])["filter"]["filter_name"], "app.zip");
    assert_eq!(payload(deletions[1])["deleted_count"], 2);
    // Operators may not delete.
    let op_token = app.create_operator().await;
    let refused = app
        .post(
            &format!("{P}/bulk-delete"),
            &op_token,
            json!({"task_ids": ["d0003"]}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}

async fn bulk_delete_is_rate_limited(backend: Backend) {
    let app = TestApp::with_tight_bulk_limit(backend).await;
    let t = app.admin_token.clone();
    let body = json!({"filter_state": "failed"});
    for _ in 0..2 {
        let reply = app
            .post(&format!("{P}/bulk-delete"), &t, body.clone())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let limited = app.post(&format!("{P}/bulk-delete"), &t, body).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key("retry-after"));
}

async fn exports_parse_back_to_the_list(backend: Backend) {
    let (app, t, agent) = TestApp::with_agent(backend).await;
    // More than one export page (1000 rows), plus a formula and redacted arguments.
    seed(&app, "default", &agent, "e", 2100).await;
    app.apply_updates(
        "default",
        &agent,
        vec![Update::Task(Box::new(TaskUpdate {
            name: Some("=HYPERLINK(\"http://x\")".into()),
            exception: Some("-1+2".into()),
            kwargs: Some(json!({"password": "<redacted>", "to": "<email>"})),
            ..celery_task("evil", TaskState::Failed, 1)
        }))],
    )
    .await;
    let list: Vec<Value> = app
        .get(&query(&[("limit", "5000"), ("state", "failed")]), &t)
        .await
        .body["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(list.len(), 701);
    let columns = [
        "task_id",
        "name",
        "state",
        "kwargs",
        "retry_count",
        "received_at",
        "exception",
    ];
    let fields = columns.join(",");
    let export = |format: &'static str| {
        let (app, t, fields) = (&app, t.clone(), fields.clone());
        async move {
            let reply = app
                .get(
                    &query(&[
                        ("format", format),
                        ("state", "failed"),
                        ("fields", &fields),
                        ("limit", "1"),
                    ]),
                    &t,
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{format}: {}", reply.body);
            let disposition = reply.headers["content-disposition"]
                .to_str()
                .unwrap()
                .to_owned();
            assert_eq!(
                disposition,
                format!("attachment; filename=\"tasks-default.{format}\"")
            );
            reply
        }
    };
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => taskward_brain::export::neutralise(s).into_owned(),
        Value::Number(n) => n.to_string(),
        other => taskward_brain::export::neutralise(&other.to_string()).into_owned(),
    };

    // CSV, read back with the csv crate: the same rows in the same order, formulas defused.
    let csv_reply = export("csv").await;
    let mut reader = csv::Reader::from_reader(csv_reply.bytes.as_ref());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        columns
    );
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(
        rows.len(),
        list.len(),
        "the limit does not apply to exports"
    );
    for (row, item) in rows.iter().zip(&list) {
        let expected: Vec<String> = columns.iter().map(|c| text(&item[*c])).collect();
        assert_eq!(row, &expected);
    }
    let evil = rows.iter().find(|r| r[0] == "evil").unwrap();
    assert!(evil[1].starts_with("'="), "{evil:?}");
    assert!(evil[6].starts_with("'-"), "{evil:?}");
    assert!(
        evil[3].contains("<redacted>"),
        "redacted values stay redacted"
    );

    // JSON: the list's items, projected.
    let json_reply = export("json").await;
    let exported: Vec<Value> = serde_json::from_slice(&json_reply.bytes).unwrap();
    let projected: Vec<Value> = list
        .iter()
        .map(|item| {
            Value::Object(
                columns
                    .iter()
                    .map(|c| ((*c).to_owned(), item[*c].clone()))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(exported, projected);

    // XLSX, read back with calamine.
    let xlsx_reply = export("xlsx").await;
    use calamine::Reader;
    let mut book = calamine::Xlsx::new(std::io::Cursor::new(xlsx_reply.bytes.to_vec())).unwrap();
    let sheet = book.worksheet_range("Sheet1").unwrap();
    let cells: Vec<Vec<String>> = sheet
        .rows()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
    assert_eq!(cells[0], columns);
    assert_eq!(cells.len() - 1, list.len());
    for (row, item) in cells[1..].iter().zip(&list) {
        let expected: Vec<String> = columns.iter().map(|c| text(&item[*c])).collect();
        assert_eq!(row, &expected);
    }

    let bad = app.get(&query(&[("format", "pdf")]), &t).await;
    assert_eq!(
        (bad.status, bad.field()),
        (StatusCode::BAD_REQUEST, Some("format"))
    );
}

/// Every task a search lists, read in pages of 3 through the cursors.
async fn search_pages(app: &TestApp, token: &str, term: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = vec![("search", term), ("limit", "3")];
        if let Some(c) = &cursor {
            params.push(("cursor", c));
        }
        let reply = app.get(&query(&params), token).await;
        assert_eq!(reply.status, StatusCode::OK, "{term}: {}", reply.body);
        all.extend(ids(&reply));
        match reply.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return all,
        }
    }
}

async fn search_matches_text_through_its_index(backend: Backend) {
    let (app, t, agent) = TestApp::with_agent(backend).await;
    seed(&app, "default", &agent, "s", 40).await;
    let all: Vec<Value> = app.get(&query(&[("limit", "5000")]), &t).await.body["items"]
        .as_array()
        .unwrap()
        .clone();
    let expect = |term: &str| -> BTreeSet<String> {
        let term = term.to_lowercase();
        all.iter()
            .filter(|r| {
                ["name", "queue", "worker_name"].iter().any(|f| {
                    r[*f]
                        .as_str()
                        .is_some_and(|v| v.to_lowercase().contains(&term))
                })
            })
            .map(|r| r["task_id"].as_str().unwrap().to_owned())
            .collect()
    };
    for term in [
        "MAIL",
        "app.z",
        "w1@h",
        "efau",
        "mails",
        "nothing-like-it",
        "a%d",
        "x\"y",
    ] {
        let reply = app
            .get(&query(&[("search", term), ("limit", "5000")]), &t)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{term}: {}", reply.body);
        let listed = ids(&reply);
        let got: BTreeSet<String> = listed.iter().cloned().collect();
        assert_eq!(got, expect(term), "{term}");
        // A task matching in two columns (name and queue) is listed once.
        assert_eq!(listed.len(), got.len(), "{term}: {listed:?}");
        // Small pages, followed by their cursors, give the same list in the same order.
        assert_eq!(search_pages(&app, &t, term).await, listed, "{term}");
    }
    assert!(!expect("MAIL").is_empty() && !expect("w1@h").is_empty());
    // A text matching more values than get one index range each (here 40 names) is answered
    // by walking the list: the same rows, the same paging.
    let broad: Vec<Update> = (0..40)
        .map(|i| {
            Update::Task(Box::new(TaskUpdate {
                name: Some(format!("app.broad{i}")),
                ..celery_task(
                    format!("b{i:04}"),
                    TaskState::Received,
                    1_750_000_000_000 + (i / 3) * 1000,
                )
            }))
        })
        .collect();
    app.apply_updates("default", &agent, broad).await;
    let reply = app
        .get(&query(&[("search", "BROAD"), ("limit", "5000")]), &t)
        .await;
    let listed = ids(&reply);
    let expected: BTreeSet<String> = (0..40).map(|i| format!("b{i:04}")).collect();
    assert_eq!(listed.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(listed.len(), 40);
    assert_eq!(search_pages(&app, &t, "BROAD").await, listed);
    // Renamed tasks are found by their new name only.
    app.apply_updates(
        "default",
        &agent,
        vec![Update::Task(Box::new(TaskUpdate {
            engine: "celery".into(),
            task_id: "s0001".into(),
            at_ms: 2_000_000_000_000,
            name: Some("app.renamed".into()),
            ..TaskUpdate::default()
        }))],
    )
    .await;
    let renamed = app.get(&query(&[("search", "renamed")]), &t).await;
    assert_eq!(ids(&renamed), ["s0001"]);
    // The bounds at their edges: 3 and 200 characters are searched, 2 and 201 refused.
    for edge in ["add", &"x".repeat(200)] {
        let reply = app.get(&query(&[("search", edge)]), &t).await;
        assert_eq!(reply.status, StatusCode::OK, "{edge}: {}", reply.body);
    }
    for bad in ["ab", &"x".repeat(201), "a\u{7}bc"] {
        let reply = app.get(&query(&[("search", bad)]), &t).await;
        assert_eq!(
            (reply.status, reply.field()),
            (StatusCode::BAD_REQUEST, Some("search"))
        );
    }
    // The database answers through the search index, not by reading every task of the
    // project (with enough of them that reading them all would cost more).
    seed(&app, "default", &agent, "bulk", 3000).await;
    let plan = explain_page(&app, Some("renamed"), json!([])).await;
    // The matching value was found in the terms (through the trigram index), and the tasks
    // are reached through their column's index. (At this size PostgreSQL would rather scan,
    // so its plan is taken with sequential scans off: what matters is that the index can
    // answer.)
    assert!(
        plan.contains("tasks_by_name"),
        "tasks not reached by index:\n{plan}"
    );
}

/// The database's plan for the first page of tasks in `default` (PostgreSQL's taken with
/// sequential scans off: what matters is that an index can answer, not what a small table
/// would rather do).
async fn explain_page(app: &TestApp, search: Option<&'static str>, order_by: Value) -> String {
    use taskward_brain::query::entities::TASKS;
    use taskward_brain::query::filter::{Filter, Scalar};
    use taskward_brain::query::order::{parse, with_tiebreak};
    use taskward_brain::query::sql::Dialect;
    use taskward_brain::store::tasks::{SearchTerms, Selection, page_query, search_terms};
    let lines: Vec<String> = app
        .store
        .read("test_explain", move |conn| {
            use diesel::RunQueryDsl;
            #[derive(diesel::QueryableByName)]
            struct Line {
                #[diesel(sql_type = diesel::sql_types::Text)]
                detail: String,
            }
            #[derive(diesel::QueryableByName)]
            struct PgLine {
                #[diesel(sql_type = diesel::sql_types::Text)]
                #[diesel(column_name = "QUERY PLAN")]
                line: String,
            }
            let order = with_tiebreak(&TASKS, &parse(&TASKS, &order_by, "orderBy").unwrap());
            let project = taskward_brain::store::projects::find(conn, &"default".parse().unwrap())?;
            let selection = Selection {
                filter: &Filter::And(vec![]),
                search,
                order: &order,
            };
            let terms = match search {
                Some(text) => {
                    let terms = search_terms(conn, &project.id, text)?;
                    let SearchTerms::Values(values) = &terms else {
                        panic!("one value matches, found {terms:?}");
                    };
                    assert_eq!(values.len(), 1, "{values:?}");
                    Some(terms)
                }
                None => None,
            };
            let explain = |dialect: Dialect, prefix: &str| {
                let sql = page_query(dialect, &project.id, &selection, terms.as_ref(), None, 10);
                let mut text = format!("{prefix} {}", sql.text);
                // Inline the binds for EXPLAIN (test-only; values are ours).
                for (i, bind) in sql.binds.iter().enumerate().rev() {
                    let literal = match bind {
                        Scalar::Text(s) => format!("'{}'", s.replace('\'', "''")),
                        Scalar::Int(n) => n.to_string(),
                        Scalar::Bool(b) => b.to_string(),
                    };
                    match dialect {
                        Dialect::Postgres => {
                            text = text.replace(&format!("${}", i + 1), &literal);
                        }
                        // Positional: replace the last `?` first.
                        Dialect::Sqlite => {
                            if let Some(at) = text.rfind('?') {
                                text.replace_range(at..=at, &literal);
                            }
                        }
                    }
                }
                text
            };
            Ok(match conn {
                taskward_brain::store::AnyConnection::Sqlite(c) => {
                    diesel::sql_query(explain(Dialect::Sqlite, "EXPLAIN QUERY PLAN"))
                        .load::<Line>(c)?
                        .into_iter()
                        .map(|l| l.detail)
                        .collect()
                }
                taskward_brain::store::AnyConnection::Postgresql(c) => {
                    // Statistics as a running brain would have them (autovacuum).
                    diesel::sql_query("ANALYZE tasks").execute(c)?;
                    diesel::sql_query("SET enable_seqscan = off").execute(c)?;
                    let lines = diesel::sql_query(explain(Dialect::Postgres, "EXPLAIN"))
                        .load::<PgLine>(c)?
                        .into_iter()
                        .map(|l| l.line)
                        .collect();
                    diesel::sql_query("SET enable_seqscan = on").execute(c)?;
                    lines
                }
            })
        })
        .await
        .unwrap();
    lines.join("\n")
}

/// Sorting by the keys people use reads an index in order (no sort of every task of the
/// project per page, which took 11 to 31 s at 10M tasks), in both directions.
async fn the_common_sort_keys_are_read_off_an_index(backend: Backend) {
    let app = TestApp::new(backend).await;
    let agent = app.create_agent("default", "host-a").await;
    seed(&app, "default", &agent, "bulk", 2000).await;
    for (field, index) in [
        ("runtime_ms", "tasks_by_runtime"),
        ("started_at", "tasks_by_started"),
        ("finished_at", "tasks_by_finished"),
        ("received_at", "tasks_by_received"),
    ] {
        for direction in ["desc", "asc"] {
            let plan = explain_page(&app, None, json!([{ field: direction }])).await;
            assert!(
                plan.contains(index),
                "{field} {direction}: not by {index}:\n{plan}"
            );
            let sorted = plan.contains("TEMP B-TREE") || plan.contains("Sort  (");
            assert!(
                !sorted,
                "{field} {direction}: sorted instead of read in order:\n{plan}"
            );
        }
    }
}

/// A viewer's filter of 100 comparisons across the parent relation once ran for 23 s and,
/// eight at a time, held every connection. Now it is stopped at the query budget with a 503
/// naming it, an export of it fails instead of ending early, and one caller's fifth
/// concurrent read is refused while its own four run (see `limits::ConcurrentReads`).
async fn a_runaway_filter_is_stopped_at_its_budget(backend: Backend) {
    let settings = taskward_brain::app::ServerSettings {
        query_budget: std::time::Duration::from_millis(300),
        ..taskward_brain::app::ServerSettings::default()
    };
    let app = TestApp::with_settings(backend, settings).await;
    let agent = app.create_agent("default", "host-a").await;
    let n = 40_000;
    let updates = (0..n)
        .map(|i| {
            Update::Task(Box::new(TaskUpdate {
                name: Some(format!("app.name{}", i % 10)),
                parent_id: Some(format!("r{:05}", (i + 1) % n)),
                ..celery_task(
                    format!("r{i:05}"),
                    TaskState::Succeeded,
                    1_800_000_000_000 + i,
                )
            }))
        })
        .collect();
    app.apply_updates("default", &agent, updates).await;
    let heavy: Vec<Value> = (0..100)
        .map(|k| json!({"parent": {"name": {"contains": format!("nothing-{k}")}}}))
        .collect();
    let filter = json!({ "OR": heavy }).to_string();
    let t = &app.admin_token;
    let stopped = app.get(&query(&[("filter", &filter)]), t).await;
    assert_eq!(
        stopped.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        stopped.body
    );
    assert_eq!(stopped.code(), "query_over_budget");
    assert!(
        stopped.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("300 ms budget"),
        "{}",
        stopped.body
    );
    // Five at once from one caller: it gets its four slots, and the fifth is refused rather
    // than queued for a connection.
    let heavy_page = query(&[("filter", &filter)]);
    let five = futures_util::future::join_all((0..5).map(|_| app.get(&heavy_page, t))).await;
    let codes: Vec<&str> = five.iter().map(|r| r.code()).collect();
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == "too_many_concurrent_requests")
            .count(),
        1,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == "query_over_budget").count(),
        4,
        "{codes:?}"
    );
    // The same list, unfiltered, answers at once: the budget stopped only the runaway.
    let page = app.get(&query(&[("limit", "5")]), t).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.count("items"), 5);
    // An export of it fails as a download instead of ending as if complete.
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let request = axum::http::Request::get(query(&[("filter", &filter), ("format", "csv")]))
        .header("authorization", format!("Bearer {t}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let export = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(export.status(), StatusCode::OK, "headers go first");
    let body = export.into_body().collect().await;
    assert!(
        body.is_err(),
        "the export body must fail, not end as if complete"
    );
}

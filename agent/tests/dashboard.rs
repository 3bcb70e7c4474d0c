//! The dashboard end to end in Debian's headless Chromium (the test kit's WebDriver client)
//! against the real `taskward-brain`, with a real Celery worker behind a real agent.

mod support;

use serde_json::json;
use support::{CeleryHost, retried_id};
use taskward_testkit::browser::Browser;

/// An operator signs in, finds a task that failed on a real Celery worker by filter, opens it,
/// retries it with edited kwargs, and watches the command go to succeeded on the live command
/// page (no reload); the new run sits under its original in the tree and succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_retries_a_failed_task_on_a_real_worker() {
    let host = CeleryHost::start(taskward_testkit::Broker::Redis { db: 8 }, &["celery"]).await;
    let _worker = host
        .celery
        .worker("w1@dashboard-test", &["-E", "--pool", "solo"], &[]);
    let failed = host.send("app.divide.delay(x=10, y=0)");
    host.wait_task(&failed, "divide by zero", |t| t.state == "failed")
        .await;

    let browser = Browser::start().await;
    browser.size(1366, 768).await;
    let base = host.brain.url();
    browser
        .sign_in(
            &base,
            "admin",
            &host.brain.admin_password(),
            "/p/default/tasks",
        )
        .await;
    browser
        .click_on("select[name=state] option[value=failed]")
        .await;
    browser.click_on("form.filters button[type=submit]").await;
    browser.wait_url(|u| u.contains("state=failed")).await;
    browser
        .click_on(&format!("a[href$='/tasks/celery/{failed}']"))
        .await;
    browser.wait_text("p.error", "ZeroDivisionError").await;
    browser
        .fill(
            &browser.find("textarea[name=override_kwargs]").await,
            "{\"y\": 2}",
        )
        .await;
    browser.click_on("form.retry button[type=submit]").await;
    browser
        .wait_text("[data-result]", "retry-task issued")
        .await;
    browser.click_on("[data-result] a").await;
    browser.wait_url(|u| u.contains("/commands/")).await;
    browser.run("window.__notReloaded = 7; return 1").await;
    browser.wait_text("span[data-status]", "succeeded").await;
    assert_eq!(browser.run("return window.__notReloaded").await, json!(7));
    browser.screenshot("celery-retry-command-1366").await;

    // The new run succeeded with the overridden kwarg, under its original.
    let commands = host.api.get_json("/api/v1/projects/default/commands").await;
    let retried = retried_id(&commands["items"][0]);
    host.wait_task(&retried, "the retried division", |t| {
        t.state == "succeeded" && t.result.as_deref() == Some("5.0")
    })
    .await;
    browser
        .goto(&format!("{base}/p/default/tasks/celery/{failed}"))
        .await;
    let tree = browser.wait_text("ul.tree", &retried).await;
    assert!(
        tree.contains("succeeded") && tree.contains("failed"),
        "{tree}"
    );
    browser.screenshot("celery-retry-tree-1366").await;
}

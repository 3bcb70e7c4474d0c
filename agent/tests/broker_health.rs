//! The broker's health as the brain shows it, all real: an agent on a Redis of the test's own,
//! which the test kills and starts again. While it is down the agent stays connected to the
//! brain and shows as `degraded` with the broker's error and since when, in the API (one agent
//! and the list), on the dashboard's agents page and as `taskward_agent_broker_up`; when the
//! broker is back, so is `online`, and the agent logs it once.

mod support;

use reqwest::Method;
use serde_json::Value;
use support::{AGENT, logs, start_brain_with_agent};
use taskward_testkit::{AgentHome, Api, RedisServer, Wait};

/// Waits until the agent's `status` is `status`; the agent as the API shows it.
async fn wait_status(api: &Api, agent: &str, status: &str, context: impl Fn() -> String) -> Value {
    Wait::new(format!("the agent to be {status}"))
        .context(context)
        .until_ok(|| async {
            let shown = api.agent(agent).await;
            if shown["status"] == status {
                Ok(shown)
            } else {
                Err(shown)
            }
        })
        .await
}

async fn agents_page(api: &Api) -> String {
    api.request(Method::GET, "/p/default/agents")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_broker_shows_the_agent_degraded_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(&dir.path().join("redis"));
    let (brain, agent, token) = start_brain_with_agent(dir.path(), "broker-host").await;
    let api = brain.api();
    let broker = redis.url(0);
    let mut home = AgentHome::enroll(
        AGENT,
        &dir.path().join("agent"),
        &brain.url(),
        &token,
        &["--broker", &broker],
    );
    home.start();
    let context = || logs(&home, &brain);
    let shown = wait_status(&api, &agent, "online", context).await;
    assert_eq!(shown["broker"]["up"], true, "{shown}");
    let up_line = format!("taskward_agent_broker_up{{agent=\"{agent}\"}} 1");
    assert!(api.metrics().await.contains(&up_line));

    redis.kill();
    let shown = wait_status(&api, &agent, "degraded", context).await;
    assert_eq!(shown["online"], true, "still linked to the brain: {shown}");
    let error = shown["broker"]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("broker:"), "{shown}");
    assert!(shown["broker"]["since"].is_string(), "{shown}");
    let listed = api.get_json(&api.project_path("/agents")).await;
    assert_eq!(listed["items"][0]["status"], "degraded", "{listed}");
    let down_line = format!("taskward_agent_broker_up{{agent=\"{agent}\"}} 0");
    assert!(api.metrics().await.contains(&down_line));
    let page = agents_page(&api).await;
    assert!(page.contains("data-agent-degraded"), "{page}");
    assert!(page.contains("Broker unreachable since"), "{page}");

    redis.restart();
    let shown = wait_status(&api, &agent, "online", context).await;
    assert_eq!(shown["broker"]["up"], true, "{shown}");
    assert!(api.metrics().await.contains(&up_line));
    assert!(!agents_page(&api).await.contains("data-agent-degraded"));
    let log = home.log();
    assert_eq!(log.matches("the broker answers again").count(), 1, "{log}");
    assert_eq!(
        log.matches("the broker does not answer").count(),
        1,
        "{log}"
    );
    let status = home.status();
    assert!(status.contains("broker         reachable"), "{status}");
}

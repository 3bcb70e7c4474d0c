//! `taskward-agent --log-format json` (or `TASKWARD_AGENT_LOG_FORMAT=json`): every line the
//! agent writes to stderr is a JSON object a log shipper can read, with its level and message.

mod support;

use serde_json::Value;
use support::{AGENT, logs, start_brain_with_agent};
use taskward_testkit::AgentHome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_json_logs_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let (brain, agent, token) = start_brain_with_agent(dir.path(), "json-logs").await;
    let mut home = AgentHome::enroll(AGENT, &dir.path().join("agent"), &brain.url(), &token, &[]);
    home.env("TASKWARD_AGENT_LOG_FORMAT", "json");
    home.start();
    brain.api().wait_online(&agent, true).await;
    taskward_testkit::Wait::new("the agent to log its session")
        .context(|| logs(&home, &brain))
        .until(|| async { home.log().contains("connected to the brain") })
        .await;
    let log = home.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect();
    assert!(lines.len() >= 2, "{log}");
    assert!(lines.iter().all(|l| l["level"].is_string()), "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "connected to the brain"),
        "{log}"
    );
}

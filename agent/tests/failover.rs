//! An agent configured with several brain addresses (`brain = [..]`, brains on one PostgreSQL
//! database sharing their keys, as replicas do) fails over when the brain it is linked to dies,
//! and the event stream it was sending loses nothing.

mod support;

use std::time::Duration;

use support::{AGENT, incomplete_tasks, open_store, task_states};
use taskward_testkit::{AgentHome, BrainProcess, Wait, brain_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_fails_over_to_another_brain_and_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    // Two brains, one database, one data directory (the same signing keys).
    let mut first = BrainProcess::builder(brain_bin(), dir.path())
        .fresh_postgres()
        .start();
    let second = BrainProcess::builder(brain_bin(), dir.path())
        .database_url(&first.database_url())
        .start();
    let api = second.api();
    let (agent, token) = api.create_agent("failover").await;
    let mut home = AgentHome::enroll(
        AGENT,
        &dir.path().join("agent"),
        &first.url(),
        &token,
        &["--engine", "test"],
    );
    home.edit_config(
        &format!("brain = \"{}\"", first.url()),
        &format!("brain = [\"{}\", \"{}\"]", first.url(), second.url()),
    );
    // 1,000 tasks (3,000 events) at 500 events/s: the stream is still flowing when the first
    // brain dies.
    home.edit_config("events_total = 0", "events_total = 3000");
    home.edit_config("events_per_sec = 0", "events_per_sec = 500");
    home.start();
    // "online" is each brain's own view: the first one holds the session.
    first.api().wait_online(&agent, true).await;
    let store = open_store(&second);
    Wait::new("the first events through the first brain")
        .within(Duration::from_secs(30))
        .until(|| async { task_states(&store).values().sum::<i64>() > 0 })
        .await;
    assert!(
        home.log().contains(&format!(
            "connected to the brain session=1 brain={}",
            first.url()
        )),
        "{}",
        home.log()
    );
    first.kill_9();

    Wait::new("the agent to link with the second brain")
        .within(Duration::from_secs(30))
        .context(|| home.log())
        .until(|| async { home.log().contains(&format!("brain={}", second.url())) })
        .await;
    Wait::new("every task complete through the second brain")
        .within(Duration::from_secs(60))
        .every(Duration::from_millis(200))
        .context(|| home.log())
        .until_ok(|| async {
            let states = task_states(&store);
            if states.get("succeeded") == Some(&1000) && states.len() == 1 {
                Ok(())
            } else {
                Err(format!("{states:?}"))
            }
        })
        .await;
    assert_eq!(incomplete_tasks(&store), 0);
    api.wait_online(&agent, true).await;
    assert!(home.status().contains(&second.url()), "{}", home.status());
}

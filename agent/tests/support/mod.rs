//! What the agent's process suites (`link`, `celery`, `dashboard`) share on top of the test
//! kit: the agent binary, the brain's store read directly (the kit does not depend on the
//! brain's library), and a brain with a Celery agent on a real Redis ([`CeleryHost`]).

// Each suite uses its part.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use taskward_brain::store::tasks::TaskRow;
use taskward_brain::store::{DatabaseUrl, Store, projects, tasks};
use taskward_testkit::{AgentHome, Api, BrainProcess, Broker, CeleryStack, Wait, brain_bin};

/// The agent binary cargo built for these tests.
pub const AGENT: &str = env!("CARGO_BIN_EXE_taskward-agent");

/// A brain on SQLite in `dir`, ready.
pub fn start_brain(dir: &Path) -> BrainProcess {
    BrainProcess::start(brain_bin(), dir)
}

/// A brain on SQLite in `dir` with one agent `name` registered and not yet enrolled: the
/// brain, the agent's id and its enrollment token.
pub async fn start_brain_with_agent(dir: &Path, name: &str) -> (BrainProcess, String, String) {
    let brain = start_brain(dir);
    let (agent, token) = brain.api().create_agent(name).await;
    (brain, agent, token)
}

/// The brain's SQLite store, opened beside the running brain.
pub fn open_store(brain: &BrainProcess) -> Store {
    Store::open(&DatabaseUrl::parse(&brain.database_url()).unwrap()).unwrap()
}

/// The agent's and the brain's logs, for a failed wait to show.
pub fn logs(home: &AgentHome, brain: &BrainProcess) -> String {
    format!("agent log:\n{}\nbrain log:\n{}", home.log(), brain.log())
}

/// Tasks whose timeline misses an event (a lost update).
pub fn incomplete_tasks(store: &Store) -> i64 {
    use diesel::{QueryableByName, RunQueryDsl};
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    store
        .read_blocking("test_incomplete", |c| {
            let rows: Vec<N> = diesel::sql_query(
                "SELECT COUNT(*) AS n FROM tasks WHERE state = 'succeeded' AND \
                 (received_at IS NULL OR started_at IS NULL OR finished_at IS NULL)",
            )
            .load(c)?;
            Ok(rows[0].n)
        })
        .unwrap()
}

/// Tasks of project `default` by state.
pub fn task_states(store: &Store) -> BTreeMap<String, i64> {
    store
        .read_blocking("test_counts", |c| {
            let project = projects::find(c, &"default".parse().unwrap())?;
            tasks::count_by_state(c, &project.id)
        })
        .unwrap()
        .into_iter()
        .collect()
}

/// Waits up to 20 s for command `id` to reach `status`, printing the brain's log if it does
/// not; the command.
pub async fn wait_status(api: &Api, brain: &BrainProcess, id: &str, status: &str) -> Value {
    api.wait_command(
        id,
        Duration::from_secs(20),
        status,
        || format!("brain log:\n{}", brain.log()),
        |s| s == status,
    )
    .await
}

/// The new task id a retry's result names (`retried <old> as <new> on queue <q>`).
pub fn retried_id(command: &Value) -> String {
    let detail = command["detail"].as_str().unwrap_or_default();
    detail
        .split(" as ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no new task id in {detail:?}"))
        .to_owned()
}

/// A brain and an enrolled Celery agent on a broker of the test's own (a Redis database or a
/// RabbitMQ vhost, watching `queues`), connected and subscribed to the broker's events; the
/// brain's store to read.
pub struct CeleryHost {
    /// The broker, its Python and its workers.
    pub celery: CeleryStack,
    /// The brain process.
    pub brain: BrainProcess,
    /// The site admin.
    pub api: Api,
    /// The agent's id.
    pub agent: String,
    /// The agent (running).
    pub home: AgentHome,
    /// The brain's store.
    pub store: Store,
    /// Dropped last: the brain's and the agent's files.
    _dir: tempfile::TempDir,
}

impl CeleryHost {
    /// Takes `broker` afresh (see [`CeleryStack::on`]), starts the brain and a Celery agent
    /// on it.
    pub async fn start(broker: Broker, queues: &[&str]) -> CeleryHost {
        CeleryHost::start_on(broker, queues, false).await
    }

    /// [`CeleryHost::start`] with the brain on a fresh PostgreSQL database when `postgres`.
    pub async fn start_on(broker: Broker, queues: &[&str], postgres: bool) -> CeleryHost {
        CeleryHost::start_with(broker, queues, postgres, None, &[]).await
    }

    /// [`CeleryHost::start_on`] with the agent enrolled on `agent_broker` (default: Celery's
    /// URL) and `extra` enroll flags (the broker's TLS files, say).
    pub async fn start_with(
        broker: Broker,
        queues: &[&str],
        postgres: bool,
        agent_broker: Option<&str>,
        extra: &[&str],
    ) -> CeleryHost {
        let celery = CeleryStack::on(broker);
        let dir = tempfile::tempdir().unwrap();
        let brain = if postgres {
            BrainProcess::builder(brain_bin(), dir.path())
                .fresh_postgres()
                .start()
        } else {
            start_brain(dir.path())
        };
        let api = brain.api();
        let (agent, token) = api.create_agent("celery-host").await;
        let broker_url = agent_broker.unwrap_or(celery.broker());
        let mut engine = vec!["--engine", "celery", "--broker", broker_url];
        engine.extend_from_slice(extra);
        let mut home = AgentHome::enroll(
            AGENT,
            &dir.path().join("agent"),
            &brain.url(),
            &token,
            &engine,
        );
        let watched = serde_json::to_string(queues).unwrap().replace(',', ", ");
        home.edit_config(r#"queues = ["celery"]"#, &format!("queues = {watched}"));
        home.start();
        api.wait_online(&agent, true).await;
        Wait::new("the agent to subscribe")
            .until(|| async { home.log().contains("reading Celery events") })
            .await;
        let store = open_store(&brain);
        CeleryHost {
            celery,
            brain,
            api,
            agent,
            home,
            store,
            _dir: dir,
        }
    }

    /// Sends one task of the example app (`"app.add.delay(2, 3)"`); its id.
    pub fn send(&self, call: &str) -> String {
        self.celery.send(call)
    }

    /// The task as the brain stored it.
    pub fn task(&self, id: &str) -> Option<TaskRow> {
        let id = id.to_owned();
        self.store
            .read_blocking("test_task", |c| {
                let project = projects::find(c, &"default".parse().unwrap())?;
                tasks::find(c, &project.id, "celery", &id)
            })
            .ok()
    }

    /// The agent's workers and whether each is online.
    pub fn workers(&self) -> Vec<(String, bool)> {
        let agent = self.agent.clone();
        self.store
            .read_blocking("test_workers", |c| tasks::workers_of_agent(c, &agent))
            .unwrap()
    }

    /// Waits up to 60 s for the stored task to satisfy `done`.
    pub async fn wait_task(&self, id: &str, what: &str, done: impl Fn(&TaskRow) -> bool) {
        Wait::new(format!("{what} (task {id})"))
            .within(Duration::from_secs(60))
            .every(Duration::from_millis(100))
            .context(|| format!("agent log:\n{}", self.home.log()))
            .until_ok(|| async {
                match self.task(id) {
                    Some(task) if done(&task) => Ok(()),
                    other => Err(format!("{:?}", other.map(|t| t.state))),
                }
            })
            .await;
    }

    /// Waits up to 20 s for command `id` to reach `status`; the command.
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        wait_status(&self.api, &self.brain, id, status).await
    }

    /// Issues a command to the agent and waits up to 30 s for it to succeed or fail; the
    /// command.
    pub async fn run(&self, kind: &str, body: Value) -> Value {
        let id = self.api.issue(&self.agent, kind, body).await;
        self.api
            .wait_command(
                &id,
                Duration::from_secs(30),
                &format!("{kind} finished"),
                String::new,
                |s| s == "succeeded" || s == "failed",
            )
            .await
    }
}

/// Asserts a finished command's status and that its detail contains `detail`.
pub fn expect_outcome(command: &Value, status: &str, detail: &str) {
    assert_eq!(command["status"], status, "{command}");
    assert!(
        command["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(detail),
        "{command}"
    );
}

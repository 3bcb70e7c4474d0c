//! Real Celery: the project's Python (`.venv`, made by `scripts/ensure-services`) with the
//! example app (`examples/celery-app`), on a broker of the test's own (a Redis database, or a
//! RabbitMQ vhost made for the test and deleted after it), and workers of that app as
//! processes.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::process::signal;

/// The workspace root (this crate's parent directory).
fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The project's Python with Celery.
pub fn python() -> PathBuf {
    let python = workspace().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test (scripts/ensure-services installs Celery)",
        python.display()
    );
    python
}

/// The example Celery app's directory (`app.py`).
pub fn app_dir() -> PathBuf {
    workspace().join("examples/celery-app")
}

/// The broker a test's Celery runs on: the same suite runs on each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// Redis database `db` on 127.0.0.1:6379 (each test owns one; emptied at the start).
    Redis {
        /// The database number.
        db: u8,
    },
    /// A vhost of its own on the RabbitMQ at 127.0.0.1:5672 (guest/guest), made at the start
    /// and deleted when the stack is dropped.
    Rabbitmq {
        /// The vhost's name.
        vhost: String,
    },
    /// A broker the test started itself (a [`crate::RedisServer`], empty), at this URL as
    /// kombu takes it (`rediss://…?ssl_cert_reqs=required&ssl_ca_certs=…`).
    Url(String),
}

impl Broker {
    /// RabbitMQ, on a vhost named after the test (and this process, so parallel runs of the
    /// suite never share one).
    pub fn rabbitmq(test: &str) -> Broker {
        Broker::Rabbitmq {
            vhost: format!("taskward-{test}-{}", std::process::id()),
        }
    }

    /// The broker URL, as Celery and the agent take it.
    pub fn url(&self) -> String {
        match self {
            Broker::Redis { db } => format!("redis://127.0.0.1:6379/{db}"),
            Broker::Rabbitmq { vhost } => format!("amqp://guest:guest@127.0.0.1:5672/{vhost}"),
            Broker::Url(url) => url.clone(),
        }
    }

    /// Whether this is RabbitMQ.
    pub fn is_rabbitmq(&self) -> bool {
        matches!(self, Broker::Rabbitmq { .. })
    }
}

/// Runs `rabbitmqctl` (the broker's own admin tool); its stdout. Panics when it fails, unless
/// `tolerate` says the failure is expected (deleting what may not exist).
pub fn rabbitmqctl(args: &[&str], tolerate: bool) -> String {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (RabbitMQ is installed by scripts/ensure-services)");
    assert!(
        tolerate || out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A broker for one test's Celery (see [`Broker`]), a directory for its workers' logs, and
/// Python to drive it.
pub struct CeleryStack {
    kind: Broker,
    broker: String,
    logs: tempfile::TempDir,
}

impl CeleryStack {
    /// Takes Redis database `db` (each test owns one) and empties it: no leftovers of earlier
    /// runs.
    pub fn on_db(db: u8) -> CeleryStack {
        CeleryStack::on(Broker::Redis { db })
    }

    /// Takes `broker` for the test: a Redis database emptied, or a RabbitMQ vhost made afresh
    /// (a leftover of an earlier run deleted first) with guest's permissions.
    pub fn on(broker: Broker) -> CeleryStack {
        let stack = CeleryStack {
            broker: broker.url(),
            kind: broker,
            logs: tempfile::tempdir().unwrap(),
        };
        match &stack.kind {
            Broker::Redis { .. } => {
                stack.python(
                    "import os, redis; redis.Redis.from_url(os.environ['CELERY_BROKER_URL']).flushdb()",
                );
            }
            Broker::Rabbitmq { vhost } => {
                rabbitmqctl(&["delete_vhost", vhost], true);
                rabbitmqctl(&["add_vhost", vhost], false);
                rabbitmqctl(
                    &["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                    false,
                );
            }
            Broker::Url(_) => {}
        }
        stack
    }

    /// The broker URL.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// Which broker.
    pub fn kind(&self) -> &Broker {
        &self.kind
    }

    /// Puts one message per priority in `priorities` into `queue` (declared as Celery
    /// declares a task queue), through kombu as any producer would: on Redis they land in the
    /// priority buckets.
    pub fn fill_queue(&self, queue: &str, priorities: &[u8]) {
        self.python(&format!(
            r#"
import os, kombu
q = kombu.Queue({queue:?})
with kombu.Connection(os.environ["CELERY_BROKER_URL"]) as c:
    p = c.Producer()
    for prio in {priorities:?}:
        p.publish({{"n": prio}}, routing_key={queue:?}, declare=[q], priority=prio)
"#
        ));
    }

    /// The ready messages of `queue` (every priority), as kombu counts them.
    pub fn queue_len(&self, queue: &str) -> u64 {
        let out = self.python(&format!(
            r#"
import os, kombu
with kombu.Connection(os.environ["CELERY_BROKER_URL"]) as c:
    print(kombu.Queue({queue:?})(c.default_channel).queue_declare().message_count)
"#
        ));
        out[0].parse().unwrap()
    }

    /// Runs Python code beside the example app (`import app` works) with `CELERY_BROKER_URL`
    /// set; it must succeed. Its stdout lines (task ids, say).
    pub fn python(&self, code: &str) -> Vec<String> {
        let out = crate::process::run_ok(
            Command::new(python())
                .current_dir(app_dir())
                .args(["-c", code])
                .env("CELERY_BROKER_URL", &self.broker),
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Sends one task with Python (`"app.add.delay(2, 3)"`); its id.
    pub fn send(&self, call: &str) -> String {
        self.python(&format!("import app; print({call}.id)"))
            .remove(0)
    }

    /// Starts a worker of the example app named `name` with `options` (pool, concurrency,
    /// `-E`, …) and environment `env` (the app reads `TASK_EVENTS`, `POOL_RESTARTS`); its
    /// stderr goes to `<name>.log` in the stack's log directory.
    pub fn worker(&self, name: &str, options: &[&str], env: &[(&str, &str)]) -> CeleryWorker {
        let log = self.logs.path().join(format!("{name}.log"));
        let child = Command::new(python())
            .current_dir(app_dir())
            .args(["-m", "celery", "-A", "app", "worker", "-n", name])
            .args(["--without-mingle", "--without-gossip"])
            .args(options)
            .env("CELERY_BROKER_URL", &self.broker)
            .envs(env.iter().copied())
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        CeleryWorker {
            child: Some(child),
            log,
        }
    }
}

impl Drop for CeleryStack {
    fn drop(&mut self) {
        if let Broker::Rabbitmq { vhost } = &self.kind {
            rabbitmqctl(&["delete_vhost", vhost], true);
        }
    }
}

/// A Celery worker process, in a process group of its own with its pool's children; the whole
/// group is killed when dropped.
pub struct CeleryWorker {
    child: Option<Child>,
    log: PathBuf,
}

impl CeleryWorker {
    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// SIGKILL to the worker and its pool children (no worker-offline event, no task event),
    /// and waits for the worker.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            assert!(signal(child.id(), "KILL", true), "kill -KILL failed");
            child.wait().unwrap();
        }
    }
}

impl Drop for CeleryWorker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "KILL", true);
            let _ = child.wait();
        }
    }
}

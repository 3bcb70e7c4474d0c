//! Real Celery: the project's Python (`.venv`, made by `scripts/ensure-services`) with the
//! example app (`examples/celery-app`), on a Redis database of the test's own, and workers of
//! that app as processes.

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

/// A Redis database for one test's Celery (`redis://127.0.0.1:6379/<db>`, emptied at the
/// start), a directory for its workers' logs, and Python to drive it.
pub struct CeleryStack {
    broker: String,
    db: u8,
    logs: tempfile::TempDir,
}

impl CeleryStack {
    /// Takes Redis database `db` (each test owns one) and empties it: no leftovers of earlier
    /// runs.
    pub fn on_db(db: u8) -> CeleryStack {
        let stack = CeleryStack {
            broker: format!("redis://127.0.0.1:6379/{db}"),
            db,
            logs: tempfile::tempdir().unwrap(),
        };
        stack.python(
            "import os, redis; redis.Redis.from_url(os.environ['CELERY_BROKER_URL']).flushdb()",
        );
        stack
    }

    /// The broker URL.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// The Redis database number.
    pub fn db(&self) -> u8 {
        self.db
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

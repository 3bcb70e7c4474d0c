//! TEST DOUBLE. A scripted engine for the link's integration tests and benchmarks: it records
//! every command it is asked to run (one fsync'ed JSON line each in
//! `<state_dir>/test-adapter.jsonl`, so a test can count executions across crashes), takes
//! `delay_ms` per command, and fails the kinds it is told to. Only compiled with the
//! `test-adapter` feature; never part of a release build.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use taskward_shared::command::{Command, CommandKind, IssuedCommand};
use taskward_shared::events::{TaskState, TaskUpdate, Update};

use super::{BoxFuture, EngineAdapter, EngineError};

/// The test double.
pub struct TestAdapter {
    log: Mutex<std::fs::File>,
    path: PathBuf,
    delay: Duration,
    fail_kinds: Vec<String>,
    /// (total events, events per second; 0 = unpaced).
    events: (u64, u64),
}

impl TestAdapter {
    /// Opens (appending) the execution log.
    pub fn new(
        state_dir: &Path,
        delay_ms: u64,
        fail_kinds: Vec<String>,
        events: (u64, u64),
    ) -> Result<TestAdapter, String> {
        let path = state_dir.join("test-adapter.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(TestAdapter {
            log: Mutex::new(file),
            path,
            delay: Duration::from_millis(delay_ms),
            fail_kinds,
            events,
        })
    }
}

impl EngineAdapter for TestAdapter {
    fn name(&self) -> &'static str {
        "test"
    }

    fn supports(&self, _kind: CommandKind) -> bool {
        true
    }

    /// Emits `events_total` scripted events: tasks `t-0`, `t-1`, ... each received, started
    /// and succeeded, paced to `events_per_sec` in 10 ms steps.
    fn start_events(&self, sink: tokio::sync::mpsc::Sender<Update>) {
        let (total, rate) = self.events;
        if total == 0 {
            return;
        }
        tokio::spawn(async move {
            let per_step = if rate == 0 {
                3_000
            } else {
                (rate / 100).max(1)
            };
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut sent = 0u64;
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            while sent < total {
                if rate > 0 {
                    tick.tick().await;
                }
                for _ in 0..per_step.min(total - sent) {
                    let task = sent / 3;
                    let stage = sent % 3;
                    let state = [
                        TaskState::Received,
                        TaskState::Started,
                        TaskState::Succeeded,
                    ][stage as usize];
                    let update = Update::Task(Box::new(TaskUpdate {
                        engine: "celery".into(),
                        task_id: format!("t-{task}"),
                        state: Some(state),
                        at_ms: base + task as i64 * 3 + stage as i64,
                        name: Some("bench.task".into()),
                        queue: Some("default".into()),
                        worker: Some("celery@test".into()),
                        runtime_ms: (stage == 2).then_some(2),
                        ..TaskUpdate::default()
                    }));
                    if sink.send(update).await.is_err() {
                        return;
                    }
                    sent += 1;
                }
                if rate == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
    }

    fn execute<'a>(
        &'a self,
        command: &'a Command,
        issued: &'a IssuedCommand,
    ) -> BoxFuture<'a, Result<String, EngineError>> {
        Box::pin(async move {
            let line = serde_json::json!({"id": issued.id, "kind": command.kind(), "payload": command.payload()});
            {
                let mut log = self.log.lock().expect("log lock");
                // Written before the command "runs"; the page cache keeps it across a kill -9 of
                // the agent, which is all the tests need.
                writeln!(log, "{line}")
                    .map_err(|e| EngineError::Failed(format!("{}: {e}", self.path.display())))?;
            }
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if self.fail_kinds.iter().any(|k| k == command.kind().as_str()) {
                Err(EngineError::Refused(format!(
                    "{} is not supported by this engine",
                    command.kind()
                )))
            } else {
                Ok(format!("{} done", command.kind()))
            }
        })
    }
}

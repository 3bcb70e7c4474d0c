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

use super::{BoxFuture, EngineAdapter};

/// The test double.
pub struct TestAdapter {
    log: Mutex<std::fs::File>,
    path: PathBuf,
    delay: Duration,
    fail_kinds: Vec<String>,
}

impl TestAdapter {
    /// Opens (appending) the execution log.
    pub fn new(
        state_dir: &Path,
        delay_ms: u64,
        fail_kinds: Vec<String>,
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

    fn execute<'a>(
        &'a self,
        command: &'a Command,
        issued: &'a IssuedCommand,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let line = serde_json::json!({"id": issued.id, "kind": command.kind(), "payload": command.payload()});
            {
                let mut log = self.log.lock().expect("log lock");
                writeln!(log, "{line}").map_err(|e| format!("{}: {e}", self.path.display()))?;
                log.sync_data().map_err(|e| e.to_string())?;
            }
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if self.fail_kinds.iter().any(|k| k == command.kind().as_str()) {
                Err(format!(
                    "{} is not supported by this engine",
                    command.kind()
                ))
            } else {
                Ok(format!("{} done", command.kind()))
            }
        })
    }
}

//! Engine adapters: what turns a checked command into an action on the task engine, and (with
//! the Celery adapter) engine events into task and worker updates.

pub mod celery;
mod none;
#[cfg(feature = "test-adapter")]
mod test_double;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use taskward_shared::command::{Command, CommandKind, IssuedCommand};
use taskward_shared::events::Update;

use crate::config::EngineConfig;

/// A boxed future, so adapters can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An engine adapter.
pub trait EngineAdapter: Send + Sync {
    /// Short name for logs and status.
    fn name(&self) -> &'static str;

    /// Whether the engine can do this kind at all (Celery's solo pool cannot resize, say).
    /// Unsupported kinds fail with a clear message instead of being attempted.
    fn supports(&self, kind: CommandKind) -> bool;

    /// Starts the adapter's event stream into `sink` (task, worker and queue updates). The
    /// adapter never blocks its engine on the brain: the agent spools what it receives.
    fn start_events(&self, sink: tokio::sync::mpsc::Sender<Update>) {
        let _ = sink;
    }

    /// Runs a checked command; `Ok` carries a short detail, `Err` why it failed.
    fn execute<'a>(
        &'a self,
        command: &'a Command,
        issued: &'a IssuedCommand,
    ) -> BoxFuture<'a, Result<String, String>>;
}

/// Builds the adapter the config names.
pub fn build(config: &EngineConfig, state_dir: &Path) -> Result<Box<dyn EngineAdapter>, String> {
    let _ = state_dir;
    match config {
        EngineConfig::None => Ok(Box::new(none::NoEngine)),
        EngineConfig::Celery {
            broker,
            global_keyprefix,
            queues,
            enable_events,
            redact_keys,
            redact_emails,
        } => Ok(Box::new(celery::CeleryAdapter::new(
            broker,
            global_keyprefix,
            queues.clone(),
            *enable_events,
            celery::redact::Redactor {
                secret_keys: redact_keys.iter().map(|k| k.to_ascii_lowercase()).collect(),
                emails: *redact_emails,
            },
        )?)),
        #[cfg(feature = "test-adapter")]
        EngineConfig::Test {
            delay_ms,
            fail_kinds,
            events_total,
            events_per_sec,
        } => Ok(Box::new(test_double::TestAdapter::new(
            state_dir,
            *delay_ms,
            fail_kinds.clone(),
            (*events_total, *events_per_sec),
        )?)),
        #[cfg(not(feature = "test-adapter"))]
        EngineConfig::Test { .. } => Err(
            "engine kind \"test\" is a test double, only in builds with the test-adapter feature"
                .into(),
        ),
    }
}

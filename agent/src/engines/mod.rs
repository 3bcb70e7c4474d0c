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

/// Why a command failed on the engine. The text of each variant is the command's detail as the
/// operator reads it (the brain stores it verbatim), so it is written whole where the failure is
/// found; the variant says what kind of failure it was, for code that must tell them apart (a
/// bulk retry counts a refused task as skipped, not failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine's broker could not be reached or failed mid-operation; the same command may
    /// work later.
    #[error("{0}")]
    Unavailable(String),
    /// Not attempted: the command does not apply here (no engine, a purge whose confirmed depth
    /// moved, a task whose arguments are gone).
    #[error("{0}")]
    Refused(String),
    /// Nobody answered within the time allowed (a worker that is down, or on another broker).
    #[error("{0}")]
    Timeout(String),
    /// The engine answered, with an error (a worker refused, or raised).
    #[error("{0}")]
    Rejected(String),
    /// Anything else (a local file, a malformed resolved spec).
    #[error("{0}")]
    Failed(String),
}

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

    /// Whether the engine's broker answers, kept current by the adapter (engines without a
    /// broker have none to report).
    fn broker_health(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<taskward_shared::protocol::BrokerHealth>> {
        None
    }

    /// Events the engine published that the adapter knows it never received (cumulative);
    /// the agent adds them to its dropped count, so losses are reported, never silent.
    fn lost_events(&self) -> u64 {
        0
    }

    /// Runs a checked command; `Ok` carries a short detail, `Err` why it failed.
    fn execute<'a>(
        &'a self,
        command: &'a Command,
        issued: &'a IssuedCommand,
    ) -> BoxFuture<'a, Result<String, EngineError>>;
}

/// The file in the state directory holding tasks' original arguments (0600).
pub const ARGS_VAULT_FILE: &str = "args-vault.jsonl";

/// Builds the adapter the config names.
pub fn build(config: &EngineConfig, state_dir: &Path) -> Result<Box<dyn EngineAdapter>, String> {
    match config {
        EngineConfig::None => Ok(Box::new(none::NoEngine)),
        EngineConfig::Celery {
            broker,
            broker_ca_file,
            broker_client_cert,
            broker_client_key,
            global_keyprefix,
            queues,
            enable_events,
            redact_keys,
            redact_emails,
            args_max_age_hours,
            args_max_bytes,
        } => Ok(Box::new(celery::CeleryAdapter::new(
            broker,
            &crate::config::BrokerTls {
                ca_file: broker_ca_file.clone(),
                client_cert: broker_client_cert.clone(),
                client_key: broker_client_key.clone(),
            },
            global_keyprefix,
            queues.clone(),
            *enable_events,
            celery::redact::Redactor {
                secret_keys: redact_keys.iter().map(|k| k.to_ascii_lowercase()).collect(),
                emails: *redact_emails,
            },
            celery::vault::Vault::open(
                &state_dir.join(ARGS_VAULT_FILE),
                *args_max_age_hours,
                *args_max_bytes,
            )
            .map_err(|e| format!("arguments vault in {}: {e}", state_dir.display()))?,
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

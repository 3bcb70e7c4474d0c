//! `cancel-task`: revoke one task.

use serde::{Deserialize, Serialize};

use super::{FieldError, check_engine, check_name};

/// Payload of `cancel-task`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CancelTask {
    /// Engine of the task (`celery`).
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z][a-z0-9_-]{0,31}$"))]
    pub engine: String,
    /// The engine's task id.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub task_id: String,
    /// Also stop it if it is running (Celery's `revoke(terminate=True)`); without it a running
    /// task runs to its end.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminate: bool,
    /// The signal for `terminate` (default `SIGTERM`); only with `terminate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

/// Signals a running task may be terminated with: the polite one, the forceful one, and the
/// ones Celery's pool children handle (soft time limit, interrupt, quit).
pub const SIGNALS: [&str; 5] = ["SIGTERM", "SIGKILL", "SIGINT", "SIGQUIT", "SIGUSR1"];

impl CancelTask {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_engine(&self.engine)?;
        check_name("task_id", &self.task_id)?;
        match &self.signal {
            Some(_) if !self.terminate => Err(FieldError::new(
                "signal",
                "a signal is only sent with terminate: true",
            )),
            Some(signal) if !SIGNALS.contains(&signal.as_str()) => Err(FieldError::new(
                "signal",
                format!("{signal:?} is not one of {}", SIGNALS.join(", ")),
            )),
            _ => Ok(()),
        }
    }

    /// The signal `terminate` sends.
    pub fn signal(&self) -> &str {
        self.signal.as_deref().unwrap_or("SIGTERM")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cancel(terminate: bool, signal: Option<&str>) -> CancelTask {
        CancelTask {
            engine: "celery".into(),
            task_id: "t".into(),
            terminate,
            signal: signal.map(str::to_owned),
        }
    }

    #[test]
    fn signals_only_with_terminate_and_only_known_ones() {
        assert!(cancel(false, None).validate().is_ok());
        assert!(cancel(true, None).validate().is_ok());
        assert_eq!(cancel(true, None).signal(), "SIGTERM");
        for signal in SIGNALS {
            assert!(cancel(true, Some(signal)).validate().is_ok(), "{signal}");
        }
        for (terminate, signal) in [(false, "SIGKILL"), (true, "SIGSTOP"), (true, "sigterm")] {
            let err = cancel(terminate, Some(signal)).validate().unwrap_err();
            assert_eq!(err.field, "signal", "{signal}");
        }
        // Old payloads (no terminate) keep their exact JSON, so signed statements still verify.
        assert_eq!(
            serde_json::to_value(cancel(false, None)).unwrap(),
            serde_json::json!({"engine": "celery", "task_id": "t"})
        );
    }
}

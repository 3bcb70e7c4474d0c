//! Why a domain action did not happen.
//!
//! Domain functions (issuing a command, removing a stale agent, firing a schedule, …) run
//! inside the store's write door and return `Result<_, Refusal>`: a refusal is an `Err`, so
//! the door rolls the transaction back and nothing of the attempt remains. Every edge maps a
//! refusal the same way: the HTTP API through one `From<Refusal> for ApiError`, the scheduler
//! and the CLI through its message.

use crate::store::{OpError, StoreError};

/// A domain refusal, or the store failure that stopped the action.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Input breaks a rule; `field` names the input at fault (a JSON path or parameter).
    #[error("{message}")]
    Invalid {
        /// Machine-readable reason, snake_case (`invalid_field`, `missing_field`, …).
        code: &'static str,
        /// What is wrong and, where possible, what is accepted.
        message: String,
        /// The input at fault.
        field: Option<String>,
    },
    /// The thing named does not exist in this scope (a task, an agent, a command).
    #[error("{0} not found")]
    NotFound(String),
    /// The action conflicts with the state it found (an idempotency key reused, a task that
    /// cannot be retried).
    #[error("{0}")]
    Conflict(String),
    /// A purge's confirmation was made for another depth than the queue has now.
    #[error("{message}")]
    DepthChanged {
        /// What happened and what to do.
        message: String,
        /// The depth the agent last reported, if any.
        current_depth: Option<u64>,
    },
    /// The store failed; nothing was decided.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Refusal {
    /// Input at `field` breaks a rule.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Refusal {
        Refusal::Invalid {
            code: "invalid_field",
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// A required input is absent (`path` is its JSON path; the message names the field as
    /// serde does).
    pub fn missing_field(path: impl Into<String>) -> Refusal {
        let path = path.into();
        let name = path.rsplit('.').next().unwrap_or(&path).to_owned();
        Refusal::Invalid {
            code: "missing_field",
            message: format!("{path}: missing field `{name}`"),
            field: Some(path),
        }
    }
}

impl From<taskward_shared::command::FieldError> for Refusal {
    fn from(err: taskward_shared::command::FieldError) -> Refusal {
        Refusal::invalid_field(err.field.clone(), err.to_string())
    }
}

impl OpError for Refusal {
    fn store_error(&self) -> Option<&StoreError> {
        match self {
            Refusal::Store(err) => Some(err),
            _ => None,
        }
    }
}

/// A store lookup's result with "no such row" turned into the refusal naming `what` (`agent
/// <id>`, `user <name>`); any other store failure passes through as it is.
pub fn or_not_found<T>(
    result: Result<T, StoreError>,
    what: impl FnOnce() -> String,
) -> Result<T, Refusal> {
    match result {
        Err(StoreError::NotFound) => Err(Refusal::NotFound(what())),
        other => Ok(other?),
    }
}

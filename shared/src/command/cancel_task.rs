//! `cancel-task`: revoke one task.

use serde::{Deserialize, Serialize};

use super::{FieldError, check_engine, check_name};

/// Payload of `cancel-task`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CancelTask {
    /// Engine of the task (`celery`).
    pub engine: String,
    /// The engine's task id.
    pub task_id: String,
}

impl CancelTask {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_engine(&self.engine)?;
        check_name("task_id", &self.task_id)
    }
}

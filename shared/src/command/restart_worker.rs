//! `restart-worker`: gracefully restart one worker.

use serde::{Deserialize, Serialize};

use super::{FieldError, check_name};

/// Payload of `restart-worker`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RestartWorker {
    /// Engine-native worker name, e.g. `celery@worker-1`.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub worker_name: String,
}

impl RestartWorker {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_name("worker_name", &self.worker_name)
    }
}

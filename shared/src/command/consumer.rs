//! `add-consumer` and `cancel-consumer`: start or stop a worker consuming a queue.

use serde::{Deserialize, Serialize};

use super::{FieldError, check_name};

/// Payload of `add-consumer` and `cancel-consumer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConsumerChange {
    /// Engine-native worker name.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub worker_name: String,
    /// The queue.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub queue: String,
}

impl ConsumerChange {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_name("worker_name", &self.worker_name)?;
        check_name("queue", &self.queue)
    }
}

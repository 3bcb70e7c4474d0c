//! `pool-resize`: grow (positive delta) or shrink (negative) a worker's pool.

use serde::{Deserialize, Serialize};

use super::{FieldError, check_name};

/// Largest change in one command, either way.
pub const MAX_DELTA: i32 = 100;

/// Payload of `pool-resize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PoolResize {
    /// Engine-native worker name.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub worker_name: String,
    /// Processes to add (positive) or remove (negative): -100..=100, not 0.
    #[cfg_attr(feature = "openapi", schema(minimum = -100, maximum = 100))]
    pub delta: i32,
}

impl PoolResize {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_name("worker_name", &self.worker_name)?;
        if self.delta == 0 || !(-MAX_DELTA..=MAX_DELTA).contains(&self.delta) {
            return Err(FieldError::new(
                "delta",
                format!(
                    "must be between -{MAX_DELTA} and {MAX_DELTA} and not 0, got {}",
                    self.delta
                ),
            ));
        }
        Ok(())
    }
}

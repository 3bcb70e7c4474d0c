//! `retry-task`: run one task again, optionally with replaced keyword arguments.

use serde::{Deserialize, Serialize};

use super::{FieldError, check_engine, check_name};

/// Largest `override_kwargs`, as compact JSON: 64 KiB.
pub const MAX_OVERRIDE_KWARGS_BYTES: usize = 64 * 1024;

/// Payload of `retry-task`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetryTask {
    /// Engine of the task (`celery`).
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z][a-z0-9_-]{0,31}$"))]
    pub engine: String,
    /// The engine's task id.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub task_id: String,
    /// Keyword arguments to use instead of the original ones (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub override_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
}

impl RetryTask {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_engine(&self.engine)?;
        check_name("task_id", &self.task_id)?;
        if let Some(kwargs) = &self.override_kwargs {
            let size = serde_json::to_vec(kwargs)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if size > MAX_OVERRIDE_KWARGS_BYTES {
                return Err(FieldError::new(
                    "override_kwargs",
                    format!(
                        "is {size} bytes of JSON; at most {MAX_OVERRIDE_KWARGS_BYTES} (64 KiB) allowed"
                    ),
                ));
            }
        }
        Ok(())
    }
}

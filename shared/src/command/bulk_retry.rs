//! `bulk-retry`: run again up to `max` tasks that match a filter.

use serde::{Deserialize, Serialize};

use super::{FieldError, check_name};

/// Most tasks one bulk retry may touch.
pub const MAX_BULK_RETRY: u32 = 10_000;

/// Task states a filter may name (the states of the Tasks API).
pub const TASK_STATES: [&str; 7] = [
    "received",
    "started",
    "succeeded",
    "failed",
    "cancelled",
    "retried",
    "lost",
];

/// Which tasks to retry; fields left out match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkRetryFilter {
    /// Task state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Queue name, exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Task name, exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Also take tasks an earlier retry already ran again (left out by default, so running the
    /// same bulk retry twice does not retry the same failures twice).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_retried: bool,
}

/// Payload of `bulk-retry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkRetry {
    /// Which tasks.
    #[serde(deserialize_with = "super::object_only")]
    pub filter: BulkRetryFilter,
    /// At most this many, 1..=10000.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub max: u32,
}

impl BulkRetry {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !(1..=MAX_BULK_RETRY).contains(&self.max) {
            return Err(FieldError::new(
                "max",
                format!("must be between 1 and {MAX_BULK_RETRY}, got {}", self.max),
            ));
        }
        if let Some(state) = &self.filter.state
            && !TASK_STATES.contains(&state.as_str())
        {
            return Err(FieldError::new(
                "filter.state",
                format!("unknown state {state:?}; one of {}", TASK_STATES.join(", ")),
            ));
        }
        if let Some(queue) = &self.filter.queue {
            check_name("filter.queue", queue)?;
        }
        if let Some(name) = &self.filter.name {
            check_name("filter.name", name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_is_an_object_never_an_array_of_its_fields() {
        let read = |body: serde_json::Value| serde_json::from_value::<BulkRetry>(body);
        let ok = read(serde_json::json!({"filter": {"state": "failed"}, "max": 5})).unwrap();
        assert_eq!(ok.filter.state.as_deref(), Some("failed"));
        for filter in [
            serde_json::json!([null, null, null]),
            serde_json::json!(["failed"]),
            serde_json::json!(null),
            serde_json::json!("failed"),
        ] {
            let err = read(serde_json::json!({"filter": filter, "max": 5})).unwrap_err();
            assert!(err.to_string().contains("a JSON object"), "{filter}: {err}");
        }
    }
}

//! `purge-queue`: drop every message waiting in a queue. Needs a confirm token bound to the
//! depth the operator saw, or an explicit `force` (admins only, flagged critical).

use serde::{Deserialize, Serialize};

use super::{FieldError, check_name};

/// Payload of `purge-queue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PurgeQueue {
    /// The queue.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub queue: String,
    /// HMAC over (agent id, queue, observed depth), from `GET .../agents/{id}/queues`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_token: Option<String>,
    /// Purge without a confirm token.
    #[serde(default)]
    pub force: bool,
}

impl PurgeQueue {
    /// Checks the bounds (the token itself is checked by the brain against the last depth).
    pub fn validate(&self) -> Result<(), FieldError> {
        check_name("queue", &self.queue)?;
        match (&self.confirm_token, self.force) {
            (None, false) => Err(FieldError::new(
                "confirm_token",
                "required unless force is true: read the queue's depth and token from GET .../agents/{agent_id}/queues",
            )),
            (Some(token), _) if token.is_empty() => {
                Err(FieldError::new("confirm_token", "must not be empty"))
            }
            _ => Ok(()),
        }
    }
}

//! `rate-limit`: set a task's rate limit in Celery's grammar, on one worker or all of them.

use serde::{Deserialize, Serialize};

use super::{FieldError, check_name};

/// Payload of `rate-limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Task name, e.g. `myapp.tasks.send_email`.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub task_name: String,
    /// `^\d+(/[smh])?$`; `"0"` clears the limit.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9]{1,9}(/[smh])?$"))]
    pub rate: String,
    /// One worker; omitted or empty means every worker (a global throttle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_name: Option<String>,
}

impl RateLimit {
    /// Whether this throttles every worker at once.
    pub fn is_global(&self) -> bool {
        self.worker_name.as_deref().is_none_or(str::is_empty)
    }

    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_name("task_name", &self.task_name)?;
        if !valid_rate(&self.rate) {
            return Err(FieldError::new(
                "rate",
                format!(
                    "{:?} must match ^\\d+(/[smh])?$ (e.g. 100/m; \"0\" clears)",
                    self.rate
                ),
            ));
        }
        match &self.worker_name {
            Some(name) if !name.is_empty() => check_name("worker_name", name),
            _ => Ok(()),
        }
    }
}

/// Celery's rate grammar: digits, optionally `/s`, `/m` or `/h`. At most 9 digits so the
/// number fits any integer type on the worker side.
fn valid_rate(rate: &str) -> bool {
    let (number, unit) = match rate.split_once('/') {
        Some((n, u)) => (n, Some(u)),
        None => (rate, None),
    };
    !number.is_empty()
        && number.len() <= 9
        && number.bytes().all(|b| b.is_ascii_digit())
        && unit.is_none_or(|u| matches!(u, "s" | "m" | "h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_grammar() {
        for ok in ["0", "1", "100/m", "5/s", "10/h", "999999999"] {
            assert!(valid_rate(ok), "{ok}");
        }
        for bad in [
            "",
            "/m",
            "1/",
            "1/d",
            "1.5/m",
            "-1",
            "10/mm",
            "a/m",
            " 1",
            "1000000000",
        ] {
            assert!(!valid_rate(bad), "{bad}");
        }
    }
}

//! `ping-workers`: ask workers whether they are alive (what a health-check schedule sends).

use serde::{Deserialize, Serialize};

use super::{FieldError, check_name};

/// Most workers one ping names.
pub const MAX_PING_WORKERS: usize = 1000;

/// Payload of `ping-workers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PingWorkers {
    /// The workers that must answer (engine-native names, at most 1000). Empty: every worker
    /// listening on the broker is asked, and the answer says who replied.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub worker_names: Vec<String>,
}

impl PingWorkers {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.worker_names.len() > MAX_PING_WORKERS {
            return Err(FieldError::new(
                "worker_names",
                format!(
                    "at most {MAX_PING_WORKERS} workers, got {}",
                    self.worker_names.len()
                ),
            ));
        }
        for (i, name) in self.worker_names.iter().enumerate() {
            check_name(&format!("worker_names[{i}]"), name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_at_both_edges() {
        let names = |n: usize| PingWorkers {
            worker_names: (0..n).map(|i| format!("celery@w{i}")).collect(),
        };
        assert!(names(0).validate().is_ok());
        assert!(names(MAX_PING_WORKERS).validate().is_ok());
        assert_eq!(
            names(MAX_PING_WORKERS + 1).validate().unwrap_err().field,
            "worker_names"
        );
        let blank = PingWorkers {
            worker_names: vec!["celery@a".into(), " ".into()],
        };
        assert_eq!(blank.validate().unwrap_err().field, "worker_names[1]");
    }
}

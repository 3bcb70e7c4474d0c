//! Project roles, ordered so that a check is one comparison.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a member may do in one project. The derive order is the privilege order:
/// `Viewer < Operator < Admin`, so "at least operator" is `role >= Role::Operator`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything in the project.
    Viewer,
    /// Also issues routine commands (retry, cancel, bulk retry).
    Operator,
    /// Also manages members and agents and issues destructive commands.
    Admin,
}

impl Role {
    /// Every role, least privileged first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

taskward_shared::spelled_enum!(Role, |other| format!(
    "unknown role {other:?}: expected viewer, operator or admin"
));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_privilege_and_round_trip() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for role in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("owner".parse::<Role>().is_err());
    }
}

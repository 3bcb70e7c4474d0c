//! The REST API under `/api/v1`: one module per resource, each with its request and response
//! types and handlers annotated for the OpenAPI document.

pub mod agents;
pub mod audit;
pub mod cleanup;
pub mod commands;
pub mod common_responses;
pub mod extract;
pub mod health;
pub mod members;
pub mod projects;
pub mod runtime;
pub mod schedules;
pub mod tasks;
pub mod tokens;
pub mod users;

pub use crate::clock::timestamp;

/// The OpenAPI tag of each resource, so the document groups routes like this module does.
pub mod tags {
    /// Projects.
    pub const PROJECTS: &str = "projects";
    /// Project members.
    pub const MEMBERS: &str = "members";
    /// Users (site admin).
    pub const USERS: &str = "users";
    /// The caller's API tokens.
    pub const TOKENS: &str = "tokens";
    /// Agents registered in a project.
    pub const AGENTS: &str = "agents";
    /// Task records.
    pub const TASKS: &str = "tasks";
    /// Commands to agents.
    pub const COMMANDS: &str = "commands";
    /// Schedules of operator actions.
    pub const SCHEDULES: &str = "schedules";
    /// Cleanup tasks (long deletions).
    pub const CLEANUP: &str = "cleanup-tasks";
    /// The signed audit log.
    pub const AUDIT: &str = "audit";
    /// Liveness, readiness, metrics.
    pub const OPERATIONS: &str = "operations";
}

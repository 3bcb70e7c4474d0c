//! The entities the grammar knows, field by field. Adding a field here makes it filterable and
//! sortable everywhere; nothing else names columns.

use super::{Entity, Field, Kind, Relation};

const fn field(name: &'static str, kind: Kind, nullable: bool) -> Field {
    Field {
        name,
        column: name,
        kind,
        nullable,
    }
}

const fn renamed(name: &'static str, column: &'static str, kind: Kind, nullable: bool) -> Field {
    Field {
        name,
        column,
        kind,
        nullable,
    }
}

/// Task records.
pub static TASKS: Entity = Entity {
    name: "task",
    table: "tasks",
    fields: &[
        field("id", Kind::Text, false),
        field("engine", Kind::Text, false),
        field("task_id", Kind::Text, false),
        field("name", Kind::Text, true),
        field("queue", Kind::Text, true),
        field("state", Kind::Text, false),
        field("priority", Kind::Text, true),
        field("worker_name", Kind::Text, true),
        field("agent_id", Kind::Text, true),
        field("result", Kind::Text, true),
        field("exception", Kind::Text, true),
        field("retry_count", Kind::Int, false),
        field("eta", Kind::Time, true),
        field("received_at", Kind::Time, true),
        field("started_at", Kind::Time, true),
        field("finished_at", Kind::Time, true),
        field("runtime_ms", Kind::Int, true),
        field("parent_task_id", Kind::Text, true),
        field("root_task_id", Kind::Text, true),
        field("created_at", Kind::Time, false),
        field("updated_at", Kind::Time, false),
    ],
    relations: &[
        Relation {
            name: "worker",
            entity: &WORKERS,
            link: "{r}.agent_id = {o}.agent_id AND {r}.name = {o}.worker_name",
        },
        Relation {
            name: "agent",
            entity: &AGENTS,
            link: "{r}.id = {o}.agent_id",
        },
        Relation {
            name: "parent",
            entity: &TASKS,
            link: "{r}.project_id = {o}.project_id AND {r}.engine = {o}.engine \
                   AND {r}.task_id = {o}.parent_task_id",
        },
    ],
    tiebreak: "id",
};

/// Workers as agents report them.
pub static WORKERS: Entity = Entity {
    name: "worker",
    table: "workers",
    fields: &[
        field("name", Kind::Text, false),
        field("online", Kind::Bool, false),
        field("pool", Kind::Text, true),
        field("concurrency", Kind::Int, true),
        field("last_heartbeat_at", Kind::Time, true),
    ],
    relations: &[],
    tiebreak: "name",
};

/// Agents.
pub static AGENTS: Entity = Entity {
    name: "agent",
    table: "agents",
    fields: &[
        field("id", Kind::Text, false),
        field("name", Kind::Text, false),
        field("hostname", Kind::Text, true),
        field("preserve", Kind::Bool, false),
        field("last_seen_at", Kind::Time, true),
        field("created_at", Kind::Time, false),
    ],
    relations: &[],
    tiebreak: "id",
};

/// Commands with their current status.
pub static COMMANDS: Entity = Entity {
    name: "command",
    table: "commands",
    fields: &[
        field("id", Kind::Text, false),
        field("agent_id", Kind::Text, false),
        field("kind", Kind::Text, false),
        field("issuer_type", Kind::Text, false),
        field("issuer_id", Kind::Text, false),
        field("issuer_name", Kind::Text, false),
        field("idempotency_key", Kind::Text, true),
        field("critical", Kind::Bool, false),
        field("global_throttle", Kind::Bool, false),
        field("issued_at", Kind::Time, false),
        field("expires_at", Kind::Time, false),
        field("status", Kind::Text, false),
        field("detail", Kind::Text, true),
        field("late", Kind::Bool, false),
        field("updated_at", Kind::Time, false),
    ],
    relations: &[
        Relation {
            name: "agent",
            entity: &AGENTS,
            link: "{r}.id = {o}.agent_id",
        },
        Relation {
            name: "issuer",
            entity: &USERS,
            link: "{r}.id = {o}.issuer_id",
        },
    ],
    tiebreak: "id",
};

/// Users (a command's issuer).
pub static USERS: Entity = Entity {
    name: "user",
    table: "users",
    fields: &[
        field("id", Kind::Text, false),
        field("name", Kind::Text, false),
        field("site_admin", Kind::Bool, false),
        field("created_at", Kind::Time, false),
    ],
    relations: &[],
    tiebreak: "id",
};

/// Cleanup tasks (camelCase names, as their API speaks).
pub static CLEANUP_TASKS: Entity = Entity {
    name: "cleanup task",
    table: "cleanup_tasks",
    fields: &[
        field("id", Kind::Text, false),
        renamed("parentId", "parent_id", Kind::Text, true),
        renamed("projectId", "project_id", Kind::Text, false),
        renamed("sourceEventId", "source_event_id", Kind::Text, true),
        renamed("resourceType", "resource_type", Kind::Text, false),
        renamed("resourceId", "resource_id", Kind::Text, false),
        field("status", Kind::Text, false),
        field("attempts", Kind::Int, false),
        renamed("lastError", "last_error", Kind::Text, true),
        renamed("createdAt", "created_at", Kind::Time, false),
        renamed("updatedAt", "updated_at", Kind::Time, false),
        renamed("completedAt", "completed_at", Kind::Time, true),
    ],
    relations: &[Relation {
        name: "parent",
        entity: &CLEANUP_TASKS,
        link: "{r}.id = {o}.parent_id",
    }],
    tiebreak: "id",
};

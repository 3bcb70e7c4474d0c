//! Commands: the row written when an operator issues one, its current status, idempotency
//! keys, and the queue depths purge confirmations bind to.
//!
//! Every status change appends a signed outcome row to the project's chain and updates the
//! `command_status` cache in the same transaction; the `commands` row itself never changes.

use diesel::prelude::*;

use taskward_shared::command::{CommandKind, IssuedCommand};

use super::audit::{self, AuditContext};
use super::schema::{command_status, commands, idempotency_keys, queue_depths};
use super::text_enum::{Parsed, text_enum};
use super::{AnyConnection, StoreResult, now_ms};
use crate::query::filter::{Filter, Scalar};
use crate::query::order::SortKey;
use crate::query::sql::{Sql, dialect_of, load_sql};

/// Where a command is in its life.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Minted and signed; not yet on an agent.
    Issued,
    /// Delivered to the agent.
    Dispatched,
    /// The agent ran it and it worked.
    Succeeded,
    /// The agent ran it and it failed, or refused it.
    Failed,
    /// No result by the deadline.
    TimedOut,
}

impl CommandStatus {
    /// Every status.
    pub const ALL: [CommandStatus; 5] = [
        CommandStatus::Issued,
        CommandStatus::Dispatched,
        CommandStatus::Succeeded,
        CommandStatus::Failed,
        CommandStatus::TimedOut,
    ];

    /// The stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Issued => "issued",
            CommandStatus::Dispatched => "dispatched",
            CommandStatus::Succeeded => "succeeded",
            CommandStatus::Failed => "failed",
            CommandStatus::TimedOut => "timed_out",
        }
    }

    /// Whether no further change can happen.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CommandStatus::Succeeded | CommandStatus::Failed | CommandStatus::TimedOut
        )
    }
}

taskward_shared::spelled_enum!(CommandStatus, |s| format!(
    "unknown status {s:?}: one of issued, dispatched, succeeded, failed, timed_out"
));

text_enum!(CommandStatus);

/// A command with its current status (`commands` joined with `command_status`).
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = commands)]
pub struct CommandRecord {
    /// Command id (UUID).
    pub id: String,
    /// Owning project.
    pub project_id: String,
    /// Audience: the agent that must run it.
    pub agent_id: String,
    /// Kind, e.g. `retry-task`.
    #[diesel(deserialize_as = Parsed<CommandKind>)]
    pub kind: CommandKind,
    /// Validated payload, JSON.
    pub payload: String,
    /// `user` or `schedule`.
    pub issuer_type: String,
    /// Issuer id.
    pub issuer_id: String,
    /// Issuer name.
    pub issuer_name: String,
    /// The caller's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// Flagged critical (forced purge, global throttle).
    pub critical: bool,
    /// A rate limit for every worker.
    pub global_throttle: bool,
    /// The queue depth a purge is bound to.
    pub bound_depth: Option<i64>,
    /// Mint time, ms.
    pub issued_at: i64,
    /// After this the agent refuses it and the brain times it out, ms.
    pub expires_at: i64,
    /// Chain of its audit rows.
    pub audit_chain: String,
    /// Seq of its `command.issued` row.
    pub audit_seq: i64,
    /// Current status.
    #[diesel(select_expression = command_status::status)]
    #[diesel(sql_type = diesel::sql_types::Text)]
    #[diesel(deserialize_as = Parsed<CommandStatus>)]
    pub status: CommandStatus,
    /// Outcome detail or refusal reason.
    #[diesel(select_expression = command_status::detail)]
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub detail: Option<String>,
    /// Whether the result arrived after the deadline.
    #[diesel(select_expression = command_status::late)]
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub late: bool,
    /// When the brain stops waiting for the result, ms.
    #[diesel(select_expression = command_status::expires_at)]
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub deadline_at: i64,
    /// Last status change, ms.
    #[diesel(select_expression = command_status::updated_at)]
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub updated_at: i64,
}

/// Commands with their status as one relation, so the query grammar sees one row per command
/// (alias `c`; column names are the [`CommandRecord`] field names).
const COMMANDS_WITH_STATUS: &str = "(SELECT c.*, s.status, s.detail, s.late, \
     s.expires_at AS deadline_at, s.updated_at FROM commands c \
     JOIN command_status s ON s.command_id = c.id) c";

/// One page of a project's commands matching `filter`, in `order` (with its tiebreak), after
/// `position` (a keyset cursor's values).
pub fn page(
    conn: &mut AnyConnection,
    project_id: &str,
    filter: &Filter,
    order: &[SortKey],
    position: Option<&[Option<Scalar>]>,
    limit: i64,
) -> StoreResult<Vec<CommandRecord>> {
    let mut sql = Sql::new(dialect_of(conn));
    let select = |sql: &mut Sql| {
        sql.push(&format!(
            "SELECT c.* FROM {COMMANDS_WITH_STATUS} WHERE c.project_id = "
        ))
        .bind(Scalar::Text(project_id.to_owned()))
        .push(" AND ")
        .budget_check();
        sql.filter("c", filter);
    };
    sql.keyset_page("c", order, position, limit, &select);
    Ok(load_sql!(conn, sql, CommandRecord)?)
}

/// The sort values of a command, as a cursor stores them (times in ms).
pub fn position(row: &CommandRecord, order: &[SortKey]) -> Vec<serde_json::Value> {
    use serde_json::Value;
    order
        .iter()
        .map(|key| match key.field.name {
            "id" => Value::String(row.id.clone()),
            "agent_id" => Value::String(row.agent_id.clone()),
            "kind" => Value::String(row.kind.as_str().to_owned()),
            "issuer_type" => Value::String(row.issuer_type.clone()),
            "issuer_id" => Value::String(row.issuer_id.clone()),
            "issuer_name" => Value::String(row.issuer_name.clone()),
            "idempotency_key" => row
                .idempotency_key
                .clone()
                .map_or(Value::Null, Value::String),
            "critical" => Value::Bool(row.critical),
            "global_throttle" => Value::Bool(row.global_throttle),
            "issued_at" => Value::from(row.issued_at),
            "expires_at" => Value::from(row.expires_at),
            "status" => Value::String(row.status.as_str().to_owned()),
            "detail" => row.detail.clone().map_or(Value::Null, Value::String),
            "late" => Value::Bool(row.late),
            "updated_at" => Value::from(row.updated_at),
            other => unreachable!("command field {other} has no position"),
        })
        .collect()
}

/// A command about to be minted.
#[derive(Debug, Clone)]
pub struct NewCommand {
    /// Fresh id.
    pub id: String,
    /// Owning project.
    pub project_id: String,
    /// Audience.
    pub agent_id: String,
    /// Kind.
    pub kind: CommandKind,
    /// Validated payload.
    pub payload: serde_json::Value,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Critical flag.
    pub critical: bool,
    /// Global throttle flag.
    pub global_throttle: bool,
    /// Depth a purge is bound to.
    pub bound_depth: Option<u64>,
    /// Time to live, ms.
    pub ttl_ms: i64,
    /// Context resolved for the agent (signed), e.g. a retried task's arguments.
    pub resolved: Option<serde_json::Value>,
}

/// Mints a command: appends the signed `command.issued` row (which is what the agent will
/// verify), then writes the command and its status. Runs inside the caller's transaction.
pub fn mint(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    new: NewCommand,
) -> StoreResult<CommandRecord> {
    let issued_at = now_ms();
    let expires_at = issued_at + new.ttl_ms;
    let chain = audit::project_chain(&new.project_id);
    let issued = IssuedCommand {
        id: new.id.clone(),
        project_id: new.project_id.clone(),
        audience: new.agent_id.clone(),
        kind: new.kind,
        payload: new.payload.clone(),
        issued_at_ms: issued_at.to_string(),
        expires_at_ms: expires_at.to_string(),
        critical: new.critical,
        global_throttle: new.global_throttle,
        bound_depth: new.bound_depth.map(|d| d.to_string()),
        idempotency_key: new.idempotency_key.clone(),
        resolved: new.resolved.clone(),
    };
    let statement = serde_json::json!({ "command": issued });
    let row = audit::append(
        conn,
        ctx,
        &chain,
        "command.issued",
        Some(&new.id),
        statement,
    )?;
    let issuer_type = ctx.actor.kind.as_str();
    diesel::insert_into(commands::table)
        .values((
            commands::id.eq(&new.id),
            commands::project_id.eq(&new.project_id),
            commands::agent_id.eq(&new.agent_id),
            commands::kind.eq(new.kind.as_str()),
            commands::payload.eq(new.payload.to_string()),
            commands::issuer_type.eq(issuer_type),
            commands::issuer_id.eq(&ctx.actor.id),
            commands::issuer_name.eq(&ctx.actor.name),
            commands::idempotency_key.eq(&new.idempotency_key),
            commands::critical.eq(new.critical),
            commands::global_throttle.eq(new.global_throttle),
            commands::bound_depth.eq(new.bound_depth.map(|d| d as i64)),
            commands::issued_at.eq(issued_at),
            commands::expires_at.eq(expires_at),
            commands::audit_chain.eq(&chain),
            commands::audit_seq.eq(row.seq as i64),
        ))
        .execute(conn)?;
    // The result deadline: the kind's own, never past the signed expiry.
    let deadline = (issued_at + new.kind.result_deadline_secs() as i64 * 1000).min(expires_at);
    diesel::insert_into(command_status::table)
        .values((
            command_status::command_id.eq(&new.id),
            command_status::project_id.eq(&new.project_id),
            command_status::status.eq(CommandStatus::Issued.as_str()),
            command_status::expires_at.eq(deadline),
            command_status::updated_at.eq(issued_at),
        ))
        .execute(conn)?;
    find(conn, &new.project_id, &new.id)
}

/// One command of a project (`NotFound` for ids of other projects).
pub fn find(conn: &mut AnyConnection, project_id: &str, id: &str) -> StoreResult<CommandRecord> {
    Ok(commands::table
        .inner_join(command_status::table)
        .filter(commands::id.eq(id))
        .filter(commands::project_id.eq(project_id))
        .select(CommandRecord::as_select())
        .first(conn)?)
}

/// Records an outcome as [`crate::commands::lifecycle`] decided it from `command` as read:
/// moves the status cache (or, for a result after the command ended, `late`, sets the late
/// flag, status unchanged) and appends the signed `command.<status>` row. Returns the updated
/// record, or `None` when the command is no longer as read (another result, or the timeout
/// sweeper, moved it since): nothing is written then, and the caller decides again.
///
/// The status move is a conditional update (`WHERE status = <as read>`, and `AND late = false`
/// for a late result) made before the row is appended. On PostgreSQL, of two transactions
/// racing on one command the second waits for the first's row lock and then finds the
/// condition false, so at most one outcome row and at most one late row are ever appended per
/// command; on SQLite the write transaction holds the database lock throughout.
pub fn record_outcome(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    command: &CommandRecord,
    status: CommandStatus,
    late: bool,
    detail: Option<&str>,
    evidence: Option<serde_json::Value>,
) -> StoreResult<Option<CommandRecord>> {
    let as_read = command_status::table
        .find(&command.id)
        .filter(command_status::status.eq(command.status.as_str()));
    let moved = if late {
        diesel::update(as_read.filter(command_status::late.eq(false)))
            .set(command_status::late.eq(true))
            .execute(conn)?
    } else {
        diesel::update(as_read)
            .set((
                command_status::status.eq(status.as_str()),
                command_status::detail.eq(detail),
                command_status::updated_at.eq(now_ms()),
            ))
            .execute(conn)?
    };
    if moved == 0 {
        return Ok(None);
    }
    let payload = serde_json::json!({
        "status": status.as_str(),
        "detail": detail,
        "late": late,
        "previous_status": command.status.as_str(),
        "agent_result": evidence,
    });
    audit::append(
        conn,
        ctx,
        &command.audit_chain,
        &format!("command.{}", status.as_str()),
        Some(&command.id),
        payload,
    )?;
    find(conn, &command.project_id, &command.id).map(Some)
}

/// Reads a command (of any project) after taking its status row's lock for the rest of the
/// transaction (PostgreSQL `SELECT … FOR UPDATE`; on SQLite the write transaction already
/// holds the database lock): what is decided from it stays true until commit. For results,
/// where deciding needs more than the status (was this very result recorded already?).
pub fn find_any_locked(conn: &mut AnyConnection, id: &str) -> StoreResult<CommandRecord> {
    if let AnyConnection::Postgresql(pg) = conn {
        diesel::sql_query("SELECT 1 FROM command_status WHERE command_id = $1 FOR UPDATE")
            .bind::<diesel::sql_types::Text, _>(id)
            .execute(pg)?;
    }
    find_any(conn, id)
}

/// Open commands whose result deadline (the kind's deadline, capped by the signed expiry)
/// passed, oldest first: the timeout sweeper's work.
pub fn overdue(conn: &mut AnyConnection, now: i64, limit: i64) -> StoreResult<Vec<CommandRecord>> {
    Ok(commands::table
        .inner_join(command_status::table)
        .filter(command_status::status.eq_any([
            CommandStatus::Issued.as_str(),
            CommandStatus::Dispatched.as_str(),
        ]))
        .filter(command_status::expires_at.le(now))
        .order(command_status::expires_at.asc())
        .limit(limit)
        .select(CommandRecord::as_select())
        .load(conn)?)
}

/// How long an idempotency key holds: a retry within a day returns the first command.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// What an idempotency key already refers to.
#[derive(Debug, Clone)]
pub struct PriorUse {
    /// Hash of the first request's body.
    pub request_hash: String,
    /// The command it minted.
    pub command_id: String,
}

/// The live use of an idempotency key, dropping an expired one.
pub fn idempotency_lookup(
    conn: &mut AnyConnection,
    project_id: &str,
    issuer_id: &str,
    kind: &str,
    key: &str,
) -> StoreResult<Option<PriorUse>> {
    let scope = idempotency_keys::table
        .filter(idempotency_keys::project_id.eq(project_id))
        .filter(idempotency_keys::issuer_id.eq(issuer_id))
        .filter(idempotency_keys::kind.eq(kind))
        .filter(idempotency_keys::key.eq(key));
    let found: Option<(String, String, i64)> = scope
        .select((
            idempotency_keys::request_hash,
            idempotency_keys::command_id,
            idempotency_keys::created_at,
        ))
        .first(conn)
        .optional()?;
    match found {
        Some((request_hash, command_id, created_at))
            if created_at > now_ms() - IDEMPOTENCY_WINDOW_MS =>
        {
            Ok(Some(PriorUse {
                request_hash,
                command_id,
            }))
        }
        Some(_) => {
            diesel::delete(scope).execute(conn)?;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Remembers that `key` minted `command_id`.
pub fn idempotency_remember(
    conn: &mut AnyConnection,
    project_id: &str,
    issuer_id: &str,
    kind: &str,
    key: &str,
    request_hash: &str,
    command_id: &str,
) -> StoreResult<()> {
    diesel::insert_into(idempotency_keys::table)
        .values((
            idempotency_keys::project_id.eq(project_id),
            idempotency_keys::issuer_id.eq(issuer_id),
            idempotency_keys::kind.eq(kind),
            idempotency_keys::key.eq(key),
            idempotency_keys::request_hash.eq(request_hash),
            idempotency_keys::command_id.eq(command_id),
            idempotency_keys::created_at.eq(now_ms()),
        ))
        .execute(conn)?;
    Ok(())
}

/// A queue's last reported depth.
#[derive(Debug, Clone, Queryable)]
pub struct QueueDepth {
    /// Queue name.
    pub queue: String,
    /// Messages waiting.
    pub depth: i64,
    /// When the agent observed it, ms.
    pub observed_at: i64,
}

/// The queues an agent reported, by name.
pub fn queue_depths(conn: &mut AnyConnection, agent_id: &str) -> StoreResult<Vec<QueueDepth>> {
    Ok(queue_depths::table
        .filter(queue_depths::agent_id.eq(agent_id))
        .order(queue_depths::queue.asc())
        .select((
            queue_depths::queue,
            queue_depths::depth,
            queue_depths::observed_at,
        ))
        .load(conn)?)
}

/// One queue's last reported depth.
pub fn queue_depth(
    conn: &mut AnyConnection,
    agent_id: &str,
    queue: &str,
) -> StoreResult<Option<QueueDepth>> {
    Ok(queue_depths::table
        .find((agent_id, queue))
        .select((
            queue_depths::queue,
            queue_depths::depth,
            queue_depths::observed_at,
        ))
        .first(conn)
        .optional()?)
}

/// Stores a depth an agent reported (the agent link calls this; tests too).
pub fn report_queue_depth(
    conn: &mut AnyConnection,
    agent_id: &str,
    queue: &str,
    depth: u64,
    observed_at: i64,
) -> StoreResult<()> {
    let updated = diesel::update(queue_depths::table.find((agent_id, queue)))
        .set((
            queue_depths::depth.eq(depth as i64),
            queue_depths::observed_at.eq(observed_at),
        ))
        .execute(conn)?;
    if updated == 0 {
        diesel::insert_into(queue_depths::table)
            .values((
                queue_depths::agent_id.eq(agent_id),
                queue_depths::queue.eq(queue),
                queue_depths::depth.eq(depth as i64),
                queue_depths::observed_at.eq(observed_at),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Commands for an agent that it has not claimed yet and that have not expired, oldest first,
/// with their signed rows: what the hub sends on every connect and after every mint.
pub fn pending_for_agent(
    conn: &mut AnyConnection,
    agent_id: &str,
    now: i64,
) -> StoreResult<Vec<(CommandRecord, taskward_shared::audit::AuditRow)>> {
    let records: Vec<CommandRecord> = commands::table
        .inner_join(command_status::table)
        .filter(commands::agent_id.eq(agent_id))
        .filter(command_status::status.eq(CommandStatus::Issued.as_str()))
        .filter(commands::expires_at.gt(now))
        .order((commands::issued_at.asc(), commands::id.asc()))
        .limit(1000)
        .select(CommandRecord::as_select())
        .load(conn)?;
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let row = audit::row_at(conn, &record.audit_chain, record.audit_seq as u64)?;
        out.push((record, row));
    }
    Ok(out)
}

/// A command by id alone (the agent link knows the agent, which it checks against the command).
pub fn find_any(conn: &mut AnyConnection, id: &str) -> StoreResult<CommandRecord> {
    Ok(commands::table
        .inner_join(command_status::table)
        .filter(commands::id.eq(id))
        .select(CommandRecord::as_select())
        .first(conn)?)
}

/// Commands of a project still waiting for their outcome (issued or dispatched).
pub fn count_in_flight(conn: &mut AnyConnection, project_id: &str) -> StoreResult<i64> {
    Ok(command_status::table
        .filter(command_status::project_id.eq(project_id))
        .filter(command_status::status.eq_any([
            CommandStatus::Issued.as_str(),
            CommandStatus::Dispatched.as_str(),
        ]))
        .count()
        .get_result(conn)?)
}

/// The newest command status change in a project, ms (0 without commands): half of what live
/// dashboard pages watch (index `command_status_by_project`).
pub fn last_status_change(conn: &mut AnyConnection, project_id: &str) -> StoreResult<i64> {
    let newest: Option<i64> = command_status::table
        .filter(command_status::project_id.eq(project_id))
        .select(diesel::dsl::max(command_status::updated_at))
        .first(conn)?;
    Ok(newest.unwrap_or(0))
}

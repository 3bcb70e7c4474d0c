//! Minting a command, in the caller's write transaction: an idempotent replay returns the
//! first command; otherwise the agent must belong to the project, a purge's confirm token
//! must match the depth the agent last reported, a cancel's task must be one the project has
//! recorded, a retry's task must be retryable; then the
//! signed `command.issued` row and the command are written together.

use taskward_shared::command::{Command, PurgeQueue};
use taskward_shared::crypto::confirm_token_matches;
use uuid::Uuid;

use super::retry::{resolve_bulk, resolve_retry};
use crate::refusal::{Refusal, or_not_found};
use crate::store::audit::AuditContext;
use crate::store::commands::{self, CommandRecord, NewCommand};
use crate::store::{AnyConnection, StoreError, agents, new_id, tasks};

/// Everything a command needs at mint time, whoever issues it: a caller through the API, or a
/// schedule firing (then `ctx` names the schedule and `issuer_id` is its id).
#[derive(Clone)]
pub struct Issue {
    /// Signer and actor of the `command.issued` row.
    pub ctx: AuditContext,
    /// Whose idempotency keys this command's key is looked up among.
    pub issuer_id: String,
    /// The project.
    pub project_id: String,
    /// The agent that must run it.
    pub agent_id: Uuid,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// The validated command.
    pub command: Command,
    /// The confirm-token secret (purges).
    pub secret: Vec<u8>,
    /// The command's lifetime.
    pub ttl_ms: i64,
}

/// A minted command, or the first one of an idempotent replay.
#[derive(Debug)]
pub struct Issued {
    /// The command.
    pub record: CommandRecord,
    /// True when the idempotency key had been used for this same request: nothing new was
    /// minted and nobody needs waking.
    pub replay: bool,
}

impl Issued {
    /// Logs a new command (critical ones at WARN, so they stand out in any log pipeline).
    pub fn log(&self) {
        if self.replay {
            return;
        }
        let record = &self.record;
        tracing::info!(command = %record.id, kind = %record.kind, critical = record.critical,
            global_throttle = record.global_throttle, "command issued");
        if record.critical {
            tracing::warn!(command = %record.id, kind = %record.kind, "critical command issued");
        }
    }
}

/// Mints `issue` in the caller's transaction (see the module header for the checks).
pub fn issue_in(conn: &mut AnyConnection, issue: &Issue) -> Result<Issued, Refusal> {
    let Issue {
        ctx,
        issuer_id,
        project_id,
        idempotency_key,
        command,
        ttl_ms,
        ..
    } = issue;
    let kind = command.kind();
    let agent_id = issue.agent_id.to_string();
    let request_hash = super::request_hash(&issue.agent_id, command);
    if let Some(key) = idempotency_key
        && let Some(prior) =
            commands::idempotency_lookup(conn, project_id, issuer_id, kind.as_str(), key)?
    {
        if prior.request_hash != request_hash {
            return Err(Refusal::Conflict(format!(
                "idempotency_key {key:?} was used in the last 24 hours for a different {kind} request"
            )));
        }
        let record = commands::find(conn, project_id, &prior.command_id)?;
        return Ok(Issued {
            record,
            replay: true,
        });
    }
    or_not_found(agents::find(conn, project_id, &agent_id), || {
        format!("agent {agent_id}")
    })?;
    if let Command::CancelTask(cancel) = command {
        own_or_unseen_task(conn, project_id, &cancel.engine, &cancel.task_id)?;
    }
    let bound_depth = confirmed_depth(conn, issue, &agent_id)?;
    // Signed as JSON: a struct's fields and the brain's earlier `json!` maps have the same
    // canonical bytes (RFC 8785 sorts keys), so a verifier sees no difference.
    let (resolved, retried_rows) = match command {
        Command::RetryTask(retry) => {
            let r = resolve_retry(conn, project_id, retry)?;
            (Some(as_json(&r.spec)), r.rows)
        }
        Command::BulkRetry(bulk) => {
            let r = resolve_bulk(conn, project_id, bulk)?;
            (Some(as_json(&r.spec)), r.rows)
        }
        _ => (None, Vec::new()),
    };
    let global_throttle = matches!(command, Command::RateLimit(r) if r.is_global());
    let id = new_id();
    let record = commands::mint(
        conn,
        ctx,
        NewCommand {
            id: id.clone(),
            project_id: project_id.clone(),
            agent_id,
            kind,
            payload: command.payload(),
            idempotency_key: idempotency_key.clone(),
            critical: command.is_critical(),
            global_throttle,
            bound_depth,
            ttl_ms: *ttl_ms,
            resolved,
        },
    )?;
    // In the same transaction: a later bulk retry skips these originals.
    tasks::mark_retried(conn, &retried_rows, &id, record.issued_at)?;
    if let Some(key) = idempotency_key {
        commands::idempotency_remember(
            conn,
            project_id,
            issuer_id,
            kind.as_str(),
            key,
            &request_hash,
            &id,
        )?;
    }
    Ok(Issued {
        record,
        replay: false,
    })
}

fn as_json(spec: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(spec).expect("retry specs serialize")
}

/// A cancel may name a task no agent has reported yet (a message still queued: revoking it
/// early is the point), but never a task another project recorded: that would reach across
/// projects. Retries, which need the task's record, refuse unknown tasks in `retry.rs`.
fn own_or_unseen_task(
    conn: &mut AnyConnection,
    project_id: &str,
    engine: &str,
    task_id: &str,
) -> Result<(), Refusal> {
    match tasks::find(conn, project_id, engine, task_id) {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound)
            if tasks::recorded_elsewhere(conn, project_id, engine, task_id)? =>
        {
            Err(Refusal::NotFound(format!("task {engine}/{task_id}")))
        }
        Err(StoreError::NotFound) => Ok(()),
        Err(other) => Err(other.into()),
    }
}

/// The depth a confirmed purge binds: its confirm token must have been made for the depth
/// the agent last reported. `None` for every other command (and forced purges).
fn confirmed_depth(
    conn: &mut AnyConnection,
    issue: &Issue,
    agent_id: &str,
) -> Result<Option<u64>, Refusal> {
    let Command::PurgeQueue(PurgeQueue {
        queue,
        confirm_token: Some(token),
        ..
    }) = &issue.command
    else {
        return Ok(None);
    };
    let Some(current) = commands::queue_depth(conn, agent_id, queue)? else {
        return Err(Refusal::DepthChanged {
            message: format!(
                "no depth has been reported for queue {queue} on this agent, so nothing can be confirmed; \
                 wait for the agent to report it, or purge with force (admins)"
            ),
            current_depth: None,
        });
    };
    let depth = current.depth as u64;
    if !confirm_token_matches(&issue.secret, agent_id, queue, depth, token) {
        return Err(Refusal::DepthChanged {
            message: format!(
                "queue {queue} now holds {depth} messages and the confirm_token does not match that depth; \
                 read the depth and its token again and confirm"
            ),
            current_depth: Some(depth),
        });
    }
    Ok(Some(depth))
}

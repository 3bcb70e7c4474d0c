//! Task records as the domain changes them (ingest aside, which lives in `hub` and
//! `store::tasks`): deleting records on an admin's request, with a `tasks.deleted` row saying
//! who deleted what, in the same transaction.

pub mod list;

use serde_json::{Value, json};

use crate::query::filter::Filter;
use crate::refusal::Refusal;
use crate::store::audit::{self, AuditContext};
use crate::store::{AnyConnection, StoreResult, tasks};

/// Deletes the tasks with these ids (sorted and deduplicated first), all or nothing: unknown
/// ids and ids still in flight (received or started) are refused, each list named. Returns
/// how many were deleted.
pub fn delete_ids(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    project_id: &str,
    mut ids: Vec<String>,
) -> Result<usize, Refusal> {
    ids.sort();
    ids.dedup();
    let done = tasks::delete_ids(conn, project_id, &ids)?;
    if !done.missing.is_empty() {
        return Err(Refusal::NotFound(format!(
            "tasks {} in this project",
            done.missing.join(", ")
        )));
    }
    if !done.in_flight.is_empty() {
        return Err(Refusal::invalid_field(
            "task_ids",
            format!(
                "task_ids: still in flight (received or started), so nothing was deleted: {}",
                done.in_flight.join(", ")
            ),
        ));
    }
    record_deletion(
        conn,
        ctx,
        project_id,
        json!({"task_ids": ids, "deleted_count": done.deleted}),
    )?;
    Ok(done.deleted)
}

/// Deletes the tasks matching `filter` that are not in flight; `given` is the filter as the
/// caller wrote it, for the audit row. Returns how many were deleted and how many skipped.
pub fn delete_matching(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    project_id: &str,
    filter: &Filter,
    given: Value,
) -> StoreResult<(usize, i64)> {
    let (deleted, skipped) = tasks::delete_matching(conn, project_id, filter)?;
    record_deletion(
        conn,
        ctx,
        project_id,
        json!({"filter": given, "deleted_count": deleted, "skipped_in_flight": skipped}),
    )?;
    Ok((deleted, skipped))
}

/// The `tasks.deleted` row: who deleted which records.
fn record_deletion(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    project_id: &str,
    what: Value,
) -> StoreResult<()> {
    let chain = audit::project_chain(project_id);
    audit::append(conn, ctx, &chain, "tasks.deleted", None, what)?;
    Ok(())
}

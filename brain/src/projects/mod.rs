//! Projects as audited actions: each function changes the rows and appends its signed audit
//! row in the caller's transaction, so the change and its record commit together — the API
//! and the CLI both come here and neither can forget the row.

pub mod members;

use serde_json::json;

use crate::names::{Label, ProjectSlug};
use crate::role::Role;
use crate::store::audit::{self, AuditContext};
use crate::store::cleanup::{self, CleanupTask};
use crate::store::projects::{self, Project};
use crate::store::{AnyConnection, StoreResult, now_ms};

/// Creates a project and records `project.created` on the site chain.
pub fn create(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    site_chain: &str,
    slug: &ProjectSlug,
    name: Option<&Label>,
    description: &str,
) -> StoreResult<Project> {
    let project = projects::create(conn, slug, name, description)?;
    audit::append(
        conn,
        ctx,
        site_chain,
        "project.created",
        None,
        json!({
            "project": {"id": project.id, "slug": project.slug},
            "chain": audit::project_chain(&project.id),
        }),
    )?;
    Ok(project)
}

/// Creates a project with its creator as its first admin (`owner`: user id and name).
pub fn create_owned(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    site_chain: &str,
    slug: &ProjectSlug,
    name: Option<&Label>,
    description: &str,
    owner: (&str, &str),
) -> StoreResult<Project> {
    let project = create(conn, ctx, site_chain, slug, name, description)?;
    members::set_role(conn, ctx, &project.id, owner, Role::Admin)?;
    Ok(project)
}

/// Hides a project at once and records the tree of cleanup tasks that will remove its
/// agents and task records, with `project.deletion_started` on its chain (which is kept).
pub fn start_deletion(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    project: &Project,
) -> StoreResult<CleanupTask> {
    let chain = audit::project_chain(&project.id);
    let row = audit::append(
        conn,
        ctx,
        &chain,
        "project.deletion_started",
        None,
        json!({"project": {"id": project.id, "slug": project.slug, "name": project.name}}),
    )?;
    cleanup::delete_project(
        conn,
        project,
        Some(&format!("{chain}#{}", row.seq)),
        now_ms(),
    )
}

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

/// Creates a project and records `project.created` on the site chain; `owner` (user id and
/// name), when given, becomes its first admin.
pub fn create(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    site_chain: &str,
    new: NewProject<'_>,
    owner: Option<(&str, &str)>,
) -> StoreResult<Project> {
    let project = projects::create(conn, new.slug, new.name, new.description)?;
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
    if let Some(owner) = owner {
        members::set_role(conn, ctx, &project.id, owner, Role::Admin)?;
    }
    Ok(project)
}

/// A project about to be created.
#[derive(Debug, Clone, Copy)]
pub struct NewProject<'a> {
    /// Its slug (unique).
    pub slug: &'a ProjectSlug,
    /// Its display name (the slug when absent).
    pub name: Option<&'a Label>,
    /// What it is for.
    pub description: &'a str,
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

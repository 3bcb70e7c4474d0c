//! Projects: the unit of tenancy. Every other row belongs to one.

use diesel::prelude::*;

use super::schema::{memberships, projects};
use super::{AnyConnection, StoreError, StoreResult, new_id, now_ms};
use crate::names::{Label, ProjectSlug};
use crate::role::Role;

/// A project row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = projects)]
pub struct Project {
    /// Stable id (UUID); the slug may be shown everywhere but the id never changes.
    pub id: String,
    /// URL name, unique.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Creation time, ms since epoch.
    pub created_at: i64,
    /// Last change, ms since epoch.
    pub updated_at: i64,
}

/// Creates a project; `Conflict` if the slug is taken.
pub fn create(
    conn: &mut AnyConnection,
    slug: &ProjectSlug,
    name: Option<&Label>,
    description: &str,
) -> StoreResult<Project> {
    let now = now_ms();
    let project = Project {
        id: new_id(),
        slug: slug.to_string(),
        name: name.map_or_else(|| slug.to_string(), Label::to_string),
        description: description.to_owned(),
        created_at: now,
        updated_at: now,
    };
    diesel::insert_into(projects::table)
        .values((
            projects::id.eq(&project.id),
            projects::slug.eq(&project.slug),
            projects::name.eq(&project.name),
            projects::description.eq(&project.description),
            projects::created_at.eq(now),
            projects::updated_at.eq(now),
        ))
        .execute(conn)
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict(format!("project {slug} already exists"))
            }
            other => other,
        })?;
    super::audit::create_chain(
        conn,
        &super::audit::project_chain(&project.id),
        Some(&project.id),
    )?;
    Ok(project)
}

/// A project by slug.
pub fn find(conn: &mut AnyConnection, slug: &ProjectSlug) -> StoreResult<Project> {
    Ok(projects::table
        .filter(projects::slug.eq(slug.as_str()))
        .filter(projects::deleting_since.is_null())
        .select(Project::as_select())
        .first(conn)?)
}

/// A project by slug together with the role `user_id` holds in it, if any. One query for the
/// check every project-scoped request makes.
pub fn find_with_role(
    conn: &mut AnyConnection,
    slug: &ProjectSlug,
    user_id: &str,
) -> StoreResult<(Project, Option<Role>)> {
    let (project, role): (Project, Option<String>) = projects::table
        .left_join(
            memberships::table.on(memberships::project_id
                .eq(projects::id)
                .and(memberships::user_id.eq(user_id))),
        )
        .filter(projects::slug.eq(slug.as_str()))
        .filter(projects::deleting_since.is_null())
        .select((Project::as_select(), memberships::role.nullable()))
        .first(conn)?;
    Ok((project, role.map(|r| parse_stored_role(&r)).transpose()?))
}

/// Projects visible to a user with the user's role in each; site admins see all as admin.
pub fn list_visible(
    conn: &mut AnyConnection,
    user_id: &str,
    site_admin: bool,
) -> StoreResult<Vec<(Project, Role)>> {
    if site_admin {
        let all = projects::table
            .filter(projects::deleting_since.is_null())
            .order(projects::slug.asc())
            .select(Project::as_select())
            .load(conn)?;
        return Ok(all.into_iter().map(|p| (p, Role::Admin)).collect());
    }
    let rows: Vec<(Project, String)> = projects::table
        .inner_join(memberships::table)
        .filter(memberships::user_id.eq(user_id))
        .filter(projects::deleting_since.is_null())
        .order(projects::slug.asc())
        .select((Project::as_select(), memberships::role))
        .load(conn)?;
    rows.into_iter()
        .map(|(p, r)| Ok((p, parse_stored_role(&r)?)))
        .collect()
}

/// Changes a project's display name and/or description.
pub fn update(
    conn: &mut AnyConnection,
    project_id: &str,
    name: Option<&Label>,
    description: Option<&str>,
) -> StoreResult<Project> {
    let now = now_ms();
    if let Some(name) = name {
        diesel::update(projects::table.find(project_id))
            .set(projects::name.eq(name.as_str()))
            .execute(conn)?;
    }
    if let Some(description) = description {
        diesel::update(projects::table.find(project_id))
            .set(projects::description.eq(description))
            .execute(conn)?;
    }
    diesel::update(projects::table.find(project_id))
        .set(projects::updated_at.eq(now))
        .execute(conn)?;
    Ok(projects::table
        .find(project_id)
        .select(Project::as_select())
        .first(conn)?)
}

/// Roles are constrained by a CHECK, so an unknown one means a corrupted row.
pub(super) fn parse_stored_role(stored: &str) -> StoreResult<Role> {
    stored.parse().map_err(|e: String| {
        StoreError::Database(diesel::result::Error::DeserializationError(e.into()))
    })
}

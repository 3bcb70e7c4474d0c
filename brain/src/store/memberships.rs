//! Memberships: which user holds which role in which project.

use diesel::prelude::*;

use super::projects::parse_stored_role;
use super::schema::{memberships, users};
use super::{AnyConnection, StoreResult, now_ms};
use crate::role::Role;

/// A member as listed: the user's name and role.
#[derive(Debug, Clone)]
pub struct Member {
    /// The user's id.
    pub user_id: String,
    /// The user's name.
    pub user_name: String,
    /// Role in the project.
    pub role: Role,
    /// When the membership was created, ms since epoch.
    pub created_at: i64,
}

/// Whether [`set_role`] created a membership or changed an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetRole {
    /// The user was not a member before.
    Added,
    /// The user was a member; the role is now the given one.
    Changed,
}

/// Members of a project by user name.
pub fn list(conn: &mut AnyConnection, project_id: &str) -> StoreResult<Vec<Member>> {
    let rows: Vec<(String, String, String, i64)> = memberships::table
        .inner_join(users::table)
        .filter(memberships::project_id.eq(project_id))
        .filter(users::deleted_at.is_null())
        .order(users::name.asc())
        .select((
            users::id,
            users::name,
            memberships::role,
            memberships::created_at,
        ))
        .load(conn)?;
    rows.into_iter()
        .map(|(user_id, user_name, role, created_at)| {
            Ok(Member {
                user_id,
                user_name,
                role: parse_stored_role(&role)?,
                created_at,
            })
        })
        .collect()
}

/// One member of a project; `NotFound` if the user is not a member.
pub fn find(conn: &mut AnyConnection, project_id: &str, user_id: &str) -> StoreResult<Member> {
    let (user_id, user_name, role, created_at): (String, String, String, i64) = memberships::table
        .inner_join(users::table)
        .filter(memberships::project_id.eq(project_id))
        .filter(memberships::user_id.eq(user_id))
        .select((
            users::id,
            users::name,
            memberships::role,
            memberships::created_at,
        ))
        .first(conn)?;
    Ok(Member {
        user_id,
        user_name,
        role: parse_stored_role(&role)?,
        created_at,
    })
}

/// Gives `user_id` the role in the project, adding the membership if needed. Runs inside the
/// caller's write transaction, so the read-then-write cannot race.
pub fn set_role(
    conn: &mut AnyConnection,
    project_id: &str,
    user_id: &str,
    role: Role,
) -> StoreResult<SetRole> {
    let changed = diesel::update(memberships::table.find((project_id, user_id)))
        .set(memberships::role.eq(role.as_str()))
        .execute(conn)?;
    if changed > 0 {
        return Ok(SetRole::Changed);
    }
    diesel::insert_into(memberships::table)
        .values((
            memberships::project_id.eq(project_id),
            memberships::user_id.eq(user_id),
            memberships::role.eq(role.as_str()),
            memberships::created_at.eq(now_ms()),
        ))
        .execute(conn)?;
    Ok(SetRole::Added)
}

/// Removes a membership; `NotFound` if there was none.
pub fn remove(conn: &mut AnyConnection, project_id: &str, user_id: &str) -> StoreResult<()> {
    let removed = diesel::delete(memberships::table.find((project_id, user_id))).execute(conn)?;
    if removed == 0 {
        return Err(super::StoreError::NotFound);
    }
    Ok(())
}

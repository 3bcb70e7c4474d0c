//! Users: people (and service accounts) who hold tokens and memberships.

use diesel::prelude::*;

use super::schema::{api_tokens, dashboard_sessions, memberships, users};
use super::{AnyConnection, StoreError, StoreResult, new_id, now_ms};
use crate::names::UserName;

/// A user row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct User {
    /// Stable id (UUID); names can be reused only after deletion.
    pub id: String,
    /// Login name.
    pub name: String,
    /// Site admins create users and projects and are admin in every project.
    pub site_admin: bool,
    /// Creation time, ms since epoch.
    pub created_at: i64,
    /// Set when the user was deleted; deleted users keep their row so audit actors resolve.
    pub deleted_at: Option<i64>,
}

/// Creates a user. Fails with `Conflict` if the name is taken (also by a deleted user: names
/// are never reused, so an audit actor name always means one person).
pub fn create(conn: &mut AnyConnection, name: &UserName, site_admin: bool) -> StoreResult<User> {
    let user = User {
        id: new_id(),
        name: name.to_string(),
        site_admin,
        created_at: now_ms(),
        deleted_at: None,
    };
    diesel::insert_into(users::table)
        .values((
            users::id.eq(&user.id),
            users::name.eq(&user.name),
            users::site_admin.eq(user.site_admin),
            users::created_at.eq(user.created_at),
        ))
        .execute(conn)
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("user {name} already exists")),
            other => other,
        })?;
    Ok(user)
}

/// Whether any user exists at all (the bootstrap check).
pub fn any_exist(conn: &mut AnyConnection) -> StoreResult<bool> {
    let n: i64 = users::table.count().get_result(conn)?;
    Ok(n > 0)
}

/// Whether any user (deleted ones included) has a name other than `name` (bootstrap's check
/// that nobody but its own admin was set up before the first start).
pub fn any_other_than(conn: &mut AnyConnection, name: &UserName) -> StoreResult<bool> {
    let n: i64 = users::table
        .filter(users::name.ne(name.as_str()))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

/// An active (not deleted) user by name.
pub fn find_active(conn: &mut AnyConnection, name: &UserName) -> StoreResult<User> {
    Ok(users::table
        .filter(users::name.eq(name.as_str()))
        .filter(users::deleted_at.is_null())
        .select(User::as_select())
        .first(conn)?)
}

/// All active users, by name.
pub fn list_active(conn: &mut AnyConnection) -> StoreResult<Vec<User>> {
    Ok(users::table
        .filter(users::deleted_at.is_null())
        .order(users::name.asc())
        .select(User::as_select())
        .load(conn)?)
}

/// Deletes a user: marks the row deleted, revokes every token and removes every membership,
/// in the caller's transaction. The row stays so that past actions keep a name.
pub fn delete(conn: &mut AnyConnection, user: &User) -> StoreResult<()> {
    let now = now_ms();
    diesel::update(users::table.find(&user.id))
        .set(users::deleted_at.eq(now))
        .execute(conn)?;
    diesel::update(
        api_tokens::table
            .filter(api_tokens::user_id.eq(&user.id))
            .filter(api_tokens::revoked_at.is_null()),
    )
    .set(api_tokens::revoked_at.eq(now))
    .execute(conn)?;
    diesel::delete(memberships::table.filter(memberships::user_id.eq(&user.id))).execute(conn)?;
    diesel::delete(dashboard_sessions::table.filter(dashboard_sessions::user_id.eq(&user.id)))
        .execute(conn)?;
    Ok(())
}

/// Replaces a user's password hash (a PHC string).
pub fn set_password_hash(
    conn: &mut AnyConnection,
    user_id: &str,
    password_hash: &str,
) -> StoreResult<()> {
    diesel::update(users::table.find(user_id))
        .set(users::password_hash.eq(password_hash))
        .execute(conn)?;
    Ok(())
}

/// An active user and their password hash (`None` when they have no password), by name.
pub fn with_password(
    conn: &mut AnyConnection,
    name: &str,
) -> StoreResult<Option<(User, Option<String>)>> {
    Ok(users::table
        .filter(users::name.eq(name))
        .filter(users::deleted_at.is_null())
        .select((User::as_select(), users::password_hash))
        .first(conn)
        .optional()?)
}

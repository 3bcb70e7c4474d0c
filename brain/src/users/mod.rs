//! Users as audited actions on the site chain (`user.created`, `user.password_set`,
//! `user.deleted`), and their API tokens ([`tokens`]).

pub mod tokens;

use serde_json::json;

use crate::names::{Label, UserName};
use crate::refusal::{Refusal, or_not_found};
use crate::store::audit::{self, AuditContext};
use crate::store::users::{self, User};
use crate::store::{AnyConnection, StoreResult, sessions};
use taskward_shared::secret::Secret;

/// Creates a user.
pub fn create(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    site_chain: &str,
    name: &UserName,
    site_admin: bool,
) -> StoreResult<User> {
    let user = users::create(conn, name, site_admin)?;
    audit::append(
        conn,
        ctx,
        site_chain,
        "user.created",
        None,
        json!({"user": {"id": user.id, "name": user.name, "site_admin": user.site_admin}}),
    )?;
    Ok(user)
}

/// Creates a user with a first API token (named `initial`), returned once.
pub fn create_with_token(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    site_chain: &str,
    name: &UserName,
    site_admin: bool,
) -> StoreResult<(User, Secret)> {
    let user = create(conn, ctx, site_chain, name, site_admin)?;
    let label: Label = "initial".parse().expect("valid label");
    let (_, secret) = tokens::create(conn, ctx, site_chain, (&user.id, &user.name), &label, None)?;
    Ok((user, secret))
}

/// Sets an active user's password hash (a PHC string) and ends their dashboard sessions, so
/// a changed password signs them out everywhere; the row carries no hash.
pub fn set_password(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    site_chain: &str,
    name: &UserName,
    password_hash: &str,
) -> StoreResult<User> {
    let user = users::find_active(conn, name)?;
    users::set_password_hash(conn, &user.id, password_hash)?;
    sessions::delete_for_user(conn, &user.id)?;
    audit::append(
        conn,
        ctx,
        site_chain,
        "user.password_set",
        None,
        json!({"user": {"id": user.id, "name": user.name}}),
    )?;
    Ok(user)
}

/// Deletes the active user `name`: revokes their tokens, memberships and sessions; the name
/// stays reserved.
pub fn delete(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    site_chain: &str,
    name: &UserName,
) -> Result<(), Refusal> {
    let user = or_not_found(users::find_active(conn, name), || format!("user {name}"))?;
    users::delete(conn, &user)?;
    audit::append(
        conn,
        ctx,
        site_chain,
        "user.deleted",
        None,
        json!({"user": {"id": user.id, "name": user.name}}),
    )?;
    Ok(())
}

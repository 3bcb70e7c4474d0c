//! A project's members as audited actions (`member.role_set`, `member.removed` on the
//! project's chain).

use serde_json::json;

use crate::names::UserName;
use crate::refusal::{Refusal, or_not_found};
use crate::role::Role;
use crate::store::audit::{self, AuditContext};
use crate::store::memberships::{self, Member, SetRole};
use crate::store::{AnyConnection, StoreError, StoreResult, users};

/// Sets a member's role (adding them if needed); `user` is their id and name.
pub fn set_role(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    project_id: &str,
    user: (&str, &str),
    role: Role,
) -> StoreResult<SetRole> {
    let (user_id, user_name) = user;
    let change = memberships::set_role(conn, project_id, user_id, role)?;
    audit::append(
        conn,
        ctx,
        &audit::project_chain(project_id),
        "member.role_set",
        None,
        json!({
            "user": {"id": user_id, "name": user_name},
            "role": role,
            "added": change == SetRole::Added,
        }),
    )?;
    Ok(change)
}

/// Sets the role of the active user named `name`; says whether they were added.
pub fn set_role_by_name(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    project_id: &str,
    name: &UserName,
    role: Role,
) -> Result<(SetRole, Member), Refusal> {
    let user = or_not_found(users::find_active(conn, name), || format!("user {name}"))?;
    let change = set_role(conn, ctx, project_id, (&user.id, &user.name), role)?;
    Ok((change, memberships::find(conn, project_id, &user.id)?))
}

/// Removes the member named `name`.
pub fn remove(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    project_id: &str,
    name: &UserName,
) -> Result<(), Refusal> {
    let not_member = || Refusal::NotFound(format!("member {name}"));
    let user = match users::find_active(conn, name) {
        Err(StoreError::NotFound) => return Err(not_member()),
        other => other?,
    };
    match memberships::remove(conn, project_id, &user.id) {
        Err(StoreError::NotFound) => return Err(not_member()),
        other => other?,
    }
    audit::append(
        conn,
        ctx,
        &audit::project_chain(project_id),
        "member.removed",
        None,
        json!({"user": {"id": user.id, "name": user.name}}),
    )?;
    Ok(())
}

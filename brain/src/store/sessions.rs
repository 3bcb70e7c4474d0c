//! Dashboard sessions: a signed-in browser. The cookie holds the session id; the database
//! holds only its SHA-256, so reading the database signs nobody in.

use diesel::prelude::*;
use taskward_shared::secret::{Secret, SecretKind, hash_secret};

use super::schema::{dashboard_sessions, users};
use super::users::User;
use super::{AnyConnection, StoreResult};

/// A session ends after this long without a request (8 hours: a working day).
pub const IDLE_MS: i64 = 8 * 3600 * 1000;

/// A session ends this long after sign-in, however active (7 days).
pub const ABSOLUTE_MS: i64 = 7 * 24 * 3600 * 1000;

/// How stale `last_seen_at` may get before a request refreshes it (as for tokens: writing on
/// every page view would turn reads into writes).
pub const SEEN_RESOLUTION_MS: i64 = 60_000;

/// A session row (without its id hash).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = dashboard_sessions)]
pub struct Session {
    /// Whose session it is.
    pub user_id: String,
    /// What state-changing requests must carry (header `x-csrf-token` or form field `csrf`).
    pub csrf_token: String,
    /// Sign-in time, ms since epoch.
    pub created_at: i64,
    /// Last request (to within [`SEEN_RESOLUTION_MS`]).
    pub last_seen_at: i64,
    /// Absolute end.
    pub expires_at: i64,
}

/// Starts a session for a user; returns the row and the cookie value, which is never stored.
pub fn create(conn: &mut AnyConnection, user_id: &str, now: i64) -> StoreResult<(Session, Secret)> {
    let id = Secret::generate(SecretKind::Session);
    let session = Session {
        user_id: user_id.to_owned(),
        csrf_token: Secret::generate(SecretKind::Csrf).expose().to_owned(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + ABSOLUTE_MS,
    };
    diesel::insert_into(dashboard_sessions::table)
        .values((
            dashboard_sessions::id_hash.eq(id.hash()),
            dashboard_sessions::user_id.eq(&session.user_id),
            dashboard_sessions::csrf_token.eq(&session.csrf_token),
            dashboard_sessions::created_at.eq(session.created_at),
            dashboard_sessions::last_seen_at.eq(session.last_seen_at),
            dashboard_sessions::expires_at.eq(session.expires_at),
        ))
        .execute(conn)?;
    Ok((session, id))
}

/// The live session a cookie value names, with its (not deleted) user; `None` when unknown,
/// idle too long, past its absolute end, or its user was deleted.
pub fn find(
    conn: &mut AnyConnection,
    presented: &str,
    now: i64,
) -> StoreResult<Option<(Session, User)>> {
    let found: Option<(Session, User)> = dashboard_sessions::table
        .inner_join(users::table)
        .filter(dashboard_sessions::id_hash.eq(hash_secret(presented)))
        .filter(users::deleted_at.is_null())
        .select((Session::as_select(), User::as_select()))
        .first(conn)
        .optional()?;
    Ok(found.filter(|(s, _)| s.expires_at > now && s.last_seen_at + IDLE_MS > now))
}

/// Records activity on a session.
pub fn touch(conn: &mut AnyConnection, presented: &str, now: i64) -> StoreResult<()> {
    diesel::update(
        dashboard_sessions::table.filter(dashboard_sessions::id_hash.eq(hash_secret(presented))),
    )
    .set(dashboard_sessions::last_seen_at.eq(now))
    .execute(conn)?;
    Ok(())
}

/// Ends a session (sign-out).
pub fn delete(conn: &mut AnyConnection, presented: &str) -> StoreResult<()> {
    diesel::delete(
        dashboard_sessions::table.filter(dashboard_sessions::id_hash.eq(hash_secret(presented))),
    )
    .execute(conn)?;
    Ok(())
}

/// Ends every session of a user (a password change signs them out everywhere).
pub fn delete_for_user(conn: &mut AnyConnection, user_id: &str) -> StoreResult<usize> {
    Ok(
        diesel::delete(dashboard_sessions::table.filter(dashboard_sessions::user_id.eq(user_id)))
            .execute(conn)?,
    )
}

/// Removes sessions that can no longer be used; returns how many.
pub fn delete_expired(conn: &mut AnyConnection, now: i64) -> StoreResult<usize> {
    Ok(diesel::delete(
        dashboard_sessions::table.filter(
            dashboard_sessions::expires_at
                .le(now)
                .or(dashboard_sessions::last_seen_at.le(now - IDLE_MS)),
        ),
    )
    .execute(conn)?)
}

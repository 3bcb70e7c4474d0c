//! API tokens: stored as SHA-256 only, shown once at creation.

use diesel::prelude::*;
use taskward_shared::secret::{Secret, SecretKind, hash_secret};

use super::schema::{api_tokens, users};
use super::users::User;
use super::{AnyConnection, StoreResult, new_id, now_ms};
use crate::names::Label;

/// How stale `last_used_at` may get before a request refreshes it. Writing on every request
/// would turn every read into a write; a minute is precise enough to spot unused tokens.
pub const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// A token row (without its hash).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_tokens)]
pub struct ApiToken {
    /// Token id, used to revoke it.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// What the owner called it.
    pub name: String,
    /// Visible start of the token (`tw_` + 8 characters), to recognise it in listings.
    pub prefix: String,
    /// Creation time, ms since epoch.
    pub created_at: i64,
    /// After this time the token no longer authenticates.
    pub expires_at: Option<i64>,
    /// Last successful use (to within [`LAST_USED_RESOLUTION_MS`]).
    pub last_used_at: Option<i64>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

/// Creates a token for a user; returns the row and the plaintext, which is never stored.
pub fn create(
    conn: &mut AnyConnection,
    user_id: &str,
    name: &Label,
    expires_at: Option<i64>,
) -> StoreResult<(ApiToken, Secret)> {
    let secret = Secret::generate(SecretKind::ApiToken);
    let token = ApiToken {
        id: new_id(),
        user_id: user_id.to_owned(),
        name: name.to_string(),
        prefix: secret.visible_prefix(),
        created_at: now_ms(),
        expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    diesel::insert_into(api_tokens::table)
        .values((
            api_tokens::id.eq(&token.id),
            api_tokens::user_id.eq(&token.user_id),
            api_tokens::name.eq(&token.name),
            api_tokens::prefix.eq(&token.prefix),
            api_tokens::token_hash.eq(secret.hash()),
            api_tokens::created_at.eq(token.created_at),
            api_tokens::expires_at.eq(token.expires_at),
        ))
        .execute(conn)?;
    Ok((token, secret))
}

/// Why a presented token was refused. Kept apart so logs can say why while the wire stays
/// vague ("invalid token") for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token has that hash.
    Unknown,
    /// The token was revoked.
    Revoked,
    /// The token expired.
    Expired,
    /// The owner was deleted.
    UserDeleted,
}

/// Looks up the owner of a presented token. `Ok(Err(refusal))` when it does not authenticate.
pub fn authenticate(
    conn: &mut AnyConnection,
    presented: &str,
    now: i64,
) -> StoreResult<Result<(ApiToken, User), Refusal>> {
    let found = api_tokens::table
        .inner_join(users::table)
        .filter(api_tokens::token_hash.eq(hash_secret(presented)))
        .select((ApiToken::as_select(), User::as_select()))
        .first::<(ApiToken, User)>(conn)
        .optional()?;
    let Some((token, user)) = found else {
        return Ok(Err(Refusal::Unknown));
    };
    if token.revoked_at.is_some() {
        return Ok(Err(Refusal::Revoked));
    }
    if token.expires_at.is_some_and(|t| t <= now) {
        return Ok(Err(Refusal::Expired));
    }
    if user.deleted_at.is_some() {
        return Ok(Err(Refusal::UserDeleted));
    }
    Ok(Ok((token, user)))
}

/// Records a use if the stored time is older than [`LAST_USED_RESOLUTION_MS`].
pub fn touch(conn: &mut AnyConnection, token_id: &str, now: i64) -> StoreResult<()> {
    diesel::update(
        api_tokens::table.find(token_id).filter(
            api_tokens::last_used_at
                .is_null()
                .or(api_tokens::last_used_at.lt(now - LAST_USED_RESOLUTION_MS)),
        ),
    )
    .set(api_tokens::last_used_at.eq(now))
    .execute(conn)?;
    Ok(())
}

/// A user's tokens, newest first.
pub fn list_for_user(conn: &mut AnyConnection, user_id: &str) -> StoreResult<Vec<ApiToken>> {
    Ok(api_tokens::table
        .filter(api_tokens::user_id.eq(user_id))
        .order((api_tokens::created_at.desc(), api_tokens::id.desc()))
        .select(ApiToken::as_select())
        .load(conn)?)
}

/// Revokes one of the user's own tokens. `NotFound` if it is not theirs (another user's token
/// id is indistinguishable from a missing one); revoking twice keeps the first time.
pub fn revoke(conn: &mut AnyConnection, user_id: &str, token_id: &str) -> StoreResult<ApiToken> {
    let token = api_tokens::table
        .find(token_id)
        .filter(api_tokens::user_id.eq(user_id))
        .select(ApiToken::as_select())
        .first(conn)?;
    if token.revoked_at.is_some() {
        return Ok(token);
    }
    let now = now_ms();
    diesel::update(api_tokens::table.find(token_id))
        .set(api_tokens::revoked_at.eq(now))
        .execute(conn)?;
    Ok(ApiToken {
        revoked_at: Some(now),
        ..token
    })
}

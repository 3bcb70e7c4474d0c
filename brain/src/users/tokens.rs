//! API tokens as audited actions (`token.created`, `token.revoked` on the site chain; the
//! rows carry the token's prefix, never the secret).

use serde_json::json;
use taskward_shared::secret::Secret;

use crate::names::Label;
use crate::refusal::{Refusal, or_not_found};
use crate::store::audit::{self, AuditContext};
use crate::store::tokens::{self, ApiToken};
use crate::store::{AnyConnection, StoreResult};

/// What a token records in the audit log: never the secret, never its hash.
fn audit_payload(token: &ApiToken, owner_name: &str) -> serde_json::Value {
    json!({
        "token_id": token.id,
        "prefix": token.prefix,
        "name": token.name,
        "owner": owner_name,
        "expires_at_ms": token.expires_at.map(|t| t.to_string()),
    })
}

/// Creates a token for `owner` (id, name); the secret is returned once and stored hashed.
pub fn create(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    site_chain: &str,
    owner: (&str, &str),
    name: &Label,
    expires_at: Option<i64>,
) -> StoreResult<(ApiToken, Secret)> {
    let (owner_id, owner_name) = owner;
    let (token, secret) = tokens::create(conn, owner_id, name, expires_at)?;
    audit::append(
        conn,
        ctx,
        site_chain,
        "token.created",
        None,
        audit_payload(&token, owner_name),
    )?;
    Ok((token, secret))
}

/// Revokes one of `owner`'s tokens (another user's token is not found).
pub fn revoke(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    site_chain: &str,
    owner: (&str, &str),
    token_id: &str,
) -> Result<ApiToken, Refusal> {
    let (owner_id, owner_name) = owner;
    let token = or_not_found(tokens::revoke(conn, owner_id, token_id), || {
        format!("token {token_id}")
    })?;
    audit::append(
        conn,
        ctx,
        site_chain,
        "token.revoked",
        None,
        audit_payload(&token, owner_name),
    )?;
    Ok(token)
}

//! `/api/v1/tokens`: the caller's own API tokens.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiPath};
use super::{tags, timestamp};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::expiry::parse_lifetime;
use crate::names::Label;
use crate::store::now_ms;
use crate::store::tokens::{self, ApiToken};

/// A token as listed: never the secret itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPublic {
    /// Id, to revoke it.
    pub id: String,
    /// What it is for.
    pub name: String,
    /// Visible start of the token, e.g. `tw_3f9a21c0`.
    pub prefix: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last use, to within a minute.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiToken> for TokenPublic {
    fn from(t: ApiToken) -> TokenPublic {
        TokenPublic {
            id: t.id,
            name: t.name,
            prefix: t.prefix,
            created_at: timestamp(t.created_at),
            expires_at: t.expires_at.map(timestamp),
            last_used_at: t.last_used_at.map(timestamp),
            revoked_at: t.revoked_at.map(timestamp),
        }
    }
}

/// The caller's tokens.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    /// Newest first, revoked ones included.
    pub items: Vec<TokenPublic>,
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token is for.
    pub name: Label,
    /// Lifetime like `30d`, `12h`, `90m`, `2w` (1m..3650d); omit for no expiry.
    pub expires_in: Option<String>,
}

/// A new token: the only response that contains the secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token to send as `Authorization: Bearer ...`. Store it now; it is not shown again.
    pub token: String,
    /// Its listing entry.
    #[serde(flatten)]
    pub info: TokenPublic,
}

/// Lists the caller's tokens.
#[utoipa::path(get, path = "/api/v1/tokens", tag = tags::TOKENS,
    responses((status = 200, body = TokenList), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TokenList>, ApiError> {
    Ok(Json(token_list(&state, &caller.user_id).await?))
}

/// A user's tokens (the API's list and the dashboard's tokens page).
pub async fn token_list(state: &AppState, user_id: &str) -> Result<TokenList, ApiError> {
    let user_id = user_id.to_owned();
    let items = state
        .store
        .read("list_tokens", move |conn| {
            tokens::list_for_user(conn, &user_id)
        })
        .await?;
    Ok(TokenList {
        items: items.into_iter().map(TokenPublic::from).collect(),
    })
}

/// Creates a token for the caller.
#[utoipa::path(post, path = "/api/v1/tokens", tag = tags::TOKENS, request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let expires_at = body
        .expires_in
        .as_deref()
        .map(parse_lifetime)
        .transpose()
        .map_err(|why| ApiError::invalid_field("expires_in", format!("expires_in: {why}")))?
        .map(|ms| now_ms() + ms);
    let ctx = state.audit_as(caller.actor());
    let chain = state.store.site_chain();
    let (token, secret) = state
        .store
        .write("create_token", move |conn| {
            crate::users::tokens::create(
                conn,
                &ctx,
                &chain,
                (&caller.user_id, &caller.user_name),
                &body.name,
                expires_at,
            )
        })
        .await?;
    tracing::info!(prefix = %token.prefix, "token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: secret.expose().to_owned(),
            info: token.into(),
        }),
    ))
}

/// Revokes one of the caller's tokens (takes effect on the next request).
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = tags::TOKENS,
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, body = TokenPublic), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TokenPublic>, ApiError> {
    let ctx = state.audit_as(caller.actor());
    let chain = state.store.site_chain();
    let token = state
        .store
        .write("revoke_token", move |conn| {
            crate::users::tokens::revoke(
                conn,
                &ctx,
                &chain,
                (&caller.user_id, &caller.user_name),
                &id,
            )
        })
        .await?;
    tracing::info!(prefix = %token.prefix, "token revoked");
    Ok(Json(token.into()))
}

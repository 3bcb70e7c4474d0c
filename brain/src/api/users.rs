//! `/api/v1/users`: site admins list, create and delete users.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiPath};
use super::{tags, timestamp};
use crate::app::AppState;
use crate::auth::SiteAdmin;
use crate::error::{ApiError, ErrorBody};
use crate::names::UserName;
use crate::store::users::{self, User};

/// A user as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPublic {
    /// Stable id.
    pub id: String,
    /// Login name.
    pub name: String,
    /// Whether the user is a site admin.
    pub site_admin: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserPublic {
    fn from(u: User) -> UserPublic {
        UserPublic {
            id: u.id,
            name: u.name,
            site_admin: u.site_admin,
            created_at: timestamp(u.created_at),
        }
    }
}

/// Users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    /// Active users by name.
    pub items: Vec<UserPublic>,
}

/// Body of `POST /api/v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Login name, `^[a-z0-9][a-z0-9._-]{0,62}$`, never reused.
    pub name: UserName,
    /// Make the user a site admin.
    #[serde(default)]
    pub site_admin: bool,
}

/// A created user with their first API token, shown only in this response.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    /// The user.
    pub user: UserPublic,
    /// A first API token for the user (`tw_...`); hand it over, it is not shown again.
    pub token: String,
}

/// Lists active users (site admin).
#[utoipa::path(get, path = "/api/v1/users", tag = tags::USERS,
    responses((status = 200, body = UserList), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    _admin: SiteAdmin,
) -> Result<Json<UserList>, ApiError> {
    let users = state.store.read("list_users", users::list_active).await?;
    Ok(Json(UserList {
        items: users.into_iter().map(UserPublic::from).collect(),
    }))
}

/// Creates a user and a first token for them (site admin).
#[utoipa::path(post, path = "/api/v1/users", tag = tags::USERS, request_body = CreateUser,
    responses((status = 201, body = CreatedUser), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    SiteAdmin(caller): SiteAdmin,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    let ctx = state.audit_as(caller.actor());
    let chain = state.store.site_chain();
    let (user, secret) = state
        .store
        .write("create_user", move |conn| {
            crate::users::create_with_token(conn, &ctx, &chain, &body.name, body.site_admin)
        })
        .await?;
    tracing::info!(user = %user.name, site_admin = user.site_admin, "user created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            user: user.into(),
            token: secret.expose().to_owned(),
        }),
    ))
}

/// Deletes a user (site admin): revokes their tokens and memberships; the name stays reserved.
#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = tags::USERS,
    params(("name" = String, Path, description = "User name")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    SiteAdmin(caller): SiteAdmin,
    ApiPath(name): ApiPath<UserName>,
) -> Result<StatusCode, ApiError> {
    if name.as_str() == caller.user_name {
        return Err(ApiError::invalid_field(
            "name",
            "you cannot delete yourself; ask another site admin",
        ));
    }
    let shown = name.clone();
    let ctx = state.audit_as(caller.actor());
    let chain = state.store.site_chain();
    state
        .store
        .write("delete_user", move |conn| {
            crate::users::delete(conn, &ctx, &chain, &name)
        })
        .await?;
    tracing::info!(user = %shown, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

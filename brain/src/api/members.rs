//! `/api/v1/projects/{slug}/members`: who holds which role (viewers read, admins change).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiPath};
use super::{tags, timestamp};
use crate::app::AppState;
use crate::auth::{Admin, ProjectAccess, Viewer};
use crate::error::{ApiError, ErrorBody};
use crate::names::UserName;
use crate::projects::members;
use crate::role::Role;
use crate::store::memberships::{self, Member, SetRole};

/// A member of a project.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberPublic {
    /// The user's name.
    pub user: String,
    /// Their role here.
    pub role: Role,
    /// When they were added.
    pub created_at: DateTime<Utc>,
}

impl From<Member> for MemberPublic {
    fn from(m: Member) -> MemberPublic {
        MemberPublic {
            user: m.user_name,
            role: m.role,
            created_at: timestamp(m.created_at),
        }
    }
}

/// Members of a project.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    /// By user name.
    pub items: Vec<MemberPublic>,
}

/// Body of `POST .../members`: add a user, or change their role if already a member.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// An existing user's name.
    pub user: UserName,
    /// The role to give.
    pub role: Role,
}

/// Lists a project's members.
#[utoipa::path(get, path = "/api/v1/projects/{slug}/members", tag = tags::MEMBERS,
    params(("slug" = String, Path, description = "Project slug")),
    responses((status = 200, body = MemberList), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    access: ProjectAccess<Viewer>,
) -> Result<Json<MemberList>, ApiError> {
    Ok(Json(member_list(&state, &access.project.id).await?))
}

/// A project's members (the API's list and the dashboard's members page).
pub async fn member_list(state: &AppState, project_id: &str) -> Result<MemberList, ApiError> {
    let project_id = project_id.to_owned();
    let members = state
        .store
        .read("list_members", move |conn| {
            memberships::list(conn, &project_id)
        })
        .await?;
    Ok(MemberList {
        items: members.into_iter().map(MemberPublic::from).collect(),
    })
}

/// Adds a member or changes their role (admin). 201 when added, 200 when changed.
#[utoipa::path(post, path = "/api/v1/projects/{slug}/members", tag = tags::MEMBERS, request_body = AddMember,
    params(("slug" = String, Path, description = "Project slug")),
    responses((status = 201, body = MemberPublic), (status = 200, body = MemberPublic),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn add(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    ApiJson(body): ApiJson<AddMember>,
) -> Result<(StatusCode, Json<MemberPublic>), ApiError> {
    let project_id = access.project.id.clone();
    let ctx = state.audit_as(access.caller.actor());
    let (change, member) = state
        .store
        .write("set_member_role", move |conn| {
            members::set_role_by_name(conn, &ctx, &project_id, &body.user, body.role)
        })
        .await?;
    let status = match change {
        SetRole::Added => StatusCode::CREATED,
        SetRole::Changed => StatusCode::OK,
    };
    Ok((status, Json(member.into())))
}

/// Removes a member (admin).
#[utoipa::path(delete, path = "/api/v1/projects/{slug}/members/{user}", tag = tags::MEMBERS,
    params(("slug" = String, Path, description = "Project slug"), ("user" = String, Path, description = "User name")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    ApiPath((_slug, user)): ApiPath<(String, UserName)>,
) -> Result<StatusCode, ApiError> {
    let project_id = access.project.id.clone();
    let ctx = state.audit_as(access.caller.actor());
    state
        .store
        .write("remove_member", move |conn| {
            members::remove(conn, &ctx, &project_id, &user)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

//! `/api/v1/projects`: list, create (site admin), read, update (admin), delete (not yet).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::ApiJson;
use super::{tags, timestamp};
use crate::app::AppState;
use crate::auth::{Admin, Caller, ProjectAccess, SiteAdmin, Viewer};
use crate::error::{ApiError, ErrorBody};
use crate::names::{Label, ProjectSlug};
use crate::projects::NewProject;
use crate::role::Role;
use crate::store::projects::{self, Project};

/// Longest project description.
pub const MAX_DESCRIPTION_LEN: usize = 2000;

/// A project as the API shows it, with the caller's role in it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectPublic {
    /// Stable id.
    pub id: String,
    /// URL name.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The caller's role in this project.
    pub role: Role,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl ProjectPublic {
    fn new(project: Project, role: Role) -> ProjectPublic {
        ProjectPublic {
            id: project.id,
            slug: project.slug,
            name: project.name,
            description: project.description,
            role,
            created_at: timestamp(project.created_at),
            updated_at: timestamp(project.updated_at),
        }
    }
}

/// A list of projects.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectList {
    /// The projects the caller can see, by slug.
    pub items: Vec<ProjectPublic>,
}

/// Body of `POST /api/v1/projects`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// URL name, `^[a-z0-9][a-z0-9-]{0,62}$`.
    pub slug: ProjectSlug,
    /// Display name (defaults to the slug).
    pub name: Option<Label>,
    /// Free text, at most 2000 characters.
    #[serde(default)]
    pub description: Option<String>,
}

/// Body of `PATCH /api/v1/projects/{slug}`: the fields to change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    /// New display name.
    pub name: Option<Label>,
    /// New description.
    pub description: Option<String>,
}

fn check_description(description: Option<&str>) -> Result<(), ApiError> {
    match description {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_LEN => Err(ApiError::invalid_field(
            "description",
            format!("description: must be at most {MAX_DESCRIPTION_LEN} characters"),
        )),
        _ => Ok(()),
    }
}

/// Lists the projects the caller is a member of (all of them for site admins).
#[utoipa::path(get, path = "/api/v1/projects", tag = tags::PROJECTS,
    responses((status = 200, body = ProjectList), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ProjectList>, ApiError> {
    let rows = state
        .store
        .read("list_projects", move |conn| {
            projects::list_visible(conn, &caller.user_id, caller.site_admin)
        })
        .await?;
    Ok(Json(ProjectList {
        items: rows
            .into_iter()
            .map(|(p, role)| ProjectPublic::new(p, role))
            .collect(),
    }))
}

/// Creates a project (site admin). The creator becomes its admin.
#[utoipa::path(post, path = "/api/v1/projects", tag = tags::PROJECTS, request_body = CreateProject,
    responses((status = 201, body = ProjectPublic), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    SiteAdmin(caller): SiteAdmin,
    ApiJson(body): ApiJson<CreateProject>,
) -> Result<(StatusCode, Json<ProjectPublic>), ApiError> {
    check_description(body.description.as_deref())?;
    let ctx = state.audit_as(caller.actor());
    let chain = state.store.site_chain();
    let project = state
        .store
        .write("create_project", move |conn| {
            let new = NewProject {
                slug: &body.slug,
                name: body.name.as_ref(),
                description: body.description.as_deref().unwrap_or_default(),
            };
            crate::projects::create(
                conn,
                &ctx,
                &chain,
                new,
                Some((&caller.user_id, &caller.user_name)),
            )
        })
        .await?;
    tracing::info!(slug = %project.slug, "project created");
    Ok((
        StatusCode::CREATED,
        Json(ProjectPublic::new(project, Role::Admin)),
    ))
}

/// Reads one project.
#[utoipa::path(get, path = "/api/v1/projects/{slug}", tag = tags::PROJECTS,
    params(("slug" = String, Path, description = "Project slug")),
    responses((status = 200, body = ProjectPublic), (status = 404, body = ErrorBody)))]
pub async fn get(access: ProjectAccess<Viewer>) -> Json<ProjectPublic> {
    Json(ProjectPublic::new(access.project, access.role))
}

/// Changes a project's display name or description (admin).
#[utoipa::path(patch, path = "/api/v1/projects/{slug}", tag = tags::PROJECTS, request_body = UpdateProject,
    params(("slug" = String, Path, description = "Project slug")),
    responses((status = 200, body = ProjectPublic), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    ApiJson(body): ApiJson<UpdateProject>,
) -> Result<Json<ProjectPublic>, ApiError> {
    check_description(body.description.as_deref())?;
    let project_id = access.project.id.clone();
    let project = state
        .store
        .write("update_project", move |conn| {
            projects::update(
                conn,
                &project_id,
                body.name.as_ref(),
                body.description.as_deref(),
            )
        })
        .await?;
    Ok(Json(ProjectPublic::new(project, access.role)))
}

/// Deletes a project: it disappears from the API at once, and a tree of cleanup tasks removes
/// its agents, task records (in batches) and schedules in the background, then the project
/// itself. Its audit chain is kept and stays verifiable. Answers 202 with the root task.
#[utoipa::path(delete, path = "/api/v1/projects/{slug}", tag = tags::PROJECTS,
    params(("slug" = String, Path, description = "Project slug")),
    responses((status = 202, body = crate::api::cleanup::CleanupTaskPublic, description = "Deletion started"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
) -> Result<(StatusCode, Json<crate::api::cleanup::CleanupTaskPublic>), ApiError> {
    let ctx = state.audit_as(access.caller.actor());
    let project = access.project.clone();
    let root = state
        .store
        .write("delete_project", move |conn| {
            crate::projects::start_deletion(conn, &ctx, &project)
        })
        .await?;
    tracing::info!(project = %access.project.slug, cleanup = %root.id, "project deletion started");
    Ok((StatusCode::ACCEPTED, Json(root.into())))
}

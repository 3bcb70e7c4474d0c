//! The role matrix: every route, called by every kind of caller.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use taskward_brain::names::{Label, UserName};
use taskward_brain::store::{now_ms, tokens, users};

use crate::both_backends;
use crate::support::{Backend, TestApp, unique};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Floor {
    /// Any authenticated user.
    AnyUser,
    /// Site admins only.
    SiteAdmin,
    /// Members of the project with at least this role.
    Viewer,
    Admin,
}

#[derive(Debug, Clone, Copy)]
enum Route {
    ListProjects,
    CreateProject,
    GetProject,
    UpdateProject,
    DeleteProject,
    ListMembers,
    AddMember,
    RemoveMember,
    ListUsers,
    CreateUser,
    DeleteUser,
    ListTokens,
    CreateToken,
    RevokeToken,
    ListAgents,
    CreateAgent,
    GetAgent,
    DeleteAgent,
    Metrics,
    AgentQueues,
    ListCommands,
    GetCommand,
    AuditPage,
    AuditExport,
    AuditCheckpoint,
    ListTasks,
    GetTask,
    TaskTree,
    BulkDeleteTasks,
    StaleCleanup,
    ListSchedules,
    CreateSchedule,
    GetSchedule,
    UpdateSchedule,
    DeleteSchedule,
    RunSchedule,
}

const ROUTES: [Route; 36] = [
    Route::ListProjects,
    Route::CreateProject,
    Route::GetProject,
    Route::UpdateProject,
    Route::DeleteProject,
    Route::ListMembers,
    Route::AddMember,
    Route::RemoveMember,
    Route::ListUsers,
    Route::CreateUser,
    Route::DeleteUser,
    Route::ListTokens,
    Route::CreateToken,
    Route::RevokeToken,
    Route::ListAgents,
    Route::CreateAgent,
    Route::GetAgent,
    Route::DeleteAgent,
    Route::Metrics,
    Route::AgentQueues,
    Route::ListCommands,
    Route::GetCommand,
    Route::AuditPage,
    Route::AuditExport,
    Route::AuditCheckpoint,
    Route::ListTasks,
    Route::GetTask,
    Route::TaskTree,
    Route::BulkDeleteTasks,
    Route::StaleCleanup,
    Route::ListSchedules,
    Route::CreateSchedule,
    Route::GetSchedule,
    Route::UpdateSchedule,
    Route::DeleteSchedule,
    Route::RunSchedule,
];

/// The project every project route targets.
const SLUG: &str = "alpha";

impl Route {
    fn floor(self) -> Floor {
        use Route::*;
        match self {
            ListProjects | ListTokens | CreateToken | RevokeToken | Metrics => Floor::AnyUser,
            CreateProject | ListUsers | CreateUser | DeleteUser => Floor::SiteAdmin,
            GetProject | ListMembers | ListAgents | GetAgent | AgentQueues | ListCommands
            | GetCommand | AuditPage | AuditExport | AuditCheckpoint | ListTasks | GetTask
            | TaskTree | ListSchedules | GetSchedule => Floor::Viewer,
            UpdateProject | DeleteProject | AddMember | RemoveMember | CreateAgent
            | DeleteAgent | BulkDeleteTasks | StaleCleanup | CreateSchedule | UpdateSchedule
            | DeleteSchedule | RunSchedule => Floor::Admin,
        }
    }

    /// Builds the request, creating a fresh target where the route consumes one, so that a
    /// permitted call can only fail for a reason other than authorization.
    async fn request(self, app: &TestApp, caller: &str) -> (Method, String, Option<Value>) {
        use Route::*;
        let p = format!("/api/v1/projects/{SLUG}");
        match self {
            ListProjects => (Method::GET, "/api/v1/projects".into(), None),
            CreateProject => (
                Method::POST,
                "/api/v1/projects".into(),
                Some(json!({"slug": unique("p")})),
            ),
            GetProject => (Method::GET, p, None),
            UpdateProject => (Method::PATCH, p, Some(json!({"description": "changed"}))),
            DeleteProject => {
                // A fresh project with alpha's members and roles: deleting alpha itself would
                // leave nothing for the routes after this one.
                let slug = unique("doomed");
                app.create_project(&slug).await;
                let members = app.get(&format!("{p}/members"), &app.admin_token).await;
                for member in members.body["items"].as_array().unwrap() {
                    let (user, role) = (
                        member["user"].as_str().unwrap(),
                        member["role"].as_str().unwrap(),
                    );
                    app.add_member(&slug, user, role).await;
                }
                (Method::DELETE, format!("/api/v1/projects/{slug}"), None)
            }
            ListMembers => (Method::GET, format!("{p}/members"), None),
            AddMember => {
                let user = unique("m");
                app.create_user(&user, false).await;
                (
                    Method::POST,
                    format!("{p}/members"),
                    Some(json!({"user": user, "role": "viewer"})),
                )
            }
            RemoveMember => {
                let user = unique("m");
                app.create_user(&user, false).await;
                app.add_member(SLUG, &user, "viewer").await;
                (Method::DELETE, format!("{p}/members/{user}"), None)
            }
            ListUsers => (Method::GET, "/api/v1/users".into(), None),
            CreateUser => (
                Method::POST,
                "/api/v1/users".into(),
                Some(json!({"name": unique("u")})),
            ),
            DeleteUser => {
                let user = unique("u");
                app.create_user(&user, false).await;
                (Method::DELETE, format!("/api/v1/users/{user}"), None)
            }
            ListTokens => (Method::GET, "/api/v1/tokens".into(), None),
            CreateToken => (
                Method::POST,
                "/api/v1/tokens".into(),
                Some(json!({"name": "matrix"})),
            ),
            RevokeToken => {
                let id = own_spare_token(app, caller).await;
                (Method::DELETE, format!("/api/v1/tokens/{id}"), None)
            }
            ListAgents => (Method::GET, format!("{p}/agents"), None),
            CreateAgent => (
                Method::POST,
                format!("{p}/agents"),
                Some(json!({"name": unique("host")})),
            ),
            GetAgent => {
                let id = app.create_agent(SLUG, &unique("host")).await;
                (Method::GET, format!("{p}/agents/{id}"), None)
            }
            DeleteAgent => {
                let id = app.create_agent(SLUG, &unique("host")).await;
                (Method::DELETE, format!("{p}/agents/{id}"), None)
            }
            Metrics => (Method::GET, "/metrics".into(), None),
            AgentQueues => {
                let id = app.create_agent(SLUG, &unique("host")).await;
                (Method::GET, format!("{p}/agents/{id}/queues"), None)
            }
            ListCommands => (Method::GET, format!("{p}/commands"), None),
            GetCommand => {
                let agent = app.create_agent(SLUG, &unique("host")).await;
                let reply = app
                    .post(
                        &format!("{p}/commands/restart-worker"),
                        &app.admin_token,
                        json!({"agent_id": agent, "worker_name": "w"}),
                    )
                    .await;
                let id = reply.body["id"].as_str().unwrap().to_owned();
                (Method::GET, format!("{p}/commands/{id}"), None)
            }
            AuditPage => (Method::GET, format!("{p}/audit"), None),
            AuditExport => (Method::GET, format!("{p}/audit/export"), None),
            AuditCheckpoint => (Method::GET, format!("{p}/audit/checkpoint"), None),
            ListTasks => (Method::GET, format!("{p}/tasks"), None),
            StaleCleanup => {
                let id = app.create_agent(SLUG, &unique("host")).await;
                (
                    Method::POST,
                    format!("{p}/runtime-cleanup/stale"),
                    Some(json!({"agent_id": id})),
                )
            }
            ListSchedules => (Method::GET, format!("{p}/schedules"), None),
            CreateSchedule => (
                Method::POST,
                format!("{p}/schedules"),
                Some(probe_schedule()),
            ),
            GetSchedule | UpdateSchedule | DeleteSchedule | RunSchedule => {
                let reply = app
                    .post(
                        &format!("{p}/schedules"),
                        &app.admin_token,
                        probe_schedule(),
                    )
                    .await;
                let id = reply.body["schedule"]["id"].as_str().unwrap().to_owned();
                match self {
                    GetSchedule => (Method::GET, format!("{p}/schedules/{id}"), None),
                    UpdateSchedule => (
                        Method::PUT,
                        format!("{p}/schedules/{id}"),
                        Some(json!({"enabled": false})),
                    ),
                    DeleteSchedule => (Method::DELETE, format!("{p}/schedules/{id}"), None),
                    _ => (Method::POST, format!("{p}/schedules/{id}/run"), None),
                }
            }
            BulkDeleteTasks => (
                Method::POST,
                format!("{p}/tasks/bulk-delete"),
                Some(json!({"filter_state": "failed"})),
            ),
            GetTask | TaskTree => {
                let agent = app.create_agent(SLUG, &unique("host")).await;
                let task = unique("task");
                app.seed_tasks(SLUG, &agent, &[task.as_str()]).await;
                let tail = if matches!(self, TaskTree) {
                    "/tree"
                } else {
                    ""
                };
                (Method::GET, format!("{p}/tasks/celery/{task}{tail}"), None)
            }
        }
    }
}

/// A schedule any admin may create.
fn probe_schedule() -> Value {
    json!({"name": unique("probe"), "type": "health-check", "cronExpression": "*/5 * * * *",
           "healthCheckConfig": {}})
}

/// A second token of the caller's own, to revoke. For callers whose token does not
/// authenticate, any id will do: they must be refused before it matters.
async fn own_spare_token(app: &TestApp, caller: &str) -> String {
    let reply = app
        .post("/api/v1/tokens", caller, json!({"name": "spare"}))
        .await;
    reply.body["id"]
        .as_str()
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// The kinds of caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    NoToken,
    Revoked,
    Expired,
    Outsider,
    Viewer,
    Operator,
    ProjectAdmin,
    SiteAdmin,
}

fn expected(route: Route, who: Who) -> Expect {
    use Who::*;
    let project_role = match who {
        Viewer => Some(1),
        Operator => Some(2),
        ProjectAdmin | SiteAdmin => Some(3),
        _ => None,
    };
    match who {
        NoToken | Revoked | Expired => return Expect::Status(StatusCode::UNAUTHORIZED),
        _ => {}
    }
    match route.floor() {
        Floor::AnyUser => Expect::Allowed,
        Floor::SiteAdmin if who == SiteAdmin => Expect::Allowed,
        Floor::SiteAdmin => Expect::Status(StatusCode::FORBIDDEN),
        floor => {
            let needed = match floor {
                Floor::Viewer => 1,
                _ => 3,
            };
            match project_role {
                None => Expect::Status(StatusCode::NOT_FOUND),
                Some(r) if r >= needed => Expect::Allowed,
                Some(_) => Expect::Status(StatusCode::FORBIDDEN),
            }
        }
    }
}

#[derive(Debug)]
enum Expect {
    /// Any answer but 401/403/404 (and never a 5xx other than the documented 501).
    Allowed,
    Status(StatusCode),
}

async fn role_matrix(backend: Backend) {
    let app = TestApp::new(backend).await;
    app.create_project(SLUG).await;
    let mut callers = vec![(Who::SiteAdmin, app.admin_token.clone())];
    for (who, role) in [
        (Who::Viewer, Some("viewer")),
        (Who::Operator, Some("operator")),
        (Who::ProjectAdmin, Some("admin")),
        (Who::Outsider, None),
    ] {
        let name = unique("caller");
        let token = app.create_user(&name, false).await;
        if let Some(role) = role {
            app.add_member(SLUG, &name, role).await;
        }
        callers.push((who, token));
    }
    // An operator whose token was revoked, and one whose token expired.
    let revoked_user = unique("revoked");
    let revoked = app.create_user(&revoked_user, false).await;
    app.add_member(SLUG, &revoked_user, "admin").await;
    let listed = app.get("/api/v1/tokens", &revoked).await;
    let id = listed.body["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.delete(&format!("/api/v1/tokens/{id}"), &revoked)
            .await
            .status,
        StatusCode::OK
    );
    callers.push((Who::Revoked, revoked));
    callers.push((Who::Expired, expired_admin_token(&app).await));
    callers.push((Who::NoToken, String::new()));

    let mut failures = Vec::new();
    for route in ROUTES {
        for (who, token) in &callers {
            let (method, path, body) = route.request(&app, token).await;
            let token = (!token.is_empty()).then_some(token.as_str());
            let reply = app.call(method.clone(), &path, token, body).await;
            let ok = match expected(route, *who) {
                Expect::Allowed => {
                    !matches!(reply.status.as_u16(), 401 | 403 | 404)
                        && (reply.status.is_success()
                            || reply.status == StatusCode::NOT_IMPLEMENTED)
                }
                Expect::Status(status) => {
                    reply.status == status && reply.body["error"]["code"].is_string()
                }
            };
            if !ok {
                failures.push(format!(
                    "{route:?} {method} {path} as {who:?}: expected {:?}, got {} {}",
                    expected(route, *who),
                    reply.status,
                    reply.body
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "role matrix failures:\n{}",
        failures.join("\n")
    );
}

/// A project admin whose only token expired a moment ago.
async fn expired_admin_token(app: &TestApp) -> String {
    let name = unique("expired");
    app.create_user(&name, false).await;
    app.add_member(SLUG, &name, "admin").await;
    app.store
        .write("test_expired_token", move |conn| {
            let user = users::find_active(conn, &name.parse::<UserName>().unwrap())?;
            let label: Label = "old".parse().unwrap();
            let (_, secret) = tokens::create(conn, &user.id, &label, Some(now_ms() - 1))?;
            Ok::<_, taskward_brain::store::StoreError>(secret.expose().to_owned())
        })
        .await
        .unwrap()
}

/// A member of another project sees exactly what a stranger sees: 404, for the project and
/// for anything addressed through it, even with valid ids from that project.
async fn foreign_projects_are_404(backend: Backend) {
    let app = TestApp::new(backend).await;
    app.create_project("alpha").await;
    app.create_project("beta").await;
    let agent_in_alpha = app.create_agent("alpha", "alpha-host").await;
    let user = unique("beta-admin");
    let token = app.create_user(&user, false).await;
    app.add_member("beta", &user, "admin").await;

    let missing = app.get("/api/v1/projects/no-such-project", &token).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    for path in [
        "/api/v1/projects/alpha".to_owned(),
        "/api/v1/projects/alpha/members".to_owned(),
        "/api/v1/projects/alpha/agents".to_owned(),
        format!("/api/v1/projects/alpha/agents/{agent_in_alpha}"),
    ] {
        let reply = app.get(&path, &token).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.code(), missing.code(), "{path}");
    }
    // alpha's agent addressed through beta, where the caller is admin: still not found,
    // and not deleted.
    let via_beta = format!("/api/v1/projects/beta/agents/{agent_in_alpha}");
    assert_eq!(
        app.get(&via_beta, &token).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&via_beta, &token).await.status,
        StatusCode::NOT_FOUND
    );
    let still_there = app
        .get(
            &format!("/api/v1/projects/alpha/agents/{agent_in_alpha}"),
            &app.admin_token,
        )
        .await;
    assert_eq!(still_there.status, StatusCode::OK);
    // The project list shows only beta.
    let listed = app.get("/api/v1/projects", &token).await;
    let slugs: Vec<&str> = listed.texts("items", "slug");
    assert_eq!(slugs, ["beta"]);
}

both_backends!(role_matrix, foreign_projects_are_404);

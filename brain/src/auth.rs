//! Who is calling and what they may do.
//!
//! [`Caller`] is parsed once per request from `Authorization: Bearer <token>` or, for the
//! dashboard, from its session cookie; a request on a session that changes state must also
//! carry the session's CSRF token in `x-csrf-token` (bearer calls need none: a browser never
//! attaches a bearer token by itself). Project-scoped
//! handlers take a [`ProjectAccess<R>`], whose extraction resolves the `{slug}` path parameter
//! and checks the caller's role against the floor `R` ([`Viewer`], [`Operator`], [`Admin`]);
//! the project can only be reached through it, so a handler cannot forget the check. Callers
//! who are not members get the same 404 as for a project that does not exist, so slugs do not
//! leak. Site-wide routes take [`SiteAdmin`].

use std::marker::PhantomData;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;

use crate::app::AppState;
use crate::error::ApiError;
use crate::names::ProjectSlug;
use crate::role::Role;
use crate::store::projects::{self, Project};
use crate::store::sessions;
use crate::store::tokens::{self, LAST_USED_RESOLUTION_MS};
use crate::store::{StoreError, now_ms};

/// An authenticated user, established from their bearer token.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user's id.
    pub user_id: String,
    /// The user's name, for logs and (later) audit rows.
    pub user_name: String,
    /// Site admins are admin in every project.
    pub site_admin: bool,
    /// How the caller proved who they are.
    pub via: Credential,
}

/// What authenticated a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API token (its id).
    Token(String),
    /// A dashboard session (its CSRF token, which the pages embed).
    Session {
        /// The session's CSRF token.
        csrf_token: String,
    },
}

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "tw_session";

/// The header carrying the CSRF token on state-changing requests made on a session.
pub const CSRF_HEADER: &str = "x-csrf-token";

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let caller = match bearer_token(parts) {
            Some(presented) => from_token(state, presented).await?,
            None => {
                let presented = session_cookie(&parts.headers).ok_or(ApiError::Unauthenticated)?;
                let caller = from_session(state, presented).await?;
                if !parts.method.is_safe() {
                    check_csrf(parts, &caller)?;
                }
                caller
            }
        };
        tracing::Span::current().record("user", caller.user_name.as_str());
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

async fn from_token(state: &AppState, presented: String) -> Result<Caller, ApiError> {
    let now = now_ms();
    let outcome = state
        .store
        .read("authenticate", move |conn| {
            tokens::authenticate(conn, &presented, now)
        })
        .await?;
    let (token, user) = match outcome {
        Ok(found) => found,
        Err(refusal) => {
            tracing::info!(?refusal, "bearer token refused");
            return Err(ApiError::Unauthenticated);
        }
    };
    if token
        .last_used_at
        .is_none_or(|t| t < now - LAST_USED_RESOLUTION_MS)
    {
        let token_id = token.id.clone();
        record_use_later(state, "touch_token", move |conn| {
            tokens::touch(conn, &token_id, now)
        });
    }
    Ok(Caller::new(user, Credential::Token(token.id)))
}

/// Records a credential's use off the request path: a slow write lock must not slow reads.
fn record_use_later(
    state: &AppState,
    op: &'static str,
    touch: impl FnOnce(&mut crate::store::AnyConnection) -> crate::store::StoreResult<()>
    + Send
    + 'static,
) {
    let store = state.store.clone();
    tokio::spawn(async move {
        if let Err(err) = store.write(op, touch).await {
            tracing::warn!(%err, op, "could not record a credential's use");
        }
    });
}

async fn from_session(state: &AppState, presented: String) -> Result<Caller, ApiError> {
    let now = now_ms();
    let lookup = presented.clone();
    let Some((session, user)) = state
        .store
        .read("authenticate_session", move |conn| {
            sessions::find(conn, &lookup, now)
        })
        .await?
    else {
        return Err(ApiError::Unauthenticated);
    };
    if session.last_seen_at < now - sessions::SEEN_RESOLUTION_MS {
        record_use_later(state, "touch_session", move |conn| {
            sessions::touch(conn, &presented, now)
        });
    }
    Ok(Caller::new(
        user,
        Credential::Session {
            csrf_token: session.csrf_token,
        },
    ))
}

/// Refuses a state-changing request on a session whose `x-csrf-token` is missing or wrong.
fn check_csrf(parts: &Parts, caller: &Caller) -> Result<(), ApiError> {
    let Credential::Session { csrf_token } = &caller.via else {
        return Ok(());
    };
    let sent = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if csrf_matches(sent, csrf_token) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "csrf: this request needs the session's CSRF token in x-csrf-token".into(),
        ))
    }
}

/// Compares a presented CSRF token with the session's in constant time.
pub fn csrf_matches(sent: &str, expected: &str) -> bool {
    use sha2::Digest;
    // Equal-length digests, compared without an early exit.
    let (a, b) = (sha2::Sha256::digest(sent), sha2::Sha256::digest(expected));
    !sent.is_empty()
        && a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

impl Caller {
    /// A slot for one read this caller shapes (a list page, an export): 429 when all of its
    /// slots are taken (`--reads-per-caller`). Hold it while the read runs.
    pub fn read_slot(&self, app: &crate::app::App) -> Result<crate::limits::ReadSlot, ApiError> {
        app.reads
            .enter(&self.user_id)
            .map_err(ApiError::TooManyConcurrent)
    }

    fn new(user: crate::store::users::User, via: Credential) -> Caller {
        Caller {
            user_id: user.id,
            user_name: user.name,
            site_admin: user.site_admin,
            via,
        }
    }

    /// The caller as the actor of audit rows.
    pub fn actor(&self) -> taskward_shared::audit::Actor {
        taskward_shared::audit::Actor {
            kind: taskward_shared::audit::ActorKind::User,
            id: self.user_id.clone(),
            name: self.user_name.clone(),
        }
    }
}

/// The token from `Authorization: Bearer <token>`, if the header is well-formed.
fn bearer_token(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

/// A site admin (creates users and projects).
#[derive(Debug, Clone)]
pub struct SiteAdmin(pub Caller);

impl FromRequestParts<AppState> for SiteAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<SiteAdmin, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.site_admin {
            return Err(ApiError::Forbidden("this action needs a site admin".into()));
        }
        Ok(SiteAdmin(caller))
    }
}

/// The lowest role a route accepts, as a type so it shows in the handler's signature.
pub trait RoleFloor: Send + Sync + 'static {
    /// The role.
    const ROLE: Role;
}

/// Floor: any member.
#[derive(Debug)]
pub struct Viewer;
/// Floor: operators and admins.
#[derive(Debug)]
pub struct Operator;
/// Floor: admins only.
#[derive(Debug)]
pub struct Admin;

impl RoleFloor for Viewer {
    const ROLE: Role = Role::Viewer;
}
impl RoleFloor for Operator {
    const ROLE: Role = Role::Operator;
}
impl RoleFloor for Admin {
    const ROLE: Role = Role::Admin;
}

/// Proof that the caller holds at least role `R` in the project named by `{slug}`.
#[derive(Debug)]
pub struct ProjectAccess<R> {
    /// Who is calling.
    pub caller: Caller,
    /// The project, resolved from the path.
    pub project: Project,
    /// The caller's effective role (admin for site admins).
    pub role: Role,
    floor: PhantomData<R>,
}

impl<R> Clone for ProjectAccess<R> {
    fn clone(&self) -> Self {
        ProjectAccess {
            caller: self.caller.clone(),
            project: self.project.clone(),
            role: self.role,
            floor: PhantomData,
        }
    }
}

impl<R: RoleFloor> FromRequestParts<AppState> for ProjectAccess<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<ProjectAccess<R>, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| match e {
                // `%FF` in a segment: the caller's mistake, not the server's.
                RawPathParamsRejection::InvalidUtf8InPathParam(bad) => ApiError::BadRequest {
                    code: "invalid_path_parameter",
                    message: bad.body_text(),
                    field: None,
                },
                other => ApiError::Internal(format!("project route without path params: {other}")),
            })?;
        let raw_slug = params
            .iter()
            .find_map(|(name, value)| (name == "slug").then(|| value.to_owned()))
            .ok_or_else(|| ApiError::Internal("project route without {slug}".into()))?;
        let slug: ProjectSlug = raw_slug
            .parse()
            .map_err(|why: String| ApiError::invalid_field("slug", why))?;
        let not_found = || ApiError::NotFound(format!("project {slug}"));
        let user_id = caller.user_id.clone();
        let lookup_slug = slug.clone();
        let (project, membership) = match state
            .store
            .read("project_access", move |conn| {
                projects::find_with_role(conn, &lookup_slug, &user_id)
            })
            .await
        {
            Ok(found) => found,
            Err(StoreError::NotFound) => return Err(not_found()),
            Err(other) => return Err(other.into()),
        };
        let role = if caller.site_admin {
            Role::Admin
        } else {
            membership.ok_or_else(not_found)?
        };
        if role < R::ROLE {
            return Err(ApiError::Forbidden(format!(
                "this action needs the {} role in project {slug}; you are {role}",
                R::ROLE
            )));
        }
        Ok(ProjectAccess {
            caller,
            project,
            role,
            floor: PhantomData,
        })
    }
}

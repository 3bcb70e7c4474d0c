//! Agents: one per host, registered by an admin, enrolled later with a one-time token.

use diesel::prelude::*;
use taskward_shared::secret::{Secret, SecretKind};

use super::schema::agents;
use super::{AnyConnection, StoreError, StoreResult, new_id, now_ms};
use crate::names::AgentName;

/// How long an enrollment token stays valid: long enough to hand it to whoever installs the
/// agent, short enough that a forgotten one stops being a way in.
pub const ENROLLMENT_VALIDITY_MS: i64 = 24 * 60 * 60 * 1000;

/// An agent row (without the enrollment token hash).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = agents)]
pub struct Agent {
    /// Stable id (UUID): the audience of every command sent to this agent.
    pub id: String,
    /// Owning project.
    pub project_id: String,
    /// Name, unique in the project.
    pub name: String,
    /// Until when the enrollment token can be spent (None once spent).
    pub enrollment_expires_at: Option<i64>,
    /// When the agent enrolled.
    pub enrolled_at: Option<i64>,
    /// Preserved agents are never removed by stale cleanup.
    pub preserve: bool,
    /// Creation time, ms since epoch.
    pub created_at: i64,
    /// Last contact from the agent.
    pub last_seen_at: Option<i64>,
}

/// Registers an agent and returns it with its one-time enrollment token.
pub fn create(
    conn: &mut AnyConnection,
    project_id: &str,
    name: &AgentName,
    preserve: bool,
) -> StoreResult<(Agent, Secret)> {
    let secret = Secret::generate(SecretKind::Enrollment);
    let now = now_ms();
    let agent = Agent {
        id: new_id(),
        project_id: project_id.to_owned(),
        name: name.to_string(),
        enrollment_expires_at: Some(now + ENROLLMENT_VALIDITY_MS),
        enrolled_at: None,
        preserve,
        created_at: now,
        last_seen_at: None,
    };
    diesel::insert_into(agents::table)
        .values((
            agents::id.eq(&agent.id),
            agents::project_id.eq(&agent.project_id),
            agents::name.eq(&agent.name),
            agents::enrollment_token_hash.eq(secret.hash()),
            agents::enrollment_expires_at.eq(agent.enrollment_expires_at),
            agents::preserve.eq(preserve),
            agents::created_at.eq(now),
        ))
        .execute(conn)
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "an agent named {name} already exists in this project"
            )),
            other => other,
        })?;
    Ok((agent, secret))
}

/// Agents of a project by name.
pub fn list(conn: &mut AnyConnection, project_id: &str) -> StoreResult<Vec<Agent>> {
    Ok(agents::table
        .filter(agents::project_id.eq(project_id))
        .order(agents::name.asc())
        .select(Agent::as_select())
        .load(conn)?)
}

/// One agent, only if it belongs to the project (ids from other projects are `NotFound`).
pub fn find(conn: &mut AnyConnection, project_id: &str, agent_id: &str) -> StoreResult<Agent> {
    Ok(agents::table
        .find(agent_id)
        .filter(agents::project_id.eq(project_id))
        .select(Agent::as_select())
        .first(conn)?)
}

/// Deletes an agent of the project; `NotFound` if it is not there.
pub fn delete(conn: &mut AnyConnection, project_id: &str, agent_id: &str) -> StoreResult<Agent> {
    let agent = find(conn, project_id, agent_id)?;
    diesel::delete(agents::table.find(agent_id)).execute(conn)?;
    Ok(agent)
}

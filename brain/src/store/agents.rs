//! Agents: one per host, registered by an admin, enrolled later with a one-time token.

use diesel::prelude::*;
use taskward_shared::secret::{Secret, SecretKind, hash_secret};

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
    /// The agent's own Ed25519 public key (hex), recorded at enrollment.
    pub public_key: Option<String>,
    /// Generation of the latest session; a connection with an older one is closed.
    pub session_generation: i64,
    /// Host the agent enrolled from.
    pub hostname: Option<String>,
    /// Events the agent dropped (cumulative).
    pub dropped_events: i64,
    /// Updates of the agent's that the brain refused to store (cumulative).
    pub rejected_events: i64,
    /// Which update was refused last, and why (never its field values).
    pub last_rejection: Option<String>,
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
        public_key: None,
        session_generation: 0,
        hostname: None,
        dropped_events: 0,
        rejected_events: 0,
        last_rejection: None,
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

/// Replaces the enrollment token of an agent that has not enrolled yet with a fresh one valid
/// until `expires_at`; the previous token stops working at once. `NotFound` when the agent is
/// gone or already enrolled (an enrolled agent never gets a way to enroll again).
pub fn reissue_enrollment(
    conn: &mut AnyConnection,
    agent_id: &str,
    expires_at: i64,
) -> StoreResult<Secret> {
    let secret = Secret::generate(SecretKind::Enrollment);
    let updated = diesel::update(
        agents::table
            .find(agent_id)
            .filter(agents::enrolled_at.is_null()),
    )
    .set((
        agents::enrollment_token_hash.eq(secret.hash()),
        agents::enrollment_expires_at.eq(expires_at),
    ))
    .execute(conn)?;
    if updated == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(secret)
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

/// Adds `count` refused updates to the agent's tally, with the reason of the latest.
pub fn record_rejected(
    conn: &mut AnyConnection,
    agent_id: &str,
    count: u64,
    reason: &str,
) -> StoreResult<()> {
    diesel::update(agents::table.find(agent_id))
        .set((
            agents::rejected_events.eq(agents::rejected_events + count as i64),
            agents::last_rejection.eq(reason),
        ))
        .execute(conn)?;
    Ok(())
}

/// Deletes an agent of the project; `NotFound` if it is not there.
pub fn delete(conn: &mut AnyConnection, project_id: &str, agent_id: &str) -> StoreResult<Agent> {
    let agent = find(conn, project_id, agent_id)?;
    diesel::delete(agents::table.find(agent_id)).execute(conn)?;
    Ok(agent)
}

/// Why an enrollment did not happen (the wire says only "invalid enrollment token"; the
/// log says which).
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// No agent waits for this token (unknown or already spent).
    #[error("unknown or spent enrollment token")]
    Unknown,
    /// The token's 24 hours passed.
    #[error("expired enrollment token")]
    Expired,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl super::OpError for EnrollError {
    fn store_error(&self) -> Option<&StoreError> {
        match self {
            EnrollError::Store(err) => Some(err),
            _ => None,
        }
    }
}

/// Spends an enrollment token: records the agent's public key and host, and issues the agent's
/// link credential (returned once, stored hashed).
pub fn enroll(
    conn: &mut AnyConnection,
    token: &str,
    public_key: &str,
    hostname: Option<&str>,
    now: i64,
) -> Result<(Agent, Secret), EnrollError> {
    let found = agents::table
        .filter(agents::enrollment_token_hash.eq(hash_secret(token)))
        .select(Agent::as_select())
        .first(conn)
        .optional()
        .map_err(StoreError::from)?;
    let Some(agent) = found else {
        return Err(EnrollError::Unknown);
    };
    if agent.enrollment_expires_at.is_none_or(|t| t <= now) {
        return Err(EnrollError::Expired);
    }
    let credential = Secret::generate(SecretKind::AgentCredential);
    diesel::update(agents::table.find(&agent.id))
        .set((
            agents::enrollment_token_hash.eq(None::<String>),
            agents::enrollment_expires_at.eq(None::<i64>),
            agents::enrolled_at.eq(now),
            agents::public_key.eq(public_key),
            agents::credential_hash.eq(credential.hash()),
            agents::hostname.eq(hostname),
        ))
        .execute(conn)
        .map_err(StoreError::from)?;
    let agent = agents::table
        .find(&agent.id)
        .select(Agent::as_select())
        .first(conn)
        .map_err(StoreError::from)?;
    Ok((agent, credential))
}

/// The enrolled agent holding this link credential, if any.
pub fn by_credential(conn: &mut AnyConnection, credential: &str) -> StoreResult<Option<Agent>> {
    Ok(agents::table
        .filter(agents::credential_hash.eq(hash_secret(credential)))
        .select(Agent::as_select())
        .first(conn)
        .optional()?)
}

/// Starts a new session: bumps and returns the generation (durable, so a restarted brain
/// still fences connections from before).
pub fn next_session(conn: &mut AnyConnection, agent_id: &str, now: i64) -> StoreResult<u64> {
    diesel::update(agents::table.find(agent_id))
        .set((
            agents::session_generation.eq(agents::session_generation + 1),
            agents::last_seen_at.eq(now),
        ))
        .execute(conn)?;
    let generation: i64 = agents::table
        .find(agent_id)
        .select(agents::session_generation)
        .first(conn)?;
    Ok(generation as u64)
}

/// Records contact from an agent.
pub fn touch(conn: &mut AnyConnection, agent_id: &str, now: i64) -> StoreResult<()> {
    diesel::update(agents::table.find(agent_id))
        .set(agents::last_seen_at.eq(now))
        .execute(conn)?;
    Ok(())
}

/// The sum of a project's agents' ingest counters (bumped once per stored batch): the other
/// half of what live dashboard pages watch.
pub fn events_seq(conn: &mut AnyConnection, project_id: &str) -> StoreResult<i64> {
    // Summed here: a project has a handful of agents, and SUM(bigint) is numeric on PostgreSQL.
    let counters: Vec<i64> = agents::table
        .filter(agents::project_id.eq(project_id))
        .select(agents::events_seq)
        .load(conn)?;
    Ok(counters.iter().fold(0i64, |a, b| a.wrapping_add(*b)))
}

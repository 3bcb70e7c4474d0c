//! The agents registry as audited actions on the project's chain: an admin registers an
//! agent (`agent.created`, with a one-time enrollment token), the agent enrolls its public
//! key (`agent.enrolled`, signed with the agent as actor: the key that verifies its results
//! from then on), an admin deletes it (`agent.deleted`). A pending agent's token can be
//! replaced by a fresh one (`agent.enrollment_reissued`), which ends the old one.

use serde_json::json;
use taskward_shared::audit::{Actor, ActorKind};
use taskward_shared::secret::Secret;

use crate::names::AgentName;
use crate::refusal::{Refusal, or_not_found};
use crate::store::agents::{self, Agent, EnrollError};
use crate::store::audit::{self, AuditContext, Signer};
use crate::store::{AnyConnection, StoreResult, now_ms};

/// An agent as the actor of what it does (enrolling, its results).
pub fn agent_actor(agent: &Agent) -> Actor {
    Actor {
        kind: ActorKind::Agent,
        id: agent.id.clone(),
        name: agent.name.clone(),
    }
}

/// Registers an agent; returns it with its one-time enrollment token.
pub fn register(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    project_id: &str,
    name: &AgentName,
    preserve: bool,
) -> StoreResult<(Agent, Secret)> {
    let (agent, secret) = agents::create(conn, project_id, name, preserve)?;
    audit::append(
        conn,
        ctx,
        &audit::project_chain(project_id),
        "agent.created",
        None,
        json!({"agent": {"id": agent.id, "name": agent.name, "preserve": agent.preserve}}),
    )?;
    Ok((agent, secret))
}

/// Replaces the enrollment token of a pending agent with a fresh one valid until
/// `expires_at` (the old token stops working) and appends `agent.enrollment_reissued`; the
/// row names when the new token expires, never the token.
pub fn reissue_enrollment(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    agent: &Agent,
    expires_at: i64,
) -> StoreResult<Secret> {
    let secret = agents::reissue_enrollment(conn, &agent.id, expires_at)?;
    audit::append(
        conn,
        ctx,
        &audit::project_chain(&agent.project_id),
        "agent.enrollment_reissued",
        None,
        json!({
            "agent": {"id": agent.id, "name": agent.name},
            "expires_at": crate::clock::timestamp(expires_at),
        }),
    )?;
    Ok(secret)
}

/// Deletes an agent of the project. Its tasks stay; it can no longer connect.
pub fn delete(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    project_id: &str,
    agent_id: &str,
) -> Result<Agent, Refusal> {
    let agent = or_not_found(agents::delete(conn, project_id, agent_id), || {
        format!("agent {agent_id}")
    })?;
    audit::append(
        conn,
        ctx,
        &audit::project_chain(project_id),
        "agent.deleted",
        None,
        json!({"agent": {"id": agent.id, "name": agent.name}}),
    )?;
    Ok(agent)
}

/// What an agent presents to enroll.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// The one-time enrollment token.
    pub token: String,
    /// Its ed25519 public key (hex).
    pub public_key: String,
    /// The key's id, as rows name it.
    pub key_id: String,
    /// Its host, if it said.
    pub hostname: Option<String>,
}

/// Spends an enrollment token: records the agent's key and host, issues its link credential
/// (returned once, stored hashed) and appends `agent.enrolled` with the public key, so an
/// auditor can check the agent's signed results with the log alone.
pub fn enroll(
    conn: &mut AnyConnection,
    signer: Signer,
    enrollment: &Enrollment,
) -> Result<(Agent, Secret), EnrollError> {
    let (agent, credential) = agents::enroll(
        conn,
        &enrollment.token,
        &enrollment.public_key,
        enrollment.hostname.as_deref(),
        now_ms(),
    )?;
    let ctx = AuditContext {
        signer,
        actor: agent_actor(&agent),
    };
    audit::append(
        conn,
        &ctx,
        &audit::project_chain(&agent.project_id),
        "agent.enrolled",
        None,
        json!({
            "agent": {"id": agent.id, "name": agent.name},
            "public_key": enrollment.public_key,
            "key_id": enrollment.key_id,
            "hostname": enrollment.hostname,
        }),
    )?;
    Ok((agent, credential))
}

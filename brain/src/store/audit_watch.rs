//! The reads the audit watch and the auditor's bundle need beyond [`super::audit`]: every
//! chain's size, and every chain with the project it belongs to.

use diesel::prelude::*;

use super::schema::{audit_chains, projects};
use super::{AnyConnection, StoreResult};

/// Every chain's name and size (rows), in name order. One small table: one row per project
/// and one for the site.
pub fn heads(conn: &mut AnyConnection) -> StoreResult<Vec<(String, u64)>> {
    let raw: Vec<(String, i64)> = audit_chains::table
        .select((audit_chains::id, audit_chains::head_seq))
        .order(audit_chains::id.asc())
        .load(conn)?;
    Ok(raw
        .into_iter()
        .map(|(chain, size)| (chain, size as u64))
        .collect())
}

/// Every chain with the slug of its project: `None` for the site chain and for chains whose
/// project was deleted (their rows stay).
pub fn chains_with_slugs(conn: &mut AnyConnection) -> StoreResult<Vec<(String, Option<String>)>> {
    let chains: Vec<(String, Option<String>)> = audit_chains::table
        .select((audit_chains::id, audit_chains::project_id))
        .order(audit_chains::id.asc())
        .load(conn)?;
    let slugs: std::collections::HashMap<String, String> = projects::table
        .select((projects::id, projects::slug))
        .load::<(String, String)>(conn)?
        .into_iter()
        .collect();
    Ok(chains
        .into_iter()
        .map(|(chain, project)| {
            let slug = project.and_then(|id| slugs.get(&id).cloned());
            (chain, slug)
        })
        .collect())
}

//! The audit log's rows and chain heads.
//!
//! [`append`] runs inside the caller's write transaction: the action and its audit row commit
//! together or not at all. It bumps the chain head first, which takes the head row's write lock
//! on PostgreSQL (and the database write lock on SQLite), so concurrent appends to one chain —
//! from any number of brain processes — are serialized by the database; `UNIQUE(chain_id,
//! prev_hash)` and the primary key `(chain_id, seq)` make a fork impossible even if that failed.
//! Nothing updates or deletes `audit_rows` (triggers refuse it on both backends).

use std::sync::Arc;

use diesel::prelude::*;
use ed25519_dalek::SigningKey;
use taskward_shared::audit::{
    Actor, ActorKind, AuditRow, Hash, STATEMENT_VERSION, Statement, genesis_hash, parse_hash,
};

use super::schema::{audit_chains, audit_rows, installation};
use super::{AnyConnection, StoreError, StoreResult, new_id, now_ms};

/// The chain of a project's actions. Named by ids, never by the slug (slugs can change).
pub fn project_chain(project_id: &str) -> String {
    format!("project:{project_id}")
}

/// The chain of site-wide actions (users, projects, tokens, keys) of one installation.
pub fn site_chain(install_id: &str) -> String {
    format!("site:{install_id}")
}

/// Returns this installation's id, creating it (and the site chain) on first use.
pub fn ensure_installation(conn: &mut AnyConnection) -> StoreResult<String> {
    if let Some(id) = installation(conn)? {
        return Ok(id);
    }
    let id = new_id();
    diesel::insert_into(installation::table)
        .values((
            installation::id.eq(&id),
            installation::created_at.eq(now_ms()),
        ))
        .execute(conn)?;
    create_chain(conn, &site_chain(&id), None)?;
    Ok(id)
}

/// This installation's id, if the store has one yet.
pub fn installation(conn: &mut AnyConnection) -> StoreResult<Option<String>> {
    Ok(installation::table
        .select(installation::id)
        .first::<String>(conn)
        .optional()?)
}

/// Creates an empty chain.
pub fn create_chain(
    conn: &mut AnyConnection,
    chain: &str,
    project_id: Option<&str>,
) -> StoreResult<()> {
    diesel::insert_into(audit_chains::table)
        .values((
            audit_chains::id.eq(chain),
            audit_chains::project_id.eq(project_id),
            audit_chains::head_seq.eq(0_i64),
            audit_chains::head_hash.eq(hex::encode(genesis_hash(chain))),
            audit_chains::created_at.eq(now_ms()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Whoever holds the signing keys: hands out the key whose validity window holds a time.
/// The brain's `Keys` is the real one; a bare [`SigningKey`] signs at any time (tests, benches).
pub trait RowSigner: Send + Sync {
    /// The key that signs what is dated `time_ms`.
    fn signer_at(&self, time_ms: i64) -> Arc<SigningKey>;
}

impl RowSigner for SigningKey {
    fn signer_at(&self, _time_ms: i64) -> Arc<SigningKey> {
        Arc::new(self.clone())
    }
}

/// A shared [`RowSigner`].
pub type Signer = Arc<dyn RowSigner>;

/// What an append needs besides the row's content: who signs and who acted.
#[derive(Clone)]
pub struct AuditContext {
    /// The keys; each row is signed by the one whose window holds the row's time.
    pub signer: Signer,
    /// Who caused the action.
    pub actor: Actor,
}

/// The brain (or its CLI, on this host) as an audit actor.
pub fn system_actor(name: &str) -> Actor {
    Actor {
        kind: ActorKind::System,
        id: "brain".into(),
        name: name.into(),
    }
}

/// Appends a signed row to `chain`. Must run inside a write transaction.
///
/// The row's time is now, or the previous row's time if that is later (a clock set back),
/// so times never go backwards along a chain; and the row is signed by the key whose
/// validity window holds that time, never by "the key of now". Together these make a key's
/// window and the chain order agree: a verifier can hold every row to its key's window with
/// no grace.
pub fn append(
    conn: &mut AnyConnection,
    ctx: &AuditContext,
    chain: &str,
    kind: &str,
    command_id: Option<&str>,
    payload: serde_json::Value,
) -> StoreResult<AuditRow> {
    let fail =
        |why: String| StoreError::Unavailable(format!("audit append to {chain} failed: {why}"));
    let bumped = diesel::update(audit_chains::table.find(chain))
        .set(audit_chains::head_seq.eq(audit_chains::head_seq + 1))
        .execute(conn)?;
    if bumped != 1 {
        return Err(fail("no such chain".into()));
    }
    let (seq, head_hash): (i64, String) = audit_chains::table
        .find(chain)
        .select((audit_chains::head_seq, audit_chains::head_hash))
        .first(conn)?;
    let prev: Hash = parse_hash(&head_hash).ok_or_else(|| fail("corrupt head hash".into()))?;
    // The head bump above holds the chain's lock, so the previous row cannot change under us.
    let previous_time: Option<i64> = audit_rows::table
        .find((chain, seq - 1))
        .select(audit_rows::created_at)
        .first(conn)
        .optional()?;
    let time = now_ms().max(previous_time.unwrap_or(i64::MIN));
    let statement = Statement {
        v: STATEMENT_VERSION,
        chain: chain.to_owned(),
        seq: seq.to_string(),
        time: crate::clock::timestamp(time).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        actor: ctx.actor.clone(),
        kind: kind.to_owned(),
        command_id: command_id.map(str::to_owned),
        payload,
    };
    let row = AuditRow::sign(seq as u64, &prev, &statement, &ctx.signer.signer_at(time));
    diesel::insert_into(audit_rows::table)
        .values((
            audit_rows::chain_id.eq(chain),
            audit_rows::seq.eq(seq),
            audit_rows::prev_hash.eq(&row.prev_hash),
            audit_rows::hash.eq(&row.hash),
            audit_rows::key_id.eq(&row.key_id),
            audit_rows::signature.eq(&row.signature),
            audit_rows::statement.eq(&row.statement),
            audit_rows::kind.eq(&row.kind),
            audit_rows::command_id.eq(&row.command_id),
            audit_rows::created_at.eq(time),
        ))
        .execute(conn)?;
    diesel::update(audit_chains::table.find(chain))
        .set(audit_chains::head_hash.eq(&row.hash))
        .execute(conn)?;
    crate::audit::watch::signed_here::note(&row);
    Ok(row)
}

/// The time of a row (ms since the epoch, the statement's `time`).
pub fn row_time(conn: &mut AnyConnection, chain: &str, seq: u64) -> StoreResult<i64> {
    Ok(audit_rows::table
        .find((chain, seq as i64))
        .select(audit_rows::created_at)
        .first(conn)?)
}

/// A row as stored; the index copies beyond `AuditRow` stay in the database.
#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_rows)]
struct StoredRow {
    chain_id: String,
    seq: i64,
    prev_hash: String,
    hash: String,
    key_id: String,
    signature: String,
    statement: String,
    kind: String,
    command_id: Option<String>,
}

impl From<StoredRow> for AuditRow {
    fn from(r: StoredRow) -> AuditRow {
        AuditRow {
            chain: r.chain_id,
            seq: r.seq as u64,
            prev_hash: r.prev_hash,
            hash: r.hash,
            key_id: r.key_id,
            signature: r.signature,
            statement: r.statement,
            kind: r.kind,
            command_id: r.command_id,
        }
    }
}

/// Up to `limit` rows of `chain` with seq greater than `after`, in order (keyset page).
pub fn page(
    conn: &mut AnyConnection,
    chain: &str,
    after: u64,
    limit: i64,
) -> StoreResult<Vec<AuditRow>> {
    page_of_kind(conn, chain, None, after, limit)
}

/// Like [`page`], only rows of one kind when `kind` is given (the chain is walked in seq
/// order from `after`, so a page costs what lies between its rows).
pub fn page_of_kind(
    conn: &mut AnyConnection,
    chain: &str,
    kind: Option<&str>,
    after: u64,
    limit: i64,
) -> StoreResult<Vec<AuditRow>> {
    let mut query = audit_rows::table
        .filter(audit_rows::chain_id.eq(chain))
        .filter(audit_rows::seq.gt(after as i64))
        .into_boxed();
    if let Some(kind) = kind {
        query = query.filter(audit_rows::kind.eq(kind.to_owned()));
    }
    let rows: Vec<StoredRow> = query
        .order(audit_rows::seq.asc())
        .limit(limit)
        .select(StoredRow::as_select())
        .load(conn)?;
    Ok(rows.into_iter().map(AuditRow::from).collect())
}

/// The rows of one command, oldest first.
pub fn rows_of_command(
    conn: &mut AnyConnection,
    chain: &str,
    command_id: &str,
) -> StoreResult<Vec<AuditRow>> {
    let rows: Vec<StoredRow> = audit_rows::table
        .filter(audit_rows::command_id.eq(command_id))
        .filter(audit_rows::chain_id.eq(chain))
        .order(audit_rows::seq.asc())
        .select(StoredRow::as_select())
        .load(conn)?;
    Ok(rows.into_iter().map(AuditRow::from).collect())
}

/// A chain's head: (name, size, head hash, size of the last checkpoint).
#[derive(Debug, Clone)]
pub struct ChainHead {
    /// Chain name.
    pub chain: String,
    /// Rows in the chain.
    pub size: u64,
    /// Hex hash of the last row (genesis hash when empty).
    pub head: String,
    /// Size covered by the last checkpoint written to `checkpoints.log`.
    pub checkpointed: u64,
}

fn to_head((chain, size, head, checkpointed): (String, i64, String, i64)) -> ChainHead {
    ChainHead {
        chain,
        size: size as u64,
        head,
        checkpointed: checkpointed as u64,
    }
}

/// One chain's head.
pub fn head(conn: &mut AnyConnection, chain: &str) -> StoreResult<ChainHead> {
    let raw = audit_chains::table
        .find(chain)
        .select((
            audit_chains::id,
            audit_chains::head_seq,
            audit_chains::head_hash,
            audit_chains::checkpointed_seq,
        ))
        .first(conn)?;
    Ok(to_head(raw))
}

/// Chains that grew since their last checkpoint.
pub fn heads_needing_checkpoint(conn: &mut AnyConnection) -> StoreResult<Vec<ChainHead>> {
    let raw: Vec<(String, i64, String, i64)> = audit_chains::table
        .filter(audit_chains::head_seq.gt(audit_chains::checkpointed_seq))
        .select((
            audit_chains::id,
            audit_chains::head_seq,
            audit_chains::head_hash,
            audit_chains::checkpointed_seq,
        ))
        .load(conn)?;
    Ok(raw.into_iter().map(to_head).collect())
}

/// Records that a checkpoint of `size` rows was written (never moves backwards).
pub fn mark_checkpointed(conn: &mut AnyConnection, chain: &str, size: u64) -> StoreResult<()> {
    diesel::update(
        audit_chains::table
            .find(chain)
            .filter(audit_chains::checkpointed_seq.lt(size as i64)),
    )
    .set(audit_chains::checkpointed_seq.eq(size as i64))
    .execute(conn)?;
    Ok(())
}

/// One row.
pub fn row_at(conn: &mut AnyConnection, chain: &str, seq: u64) -> StoreResult<AuditRow> {
    let row: StoredRow = audit_rows::table
        .find((chain, seq as i64))
        .select(StoredRow::as_select())
        .first(conn)?;
    Ok(row.into())
}

/// The signed `key.rotated` rows of a chain, oldest first (agents learn new keys from them).
pub fn rotations(conn: &mut AnyConnection, chain: &str) -> StoreResult<Vec<AuditRow>> {
    let rows: Vec<StoredRow> = audit_rows::table
        .filter(audit_rows::chain_id.eq(chain))
        .filter(audit_rows::kind.eq("key.rotated"))
        .order(audit_rows::seq.asc())
        .select(StoredRow::as_select())
        .load(conn)?;
    Ok(rows.into_iter().map(AuditRow::from).collect())
}

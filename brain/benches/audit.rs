//! Audit log throughput: signed appends per second (SQLite and PostgreSQL, one writer and eight)
//! and verification per second (in memory on one core, and from the database).
//!
//! Run: `cargo bench -p taskward-brain --bench audit` (PostgreSQL at `TASKWARD_TEST_PG_URL`,
//! default `postgres://postgres@127.0.0.1:5432`; `AUDIT_BENCH_ROWS` sets the row count).

use std::sync::Arc;
use std::time::Instant;

use diesel::{Connection, PgConnection, RunQueryDsl};
use taskward_brain::app::system_actor;
use taskward_brain::audit::verify_live;
use taskward_brain::store::audit::{self, AuditContext};
use taskward_brain::store::{DatabaseUrl, Store};
use taskward_shared::audit::PublicKeyInfo;
use taskward_shared::audit::verify::{ChainVerifier, TrustedKeys};
use taskward_shared::crypto::generate_signing_key;

fn main() {
    let rows: u64 = std::env::var("AUDIT_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let key = Arc::new(generate_signing_key());
    let trusted =
        TrustedKeys::from_infos(&[PublicKeyInfo::of(&key.verifying_key(), 0, None)]).unwrap();
    println!("| backend | writers | rows | appends/s | verify from DB rows/s |");
    println!("|---|---|---|---|---|");
    let dir = tempfile::tempdir().unwrap();
    let pg = std::env::var("TASKWARD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let mut in_memory_rows = Vec::new();
    for backend in ["sqlite", "postgres"] {
        for writers in [1u64, 8] {
            let mut pg_name = None;
            let url = match backend {
                "sqlite" => DatabaseUrl::Sqlite(dir.path().join(format!("bench-{writers}.db"))),
                _ => {
                    let name = format!("tw_bench_{}", uuid::Uuid::new_v4().simple());
                    let mut admin = PgConnection::establish(&format!("{pg}/postgres")).unwrap();
                    diesel::sql_query(format!("CREATE DATABASE {name}"))
                        .execute(&mut admin)
                        .unwrap();
                    pg_name = Some(name.clone());
                    DatabaseUrl::Postgres(format!("{pg}/{name}"))
                }
            };
            let store = Store::open(&url).unwrap();
            let chain = "project:bench".to_owned();
            store
                .write_blocking("bench_chain", |c| audit::create_chain(c, &chain, None))
                .unwrap();
            let ctx = AuditContext {
                signer: key.clone(),
                actor: system_actor("bench"),
            };
            let started = Instant::now();
            std::thread::scope(|s| {
                for w in 0..writers {
                    let (store, ctx, chain) = (store.clone(), ctx.clone(), chain.clone());
                    s.spawn(move || {
                        for i in 0..rows / writers {
                            store
                                .write_blocking("bench_append", |c| {
                                    audit::append(
                                        c,
                                        &ctx,
                                        &chain,
                                        // A row the verifier accepts from a system actor
                                        // (it holds every kind to the protocol's table).
                                        "member.role_set",
                                        None,
                                        serde_json::json!({"user": {"id": format!("{w}-{i}"), "name": "bench"},
                                            "role": "viewer", "added": true}),
                                    )
                                })
                                .unwrap();
                        }
                    });
                }
            });
            let appended = rows / writers * writers;
            let append_rate = appended as f64 / started.elapsed().as_secs_f64();
            let started = Instant::now();
            let summary = verify_live(&store, trusted.clone(), &chain, None, |_| {})
                .unwrap()
                .unwrap();
            assert_eq!(summary.rows, appended);
            let verify_rate = appended as f64 / started.elapsed().as_secs_f64();
            println!(
                "| {backend} | {writers} | {appended} | {append_rate:.0} | {verify_rate:.0} |"
            );
            if in_memory_rows.is_empty() {
                in_memory_rows = store
                    .read_blocking("bench_rows", |c| audit::page(c, &chain, 0, i64::MAX))
                    .unwrap();
            }
            drop(store);
            if let Some(name) = pg_name {
                let mut admin = PgConnection::establish(&format!("{pg}/postgres")).unwrap();
                diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .unwrap();
            }
        }
    }
    // Pure verification on one core: rows already in memory.
    let started = Instant::now();
    let mut verifier = ChainVerifier::new("project:bench", trusted, None).unwrap();
    for row in &in_memory_rows {
        verifier.push(row).unwrap();
    }
    let n = verifier.finish().unwrap().rows;
    println!(
        "\nverify in memory, one core: {n} rows, {:.0} rows/s",
        n as f64 / started.elapsed().as_secs_f64()
    );
}

//! The tasks list at scale: N task rows in one project (default 1,000,000; the issue's target is
//! 10,000,000), then the latency of the queries operators run, on SQLite and PostgreSQL:
//! the first page in the default order, a page deep in the list through a keyset cursor, simple
//! filters, a nested filter with a relation, a text search, a task tree at its cap, and a
//! streamed CSV export of the newest 1,000,000 tasks through the API's export function (rows/s
//! and peak RSS growth), each timed 100 times
//! (p50, p99); last, the process's RSS against its RSS before the store was opened.
//!
//! Run: `cargo bench -p taskward-brain --bench tasks` (`TASKS_BENCH_ROWS` sets N,
//! `TASKS_BENCH_BACKENDS` = `sqlite,postgres`; PostgreSQL at `TASKWARD_TEST_PG_URL`).

use std::time::Instant;

use diesel::{Connection, PgConnection, RunQueryDsl};
use futures_util::StreamExt;
use taskward_brain::api::tasks::{ExportReads, export_tasks};
use taskward_brain::export::Format;
use taskward_brain::query::filter::Scalar;
use taskward_brain::query::order;
use taskward_brain::store::tasks::{self, Selection};
use taskward_brain::store::{DatabaseUrl, Store, projects, seed};
use taskward_brain::tasks::list::ListQuery;

/// The brain's allocator (its `main.rs`), so exports allocate as they do in the brain.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One measured query: returns the rows it got.
type Case<'a> = Box<dyn Fn() -> usize + 'a>;

/// Receipt time of the first seeded task, ms.
const BASE_MS: i64 = 1_700_000_000_000;

/// Rows the export case exports.
const EXPORT_ROWS: i64 = 1_000_000;

/// A query-string value, percent-encoded.
fn enc(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn rows() -> i64 {
    std::env::var("TASKS_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn timed<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, f64) {
    // A query slower than 50 ms is timed 10 times, not 100: its p99 is then its maximum.
    let first = Instant::now();
    std::hint::black_box(f());
    let runs = if first.elapsed().as_millis() > 50 {
        10
    } else {
        runs
    };
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(f());
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (
        ms[ms.len() / 2],
        ms[(ms.len() * 99 / 100).min(ms.len() - 1)],
    )
}

/// A `/proc/self/status` memory line (`VmHWM`: peak, `VmRSS`: now), KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Peak resident memory, KiB.
fn rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Resident memory now, KiB.
fn current_rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// CPU seconds this process has used (all threads, user + system), from `/proc/self/stat`:
/// rows per CPU-second is what other load on the machine changes least.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: f64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

fn main() {
    let n = rows();
    let start_rss = current_rss_kib();
    let backends =
        std::env::var("TASKS_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let pg = std::env::var("TASKWARD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("| backend | rows | query | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    for backend in backends.split(',') {
        let postgres = backend == "postgres";
        // PostgreSQL: a database of its own, dropped when this backend's run ends.
        let mut scratch = None;
        let url = if postgres {
            let name = format!("tw_tasks_bench_{}", uuid::Uuid::new_v4().simple());
            let mut admin = PgConnection::establish(&format!("{pg}/postgres")).unwrap();
            diesel::sql_query(format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .unwrap();
            let url = DatabaseUrl::Postgres(format!("{pg}/{name}"));
            scratch = Some((admin, name));
            url
        } else {
            DatabaseUrl::Sqlite(dir.path().join("tasks.db"))
        };
        let store = Store::open(&url).unwrap();
        let project = store
            .write_blocking("bench_project", |c| {
                projects::create(c, &"bench".parse().unwrap(), None, "")
            })
            .unwrap();
        let started = Instant::now();
        let synthetic = seed::Synthetic {
            project_id: &project.id,
            run: "",
            base_ms: BASE_MS,
        };
        let mut from = 0;
        while from < n {
            let to = (from + seed::CHUNK).min(n);
            store
                .write_blocking("bench_seed", |c| synthetic.insert(c, from, to))
                .unwrap();
            from = to;
        }
        store
            .write_blocking("bench_terms", |c| {
                seed::record_terms(c, &project.id)?;
                seed::analyze(c)
            })
            .unwrap();
        eprintln!(
            "{backend}: seeded {n} rows in {:.0} s",
            started.elapsed().as_secs_f64()
        );

        let page = |params: &str, cursor_after_pages: usize| {
            let query: ListQuery = serde_urlencoded::from_str(params).unwrap();
            let plan = query.plan(&project.id).unwrap();
            let mut position: Option<Vec<Option<Scalar>>> = None;
            let mut rows = Vec::new();
            for _ in 0..=cursor_after_pages {
                rows = store
                    .read_blocking("bench_page", |c| {
                        tasks::page(
                            c,
                            &project.id,
                            &Selection {
                                filter: &plan.page.filter,
                                search: plan.search.as_deref(),
                                order: &plan.page.order,
                            },
                            position.as_deref(),
                            100,
                        )
                    })
                    .unwrap();
                if let Some(last) = rows.last() {
                    position = order::read_position(
                        &plan.page.order,
                        &tasks::position(last, &plan.page.order),
                    );
                }
            }
            rows.len()
        };
        // A cursor deep in the list: the position of row n/2 in the default order.
        let deep_position = {
            let query: ListQuery = serde_urlencoded::from_str("").unwrap();
            let plan = query.plan(&project.id).unwrap();
            let middle = BASE_MS + n / 2;
            (plan, middle)
        };
        let cases: Vec<(&str, Case)> = vec![
            ("first page, default order", Box::new(|| page("", 0))),
            (
                "first page, state=failed",
                Box::new(|| page("state=failed", 0)),
            ),
            (
                "first page, name + queue",
                Box::new(|| page("name=app.task7&queue=reports", 0)),
            ),
            (
                "first page, state + queue",
                Box::new(|| page("state=failed&queue=reports", 0)),
            ),
            (
                "name prefix \"app.task4\" (11 of 50 names)",
                Box::new(|| {
                    page(
                        &format!("filter={}", enc(r#"{"name":{"startsWith":"app.task4"}}"#)),
                        0,
                    )
                }),
            ),
            (
                "name prefix \"app.task17\" (1 of 50 names)",
                Box::new(|| {
                    page(
                        &format!("filter={}", enc(r#"{"name":{"startsWith":"app.task17"}}"#)),
                        0,
                    )
                }),
            ),
            (
                "nested filter (OR, startsWith, runtime_ms)",
                Box::new(|| {
                    page(
                        "filter=%7B%22OR%22%3A%5B%7B%22name%22%3A%7B%22startsWith%22%3A%22app.task4%22%7D%7D%2C%7B%22runtime_ms%22%3A%7B%22gte%22%3A899%7D%7D%5D%7D",
                        0,
                    )
                }),
            ),
            (
                "search \"task42\" (one name)",
                Box::new(|| page("search=task42", 0)),
            ),
            (
                "search \"worker2\" (one worker)",
                Box::new(|| page("search=worker2", 0)),
            ),
            (
                "search \"task\" (50 names: walks the list)",
                Box::new(|| page("search=task", 0)),
            ),
            (
                "search \"task42\", 10th page",
                Box::new(|| page("search=task42", 9)),
            ),
            (
                "orderBy name asc, 10th page",
                Box::new(|| page("orderBy=%5B%7B%22name%22%3A%22asc%22%7D%5D", 9)),
            ),
            // The sort keys operators use (issue #18 item 4), each read off its index.
            (
                "orderBy runtime_ms desc, first page",
                Box::new(|| page(&format!("orderBy={}", enc(r#"[{"runtime_ms":"desc"}]"#)), 0)),
            ),
            (
                "orderBy runtime_ms desc, 10th page",
                Box::new(|| page(&format!("orderBy={}", enc(r#"[{"runtime_ms":"desc"}]"#)), 9)),
            ),
            (
                "orderBy started_at desc, first page",
                Box::new(|| page(&format!("orderBy={}", enc(r#"[{"started_at":"desc"}]"#)), 0)),
            ),
            (
                "orderBy finished_at asc, first page",
                Box::new(|| page(&format!("orderBy={}", enc(r#"[{"finished_at":"asc"}]"#)), 0)),
            ),
            (
                "orderBy received_at asc, 10th page",
                Box::new(|| page(&format!("orderBy={}", enc(r#"[{"received_at":"asc"}]"#)), 9)),
            ),
            (
                "tree of task-0 (600 share its root; capped at 500)",
                Box::new(|| {
                    store
                        .read_blocking("bench_tree", |c| {
                            tasks::tree(c, &project.id, "celery", "task-0", tasks::TREE_CAP + 1)
                        })
                        .unwrap()
                        .len()
                }),
            ),
            (
                "page at the middle (keyset cursor)",
                Box::new(|| {
                    let (plan, middle) = &deep_position;
                    let position = vec![
                        Some(Scalar::Int(*middle)),
                        Some(Scalar::Text(format!("{:016x}", middle - BASE_MS))),
                    ];
                    store
                        .read_blocking("bench_deep", |c| {
                            tasks::page(
                                c,
                                &project.id,
                                &Selection {
                                    filter: &plan.page.filter,
                                    search: None,
                                    order: &plan.page.order,
                                },
                                Some(&position),
                                100,
                            )
                        })
                        .unwrap()
                        .len()
                }),
            ),
        ];
        for (name, run) in &cases {
            let got = run();
            assert!(got > 0, "{backend}: {name} returned nothing");
            let (p50, p99) = timed(100, run);
            println!("| {backend} | {n} | {name} | {p50:.1} | {p99:.1} |");
        }
        // Export the newest million tasks (received at or after row n - 1,000,000) as CSV,
        // through the function the API streams exports with.
        let since = chrono::DateTime::from_timestamp_millis(BASE_MS + (n - EXPORT_ROWS).max(0))
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let before = rss_kib();
        let cpu_before = cpu_seconds();
        let full = export_csv(
            &runtime,
            &store,
            &project,
            &format!("since={}", enc(&since)),
            None,
        );
        let (lines, bytes, secs) = (full.lines, full.bytes, full.total_ms / 1000.0);
        let cpu = cpu_seconds() - cpu_before;
        let exported = lines - 1;
        assert!(
            exported as i64 >= EXPORT_ROWS.min(n) * 99 / 100,
            "exported {exported}"
        );
        println!(
            "| {backend} | {n} | csv export of {exported} tasks ({} MiB): {:.0} rows/s, {:.0} rows per CPU-second | {:.0} (total) | peak RSS +{} MiB |",
            bytes / (1024 * 1024),
            exported as f64 / secs,
            exported as f64 / cpu,
            secs * 1000.0,
            (rss_kib().saturating_sub(before)) / 1024
        );
        // An export of the whole project in runtime order (issue #18: it never sent a first
        // byte at 10M before the sort indexes): time to the first chunk and to 100,000 rows.
        let sorted = export_csv(
            &runtime,
            &store,
            &project,
            &format!("orderBy={}", enc(r#"[{"runtime_ms":"desc"}]"#)),
            Some(100_000),
        );
        let (first_ms, hundred_k_ms) = (sorted.first_ms, sorted.total_ms);
        println!(
            "| {backend} | {n} | csv export in runtime_ms desc order: first byte | {first_ms:.1} | 100,000 rows: {hundred_k_ms:.0} |"
        );
        println!(
            "| {backend} | {n} | process RSS after all queries vs before the store opened | | +{} MiB |",
            current_rss_kib().saturating_sub(start_rss) / 1024
        );
        drop(cases);
        drop(store);
        if let Some((mut admin, name)) = scratch {
            diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&mut admin)
                .unwrap();
        }
    }
}

/// What one CSV export through the API's export function took.
struct Export {
    /// Lines read (the header included).
    lines: usize,
    /// Bytes read.
    bytes: usize,
    /// Time to the first chunk, ms.
    first_ms: f64,
    /// Time to the end (or to `stop_after` lines), ms.
    total_ms: f64,
}

/// Streams a CSV export of the tasks list with these query parameters, as `GET …/tasks?format=csv`
/// does, to its end or until `stop_after` lines have been read.
fn export_csv(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
    project: &projects::Project,
    params: &str,
    stop_after: Option<usize>,
) -> Export {
    let query: ListQuery = serde_urlencoded::from_str(params).unwrap();
    let plan = query.plan(&project.id).unwrap();
    let fields = taskward_brain::api::tasks::fields(&query).unwrap();
    let started = Instant::now();
    runtime.block_on(async {
        let reading = ExportReads {
            budget: std::time::Duration::from_secs(3600),
            slot: None,
        };
        let response = export_tasks(store.clone(), project, plan, fields, Format::Csv, reading);
        let mut body = response.into_body().into_data_stream();
        let mut export = Export {
            lines: 0,
            bytes: 0,
            first_ms: f64::NAN,
            total_ms: 0.0,
        };
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            if export.bytes == 0 {
                export.first_ms = started.elapsed().as_secs_f64() * 1000.0;
            }
            export.bytes += chunk.len();
            export.lines += chunk.iter().filter(|b| **b == b'\n').count();
            if stop_after.is_some_and(|most| export.lines > most) {
                break;
            }
        }
        export.total_ms = started.elapsed().as_secs_f64() * 1000.0;
        export
    })
}

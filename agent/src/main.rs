//! `taskward-agent`: runs beside Celery workers on each host and links them to the brain.
//!
//! This release only answers `--help` and `--version`; enrollment and the brain link come next.

use clap::Parser;

/// Taskward agent: streams task and worker events to the brain and runs the signed commands
/// it sends. One agent per host, next to the workers; no Python inside.
#[derive(Debug, Parser)]
#[command(name = "taskward-agent", version)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "taskward-agent: nothing to do yet; enrollment and the brain link arrive in a later release"
    );
}

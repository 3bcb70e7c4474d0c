//! `taskward-agent`: see `taskward-agent --help`.

/// mimalloc: with glibc's allocator a third of the agent's CPU at 50,000 events/s went to
/// malloc and free under contention between threads (perf), the brain's a tenth.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    taskward_agent::cli::main()
}

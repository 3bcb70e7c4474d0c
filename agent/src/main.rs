//! `taskward-agent`: see `taskward-agent --help`.

fn main() -> std::process::ExitCode {
    taskward_agent::cli::main()
}

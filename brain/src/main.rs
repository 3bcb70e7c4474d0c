//! `taskward-brain`: see `taskward-brain --help`.

fn main() -> std::process::ExitCode {
    taskward_brain::cli::main()
}

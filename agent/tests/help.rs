//! The built `taskward-agent` binary's help, as an operator reads it: the engines it offers are
//! exactly the engines compiled into it (the test double only in builds with the
//! `test-adapter` feature), and no engine is described as unfinished.

use std::process::Command;

/// The `Possible values:` of `--engine` in `taskward-agent <subcommand> --help`.
fn listed_engines(subcommand: &str) -> (Vec<String>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_taskward-agent"))
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let engine = help
        .split("--engine <ENGINE>")
        .nth(1)
        .expect("--engine is documented");
    let values = engine
        .split("Possible values:")
        .nth(1)
        .expect("its values are listed")
        .lines()
        .map(str::trim)
        .skip_while(|line| line.is_empty())
        .take_while(|line| line.starts_with("- "))
        .map(|line| line[2..].split(':').next().unwrap().trim().to_owned())
        .collect();
    (values, help)
}

#[test]
fn the_help_lists_exactly_the_engines_this_build_has() {
    let mut compiled = vec!["none", "celery"];
    if cfg!(feature = "test-adapter") {
        compiled.push("test");
    }
    for subcommand in ["enroll", "run"] {
        let (listed, help) = listed_engines(subcommand);
        assert_eq!(listed, compiled, "{subcommand} --help:\n{help}");
        assert!(
            !help.contains("later release"),
            "{subcommand} --help:\n{help}"
        );
    }
}

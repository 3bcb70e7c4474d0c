//! The brain's module graph, checked from its source: no module imports one that imports it
//! back (directly or around a circle), and the layers run one way — edges (HTTP API,
//! dashboard, agent hub, CLI, background loops) call the domain modules, the domain calls the
//! store, and neither the domain nor the store reaches up into an edge. `docs/architecture.md`
//! draws the same layers; this test is what keeps the drawing true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules that face the outside: nothing below them may import them.
const EDGES: &[&str] = &[
    "api",
    "dashboard",
    "hub",
    "router",
    "server",
    "cli",
    "background",
    "app",
    "auth",
    "bootstrap",
    "main",
];

/// The domain layer: what an action means, whoever asks for it.
const DOMAIN: &[&str] = &[
    "commands",
    "agents",
    "projects",
    "users",
    "tasks",
    "schedules",
];

/// A module's path (`store::tasks::page`) from its file under `src/`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module paths a file names outside comments (`crate::…`, and `super::…` relative to
/// the file's own module), each resolved to the longest module path that exists
/// (`crate::store::tasks::apply_updates` → `store::tasks`).
fn imports(module: &str, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let parent: Vec<&str> = {
        let mut segments: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        segments.pop();
        segments
    };
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for (anchor, base) in [("crate::", Vec::new()), ("super::", parent.clone())] {
            let mut rest = code;
            while let Some(at) = rest.find(anchor) {
                let tail = &rest[at + anchor.len()..];
                let path: String = tail
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let mut segments = base.clone();
                segments.extend(path.split("::").filter(|s| !s.is_empty()));
                let resolved = (1..=segments.len())
                    .rev()
                    .map(|n| segments[..n].join("::"))
                    .find(|candidate| modules.contains(candidate));
                found.extend(resolved);
                rest = &tail[path.len().min(tail.len())..];
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    files
        .iter()
        .map(|file| {
            let module = module_of(&src, file);
            let text = std::fs::read_to_string(file).expect("readable");
            let mut targets = imports(&module, &text, &modules);
            // A module always sees its ancestors (`super`); only real edges count.
            targets.retain(|t| {
                t != &module && !module.starts_with(&format!("{t}::")) && !t.is_empty()
            });
            (module, targets)
        })
        .collect()
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = graph();
    // Depth-first search for a path from each module back to itself.
    let mut circles = Vec::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if next == start {
                    circles.push(path.join(" -> ") + " -> " + start);
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "module circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_domain_and_the_store_never_reach_up_into_an_edge() {
    let mut wrong = Vec::new();
    for (module, targets) in graph() {
        let layer = top(&module);
        let below_edges = DOMAIN.contains(&layer) || layer == "store" || layer == "query";
        for target in targets {
            let target_top = top(&target);
            if below_edges && EDGES.contains(&target_top) {
                wrong.push(format!("{module} -> {target}"));
            }
            if layer == "store" && DOMAIN.contains(&target_top) {
                wrong.push(format!(
                    "{module} -> {target} (the store must not call the domain)"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checks_see_the_modules_they_are_about() {
    // Guard against a parser that finds nothing: the hub certainly calls the domain.
    let graph = graph();
    assert!(graph.len() > 60, "{} modules", graph.len());
    assert!(graph["hub::session"].contains("commands::lifecycle"));
    assert!(graph["api::commands"].contains("commands"));
}

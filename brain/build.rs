//! Rebuilds the brain when a migration changes: `embed_migrations!` reads the SQL files at
//! compile time, and cargo does not track them on its own.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}

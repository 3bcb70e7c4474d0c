//! `audit export` and `audit bundle`: the audit log written for someone who does not trust
//! the brain, straight from the data directory and database (no server needed).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args};
use sha2::{Digest, Sha256};

use super::{CliError, not_found};
use crate::audit::export::write_chain;
use crate::audit::watch::AuditWatch;
use crate::audit::{CHECKPOINT_FILE, CheckpointError, KeysFile, checkpoint_now};
use crate::keys::Keys;
use crate::names::ProjectSlug;
use crate::store::{DatabaseUrl, Store, audit as audit_store, audit_watch, projects};

/// Options of `audit export`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("chain").required(true).args(["project", "site"])))]
pub struct ExportArgs {
    /// Export this project's chain.
    #[arg(long)]
    pub project: Option<ProjectSlug>,
    /// Export the site chain (first start, users, tokens, projects, key rotations).
    #[arg(long)]
    pub site: bool,
}

/// Options of `audit bundle`.
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// Directory to write (created; must be empty if it exists).
    pub dir: PathBuf,
}

/// `audit export`: one chain as JSON Lines on standard output.
pub fn export(data_dir: &Path, url: &DatabaseUrl, args: ExportArgs) -> Result<(), CliError> {
    let store = Store::open(url)?;
    let keys = Keys::load_or_create(data_dir)?;
    let chain = match &args.project {
        Some(slug) => {
            let project = store
                .read_blocking("find_project", |conn| projects::find(conn, slug))
                .map_err(|e| not_found(e, format!("project {slug}")))?;
            audit_store::project_chain(&project.id)
        }
        None => store.site_chain(),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let rows = write_to(&store, &keys, &chain, &mut out, "standard output")?;
    eprintln!("exported {chain}: {}", rows_text(rows));
    Ok(())
}

/// `audit bundle DIR`: an export of every chain, the public keys, the checkpoint log, a
/// checksum list and a README telling the auditor how to verify it all.
pub fn bundle(data_dir: &Path, url: &DatabaseUrl, args: BundleArgs) -> Result<(), CliError> {
    let dir = &args.dir;
    let io = |what: String| move |source| CliError::Io { what, source };
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(io(format!("cannot read {}", dir.display())))?
            .next()
            .is_some()
    {
        return Err(CliError::Usage(format!(
            "{} is not empty; give a new or empty directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let store = Store::open(url)?;
    let keys = Keys::load_or_create(data_dir)?;
    let site = store.site_chain();
    let chains = store.read_blocking("bundle_chains", audit_watch::chains_with_slugs)?;
    checkpoint_all(&store, &keys, data_dir, &chains)?;
    let mut written = Vec::new();
    for (chain, slug) in chains {
        let name = export_file_name(&chain, &site, slug.as_deref());
        let path = dir.join(&name);
        let file = std::fs::File::create(&path)
            .map_err(io(format!("cannot create {}", path.display())))?;
        let mut out = std::io::BufWriter::new(file);
        let rows = write_to(&store, &keys, &chain, &mut out, &path.display().to_string())?;
        let label = slug.map_or_else(|| chain.clone(), |slug| format!("{chain} (project {slug})"));
        eprintln!("wrote {name}: {label}, {}", rows_text(rows));
        written.push((name, label, rows));
    }
    let keys_text = serde_json::to_string_pretty(&KeysFile {
        keys: keys.public_keys(),
    })
    .expect("keys serialize");
    write_file(&dir.join("keys.json"), keys_text.as_bytes())?;
    let checkpoints = data_dir.join(CHECKPOINT_FILE);
    let have_checkpoints = checkpoints.exists();
    if have_checkpoints {
        std::fs::copy(&checkpoints, dir.join(CHECKPOINT_FILE))
            .map_err(io(format!("cannot copy {}", checkpoints.display())))?;
    }
    write_file(&dir.join("protocol.md"), PROTOCOL.as_bytes())?;
    write_file(
        &dir.join("README.md"),
        readme(&written, have_checkpoints).as_bytes(),
    )?;
    write_checksums(dir)?;
    println!(
        "bundle written to {}: {} chains, keys.json{}, protocol.md, README.md, SHA256SUMS",
        dir.display(),
        written.len(),
        if have_checkpoints {
            ", checkpoints.log"
        } else {
            ""
        }
    );
    Ok(())
}

/// The protocol an auditor's verifier is written from, shipped in every bundle so the bundle
/// stands on its own.
const PROTOCOL: &str = include_str!("../../../docs/protocol.md");

/// "1 row", "7 rows".
fn rows_text(rows: u64) -> String {
    match rows {
        1 => "1 row".into(),
        n => format!("{n} rows"),
    }
}

/// Verifies every chain from its last checkpoint to its head and signs a fresh checkpoint of
/// it into `checkpoints.log`, so the bundle's checkpoints cover every row it holds (a chain
/// cut short after the bundle was written is caught). A chain that does not verify fails the
/// bundle: it is never checkpointed, and an auditor must not receive it as if it were whole.
fn checkpoint_all(
    store: &Store,
    keys: &Keys,
    data_dir: &Path,
    chains: &[(String, Option<String>)],
) -> Result<(), CliError> {
    let watch = AuditWatch::new(data_dir);
    for (chain, _) in chains {
        checkpoint_now(store, keys, data_dir, &watch, chain).map_err(|e| match e {
            CheckpointError::Broken(chain_break) => CliError::Usage(format!(
                "{chain} does not verify, so no bundle was written: {chain_break} \
                 (run `taskward-brain audit verify` for details)"
            )),
            CheckpointError::Store(err) => CliError::from(err),
        })?;
    }
    Ok(())
}

/// `site.jsonl`, `project-<slug>.jsonl`, or for the chain of a deleted project
/// `chain-<id>.jsonl` (ids and slugs are safe in file names).
fn export_file_name(chain: &str, site: &str, slug: Option<&str>) -> String {
    if chain == site {
        return "site.jsonl".into();
    }
    match slug {
        Some(slug) => format!("project-{slug}.jsonl"),
        None => {
            let id: String = chain
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            format!("chain-{id}.jsonl")
        }
    }
}

fn write_to(
    store: &Store,
    keys: &Keys,
    chain: &str,
    out: &mut impl Write,
    target: &str,
) -> Result<u64, CliError> {
    let mut failed = None;
    let rows = write_chain(store, keys.public_keys(), chain, |chunk| {
        match out.write_all(&chunk) {
            Ok(()) => true,
            Err(err) => {
                failed = Some(err);
                false
            }
        }
    })?;
    let flushed = match failed {
        Some(err) => Err(err),
        None => out.flush(),
    };
    flushed.map_err(|source| CliError::Io {
        what: format!("cannot write the export of {chain} to {target}"),
        source,
    })?;
    Ok(rows)
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, contents).map_err(|source| CliError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    })
}

/// `SHA256SUMS` in the format `sha256sum -c` reads, so the auditor can tell a file changed in
/// transit from a log that fails verification.
fn write_checksums(dir: &Path) -> Result<(), CliError> {
    let io = |what: String| move |source| CliError::Io { what, source };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(format!("cannot read {}", dir.display())))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut sums = String::new();
    for name in names {
        let path = dir.join(&name);
        let mut file = std::io::BufReader::new(
            std::fs::File::open(&path).map_err(io(format!("cannot read {}", path.display())))?,
        );
        let mut hasher = Sha256::new();
        loop {
            let chunk = std::io::BufRead::fill_buf(&mut file)
                .map_err(io(format!("cannot read {}", path.display())))?;
            if chunk.is_empty() {
                break;
            }
            hasher.update(chunk);
            let read = chunk.len();
            std::io::BufRead::consume(&mut file, read);
        }
        sums.push_str(&format!("{}  {name}\n", hex::encode(hasher.finalize())));
    }
    write_file(&dir.join("SHA256SUMS"), sums.as_bytes())
}

fn readme(written: &[(String, String, u64)], have_checkpoints: bool) -> String {
    let mut files = String::new();
    for (name, label, rows) in written {
        files.push_str(&format!(
            "- `{name}`: chain {label}, {}\n",
            rows_text(*rows)
        ));
    }
    let checkpoint_arg = if have_checkpoints {
        " --checkpoint checkpoints.log"
    } else {
        ""
    };
    format!(
        r#"# Taskward audit bundle

Written by `taskward-brain audit bundle` on {written_at}. It holds everything needed to
verify this brain's audit log without trusting the brain, its database or its operators.

## Files

{files}- `keys.json`: every public key the brain signed with, with its validity window
  (the brain's keyring; no private key is in this bundle).
{checkpoints}- `SHA256SUMS`: checksums of the files above (`sha256sum -c SHA256SUMS`).

Each export is JSON Lines: a header (`format`, `chain`, the public keys), then one row per
line, in sequence order. `protocol.md` (in this bundle) specifies every byte: how a row's
hash covers its statement and the previous row's hash, what each signature covers, and what
each kind of row says, so a verifier can be written from it alone.

`taskward-brain` (the reference verifier below) is built from the Taskward source
(`cargo build --release -p taskward-brain`); `audit verify --file` needs no database, server
or private key, only the files of this bundle.

## How to verify

1. **Get the public keys independently.** `keys.json` came with the bundle, so it proves
   nothing on its own: compare it with a copy obtained another way (for example
   `GET /api/v1/signing-keys` fetched earlier, or a copy an operator published). A verifier
   trusts only the keys given with `--keys`, never the ones in an export's header.
2. **Check the files arrived intact:** `sha256sum -c SHA256SUMS`.
3. **Verify every chain**, with the checkpoints (signed statements of a chain's size and
   last hash, kept outside the database, which catch a log cut short or rewritten):

   ```
   for f in *.jsonl; do
     taskward-brain audit verify --file "$f" --keys keys.json{checkpoint_arg} || echo "FAILED: $f"
   done
   ```

   Each prints `OK <rows> rows, head <hash>; checkpoint covers row <n>`, or the first bad row and why, and exits
   non-zero. A chain newer than the last checkpoint has none in the log; the verifier says
   so (`--allow-missing-checkpoint` accepts that, with a warning).
4. **Compare with earlier bundles or checkpoints you kept.** A checkpoint you hold from
   before is the strongest check: a log that no longer contains its head was rewritten.

The site chain (`site.jsonl`) records the first start, users, passwords set, API tokens,
projects created and key rotations (each signed by the outgoing key). Each project chain
records its members, its agents (with each agent's public key, in `agent.enrolled`), its
schedules, task deletions, and every command, its dispatch and its outcome, with the agent's
signed result. The bundle signed a fresh checkpoint of every chain before writing it, so
`checkpoints.log` covers every row of every export.
Any verifier written from `docs/protocol.md` alone must reach the same verdicts.
"#,
        written_at = crate::clock::timestamp(crate::store::now_ms())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        checkpoints = if have_checkpoints {
            "- `checkpoints.log`: every checkpoint the brain signed (JSON Lines), as in its data\n  directory.\n"
        } else {
            ""
        },
    )
}

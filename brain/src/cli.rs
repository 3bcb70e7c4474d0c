//! The `taskward-brain` command line: `serve`, `migrate`, and the admin commands that work
//! directly on the store (useful before the server runs, or when every token is lost).

mod audit_export;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use taskward_shared::audit::verify::TrustedKeys;

use crate::app::system_actor;
use crate::audit::{Verdict, VerifyOptions, read_keys_file, verify_export, verify_rows_live};
use crate::expiry::parse_lifetime;
use crate::keys::{self, KeyError, Keys};
use crate::names::{Label, ProjectSlug, UserName};
use crate::passwords;
use crate::projects::NewProject;
use crate::role::Role;
use crate::server::{self, ServeArgs, ServeError};
use crate::store::audit::{self, AuditContext};
use crate::store::{DatabaseUrl, Store, StoreError, memberships, now_ms, projects, users};
use crate::telemetry::{self, LogFormat};

/// Taskward brain: the control plane for Celery.
///
/// With no flags, `taskward-brain serve` keeps everything in ./taskward-data/ (SQLite),
/// listens on 127.0.0.1:7700 and, on first start, prints a token for the site admin `admin`.
#[derive(Debug, Parser)]
#[command(name = "taskward-brain", version, propagate_version = true)]
pub struct Cli {
    /// Directory for the embedded database, keys and the bootstrap admin token (created 0700).
    #[arg(
        long,
        env = "TASKWARD_DATA_DIR",
        default_value = "taskward-data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Database to use instead of <data-dir>/taskward.db: sqlite://PATH or
    /// postgres://USER@HOST:PORT/DB.
    #[arg(long, env = "TASKWARD_DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// Log line format on stderr.
    #[arg(long, env = "TASKWARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: migrate the store, bootstrap it if empty, serve the API.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage project members.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the brain's signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Verify, export and bundle the signed audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Tools for trying Taskward out and measuring it.
    #[command(subcommand)]
    Dev(DevCommand),
}

/// `dev` subcommands.
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Fill a project with synthetic task records (created if missing): 50 task names, 3
    /// queues, 4 workers, one task in ten failed, received one millisecond apart up to now,
    /// the first 600 under one root. Ids carry a random prefix, so runs add up. For trying the
    /// dashboard and the API at scale; the tasks benchmark measures the same shape.
    ///
    /// Example: taskward-brain dev seed --tasks 10000000 --project bench
    Seed {
        /// How many tasks (1 to 100,000,000).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=100_000_000))]
        tasks: i64,
        /// The project (slug) to fill.
        #[arg(long)]
        project: ProjectSlug,
    },
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key and schedule the switch to it `--lead` seconds from now: the
    /// old key's window ends and the new key's begins at that instant (one atomic keyring
    /// write, no overlap). The old key signs a `key.rotated` row (with the new public key and
    /// `switch_at_ms`) on the site chain and stays published; running servers learn of the
    /// switch within half a second and tell their connected agents before it happens.
    Rotate {
        /// Seconds until the switch (at least 2).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..=3600))]
        lead: u64,
    },
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that the log was not altered, removed, reordered or cut off.
    ///
    /// Live (against the database, keys from <data-dir>/keys):
    ///     taskward-brain audit verify [--project SLUG | --site] [--checkpoint checkpoints.log]
    ///
    /// Offline (an export from GET /api/v1/projects/SLUG/audit/export, and the keys from
    /// GET /api/v1/signing-keys, obtained independently):
    ///     taskward-brain audit verify --file export.jsonl --keys keys.json [--checkpoint FILE]
    ///
    /// Each row is held to its bytes (lowercase hex, canonical statement), position, hash,
    /// link, time order, the signing key's validity window (--key-grace-ms N excuses N ms past
    /// a window's end) and, for outcomes, the agent's signed result against the key the agent
    /// enrolled earlier in the chain. Every checkpoint in the --checkpoint file for the chain
    /// is checked; a file with none for the chain fails unless --allow-missing-checkpoint.
    ///
    /// Prints `OK <rows> rows, head <hash>; checkpoint covers row <n>` per chain, or the first bad row and why, and
    /// exits non-zero.
    Verify(VerifyArgs),
    /// Write one chain as an export (JSON Lines) to standard output, from the data directory
    /// and database (no server needed); `audit verify --file` checks it offline.
    ///
    /// Example: taskward-brain audit export --site > site.jsonl
    Export(audit_export::ExportArgs),
    /// Write everything an outside auditor needs into a new directory: an export of every
    /// chain, the public keys (keys.json), checkpoints.log, SHA256SUMS and a README.md on how
    /// to verify.
    ///
    /// Example: taskward-brain audit bundle audit-2026-12
    Bundle(audit_export::BundleArgs),
}

/// Options of `audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Verify only this project's chain (default: every chain).
    #[arg(long, conflicts_with_all = ["site", "file"])]
    pub project: Option<ProjectSlug>,
    /// Verify only the site chain (users, projects, tokens, keys).
    #[arg(long, conflicts_with = "file")]
    pub site: bool,
    /// A checkpoint (JSON) or a checkpoint log (JSON Lines, e.g. checkpoints.log) kept outside
    /// the database: detects a log truncated or rewritten after it. Every checkpoint in it for
    /// the chain is checked; a chain it has none for fails.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// With --checkpoint: a chain the file has no checkpoint for is verified without one
    /// (printed as a warning) instead of failing.
    #[arg(long, requires = "checkpoint")]
    pub allow_missing_checkpoint: bool,
    /// Excuse a brain key that kept signing up to N ms after its validity window ended (brains
    /// before atomic rotation did, for up to about a second). Default 0: none. A warning on
    /// stderr counts the rows it excused; a key the chain shows retired by a scheduled switch
    /// is never excused.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub key_grace_ms: i64,
    /// Verify an export file instead of the database.
    #[arg(long, requires = "keys")]
    pub file: Option<PathBuf>,
    /// The public keys to trust (`GET /api/v1/signing-keys`), for --file.
    #[arg(long)]
    pub keys: Option<PathBuf>,
}

/// `user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (give them a token with `token create`).
    ///
    /// Example: taskward-brain user create jane --site-admin
    Create {
        /// Login name, ^[a-z0-9][a-z0-9._-]{0,62}$.
        name: UserName,
        /// Make the user a site admin (creates users and projects, admin everywhere).
        #[arg(long)]
        site_admin: bool,
    },
    /// Set a user's dashboard password (10 to 1024 characters; stored as an argon2id hash).
    /// Prompts on a terminal; otherwise reads the first line of standard input. Signs the
    /// user out of every dashboard session.
    ///
    /// Example: taskward-brain user set-password jane
    ///          printf '%s\n' "$PASSWORD" | taskward-brain user set-password jane
    SetPassword {
        /// The user's login name.
        name: UserName,
    },
}

/// `project` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project.
    ///
    /// Example: taskward-brain project create billing --name "Billing workers"
    Create {
        /// URL name, ^[a-z0-9][a-z0-9-]{0,62}$.
        slug: ProjectSlug,
        /// Display name (defaults to the slug).
        #[arg(long)]
        name: Option<Label>,
    },
}

/// `member` subcommands.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Give a user a role in a project (adds them, or changes their role).
    ///
    /// Example: taskward-brain member add billing jane operator
    Add {
        /// Project slug.
        slug: ProjectSlug,
        /// User name.
        user: UserName,
        /// viewer, operator or admin.
        role: Role,
    },
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user and print it (it is stored hashed and cannot be shown again).
    ///
    /// Example: taskward-brain token create jane --expires-in 30d > jane.token
    Create {
        /// User name.
        user: UserName,
        /// Lifetime: a number and a unit m, h, d or w (1m..3650d). Default: no expiry.
        #[arg(long, value_parser = parse_lifetime)]
        expires_in: Option<i64>,
        /// What the token is for.
        #[arg(long, default_value = "cli")]
        name: Label,
    },
}

/// Errors the command line reports before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A store operation failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The signing keys could not be loaded.
    #[error("{0}")]
    Keys(#[from] KeyError),
    /// Verification found a bad row (already reported on stdout).
    #[error("audit verification failed")]
    VerificationFailed,
    /// A file or socket could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The arguments do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// The server could not start or stopped with an error.
    #[error("{0}")]
    Serve(#[from] ServeError),
}

/// Parses arguments, runs the command, and maps failure to exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut cli: Cli) -> Result<(), CliError> {
    create_data_dir(&cli.data_dir)?;
    // Absolute from here on, so logs, the first-start banner and the files it names say
    // where the store is whatever the working directory was.
    cli.data_dir = std::fs::canonicalize(&cli.data_dir).map_err(|source| CliError::Io {
        what: format!("cannot resolve data directory {}", cli.data_dir.display()),
        source,
    })?;
    let url = match &cli.database_url {
        Some(url) => DatabaseUrl::parse(url).map_err(CliError::Usage)?,
        None => DatabaseUrl::default_sqlite(&cli.data_dir),
    };
    match cli.command {
        Command::Serve(args) => {
            let runtime = tokio::runtime::Runtime::new().map_err(|source| CliError::Io {
                what: "cannot start the async runtime".into(),
                source,
            })?;
            Ok(runtime.block_on(server::serve(&cli.data_dir, &url, args))?)
        }
        Command::Migrate => {
            Store::open(&url)?;
            println!("database {} is migrated", url.redacted());
            Ok(())
        }
        Command::User(UserCommand::Create { name, site_admin }) => {
            create_user(&url, &cli.data_dir, &name, site_admin)
        }
        Command::User(UserCommand::SetPassword { name }) => {
            set_password(&url, &cli.data_dir, &name)
        }
        Command::Dev(DevCommand::Seed { tasks, project }) => {
            seed(&url, &cli.data_dir, tasks, &project)
        }
        Command::Project(ProjectCommand::Create { slug, name }) => {
            let (store, ctx) = open_audited(&url, &cli.data_dir)?;
            let chain = store.site_chain();
            let project = store.write_blocking("create_project", |conn| {
                crate::projects::create(
                    conn,
                    &ctx,
                    &chain,
                    NewProject {
                        slug: &slug,
                        name: name.as_ref(),
                        description: "",
                    },
                    None,
                )
            })?;
            println!("created project {} ({})", project.slug, project.name);
            Ok(())
        }
        Command::Member(MemberCommand::Add { slug, user, role }) => {
            add_member(&url, &cli.data_dir, &slug, &user, role)
        }
        Command::Token(TokenCommand::Create {
            user,
            expires_in,
            name,
        }) => create_token(&url, &cli.data_dir, &user, expires_in, &name),
        Command::Keys(KeysCommand::Rotate { lead }) => rotate_keys(&url, &cli.data_dir, lead),
        Command::Audit(AuditCommand::Verify(args)) => verify(&cli.data_dir, &url, args),
        Command::Audit(AuditCommand::Export(args)) => {
            audit_export::export(&cli.data_dir, &url, args)
        }
        Command::Audit(AuditCommand::Bundle(args)) => {
            audit_export::bundle(&cli.data_dir, &url, args)
        }
    }
}

/// `token create`.
fn create_token(
    url: &DatabaseUrl,
    data_dir: &Path,
    user: &UserName,
    expires_in: Option<i64>,
    name: &Label,
) -> Result<(), CliError> {
    let expires_at = expires_in.map(|ms| now_ms() + ms);
    let (store, ctx) = open_audited(url, data_dir)?;
    let chain = store.site_chain();
    let (token, secret) = store.write_blocking("create_token", |conn| {
        let found =
            users::find_active(conn, user).map_err(|e| not_found(e, format!("user {user}")))?;
        crate::users::tokens::create(
            conn,
            &ctx,
            &chain,
            (&found.id, &found.name),
            name,
            expires_at,
        )
    })?;
    eprintln!(
        "created token {} for {user}{} (shown once; stored only as a hash):",
        token.prefix,
        token
            .expires_at
            .map(|t| format!(", expires {}", crate::clock::timestamp(t).to_rfc3339()))
            .unwrap_or_default()
    );
    println!("{}", secret.expose());
    Ok(())
}

/// `keys rotate`: schedules the switch to a new key `lead` from now (see [`keys::rotate`]).
fn rotate_keys(url: &DatabaseUrl, data_dir: &Path, lead_secs: u64) -> Result<(), CliError> {
    let store = Store::open(url)?;
    let keys = Arc::new(Keys::load_or_create(data_dir)?);
    let (switch, row) = keys::rotate(
        &store,
        &keys,
        std::time::Duration::from_secs(lead_secs),
        &cli_actor(),
    )?;
    println!(
        "rotated: key {} signs until {} and key {} from then on; the rotation is site chain \
         row {}, signed by the outgoing key",
        switch.old_key_id,
        crate::clock::timestamp(switch.switch_at_ms)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        switch.new_key_id,
        row.seq
    );
    Ok(())
}

/// `member add`.
fn add_member(
    url: &DatabaseUrl,
    data_dir: &Path,
    slug: &ProjectSlug,
    user: &UserName,
    role: Role,
) -> Result<(), CliError> {
    let (store, ctx) = open_audited(url, data_dir)?;
    let change = store.write_blocking("set_member_role", |conn| {
        let project =
            projects::find(conn, slug).map_err(|e| not_found(e, format!("project {slug}")))?;
        let found =
            users::find_active(conn, user).map_err(|e| not_found(e, format!("user {user}")))?;
        crate::projects::members::set_role(conn, &ctx, &project.id, (&found.id, &found.name), role)
    })?;
    let verb = match change {
        memberships::SetRole::Added => "added",
        memberships::SetRole::Changed => "changed",
    };
    println!("{verb}: {user} is {role} in {slug}");
    Ok(())
}

/// `user set-password`.
fn set_password(url: &DatabaseUrl, data_dir: &Path, name: &UserName) -> Result<(), CliError> {
    let password = read_password(name)?;
    passwords::check(&password).map_err(|e| CliError::Usage(e.to_string()))?;
    let hash = passwords::hash(&password);
    let (store, ctx) = open_audited(url, data_dir)?;
    let chain = store.site_chain();
    let user = store.write_blocking("set_password", |conn| {
        crate::users::set_password(conn, &ctx, &chain, name, &hash)
    })?;
    println!(
        "password set for {}; they can sign in to the dashboard at /login",
        user.name
    );
    Ok(())
}

/// `user create`.
fn create_user(
    url: &DatabaseUrl,
    data_dir: &Path,
    name: &UserName,
    site_admin: bool,
) -> Result<(), CliError> {
    let (store, ctx) = open_audited(url, data_dir)?;
    let chain = store.site_chain();
    let user = store.write_blocking("create_user", |conn| {
        crate::users::create(conn, &ctx, &chain, name, site_admin)
    })?;
    println!(
        "created user {} ({}); give them a token with: taskward-brain token create {}",
        user.name,
        if user.site_admin {
            "site admin"
        } else {
            "no site admin"
        },
        user.name
    );
    Ok(())
}

/// The store and an audit context acting as this CLI (the OS user running it).
/// `dev seed`: synthetic tasks in chunks, with progress on stderr, then the search terms and
/// fresh planner statistics.
fn seed(url: &DatabaseUrl, data_dir: &Path, n: i64, slug: &ProjectSlug) -> Result<(), CliError> {
    use crate::store::seed::{CHUNK, Synthetic, analyze, record_terms};
    let (store, ctx) = open_audited(url, data_dir)?;
    let chain = store.site_chain();
    let project =
        store.write_blocking("seed_project", |conn| match projects::find(conn, slug) {
            Ok(project) => Ok(project),
            Err(StoreError::NotFound) => crate::projects::create(
                conn,
                &ctx,
                &chain,
                NewProject {
                    slug,
                    name: None,
                    description: "",
                },
                None,
            ),
            Err(other) => Err(other),
        })?;
    let run = format!(
        "{}-",
        &hex::encode(taskward_shared::crypto::random_bytes::<4>())
    );
    let synthetic = Synthetic {
        project_id: &project.id,
        run: &run,
        base_ms: now_ms() - n,
    };
    let started = std::time::Instant::now();
    let mut done = 0;
    while done < n {
        let to = (done + CHUNK).min(n);
        store.write_blocking("seed_tasks", |conn| synthetic.insert(conn, done, to))?;
        done = to;
        eprintln!(
            "seeded {done} of {n} tasks into {slug} ({:.0} tasks/s)",
            done as f64 / started.elapsed().as_secs_f64().max(0.001)
        );
    }
    store.write_blocking("seed_terms", |conn| {
        record_terms(conn, &project.id)?;
        analyze(conn)
    })?;
    println!(
        "seeded {n} tasks into {slug} in {:.0} s (task ids {}task-0 to {}task-{})",
        started.elapsed().as_secs_f64(),
        run,
        run,
        n - 1
    );
    Ok(())
}

/// A new password: typed twice at a terminal (not echoed), or the first line of standard
/// input when it is not a terminal (scripts).
fn read_password(name: &UserName) -> Result<String, CliError> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| CliError::Io { what, source }
    };
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(io("cannot read the password from standard input"))?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_owned());
    }
    let first = prompt_hidden(&format!("New password for {name}: "))
        .map_err(io("cannot read the password"))?;
    let second = prompt_hidden("Again: ").map_err(io("cannot read the password"))?;
    if first != second {
        return Err(CliError::Usage(
            "the two passwords differ; nothing was changed".into(),
        ));
    }
    Ok(first)
}

/// Reads a line from the terminal with echo off (through `stty`, which every Unix has).
fn prompt_hidden(prompt: &str) -> std::io::Result<String> {
    use std::io::{BufRead, Write};
    use std::process::Command;
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let tty = || std::fs::File::open("/dev/tty");
    let echo_off = Command::new("stty")
        .arg("-echo")
        .stdin(tty()?)
        .status()?
        .success();
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if echo_off {
        Command::new("stty").arg("echo").stdin(tty()?).status()?;
    }
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

fn open_audited(url: &DatabaseUrl, data_dir: &Path) -> Result<(Store, AuditContext), CliError> {
    let store = Store::open(url)?;
    let keys = Arc::new(Keys::load_or_create(data_dir)?);
    Ok((
        store,
        AuditContext {
            signer: keys,
            actor: cli_actor(),
        },
    ))
}

/// The CLI as an audit actor, named after the OS user who ran it.
fn cli_actor() -> taskward_shared::audit::Actor {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    system_actor(&format!("cli:{user}"))
}

fn verify(data_dir: &Path, url: &DatabaseUrl, args: VerifyArgs) -> Result<(), CliError> {
    let progress = |rows: u64| eprintln!("  … {rows} rows verified");
    let mut warn = |warning: String| eprintln!("{warning}");
    let options = VerifyOptions {
        key_grace_ms: args.key_grace_ms,
        checkpoint_file: args.checkpoint.clone(),
        allow_missing_checkpoint: args.allow_missing_checkpoint,
    };
    if let Some(file) = &args.file {
        let keys_path = args
            .keys
            .as_deref()
            .expect("clap requires --keys with --file");
        let trusted = read_keys_file(keys_path).map_err(CliError::Usage)?;
        let reader =
            std::io::BufReader::new(std::fs::File::open(file).map_err(|source| CliError::Io {
                what: format!("cannot open {}", file.display()),
                source,
            })?);
        let verdict = verify_export(reader, Some(trusted), &options, &mut warn, progress)
            .map_err(CliError::Usage)?;
        return report(&file.display().to_string(), verdict);
    }
    let store = Store::open(url)?;
    let keys = Keys::load_or_create(data_dir)?;
    let trusted = TrustedKeys::from_infos(&keys.public_keys()).map_err(CliError::Usage)?;
    let chains: Vec<(String, String)> = if args.site {
        vec![("site".into(), store.site_chain())]
    } else if let Some(slug) = &args.project {
        let project = store
            .read_blocking("find_project", |conn| projects::find(conn, slug))
            .map_err(|e| not_found(e, format!("project {slug}")))?;
        vec![(slug.to_string(), audit::project_chain(&project.id))]
    } else {
        let mut all = vec![("site".to_owned(), store.site_chain())];
        for (project, _) in store.read_blocking("list_projects", |conn| {
            projects::list_visible(conn, "", true)
        })? {
            all.push((project.slug.clone(), audit::project_chain(&project.id)));
        }
        all
    };
    let mut failed = false;
    for (label, chain) in chains {
        let verdict = match options
            .verifier(&chain, trusted.clone(), &mut warn)
            .map_err(CliError::Usage)?
        {
            Ok(verifier) => verify_rows_live(&store, verifier, &chain, progress)?,
            Err(failure) => Err(failure),
        };
        failed |= report(&format!("{label} ({chain})"), verdict).is_err();
    }
    if failed {
        Err(CliError::VerificationFailed)
    } else {
        Ok(())
    }
}

/// Prints a chain's verdict: `OK` with how far the checkpoints reached (a tail beyond the
/// largest checkpoint is only as good as the keys), or the first bad row. Rows only
/// `--key-grace-ms` let pass are counted in a warning on stderr.
fn report(what: &str, verdict: Verdict) -> Result<(), CliError> {
    match verdict {
        Ok(summary) => {
            let rows = match summary.rows {
                1 => "1 row".to_owned(),
                n => format!("{n} rows"),
            };
            let reach = match summary.checkpoint_covers {
                Some(size) => format!("checkpoint covers row {size}"),
                None => "no checkpoint".to_owned(),
            };
            println!("{what}: OK {rows}, head {}; {reach}", summary.head);
            if summary.excused_by_grace > 0 {
                eprintln!(
                    "warning: {what}: {} row(s) signed after their key's window were accepted \
                     only because of --key-grace-ms",
                    summary.excused_by_grace
                );
            }
            Ok(())
        }
        Err(failure) if failure.seq == 0 => {
            println!("{what}: FAILED: {failure}");
            Err(CliError::VerificationFailed)
        }
        Err(failure) => {
            println!("{what}: FAILED at {failure}");
            Err(CliError::VerificationFailed)
        }
    }
}

/// Turns a bare `NotFound` into one that names what was missing.
fn not_found(err: StoreError, what: String) -> StoreError {
    match err {
        StoreError::NotFound => StoreError::Conflict(format!("{what} does not exist")),
        other => other,
    }
}

/// Creates the data directory with mode 0700 if it does not exist.
fn create_data_dir(dir: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CliError::Io {
            what: format!("cannot create data directory {}", dir.display()),
            source,
        })
}

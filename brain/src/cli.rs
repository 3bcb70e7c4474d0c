//! The `taskward-brain` command line: `serve`, `migrate`, and the admin commands that work
//! directly on the store (useful before the server runs, or when every token is lost).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::expiry::parse_lifetime;
use crate::names::{Label, ProjectSlug, UserName};
use crate::role::Role;
use crate::server;
use crate::store::{DatabaseUrl, Store, StoreError, memberships, now_ms, projects, tokens, users};
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
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Binding beyond loopback exposes the API: put TLS in front.
    #[arg(long, env = "TASKWARD_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,

    /// Serve /metrics without a token (for a Prometheus scraper on a trusted network).
    #[arg(long, env = "TASKWARD_METRICS_PUBLIC")]
    pub metrics_public: bool,
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

fn run(cli: Cli) -> Result<(), CliError> {
    create_data_dir(&cli.data_dir)?;
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
            runtime.block_on(server::serve(&cli.data_dir, &url, args))
        }
        Command::Migrate => {
            Store::open(&url)?;
            println!("database {} is migrated", url.redacted());
            Ok(())
        }
        Command::User(UserCommand::Create { name, site_admin }) => {
            let user = Store::open(&url)?
                .write_blocking("create_user", |conn| users::create(conn, &name, site_admin))?;
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
        Command::Project(ProjectCommand::Create { slug, name }) => {
            let project = Store::open(&url)?.write_blocking("create_project", |conn| {
                projects::create(conn, &slug, name.as_ref(), "")
            })?;
            println!("created project {} ({})", project.slug, project.name);
            Ok(())
        }
        Command::Member(MemberCommand::Add { slug, user, role }) => {
            let change = Store::open(&url)?.write_blocking("set_member_role", |conn| {
                let project = projects::find(conn, &slug)
                    .map_err(|e| not_found(e, format!("project {slug}")))?;
                let found = users::find_active(conn, &user)
                    .map_err(|e| not_found(e, format!("user {user}")))?;
                memberships::set_role(conn, &project.id, &found.id, role)
            })?;
            let verb = match change {
                memberships::SetRole::Added => "added",
                memberships::SetRole::Changed => "changed",
            };
            println!("{verb}: {user} is {role} in {slug}");
            Ok(())
        }
        Command::Token(TokenCommand::Create {
            user,
            expires_in,
            name,
        }) => {
            let expires_at = expires_in.map(|ms| now_ms() + ms);
            let (token, secret) = Store::open(&url)?.write_blocking("create_token", |conn| {
                let found = users::find_active(conn, &user)
                    .map_err(|e| not_found(e, format!("user {user}")))?;
                tokens::create(conn, &found.id, &name, expires_at)
            })?;
            eprintln!(
                "created token {} for {user}{} (shown once; stored only as a hash):",
                token.prefix,
                token
                    .expires_at
                    .map(|t| format!(", expires {}", crate::api::timestamp(t).to_rfc3339()))
                    .unwrap_or_default()
            );
            println!("{}", secret.expose());
            Ok(())
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

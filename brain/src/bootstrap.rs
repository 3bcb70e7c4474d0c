//! First start: a store that was never bootstrapped gets a site admin `admin`, a project
//! `default`, a token and a dashboard password for the admin — each only if missing — printed
//! once and written to `<data-dir>/admin.token` and `<data-dir>/admin.password` (mode 0600).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::app::system_actor;
use crate::keys::Keys;
use taskward_shared::secret::write_private_file;

use crate::names::{Label, ProjectSlug, UserName};
use crate::role::Role;
use crate::store::audit::{self, AuditContext};
use crate::store::projects::Project;
use crate::store::users::User;
use crate::store::{
    AnyConnection, Store, StoreError, StoreResult, memberships, projects, tokens, users,
};

/// What bootstrap created, for the caller to report.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The admin's token (plaintext; shown once). `None` when the admin already had one.
    pub token: Option<String>,
    /// Where the token was written.
    pub token_file: PathBuf,
    /// The admin's dashboard password (plaintext; shown once). `None` when the admin already
    /// had one.
    pub password: Option<String>,
    /// Where the password was written.
    pub password_file: PathBuf,
    /// What was created (`site admin admin`, `project default`, ...), for the banner.
    pub created: Vec<String>,
}

impl Bootstrapped {
    /// The first-start banner: printed, never logged, since it carries secrets.
    pub fn banner(&self) -> String {
        let mut text = format!("\nFirst start: created {}.\n", self.created.join(", "));
        if let Some(dir) = self.token_file.parent() {
            text.push_str(&format!(
                "This is a new store in {}: if you meant to open an existing one, stop the \
                 brain and pass its --data-dir (a relative one follows the working directory).\n\n",
                dir.display()
            ));
        }
        if let Some(token) = &self.token {
            text.push_str(&format!(
                "Admin token (shown once, also written to {}):\n\n    {token}\n\n",
                self.token_file.display()
            ));
        }
        if let Some(password) = &self.password {
            text.push_str(&format!(
                "Dashboard password for `admin` (shown once, also written to {}):\n\n    {password}\n",
                self.password_file.display()
            ));
        }
        text
    }
}

/// The name of the bootstrap admin.
const ADMIN: &str = "admin";
/// The bootstrap project.
const PROJECT: &str = "default";
/// The audit row that marks a site as bootstrapped.
const BOOTSTRAPPED: &str = "site.bootstrapped";

/// Completes the first start, piece by piece, on a site that was never bootstrapped (no
/// `site.bootstrapped` row) and has no user but `admin`: the site admin `admin`, a token and
/// a dashboard password for it, the project `default` and the admin's membership in it are
/// each created only if missing, so a store prepared beforehand (`dev seed --project default`,
/// `project create default`, `user create admin --site-admin`) starts. `None` when there is
/// nothing to do. The files are written inside the transaction, so a crash leaves either both
/// or neither (a leftover file from a failed commit is overwritten on the next start).
pub fn bootstrap_if_empty(
    store: &Store,
    keys: &Arc<Keys>,
    data_dir: &Path,
) -> StoreResult<Option<Bootstrapped>> {
    let token_file = data_dir.join("admin.token");
    let password_file = data_dir.join("admin.password");
    let password = crate::passwords::generate();
    let password_hash = crate::passwords::hash(&password);
    let site_chain = store.site_chain();
    let ctx = AuditContext {
        signer: keys.clone(),
        actor: system_actor("bootstrap"),
    };
    store.write_blocking("bootstrap", |conn| {
        let admin_name = ADMIN.parse::<UserName>().expect("valid");
        if !audit::page_of_kind(conn, &site_chain, Some(BOOTSTRAPPED), 0, 1)?.is_empty()
            || users::any_other_than(conn, &admin_name)?
        {
            return Ok(None);
        }
        let mut created = Vec::new();
        let Some((admin, has_password)) = admin_user(conn, &admin_name, &mut created)? else {
            return Ok(None);
        };
        let project = default_project_with(conn, &admin, &mut created)?;
        let now = crate::store::now_ms();
        let has_token = tokens::list_for_user(conn, &admin.id)?
            .iter()
            .any(|t| t.revoked_at.is_none() && t.expires_at.is_none_or(|at| at > now));
        let token = if has_token {
            None
        } else {
            let label: Label = "bootstrap".parse().expect("valid");
            created.push(format!("a token for `{ADMIN}`"));
            Some(tokens::create(conn, &admin.id, &label, None)?)
        };
        if !has_password {
            created.push(format!("a dashboard password for `{ADMIN}`"));
        }
        let nothing_missing = created.is_empty();
        audit::append(
            conn,
            &ctx,
            &site_chain,
            BOOTSTRAPPED,
            None,
            serde_json::json!({
                "admin": {"id": admin.id, "name": admin.name},
                "project": {"id": project.id, "slug": project.slug},
                "token_prefix": token.as_ref().map(|(token, _)| &token.prefix),
                "created": created,
            }),
        )?;
        if let Some((_, secret)) = &token {
            write_private_file(&token_file, secret.expose()).map_err(|e| {
                StoreError::Unavailable(format!("cannot write {}: {e}", token_file.display()))
            })?;
        }
        if !has_password {
            crate::users::set_password(conn, &ctx, &site_chain, &admin_name, &password_hash)?;
            write_private_file(&password_file, &password).map_err(|e| {
                StoreError::Unavailable(format!("cannot write {}: {e}", password_file.display()))
            })?;
        }
        if nothing_missing {
            return Ok(None);
        }
        Ok(Some(Bootstrapped {
            token: token.map(|(_, secret)| secret.expose().to_owned()),
            token_file: token_file.clone(),
            password: (!has_password).then(|| password.clone()),
            password_file: password_file.clone(),
            created,
        }))
    })
}

/// The site admin `admin` (created if missing) and whether it has a password; `None` when
/// the name is held by a deleted user or by one without site rights (someone's deliberate
/// setup, left alone).
fn admin_user(
    conn: &mut AnyConnection,
    admin_name: &UserName,
    created: &mut Vec<String>,
) -> StoreResult<Option<(User, bool)>> {
    Ok(match users::with_password(conn, ADMIN)? {
        Some((admin, hash)) if admin.site_admin => Some((admin, hash.is_some())),
        Some(_) => None,
        // Names are never reused: an `admin` deleted before any start stays deleted.
        None if users::any_exist(conn)? => None,
        None => {
            created.push(format!("site admin `{ADMIN}`"));
            Some((users::create(conn, admin_name, true)?, false))
        }
    })
}

/// The project `default` (created if missing), with `admin` as its admin (added if missing).
fn default_project_with(
    conn: &mut AnyConnection,
    admin: &User,
    created: &mut Vec<String>,
) -> StoreResult<Project> {
    let slug = PROJECT.parse::<ProjectSlug>().expect("valid");
    let project = match projects::find(conn, &slug) {
        Ok(project) => project,
        Err(StoreError::NotFound) => {
            created.push(format!("project `{PROJECT}`"));
            let name = "Default".parse::<Label>().expect("valid");
            projects::create(conn, &slug, Some(&name), "")?
        }
        Err(other) => return Err(other),
    };
    match memberships::find(conn, &project.id, &admin.id) {
        Ok(_) => {}
        Err(StoreError::NotFound) => {
            created.push(format!("`{ADMIN}`'s membership in `{PROJECT}`"));
            memberships::set_role(conn, &project.id, &admin.id, Role::Admin)?;
        }
        Err(other) => return Err(other),
    }
    Ok(project)
}

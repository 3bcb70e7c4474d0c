//! First start: an empty store gets a site admin `admin`, a project `default`, a token and a
//! dashboard password for the admin, printed once and written to `<data-dir>/admin.token` and
//! `<data-dir>/admin.password` (mode 0600).

use std::path::{Path, PathBuf};

use crate::app::system_actor;
use crate::keys::Keys;
use taskward_shared::secret::write_private_file;

use crate::names::{Label, ProjectSlug, UserName};
use crate::role::Role;
use crate::store::audit::{self, AuditContext};
use crate::store::{Store, StoreError, StoreResult, memberships, projects, tokens, users};

/// What bootstrap created, for the caller to report.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The admin's token (plaintext; shown once).
    pub token: String,
    /// Where the token was written.
    pub token_file: PathBuf,
    /// The admin's dashboard password (plaintext; shown once).
    pub password: String,
    /// Where the password was written.
    pub password_file: PathBuf,
}

/// Creates the first admin, project and token if the store has no users; `None` otherwise.
/// The token file is written inside the transaction, so a crash leaves either both or
/// neither (a leftover file from a failed commit is overwritten on the next start).
pub fn bootstrap_if_empty(
    store: &Store,
    keys: &Keys,
    data_dir: &Path,
) -> StoreResult<Option<Bootstrapped>> {
    let token_file = data_dir.join("admin.token");
    let password_file = data_dir.join("admin.password");
    let password = crate::passwords::generate();
    let password_hash = crate::passwords::hash(&password);
    let site_chain = store.site_chain();
    let ctx = AuditContext {
        signer: keys.signer(),
        actor: system_actor("bootstrap"),
    };
    store.write_blocking("bootstrap", |conn| {
        if users::any_exist(conn)? {
            return Ok(None);
        }
        let admin_name = "admin".parse::<UserName>().expect("valid");
        let admin = users::create(conn, &admin_name, true)?;
        let project = projects::create(
            conn,
            &"default".parse::<ProjectSlug>().expect("valid"),
            Some(&"Default".parse::<Label>().expect("valid")),
            "",
        )?;
        memberships::set_role(conn, &project.id, &admin.id, Role::Admin)?;
        let label: Label = "bootstrap".parse().expect("valid");
        let (token, secret) = tokens::create(conn, &admin.id, &label, None)?;
        audit::append(
            conn,
            &ctx,
            &site_chain,
            "site.bootstrapped",
            None,
            serde_json::json!({
                "admin": {"id": admin.id, "name": admin.name},
                "project": {"id": project.id, "slug": project.slug},
                "token_prefix": token.prefix,
            }),
        )?;
        write_private_file(&token_file, secret.expose()).map_err(|e| {
            StoreError::Unavailable(format!("cannot write {}: {e}", token_file.display()))
        })?;
        crate::users::set_password(conn, &ctx, &site_chain, &admin_name, &password_hash)?;
        write_private_file(&password_file, &password).map_err(|e| {
            StoreError::Unavailable(format!("cannot write {}: {e}", password_file.display()))
        })?;
        Ok(Some(Bootstrapped {
            token: secret.expose().to_owned(),
            token_file: token_file.clone(),
            password: password.clone(),
            password_file: password_file.clone(),
        }))
    })
}

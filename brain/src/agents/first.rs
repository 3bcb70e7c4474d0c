//! The first agent: while no agent of project `default` has enrolled, every start of the
//! brain hands out a one-line `taskward-agent run` command for a pending agent `first-agent`,
//! so a new site goes from nothing to a watched Celery worker in two commands (start the
//! brain, paste the line on the worker's host). The token in it is re-issued on each start and
//! lives an hour: the line printed last is the only one that works, and a forgotten terminal
//! scroll-back stops being a way in soon.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use taskward_shared::secret::Secret;

use super::registry;
use crate::app::system_actor;
use crate::keys::Keys;
use crate::names::{AgentName, ProjectSlug};
use crate::store::audit::AuditContext;
use crate::store::{AnyConnection, Store, StoreError, StoreResult, agents, now_ms, projects};

/// The project the first agent joins (the one bootstrap creates).
const PROJECT: &str = "default";
/// The pending agent the printed line enrolls.
pub const NAME: &str = "first-agent";
/// How long the printed token can be spent: an hour, not the API's day, since it is printed
/// on a terminal (and re-issued at the next start anyway).
pub const TOKEN_VALIDITY_MS: i64 = 60 * 60 * 1000;
/// The audit actor of what a start does for the first agent.
const ACTOR: &str = "first-start";

/// A fresh enrollment token for the first agent.
#[derive(Debug)]
pub struct FirstAgent {
    /// The one-time enrollment token (plaintext; printed once, stored hashed).
    pub token: Secret,
    /// Whether this start registered the agent (rather than re-issuing its token).
    pub created: bool,
}

/// Issues the first agent's token when project `default` exists and none of its agents has
/// enrolled: registers `first-agent` if it is missing (`agent.created`), else replaces its
/// token (`agent.enrollment_reissued`). `None` when there is nothing to hand out.
pub async fn issue(store: &Store, keys: &Arc<Keys>) -> StoreResult<Option<FirstAgent>> {
    let ctx = AuditContext {
        signer: keys.clone(),
        actor: system_actor(ACTOR),
    };
    // Retried once: two brains starting together on one database race to register it.
    store
        .write_retrying("first_agent", move |conn| issue_in(conn, &ctx))
        .await
}

fn issue_in(conn: &mut AnyConnection, ctx: &AuditContext) -> StoreResult<Option<FirstAgent>> {
    let slug = PROJECT.parse::<ProjectSlug>().expect("valid");
    let project = match projects::find(conn, &slug) {
        Ok(project) => project,
        Err(StoreError::NotFound) => return Ok(None),
        Err(other) => return Err(other),
    };
    let existing = agents::list(conn, &project.id)?;
    if existing.iter().any(|agent| agent.enrolled_at.is_some()) {
        return Ok(None);
    }
    let expires_at = now_ms() + TOKEN_VALIDITY_MS;
    match existing.into_iter().find(|agent| agent.name == NAME) {
        Some(agent) => Ok(Some(FirstAgent {
            token: registry::reissue_enrollment(conn, ctx, &agent, expires_at)?,
            created: false,
        })),
        None => {
            let name = NAME.parse::<AgentName>().expect("valid");
            let (agent, _) = registry::register(conn, ctx, &project.id, &name, false)?;
            // The registry's day-long token is replaced before anyone saw it.
            Ok(Some(FirstAgent {
                token: agents::reissue_enrollment(conn, &agent.id, expires_at)?,
                created: true,
            }))
        }
    }
}

/// The brain's URL as an agent on another host should be given it: the listening address,
/// with a wildcard address (`0.0.0.0`, `[::]`) shown as `127.0.0.1`; `true` when it was a
/// wildcard (the reader should put the host's name instead).
pub fn brain_url(listen: SocketAddr, tls: bool) -> (String, bool) {
    let scheme = if tls { "https" } else { "http" };
    let wildcard = listen.ip().is_unspecified();
    let shown = if wildcard {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
    } else {
        listen
    };
    (format!("{scheme}://{shown}"), wildcard)
}

/// The command that enrolls the agent and runs it, on one line.
pub fn run_command(brain_url: &str, token: &str, broker: &str) -> String {
    format!(
        "taskward-agent run --brain {brain_url} --enroll {token} --broker {}",
        shell_word(broker)
    )
}

/// `word` as one shell word: as is when it holds only characters no shell treats specially,
/// else single-quoted (a broker URL may carry `?`, `&` or a password).
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

impl FirstAgent {
    /// What a start prints on stderr (never logs: it carries the token), ending with the
    /// command line itself.
    pub fn banner(&self, listen: SocketAddr, tls: bool, broker: &str) -> String {
        let (url, wildcard) = brain_url(listen, tls);
        let mut text = format!(
            "\nNo agent has enrolled in project `{PROJECT}` yet. To watch a Celery worker, run \
             this on its host\n(agent `{NAME}`: the token works once, within an hour; each \
             start of the brain issues a new one):\n"
        );
        if wildcard {
            text.push_str(&format!(
                "The brain listens on {listen}: on another host, put this host's name in place \
                 of 127.0.0.1.\n"
            ));
        }
        text.push('\n');
        text.push_str(&run_command(&url, self.token.expose(), broker));
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_follows_the_listening_address() {
        let url = |addr: &str, tls| brain_url(addr.parse().unwrap(), tls);
        assert_eq!(
            url("127.0.0.1:7700", false),
            ("http://127.0.0.1:7700".into(), false)
        );
        assert_eq!(
            url("0.0.0.0:7700", true),
            ("https://127.0.0.1:7700".into(), true)
        );
        assert_eq!(url("[::]:80", false), ("http://127.0.0.1:80".into(), true));
        assert_eq!(
            url("[::1]:7700", false),
            ("http://[::1]:7700".into(), false)
        );
        assert_eq!(
            url("10.0.0.5:7700", false),
            ("http://10.0.0.5:7700".into(), false)
        );
    }

    #[test]
    fn the_broker_is_quoted_only_when_a_shell_would_split_it() {
        assert_eq!(
            run_command("http://b:1", "twe_x", "redis://127.0.0.1:6379/0"),
            "taskward-agent run --brain http://b:1 --enroll twe_x --broker redis://127.0.0.1:6379/0"
        );
        assert!(
            run_command("http://b:1", "twe_x", "amqp://u:p@h/v?heartbeat=5&x=1")
                .ends_with("--broker 'amqp://u:p@h/v?heartbeat=5&x=1'")
        );
    }
}

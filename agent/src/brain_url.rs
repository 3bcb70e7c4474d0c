//! The brain's address as the agent accepts it: an `http://` or `https://` base URL, and the
//! rule that keeps the credential and every command off the wire in clear text — a plain
//! `http://` URL is refused unless its host is loopback (the brain on the same host, or an
//! SSH tunnel) or the config says `allow_insecure = true`. `enroll` and `run` both apply it,
//! so a config edited after enrollment cannot slip past.

use std::net::IpAddr;

use reqwest::Url;

/// Why a brain URL is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BrainUrlError {
    /// Not a URL at all.
    #[error("brain URL {url:?} does not parse: {why}")]
    Unparsable {
        /// The text given.
        url: String,
        /// The parser's reason.
        why: String,
    },
    /// A scheme other than `http` or `https`.
    #[error("brain URL {url:?} must start with https:// (or http:// on loopback)")]
    Scheme {
        /// The text given.
        url: String,
    },
    /// Plain HTTP to another host, without `allow_insecure`.
    #[error(
        "brain URL {url:?} is plain http to a host that is not loopback: the agent's credential, \
         every command and every task argument would cross the network unencrypted. Use \
         https:// (the brain's `serve --tls-cert`, or a TLS proxy), or set `allow_insecure = true` \
         in the agent config (`enroll --allow-insecure`) if the network itself is trusted"
    )]
    Insecure {
        /// The text given.
        url: String,
    },
}

/// A brain base URL that passed the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrainUrl {
    base: String,
    tls: bool,
}

impl BrainUrl {
    /// Checks `text` against the rule (see the module header).
    pub fn parse(text: &str, allow_insecure: bool) -> Result<BrainUrl, BrainUrlError> {
        let base = text.trim().trim_end_matches('/').to_owned();
        let url = Url::parse(&base).map_err(|e| BrainUrlError::Unparsable {
            url: text.to_owned(),
            why: e.to_string(),
        })?;
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => {
                return Err(BrainUrlError::Scheme {
                    url: text.to_owned(),
                });
            }
        };
        if !tls && !allow_insecure && !is_loopback(&url) {
            return Err(BrainUrlError::Insecure {
                url: text.to_owned(),
            });
        }
        Ok(BrainUrl { base, tls })
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether the link is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The enrollment endpoint.
    pub fn enroll_url(&self) -> String {
        format!("{}/api/v1/agent/enroll", self.base)
    }

    /// The WebSocket endpoint of sessions (`wss://` for `https://`).
    pub fn connect_url(&self) -> String {
        let rest = self
            .base
            .strip_prefix(if self.tls { "https" } else { "http" })
            .unwrap_or(&self.base);
        format!(
            "{}{rest}/api/v1/agent/connect",
            if self.tls { "wss" } else { "ws" }
        )
    }
}

/// Whether the URL's host is this machine: `localhost`, 127.0.0.0/8 or `::1`. Names other than
/// `localhost` are not resolved: what a name points at can change after the check.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_accepted_on_loopback_only_unless_allowed() {
        for ok in [
            "http://127.0.0.1:7700",
            "http://127.9.9.9:7700/",
            "http://localhost:7700",
            "http://[::1]:7700",
            "https://brain.example.com",
            "https://10.0.0.5:7700",
        ] {
            BrainUrl::parse(ok, false).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for insecure in [
            "http://brain.example.com:7700",
            "http://10.0.0.5:7700",
            "http://localhost.example.com",
            "http://[2001:db8::1]:7700",
        ] {
            let err = BrainUrl::parse(insecure, false).unwrap_err();
            assert!(matches!(err, BrainUrlError::Insecure { .. }), "{insecure}");
            assert!(err.to_string().contains("allow_insecure"), "{err}");
            BrainUrl::parse(insecure, true).unwrap();
        }
        assert!(matches!(
            BrainUrl::parse("ftp://brain", true),
            Err(BrainUrlError::Scheme { .. })
        ));
        assert!(matches!(
            BrainUrl::parse("brain:7700", true),
            Err(BrainUrlError::Scheme { .. }) | Err(BrainUrlError::Unparsable { .. })
        ));
    }

    #[test]
    fn the_session_endpoint_follows_the_scheme() {
        let tls = BrainUrl::parse("https://brain.example.com:7700/", false).unwrap();
        assert_eq!(
            tls.connect_url(),
            "wss://brain.example.com:7700/api/v1/agent/connect"
        );
        let plain = BrainUrl::parse("http://127.0.0.1:7700", false).unwrap();
        assert_eq!(
            plain.connect_url(),
            "ws://127.0.0.1:7700/api/v1/agent/connect"
        );
        assert_eq!(
            plain.enroll_url(),
            "http://127.0.0.1:7700/api/v1/agent/enroll"
        );
    }
}

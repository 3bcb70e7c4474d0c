//! Redaction on the host: task arguments are cleaned before they leave the agent, so secrets
//! and e-mail addresses never reach the brain's database.
//!
//! Arguments arrive as Python reprs. A readable repr is parsed (`pyrepr.rs`) and
//! values under sensitive keys become `"<redacted>"`, e-mail addresses `"<email>"`; the result
//! travels as JSON ([`Redactor::clean_value`]). A repr that cannot be read (truncated,
//! non-literal) travels as text only if it shows nothing sensitive, and is replaced whole
//! otherwise ([`Redactor::clean_text`]).

use serde_json::Value;

use crate::config::DEFAULT_SECRET_KEYS;

/// What replaces a secret value.
pub const REDACTED: &str = "<redacted>";
/// What replaces an e-mail address.
pub const EMAIL: &str = "<email>";

/// The rules of one agent.
#[derive(Debug, Clone)]
pub struct Redactor {
    /// Lower-case key fragments.
    pub secret_keys: Vec<String>,
    /// Replace e-mail addresses in string values.
    pub emails: bool,
}

impl Default for Redactor {
    fn default() -> Redactor {
        Redactor {
            secret_keys: DEFAULT_SECRET_KEYS
                .iter()
                .map(|k| (*k).to_owned())
                .collect(),
            emails: true,
        }
    }
}

impl Redactor {
    /// Cleans a repr kept as text (unreadable, or possibly truncated so that what reads as
    /// a literal is not the real value): the text when harmless, a placeholder else.
    pub fn clean_text(&self, repr: &str) -> Value {
        if self.looks_sensitive(repr) {
            Value::String(format!(
                "{REDACTED} (unreadable arguments that mention a secret)"
            ))
        } else {
            Value::String(repr.to_owned())
        }
    }

    /// Cleans arguments already read into JSON.
    pub fn clean_value(&self, value: Value) -> Value {
        self.value(value, false)
    }

    fn secret_key(&self, key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        self.secret_keys.iter().any(|k| key.contains(k.as_str()))
    }

    fn value(&self, value: Value, secret: bool) -> Value {
        match value {
            _ if secret => Value::String(REDACTED.into()),
            Value::String(s) if self.emails && is_email(&s) => Value::String(EMAIL.into()),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.value(v, false)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| {
                        let secret = self.secret_key(&k);
                        (k, self.value(v, secret))
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    fn looks_sensitive(&self, text: &str) -> bool {
        let lower = text.to_ascii_lowercase();
        self.secret_keys.iter().any(|k| lower.contains(k.as_str()))
            || (self.emails && text.contains('@'))
    }
}

/// A plain `local@domain.tld` check: good enough to catch addresses in arguments.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.trim().split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !local.contains(char::is_whitespace)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_and_emails_never_survive() {
        let r = Redactor::default();
        let read = |repr: &str| r.clean_value(crate::engines::celery::pyrepr::parse(repr).unwrap());
        assert_eq!(
            read(
                "{'user': 'ann', 'password': 'hunter2', 'to': 'ann@example.com', 'nested': {'API_KEY': 'k', 'n': 1}}"
            ),
            json!({"user": "ann", "password": REDACTED, "to": EMAIL, "nested": {"API_KEY": REDACTED, "n": 1}})
        );
        assert_eq!(read("('ann@example.com', 2)"), json!([EMAIL, 2]));
        // Unreadable: passed as text only when it shows nothing sensitive.
        assert_eq!(
            r.clean_text("(<object at 0x1>,)"),
            json!("(<object at 0x1>,)")
        );
        let cut = r.clean_text("{'password': 'aaaa...', ...}");
        assert!(!cut.to_string().contains("aaaa"), "{cut}");
        assert!(cut.as_str().unwrap().starts_with(REDACTED));
        assert!(!is_email("not an @ address") && is_email("a.b@c.io"));
    }
}

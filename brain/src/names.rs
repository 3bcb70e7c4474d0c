//! Validated identifiers. Each type checks its grammar once, when it is built from a string
//! (a JSON field, a path segment or a CLI argument), so code that holds one never re-checks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Defines a string newtype whose constructor enforces `$check`; serde and clap go through it.
macro_rules! validated_name {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:path, $pattern:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(value: String) -> Result<$name, String> {
                $check(&value).map_err(|why| format!("invalid {}: {why}", $what))?;
                Ok($name(value))
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<$name, String> {
                $name::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern($pattern)
                    .build()
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_name!(
    /// A project's URL name: `^[a-z0-9][a-z0-9-]{0,62}$`.
    ProjectSlug,
    "project slug",
    check_slug,
    Some("^[a-z0-9][a-z0-9-]{0,62}$")
);

validated_name!(
    /// A user's login name: `^[a-z0-9][a-z0-9._-]{0,62}$`.
    UserName,
    "user name",
    check_user_name,
    Some("^[a-z0-9][a-z0-9._-]{0,62}$")
);

validated_name!(
    /// An agent's name within its project: `^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$` (host names fit).
    AgentName,
    "agent name",
    check_agent_name,
    Some("^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
);

validated_name!(
    /// Free text shown to people (project or token names): 1..=200 characters, no control
    /// characters, not only whitespace.
    Label,
    "label",
    check_label,
    None::<String>
);

/// Longest slug or name: one DNS label, so names can appear in host-like places.
pub const MAX_NAME_LEN: usize = 63;

/// Longest label, generous for display names but bounded so rows stay small.
pub const MAX_LABEL_LEN: usize = 200;

fn check_identifier(
    value: &str,
    first_ok: impl Fn(char) -> bool,
    rest_ok: impl Fn(char) -> bool,
    grammar: &str,
) -> Result<(), String> {
    let mut chars = value.chars();
    let ok = match chars.next() {
        None => false,
        Some(first) => first_ok(first) && chars.all(rest_ok),
    };
    if ok && value.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(format!("{value:?} must match {grammar}"))
    }
}

fn check_slug(value: &str) -> Result<(), String> {
    let lower_digit = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    check_identifier(
        value,
        lower_digit,
        |c| lower_digit(c) || c == '-',
        "^[a-z0-9][a-z0-9-]{0,62}$",
    )
}

fn check_user_name(value: &str) -> Result<(), String> {
    let lower_digit = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    check_identifier(
        value,
        lower_digit,
        |c| lower_digit(c) || matches!(c, '.' | '_' | '-'),
        "^[a-z0-9][a-z0-9._-]{0,62}$",
    )
}

fn check_agent_name(value: &str) -> Result<(), String> {
    check_identifier(
        value,
        |c| c.is_ascii_alphanumeric(),
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
        "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
    )
}

fn check_label(value: &str) -> Result<(), String> {
    let len = value.chars().count();
    if value.trim().is_empty() {
        Err("must not be empty".into())
    } else if len > MAX_LABEL_LEN {
        Err(format!(
            "must be at most {MAX_LABEL_LEN} characters, got {len}"
        ))
    } else if value.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_grammar_edges() {
        for ok in ["a", "0", "default", "a-b-c", "x1", &"a".repeat(63)] {
            assert!(ok.parse::<ProjectSlug>().is_ok(), "{ok} should be accepted");
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "é", "a b", &"a".repeat(64)] {
            assert!(
                bad.parse::<ProjectSlug>().is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn user_and_agent_name_grammar_edges() {
        assert!("jane.doe_1-x".parse::<UserName>().is_ok());
        assert!("Jane".parse::<UserName>().is_err());
        assert!(".jane".parse::<UserName>().is_err());
        assert!("Host-01.example".parse::<AgentName>().is_ok());
        assert!("-host".parse::<AgentName>().is_err());
        assert!("a".repeat(64).parse::<AgentName>().is_err());
    }

    #[test]
    fn label_edges() {
        assert!("x".parse::<Label>().is_ok());
        assert!("x".repeat(200).parse::<Label>().is_ok());
        assert!("x".repeat(201).parse::<Label>().is_err());
        assert!("  ".parse::<Label>().is_err());
        assert!("a\nb".parse::<Label>().is_err());
    }

    #[test]
    fn serde_goes_through_validation() {
        let err = serde_json::from_str::<ProjectSlug>("\"Bad Slug\"").unwrap_err();
        assert!(err.to_string().contains("invalid project slug"));
        let ok: ProjectSlug = serde_json::from_str("\"ok-slug\"").unwrap();
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"ok-slug\"");
    }
}

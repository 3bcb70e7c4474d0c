//! Reading JSON input so that a bad value names the field at fault: the HTTP extractors, the
//! commands a schedule carries and the dashboard's forms all go through here, so the same
//! mistake gets the same message wherever it is made.

use serde::de::DeserializeOwned;

use crate::refusal::Refusal;

/// Deserializes an already-parsed JSON value (part of a body), naming the path at fault.
pub fn parse_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Refusal> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        field_error(&path, &err.into_inner().to_string())
    })
}

/// Builds the refusal (a 400 at the HTTP edge) for a deserialization error at `path`. serde reports unknown and missing
/// fields at the parent's path, so the field name is taken from the message in those cases.
pub fn field_error(path: &str, message: &str) -> Refusal {
    let parent = if path == "." { "" } else { path };
    let join = |name: &str| {
        if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        }
    };
    // serde_path_to_error already ends the path with an unknown field's name, but stops at
    // the parent for a missing one.
    let named = |prefix: &str| {
        let name = message.strip_prefix(prefix)?.split('`').next()?;
        let last = parent.rsplit('.').next().unwrap_or_default();
        Some(if last == name {
            parent.to_owned()
        } else {
            join(name)
        })
    };
    let (code, field) = if let Some(field) = named("unknown field `") {
        ("unknown_field", field)
    } else if let Some(field) = named("missing field `") {
        ("missing_field", field)
    } else {
        ("invalid_field", parent.to_owned())
    };
    let message = strip_serde_position(message);
    Refusal::Invalid {
        code,
        message: if field.is_empty() {
            message
        } else {
            format!("{field}: {message}")
        },
        field: (!field.is_empty()).then_some(field),
    }
}

/// serde_json appends " at line 1 column 17"; the field name says more to an API user.
fn strip_serde_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

//! Reading JSON input so that a bad value names the field at fault: the HTTP extractors, the
//! commands a schedule carries and the dashboard's forms all go through here, so the same
//! mistake gets the same message wherever it is made.

use serde::de::DeserializeOwned;

use crate::refusal::Refusal;

/// Deserializes an already-parsed JSON value (part of a body), naming the path at fault.
/// A string holding a NUL character is refused first (see [`refuse_nul`]).
pub fn parse_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Refusal> {
    refuse_nul(&value)?;
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        field_error(&path, &err.into_inner().to_string())
    })
}

/// Refuses a JSON value with a NUL character (`\u0000`) in any string or object key, naming
/// its path (`inner.names[2]`, the way serde_path_to_error writes paths). No stored text may
/// hold NUL: PostgreSQL's text types cannot, so the same input is refused on both backends.
pub fn refuse_nul(value: &serde_json::Value) -> Result<(), Refusal> {
    refuse_nul_in("", value)
}

/// Like [`refuse_nul`] for a JSON value found at `path` (a JSON-valued query parameter such
/// as `filter`): the path named starts with it.
pub fn refuse_nul_in(path: &str, value: &serde_json::Value) -> Result<(), Refusal> {
    match nul_path(value, path) {
        None => Ok(()),
        Some(path) => Err(nul_refusal(&path)),
    }
}

/// The refusal for a NUL character in `field` (a JSON path, query or path parameter, or form
/// field).
pub fn nul_refusal(field: &str) -> Refusal {
    let field = if field.is_empty() { "." } else { field };
    Refusal::invalid_field(
        field,
        format!("{field}: must not contain a NUL character (\\u0000)"),
    )
}

/// The path of the first string or key holding NUL, if any.
fn nul_path(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0').then(|| path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, &format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let shown = key.replace('\0', "\\u0000");
            let inner = if path.is_empty() {
                shown
            } else {
                format!("{path}.{shown}")
            };
            if key.contains('\0') {
                Some(inner)
            } else {
                nul_path(item, &inner)
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nul_field(value: serde_json::Value) -> Option<String> {
        match refuse_nul(&value) {
            Ok(()) => None,
            Err(Refusal::Invalid { code, field, .. }) => {
                assert_eq!(code, "invalid_field");
                field
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn nul_characters_are_refused_with_their_path() {
        assert_eq!(nul_field(json!({"name": "a\u{0}b"})), Some("name".into()));
        assert_eq!(
            nul_field(json!({"outer": {"list": ["ok", "x\u{0}"]}})),
            Some("outer.list[1]".into())
        );
        assert_eq!(
            nul_field(json!({"map": {"k\u{0}": 1}})),
            Some("map.k\\u0000".into())
        );
        assert_eq!(nul_field(json!("\u{0}")), Some(".".into()));
        assert_eq!(
            nul_field(json!([{"a": ["\u{0}"]}])),
            Some("[0].a[0]".into())
        );
        assert_eq!(
            nul_field(json!({"name": "no nul", "n": 0, "z": null})),
            None
        );
        match refuse_nul_in("filter", &json!({"name": {"equals": "\u{0}"}})) {
            Err(Refusal::Invalid { field, .. }) => {
                assert_eq!(field.as_deref(), Some("filter.name.equals"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_json_value::<serde_json::Value>(json!({"a": "\u{0}"})).is_err());
    }
}

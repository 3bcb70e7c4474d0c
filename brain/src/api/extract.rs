//! Request extractors whose every rejection is an [`ApiError`], so bad input always gets the
//! JSON error shape with the field named, never axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::input::{field_error, nul_refusal, refuse_nul};

/// Largest request body accepted anywhere (1 MiB); larger bodies get 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A JSON body: requires `Content-Type: application/json`, at most [`BODY_LIMIT`] bytes,
/// and names the JSON path of any field that fails to deserialize or validate.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers().get(CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType(
                "expected a JSON body with Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(BODY_LIMIT)
            } else if crate::listener::is_body_timeout(&rejection) {
                ApiError::RequestTimeout(rejection.body_text())
            } else {
                ApiError::BadRequest {
                    code: "invalid_body",
                    message: rejection.body_text(),
                    field: None,
                }
            }
        })?;
        // Every body of the API is a JSON object. serde would also read a struct from an
        // array of its fields in order (`[null, null]`), a form no client means and the
        // document does not allow. (Text that is not JSON at all is `parse_json`'s to name.)
        let starts_an_object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if !starts_an_object && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() {
            return Err(ApiError::BadRequest {
                code: "invalid_body",
                message: "the body must be a JSON object".into(),
                field: None,
            });
        }
        parse_json(&bytes).map(ApiJson)
    }
}

fn is_json(content_type: Option<&axum::http::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Deserializes JSON, turning serde's error into a 400 that names the path at fault. A string
/// holding a NUL character (`\u0000`, the only way JSON can carry one) is refused with its path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.windows(6).any(|w| w == b"\\u0000")
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
    {
        // Only bodies that may carry a NUL pay for the tree; `\\u0000` (an escaped
        // backslash) finds none and goes on.
        refuse_nul(&value)?;
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_data() {
            field_error(&path, &inner.to_string()).into()
        } else {
            ApiError::BadRequest {
                code: "invalid_json",
                message: format!("request body is not valid JSON: {inner}"),
                field: None,
            }
        }
    })?;
    de.end().map_err(|err| ApiError::BadRequest {
        code: "invalid_json",
        message: format!("request body is not valid JSON: {err}"),
        field: None,
    })?;
    Ok(value)
}

/// Query parameters, with the same field-naming 400s as [`ApiJson`].
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

/// Parses a query string, naming the bad parameter in the 400 (the dashboard's pages parse
/// their URLs with it too).
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    if let Some((key, _)) = form_urlencoded::parse(query.as_bytes())
        .find(|(key, value)| key.contains('\0') || value.contains('\0'))
    {
        return Err(nul_refusal(&key.replace('\0', "\\u0000")).into());
    }
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        field_error(&path, &err.into_inner().to_string()).into()
    })
}

/// Path parameters; a segment that does not parse is a 400 naming the parameter.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // Segments are percent-decoded: `%00` is a NUL no stored text may hold.
        if let Ok(raw) = axum::extract::RawPathParams::from_request_parts(parts, state).await
            && let Some((key, _)) = raw.iter().find(|(_, value)| value.contains('\0'))
        {
            return Err(nul_refusal(key).into());
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(path_error)
    }
}

fn path_error(rejection: PathRejection) -> ApiError {
    use axum::extract::path::ErrorKind;
    let field = match &rejection {
        PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
            ErrorKind::ParseErrorAtKey { key, .. }
            | ErrorKind::DeserializeError { key, .. }
            | ErrorKind::InvalidUtf8InPathParam { key } => Some(key.clone()),
            _ => None,
        },
        _ => None,
    };
    ApiError::BadRequest {
        code: "invalid_path_parameter",
        message: rejection.body_text(),
        field,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    fn field_of(json: &str) -> (String, Option<String>) {
        match parse_json::<Body>(json.as_bytes()).unwrap_err() {
            ApiError::BadRequest { code, field, .. } => (code.to_owned(), field),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field_of(r#"{}"#),
            ("missing_field".into(), Some("name".into()))
        );
        assert_eq!(
            field_of(r#"{"name": 1}"#),
            ("invalid_field".into(), Some("name".into()))
        );
        assert_eq!(
            field_of(r#"{"name": "x", "bogus": 1}"#),
            ("unknown_field".into(), Some("bogus".into()))
        );
        assert_eq!(
            field_of(r#"{"name": "x", "inner": {"count": -1}}"#),
            ("invalid_field".into(), Some("inner.count".into()))
        );
        assert_eq!(
            field_of(r#"{"name": "x", "inner": {"extra": 1}}"#),
            ("unknown_field".into(), Some("inner.extra".into()))
        );
        assert_eq!(field_of(r#"{"name": "#), ("invalid_json".into(), None));
        assert_eq!(
            field_of(r#"{"name": "x"} trailing"#),
            ("invalid_json".into(), None)
        );
    }

    #[test]
    fn nul_characters_name_their_field() {
        assert_eq!(
            field_of(r#"{"name": "a\u0000b"}"#),
            ("invalid_field".into(), Some("name".into()))
        );
        assert_eq!(
            field_of(r#"{"name": "x", "inner": {"count": "\u0000"}}"#),
            ("invalid_field".into(), Some("inner.count".into()))
        );
        // An escaped backslash before `u0000` is no NUL.
        assert!(parse_json::<Body>(br#"{"name": "\\u0000"}"#).is_ok());
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Query {
            state: Option<String>,
        }
        match parse_query::<Query>("state=a%00b") {
            Err(ApiError::BadRequest { field, .. }) => assert_eq!(field.as_deref(), Some("state")),
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_query::<Query>("state=ok").is_ok());
    }

    #[test]
    fn json_content_types() {
        use axum::http::HeaderValue;
        assert!(is_json(Some(&HeaderValue::from_static("application/json"))));
        assert!(is_json(Some(&HeaderValue::from_static(
            "application/json; charset=utf-8"
        ))));
        assert!(is_json(Some(&HeaderValue::from_static(
            "application/merge-patch+json"
        ))));
        assert!(!is_json(Some(&HeaderValue::from_static("text/plain"))));
        assert!(!is_json(None));
    }
}

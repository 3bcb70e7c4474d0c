//! Sign-in and sign-out: a password checked against its argon2id hash starts a session whose id
//! goes to the browser in an `HttpOnly`, `SameSite=Lax` cookie (and `Secure` behind TLS).
//! Attempts are limited per account (refused) and per address (slowed: see
//! [`crate::limits::SlowLanes`]), and a wrong name and a wrong password get the same answer
//! after the same work.

use std::time::Duration;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::header::{HOST, ORIGIN, RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout;
use crate::app::AppState;
use crate::auth::{SESSION_COOKIE, csrf_matches};
use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use crate::passwords;
use crate::store::{now_ms, sessions, users};

/// The page to return to after signing in.
#[derive(Debug, Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// A local path to go back to; anything else becomes `/`.
fn local(next: Option<&str>) -> String {
    match next {
        Some(path) if is_local_path(path) => path.to_owned(),
        _ => "/".to_owned(),
    }
}

/// Whether `path` can only mean a path on this site: it starts with one `/` (not `//host` or
/// `/\host`, which browsers read as another host), and holds no backslash, whitespace or
/// control character anywhere (browsers drop tab, CR and LF from URLs, so `/\t/evil.example`
/// is `//evil.example`). Once percent-decoded, in case something decodes it again on the way,
/// it still starts with one `/` and holds no control character.
fn is_local_path(path: &str) -> bool {
    let one_slash = |p: &str| p.starts_with('/') && !p.starts_with("//") && !p.starts_with("/\\");
    let decoded = percent_decoded(path);
    one_slash(path)
        && !path.contains('\\')
        && !path.chars().any(|c| c.is_control() || c.is_whitespace())
        // A page's own query may hold `%20`, but never an encoded control character.
        && one_slash(&decoded)
        && !decoded.chars().any(char::is_control)
}

/// `%XX` decoded (invalid escapes kept as they are; invalid UTF-8 replaced).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Refuses a sign-in form field holding a NUL character (no stored text may hold one, and
/// the name is looked up in the store).
fn refuse_nul(form: &Credentials) -> Result<(), ApiError> {
    for (field, value) in [
        ("name", form.name.as_str()),
        ("password", form.password.as_str()),
        ("next", form.next.as_deref().unwrap_or_default()),
    ] {
        if value.contains('\0') {
            return Err(crate::input::nul_refusal(field).into());
        }
    }
    Ok(())
}

fn form_page(next: &str, name: &str, problem: Option<&str>) -> axum::response::Html<String> {
    layout::bare(
        "Sign in",
        html! {
            form.signin method="post" action="/login" {
                h1 { "Taskward" }
                p.muted { "Sign in to the control plane." }
                @if let Some(problem) = problem { p.error role="alert" { (problem) } }
                label { "Name" input name="name" autocomplete="username" required value=(name); }
                label { "Password" input name="password" type="password" autocomplete="current-password" required; }
                input type="hidden" name="next" value=(next);
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// 429 with `Retry-After`, the form kept filled in.
fn too_many_attempts(next: &str, name: &str, wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        form_page(
            next,
            name,
            Some(&format!(
                "Too many sign-in attempts; try again in {secs} s."
            )),
        ),
    )
        .into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, secs.to_string().parse().expect("digits"));
    response
}

/// `GET /login`.
pub async fn form(Query(next): Query<Next>) -> Response {
    form_page(&local(next.next.as_deref()), "", None).into_response()
}

/// What the sign-in form posts.
#[derive(Debug, Deserialize)]
pub struct Credentials {
    name: String,
    password: String,
    next: Option<String>,
}

/// `POST /login`.
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: ClientAddr,
    Form(form): Form<Credentials>,
) -> Result<Response, ApiError> {
    // A form posted from another site must not sign the browser in (login CSRF).
    if !same_origin(&headers) {
        return Err(ApiError::Forbidden(
            "csrf: sign-in must come from this site's own form".into(),
        ));
    }
    refuse_nul(&form)?;
    let next = local(form.next.as_deref());
    let too_many = |wait: Duration| too_many_attempts(&next, &form.name, wait);
    // An account's own limit refuses outright: guessing one account's password stops.
    if let Err(wait) = state.login_limiter.check(&format!("account:{}", form.name)) {
        return Ok(too_many(wait));
    }
    // An address over its limit is slowed, not locked out: its attempts queue in one lane,
    // so a script is braked while someone else behind the same address still gets in.
    let address = format!("address:{client}");
    let over_address_limit = state.login_limiter.check(&address).err();
    let _turn = match over_address_limit {
        None => None,
        Some(wait) => match state.login_lanes.enter(&address).await {
            Some(turn) => Some(turn),
            None => return Ok(too_many(wait)),
        },
    };
    let name = form.name.clone();
    let found = state
        .store
        .read("sign_in_lookup", move |conn| {
            users::with_password(conn, &name)
        })
        .await?;
    let password = form.password;
    let stored = found.as_ref().and_then(|(_, hash)| hash.clone());
    let matches =
        tokio::task::spawn_blocking(move || passwords::verify(&password, stored.as_deref()))
            .await
            .map_err(|e| ApiError::Internal(format!("password check stopped: {e}")))?;
    let user = match found {
        Some((user, _)) if matches => user,
        _ => {
            tracing::info!(user = %form.name, %client, "sign-in refused");
            if let Some(wait) = over_address_limit {
                return Ok(too_many(wait));
            }
            return Ok((
                StatusCode::UNAUTHORIZED,
                form_page(&next, &form.name, Some("Wrong name or password.")),
            )
                .into_response());
        }
    };
    let now = now_ms();
    let user_id = user.id.clone();
    let (_, id) = state
        .store
        .write("sign_in", move |conn| sessions::create(conn, &user_id, now))
        .await?;
    tracing::info!(user = %user.name, "signed in");
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        id.expose(),
        sessions::ABSOLUTE_MS / 1000,
        if state.settings.secure_cookies {
            "; Secure"
        } else {
            ""
        }
    );
    let mut response = Redirect::to(&next).into_response();
    response
        .headers_mut()
        .insert(SET_COOKIE, cookie.parse().expect("cookie text is ASCII"));
    Ok(response)
}

/// Whether a form post came from this site: no `Origin` (older browsers, curl) or one whose
/// host is the `Host` the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| !host.is_empty() && rest == host)
}

/// What the sign-out form posts.
#[derive(Debug, Deserialize)]
pub struct SignOut {
    csrf: String,
}

/// `POST /logout`: ends the session named by the cookie, if the form carries its CSRF token.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignOut>,
) -> Result<Response, ApiError> {
    if let Some(presented) = crate::auth::session_cookie(&headers) {
        let now = now_ms();
        let lookup = presented.clone();
        let found = state
            .store
            .read("sign_out_lookup", move |conn| {
                sessions::find(conn, &lookup, now)
            })
            .await?;
        if let Some((session, user)) = found {
            if !csrf_matches(&form.csrf, &session.csrf_token) {
                return Err(ApiError::Forbidden(
                    "csrf: sign-out needs the session's CSRF token".into(),
                ));
            }
            state
                .store
                .write("sign_out", move |conn| sessions::delete(conn, &presented))
                .await?;
            tracing::info!(user = %user.name, "signed out");
        }
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
            .parse()
            .expect("ASCII"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_origin_paths_are_returned_to() {
        for ok in [
            "/",
            "/p/default",
            "/p/default/tasks?state=failed&q=a%20b",
            "/p/caf%C3%A9",
        ] {
            assert_eq!(local(Some(ok)), ok, "{ok:?} is local");
        }
        for bad in [
            "",
            "//evil",
            "//evil.example/p",
            "/\\evil",
            "/\\/evil",
            "/%09/evil.example",
            "/%2F/evil.example",
            "/%5Cevil",
            "/\t/evil",
            "/\r\n/evil",
            "/\n/evil",
            "/ /evil",
            "/p\\x",
            "/p\u{0}",
            "/p\u{7f}",
            "/p\u{a0}x",
            "https://evil",
            "http:/evil",
            "javascript:alert(1)",
            "evil",
            "\t/p",
        ] {
            assert_eq!(local(Some(bad)), "/", "{bad:?} must not be returned to");
        }
        assert_eq!(local(None), "/");
    }
}

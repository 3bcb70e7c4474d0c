//! A minimal blocking HTTP/1.1 client over std, for code without an async runtime (the
//! benches, and [`crate::BrainProcess`]'s readiness probe).

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;

/// GET (or POST when `body` is set) `url`; the body of a 2xx answer, `None` otherwise.
pub fn text(url: &str, token: Option<&str>, body: Option<Value>) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    exchange(&mut stream, host, &path, token, body)
}

/// [`text`] over TLS: `url` is `https://127.0.0.1:<port>/…`, its certificate verified against
/// `ca_pem`.
pub fn text_tls(
    url: &str,
    ca_pem: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
    let port = host.rsplit_once(':')?.1.parse().ok()?;
    let mut stream = crate::tls::connect(port, ca_pem).ok()?;
    exchange(&mut stream, host, &path, token, body)
}

fn exchange(
    stream: &mut (impl Read + Write),
    host: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Option<String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let method = if body.is_empty() { "GET" } else { "POST" };
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = Vec::new();
    // A TLS peer that closes without close_notify ends the read with an error after the data.
    let _ = stream.read_to_end(&mut raw);
    let response = String::from_utf8(raw).ok()?;
    let (head, payload) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 2") {
        return None;
    }
    Some(
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(payload)
        } else {
            payload.to_owned()
        },
    )
}

/// [`text`], parsed as JSON (`Null` for an empty or non-JSON 2xx body).
pub fn json(url: &str, token: Option<&str>, body: Option<Value>) -> Option<Value> {
    let payload = text(url, token, body)?;
    serde_json::from_str(&payload).ok().or(Some(Value::Null))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            super::dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}

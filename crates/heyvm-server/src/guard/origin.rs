//! Browser-borne attacks on an unauthenticated loopback API. A web page can
//! make the victim's browser talk to `127.0.0.1`: by DNS rebinding (its own
//! name resolving to 127.0.0.1, so `Host` is foreign) or by a cross-site
//! request (`Origin` is the page's). Both are refused when auth is off.
//! Proxy traffic never gets here (it is split off before the router).

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Peer;
use crate::error::AppError;
use crate::AppState;

pub async fn check_host_and_origin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.auth.is_some() {
        return next.run(req).await;
    }
    let api_port = req.extensions().get::<Peer>().map(|p| p.local.port());
    if let Some(host) = req.headers().get(header::HOST) {
        let host = host.to_str().unwrap_or("");
        if !split_host(host).is_some_and(|(name, _)| is_loopback_name(name)) {
            return AppError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected_request",
                format!("Host '{host}' is not this machine's loopback: without JWT_SECRET the API answers only to localhost names"),
            )
            .into_response();
        }
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !origin_is_ours(origin, api_port) {
            return AppError::new(StatusCode::FORBIDDEN, "forbidden_origin", format!("requests from origin '{origin}' are not allowed"))
                .into_response();
        }
    }
    next.run(req).await
}

/// `name[:port]` or `[v6][:port]` → (name, port).
fn split_host(h: &str) -> Option<(&str, Option<u16>)> {
    let h = h.trim();
    if let Some(rest) = h.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((name, port));
    }
    match h.rsplit_once(':') {
        Some((name, p)) => Some((name, Some(p.parse().ok()?))),
        None => Some((h, None)),
    }
}

fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// `http://localhost:34099` is ours when the port is the API's.
fn origin_is_ours(origin: &str, api_port: Option<u16>) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let Some((name, port)) = split_host(rest.trim_end_matches('/')) else { return false };
    is_loopback_name(name) && api_port.is_none_or(|p| p == port.unwrap_or(default_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in ["127.0.0.1:34099", "localhost", "LOCALHOST:1", "[::1]:80", "127.1.2.3", "a.localhost:9"] {
            assert!(split_host(ok).is_some_and(|(n, _)| is_loopback_name(n)), "{ok}");
        }
        for bad in ["evil.example:34099", "10.0.0.1", "[::2]:1", "localhost.evil.com", "127.0.0.1:x", ""] {
            assert!(!split_host(bad).is_some_and(|(n, _)| is_loopback_name(n)), "{bad}");
        }
    }

    #[test]
    fn origins() {
        assert!(origin_is_ours("http://127.0.0.1:34099", Some(34099)));
        assert!(origin_is_ours("http://localhost:34099", Some(34099)));
        assert!(!origin_is_ours("http://localhost:8080", Some(34099)));
        assert!(!origin_is_ours("https://evil.example", Some(34099)));
        assert!(!origin_is_ours("null", Some(34099)));
        assert!(origin_is_ours("http://localhost:5", None));
    }
}

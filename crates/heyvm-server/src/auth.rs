//! JWT (HS256) Bearer authentication.
//!
//! With `JWT_SECRET` set every route except `/health` requires
//! `Authorization: Bearer <jwt>`; `JWT_AUDIENCE` additionally requires that
//! `aud`. Only HS256 is accepted (never `none`), `exp` is required, and
//! failures are 401 JSON with a stable code: `missing_token`,
//! `invalid_token`, `invalid_signature`, `token_expired`,
//! `token_not_yet_valid`, `wrong_audience`.
//!
//! An API key (`hvk_…`, see `heyvm_core::api_keys`) is accepted wherever a
//! JWT is; unknown, revoked and expired keys get `invalid_api_key`,
//! `api_key_revoked` and `api_key_expired`.
//!
//! [`AuthConfig::verify_bearer`] is public so other layers (private proxy
//! endpoints) check tokens exactly the same way; [`sign`] mints tokens for
//! `heyvm token create`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::AppError;
use crate::AppState;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: i64 = 30;

#[derive(Clone)]
pub struct AuthConfig {
    secret: Vec<u8>,
    audience: Option<String>,
    /// Where API keys are checked; without it only JWTs are accepted.
    keys: Option<std::sync::Arc<heyvm_core::api_keys::ApiKeyStore>>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig").field("audience", &self.audience).field("api_keys", &self.keys.is_some()).finish()
    }
}

/// `aud` may be one string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, want: &str) -> bool {
        match self {
            Audience::One(a) => a == want,
            Audience::Many(v) => v.iter().any(|a| a == want),
        }
    }
}

/// The claims heyvm reads; others are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Malformed(String),
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    KeyUnknown,
    KeyRevoked,
    KeyExpired,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => f.write_str("this server requires Authorization: Bearer <token>"),
            AuthError::Malformed(why) => write!(f, "malformed token: {why}"),
            AuthError::BadSignature => f.write_str("token signature does not verify"),
            AuthError::Expired => f.write_str("token has expired"),
            AuthError::NotYetValid => f.write_str("token is not valid yet (nbf)"),
            AuthError::WrongAudience => f.write_str("token audience does not match this server"),
            AuthError::KeyUnknown => f.write_str("unknown API key"),
            AuthError::KeyRevoked => f.write_str("this API key has been revoked"),
            AuthError::KeyExpired => f.write_str("this API key has expired"),
        }
    }
}

impl std::error::Error for AuthError {}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Malformed(_) => "invalid_token",
            AuthError::BadSignature => "invalid_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::KeyUnknown => "invalid_api_key",
            AuthError::KeyRevoked => "api_key_revoked",
            AuthError::KeyExpired => "api_key_expired",
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut resp = AppError::new(StatusCode::UNAUTHORIZED, self.code(), self.to_string()).into_response();
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        resp
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

/// Signs `claims` as an HS256 JWT.
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
    let signing_input = format!("{header}.{payload}");
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// The `sub` prefix of a token scoped to one sandbox's shell stream.
pub(crate) const STREAM_SCOPE: &str = "shell-stream:";

/// The `?token=` of a shell-stream request, for the auth middleware.
pub(crate) fn query_token(uri: &axum::http::Uri) -> Option<&str> {
    if !uri.path().ends_with("/shell-stream") {
        return None;
    }
    uri.query()?.split('&').find_map(|kv| kv.strip_prefix("token=")).filter(|t| !t.is_empty())
}

/// Stream tokens are valid only on their sandbox's shell-stream path; every
/// other token is unrestricted.
pub(crate) fn scope_allows(claims: &Claims, path: &str) -> bool {
    let Some(id) = claims.sub.as_deref().and_then(|s| s.strip_prefix(STREAM_SCOPE)) else { return true };
    [format!("/sandboxes/{id}/shell-stream"), format!("/deployed-sandboxes/{id}/shell-stream")].iter().any(|p| p == path)
}

impl AuthConfig {
    pub fn new(secret: impl Into<Vec<u8>>, audience: Option<String>) -> Self {
        AuthConfig { secret: secret.into(), audience: audience.filter(|a| !a.is_empty()), keys: None }
    }

    /// Also accept the API keys of `keys`.
    pub fn with_api_keys(mut self, keys: std::sync::Arc<heyvm_core::api_keys::ApiKeyStore>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// `JWT_SECRET` / `JWT_AUDIENCE`; None when no secret is set.
    pub fn from_env() -> Option<Self> {
        let secret = heyvm_core::config::string(heyvm_core::config::JWT_SECRET)?;
        Some(Self::new(secret, heyvm_core::config::string(heyvm_core::config::JWT_AUDIENCE)))
    }

    /// A token for one purpose (`sub`), valid for `ttl_secs`, carrying this
    /// server's audience so that it verifies here.
    pub fn mint(&self, sub: &str, ttl_secs: i64) -> String {
        let t = now();
        let claims =
            Claims { sub: Some(sub.into()), exp: t + ttl_secs, iat: Some(t), nbf: None, aud: self.audience.clone().map(Audience::One) };
        sign(&self.secret, &claims)
    }

    /// Checks an `Authorization` header value (`Bearer <jwt>`).
    pub fn verify_bearer(&self, header_value: Option<&str>) -> Result<Claims, AuthError> {
        let value = header_value.map(str::trim).filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("bearer")).ok_or(AuthError::Missing)?;
        let (scheme, token) = value.split_once(' ').ok_or_else(|| AuthError::Malformed("expected 'Bearer <token>'".into()))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed(format!("unsupported authorization scheme '{scheme}'")));
        }
        self.verify(token.trim())
    }

    /// Checks a bare JWT or API key.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.starts_with(heyvm_core::api_keys::KEY_PREFIX) {
            return self.verify_key(token);
        }
        let malformed = |why: &str| AuthError::Malformed(why.to_string());
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("a JWT has three dot-separated parts"));
        };
        let header: serde_json::Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| malformed("header is not base64url JSON"))?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(malformed("only alg HS256 is accepted"));
        }
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| malformed("signature is not base64url"))?;
        let mut m = mac(&self.secret);
        m.update(h.as_bytes());
        m.update(b".");
        m.update(p.as_bytes());
        // verify_slice compares in constant time.
        m.verify_slice(&sig).map_err(|_| AuthError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| malformed("payload is not base64url"))?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|e| AuthError::Malformed(format!("claims: {e}")))?;
        let t = now();
        if claims.exp + LEEWAY_SECS <= t {
            return Err(AuthError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf - LEEWAY_SECS > t) {
            return Err(AuthError::NotYetValid);
        }
        if let Some(want) = &self.audience {
            if !claims.aud.as_ref().is_some_and(|a| a.contains(want)) {
                return Err(AuthError::WrongAudience);
            }
        }
        Ok(claims)
    }
}

impl AuthConfig {
    fn verify_key(&self, key: &str) -> Result<Claims, AuthError> {
        use heyvm_core::api_keys::KeyRejection;
        let keys = self.keys.as_ref().ok_or(AuthError::KeyUnknown)?;
        match keys.verify(key) {
            // A key stands in for a token with the key's id as subject.
            Ok((id, expires_at)) => {
                Ok(Claims { sub: Some(format!("api-key:{id}")), exp: expires_at.unwrap_or(i64::MAX / 2), iat: None, nbf: None, aud: None })
            }
            Err(KeyRejection::Unknown) => Err(AuthError::KeyUnknown),
            Err(KeyRejection::Revoked) => Err(AuthError::KeyRevoked),
            Err(KeyRejection::Expired) => Err(AuthError::KeyExpired),
        }
    }
}

/// Paths that never need a token.
fn is_open(path: &str) -> bool {
    path == "/health"
}

/// The axum middleware: a no-op when auth is off.
pub async fn require_auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(auth) = state.auth.as_deref() else { return next.run(req).await };
    if is_open(req.uri().path()) {
        return next.run(req).await;
    }
    let header = req.headers().get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("\u{0}"));
    // Shell streams also accept the scoped `?token=` of their connection_url.
    let verified = match (header, query_token(req.uri())) {
        (None, Some(token)) => auth.verify(token),
        _ => auth.verify_bearer(header),
    };
    match verified {
        Ok(c) if !scope_allows(&c, req.uri().path()) => {
            AuthError::Malformed("this token is only valid for one sandbox's shell stream".into()).into_response()
        }
        Ok(_) => next.run(req).await,
        Err(e) => {
            tracing::debug!(code = e.code(), path = req.uri().path(), "rejected request");
            // The agent-computer routes speak seed 000's codes.
            if req.uri().path().starts_with("/api/agents") {
                let mut resp =
                    AppError::new(StatusCode::UNAUTHORIZED, "SANDBOX_AUTH_FAILED", format!("{e} ({})", e.code())).into_response();
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return resp;
            }
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_in: i64, aud: Option<&str>) -> Claims {
        Claims { sub: Some("t".into()), exp: now() + exp_in, iat: Some(now()), nbf: None, aud: aud.map(|a| Audience::One(a.into())) }
    }

    #[test]
    fn round_trip_and_failures() {
        let a = AuthConfig::new("s3cret", None);
        let tok = sign(b"s3cret", &claims(60, None));
        assert_eq!(a.verify_bearer(Some(&format!("Bearer {tok}"))).unwrap().sub.as_deref(), Some("t"));
        assert_eq!(a.verify_bearer(None), Err(AuthError::Missing));
        assert_eq!(a.verify_bearer(Some("Basic abc")).unwrap_err().code(), "invalid_token");
        assert_eq!(a.verify("a.b").unwrap_err().code(), "invalid_token");
        assert_eq!(a.verify(&sign(b"other", &claims(60, None))), Err(AuthError::BadSignature));
        assert_eq!(a.verify(&sign(b"s3cret", &claims(-3600, None))), Err(AuthError::Expired));
        // Tampered payload with the original signature.
        let mut parts: Vec<String> = tok.split('.').map(String::from).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin","exp":99999999999}"#);
        assert_eq!(a.verify(&parts.join(".")), Err(AuthError::BadSignature));
    }

    #[test]
    fn alg_none_is_rejected() {
        let a = AuthConfig::new("s3cret", None);
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let p = URL_SAFE_NO_PAD.encode(br#"{"exp":99999999999}"#);
        assert_eq!(a.verify(&format!("{h}.{p}.")).unwrap_err().code(), "invalid_token");
    }

    #[test]
    fn audience() {
        let a = AuthConfig::new("k", Some("heyvm".into()));
        assert!(a.verify(&sign(b"k", &claims(60, Some("heyvm")))).is_ok());
        assert_eq!(a.verify(&sign(b"k", &claims(60, Some("other")))), Err(AuthError::WrongAudience));
        assert_eq!(a.verify(&sign(b"k", &claims(60, None))), Err(AuthError::WrongAudience));
        let mut c = claims(60, None);
        c.aud = Some(Audience::Many(vec!["x".into(), "heyvm".into()]));
        assert!(a.verify(&sign(b"k", &c)).is_ok());
    }
}

#[cfg(test)]
mod scope_tests {
    use super::*;

    fn claims(sub: &str) -> Claims {
        Claims { sub: Some(sub.into()), exp: 0, iat: None, nbf: None, aud: None }
    }

    #[test]
    fn stream_tokens_open_only_their_own_stream() {
        let c = claims("shell-stream:sb-1a2b3c4d");
        assert!(scope_allows(&c, "/sandboxes/sb-1a2b3c4d/shell-stream"));
        assert!(scope_allows(&c, "/deployed-sandboxes/sb-1a2b3c4d/shell-stream"));
        assert!(!scope_allows(&c, "/sandboxes/sb-00000000/shell-stream"));
        assert!(!scope_allows(&c, "/sandboxes"));
        assert!(!scope_allows(&c, "/sandboxes/sb-1a2b3c4d/execute"));
        assert!(scope_allows(&claims("someone"), "/sandboxes"));
    }

    #[test]
    fn query_tokens_only_on_stream_paths() {
        let uri = |s: &str| s.parse::<axum::http::Uri>().unwrap();
        assert_eq!(query_token(&uri("/sandboxes/x/shell-stream?a=1&token=abc")), Some("abc"));
        assert_eq!(query_token(&uri("/sandboxes/x/shell-stream?token=")), None);
        assert_eq!(query_token(&uri("/sandboxes/x/shell-stream")), None);
        assert_eq!(query_token(&uri("/sandboxes?token=abc")), None);
    }
}

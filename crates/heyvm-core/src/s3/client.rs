//! A small S3 client over `reqwest`: the handful of calls S3-backed mounts
//! need (list, get, put, delete, conditional put), each signed with SigV4.
//! Object bodies are streamed from and to files, never held in memory.

pub use super::xml::Object;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};

use super::sign::{self, Credentials};
use super::xml;
use super::S3Error;
use crate::config;

/// Where the bucket is and who we are there, from `S3_*` / `AWS_*`.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `scheme://host[:port]`, no trailing slash.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub credentials: Credentials,
    /// Path-style (`endpoint/bucket/key`, S3-compatible servers) rather
    /// than virtual-hosted (`bucket.endpoint/key`, AWS).
    pub path_style: bool,
}

impl S3Config {
    /// `Ok(None)` unless `S3_ENABLED` is `true`/`1`; an error names what is
    /// missing when it is on.
    pub fn from_env() -> Result<Option<S3Config>, String> {
        let enabled = config::string(config::S3_ENABLED).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        if !enabled {
            return Ok(None);
        }
        let bucket = config::string(config::S3_BUCKET).ok_or("S3_ENABLED is set but S3_BUCKET is not")?;
        let region =
            config::string(config::AWS_REGION).or_else(|| config::string(config::AWS_DEFAULT_REGION)).unwrap_or_else(|| "us-east-1".into());
        let access_key = config::string(config::AWS_ACCESS_KEY_ID).ok_or("S3_ENABLED is set but AWS_ACCESS_KEY_ID is not")?;
        let secret_key = config::string(config::AWS_SECRET_ACCESS_KEY).ok_or("S3_ENABLED is set but AWS_SECRET_ACCESS_KEY is not")?;
        let session_token = config::string(config::AWS_SESSION_TOKEN);
        let (endpoint, path_style) = match config::string(config::AWS_ENDPOINT_URL) {
            Some(e) => (e.trim_end_matches('/').to_string(), true),
            None => (format!("https://s3.{region}.amazonaws.com"), false),
        };
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(format!("AWS_ENDPOINT_URL '{endpoint}' must start with http:// or https://"));
        }
        Ok(Some(S3Config { endpoint, bucket, region, credentials: Credentials { access_key, secret_key, session_token }, path_style }))
    }
}

/// A connection to the bucket.
#[derive(Clone)]
pub struct S3 {
    cfg: S3Config,
    http: reqwest::Client,
}

/// A request body: nothing, bytes, or a file streamed with its known hash.
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    File { file: tokio::fs::File, len: u64, sha256_hex: String },
}

impl S3 {
    pub fn new(cfg: S3Config) -> Result<S3, S3Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| S3Error::Unreachable(format!("cannot build an HTTP client: {e}")))?;
        Ok(S3 { cfg, http })
    }

    pub fn bucket(&self) -> &str {
        &self.cfg.bucket
    }

    fn url_and_path(&self, key: &str) -> (String, String, String) {
        let host_part = self.cfg.endpoint.split_once("://").map(|(_, h)| h).unwrap_or(&self.cfg.endpoint).to_string();
        let encoded_key = sign::uri_encode(key, true);
        if self.cfg.path_style {
            let path = format!("/{}/{}", sign::uri_encode(&self.cfg.bucket, false), encoded_key);
            (format!("{}{path}", self.cfg.endpoint), host_part, path)
        } else {
            let scheme = self.cfg.endpoint.split("://").next().unwrap_or("https");
            let host = format!("{}.{host_part}", self.cfg.bucket);
            let path = format!("/{encoded_key}");
            (format!("{scheme}://{host}{path}"), host, path)
        }
    }

    /// Sends one signed request. `headers` are extra headers (signed too).
    pub async fn send(
        &self,
        method: Method,
        key: &str,
        query: &[(String, String)],
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<reqwest::Response, S3Error> {
        let (url, host, path) = self.url_and_path(key);
        let payload_hash = match &body {
            Body::Empty => sign::hex_sha256(b""),
            Body::Bytes(b) => sign::hex_sha256(b),
            Body::File { sha256_hex, .. } => sha256_hex.clone(),
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let amz_date = sign::amz_date(now);
        let mut signed: Vec<(String, String)> =
            vec![("host".into(), host), ("x-amz-content-sha256".into(), payload_hash.clone()), ("x-amz-date".into(), amz_date.clone())];
        if let Some(t) = &self.cfg.credentials.session_token {
            signed.push(("x-amz-security-token".into(), t.clone()));
        }
        for (k, v) in headers {
            signed.push((k.to_ascii_lowercase(), v.clone()));
        }
        let req = sign::Request { method: method.as_str(), path: &path, query, headers: &signed, payload_sha256: &payload_hash };
        let auth = sign::authorization(&self.cfg.credentials, &self.cfg.region, &amz_date, &req);
        let mut map = HeaderMap::new();
        for (k, v) in signed.iter().filter(|(k, _)| k != "host") {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| S3Error::Protocol(format!("header {k}: {e}")))?;
            let value = HeaderValue::from_str(v).map_err(|e| S3Error::Protocol(format!("header {k}: {e}")))?;
            map.insert(name, value);
        }
        map.insert(reqwest::header::AUTHORIZATION, HeaderValue::from_str(&auth).map_err(|e| S3Error::Protocol(e.to_string()))?);
        let query_string = sign::canonical_query(query);
        let full = if query_string.is_empty() { url } else { format!("{url}?{query_string}") };
        let mut rb = self.http.request(method, full).headers(map);
        rb = match body {
            Body::Empty => rb,
            Body::Bytes(b) => rb.body(b),
            Body::File { file, len, .. } => {
                rb.header(reqwest::header::CONTENT_LENGTH, len).body(reqwest::Body::wrap_stream(file_stream(file, len)))
            }
        };
        rb.send().await.map_err(|e| S3Error::Unreachable(format!("{}: {e}", self.cfg.endpoint)))
    }

    /// Every object under `prefix` (which ends in `/`), following pages.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Object>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![("list-type".to_string(), "2".to_string()), ("prefix".to_string(), prefix.to_string())];
            if let Some(t) = &token {
                q.push(("continuation-token".into(), t.clone()));
            }
            let resp = self.send(Method::GET, "", &q, &[], Body::Empty).await?;
            let resp = expect_ok(resp, "list objects").await?;
            let text = resp.text().await.map_err(|e| S3Error::Unreachable(e.to_string()))?;
            let page = xml::parse_list(&text)?;
            out.extend(page.objects);
            match page.next_token {
                Some(t) if page.truncated => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        let resp = self.send(Method::DELETE, key, &[], &[], Body::Empty).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        expect_ok(resp, "delete object").await.map(|_| ())
    }
}

/// Fails with the S3 error code and message of a non-2xx answer.
pub async fn expect_ok(resp: reqwest::Response, what: &str) -> Result<reqwest::Response, S3Error> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let code = xml::tag(&text, "Code").unwrap_or_default();
    let message = xml::tag(&text, "Message").unwrap_or_default();
    Err(S3Error::Protocol(format!("{what}: HTTP {status} {code} {message}").trim().to_string()))
}

/// A file's first `len` bytes as a stream of chunks for a request body (a
/// file that grows meanwhile does not overrun its Content-Length).
fn file_stream(file: tokio::fs::File, len: u64) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold((file, len), |(mut f, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; (256 * 1024).min(left as usize)];
        match f.read(&mut buf).await {
            Ok(0) => Some((Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while it was sent")), (f, 0))),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), (f, left - n as u64)))
            }
            Err(e) => Some((Err(e), (f, 0))),
        }
    })
}

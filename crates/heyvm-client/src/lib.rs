//! A small blocking client for the heyvm HTTP API. It depends only on the
//! wire types, never on the engine, so tools embedding it stay light.

mod checkpoints;

use std::io::{Read, Write};
use std::time::Duration;

mod images;

use heyvm_types::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{message}")]
    Api { status: u16, code: String, message: String },
    /// The server could not be reached or spoke nonsense.
    #[error("cannot reach the heyvm API at {url}: {detail}")]
    Transport { url: String, detail: String },
}

impl ClientError {
    pub fn code(&self) -> &str {
        match self {
            ClientError::Api { code, .. } => code,
            ClientError::Transport { .. } => "unreachable",
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// Percent-encodes one path segment or query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes a file path, keeping its slashes.
fn encode_path(p: &str) -> String {
    p.split('/').map(encode).collect::<Vec<_>>().join("/")
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_connect(Some(Duration::from_secs(5))).build().into();
        Client { base: base.trim_end_matches('/').to_string(), token, agent }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn transport(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Transport { url: self.base.clone(), detail: e.to_string() }
    }

    fn finish<T: DeserializeOwned>(&self, resp: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<T> {
        let resp = resp.map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().with_config().limit(u64::MAX).read_to_vec().map_err(|e| self.transport(e))?;
        if status >= 400 {
            return Err(match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(e) => ClientError::Api { status, code: e.error, message: e.message },
                Err(_) => ClientError::Api {
                    status,
                    code: "http_error".into(),
                    message: format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()),
                },
            });
        }
        serde_json::from_slice(&body).map_err(|e| self.transport(format!("unexpected response: {e}")))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let mut req = self.agent.get(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(req.call())
    }

    fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let mut req = self.agent.delete(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(req.call())
    }

    fn send<T: DeserializeOwned>(&self, method: &str, path: &str, body: &impl Serialize) -> Result<T> {
        let url = self.url(path);
        let mut req = match method {
            "PATCH" => self.agent.patch(url),
            "PUT" => self.agent.put(url),
            _ => self.agent.post(url),
        };
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let bytes = serde_json::to_vec(body).map_err(|e| self.transport(e))?;
        self.finish(req.content_type("application/json").send(&bytes[..]))
    }

    /// Any GET route's JSON answer (benchmarks, status pages).
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        self.get(path)
    }

    pub fn health(&self) -> Result<Health> {
        self.get("/health")
    }

    pub fn list(&self, status: Option<&str>) -> Result<Vec<SandboxInfo>> {
        match status {
            Some(s) => self.get(&format!("/sandboxes?status={}", encode(s))),
            None => self.get("/sandboxes"),
        }
    }

    pub fn create(&self, req: &CreateSandboxRequest) -> Result<SandboxInfo> {
        self.send("POST", "/sandboxes", req)
    }

    pub fn get_sandbox(&self, id: &str) -> Result<SandboxInfo> {
        self.get(&format!("/sandboxes/{}", encode(id)))
    }

    pub fn update(&self, id: &str, req: &UpdateSandboxRequest) -> Result<SandboxInfo> {
        self.send("PATCH", &format!("/sandboxes/{}", encode(id)), req)
    }

    pub fn delete_sandbox(&self, id: &str) -> Result<serde_json::Value> {
        self.delete(&format!("/sandboxes/{}", encode(id)))
    }

    /// `action` is one of start, stop, restart, force-stop.
    pub fn action(&self, id: &str, action: &str) -> Result<SandboxInfo> {
        self.send("POST", &format!("/sandboxes/{}/{action}", encode(id)), &serde_json::json!({}))
    }

    /// `POST /sandboxes/:id/shell-session`: `{connection_url, sandbox_id}`,
    /// the WebSocket URL of an interactive shell.
    pub fn shell_session(&self, id: &str) -> Result<serde_json::Value> {
        self.send("POST", &format!("/sandboxes/{}/shell-session", encode(id)), &serde_json::json!({}))
    }

    pub fn execute(&self, id: &str, req: &ExecRequest) -> Result<ExecResponse> {
        self.send("POST", &format!("/sandboxes/{}/execute", encode(id)), req)
    }

    pub fn list_files(&self, id: &str, mount_path: &str, path: &str) -> Result<FileList> {
        self.get(&format!("/sandboxes/{}/files?mount_path={}&path={}", encode(id), encode(mount_path), encode(path)))
    }

    /// Streams `reader` as a multipart upload.
    pub fn upload(&self, id: &str, mount_path: &str, file_path: &str, reader: impl Read) -> Result<UploadResponse> {
        let boundary =
            format!("heyvm-{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
        let field = |name: &str, value: &str| format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n");
        let head = format!(
            "{}{}--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"upload\"\r\nContent-Type: application/octet-stream\r\n\r\n",
            field("mount_path", mount_path),
            field("file_path", file_path)
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let mut body = std::io::Cursor::new(head.into_bytes()).chain(reader).chain(std::io::Cursor::new(tail.into_bytes()));
        let mut req = self.agent.post(self.url(&format!("/sandboxes/{}/files", encode(id))));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let req = req.content_type(format!("multipart/form-data; boundary={boundary}"));
        self.finish(req.send(ureq::SendBody::from_reader(&mut body)))
    }

    /// Streams a file into `out`; returns the byte count.
    pub fn download(&self, id: &str, mount_path: &str, path: &str, out: &mut impl Write) -> Result<u64> {
        self.get_into(&format!("/sandboxes/{}/files/{}?mount_path={}", encode(id), encode_path(path), encode(mount_path)), out)
    }

    /// `GET path` with the body streamed into `out` (no size limit, never
    /// held in memory); returns the byte count. An error status is read as
    /// the API's error body.
    pub(crate) fn get_into(&self, path: &str, out: &mut impl Write) -> Result<u64> {
        let mut req = self.agent.get(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = req.call().map_err(|e| self.transport(e))?;
        if resp.status().as_u16() >= 400 {
            return self.finish(Ok(resp));
        }
        let mut r = resp.into_body().into_with_config().limit(u64::MAX).reader();
        std::io::copy(&mut r, out).map_err(|e| self.transport(e))
    }

    /// Up to `limit` bytes from `offset` of a file; `path` absolute (anywhere
    /// in the sandbox) or relative to /workspace. Returns the file's size
    /// and the bytes.
    pub fn read_range(&self, id: &str, path: &str, offset: u64, limit: u64) -> Result<(u64, Vec<u8>)> {
        // The whole path as one encoded segment, so a leading '/' survives.
        let url = self.url(&format!("/sandboxes/{}/files/{}?offset={offset}&limit={limit}", encode(id), encode(path)));
        let mut req = self.agent.get(url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = req.call().map_err(|e| self.transport(e))?;
        if resp.status().as_u16() >= 400 {
            return self.finish(Ok(resp));
        }
        let total = resp.headers().get("x-file-size").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
        let body = resp.into_body().into_with_config().limit(limit.saturating_add(1)).read_to_vec().map_err(|e| self.transport(e))?;
        Ok((total, body))
    }

    pub fn delete_file(&self, id: &str, mount_path: &str, path: &str, recursive: bool) -> Result<DeleteFileResponse> {
        self.delete(&format!(
            "/sandboxes/{}/files/{}?mount_path={}&recursive={recursive}",
            encode(id),
            encode_path(path),
            encode(mount_path)
        ))
    }

    pub fn logs(&self, id: &str, query: &[(&str, String)]) -> Result<LogsResponse> {
        let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        self.get(&format!("/sandboxes/{}/logs?{}", encode(id), q.join("&")))
    }

    /// Opens a server-sent event stream and calls `on_event(name, data)` for
    /// each event until the stream ends or `on_event` returns false.
    fn sse(
        &self,
        resp: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        mut on_event: impl FnMut(&str, &serde_json::Value) -> bool,
    ) -> Result<()> {
        let resp = resp.map_err(|e| self.transport(e))?;
        if resp.status().as_u16() >= 400 {
            return self.finish::<serde_json::Value>(Ok(resp)).map(|_| ());
        }
        let reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
        let (mut name, mut data) = (String::new(), String::new());
        for line in std::io::BufRead::lines(std::io::BufReader::new(reader)) {
            let line = line.map_err(|e| self.transport(e))?;
            if line.is_empty() {
                if !data.is_empty() {
                    let v = serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data.clone()));
                    if !on_event(if name.is_empty() { "message" } else { &name }, &v) {
                        return Ok(());
                    }
                }
                name.clear();
                data.clear();
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        Ok(())
    }

    /// Streamed exec (`POST /sandboxes/:id/exec/stream`).
    pub fn exec_stream(&self, id: &str, req: &ExecRequest, on_event: impl FnMut(&str, &serde_json::Value) -> bool) -> Result<()> {
        let mut r = self.agent.post(self.url(&format!("/sandboxes/{}/exec/stream", encode(id))));
        if let Some(t) = &self.token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        let bytes = serde_json::to_vec(req).map_err(|e| self.transport(e))?;
        self.sse(r.content_type("application/json").send(&bytes[..]), on_event)
    }

    /// Follows the sandbox log (`GET /sandboxes/:id/logs/stream`).
    pub fn follow_logs(&self, id: &str, query: &[(&str, String)], on_event: impl FnMut(&str, &serde_json::Value) -> bool) -> Result<()> {
        let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        let mut r = self.agent.get(self.url(&format!("/sandboxes/{}/logs/stream?{}", encode(id), q.join("&"))));
        if let Some(t) = &self.token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        self.sse(r.call(), on_event)
    }

    pub fn mounts(&self, id: &str) -> Result<Vec<MountSpec>> {
        self.get(&format!("/sandboxes/{}/mounts", encode(id)))
    }

    pub fn add_mount(&self, id: &str, m: &MountSpec) -> Result<serde_json::Value> {
        self.send("POST", &format!("/sandboxes/{}/mounts", encode(id)), m)
    }

    pub fn remove_mount(&self, id: &str, sandbox_path: &str) -> Result<serde_json::Value> {
        self.delete(&format!("/sandboxes/{}/mounts/{}", encode(id), encode_path(sandbox_path.trim_start_matches('/'))))
    }
}

/// API keys.
impl Client {
    pub fn create_api_key(&self, req: &CreateApiKeyRequest) -> Result<ApiKeyCreated> {
        self.send("POST", "/api-keys", req)
    }

    pub fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>> {
        self.get("/api-keys")
    }

    pub fn revoke_api_key(&self, id: &str) -> Result<serde_json::Value> {
        self.delete(&format!("/api-keys/{}", encode(id)))
    }
}

/// Proxy endpoints and readiness waits.
impl Client {
    /// `POST /sandboxes/:id/proxy`: expose `port` of the sandbox.
    pub fn create_proxy(&self, id: &str, port: u16, is_public: bool) -> Result<ProxyEndpoint> {
        self.send("POST", &format!("/sandboxes/{}/proxy", encode(id)), &CreateProxyRequest { port, is_public })
    }

    pub fn list_proxies(&self, id: &str) -> Result<Vec<ProxyEndpoint>> {
        self.get::<ProxyList>(&format!("/sandboxes/{}/proxy", encode(id))).map(|l| l.proxies)
    }

    pub fn delete_proxy(&self, id: &str, subdomain: &str) -> Result<ProxyEndpoint> {
        self.delete(&format!("/sandboxes/{}/proxy?subdomain={}", encode(id), encode(subdomain)))
    }

    /// `POST /sandboxes/:id/wait-for`; blocks server-side up to the timeout.
    pub fn wait_for(&self, id: &str, req: &WaitForRequest) -> Result<WaitForResponse> {
        self.send("POST", &format!("/sandboxes/{}/wait-for", encode(id)), req)
    }
}

/// One GET of `url` (redirects not followed), sending `token` as a Bearer
/// token when given; the HTTP status, or why there was none.
pub fn probe_url(url: &str, token: Option<&str>, timeout: Duration) -> std::result::Result<u16, String> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).timeout_global(Some(timeout)).build().into();
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    req.call().map(|r| r.status().as_u16()).map_err(|e| e.to_string())
}

/// Deploy support: archives and probing exposed URLs.
impl Client {
    /// `POST /archives`: streams a tar.gz file; returns its `ar-…` id.
    pub fn upload_archive(&self, path: &std::path::Path) -> Result<ArchiveInfo> {
        let file = std::fs::File::open(path).map_err(|e| self.transport(format!("{}: {e}", path.display())))?;
        let mut r = self.agent.post(self.url("/archives"));
        if let Some(t) = &self.token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        let mut reader = std::io::BufReader::new(file);
        self.finish(r.content_type("application/gzip").send(ureq::SendBody::from_reader(&mut reader)))
    }

    /// GETs an absolute URL (an exposed sandbox port) with this client's
    /// token; returns the HTTP status. Transport errors are errors.
    pub fn probe(&self, url: &str, timeout: Duration) -> Result<u16> {
        let mut r = self.agent.get(url).config().timeout_global(Some(timeout)).build();
        if let Some(t) = &self.token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        let resp = r.call().map_err(|e| ClientError::Transport { url: url.to_string(), detail: e.to_string() })?;
        Ok(resp.status().as_u16())
    }
}

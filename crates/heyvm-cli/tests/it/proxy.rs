//! Proxy endpoints (`bind`, `/sandboxes/:id/proxy`) and `wait-for`:
//! loopback-port mode, Host-header mode, streaming, WebSockets, private
//! endpoints, persistence across daemon restarts, cleanup on delete.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::Daemon;

/// A tiny stdlib HTTP server: `/health`, `/stream` (sends `first`, then
/// `second` only once /tmp/go exists, proving bytes flow before the
/// response ends), `/auth` (echoes the Authorization it received), `/ws`
/// (WebSocket echo), anything else `hello from sandbox <path>`.
const SERVER_PY: &str = r#"
import base64, hashlib, os, struct, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def body(self, code, data):
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path == "/ws":
            return self.ws()
        if self.path == "/stream":
            return self.stream()
        if self.path == "/auth":
            return self.body(200, (self.headers.get("Authorization") or "none").encode())
        if self.path == "/health":
            return self.body(200, b"ok")
        self.body(200, b"hello from sandbox " + self.path.encode())
    def stream(self):
        self.close_connection = True
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"first\n")
        self.wfile.flush()
        for _ in range(1200):
            if os.path.exists("/tmp/go"):
                break
            time.sleep(0.05)
        self.wfile.write(b"second\n")
        self.wfile.flush()
    def ws(self):
        self.close_connection = True
        accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            h = self.rfile.read(2)
            if len(h) < 2:
                return
            op, n = h[0] & 15, h[1] & 127
            if n == 126:
                n = struct.unpack(">H", self.rfile.read(2))[0]
            mask = self.rfile.read(4) if h[1] & 128 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
            if op == 8:
                self.wfile.write(b"\x88\x00")
                return
            reply = b"echo:" + data
            self.wfile.write(bytes([0x81, len(reply)]) + reply)
            self.wfile.flush()
# A listen backlog for the test's 16 concurrent connections (the default
# is 5: on a slow guest, a micro VM's quarter core under TCG, the kernel
# dropped the excess SYNs and the agent's connect timed out).
ThreadingHTTPServer.request_queue_size = 128
ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"#;

fn create_server_sandbox(d: &Daemon, name: &str) -> String {
    let sb = d.create(json!({
        "name": name,
        "size_class": "micro",
        "env_vars": {"SERVER_PY": SERVER_PY},
        "start_command": "exec python3 -c \"$SERVER_PY\" 8080",
    }));
    sb["id"].as_str().unwrap().to_string()
}

/// One request on a fresh connection (`Connection: close`), read to EOF.
fn http_get(addr: &str, host: &str, path: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("not HTTP: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn json_body(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// `http://127.0.0.1:41234` → `127.0.0.1:41234`.
fn addr_of(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches('/').to_string()
}

/// Reads until `needle` has arrived (or EOF).
fn read_until(s: &mut TcpStream, acc: &mut Vec<u8>, needle: &[u8]) {
    let mut chunk = [0u8; 4096];
    while !acc.windows(needle.len()).any(|w| w == needle) {
        let n = s.read(&mut chunk).expect("read");
        if n == 0 {
            break;
        }
        acc.extend_from_slice(&chunk[..n]);
    }
}

/// A streamed response: the first line arrives while the sandbox program
/// is still waiting for /tmp/go, then the rest.
fn check_streaming(d: &Daemon, id: &str, addr: &str, host: &str) {
    d.sh(id, "rm -f /tmp/go");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("GET /stream HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"first\n");
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("first\n"), "{text}");
    assert!(!text.contains("second"));
    d.sh(id, "touch /tmp/go");
    s.read_to_end(&mut got).unwrap();
    assert!(String::from_utf8_lossy(&got).ends_with("first\nsecond\n"));
}

/// A WebSocket handshake and two echoed messages.
fn check_websocket(addr: &str, host: &str) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"\r\n\r\n");
    let head = String::from_utf8_lossy(&got).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // RFC 6455's own example key and accept value.
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    let mut leftover = got.split_off(head.find("\r\n\r\n").unwrap() + 4);
    for msg in ["hello", "second message"] {
        let mask = [7u8, 1, 9, 3];
        let mut frame = vec![0x81, 0x80 | msg.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(msg.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        s.write_all(&frame).unwrap();
        let want = format!("echo:{msg}");
        let mut reply = std::mem::take(&mut leftover);
        while reply.len() < 2 + want.len() {
            let mut chunk = [0u8; 256];
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "WebSocket closed early");
            reply.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(reply[0], 0x81);
        assert_eq!(reply[1] as usize, want.len());
        assert_eq!(&reply[2..2 + want.len()], want.as_bytes());
    }
    s.write_all(&[0x88, 0x80, 0, 0, 0, 0]).unwrap();
}

fn wait_ready(d: &Daemon, id: &str) {
    let v = d.heyvm_json(&["wait-for", id, "8080", "--path", "/health", "--timeout", "60s"]);
    assert_eq!(v, json!({"ready": true, "port": 8080}));
}

fn p50_p99(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

#[test]
fn local_mode_http_streaming_websocket_stop_start_and_delete() {
    let Some(d) = Daemon::start() else { return };
    let id = create_server_sandbox(&d, "px-local");
    wait_ready(&d, &id);

    let b = d.heyvm_json(&["bind", &id, "8080"]);
    let sub = b["subdomain"].as_str().unwrap().to_string();
    assert!(sub.len() == 6 && sub.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()), "{b}");
    assert_eq!((b["port"].clone(), b["is_public"].clone(), b["hostname"].clone()), (json!(8080), json!(true), json!("localhost")));
    let url = b["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{b}");
    let addr = addr_of(&url);

    assert_eq!(http_get(&addr, "x", "/some/page", &[]), (200, "hello from sandbox /some/page".to_string()));
    check_streaming(&d, &id, &addr, "x");
    check_websocket(&addr, "x");

    // Info, list and the CLI agree.
    let info = d.heyvm_json(&["get", &id]);
    assert_eq!(info["urls"], json!([{"subdomain": sub, "hostname": "localhost", "url": url, "port": 8080, "is_public": true}]));
    let (s, list) = d.get(&format!("/sandboxes/{id}/proxy"));
    assert_eq!((s, list["proxies"][0]["sandbox_id"].as_str()), (200, Some(id.as_str())));

    // Concurrent connections are independent.
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || (0..5).map(|j| http_get(&addr, "x", &format!("/c{i}-{j}"), &[])).collect::<Vec<_>>())
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        for (j, r) in h.join().unwrap().into_iter().enumerate() {
            assert_eq!(r, (200, format!("hello from sandbox /c{i}-{j}")));
        }
    }

    // Overhead: small GETs through the proxy, each on a new connection.
    let mut lat = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        assert_eq!(http_get(&addr, "x", "/health", &[]).0, 200);
        lat.push(t.elapsed());
    }
    let (p50, p99) = p50_p99(lat);
    eprintln!("MEASURE proxy local-port GET /health (new connection each): p50 {p50:?}, p99 {p99:?}");

    // A private endpoint on a server without JWT_SECRET refuses everyone.
    let p = d.heyvm_json(&["bind", &id, "8080", "--private"]);
    assert_eq!(p["is_public"], json!(false));
    let (s, body) = http_get(&addr_of(p["url"].as_str().unwrap()), "x", "/", &[("Authorization", "Bearer whatever")]);
    assert_eq!((s, json_body(&body)["error"].clone()), (401, json!("auth_not_configured")));

    // Stopped: the listener stays and answers 502; started again: it works.
    d.heyvm_json(&["stop", &id]);
    let (s, body) = http_get(&addr, "x", "/", &[]);
    assert_eq!(s, 502, "{body}");
    d.heyvm_json(&["start", &id]);
    wait_ready(&d, &id);
    assert_eq!(http_get(&addr, "x", "/again", &[]).0, 200);

    // Nothing listening on the sandbox port: 502 with a reason.
    let other = d.heyvm_json(&["bind", &id, "9"]);
    let (s, body) = http_get(&addr_of(other["url"].as_str().unwrap()), "x", "/", &[]);
    assert_eq!((s, json_body(&body)["error"].clone()), (502, json!("port_unreachable")));

    // unbind closes the port.
    let u = d.heyvm_json(&["unbind", &id, other["subdomain"].as_str().unwrap()]);
    assert_eq!(u["removed"], json!(true));
    let other_addr = addr_of(other["url"].as_str().unwrap());
    d.wait_until("unbound port to close", Duration::from_secs(10), || TcpStream::connect(&other_addr).is_err());
    assert_eq!(d.get(&format!("/sandboxes/{id}/proxy")).1["proxies"].as_array().unwrap().len(), 2);

    // Deleting the sandbox removes its endpoints and closes their ports.
    let out = d.heyvm(&["rm", "-y", &id]);
    assert!(out.status.success());
    d.wait_until("proxy port to close", Duration::from_secs(10), || TcpStream::connect(&addr).is_err());
    let (s, v) = d.get(&format!("/sandboxes/{id}/proxy"));
    assert_eq!((s, v["error"].clone()), (404, json!("sandbox_not_found")));
}

/// Mints an HS256 token with the CLI (same secret as the daemon).
fn mint(d: &Daemon, secret: &str) -> String {
    let out = d.cmd().args(["token", "create", "--sub", "proxy-test", "--ttl", "1h"]).env("JWT_SECRET", secret).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn host_header_mode_private_endpoints_and_restart() {
    let secret = "proxy-test-secret";
    let Some(mut d) = Daemon::start_with(&[("API_HOSTNAME", "test.local"), ("JWT_SECRET", secret)]) else { return };
    let token = mint(&d, secret);
    let api = format!("127.0.0.1:{}", d.port);
    let cli = |args: &[&str]| -> Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let out = d.cmd().args(&a).env("HEYVM_TOKEN", &token).output().unwrap();
        assert!(out.status.success(), "heyvm {a:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let sb = cli(&[
        "create",
        "--name",
        "px-host",
        "--size-class",
        "micro",
        "--env",
        &format!("SERVER_PY={SERVER_PY}"),
        "--start-command",
        "exec python3 -c \"$SERVER_PY\" 8080",
    ]);
    let id = sb["id"].as_str().unwrap().to_string();
    let _cleanup = DeleteOnDrop { daemon_url: d.url.clone(), id: id.clone(), token: token.clone() };
    assert_eq!(cli(&["wait-for", &id, "8080", "--path", "/health"]), json!({"ready": true, "port": 8080}));

    let public = cli(&["bind", &id, "8080"]);
    let sub = public["subdomain"].as_str().unwrap().to_string();
    let host = format!("{sub}.test.local");
    assert_eq!(public["hostname"], json!(host));
    assert_eq!(public["url"], json!(format!("http://{host}:{}", d.port)));

    // Proxied requests skip API auth (the endpoint is public); the API
    // itself, on the same listener, still wants a token.
    assert_eq!(http_get(&api, &format!("{host}:{}", d.port), "/p", &[]), (200, "hello from sandbox /p".to_string()));
    assert_eq!(http_get(&api, "127.0.0.1", "/sandboxes", &[]).0, 401);
    assert_eq!(http_get(&api, "127.0.0.1", "/health", &[]).0, 200);
    let (s, body) = http_get(&api, "nosuch.test.local", "/", &[]);
    assert_eq!((s, json_body(&body)["error"].clone()), (404, json!("endpoint_not_found")));
    let mut lat = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        assert_eq!(http_get(&api, &host, "/health", &[]).0, 200);
        lat.push(t.elapsed());
    }
    let (p50, p99) = p50_p99(lat);
    eprintln!("MEASURE proxy Host-header GET /health (new connection each): p50 {p50:?}, p99 {p99:?}");
    check_streaming_with_token(&id, &api, &host, &token);
    check_websocket(&api, &host);

    // Private: no token, a bad token, a good token (which the sandbox never sees).
    let private = cli(&["bind", &id, "8080", "--private"]);
    let phost = private["hostname"].as_str().unwrap().to_string();
    let (s, body) = http_get(&api, &phost, "/auth", &[]);
    assert_eq!((s, json_body(&body)["error"].clone()), (401, json!("missing_token")));
    let forged = mint(&d, "some-other-secret");
    let (s, body) = http_get(&api, &phost, "/auth", &[("Authorization", &format!("Bearer {forged}"))]);
    assert_eq!((s, json_body(&body)["error"].clone()), (401, json!("invalid_signature")));
    let bearer = format!("Bearer {token}");
    assert_eq!(http_get(&api, &phost, "/auth", &[("Authorization", &bearer)]), (200, "none".to_string()));
    check_websocket_private(&api, &phost, &bearer);

    // The loopback port of a private endpoint checks tokens too.
    let (_, list) = http_get(&api, "127.0.0.1", &format!("/sandboxes/{id}/proxy"), &[("Authorization", &bearer)]);
    let list = json_body(&list);
    let entry = list["proxies"].as_array().unwrap().iter().find(|e| e["subdomain"] == private["subdomain"]).unwrap().clone();
    let local = addr_of(entry["local_url"].as_str().unwrap());
    assert_eq!(http_get(&local, "x", "/auth", &[]).0, 401);
    assert_eq!(http_get(&local, "x", "/auth", &[("Authorization", &bearer)]), (200, "none".to_string()));

    // A restarted daemon serves the same endpoints, on the same ports.
    let before = api_get(&api, &format!("/sandboxes/{id}/proxy"), &token);
    d.restart();
    let api = format!("127.0.0.1:{}", d.port);
    assert_eq!(api_get(&api, &format!("/sandboxes/{id}/proxy"), &token), before);
    assert_eq!(http_get(&api, &host, "/after-restart", &[]), (200, "hello from sandbox /after-restart".to_string()));
    assert_eq!(http_get(&api, &phost, "/auth", &[("Authorization", &bearer)]).0, 200);
    assert_eq!(http_get(&local, "x", "/auth", &[("Authorization", &bearer)]).0, 200);
    let info = api_get(&api, &format!("/sandboxes/{id}"), &token);
    assert_eq!(info["urls"].as_array().unwrap().len(), 2);

    // Deleting removes the endpoints (the fixture cannot: it has no token).
    let out = d.cmd().args(["rm", "-y", &id]).env("HEYVM_TOKEN", &token).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (s, body) = http_get(&api, &host, "/", &[]);
    assert_eq!((s, json_body(&body)["error"].clone()), (404, json!("endpoint_not_found")));
    d.wait_until("private loopback port to close", Duration::from_secs(10), || TcpStream::connect(&local).is_err());
}

/// The fixture cleans up without a token, which this daemon refuses.
struct DeleteOnDrop {
    daemon_url: String,
    id: String,
    token: String,
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let addr = addr_of(&self.daemon_url);
        if let Ok(mut s) = TcpStream::connect(&addr) {
            let req = format!(
                "DELETE /sandboxes/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                self.id, self.token
            );
            let _ = s.write_all(req.as_bytes());
            let _ = s.read_to_end(&mut Vec::new());
        }
    }
}

fn api_get(api: &str, path: &str, token: &str) -> Value {
    let (s, body) = http_get(api, "127.0.0.1", path, &[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(s, 200, "{body}");
    json_body(&body)
}

/// [`check_streaming`] on an API that wants a token.
fn check_streaming_with_token(id: &str, api: &str, host: &str, token: &str) {
    let exec = |script: &str| {
        let body = json!({"command": "/bin/sh", "args": ["-c", script]}).to_string();
        let mut s = TcpStream::connect(api).unwrap();
        let req = format!(
            "POST /sandboxes/{id}/execute HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    };
    exec("rm -f /tmp/go");
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("GET /stream HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"first\n");
    assert!(!String::from_utf8_lossy(&got).contains("second"));
    exec("touch /tmp/go");
    s.read_to_end(&mut got).unwrap();
    assert!(String::from_utf8_lossy(&got).ends_with("first\nsecond\n"));
}

/// A WebSocket upgrade through a private endpoint keeps its Connection
/// header (only the token is stripped).
fn check_websocket_private(api: &str, host: &str, bearer: &str) {
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nAuthorization: {bearer}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, b"\r\n\r\n");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
}

#[test]
fn wait_for_ports_urls_timeouts_and_bad_input() {
    let Some(d) = Daemon::start() else { return };
    let sb = d.create(json!({"name": "px-wait", "size_class": "micro", "start_command": "exec python3 -m http.server 8080"}));
    let id = sb["id"].as_str().unwrap().to_string();
    assert_eq!(d.heyvm_json(&["wait-for", &id, "8080", "--timeout", "60s"]), json!({"ready": true, "port": 8080}));
    assert_eq!(d.heyvm_json(&["wait-for", &id, "8080", "--path", "/", "--timeout", "10s"]), json!({"ready": true, "port": 8080}));

    // Timeouts exit 1 with ready:false.
    let out = d.heyvm(&["wait-for", &id, "9", "--timeout", "1s", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["ready"].clone(), v["port"].clone()), (json!(false), json!(9)));
    assert!(v["error"].as_str().unwrap().contains("port 9"), "{v}");
    let out = d.heyvm(&["wait-for", &id, "8080", "--path", "/missing", "--timeout", "1s", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("404"), "{v}");

    // --url from the host, through a bound endpoint.
    let b = d.heyvm_json(&["bind", &id, "8080"]);
    let url = format!("{}/", b["url"].as_str().unwrap());
    assert_eq!(d.heyvm_json(&["wait-for", "--url", &url, "--timeout", "20s"]), json!({"ready": true, "url": url}));
    let out = d.heyvm(&["wait-for", "--url", "http://127.0.0.1:1/", "--timeout", "1s", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["ready"].clone(), v["url"].clone()), (json!(false), json!("http://127.0.0.1:1/")));

    // Bad input: JSON errors with stable codes.
    let (s, v) = d.post(&format!("/sandboxes/{id}/proxy"), &json!({"port": 0}));
    assert_eq!((s, v["error"].clone()), (400, json!("invalid_request")));
    let (s, _) = d.post(&format!("/sandboxes/{id}/proxy"), &json!({"port": 70000}));
    assert_eq!(s, 400);
    let (s, v) = d.post("/sandboxes/nosuch/proxy", &json!({"port": 80}));
    assert_eq!((s, v["error"].clone()), (404, json!("sandbox_not_found")));
    let (s, v) = d.delete(&format!("/sandboxes/{id}/proxy?subdomain=zzzzzz"));
    assert_eq!((s, v["error"].clone()), (404, json!("endpoint_not_found")));
    let (s, v) = d.delete(&format!("/sandboxes/{id}/proxy"));
    assert_eq!((s, v["error"].clone()), (400, json!("invalid_query")));
    let (s, v) = d.post(&format!("/sandboxes/{id}/wait-for"), &json!({"port": 8080, "path": "no-slash"}));
    assert_eq!((s, v["error"].clone()), (400, json!("invalid_request")));
    let (s, v) = d.post(&format!("/sandboxes/{id}/wait-for"), &json!({"port": 8080, "timeout_secs": -1}));
    assert_eq!((s, v["error"].clone()), (400, json!("invalid_request")));
    let out = d.heyvm(&["wait-for", &id, "--format", "json"]);
    assert!(!out.status.success());

    // A stopped sandbox is not waited on.
    d.heyvm_json(&["stop", &id]);
    let out = d.heyvm(&["wait-for", &id, "8080", "--timeout", "30s", "--format", "json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_state"), "{}", String::from_utf8_lossy(&out.stderr));
}

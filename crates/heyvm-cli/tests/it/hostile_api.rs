//! Attacks on the daemon's API from outside a sandbox: other local users,
//! web pages (DNS rebinding, cross-site requests), idle connection floods,
//! blocking file types, mounts the caller could not read itself.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::Daemon;

/// One raw HTTP/1.1 request; returns (status, body).
pub fn raw(port: u16, request: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::String(body.into())))
}

#[test]
fn foreign_host_and_origin_are_refused() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "web", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    let p = d.port;
    // DNS rebinding: the attacker's name resolving to 127.0.0.1.
    let (s, v) = raw(p, "GET /sandboxes HTTP/1.1\r\nHost: evil.example:34099\r\nConnection: close\r\n\r\n");
    assert_eq!((s, v["error"].as_str()), (421, Some("misdirected_request")), "{v}");
    // A cross-site form post from a web page.
    let req = format!("POST /sandboxes/{id}/stop HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nOrigin: https://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let (s, v) = raw(p, &req);
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden_origin")), "{v}");
    assert_eq!(d.get(&format!("/sandboxes/{id}")).1["status"], "running", "the cross-site stop went through");
    // The API's own origin and loopback names keep working.
    let req = format!("GET /sandboxes HTTP/1.1\r\nHost: localhost:{p}\r\nOrigin: http://localhost:{p}\r\nConnection: close\r\n\r\n");
    assert_eq!(raw(p, &req).0, 200);
    let out = Command::new("curl").args(["-sf", &format!("{}/sandboxes/{id}", d.url)]).output().unwrap();
    assert!(out.status.success(), "plain curl from the daemon's user must still work");
}

/// Runs curl as `nobody`; returns (http status, body).
fn curl_as_nobody(args: &[&str]) -> (u16, Value) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "curl", "-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("setpriv");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::String(body.into())))
}

#[test]
fn another_local_user_is_refused() {
    let Some(d) = Daemon::start() else { return };
    let (s, v) = curl_as_nobody(&[&format!("{}/sandboxes", d.url)]);
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden_user")), "nobody reached the API: {v}");
    let body = json!({"name": "steal", "mounts": [{"host_path": "/", "sandbox_path": "/host"}]}).to_string();
    let (s, _) = curl_as_nobody(&["-H", "content-type: application/json", "-d", &body, &format!("{}/sandboxes", d.url)]);
    assert_eq!(s, 403);
    assert_eq!(d.get("/sandboxes").1.as_array().map(Vec::len), Some(0), "nobody created a sandbox");
}

#[test]
fn allowed_users_mount_only_what_they_own() {
    let Some(d) = Daemon::start_with(&[("HEYVM_ALLOW_USERS", "nobody")]) else { return };
    let (s, _) = curl_as_nobody(&[&format!("{}/sandboxes", d.url)]);
    assert_eq!(s, 200, "HEYVM_ALLOW_USERS=nobody admits nobody");
    for host in ["/", "/etc", "/root"] {
        let body = json!({"name": "steal", "mounts": [{"host_path": host, "sandbox_path": "/host", "read_only": true}]}).to_string();
        let (s, v) = curl_as_nobody(&["-H", "content-type: application/json", "-d", &body, &format!("{}/sandboxes", d.url)]);
        assert_eq!((s, v["error"].as_str()), (403, Some("mount_not_allowed")), "nobody mounted {host}: {v}");
    }
    // A directory nobody owns is fine.
    let own = tempfile::tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(own.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(own.path(), Some(65534), Some(65534)).unwrap();
    let body = json!({"mounts": [{"host_path": own.path(), "sandbox_path": "/data"}]}).to_string();
    let (s, v) = curl_as_nobody(&["-H", "content-type: application/json", "-d", &body, &format!("{}/sandboxes", d.url)]);
    assert_eq!(s, 201, "{v}");
}

/// A non-loopback address of this machine, if it has one.
fn outside_address() -> Option<String> {
    let out = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&out.stdout).split_whitespace().find(|a| a.parse::<std::net::Ipv4Addr>().is_ok()).map(str::to_string)
}

#[test]
fn token_callers_mount_only_under_mount_roots() {
    let Some(addr) = outside_address() else { return eprintln!("SKIP: no non-loopback IPv4 address") };
    let allowed = tempfile::tempdir_in("/tmp").unwrap();
    let roots = allowed.path().display().to_string();
    let Some(d) = Daemon::start_with(&[("JWT_SECRET", "s3cret"), ("HEYVM_MOUNT_ROOTS", &roots)]) else { return };
    let tok = d.cmd().args(["token", "create", "--sub", "ci", "--ttl", "1h"]).env("JWT_SECRET", "s3cret").output().unwrap();
    let tok = String::from_utf8_lossy(&tok.stdout).trim().to_string();
    let url = format!("http://{addr}:{}/sandboxes", d.port);
    let post = |host: &str| -> (u16, Value) {
        let body = json!({"mounts": [{"host_path": host, "sandbox_path": "/host", "read_only": true}]}).to_string();
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-H", &format!("authorization: Bearer {tok}"), "-H", "content-type: application/json"])
            .args(["-d", &body, &url])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (b, c) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (c.trim().parse().unwrap_or(0), serde_json::from_str(b).unwrap_or(Value::Null))
    };
    let (s, v) = post("/");
    assert_eq!((s, v["error"].as_str()), (403, Some("mount_not_allowed")), "a token holder mounted the server's /: {v}");
    let (s, v) = post(&roots);
    assert_eq!(s, 201, "{v}");
}

#[test]
fn fifo_download_is_refused_and_the_daemon_stays_responsive() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "fifo", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    d.sh(&id, "mkfifo /workspace/p1 /workspace/p2 && mknod /workspace/zero c 1 5 2>/dev/null; true");
    let handles: Vec<_> = ["p1", "p2", "p1", "p2"]
        .into_iter()
        .map(|f| {
            let (url, id) = (d.url.clone(), id.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent =
                    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(20))).build().into();
                let r = agent.get(format!("{url}/sandboxes/{id}/files/{f}")).call().expect("the download hung");
                let status = r.status().as_u16();
                let v: Value = serde_json::from_slice(&r.into_body().read_to_vec().unwrap()).unwrap_or(Value::Null);
                (status, v)
            })
        })
        .collect();
    let t = Instant::now();
    assert_eq!(d.get("/health").0, 200);
    assert!(t.elapsed() < Duration::from_secs(3), "the daemon froze");
    for h in handles {
        let (s, v) = h.join().unwrap();
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_path")), "{v}");
    }
    if d.sh(&id, "test -c /workspace/zero && echo dev")["stdout"] == "dev\n" {
        let (s, _) = d.get(&format!("/sandboxes/{id}/files/zero"));
        assert_eq!(s, 400, "a device node was read");
    }
}

#[test]
fn idle_connections_are_closed_after_the_header_timeout() {
    let Some(d) = Daemon::start_with(&[("HEYVM_HEADER_TIMEOUT_SECS", "2")]) else { return };
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.write_all(b"GET /health HT").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(t.elapsed() < Duration::from_secs(8), "a half-sent request head kept its connection {:?}", t.elapsed());
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

#[test]
fn a_huge_json_upload_streams_instead_of_buffering() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "big", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    let pid = d.pid().unwrap();
    let before = peak_rss_kib(pid);
    // 200 MB of base64 (150 MB decoded).
    let groups = 50 * 1024 * 1024;
    let (head, tail) = (r#"{"file_path": "big.bin", "content": ""#, r#""}"#);
    let len = head.len() + groups * 4 + tail.len();
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let req = format!(
        "POST /sandboxes/{id}/files/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{head}"
    );
    s.write_all(req.as_bytes()).unwrap();
    let chunk = "QUJD".repeat(64 * 1024);
    for _ in 0..groups / (64 * 1024) {
        s.write_all(chunk.as_bytes()).unwrap();
    }
    s.write_all(tail.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    assert!(out.contains(&format!("\"size\":{}", groups * 3)), "{out}");
    let grew = peak_rss_kib(pid).saturating_sub(before);
    assert!(grew < 64 * 1024, "the daemon's peak RSS grew by {grew} KiB for a 200 MB upload");
    assert_eq!(d.sh(&id, "head -c 6 /workspace/big.bin")["stdout"], "ABCABC");
}

#[test]
fn an_archive_symlink_chain_cannot_escape() {
    let Some(d) = Daemon::start() else { return };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut ar = tar::Builder::new(&mut gz);
        let mut add = |path: &str, ty: tar::EntryType, link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(ty);
            h.set_mode(0o755);
            h.set_size(0);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            ar.append_data(&mut h, path, std::io::empty()).unwrap();
        };
        add("d", tar::EntryType::Directory, None);
        // Each link looks inside on its own; together x is the parent of /workspace.
        add("d/up", tar::EntryType::Symlink, Some(".."));
        add("x", tar::EntryType::Symlink, Some("d/up/.."));
        ar.finish().unwrap();
    }
    let body = gz.finish().unwrap();
    let (s, v) = d.post_raw("/archives", "application/gzip", &body);
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_archive")), "{v}");
}

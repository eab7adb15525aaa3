//! Test fixtures: a daemon per test, CLI invocation, raw HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_heyvm");

/// Whether this machine can run sandboxes. In CI a missing capability is a
/// failure; elsewhere the test is skipped with the reason printed.
pub fn sandbox_support() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let bwrap = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join("bwrap").is_file())).unwrap_or(false);
    let why = match (root, bwrap) {
        (true, true) => return true,
        (false, _) => "not running as root (cgroups and overlays need it)",
        (_, false) => "bubblewrap is not installed",
    };
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false") {
        panic!("sandbox tests cannot run in CI: {why}");
    }
    eprintln!("SKIP: {why}");
    false
}

/// Forwards a daemon's stderr to the test's (uncaptured, as if inherited),
/// keeping its last lines to show when the daemon dies at start.
fn stderr_tail(err: std::process::ChildStderr) -> std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>> {
    let tail = std::sync::Arc::<std::sync::Mutex<std::collections::VecDeque<String>>>::default();
    let keep = tail.clone();
    std::thread::spawn(move || {
        use std::io::Write;
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = writeln!(std::io::stderr(), "{line}");
            let mut t = keep.lock().unwrap_or_else(|e| e.into_inner());
            if t.len() == 30 {
                t.pop_front();
            }
            t.push_back(line);
        }
    });
    tail
}

/// The backend every test daemon uses for sandboxes created without
/// `backend_type`: `HEYVM_TEST_BACKEND` (e.g. `kvm`), else the daemon's default.
pub fn test_backend() -> Option<String> {
    std::env::var("HEYVM_TEST_BACKEND").ok().filter(|v| !v.is_empty())
}

/// Whether the tests run on microVMs (`HEYVM_TEST_BACKEND=kvm`).
pub fn on_vm() -> bool {
    test_backend().as_deref() == Some("kvm")
}

/// For a property that holds only for sandboxes sharing the host kernel
/// (bubblewrap): on VMs prints why it does not apply and returns true, so
/// the test can return. Never used to hide a VM failure: the reason says
/// what the VM has instead.
pub fn not_on_vm(why: &str) -> bool {
    if on_vm() {
        eprintln!("SKIP on kvm: {why}");
        return true;
    }
    false
}

/// Whether this machine can run microVMs (root, QEMU, the assets of
/// scripts/vm-assets.sh, the static agent). In CI a missing piece is a
/// failure; elsewhere the test is skipped with the reason printed.
pub fn vm_support() -> bool {
    if !sandbox_support() {
        return false;
    }
    let dir = std::path::PathBuf::from(std::env::var("HEYVM_VM_DIR").unwrap_or_else(|_| "/var/cache/heyvm/vm".into()));
    let on_path = |p: &str| std::env::var_os("PATH").map(|v| std::env::split_paths(&v).any(|d| d.join(p).is_file())).unwrap_or(false);
    let agent = std::path::Path::new(BIN).with_file_name("heyvm-agent");
    let why = if !on_path("qemu-system-x86_64") || !on_path("qemu-img") {
        "QEMU is not installed (qemu-system-x86, qemu-utils)".to_string()
    } else if !dir.join("kernel/vmlinux").is_file()
        || !["debian.current", "debian.ext4"].iter().any(|i| dir.join("images").join(i).is_file())
    {
        format!("no VM assets in {} (run scripts/vm-assets.sh)", dir.display())
    } else if !agent.is_file() {
        format!("no static agent at {} (run scripts/build-agent.sh)", agent.display())
    } else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false") {
        panic!("VM tests cannot run in CI: {why}");
    }
    eprintln!("SKIP: {why}");
    false
}

pub struct Daemon {
    pub url: String,
    pub port: u16,
    pub data: tempfile::TempDir,
    child: Option<Child>,
    extra_env: Vec<(String, String)>,
    /// Run the daemon as this uid (and gid), with this binary.
    run_as: Option<(u32, String)>,
    /// `--host`: the address to listen on (loopback when unset).
    host: Option<String>,
    /// A descriptor the daemon inherits without close-on-exec.
    leaked_fd: Option<i32>,
}

impl Daemon {
    /// Starts a daemon, or returns None (test skipped) without sandbox support.
    pub fn start() -> Option<Daemon> {
        Self::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Option<Daemon> {
        Self::start_in("/tmp", env)
    }

    /// [`Daemon::start_with`], its data dir made inside `parent`.
    pub fn start_in(parent: impl AsRef<std::path::Path>, env: &[(&str, &str)]) -> Option<Daemon> {
        let mut d = Self::unstarted(parent, env)?;
        d.spawn(0);
        Some(d)
    }

    /// A daemon that inherits `fd` (as from a careless parent).
    pub fn start_leaking(fd: i32) -> Option<Daemon> {
        let mut d = Self::unstarted("/tmp", &[])?;
        d.leaked_fd = Some(fd);
        d.spawn(0);
        Some(d)
    }

    /// A daemon not yet spawned, its data dir made inside `parent`; None
    /// (test skipped) without sandbox support.
    fn unstarted(parent: impl AsRef<std::path::Path>, env: &[(&str, &str)]) -> Option<Daemon> {
        if !sandbox_support() {
            return None;
        }
        if test_backend().as_deref() == Some("kvm") && !vm_support() {
            return None;
        }
        let data = tempfile::Builder::new().prefix("heyvm-test-").tempdir_in(parent).expect("tempdir");
        Some(Daemon {
            url: String::new(),
            port: 0,
            data,
            child: None,
            extra_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            run_as: None,
            host: None,
            leaked_fd: None,
        })
    }

    /// [`Daemon::start_with`] listening on `host` (needs JWT_SECRET in `env`
    /// unless `host` is loopback).
    pub fn start_on(host: &str, env: &[(&str, &str)]) -> Option<Daemon> {
        if !sandbox_support() {
            return None;
        }
        let data = tempfile::Builder::new().prefix("heyvm-test-").tempdir_in("/tmp").expect("tempdir");
        let extra_env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut d =
            Daemon { url: String::new(), port: 0, data, child: None, extra_env, run_as: None, host: Some(host.into()), leaked_fd: None };
        d.spawn(0);
        Some(d)
    }

    /// A daemon run by `uid` (gid = uid) from `bin` (a copy that user can
    /// execute), with a data dir that user owns.
    pub fn start_as(uid: u32, bin: &str) -> Option<Daemon> {
        if !sandbox_support() {
            return None;
        }
        let data = tempfile::Builder::new().prefix("heyvm-test-").tempdir_in("/tmp").expect("tempdir");
        std::os::unix::fs::chown(data.path(), Some(uid), Some(uid)).expect("chown data dir");
        let mut d = Daemon {
            url: String::new(),
            port: 0,
            data,
            child: None,
            extra_env: Vec::new(),
            run_as: Some((uid, bin.into())),
            host: None,
            leaked_fd: None,
        };
        d.spawn(0);
        Some(d)
    }

    /// A daemon whose `docker.io` mirror is the test registry (see
    /// `registry.rs`): `busybox` and `ubuntu:24.04` (a Debian minbase)
    /// resolve offline.
    pub fn start_with_images() -> Option<Daemon> {
        Self::start_with_images_and(&[])
    }

    /// [`Daemon::start_with_images`] with more environment.
    pub fn start_with_images_and(env: &[(&str, &str)]) -> Option<Daemon> {
        if !sandbox_support() {
            return None;
        }
        let reg = crate::registry::Registry::shared()?.with_busybox();
        if !reg.with_debian() {
            if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false") {
                panic!("the Debian test image (mmdebstrap) could not be made");
            }
            return None;
        }
        let mirror = format!("docker.io={}", reg.addr);
        let mut all = vec![("HEYVM_REGISTRY_MIRRORS", mirror.as_str())];
        all.extend_from_slice(env);
        Self::start_with(&all)
    }

    fn spawn(&mut self, port: u16) {
        let mut cmd = Command::new(self.run_as.as_ref().map(|r| r.1.as_str()).unwrap_or(BIN));
        if let Some((uid, _)) = &self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(*uid).gid(*uid).env("HOME", self.data.path());
        }
        cmd.args(["--api", "--port", &port.to_string()]);
        if let Some(h) = &self.host {
            cmd.args(["--host", h]);
        }
        cmd.env("MVM_DATA_DIR", self.data.path())
            .env_remove("JWT_SECRET")
            .env_remove("HEYVM_API_URL")
            // No hidden warm sandbox per test daemon; pool.rs tests turn it on.
            .env("HEYVM_POOL_SIZE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(b) = test_backend() {
            cmd.env("HEYVM_DEFAULT_BACKEND", b);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        if let Some(fd) = self.leaked_fd {
            use std::os::unix::process::CommandExt;
            // SAFETY: fcntl on a descriptor number, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    libc::fcntl(fd, libc::F_SETFD, 0);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn daemon");
        let stderr = stderr_tail(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("daemon banner");
        let Some(addr) = line.split("http://").nth(1).and_then(|r| r.split_whitespace().next()) else {
            // Say why: a daemon with no banner has usually exited at start.
            let deadline = Instant::now() + Duration::from_secs(5);
            let status = loop {
                match child.try_wait() {
                    Ok(Some(st)) => break format!("{st}"),
                    _ if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break "still running after 5 s (killed)".into();
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            // Let the forwarder read what the daemon wrote last.
            std::thread::sleep(Duration::from_millis(200));
            let tail = Vec::from(stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()).join("\n");
            panic!("unexpected daemon banner: {line:?} (daemon: {status}); its stderr ended with:\n{tail}");
        };
        self.url = format!("http://{addr}");
        self.port = addr.rsplit(':').next().unwrap().parse().unwrap();
        self.child = Some(child);
    }

    /// SIGKILLs the daemon (sandboxes keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: the daemon stops its warm sandboxes and exits. Running
    /// sandboxes are deleted first so nothing outlives the test.
    pub fn terminate(&mut self) {
        if let (200, Value::Array(items)) = self.get("/sandboxes") {
            for sb in items {
                let _ = self.delete(&format!("/sandboxes/{}", sb["id"].as_str().unwrap_or("")));
            }
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Starts the daemon again on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill9();
        let port = self.port;
        // The old listener is gone once the process is reaped.
        self.spawn(port);
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("HEYVM_API_URL", &self.url).env("MVM_DATA_DIR", self.data.path()).stdin(Stdio::null());
        c
    }

    /// Runs the CLI against this daemon.
    pub fn heyvm(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run heyvm")
    }

    /// Runs the CLI with `--format json`, asserts success, parses stdout.
    pub fn heyvm_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let out = self.heyvm(&a);
        assert!(out.status.success(), "heyvm {a:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("heyvm {a:?} printed non-JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(120))).build().into()
    }

    fn finish(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
        let resp = resp.expect("HTTP request");
        let status = resp.status().as_u16();
        let body = resp.into_body().with_config().limit(u64::MAX).read_to_vec().unwrap();
        let v = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into()))
        };
        (status, v)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        Self::finish(self.agent().get(format!("{}{path}", self.url)).call())
    }

    pub fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let resp = self.agent().get(format!("{}{path}", self.url)).call().unwrap();
        let status = resp.status().as_u16();
        (status, resp.into_body().with_config().limit(u64::MAX).read_to_vec().unwrap())
    }

    /// A GET's status, one response header and the body bytes.
    pub fn get_bytes_and_header(&self, path: &str, header: &str) -> (u16, Option<String>, Vec<u8>) {
        let resp = self.agent().get(format!("{}{path}", self.url)).call().unwrap();
        let status = resp.status().as_u16();
        let value = resp.headers().get(header).and_then(|v| v.to_str().ok()).map(str::to_string);
        (status, value, resp.into_body().with_config().limit(u64::MAX).read_to_vec().unwrap())
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        Self::finish(self.agent().post(format!("{}{path}", self.url)).content_type("application/json").send(body.to_string().as_bytes()))
    }

    pub fn post_raw(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        Self::finish(self.agent().post(format!("{}{path}", self.url)).content_type(content_type).send(body))
    }

    pub fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        Self::finish(self.agent().patch(format!("{}{path}", self.url)).content_type("application/json").send(body.to_string().as_bytes()))
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        Self::finish(self.agent().delete(format!("{}{path}", self.url)).call())
    }

    /// Creates a sandbox through the API and returns its info.
    pub fn create(&self, body: Value) -> Value {
        let (s, v) = self.post("/sandboxes", &body);
        assert_eq!(s, 201, "create failed: {v}");
        v
    }

    /// Runs a shell command in a sandbox through the API.
    pub fn sh(&self, id: &str, script: &str) -> Value {
        let (s, v) = self.post(&format!("/sandboxes/{id}/execute"), &serde_json::json!({"command": "/bin/sh", "args": ["-c", script]}));
        assert_eq!(s, 200, "exec failed: {v}");
        v
    }

    pub fn wait_until(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Delete every sandbox so no processes or cgroups outlive the test
        // (with a token when the daemon has auth on).
        if self.child.is_some() {
            let auth = self.cleanup_token().map(|t| format!("Bearer {t}"));
            let agent = self.agent();
            let with_auth = |mut req: ureq::RequestBuilder<ureq::typestate::WithoutBody>| {
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req
            };
            if let (200, Value::Array(items)) = Self::finish(with_auth(agent.get(format!("{}/sandboxes", self.url))).call()) {
                for sb in items {
                    let url = format!("{}/sandboxes/{}", self.url, sb["id"].as_str().unwrap_or(""));
                    let _ = with_auth(agent.delete(url)).call();
                }
            }
        }
        // SIGTERM lets the daemon stop its warm sandboxes; SIGKILL if it hangs.
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // A test that failed after killing the daemon left its sandboxes
        // running (a VM's QEMU runs in its own session): end whatever still
        // names the data dir, so one failure does not load the next tests.
        kill_naming(self.data.path());
        unmount_under(self.data.path());
    }
}

/// SIGKILLs every process whose command line names `dir`.
pub fn kill_naming(dir: &std::path::Path) {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for e in procs.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if pid != std::process::id() as i32 && String::from_utf8_lossy(&cmd).contains(&needle) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Lazily unmounts every mount under `dir` (sandbox disks a killed daemon
/// left behind), so the data dir can be removed.
pub fn unmount_under(dir: &std::path::Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut targets: Vec<&str> =
        info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|t| t.starts_with(&*dir.to_string_lossy())).collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        let Ok(c) = std::ffi::CString::new(t) else { continue };
        // SAFETY: a valid C string.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

impl Daemon {
    /// Where a sandbox's writable files are on the host: on its disk when
    /// it has one (root daemon), else in its directory.
    pub fn storage(&self, id: &str) -> std::path::PathBuf {
        let dir = self.data.path().join("sandboxes").join(id);
        if dir.join("disk.img").exists() {
            dir.join("disk")
        } else {
            dir
        }
    }

    /// A short-lived token for the daemon's JWT_SECRET, if it has one.
    fn cleanup_token(&self) -> Option<String> {
        let secret = self.extra_env.iter().find(|(k, _)| k == "JWT_SECRET")?.1.clone();
        let aud = self.extra_env.iter().find(|(k, _)| k == "JWT_AUDIENCE").map(|(_, v)| v.clone());
        let mut cmd = Command::new(BIN);
        cmd.args(["token", "create", "--sub", "test-cleanup", "--ttl", "10m", "--secret", &secret]);
        if let Some(a) = &aud {
            cmd.args(["--aud", a]);
        }
        let out = cmd.output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// A multipart/form-data body: `(name, filename, content)` parts.
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "heyvm-test-boundary-7d1f0c";
    let mut body = Vec::new();
    for (name, filename, content) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Daemon {
    /// `POST /sandboxes/:id/files` as a multipart upload.
    pub fn upload_multipart(&self, id: &str, mount_path: &str, file_path: &str, content: &[u8]) -> (u16, Value) {
        let (ct, body) = multipart(&[
            ("mount_path", None, mount_path.as_bytes()),
            ("file_path", None, file_path.as_bytes()),
            ("file", Some("f.bin"), content),
        ]);
        self.post_raw(&format!("/sandboxes/{id}/files"), &ct, &body)
    }

    /// `POST /sandboxes/:id/files/upload` with base64 content.
    pub fn upload_json(&self, id: &str, mount_path: &str, file_path: &str, content: &[u8]) -> (u16, Value) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(content);
        self.post(
            &format!("/sandboxes/{id}/files/upload"),
            &serde_json::json!({"mount_path": mount_path, "file_path": file_path, "content": b64}),
        )
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The host pid of a VM sandbox's QEMU (from its pid file).
    pub fn qemu_pid(&self, id: &str) -> Option<u32> {
        let file = self.data.path().join("sandboxes").join(id).join("vm/run/qemu.pid");
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }
}

/// Percent-encodes a string for a query parameter value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

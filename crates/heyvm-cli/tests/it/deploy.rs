//! `heyvm deploy` end to end with the fixture app, failure handling, private
//! ports, hostile archives, and seed 001's Python/Bash scripts run unchanged
//! with the built `heyvm` first on PATH.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{Daemon, BIN};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A working directory with `my-app`, `worker` and the seed scripts.
fn workdir() -> tempfile::TempDir {
    let w = tempfile::Builder::new().prefix("heyvm-deploy-").tempdir().unwrap();
    for d in ["my-app", "worker", "seed"] {
        copy_dir(&fixtures().join(d), &w.path().join(d));
    }
    w
}

fn http_get(url: &str, token: Option<&str>) -> (u16, Value) {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(20))).build().into();
    let mut r = agent.get(url);
    if let Some(t) = token {
        r = r.header("Authorization", format!("Bearer {t}"));
    }
    let resp = r.call().expect("GET");
    let s = resp.status().as_u16();
    (s, serde_json::from_slice(&resp.into_body().read_to_vec().unwrap()).unwrap_or(Value::Null))
}

fn deploy(d: &Daemon, cwd: &Path, args: &[&str]) -> Output {
    d.cmd().current_dir(cwd).arg("deploy").args(args).output().unwrap()
}

fn ok_json(o: &Output) -> Value {
    assert!(o.status.success(), "failed ({:?}): {}", o.status, String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

fn names(d: &Daemon) -> Vec<String> {
    let (_, v) = d.get("/sandboxes");
    v.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn deploy_fixture_app_end_to_end() {
    let Some(d) = Daemon::start() else { return };
    let w = workdir();
    let app = w.path().join("my-app");
    // Ignored by the app's .gitignore: must not reach the sandbox.
    std::fs::write(app.join("debug.log"), "noise").unwrap();
    std::fs::create_dir_all(app.join("secrets")).unwrap();
    std::fs::write(app.join("secrets/key.txt"), "do-not-ship").unwrap();
    std::fs::create_dir_all(app.join("static/css")).unwrap();
    std::fs::write(app.join("static/css/site.css"), "body{}").unwrap();
    let out = deploy(
        &d,
        w.path(),
        &[
            "./my-app",
            "--name",
            "web",
            "--port",
            "8080",
            "--start-command",
            "python3 server.py",
            "--health-path",
            "/health",
            "--health-timeout",
            "60s",
            "--env",
            "GREETING=from-deploy",
            "--setup-hook",
            "test -f /workspace/server.py && echo files-were-there > /workspace/hook.txt",
            "--ttl-seconds",
            "900",
            "--size-class",
            "micro",
            "--region",
            "eu",
            "--format",
            "json",
        ],
    );
    let v = ok_json(&out);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["archive_id", "id", "name", "status", "urls"]);
    assert!(v["id"].as_str().unwrap().starts_with("sb-"));
    assert_eq!((v["name"].as_str(), v["status"].as_str()), (Some("web"), Some("running")));
    let ar = v["archive_id"].as_str().unwrap();
    assert!(ar.len() == 11 && ar.starts_with("ar-") && ar[3..].bytes().all(|b| b.is_ascii_hexdigit()), "{ar}");
    let u = &v["urls"][0];
    assert_eq!((u["port"].as_u64(), u["is_public"].as_bool()), (Some(8080), Some(true)));
    for k in ["subdomain", "hostname", "url"] {
        assert!(u[k].as_str().is_some_and(|s| !s.is_empty()), "{k}: {u}");
    }
    // The URL serves the app, with the deploy's env, from /workspace.
    let (s, body) = http_get(u["url"].as_str().unwrap(), None);
    assert_eq!(s, 200);
    assert_eq!(body, json!({"hello": "from-deploy", "cwd": "/workspace"}));
    // .gitignore honoured; the setup hook ran after the files were in place.
    let ls = d.sh("web", "cd /workspace && find . -type f | sort");
    assert_eq!(ls["stdout"].as_str().unwrap(), "./.gitignore\n./hook.txt\n./package.json\n./server.py\n./static/css/site.css\n./test.py\n");
    assert_eq!(d.sh("web", "cat /workspace/hook.txt")["stdout"], "files-were-there\n");
    // The sandbox records what deploy asked for; list shows the URL.
    let (_, info) = d.get("/sandboxes/web");
    assert_eq!(info["archive_id"], ar);
    assert_eq!(info["is_deployed"], true);
    assert_eq!(info["region"], "EU");
    assert_eq!(info["ttl_seconds"], 900);
    assert_eq!(info["size_class"], "micro");
    let list = d.heyvm_json(&["list"]);
    assert_eq!(list[0]["urls"][0]["url"], u["url"]);
    // The archive is kept under the data dir.
    assert!(d.data.path().join(format!("archives/{ar}.tar.gz")).is_file());

    // Human mode: progress on stderr, a summary on stdout.
    let out = deploy(
        &d,
        w.path(),
        &["./my-app", "--name", "web2", "--port", "8080", "--start-command", "python3 server.py", "--health-path", "/health"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    for step in ["archiving", "uploading", "creating sandbox web2", "port 8080 ->", "waiting for"] {
        assert!(err.contains(step), "missing progress '{step}' in: {err}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Deployed web2 (sb-"));
}

/// `heyvm deploy DIR --backend kvm`: the archive becomes the VM's
/// `/workspace` disk before the first boot (the same confined unpacking as
/// bubblewrap, into a staging directory the disk is built from), so the
/// setup hook and the start command find the files; health-checked through
/// the proxy like any deploy.
#[test]
fn deploy_onto_a_vm_unpacks_into_its_workspace_disk() {
    if !crate::support::vm_support() {
        return;
    }
    let Some(d) = Daemon::start() else { return };
    let w = workdir();
    let app = w.path().join("my-app");
    std::fs::create_dir_all(app.join("static/css")).unwrap();
    std::fs::write(app.join("static/css/site.css"), "body{}").unwrap();
    std::os::unix::fs::symlink("css/site.css", app.join("static/latest.css")).unwrap();
    std::fs::write(app.join("run.sh"), "#!/bin/sh\necho ran-from-archive\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(app.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = deploy(
        &d,
        w.path(),
        &[
            "./my-app",
            "--name",
            "vmweb",
            "--backend",
            "kvm",
            "--port",
            "8080",
            "--start-command",
            "python3 server.py",
            "--health-path",
            "/health",
            "--health-timeout",
            "240s",
            "--env",
            "GREETING=from-a-vm",
            "--setup-hook",
            "test -f /workspace/server.py && echo files-were-there > /workspace/hook.txt",
            "--size-class",
            "micro",
            "--format",
            "json",
        ],
    );
    let v = ok_json(&out);
    assert_eq!(v["status"], "running", "{v}");
    let (_, info) = d.get("/sandboxes/vmweb");
    assert_eq!((info["backend_type"].as_str(), info["is_deployed"].as_bool()), (Some("kvm"), Some(true)), "{info}");
    let (s, body) = http_get(v["urls"][0]["url"].as_str().unwrap(), None);
    assert_eq!((s, body), (200, json!({"hello": "from-a-vm", "cwd": "/workspace"})));
    // The tree as packed (the ext4 disk's own lost+found aside): symlink,
    // mode and the hook's file; everything root's inside the guest.
    let ls = d.sh("vmweb", "cd /workspace && find . -path ./lost+found -prune -o -print | sort");
    assert_eq!(
        ls["stdout"].as_str().unwrap(),
        ".\n./.gitignore\n./hook.txt\n./package.json\n./run.sh\n./server.py\n./static\n./static/css\n./static/css/site.css\n./static/latest.css\n./test.py\n",
    );
    assert_eq!(d.sh("vmweb", "cat /workspace/static/latest.css; readlink /workspace/static/latest.css")["stdout"], "body{}css/site.css\n");
    assert_eq!(d.sh("vmweb", "/workspace/run.sh")["stdout"], "ran-from-archive\n");
    assert_eq!(d.sh("vmweb", "stat -c '%u:%g %a' /workspace/server.py /workspace/run.sh")["stdout"], "0:0 644\n0:0 755\n");
    assert_eq!(d.sh("vmweb", "cat /workspace/hook.txt")["stdout"], "files-were-there\n");
    // The disk is the sandbox's disk (micro: 2 GiB), not the archive's size;
    // the host's staging copy is gone.
    let kib: u64 = d.sh("vmweb", "df -k --output=size /workspace | tail -1")["stdout"].as_str().unwrap().trim().parse().unwrap();
    assert!(kib > (3 << 20) / 2 && kib <= 2 << 20, "{kib} KiB");
    let id = info["id"].as_str().unwrap();
    let sbdir = d.data.path().join("sandboxes").join(id);
    assert!(sbdir.is_dir() && !sbdir.join("archive.unpack").exists());
    // The files are on the disk: they survive a stop and start.
    assert_eq!(d.heyvm(&["stop", "vmweb"]).status.code(), Some(0));
    assert_eq!(d.heyvm(&["start", "vmweb"]).status.code(), Some(0));
    assert_eq!(d.sh("vmweb", "cat /workspace/static/css/site.css")["stdout"], "body{}");
}

#[test]
fn failed_deploys_show_logs_and_leave_no_orphan() {
    let Some(d) = Daemon::start() else { return };
    let w = workdir();
    let crash = "python3 -c 'import sys; print(\"boom: DATABASE_URL is not set\", flush=True); sys.exit(3)'";
    let out = deploy(
        &d,
        w.path(),
        &[
            "./my-app",
            "--name",
            "crashy",
            "--port",
            "8080",
            "--start-command",
            crash,
            "--health-path",
            "/health",
            "--health-timeout",
            "10m",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(err["error"], "health_check_failed");
    // Reported as soon as the start command died, not after the timeout.
    assert!(err["message"].as_str().unwrap().contains("start command exited with code 3"), "{err}");
    assert_eq!(err["kept"], false);
    assert!(err["logs"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().contains("boom: DATABASE_URL is not set")), "{err}");
    assert!(!names(&d).contains(&"crashy".to_string()));
    let (_, all) = d.get("/sandboxes?status=failed");
    assert_eq!(all, json!([]));

    // --keep-on-failure keeps it for inspection; text mode prints the log tail.
    let out = deploy(
        &d,
        w.path(),
        &[
            "./my-app",
            "--name",
            "kept",
            "--port",
            "8080",
            "--start-command",
            crash,
            "--health-path",
            "/health",
            "--health-timeout",
            "3s",
            "--keep-on-failure",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("boom: DATABASE_URL is not set") && text.contains("kept sandbox"), "{text}");
    let (s, _) = d.get("/sandboxes/kept");
    assert_eq!(s, 200);

    // A failing setup hook: the sandbox never runs, and is removed.
    let out = deploy(&d, w.path(), &["./my-app", "--name", "hookfail", "--setup-hook", "echo nope >&2; exit 4", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"], "deploy_failed");
    assert!(err["message"].as_str().unwrap().contains("setup hook 1 failed"), "{err}");
    let (s, _) = d.get("/sandboxes/hookfail");
    assert_eq!(s, 404);

    // Bad flags are refused before anything is uploaded.
    for args in [
        vec!["./my-app", "--region", "mars"],
        vec!["./my-app", "--health-path", "/health"],
        vec!["./my-app", "--size-class", "huge"],
        vec!["./nope", "--port", "8080"],
    ] {
        let out = deploy(&d, w.path(), &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
    // Three uploads above (crashy, kept, hookfail); none for the bad flags.
    assert_eq!(std::fs::read_dir(d.data.path().join("archives")).unwrap().count(), 3);
}

#[test]
fn private_deploy_needs_a_token() {
    let secret = "deploy-private-secret";
    let Some(d) = Daemon::start_with(&[("JWT_SECRET", secret)]) else { return };
    let w = workdir();
    let tok = Command::new(BIN).args(["token", "create", "--sub", "deployer", "--secret", secret]).output().unwrap();
    let token = String::from_utf8(tok.stdout).unwrap().trim().to_string();
    let out = d
        .cmd()
        .current_dir(w.path())
        .env("HEYO_ARCHIVE_TOKEN", &token)
        .args([
            "deploy",
            "./my-app",
            "--name",
            "secret-app",
            "--port",
            "8080",
            "--start-command",
            "python3 server.py",
            "--health-path",
            "/health",
            "--private",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let v = ok_json(&out);
    let u = &v["urls"][0];
    assert_eq!(u["is_public"], false);
    let url = format!("{}/health", u["url"].as_str().unwrap());
    assert_eq!(http_get(&url, None).0, 401);
    assert_eq!(http_get(&url, Some(&token)), (200, json!({"status": "ok"})));
    // Clean up with the token (the fixture's cleanup has none).
    let out = d.cmd().env("HEYO_ARCHIVE_TOKEN", &token).args(["rm", "-y", "secret-app"]).output().unwrap();
    assert!(out.status.success());
}

/// Raw tar headers, so names the tar crate refuses to write can be tested.
fn hostile_tgz(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, ty, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*ty);
        h.set_mode(0o644);
        if matches!(ty, tar::EntryType::Symlink | tar::EntryType::Link) {
            h.set_link_name(data).unwrap();
            h.set_size(0);
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
        } else {
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data.as_bytes()).unwrap();
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[test]
fn hostile_archives_are_rejected() {
    let Some(d) = Daemon::start() else { return };
    use tar::EntryType::*;
    let fine = ("app.py", Regular, "print(1)");
    type Entry<'a> = (&'a str, tar::EntryType, &'a str);
    let cases: Vec<(&str, Vec<Entry>)> = vec![
        ("dot-dot path", vec![fine, ("../../../escaped.txt", Regular, "pwned")]),
        ("nested dot-dot", vec![fine, ("a/../../escaped.txt", Regular, "pwned")]),
        ("absolute path", vec![fine, ("/tmp/heyvm-escaped.txt", Regular, "pwned")]),
        ("absolute symlink", vec![fine, ("etc", Symlink, "/etc")]),
        ("relative symlink out", vec![fine, ("sub/up", Symlink, "../../..")]),
        ("write through a symlink", vec![fine, ("here", Symlink, "."), ("here/x", Regular, "x")]),
        ("hard link out", vec![fine, ("pw", Link, "/etc/passwd")]),
        ("device", vec![fine, ("null", Char, "")]),
    ];
    for (what, entries) in cases {
        let (s, v) = d.post_raw("/archives", "application/gzip", &hostile_tgz(&entries));
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_archive")), "{what}: {v}");
    }
    assert!(!Path::new("/tmp/heyvm-escaped.txt").exists());
    assert!(!d.data.path().join("escaped.txt").exists());
    let (s, v) = d.post_raw("/archives", "application/gzip", b"not gzip at all");
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_archive")));
    let (s, v) = d.post_raw("/archives", "application/gzip", b"");
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_archive")));
    // Nothing half-uploaded stays behind.
    let left: Vec<_> = std::fs::read_dir(d.data.path().join("archives")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // Unknown or malformed archive ids on create.
    for id in ["ar-00000000", "../../etc/passwd", "ar-xyz"] {
        let (s, v) = d.post("/sandboxes", &json!({"name": "x", "archive_id": id}));
        assert_eq!((s, v["error"].as_str()), (404, Some("archive_not_found")), "{id}: {v}");
    }
    // A good archive with a relative in-tree symlink lands at /workspace.
    let (s, v) =
        d.post_raw("/archives", "application/gzip", &hostile_tgz(&[fine, ("lib/", Directory, ""), ("lib/link", Symlink, "../app.py")]));
    assert_eq!(s, 201, "{v}");
    let sb = d.create(json!({"name": "unpacked", "size_class": "micro", "archive_id": v["archive_id"]}));
    assert_eq!(sb["archive_id"], v["archive_id"]);
    assert_eq!(d.sh("unpacked", "cat /workspace/lib/link")["stdout"], "print(1)");
}

/// Runs a seed script from the work dir with the built heyvm first on PATH.
fn run_script(d: &Daemon, w: &Path, program: &str, script: &str) -> Output {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    Command::new(program)
        .arg(w.join("seed").join(script))
        .current_dir(w)
        .env("PATH", path)
        .env("HEYVM_API_URL", &d.url)
        .env("MVM_DATA_DIR", d.data.path())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout_ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "script failed ({:?})\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn seed_python_agent_script() {
    let Some(d) = Daemon::start() else { return };
    let w = workdir();
    let out = stdout_ok(&run_script(&d, w.path(), "python3", "agent.py"));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("Deployed: http"), "{out}");
    assert!(lines[1].starts_with("Python version: 3."), "{out}");
    let (_, info) = d.get("/sandboxes/agent-worker");
    assert_eq!(info["status"], "stopped");
    assert_eq!(info["ttl_seconds"], 3600);
}

#[test]
fn seed_bash_automation() {
    let Some(d) = Daemon::start() else { return };
    let w = workdir();
    let out = stdout_ok(&run_script(&d, w.path(), "bash", "automation.sh"));
    let first = out.lines().next().unwrap();
    assert!(first.starts_with("Sandbox sb-") && first.contains(" running at http"), "{out}");
    // `npm test` ran inside the sandbox against the app.
    assert!(out.contains("1 passing: /health is ok"), "{out}");
    let (_, all) = d.get("/sandboxes?status=stopped");
    let sb = &all.as_array().unwrap()[0];
    assert!(sb["name"].as_str().unwrap().starts_with("ci-sandbox-"));
    assert_eq!(sb["ttl_seconds"], 1800);
}

#[test]
fn seed_multi_sandbox_orchestration() {
    let Some(d) = Daemon::start() else { return };
    let w = workdir();
    let out = stdout_ok(&run_script(&d, w.path(), "python3", "orchestrate.py"));
    let workers: Vec<&str> = out.lines().filter(|l| l.starts_with("Worker sb-")).collect();
    assert_eq!(workers.len(), 5, "{out}");
    for i in 0..5 {
        assert!(out.contains(&format!("  worker-{i}: running")), "{out}");
    }
    // Each URL reaches its own worker.
    let mut urls = Vec::new();
    for i in 0..5 {
        let (_, info) = d.get(&format!("/sandboxes/worker-{i}"));
        let url = info["urls"][0]["url"].as_str().unwrap().to_string();
        let (s, body) = http_get(&format!("{url}/health"), None);
        assert_eq!((s, body["task"].as_str()), (200, Some(i.to_string().as_str())));
        assert_eq!(info["size_class"], "micro");
        urls.push(url);
    }
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), 5);
}

#[test]
fn expired_archives_are_deleted() {
    let Some(d) = Daemon::start_with(&[("HEYVM_ARCHIVE_TTL_SECS", "1")]) else { return };
    let (s, v) = d.post_raw("/archives", "application/gzip", &hostile_tgz(&[("app.py", tar::EntryType::Regular, "print(1)")]));
    assert_eq!(s, 201, "{v}");
    let id = v["archive_id"].as_str().unwrap().to_string();
    let stored = d.data.path().join("archives").join(format!("{id}.tar.gz"));
    assert!(stored.exists());
    d.wait_until("the archive to expire", std::time::Duration::from_secs(15), || !stored.exists());
    let (s, v) = d.post("/sandboxes", &serde_json::json!({"name": "late", "archive_id": id}));
    assert_eq!((s, v["error"].as_str()), (404, Some("archive_not_found")), "{v}");
}

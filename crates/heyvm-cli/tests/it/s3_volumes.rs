//! S3-backed mounts against a real S3-compatible server on loopback (moto
//! in server mode, from the test venv) with two heyvm daemons sharing the
//! bucket: files survive the sandbox and move between servers, a prefix in
//! use is a 409 on the other server, periodic saves, a crashed server's
//! lease lapses, and unsupported settings are warned about at startup.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{Daemon, BIN};

const BUCKET: &str = "heyvm-test";

/// A moto S3 server on a free loopback port, with the test bucket.
struct Moto {
    url: String,
    py: std::path::PathBuf,
    child: Child,
}

impl Moto {
    fn start() -> Option<Moto> {
        let py = crate::python_sdk::python()?;
        let has_moto = Command::new(&py).args(["-c", "import moto.server, flask, boto3"]).output().is_ok_and(|o| o.status.success());
        if !has_moto {
            if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false") {
                panic!("moto[server] is not installed in the test venv (scripts/python-deps.sh)");
            }
            eprintln!("SKIP: moto[server] is not installed (run scripts/python-deps.sh)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&py)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let m = Moto { url: format!("http://127.0.0.1:{port}"), py, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not come up on {}", m.url);
            std::thread::sleep(Duration::from_millis(200));
        }
        m.boto(&format!("s3.create_bucket(Bucket='{BUCKET}')"));
        Some(m)
    }

    /// Runs Python with `s3`, a boto3 client of this server (signed
    /// requests: moto refuses anonymous ones); returns stdout.
    fn boto(&self, code: &str) -> String {
        let script = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='testing', \
             aws_secret_access_key='testing', region_name='us-east-1')\n{code}\n",
            self.url
        );
        let out = Command::new(&self.py).args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "boto3: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Keys under `prefix`, sorted.
    fn keys(&self, prefix: &str) -> Vec<String> {
        let out =
            self.boto(&format!("for o in s3.list_objects_v2(Bucket='{BUCKET}', Prefix='{prefix}').get('Contents', []): print(o['Key'])"));
        let mut keys: Vec<String> = out.lines().map(str::to_string).collect();
        keys.sort();
        keys
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("S3_ENABLED", "true".into()),
            ("S3_BUCKET", BUCKET.into()),
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("HEYVM_S3_LEASE_SECS", "12".into()),
        ]
    }

    fn daemon(&self) -> Option<Daemon> {
        let env = self.env();
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Daemon::start_with(&pairs)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3_create(d: &Daemon, name: &str, prefix: &str, extra: Value) -> (u16, Value) {
    let mut mount = json!({"sandbox_path": "/data", "s3_prefix": prefix});
    if let (Some(m), Some(e)) = (mount.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    d.post("/sandboxes", &json!({"name": name, "size_class": "micro", "mounts": [mount]}))
}

fn sh(d: &Daemon, id: &str, script: &str) -> String {
    let v = d.sh(id, script);
    assert_eq!(v["exit_code"], 0, "{script}: {v}");
    v["stdout"].as_str().unwrap_or("").to_string()
}

#[test]
fn s3_mount_moves_between_sandboxes_and_servers() {
    let Some(moto) = Moto::start() else { return };
    let (Some(a), Some(b)) = (moto.daemon(), moto.daemon()) else { return };
    // Through the CLI: `--mount s3://PREFIX:SANDBOX`.
    let out = a.heyvm_json(&["create", "--name", "first", "--size-class", "micro", "--mount", "s3://team/proj:/data"]);
    assert_eq!(out["status"], "running", "{out}");
    assert_eq!(out["mounts"][0]["s3_prefix"], "team/proj", "{out}");
    let sum = sh(
        &a,
        "first",
        "echo hello > /data/a.txt && mkdir -p /data/d && head -c 3000000 /dev/urandom > /data/d/big && \
         ln -s /etc/passwd /data/link && sha256sum /data/d/big | cut -d' ' -f1",
    );
    // In use on this server's sandbox: the other server gets a clear 409.
    let (s, v) = s3_create(&b, "second", "team/proj", json!({}));
    assert_eq!((s, v["error"].as_str()), (409, Some("s3_prefix_in_use")), "{v}");
    assert!(v["message"].as_str().unwrap_or("").contains("team/proj"), "{v}");
    assert_eq!(b.get("/sandboxes").1.as_array().map(Vec::len), Some(0), "a refused create leaves nothing behind");
    // Stop saves: regular files only (the symlink stays behind).
    let stopped = a.heyvm_json(&["stop", "first"]);
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert_eq!(moto.keys("team/proj/"), ["team/proj/a.txt", "team/proj/d/big"]);
    // The other server now mounts it and sees the same bytes.
    let (s, v) = s3_create(&b, "second", "team/proj", json!({}));
    assert_eq!(s, 201, "{v}");
    assert_eq!(sh(&b, "second", "cat /data/a.txt"), "hello\n");
    assert_eq!(sh(&b, "second", "sha256sum /data/d/big | cut -d' ' -f1"), sum);
    assert_eq!(sh(&b, "second", "test -e /data/link && echo yes || echo no"), "no\n");
    // Changes there, then deleting it (running) saves them first.
    sh(&b, "second", "rm /data/a.txt && echo new > /data/b.txt");
    let (s, v) = b.delete("/sandboxes/second");
    assert_eq!(s, 200, "{v}");
    // Back on the first server: restored incrementally to the bucket's state.
    let started = a.heyvm_json(&["start", "first"]);
    assert_eq!(started["status"], "running", "{started}");
    assert_eq!(sh(&a, "first", "ls /data | sort | tr '\\n' ' '"), "b.txt d ");
    assert_eq!(sh(&a, "first", "cat /data/b.txt"), "new\n");
    assert_eq!(sh(&a, "first", "sha256sum /data/d/big | cut -d' ' -f1"), sum);
    let (_, logs) = a.get("/sandboxes/first/logs?limit=200");
    let restored = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["message"].as_str())
        .rfind(|m| m.contains("restored from team/proj"))
        .unwrap_or("")
        .to_string();
    assert!(restored.contains("1 fetched, 1 unchanged"), "the unchanged 3 MB file is not fetched again: {restored}");
}

#[test]
fn periodic_saves_and_a_crashed_servers_lease_lapses() {
    let Some(moto) = Moto::start() else { return };
    let (Some(mut a), Some(b)) = (moto.daemon(), moto.daemon()) else { return };
    let (s, v) = s3_create(&a, "saver", "periodic", json!({"s3_sync_seconds": 1}));
    assert_eq!(s, 201, "{v}");
    sh(&a, "saver", "echo one > /data/f.txt");
    // Saved while it runs, within a few periods (the reaper starts the task).
    a.wait_until("a periodic save", Duration::from_secs(20), || moto.keys("periodic/") == ["periodic/f.txt"]);
    // The server dies without stopping anything: its lease holds for a while…
    a.kill9();
    let (s, v) = s3_create(&b, "heir", "periodic", json!({}));
    assert_eq!((s, v["error"].as_str()), (409, Some("s3_prefix_in_use")), "{v}");
    // …then lapses (HEYVM_S3_LEASE_SECS=12), and the saved file is there.
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let (s, v) = s3_create(&b, "heir", "periodic", json!({}));
        if s == 201 {
            break v;
        }
        assert!(Instant::now() < deadline, "the crashed server's lease never lapsed: {v}");
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(sh(&b, v["id"].as_str().unwrap(), "cat /data/f.txt"), "one\n");
    // Back up so its sandbox is cleaned up; it no longer holds the prefix.
    a.restart();
}

#[test]
fn s3_mount_errors_are_clear() {
    let Some(plain) = Daemon::start() else { return };
    let (s, v) = s3_create(&plain, "x", "team/proj", json!({}));
    assert_eq!((s, v["error"].as_str()), (400, Some("s3_disabled")), "{v}");
    for (prefix, extra) in [("../up", json!({})), (".heyvm-leases/x", json!({})), ("ok", json!({"s3_sync_seconds": 0}))] {
        let (s, v) = s3_create(&plain, "x", prefix, extra);
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "{prefix}: {v}");
    }
    let both = json!({"name": "x", "mounts": [{"sandbox_path": "/data", "s3_prefix": "p", "host_path": "/tmp"}]});
    let (s, v) = plain.post("/sandboxes", &both);
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "{v}");
    let out = plain.heyvm(&["create", "--name", "x", "--mount", "s3://:/data"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("S3 prefix is empty"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn unsupported_settings_are_warned_about_at_startup() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["--api", "--port", "0"])
        .env("MVM_DATA_DIR", data.path())
        .env_remove("JWT_SECRET")
        .env("HEYVM_POOL_SIZE", "0")
        .env("MSB_API_KEY", "k")
        .env("MSB_SERVER_HOST", "localhost")
        .env("AUTH_SERVER_URL", "http://auth.example")
        .env("S3_ENABLED", "true")
        .env_remove("S3_BUCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut banner).unwrap();
    assert!(banner.contains("listening"), "{banner}");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "MSB_API_KEY is set",
        "MSB_SERVER_HOST is set",
        "AUTH_SERVER_URL is set",
        "S3 volumes are off: S3_ENABLED is set but S3_BUCKET is not",
    ] {
        assert_eq!(err.lines().filter(|l| l.contains(needle)).count(), 1, "one line for {needle:?} in:\n{err}");
    }
}

//! The `heyvm` command line: JSON output everywhere, exit codes, errors on
//! stderr, confirmation rules, file copies, and starting the local daemon.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{on_vm, Daemon, BIN};

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_command_prints_json() {
    let Some(d) = Daemon::start() else { return };
    let host = tempfile::tempdir().unwrap();
    let mnt = format!("{}:/data:ro", host.path().display());
    let v = d.heyvm_json(&["create", "--name", "cli", "--size-class", "micro", "--env", "A=1", "--mount", &mnt, "--ttl-seconds", "3600"]);
    assert_eq!((v["name"].as_str(), v["status"].as_str(), v["env_vars"]["A"].as_str()), (Some("cli"), Some("running"), Some("1")), "{v}");
    assert_eq!(v["mounts"][0]["read_only"], true, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let v = d.heyvm_json(&["list"]);
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    let v = d.heyvm_json(&["get", "cli"]);
    assert_eq!(v["id"], id.as_str());
    let v = d.heyvm_json(&["exec", "cli", "--env", "B=2", "--cwd", "/tmp", "--", "sh", "-c", "echo $A$B $(pwd)"]);
    assert_eq!((v["stdout"].as_str(), v["exit_code"].as_i64()), (Some("12 /tmp\n"), Some(0)), "{v}");
    let v = d.heyvm_json(&["update", "cli", "--env", "C=3"]);
    assert_eq!(v["env_vars"]["C"], "3", "{v}");
    let v = d.heyvm_json(&["logs", "cli"]);
    assert!(v["logs"].is_array() && v["total"].is_u64(), "{v}");
    let v = d.heyvm_json(&["mounts", "cli"]);
    let paths: Vec<&str> = v.as_array().unwrap().iter().map(|m| m["sandbox_path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/workspace", "/data"]);
    let extra = tempfile::tempdir().unwrap();
    let v = d.heyvm_json(&["mounts", "cli", "--add", &format!("{}:/extra", extra.path().display())]);
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{v}");
    let v = d.heyvm_json(&["mounts", "cli", "--remove", "/extra"]);
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    let local = host.path().join("up.txt");
    std::fs::write(&local, "cli upload").unwrap();
    let v = d.heyvm_json(&["cp", local.to_str().unwrap(), "cli:/workspace/up.txt"]);
    assert_eq!(v["size"], 10, "{v}");
    let mut v = d.heyvm_json(&["files", "cli"]);
    if on_vm() {
        // A VM's /workspace is the root of its own ext4 disk.
        v["files"].as_array_mut().unwrap().retain(|f| f["name"] != "lost+found");
    }
    assert_eq!(v["files"][0]["name"], "up.txt", "{v}");
    let v = d.heyvm_json(&["rm-file", "cli", "/workspace/up.txt"]);
    assert_eq!(v["deleted"], true, "{v}");
    for action in ["stop", "start", "restart", "force-stop"] {
        let v = d.heyvm_json(&[action, "cli"]);
        assert_eq!(v["id"], id.as_str(), "{action}: {v}");
        assert!(v["status"].is_string(), "{action}: {v}");
    }
    let v = d.heyvm_json(&["rm", "-y", "cli"]);
    assert_eq!(v["deleted"], true, "{v}");
    let v = d.heyvm_json(&["list", "--all"]);
    assert_eq!(v, json!([]));
}

#[test]
fn list_all_shows_stopped_sandboxes() {
    let Some(d) = Daemon::start() else { return };
    d.create(json!({"name": "on", "size_class": "micro"}));
    d.create(json!({"name": "off", "size_class": "micro", "no_start": true}));
    let names = |v: Value| -> Vec<String> {
        let mut n: Vec<String> = v.as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect();
        n.sort();
        n
    };
    assert_eq!(names(d.heyvm_json(&["list"])), ["on"]);
    assert_eq!(names(d.heyvm_json(&["list", "--all"])), ["off", "on"]);
    let out = d.heyvm(&["list", "--all"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("STATUS"), "{text}");
    assert_eq!(lines.len(), 3, "{text}");
    // Columns line up: STATUS starts at the same offset on every row.
    let col = lines[0].find("STATUS").unwrap();
    for l in &lines[1..] {
        assert!(l[col..].starts_with("running") || l[col..].starts_with("stopped"), "misaligned: {text}");
    }
}

#[test]
fn rm_without_yes_refuses_without_a_tty() {
    let Some(d) = Daemon::start() else { return };
    d.create(json!({"name": "keepme", "size_class": "micro", "no_start": true}));
    let out = d.heyvm(&["rm", "keepme"]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("-y"), "says how to proceed: {err}");
    assert_eq!(d.get("/sandboxes/keepme").0, 200, "nothing was deleted");
    let out = d.heyvm(&["delete", "-y", "keepme"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(d.get("/sandboxes/keepme").0, 404);
}

#[test]
fn exec_exit_code_and_errors() {
    let Some(d) = Daemon::start() else { return };
    d.create(json!({"name": "codes", "size_class": "micro"}));
    for code in [0, 1, 42, 255] {
        let out = d.heyvm(&["exec", "codes", "--", "sh", "-c", &format!("echo out; echo err >&2; exit {code}")]);
        assert_eq!(out.status.code(), Some(code), "{}", stderr_of(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
        assert_eq!(stderr_of(&out), "err\n");
    }
    let out = d.heyvm(&["exec", "codes", "--format", "json", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON even on a non-zero exit");
    assert_eq!(v["exit_code"], 3);
    let out = d.heyvm(&["exec", "codes", "--timeout", "300ms", "--format", "json", "--", "sleep", "10"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["timed_out"], true, "{v}");
    assert_ne!(out.status.code(), Some(0));
    // Errors: stderr, one line, non-zero exit, nothing on stdout.
    for args in [
        &["get", "nope"][..],
        &["exec", "nope", "--", "true"],
        &["stop", "nope"],
        &["start", "codes"],
        &["exec", "codes", "--timeout", "abc", "--", "true"],
    ] {
        let out = d.heyvm(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&out.stdout));
        let err = stderr_of(&out);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("heyvm: "), "{args:?}: {err}");
    }
    let out = d.heyvm(&["get", "nope", "--format", "json"]);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stderr).expect("JSON error on stderr");
    assert_eq!(v["error"], "sandbox_not_found", "{v}");
}

/// `heyvm cp`, `files` and `rm-file` reach any absolute path in a running
/// sandbox (through its agent), confined to the sandbox's own root; paths
/// under /workspace work while it is stopped; elsewhere a stopped sandbox
/// is a clear error.
#[test]
fn cp_anywhere_in_the_sandbox() {
    let Some(d) = Daemon::start() else { return };
    d.create(json!({"name": "anywhere", "size_class": "micro"}));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("note.txt");
    std::fs::write(&src, "outside the workspace").unwrap();
    let out = d.heyvm(&["cp", src.to_str().unwrap(), "anywhere:/etc/heyvm-cp-test.txt"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    // Into a directory outside the mounts keeps the file name.
    let out = d.heyvm(&["cp", src.to_str().unwrap(), "anywhere:/tmp/"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v = d.sh("anywhere", "cat /etc/heyvm-cp-test.txt; echo; cat /tmp/note.txt; echo; stat -c %u /tmp/note.txt");
    assert_eq!(v["stdout"], "outside the workspace\noutside the workspace\n0\n", "{v}");
    // The sandbox's /etc, not the host's.
    assert!(!std::path::Path::new("/etc/heyvm-cp-test.txt").exists(), "cp wrote to the host's /etc");
    let v = d.heyvm_json(&["files", "anywhere", "/tmp"]);
    let names: Vec<&str> = v["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"note.txt"), "{v}");
    d.sh("anywhere", "hostname > /tmp/hn");
    let back = dir.path().join("hn");
    let out = d.heyvm(&["cp", "anywhere:/tmp/hn", back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), d.sh("anywhere", "hostname")["stdout"].as_str().unwrap());
    // A ranged download of an absolute path: the bytes asked for, and the
    // whole file's size beside them.
    let (s, size, body) = d.get_bytes_and_header("/sandboxes/anywhere/files//tmp/note.txt?offset=4&limit=3", "x-file-size");
    assert_eq!((s, size.as_deref(), body.as_slice()), (200, Some("21"), &b"ide"[..]));
    let out = d.heyvm(&["rm-file", "anywhere", "/tmp/note.txt"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(d.sh("anywhere", "test -e /tmp/note.txt; echo $?")["stdout"], "1\n");
    // `..` cannot climb out of the sandbox's root.
    let out = d.heyvm(&["cp", src.to_str().unwrap(), "anywhere:/../../etc/heyvm-escape.txt"]);
    assert!(!std::path::Path::new("/etc/heyvm-escape.txt").exists(), "cp escaped the sandbox: {}", stderr_of(&out));

    // Stopped: /workspace paths (absolute or relative) still work, through
    // the host directory; anywhere else says the sandbox must run.
    let out = d.heyvm(&["stop", "anywhere"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    if on_vm() {
        // A VM's /workspace is a disk only its guest reads: every path
        // needs it running, and says so.
        let out = d.heyvm(&["cp", src.to_str().unwrap(), "anywhere:/workspace/stopped.txt"]);
        assert!(!out.status.success() && stderr_of(&out).contains("running"), "{}", stderr_of(&out));
        return;
    }
    let out = d.heyvm(&["cp", src.to_str().unwrap(), "anywhere:/workspace/stopped.txt"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let (s, v) = d.get("/sandboxes/anywhere/files?path=/workspace");
    assert_eq!(s, 200, "{v}");
    assert!(v["files"].as_array().unwrap().iter().any(|f| f["name"] == "stopped.txt"), "{v}");
    let out = d.heyvm(&["cp", src.to_str().unwrap(), "anywhere:/tmp/stopped.txt"]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("running"), "{err}");
    let (s, v) = d.get("/sandboxes/anywhere/files?path=/tmp");
    assert_eq!((s, v["error"].as_str()), (409, Some("invalid_state")), "{v}");
}

#[test]
fn cp_round_trip_and_logs_source() {
    let Some(d) = Daemon::start() else { return };
    d.create(json!({"name": "copy", "size_class": "micro", "start_command": "echo to-out; echo to-err >&2; exec sleep 100000"}));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("blob.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let out = d.heyvm(&["cp", src.to_str().unwrap(), "copy:/workspace/sub/blob.bin"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    // Into a directory keeps the file name.
    let out = d.heyvm(&["cp", src.to_str().unwrap(), "copy:/workspace/"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v =
        d.sh("copy", "md5sum /workspace/sub/blob.bin /workspace/blob.bin | cut -d' ' -f1 | uniq | wc -l; stat -c %s /workspace/blob.bin");
    assert_eq!(v["stdout"], "1\n300000\n");
    let back = dir.path().join("back.bin");
    let out = d.heyvm(&["cp", "copy:/workspace/sub/blob.bin", back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(std::fs::read(&back).unwrap(), data);
    // A failed download leaves nothing behind.
    let missing = dir.path().join("missing.bin");
    let out = d.heyvm(&["cp", "copy:/workspace/nope.bin", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no partial file");

    d.wait_until("start command output", Duration::from_secs(10), || d.get("/sandboxes/copy/logs?source=stderr").1["total"] == 1);
    let v = d.heyvm_json(&["logs", "copy", "--source", "stdout"]);
    let msgs: Vec<&str> = v["logs"].as_array().unwrap().iter().map(|l| l["message"].as_str().unwrap()).collect();
    assert_eq!(msgs, ["to-out"]);
    let out = d.heyvm(&["logs", "copy", "--source", "stderr"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[stderr] to-err") && !text.contains("to-out"), "{text}");
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Pids whose environment names this data dir (the auto-started daemon and
/// anything it left behind).
fn pids_with_data_dir(dir: &std::path::Path) -> Vec<i32> {
    let needle = format!("MVM_DATA_DIR={}", dir.display()).into_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| *p as u32 != std::process::id())
        .filter(|p| std::fs::read(format!("/proc/{p}/environ")).is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle)))
        .collect()
}

#[test]
fn cli_starts_the_local_daemon() {
    if !crate::support::sandbox_support() {
        return;
    }
    const PORT: u16 = 34099;
    if !port_free(PORT) {
        eprintln!("SKIP: port {PORT} is in use");
        return;
    }
    let data = tempfile::Builder::new().prefix("heyvm-autostart-").tempdir_in("/tmp").unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env_remove("HEYVM_API_URL")
            .env("MVM_DATA_DIR", data.path())
            .env("HEYVM_POOL_SIZE", "0")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let cleanup = || {
        let v = run(&["list", "--all", "--format", "json"]);
        if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&v.stdout) {
            for i in items {
                run(&["rm", "-y", i["id"].as_str().unwrap_or("")]);
            }
        }
        // SIGTERM first: the daemon stops its warm sandboxes on the way out.
        let daemons = pids_with_data_dir(data.path());
        for &p in &daemons {
            unsafe { libc::kill(p, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && daemons.iter().any(|p| std::path::Path::new(&format!("/proc/{p}")).exists()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for p in pids_with_data_dir(data.path()) {
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        // Its spare disks stay mounted on the host otherwise, and every
        // later sandbox owner on this machine has to detach them.
        crate::support::unmount_under(data.path());
    };
    let out = run(&["list", "--format", "json"]);
    let ok = out.status.success() && serde_json::from_slice::<Value>(&out.stdout).ok() == Some(json!([]));
    let daemons = pids_with_data_dir(data.path());
    let v = run(&["create", "--name", "auto", "--size-class", "micro", "--format", "json"]);
    let created = serde_json::from_slice::<Value>(&v.stdout).ok();
    let exec = run(&["exec", "auto", "--", "echo", "hi"]);
    let start = Instant::now();
    cleanup();
    assert!(ok, "list through an auto-started daemon: {} / {}", String::from_utf8_lossy(&out.stdout), stderr_of(&out));
    assert!(!daemons.is_empty(), "a daemon with this data dir runs");
    assert_eq!(created.as_ref().and_then(|c| c["status"].as_str()), Some("running"), "{created:?}");
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "hi\n");
    assert!(data.path().join("heyvm.db").exists(), "state lives in MVM_DATA_DIR");
    while !port_free(PORT) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn help_explains_commands() {
    for cmd in [
        "create",
        "list",
        "get",
        "start",
        "stop",
        "restart",
        "force-stop",
        "rm",
        "exec",
        "logs",
        "cp",
        "files",
        "rm-file",
        "mounts",
        "update",
    ] {
        let out = Command::new(BIN).args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "{cmd} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:") && text.contains("--format"), "{cmd} --help: {text}");
    }
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HEYVM_API_URL") && text.contains("MVM_DATA_DIR"), "{text}");
    // Bad usage is an error with a non-zero exit, not a panic.
    let out = Command::new(BIN).args(["exec", "x"]).output().unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

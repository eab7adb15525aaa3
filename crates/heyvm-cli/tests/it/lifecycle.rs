//! Setup hooks, the start command and its logs, env/working directory, TTL.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::Daemon;

fn logs(d: &Daemon, id: &str, query: &str) -> Vec<Value> {
    let (s, v) = d.get(&format!("/sandboxes/{id}/logs?limit=1000{query}"));
    assert_eq!(s, 200, "{v}");
    v["logs"].as_array().unwrap().clone()
}

fn messages(entries: &[Value]) -> Vec<String> {
    entries.iter().map(|e| e["message"].as_str().unwrap().to_string()).collect()
}

#[test]
fn setup_hooks_run_once_and_log_their_output() {
    let Some(d) = Daemon::start() else { return };
    let info = d.create(json!({
        "name": "hooks", "size_class": "micro",
        "env_vars": {"GREETING": "hello"},
        "setup_hooks": ["echo hook-one $GREETING", "echo hook-two >&2; echo installed > /root/marker"],
    }));
    assert_eq!(info["status"], "running", "{info}");
    let id = info["id"].as_str().unwrap().to_string();
    let setup = logs(&d, &id, "&source=setup");
    assert!(setup.iter().all(|e| e["source"] == "setup"), "{setup:?}");
    assert_eq!(messages(&setup), ["hook-one hello", "hook-two"]);
    assert_eq!(d.sh(&id, "cat /root/marker")["stdout"], "installed\n");
    // Hooks run once, not at every start.
    d.post(&format!("/sandboxes/{id}/restart"), &json!({}));
    assert_eq!(logs(&d, &id, "&source=setup").len(), 2);
}

#[test]
fn failing_setup_hook_marks_the_sandbox_failed() {
    let Some(d) = Daemon::start() else { return };
    let (s, v) = d.post("/sandboxes", &json!({"name": "badhook", "size_class": "micro", "setup_hooks": ["echo trying; exit 3"]}));
    assert!(s >= 400, "a failed setup is an error: {s} {v}");
    assert!(v["error"].is_string() && v["message"].as_str().unwrap().contains("setup hook"), "{v}");
    let (s, info) = d.get("/sandboxes/badhook");
    assert_eq!(s, 200, "the failed sandbox stays listed: {info}");
    assert_eq!(info["status"], "failed");
    let msg = info["error_message"].as_str().unwrap();
    assert!(msg.contains("setup hook 1") && msg.contains("exit code 3"), "{msg}");
    assert_eq!(messages(&logs(&d, "badhook", "&source=setup")), ["trying"]);
    let (s, v) = d.post("/sandboxes/badhook/execute", &json!({"command": "true"}));
    assert_eq!((s, v["error"].as_str()), (409, Some("invalid_state")), "{v}");
}

#[test]
fn start_command_output_is_logged_and_restarted() {
    let Some(d) = Daemon::start() else { return };
    let info = d.create(json!({
        "name": "svc", "size_class": "micro",
        "working_directory": "/srv", "env_vars": {"MODE": "prod"},
        "start_command": "echo \"up $MODE in $(pwd)\"; echo oops >&2; exec sleep 100000",
    }));
    let id = info["id"].as_str().unwrap().to_string();
    assert_eq!(info["start_command"].as_str().unwrap().split(';').next(), Some("echo \"up $MODE in $(pwd)\""));
    let wait_lines = |n: usize| {
        d.wait_until("start command output", Duration::from_secs(10), || {
            logs(&d, &id, "&source=stdout").len() >= n && logs(&d, &id, "&source=stderr").len() >= n
        })
    };
    wait_lines(1);
    assert_eq!(messages(&logs(&d, &id, "&source=stdout")), ["up prod in /srv"]);
    let err = logs(&d, &id, "&source=stderr");
    assert_eq!(messages(&err), ["oops"]);
    assert_eq!(err[0]["source"], "stderr");
    assert_eq!(d.sh(&id, "pgrep -xc sleep")["stdout"], "1\n");
    // restart runs it again, exactly once.
    let (s, _) = d.post(&format!("/sandboxes/{id}/restart"), &json!({}));
    assert_eq!(s, 200);
    wait_lines(2);
    assert_eq!(messages(&logs(&d, &id, "&source=stdout")), ["up prod in /srv", "up prod in /srv"]);
    assert_eq!(d.sh(&id, "pgrep -xc sleep")["stdout"], "1\n");
    // stop + start too.
    d.post(&format!("/sandboxes/{id}/stop"), &json!({}));
    d.post(&format!("/sandboxes/{id}/start"), &json!({}));
    wait_lines(3);
    // Pagination and tail over the log.
    let (_, all) = d.get(&format!("/sandboxes/{id}/logs?source=stdout&limit=1&offset=1"));
    assert_eq!((all["total"].as_u64(), all["limit"].as_u64(), all["offset"].as_u64()), (Some(3), Some(1), Some(1)), "{all}");
    assert_eq!(all["logs"].as_array().unwrap().len(), 1);
    // PATCH start_command replaces the running one.
    let (s, v) = d.patch(&format!("/sandboxes/{id}"), &json!({"start_command": "echo second; exec sleep 100001"}));
    assert_eq!(s, 200, "{v}");
    d.wait_until("the new start command", Duration::from_secs(10), || {
        messages(&logs(&d, &id, "&source=stdout")).contains(&"second".to_string())
    });
    assert_eq!(d.sh(&id, "pgrep -xc sleep")["stdout"], "1\n");
}

#[test]
fn ttl_deletes_after_running_time_and_patch_changes_it() {
    let Some(d) = Daemon::start() else { return };
    let t0 = Instant::now();
    let short = d.create(json!({"name": "short", "size_class": "micro", "ttl_seconds": 2}));
    assert_eq!(short["ttl_seconds"], 2);
    // Each 2 s sandbox is changed right after its own create: the next
    // create may take longer than 2 s (a VM boots).
    d.create(json!({"name": "cleared", "size_class": "micro", "ttl_seconds": 2}));
    let (s, v) = d.patch("/sandboxes/cleared", &json!({"clear_ttl": true}));
    assert_eq!((s, v["ttl_seconds"].clone()), (200, Value::Null), "{v}");
    // TTL counts running time only: a stopped sandbox does not expire.
    d.create(json!({"name": "parked", "size_class": "micro", "ttl_seconds": 2}));
    d.post("/sandboxes/parked/stop", &json!({}));
    let shortened = d.create(json!({"name": "shortened", "size_class": "micro", "ttl_seconds": 3600}));
    let (s, v) = d.patch("/sandboxes/shortened", &json!({"ttl_seconds": 1}));
    assert_eq!((s, v["ttl_seconds"].as_u64()), (200, Some(1)), "{v}");
    let (s, v) = d.patch("/sandboxes/cleared", &json!({"ttl_seconds": 0}));
    assert_eq!(s, 400, "{v}");
    let gone = |name: &str| d.get(&format!("/sandboxes/{name}")).0 == 404;
    d.wait_until("TTL expiry", Duration::from_secs(15), || gone("short") && gone("shortened"));
    while t0.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!gone("cleared") && !gone("parked"), "cleared TTL / stopped sandboxes must not expire");
    assert_eq!(d.get("/sandboxes/parked").1["status"], "stopped");
    // The record goes first, then the files (a daemon killed in between
    // removes the orphaned directory at its next start): wait for them.
    for v in [&short, &shortened] {
        let dir = d.data.path().join("sandboxes").join(v["id"].as_str().unwrap());
        d.wait_until(&format!("{} removed after expiry", dir.display()), Duration::from_secs(15), || !dir.exists());
    }
}

#[test]
fn mounts_api_adds_and_removes_mounts() {
    let Some(d) = Daemon::start() else { return };
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in.txt"), "from host").unwrap();
    d.create(json!({"name": "m", "size_class": "micro"}));
    let (s, v) = d.get("/sandboxes/m/mounts");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 1, "the workspace is always a mount: {v}");
    assert_eq!(v[0]["sandbox_path"], "/workspace");
    let (s, v) = d.post("/sandboxes/m/mounts", &json!({"host_path": host.path(), "sandbox_path": "/data"}));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["applies_on_restart"], true, "{v}");
    let (s, v) = d.post("/sandboxes/m/mounts", &json!({"host_path": host.path(), "sandbox_path": "/data"}));
    assert_eq!((s, v["error"].as_str()), (409, Some("conflict")), "{v}");
    for bad in ["/usr", "/etc/x", "/proc", "relative", "/run/heyvm", "/a/../etc"] {
        let (s, v) = d.post("/sandboxes/m/mounts", &json!({"host_path": host.path(), "sandbox_path": bad}));
        assert_eq!(s, 400, "{bad}: {v}");
    }
    d.post("/sandboxes/m/restart", &json!({}));
    assert_eq!(d.sh("m", "cat /data/in.txt; echo back > /data/out.txt")["stdout"], "from host");
    assert_eq!(std::fs::read_to_string(host.path().join("out.txt")).unwrap(), "back\n");
    // The file API reaches the mount.
    let (s, v) = d.get("/sandboxes/m/files?mount_path=/data");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["files"].as_array().unwrap().len(), 2, "{v}");
    let (s, v) = d.delete("/sandboxes/m/mounts/data");
    assert_eq!(s, 200, "{v}");
    let (s, v) = d.delete("/sandboxes/m/mounts/data");
    assert_eq!(s, 404, "{v}");
    let (s, v) = d.delete("/sandboxes/m/mounts/workspace");
    assert_eq!(s, 400, "{v}");
    d.post("/sandboxes/m/restart", &json!({}));
    assert_eq!(d.sh("m", "test -e /data/in.txt && echo still")["stdout"], "", "removed at restart");
    assert!(host.path().join("in.txt").exists(), "removing a mount keeps the host files");
}

/// A mount the backend cannot set up is refused when it is asked for (at
/// create, on `POST /mounts`, and removing the mount another one needs),
/// naming it, with nothing made: a VM shares directories only (9p), so a
/// file mount needs a directory mount that shows it at the same path. On
/// bubblewrap, which binds files, the same requests succeed. No boot: the
/// sandboxes are created stopped.
#[test]
fn mounts_the_backend_cannot_set_up_are_refused_up_front() {
    let Some(d) = Daemon::start() else { return };
    let vm = crate::support::on_vm();
    let host = tempfile::tempdir().unwrap();
    let (dir, lone) = (host.path().join("dir"), host.path().join("lone.txt"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("f"), "f").unwrap();
    std::fs::write(&lone, "lone").unwrap();
    let refused = |what: &str, (s, v): (u16, Value), file: &std::path::Path| {
        if vm {
            assert_eq!((s, v["error"].as_str()), (400, Some("invalid_mount")), "{what}: {v}");
            let m = v["message"].as_str().unwrap_or_default();
            assert!(m.contains(&file.display().to_string()) && m.contains("is a file"), "{what}: {v}");
        } else {
            assert!(s == 200 || s == 201, "{what} on bubblewrap: {s} {v}");
        }
    };
    let file_mount = json!([{"host_path": lone, "sandbox_path": "/data/lone", "read_only": true}]);
    refused("create", d.post("/sandboxes", &json!({"name": "m1", "no_start": true, "mounts": file_mount})), &lone);
    assert_eq!(d.get("/sandboxes/m1").0, if vm { 404 } else { 200 }, "a refused create leaves no sandbox");
    d.create(json!({"name": "m2", "no_start": true, "mounts": [{"host_path": dir, "sandbox_path": "/d"}]}));
    refused("POST /mounts", d.post("/sandboxes/m2/mounts", &json!({"host_path": lone, "sandbox_path": "/lone"})), &lone);
    let count = |d: &Daemon| d.get("/sandboxes/m2/mounts").1.as_array().map(Vec::len);
    assert_eq!(count(&d), Some(if vm { 2 } else { 3 }), "a refused mount is not recorded (the workspace is one)");
    // A file the directory mount shows at that very path rides on its share.
    let (s, v) = d.post("/sandboxes/m2/mounts", &json!({"host_path": dir.join("f"), "sandbox_path": "/d/f", "read_only": true}));
    assert_eq!(s, 201, "{v}");
    // ...so that directory mount cannot go while it does.
    refused("removing the carrying mount", d.delete("/sandboxes/m2/mounts/d"), &dir.join("f"));
}

#[test]
fn stop_ends_processes_that_ignore_sigterm() {
    let Some(d) = Daemon::start() else { return };
    let stubborn = "trap '' TERM; while :; do sleep 0.2; done";
    for (name, action) in [("stubborn", "stop"), ("stubborn-force", "force-stop")] {
        let id = d.create(json!({"name": name, "size_class": "micro", "start_command": stubborn}))["id"].as_str().unwrap().to_string();
        // A second process that also ignores SIGTERM, started by an exec.
        let v = d.sh(&id, "setsid sh -c \"trap '' TERM; while :; do sleep 0.2; done\" >/dev/null 2>&1 & echo ok");
        assert_eq!(v["stdout"], "ok\n");
        let (s, v) = d.post(&format!("/sandboxes/{id}/{action}"), &json!({}));
        assert_eq!((s, v["status"].as_str()), (200, Some("stopped")), "{action}: {v}");
        let marker = d.data.path().join("sandboxes").join(&id).display().to_string();
        let survivors: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&marker))
            .collect();
        assert!(survivors.is_empty(), "{action} left processes: {survivors:?}");
        // Removing the cgroups succeeds only once they are empty.
        let cg = crate::isolation::Cgroup::find(&id);
        for c in ["memory", "cpu", "pids"] {
            assert!(!cg.dir(c).exists(), "{action}: {c} cgroup still there (processes left?)");
        }
        // And it starts again cleanly, with the start command running once.
        let (s, v) = d.post(&format!("/sandboxes/{id}/start"), &json!({}));
        assert_eq!(s, 200, "{v}");
        d.wait_until("the start command", Duration::from_secs(10), || d.sh(&id, "pgrep -xc sleep")["stdout"] != "0\n");
    }
}

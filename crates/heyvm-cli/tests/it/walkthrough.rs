//! The seed 002 "API mode" walkthrough over HTTP, step by step, asserting
//! the JSON shapes existing clients rely on.

use serde_json::{json, Value};

use crate::support::Daemon;

fn assert_info_shape(v: &Value) {
    for k in ["id", "name", "slug", "status", "sandbox_type", "image", "backend_type", "created_at"] {
        assert!(!v[k].is_null(), "SandboxInfo lacks {k}: {v}");
    }
    assert!(v["id"].as_str().unwrap().starts_with("sb-") && v["id"].as_str().unwrap().len() == 11, "id format: {v}");
    assert!(v["urls"].is_array(), "urls must be an array: {v}");
    assert!(v["mounts"].is_array() && v["open_ports"].is_array(), "{v}");
    assert!(v["uptime"]["secs"].is_u64() && v["uptime"]["nanos"].is_u64(), "uptime shape: {v}");
    assert!(v["cpu_usage"].is_number() && v["memory_usage"].is_number(), "{v}");
}

#[test]
fn seed_002_walkthrough() {
    let Some(d) = Daemon::start_with_images() else { return };
    let (s, v) = d.get("/health");
    assert_eq!((s, v), (200, json!({"status": "ok"})));

    // 2. create
    let info =
        d.create(json!({"name": "api-demo", "sandbox_type": "shell", "image": "ubuntu:24.04", "ttl_seconds": 3600, "size_class": "micro"}));
    assert_info_shape(&info);
    assert_eq!(info["name"], "api-demo");
    assert_eq!(info["slug"], "api-demo");
    assert_eq!(info["status"], "running");
    assert_eq!(info["ttl_seconds"], 3600);
    let id = info["id"].as_str().unwrap().to_string();

    // 3. list and get (by id, slug and name)
    let (s, list) = d.get("/sandboxes");
    assert_eq!(s, 200);
    let list = list.as_array().expect("list is an array");
    assert_eq!(list.len(), 1);
    assert_info_shape(&list[0]);
    assert_eq!(list[0]["id"], id.as_str());
    for key in [id.as_str(), "api-demo"] {
        let (s, v) = d.get(&format!("/sandboxes/{key}"));
        assert_eq!(s, 200, "{key}: {v}");
        assert_eq!(v["id"], id.as_str());
    }

    // 4. execute
    let (s, v) = d.post("/sandboxes/api-demo/execute", &json!({"command": "echo", "args": ["hello from the sandbox"]}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["output"], "hello from the sandbox\n");
    assert_eq!(v["stdout"], "hello from the sandbox\n");
    assert_eq!(v["stderr"], "");
    assert_eq!(v["exit_code"], 0);
    let (s, v) = d.post(&format!("/sandboxes/{id}/execute"), &json!({"command": "ls", "args": ["-la", "/workspace"]}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["exit_code"], 0);
    assert!(v["output"].as_str().unwrap().contains("total"), "{v}");

    // 6. files: multipart and JSON upload, list, download, delete
    let html = b"<h1>hi</h1>\n";
    let (s, v) = d.upload_multipart("api-demo", "/workspace", "index.html", html);
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["size"], html.len());
    assert_eq!(v["file_path"], "index.html");
    let (s, v) = d.upload_json("api-demo", "/workspace", "hello.txt", b"Hello world!");
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["mount_path"], "/workspace");
    // Both are visible inside the sandbox.
    let v = d.sh(&id, "cat /workspace/hello.txt /workspace/index.html");
    assert_eq!(v["stdout"], "Hello world!<h1>hi</h1>\n");
    let (s, v) = d.get("/sandboxes/api-demo/files?mount_path=/workspace");
    assert_eq!(s, 200, "{v}");
    let mut names: Vec<&str> = v["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["hello.txt", "index.html"]);
    let f = v["files"].as_array().unwrap().iter().find(|f| f["name"] == "hello.txt").unwrap();
    assert_eq!(f["size"], 12);
    assert_eq!(f["is_dir"], false);
    let (s, body) = d.get_bytes("/sandboxes/api-demo/files/index.html?mount_path=/workspace");
    assert_eq!(s, 200);
    assert_eq!(body, html);
    let (s, v) = d.delete("/sandboxes/api-demo/files/hello.txt?mount_path=/workspace");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["deleted"], true);
    let (s, v) = d.get_bytes("/sandboxes/api-demo/files/hello.txt?mount_path=/workspace");
    assert_eq!(s, 404, "{}", String::from_utf8_lossy(&v));
    assert_eq!(d.sh(&id, "test -e /workspace/hello.txt; echo $?")["stdout"], "1\n");

    // 8. logs
    let (s, v) = d.get("/sandboxes/api-demo/logs?limit=50");
    assert_eq!(s, 200, "{v}");
    assert!(v["logs"].is_array());
    assert_eq!(v["limit"], 50);
    assert_eq!(v["offset"], 0);
    assert!(v["total"].as_u64().unwrap() >= 1, "lifecycle events are logged: {v}");
    let e = &v["logs"][0];
    assert!(e["timestamp"].is_i64() && e["source"].is_string() && e["message"].is_string(), "{e}");

    // 9. update
    let (s, v) = d.patch("/sandboxes/api-demo", &json!({"env_vars": {"DEBUG": "true"}, "open_ports": [8080]}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["env_vars"]["DEBUG"], "true");
    assert_eq!(v["open_ports"], json!([8080]));
    assert_eq!(d.sh(&id, "echo $DEBUG")["stdout"], "true\n");

    // 5. lifecycle
    let (s, v) = d.post("/sandboxes/api-demo/stop", &json!({}));
    assert_eq!((s, v["status"].as_str()), (200, Some("stopped")), "{v}");
    let (_, list) = d.get("/sandboxes");
    assert_eq!(list[0]["status"], "stopped", "stopped sandboxes stay listed: {list}");
    let (s, v) = d.post("/sandboxes/api-demo/start", &json!({}));
    assert_eq!((s, v["status"].as_str()), (200, Some("running")), "{v}");
    assert_eq!(d.sh(&id, "cat /workspace/index.html")["stdout"], "<h1>hi</h1>\n");
    let (s, v) = d.post("/sandboxes/api-demo/restart", &json!({}));
    assert_eq!((s, v["status"].as_str()), (200, Some("running")), "{v}");
    assert_eq!(d.sh(&id, "echo up")["stdout"], "up\n");
    let (s, v) = d.post("/sandboxes/api-demo/force-stop", &json!({}));
    assert_eq!((s, v["status"].as_str()), (200, Some("stopped")), "{v}");
    let (s, v) = d.delete("/sandboxes/api-demo");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["deleted"], true);
    assert_eq!(v["id"], id.as_str());
    let (s, v) = d.get("/sandboxes");
    assert_eq!((s, v), (200, json!([])));
    assert!(!d.data.path().join("sandboxes").join(&id).exists(), "delete removes the sandbox's files");
}

#[test]
fn list_filters_by_status_and_keeps_stopped() {
    let Some(d) = Daemon::start() else { return };
    d.create(json!({"name": "up", "size_class": "micro"}));
    d.create(json!({"name": "down", "size_class": "micro", "no_start": true}));
    let names = |q: &str| -> Vec<String> {
        let (s, v) = d.get(&format!("/sandboxes{q}"));
        assert_eq!(s, 200, "{v}");
        let mut n: Vec<String> = v.as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect();
        n.sort();
        n
    };
    assert_eq!(names(""), ["down", "up"]);
    assert_eq!(names("?status=running"), ["up"]);
    assert_eq!(names("?status=stopped"), ["down"]);
    let (s, v) = d.get("/sandboxes?status=bogus");
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_query")), "{v}");
}

#[test]
fn execute_semantics() {
    let Some(d) = Daemon::start() else { return };
    let info = d.create(json!({"name": "ex", "size_class": "micro", "env_vars": {"FROM_CREATE": "c"}, "working_directory": "/tmp"}));
    let id = info["id"].as_str().unwrap();

    // Merged output keeps the order the streams were written in.
    let v = d.sh(id, "echo one; sleep 0.05; echo two >&2; sleep 0.05; echo three; exit 3");
    assert_eq!(v["output"], "one\ntwo\nthree\n");
    assert_eq!(v["stdout"], "one\nthree\n");
    assert_eq!(v["stderr"], "two\n");
    assert_eq!(v["exit_code"], 3);

    // working_directory, env_vars, per-exec cwd and env.
    let v = d.sh(id, "pwd; echo $FROM_CREATE");
    assert_eq!(v["stdout"], "/tmp\nc\n");
    let (s, v) = d.post(
        &format!("/sandboxes/{id}/execute"),
        &json!({"command": "/bin/sh", "args": ["-c", "pwd; echo $X"], "cwd": "/workspace", "env": {"X": "y z"}}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stdout"], "/workspace\ny z\n");

    // A command with spaces and no args runs under sh.
    let (s, v) = d.post(&format!("/sandboxes/{id}/execute"), &json!({"command": "echo a b | tr a-z A-Z"}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stdout"], "A B\n");

    // A missing cwd is the caller's mistake.
    let (s, v) = d.post(&format!("/sandboxes/{id}/execute"), &json!({"command": "pwd", "cwd": "/nonexistent"}));
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("/nonexistent"), "{v}");
    // A missing program is an ordinary exit 127, as in a shell.
    let (s, v) = d.post(&format!("/sandboxes/{id}/execute"), &json!({"command": "/no/such/program"}));
    assert_eq!((s, v["exit_code"].as_i64()), (200, Some(127)), "{v}");
    assert!(v["stderr"].as_str().unwrap().contains("not found"), "{v}");
}

#[test]
fn timeout_kills_the_whole_process_tree() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "to", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    // A background child in its own session would escape a process-group
    // kill; the timeout must get it too. Both write a marker if they live.
    let script = "(sleep 2; touch /workspace/bg-alive) & setsid sh -c 'sleep 2; touch /workspace/sid-alive' & echo started; sleep 30";
    let (s, v) = d.post(&format!("/sandboxes/{id}/execute"), &json!({"command": "/bin/sh", "args": ["-c", script], "timeout_secs": 0.5}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["timed_out"], true, "{v}");
    assert_ne!(v["exit_code"], 0, "{v}");
    assert!(v["stdout"].as_str().unwrap().starts_with("started\n"), "{v}");
    assert!(v["output"].as_str().unwrap().contains("timed out"), "the response says so: {v}");
    assert!(v["duration_ms"].as_u64().unwrap() < 10_000, "{v}");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let v = d.sh(&id, "ls -A /workspace; ps -eo comm= | grep -c sleep || true");
    assert_eq!(v["stdout"], "0\n", "no process of the timed-out command survives (no marker files, no sleeps): {v}");
}

#[test]
fn fifty_concurrent_execs_on_one_sandbox() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "conc", "size_class": "small"}))["id"].as_str().unwrap().to_string();
    let d = &d;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let id = id.clone();
                s.spawn(move || {
                    let (st, v) = d.post(
                        &format!("/sandboxes/{id}/execute"),
                        &json!({"command": "/bin/sh", "args": ["-c", format!("echo out-{i}; echo err-{i} >&2")]}),
                    );
                    (i, st, v)
                })
            })
            .collect();
        for h in handles {
            let (i, st, v) = h.join().unwrap();
            assert_eq!(st, 200, "exec {i}: {v}");
            assert_eq!(v["stdout"], format!("out-{i}\n"), "exec {i}: {v}");
            assert_eq!(v["stderr"], format!("err-{i}\n"), "exec {i}: {v}");
            assert_eq!(v["exit_code"], 0);
        }
    });
}

#[test]
fn id_slug_and_name_all_resolve() {
    let Some(d) = Daemon::start() else { return };
    let info = d.create(json!({"name": "My_Box.1", "size_class": "micro"}));
    assert_eq!(info["slug"], "my-box-1");
    let id = info["id"].as_str().unwrap();
    for key in [id, "my-box-1", "My_Box.1"] {
        let (s, v) = d.get(&format!("/sandboxes/{key}"));
        assert_eq!((s, v["id"].as_str()), (200, Some(id)), "{key}: {v}");
        let (s, v) = d.post(&format!("/sandboxes/{key}/execute"), &json!({"command": "hostname"}));
        assert_eq!((s, v["stdout"].as_str()), (200, Some("my-box-1\n")), "{key}: {v}");
    }
    // The CLI resolves the same keys.
    assert_eq!(d.heyvm_json(&["get", "my-box-1"])["id"], id);
}

#[test]
fn large_files_and_output() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "big", "size_class": "small"}))["id"].as_str().unwrap().to_string();
    // Well past the 10 MB cap of the product this replaces.
    let data: Vec<u8> = (0..24 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let (s, v) = d.upload_multipart(&id, "/workspace", "deep/dir/blob.bin", &data);
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["size"], data.len());
    let (s, body) = d.get_bytes(&format!("/sandboxes/{id}/files/deep/dir/blob.bin"));
    assert_eq!(s, 200);
    assert!(body == data, "downloaded content differs");
    assert_eq!(d.sh(&id, "stat -c %s /workspace/deep/dir/blob.bin")["stdout"], format!("{}\n", data.len()));
    // 8 MiB of output comes back whole, on both streams.
    let v = d.sh(&id, "head -c 8388608 /dev/zero | tr '\\0' a; head -c 1000 /dev/zero | tr '\\0' b >&2");
    assert_eq!(v["stdout"].as_str().unwrap().len(), 8 << 20);
    assert_eq!(v["stderr"].as_str().unwrap(), "b".repeat(1000));
    assert_eq!(v["output"].as_str().unwrap().len(), (8 << 20) + 1000);
}

#[test]
fn background_children_do_not_hold_an_exec_open() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "bg", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    let v = d.sh(&id, "sleep 1000 & echo started");
    assert_eq!(v["stdout"], "started\n");
    assert!(v["duration_ms"].as_u64().unwrap() < 60_000, "{v}");
}

#[test]
fn stop_and_delete_end_execs_in_flight() {
    let Some(d) = Daemon::start() else { return };
    for action in ["stop", "force-stop", "delete"] {
        let name = format!("busy-{action}");
        d.create(json!({"name": name, "size_class": "micro"}));
        std::thread::scope(|s| {
            let long = s.spawn(|| d.post(&format!("/sandboxes/{name}/execute"), &json!({"command": "sleep", "args": ["1000"]})));
            d.wait_until("the exec to start", std::time::Duration::from_secs(10), || {
                d.sh(&name, "pgrep -x sleep >/dev/null && echo y")["stdout"] == "y\n"
            });
            let (s, v) = if action == "delete" {
                d.delete(&format!("/sandboxes/{name}"))
            } else {
                d.post(&format!("/sandboxes/{name}/{action}"), &json!({}))
            };
            assert_eq!(s, 200, "{action}: {v}");
            // The in-flight exec ends (killed), as a response rather than a hang.
            let (s, v) = long.join().unwrap();
            assert!(s == 200 && v["exit_code"] != 0 || s >= 500, "{action}: exec in flight got {s} {v}");
            assert!(v["error"].is_string() || v["exit_code"].is_i64(), "{action}: {v}");
        });
    }
}

#[test]
fn concurrent_creates_and_lifecycle_calls() {
    // 12 at once: on the VM pass, more than the default running-VM quota
    // of a small host (which has its own test in quota::).
    let Some(d) = Daemon::start_with(&[("HEYVM_MAX_RUNNING_VMS", "16")]) else { return };
    let d = &d;
    std::thread::scope(|s| {
        let hs: Vec<_> =
            (0..12).map(|i| s.spawn(move || d.post("/sandboxes", &json!({"name": format!("par-{i}"), "size_class": "micro"})))).collect();
        for (i, h) in hs.into_iter().enumerate() {
            let (st, v) = h.join().unwrap();
            assert_eq!((st, v["status"].as_str()), (201, Some("running")), "create {i}: {v}");
        }
    });
    // Lifecycle calls on one sandbox are serialised: each one succeeds.
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..4).map(|_| s.spawn(move || d.post("/sandboxes/par-0/restart", &json!({})))).collect();
        for h in hs {
            let (st, v) = h.join().unwrap();
            assert_eq!(st, 200, "{v}");
        }
    });
    assert_eq!(d.sh("par-0", "echo ok")["stdout"], "ok\n");
    let (_, list) = d.get("/sandboxes?status=running");
    assert_eq!(list.as_array().unwrap().len(), 12);
}

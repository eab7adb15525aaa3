//! The heyo-sdk compatibility routes at the HTTP level: every route, with
//! the field names and types heyo-sdk 0.1.15 deserialises (the real SDK is
//! exercised by compat/run-heyo-sdk-check.sh, outside the suite).

use base64::Engine;
use serde_json::{json, Value};

use crate::support::{on_vm, Daemon};

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unb64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(v.as_str().expect("base64 string")).unwrap()
}

/// What heyo-sdk's `SandboxInfo` requires or reads with a fixed type.
fn assert_sdk_sandbox_shape(v: &Value) {
    assert!(v["id"].as_str().unwrap().starts_with("sb-"), "{v}");
    assert!(["provisioning", "running", "stopped", "paused", "failed"].contains(&v["status"].as_str().unwrap()), "{v}");
    for key in ["status_changed_at", "created_at"] {
        let t = v[key].as_str().unwrap_or_else(|| panic!("{key} must be a string: {v}"));
        assert!(t.len() == 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T', "{key} is not RFC 3339: {t}");
    }
    assert!(v["urls"].is_array() && v["port_mappings"].is_array(), "{v}");
    assert!(v["uptime_secs"].is_u64() && v["memory"].is_u64() && v["is_deployed"].is_boolean(), "{v}");
    assert!(v["cpus"].is_null() || v["cpus"].is_u64(), "{v}");
    assert!(v["name"].is_string() && v["image"].is_string() && v["backend_type"].is_string(), "{v}");
    let mounts = v["mounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["sandbox_path"] == "/workspace"), "/workspace is always a mount: {v}");
}

#[test]
fn compat_deploy_exec_files_and_lifecycle() {
    let Some(d) = Daemon::start_with_images() else { return };
    // The body heyo-sdk's Sandbox::create sends, with its defaults filled in.
    let (s, v) = d.post(
        "/sandbox-deploy",
        &json!({"name": "sdk-one", "region": "US", "image": "ubuntu:24.04", "size_class": "micro", "open_ports": [],
                "env_vars": {"FOO": "bar"}, "ttl_seconds": 0, "disk_size_gb": 10, "cpus": 2}),
    );
    assert_eq!(s, 201, "{v}");
    assert_sdk_sandbox_shape(&v);
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["status"], "running");
    assert_eq!(v["name"], "sdk-one");
    assert_eq!(v["size_class"], "micro");
    assert_eq!(v["memory"], 512 * 1024 * 1024);
    assert!(v["cpus"].is_null(), "micro is a quarter vCPU: {v}");
    assert_eq!(v["vcpus"], 0.25);
    assert!(v["ttl_seconds"].is_null(), "ttl 0 means none: {v}");
    assert_eq!(v["region"], "US");
    assert_eq!(v["ignored_fields"], json!(["cpus"]));
    assert_eq!(v["disk_size_gb"], 10, "disk_size_gb overrides micro's 2 GiB: {v}");

    // Listing, by id and by name.
    let (s, list) = d.get("/deployed-sandboxes");
    assert_eq!(s, 200);
    let entry = list.as_array().unwrap().iter().find(|e| e["id"] == id.as_str()).expect("listed");
    assert_sdk_sandbox_shape(entry);
    let (_, by_name) = d.get("/deployed-sandboxes?name=sdk-one");
    assert_eq!(by_name.as_array().unwrap().len(), 1);
    let (_, none) = d.get("/deployed-sandboxes?name=sdk-none");
    assert_eq!(none, json!([]));
    let (s, one) = d.get("/deployed-sandboxes/sdk-one");
    assert_eq!((s, one["id"].as_str()), (200, Some(id.as_str())));

    // exec: a shell line by default, argv with args; env and cwd.
    let (s, out) = d.post(&format!("/sandbox/{id}/exec"), &json!({"command": "echo $FOO $X; echo e >&2; exit 4", "env": {"X": "y"}}));
    assert_eq!(s, 200, "{out}");
    assert_eq!((out["stdout"].as_str(), out["stderr"].as_str(), out["exit_code"].as_i64()), (Some("bar y\n"), Some("e\n"), Some(4)));
    assert!(out["output"].as_str().unwrap().contains("bar y") && out["output"].as_str().unwrap().contains('e'));
    let (_, out) = d.post(&format!("/sandbox/{id}/exec"), &json!({"command": "printf", "args": ["%s-%s", "a b", "c"]}));
    assert_eq!(out["stdout"], "a b-c");
    let (_, out) = d.post(&format!("/sandbox/{id}/exec"), &json!({"command": "pwd", "cwd": "/tmp"}));
    assert_eq!(out["stdout"], "/tmp\n");
    let (_, out) = d.post(&format!("/sandbox/{id}/exec"), &json!({"command": "pwd"}));
    assert_eq!(out["stdout"], "/workspace\n");

    // write-file / read-file: base64, /workspace default, confined.
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let (s, w) =
        d.post(&format!("/sandbox/{id}/write-file"), &json!({"mount_path": "/workspace", "file_path": "d/x.bin", "content": b64(&data)}));
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["size"], 10_000);
    let (s, r) = d.post(&format!("/sandbox/{id}/read-file"), &json!({"mount_path": "/workspace", "file_path": "d/x.bin"}));
    assert_eq!(s, 200, "{r}");
    assert_eq!(unb64(&r["content"]), data);
    d.post(&format!("/sandbox/{id}/write-file"), &json!({"file_path": "hello.txt", "content": b64(b"hi\n")}));
    let (_, out) = d.post(&format!("/sandbox/{id}/exec"), &json!({"command": "cat /workspace/hello.txt"}));
    assert_eq!(out["stdout"], "hi\n");
    d.post(&format!("/sandbox/{id}/exec"), &json!({"command": "echo inside > /workspace/in.txt"}));
    let (_, r) = d.post(&format!("/sandbox/{id}/read-file"), &json!({"file_path": "in.txt"}));
    assert_eq!(unb64(&r["content"]), b"inside\n");
    let (s, e) = d.post(&format!("/sandbox/{id}/read-file"), &json!({"file_path": "nope.txt"}));
    assert_eq!((s, e["error"].as_str()), (404, Some("file_not_found")));
    let (s, e) = d.post(&format!("/sandbox/{id}/read-file"), &json!({"file_path": "../../../etc/passwd"}));
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_path")), "{e}");
    let (s, e) = d.post(&format!("/sandbox/{id}/write-file"), &json!({"file_path": "x", "content": "%%%"}));
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_base64")));
    let (s, e) = d.post(&format!("/sandbox/{id}/read-file"), &json!({"mount_path": "/nowhere", "file_path": "x"}));
    assert_eq!(s, 400, "{e}");

    // stop (idempotent), inactive listing, exec refused, start (idempotent).
    let (s, v) = d.post(&format!("/sandbox/{id}/stop"), &json!({}));
    assert_eq!((s, v["status"].as_str()), (200, Some("stopped")), "{v}");
    let (s, _) = d.post(&format!("/sandbox/{id}/stop"), &json!({}));
    assert_eq!(s, 200);
    let (s, page) = d.get("/sandboxes/inactive");
    assert_eq!(s, 200);
    let entry = page["sandboxes"].as_array().unwrap().iter().find(|e| e["id"] == id.as_str()).expect("inactive lists it");
    assert_eq!(entry["status"], "stopped");
    assert_sdk_sandbox_shape(entry);
    assert!(page["next_cursor"].is_null());
    let (s, e) = d.post(&format!("/sandbox/{id}/exec"), &json!({"command": "true"}));
    assert_eq!((s, e["error"].as_str()), (409, Some("invalid_state")));
    let (s, v) = d.post(&format!("/sandbox/{id}/start"), &json!({}));
    assert_eq!((s, v["status"].as_str()), (200, Some("running")), "{v}");
    let (s, _) = d.post(&format!("/sandbox/{id}/start"), &json!({}));
    assert_eq!(s, 200);
    let (_, page) = d.get("/sandboxes/inactive");
    assert!(!page["sandboxes"].as_array().unwrap().iter().any(|e| e["id"] == id.as_str()));
    let (_, r) = d.post(&format!("/sandbox/{id}/read-file"), &json!({"file_path": "hello.txt"}));
    assert_eq!(unb64(&r["content"]), b"hi\n", "files persist across stop/start");

    // restart, ttl, resize.
    let (s, v) = d.post(&format!("/deployed-sandboxes/{id}/restart"), &json!({}));
    assert_eq!((s, v["status"].as_str()), (200, Some("running")), "{v}");
    let (_, v) = d.post(&format!("/deployed-sandboxes/{id}/ttl"), &json!({"ttl_seconds": 600}));
    assert_eq!(v["ttl_seconds"], 600);
    let (_, v) = d.post(&format!("/deployed-sandboxes/{id}/ttl"), &json!({"ttl_seconds": 0}));
    assert!(v["ttl_seconds"].is_null());
    let (s, v) = d.post(&format!("/deployed-sandboxes/{id}/resize"), &json!({"size_class": "mini"}));
    if on_vm() {
        // A running VM's vCPUs and guest RAM are fixed (no memory hotplug):
        // a clear refusal that says what to do instead.
        assert_eq!((s, v["error"].as_str()), (501, Some("unsupported")), "{v}");
        assert!(v["message"].as_str().unwrap().contains("stop and start"), "{v}");
    } else {
        assert_eq!((s, v["size_class"].as_str(), v["memory"].as_u64()), (200, Some("mini"), Some(1 << 30)), "{v}");
    }

    // delete; then 404 with a JSON error (heyo-sdk's kill treats it as done).
    let (s, v) = d.delete(&format!("/deployed-sandboxes/{id}"));
    assert_eq!((s, v["deleted"].as_bool()), (200, Some(true)));
    let (s, e) = d.get(&format!("/deployed-sandboxes/{id}"));
    assert_eq!((s, e["error"].as_str()), (404, Some("sandbox_not_found")));
    let (s, _) = d.delete(&format!("/deployed-sandboxes/{id}"));
    assert_eq!(s, 404);
    let (s, e) = d.post(&format!("/sandbox/{id}/start"), &json!({}));
    assert_eq!((s, e["error"].as_str()), (404, Some("sandbox_not_found")));
}

#[test]
fn compat_deploy_refuses_what_it_cannot_honour() {
    let Some(d) = Daemon::start() else { return };
    let cases = [
        (json!({"name": "a", "driver": "hyperv"}), 400, "backend_unavailable"),
        (json!({"name": "b", "s3_archive_key": "u/a/ar-1.tar.gz"}), 400, "unsupported"),
        (json!({"name": "b2", "region": "MARS"}), 400, "invalid_request"),
        (json!({"name": "c", "mounts": [{"tree_id": "t1", "sandbox_path": "/data"}]}), 400, "unsupported"),
        (json!({"name": "d", "mounts": [{"sandbox_path": "/data"}]}), 400, "invalid_request"),
        (json!({"name": "e", "size_class": "huge"}), 400, "invalid_request"),
        (json!({"name": "f", "working_directory": "relative"}), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let (s, v) = d.post("/sandbox-deploy", &body);
        assert_eq!((s, v["error"].as_str()), (status, Some(code)), "{body} -> {v}");
        assert!(v["message"].is_string());
    }
    let (s, v) = d.post_raw("/sandbox-deploy", "application/json", b"{not json");
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_json")));
    let (s, _) = d.get("/deployed-sandboxes");
    assert_eq!(s, 200);
    let (_, list) = d.get("/sandboxes");
    assert_eq!(list, json!([]), "nothing half-created");

    // The daemon's own backend is accepted under the cloud's field name.
    let (s, v) = d.post("/sandbox-deploy", &json!({"name": "ok", "driver": "bubblewrap", "size_class": "micro"}));
    assert_eq!((s, v["backend_type"].as_str()), (201, Some("bubblewrap")), "{v}");
    assert!(v.get("ignored_fields").is_none(), "nothing ignored: {v}");
    let (s, e) = d.post("/sandbox/ok/exec", &json!({"command": "  "}));
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_request")));
    let (s, e) = d.post("/sandbox/ok/exec", &json!({"args": ["x"]}));
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_request")), "command is required: {e}");
    // A bubblewrap checkpoint is files only (memory: false); the compat
    // restore takes the latest and says the processes were restarted.
    let (s, ck) = d.post("/deployed-sandboxes/ok/checkpoint", &json!({}));
    assert_eq!((s, ck["memory"].as_bool()), (201, Some(false)), "{ck}");
    let (s, r) = d.post("/deployed-sandboxes/ok/restore", &json!({}));
    assert_eq!((s, r["processes"].as_str()), (200, Some("restarted")), "{r}");
    assert_eq!(r["checkpoint"]["name"], ck["name"], "{r}");
    // What each working backend boots, the default backend's first.
    let (s, imgs) = d.get("/public-images");
    assert_eq!(s, 200, "{imgs}");
    let listed: Vec<(&str, &str)> =
        imgs["images"].as_array().unwrap().iter().map(|i| (i["backend_type"].as_str().unwrap(), i["id"].as_str().unwrap())).collect();
    let default = crate::support::test_backend().unwrap_or_else(|| "bubblewrap".into());
    assert_eq!(listed.first().map(|l| l.0), Some(default.as_str()), "{imgs}");
    assert!(listed.contains(&("bubblewrap", "host")), "{imgs}");
    let (_, backends) = d.get("/system/backends");
    let kvm = backends.as_array().unwrap().iter().any(|b| b["name"] == "kvm" && b["available"] == true);
    assert_eq!(listed.contains(&("kvm", "debian-vm")), kvm, "the VM image is listed where VMs boot: {imgs} {backends}");
    // One backend, by an alias: only its images.
    let (_, imgs) = d.get("/public-images?backend=firecracker");
    let only: Vec<&Value> = imgs["images"].as_array().unwrap().iter().collect();
    assert_eq!(only.first().map(|i| &i["id"]), kvm.then(|| json!("debian-vm")).as_ref(), "{imgs}");
    assert!(only.iter().all(|i| i["backend_type"] == "kvm"), "{imgs}");
    let (_, imgs) = d.get("/public-images?backend=docker");
    assert_eq!(imgs["images"], json!([]));
    let (s, e) = d.get("/deployed-sandboxes?status=bogus");
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_query")));
}

#[test]
fn compat_system_usage_and_inactive_paging() {
    let Some(d) = Daemon::start() else { return };
    let mut ids = Vec::new();
    for name in ["use-a", "use-b", "use-c"] {
        let (s, v) = d.post("/sandbox-deploy", &json!({"name": name, "size_class": "micro"}));
        assert_eq!(s, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let (s, out) = d.post(&format!("/sandbox/{}/exec", ids[0]), &json!({"command": "sleep 30 >/dev/null 2>&1 & echo started"}));
    assert_eq!((s, out["stdout"].as_str()), (200, Some("started\n")));

    let (s, u) = d.get("/system/usage");
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["available"], true);
    let snap = &u["snapshot"];
    assert!(snap["sampledAtMs"].as_u64().unwrap() > 1_600_000_000_000);
    let host = &snap["host"];
    assert!(host["cpuCount"].as_u64().unwrap() >= 1);
    let pct = host["cpuPercent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&pct), "{host}");
    let total = host["memoryTotalBytes"].as_u64().unwrap();
    assert!(total > 0 && host["memoryUsedBytes"].as_u64().unwrap() <= total && host["memoryAvailableBytes"].as_u64().unwrap() <= total);
    assert!(host["memoryReserveBytes"].is_u64());
    let sbs = snap["sandboxes"].as_array().unwrap();
    assert_eq!(sbs.len(), 3, "{snap}");
    let a = sbs.iter().find(|s| s["sandboxId"] == ids[0].as_str()).expect("usage lists use-a");
    assert_eq!(a["name"], "use-a");
    assert!(a["cpuPercent"].is_f64() && a["memoryBytes"].as_u64().unwrap() > 0, "{a}");
    let pids = a["pids"].as_array().unwrap();
    if on_vm() {
        // A VM's processes are its guest's, not host pids: none are listed.
        assert!(pids.is_empty(), "{a}");
    } else {
        assert!(pids.len() >= 2 && pids.iter().all(|p| p.as_u64().is_some_and(|p| p > 1)), "agent and sleep: {a}");
        let others = sbs.iter().find(|s| s["sandboxId"] == ids[1].as_str()).unwrap();
        assert!(others["pids"].as_array().unwrap().len() < pids.len(), "pids are per sandbox: {snap}");
    }

    // Stopped sandboxes leave the usage and page through the inactive list.
    for id in &ids {
        let (s, _) = d.post(&format!("/sandbox/{id}/stop"), &json!({}));
        assert_eq!(s, 200);
    }
    let (_, u) = d.get("/system/usage");
    assert_eq!(u["snapshot"]["sandboxes"], json!([]));
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let q = match &cursor {
            Some(c) => format!("/sandboxes/inactive?count=2&cursor={c}"),
            None => "/sandboxes/inactive?count=2".to_string(),
        };
        let (s, page) = d.get(&q);
        assert_eq!(s, 200, "{page}");
        let items = page["sandboxes"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want, "every stopped sandbox once, in id order");
    let (s, e) = d.get("/sandboxes/inactive?count=0");
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_query")));
    let (s, e) = d.get("/sandboxes/inactive?count=abc");
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_query")));
}

#[test]
fn compat_deploy_from_archive_and_bind_port() {
    let Some(d) = Daemon::start() else { return };
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("app.txt"), "from the archive\n").unwrap();
    let tar = std::process::Command::new("tar").args(["-czf", "-", "-C"]).arg(src.path()).arg(".").output().unwrap();
    assert!(tar.status.success());
    let (s, ar) = d.post_raw("/archives", "application/gzip", &tar.stdout);
    assert_eq!(s, 201, "{ar}");
    let archive_id = ar["archive_id"].as_str().unwrap();

    let (s, v) = d.post("/sandbox-deploy", &json!({"name": "from-ar", "archive_id": archive_id, "region": "EU", "size_class": "micro"}));
    assert_eq!(s, 201, "{v}");
    assert_sdk_sandbox_shape(&v);
    assert_eq!((v["archive_id"].as_str(), v["region"].as_str()), (Some(archive_id), Some("EU")));
    let id = v["id"].as_str().unwrap();
    let (_, r) = d.post(&format!("/sandbox/{id}/read-file"), &json!({"file_path": "app.txt"}));
    assert_eq!(unb64(&r["content"]), b"from the archive\n");
    let (s, e) = d.post("/sandbox-deploy", &json!({"name": "no-ar", "archive_id": "ar-00000000"}));
    assert!(s == 400 || s == 404, "unknown archive: {s} {e}");

    // heyo-sdk's bind_port: public by default, then visible on the native route.
    let (s, b) = d.post("/proxy-endpoints/for-deployed", &json!({"sandbox_id": id, "port": 8080}));
    assert_eq!(s, 201, "{b}");
    assert!(b["subdomain"].is_string() && b["url"].is_string() && b["hostname"].is_string(), "{b}");
    assert_eq!((b["port"].as_u64(), b["is_public"].as_bool()), (Some(8080), Some(true)));
    let (_, list) = d.get(&format!("/sandboxes/{id}/proxy"));
    assert!(list["proxies"].as_array().unwrap().iter().any(|e| e["subdomain"] == b["subdomain"]), "{list}");
    let (_, info) = d.get(&format!("/deployed-sandboxes/{id}"));
    assert!(info["urls"].as_array().unwrap().iter().any(|u| u["port"] == 8080), "{info}");
    let (s, b) = d.post("/proxy-endpoints/for-deployed", &json!({"sandbox_id": id, "port": 9090, "is_public": false}));
    assert_eq!((s, b["is_public"].as_bool()), (201, Some(false)));
    let (s, e) = d.post("/proxy-endpoints/for-deployed", &json!({"sandbox_id": "sb-00000000", "port": 80}));
    assert_eq!((s, e["error"].as_str()), (404, Some("sandbox_not_found")));
    let (s, e) = d.post("/proxy-endpoints/for-deployed", &json!({"sandbox_id": id, "port": 0}));
    assert_eq!(s, 400, "{e}");
}

//! Bad input gets the right status and stable code, and nothing is written.

use serde_json::{json, Value};

use crate::support::{enc, multipart, Daemon};

fn assert_err(got: (u16, Value), status: u16, code: &str, what: &str) {
    let (s, v) = got;
    assert_eq!(s, status, "{what}: {v}");
    assert_eq!(v["error"], code, "{what}: {v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: error needs a message: {v}");
}

/// Every file route with one bad path, as (description, response);
/// `reset` runs before each request (an upload may replace a planted link).
fn file_routes(d: &Daemon, id: &str, path: &str, reset: &dyn Fn()) -> Vec<(String, (u16, Value))> {
    let e = enc(path);
    let bytes = |r: (u16, Vec<u8>)| (r.0, serde_json::from_slice(&r.1).unwrap_or(Value::Null));
    type Route<'a> = (&'a str, &'a dyn Fn() -> (u16, Value));
    let routes: [Route; 5] = [
        ("list", &|| d.get(&format!("/sandboxes/{id}/files?mount_path=/workspace&path={e}"))),
        ("multipart", &|| d.upload_multipart(id, "/workspace", path, b"pwned")),
        ("json upload", &|| d.upload_json(id, "/workspace", path, b"pwned")),
        ("download", &|| bytes(d.get_bytes(&format!("/sandboxes/{id}/files/{e}?mount_path=/workspace")))),
        ("delete", &|| d.delete(&format!("/sandboxes/{id}/files/{e}?mount_path=/workspace"))),
    ];
    routes
        .iter()
        .map(|(what, call)| {
            reset();
            (format!("{what} {path}"), call())
        })
        .collect()
}

#[test]
fn traversal_is_refused_on_every_file_route() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "trav", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    // A host file the sandbox must not reach, and symlinks planted inside
    // the sandbox that point at it (the daemon resolves paths on the host).
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    let hp = host.path().display().to_string();
    let plant = format!(
        "cd /workspace && ln -sfn /etc etc && ln -sfn {hp} hostdir && rm -f leak && ln -s {hp}/secret.txt leak && ln -sfn ../../../.. up"
    );
    let reset = || assert_eq!(d.sh(&id, &plant)["exit_code"], 0);

    let sandbox_dir = d.data.path().join("sandboxes").join(&id);
    for path in [
        "../x",
        "../../x",
        "a/../../x",
        "/etc/passwd",
        "/x",
        "etc/passwd",
        "etc/x",
        "hostdir/secret.txt",
        "hostdir/x",
        "leak",
        "up/x",
        "up/etc/passwd",
    ] {
        for (what, got) in file_routes(&d, &id, path, &reset) {
            if path == "leak" && what.starts_with("delete") {
                // Deleting the link itself is allowed; the target must survive.
                assert!(got.0 == 200 || got.0 == 400, "{what}: {:?}", got);
                continue;
            }
            if path == "leak" && (what.starts_with("multipart") || what.starts_with("json")) && got.0 == 201 {
                // Replacing the link with a regular file is also safe.
                continue;
            }
            assert_err(got, 400, "invalid_path", &what);
        }
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret", "the host file was changed");
    assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 1, "something was written to the host directory");
    assert!(!sandbox_dir.join("x").exists() && !d.data.path().join("x").exists() && !std::path::Path::new("/x").exists());
    assert!(!std::path::Path::new("/etc/x").exists());

    // A bad mount_path.
    assert_err(d.get(&format!("/sandboxes/{id}/files?mount_path={}", enc("/workspace/../etc"))), 400, "invalid_path", "mount_path with ..");
    let (s, v) = d.get(&format!("/sandboxes/{id}/files?mount_path=/etc"));
    assert_eq!(s, 400, "not a mount: {v}");
    let (s, v) = d.upload_json(&id, "/etc", "passwd", b"x");
    assert_eq!(s, 400, "upload to a non-mount: {v}");
    // Files and directories used the wrong way round.
    assert_eq!(d.sh(&id, "mkdir -p /workspace/dir && echo x > /workspace/dir/file")["exit_code"], 0);
    let (s, v) = d.get(&format!("/sandboxes/{id}/files?path=dir/file"));
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_path")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("'dir/file' or one of its parents is not a directory"), "{v}");
    let (s, _) = d.get_bytes(&format!("/sandboxes/{id}/files/dir"));
    assert_eq!(s, 400, "downloading a directory");
    let (s, v) = d.upload_json(&id, "/workspace", "dir", b"x");
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_path")), "uploading over a directory: {v}");
    let (s, v) = d.delete(&format!("/sandboxes/{id}/files/dir"));
    assert_eq!((s, v["error"].as_str()), (409, Some("conflict")), "non-recursive delete of a full directory: {v}");
    let (s, v) = d.delete(&format!("/sandboxes/{id}/files/dir?recursive=true"));
    assert_eq!(s, 200, "{v}");
    // Missing file is 404, not a traversal.
    assert_err(d.delete(&format!("/sandboxes/{id}/files/nope.txt")), 404, "file_not_found", "delete missing");
}

#[test]
fn unknown_ids_are_404() {
    let Some(d) = Daemon::start() else { return };
    let nf = "sandbox_not_found";
    assert_err(d.get("/sandboxes/nope"), 404, nf, "get");
    assert_err(d.get("/sandboxes/sb-00000000"), 404, nf, "get by id");
    assert_err(d.patch("/sandboxes/nope", &json!({"ttl_seconds": 5})), 404, nf, "patch");
    assert_err(d.delete("/sandboxes/nope"), 404, nf, "delete");
    for action in ["start", "stop", "restart", "force-stop"] {
        assert_err(d.post(&format!("/sandboxes/nope/{action}"), &json!({})), 404, nf, action);
    }
    assert_err(d.post("/sandboxes/nope/execute", &json!({"command": "true"})), 404, nf, "execute");
    assert_err(d.get("/sandboxes/nope/files"), 404, nf, "files");
    assert_err(d.upload_json("nope", "/workspace", "a", b"a"), 404, nf, "upload");
    assert_err(d.upload_multipart("nope", "/workspace", "a", b"a"), 404, nf, "multipart");
    assert_err(d.get("/sandboxes/nope/logs"), 404, nf, "logs");
    assert_err(d.get("/sandboxes/nope/mounts"), 404, nf, "mounts");
    assert_err(d.get("/no/such/route"), 404, "route_not_found", "route");
}

#[test]
fn wrong_states_are_409() {
    let Some(d) = Daemon::start() else { return };
    d.create(json!({"name": "st", "size_class": "micro"}));
    assert_err(d.post("/sandboxes/st/start", &json!({})), 409, "invalid_state", "start on running");
    d.post("/sandboxes/st/stop", &json!({}));
    assert_err(d.post("/sandboxes/st/stop", &json!({})), 409, "invalid_state", "stop on stopped");
    assert_err(d.post("/sandboxes/st/force-stop", &json!({})), 409, "invalid_state", "force-stop on stopped");
    assert_err(d.post("/sandboxes/st/execute", &json!({"command": "true"})), 409, "invalid_state", "exec on stopped");
    assert_err(d.post("/sandboxes", &json!({"name": "st"})), 409, "name_taken", "duplicate name");
}

#[test]
fn malformed_requests_are_400() {
    let Some(d) = Daemon::start() else { return };
    d.create(json!({"name": "mal", "size_class": "micro"}));
    assert_err(d.post_raw("/sandboxes", "application/json", b"{\"name\":"), 400, "invalid_json", "truncated JSON");
    assert_err(d.post_raw("/sandboxes/mal/execute", "application/json", b"not json"), 400, "invalid_json", "garbage");
    let (s, v) = d.post_raw("/sandboxes", "text/plain", b"{}");
    assert_eq!(s, 415, "{v}");
    let long = "a".repeat(64);
    assert_err(d.post("/sandboxes", &json!({"name": long})), 400, "invalid_request", "64-char name");
    assert_err(d.patch("/sandboxes/mal", &json!({"name": long})), 400, "invalid_request", "64-char rename");
    for (body, what) in [
        (json!({"name": "x", "colour": "blue"}), "unknown field"),
        (json!({"name": "bad name!"}), "bad name chars"),
        (json!({"name": "sb-12345678"}), "id-shaped name"),
        (json!({"name": "x", "size_class": "huge"}), "size class"),
        (json!({"name": "x", "ttl_seconds": -1}), "negative ttl"),
        (json!({"name": "x", "ttl_seconds": 0}), "zero ttl"),
        (json!({"name": "x", "working_directory": "relative"}), "relative workdir"),
        (json!({"name": "x", "env_vars": {"A=B": "c"}}), "env key with ="),
        (json!({"name": "x", "mounts": [{"host_path": "/no/such/dir", "sandbox_path": "/data"}]}), "missing mount source"),
        (json!({"name": "x", "mounts": [{"host_path": "/tmp", "sandbox_path": "relative"}]}), "relative mount target"),
        (json!({"name": "x", "backend_type": "nosuch"}), "unknown backend"),
    ] {
        let (s, v) = d.post("/sandboxes", &body);
        assert_eq!(s, 400, "{what}: {v}");
        assert!(v["error"].is_string() && v["message"].is_string(), "{what}: {v}");
    }
    assert_err(d.patch("/sandboxes/mal", &json!({"colour": "blue"})), 400, "invalid_request", "unknown PATCH field");
    let (_, list) = d.get("/sandboxes");
    assert_eq!(list.as_array().unwrap().len(), 1, "no sandbox was created by bad requests: {list}");
    for (body, what) in [
        (json!({"command": ""}), "empty command"),
        (json!({"command": "true", "timeout_secs": -1}), "negative timeout"),
        (json!({"command": "true", "cwd": "relative"}), "relative cwd"),
        (json!({"args": ["x"]}), "missing command"),
        (json!({"command": "true", "args": "notalist"}), "args not a list"),
    ] {
        let (s, v) = d.post("/sandboxes/mal/execute", &body);
        assert_eq!(s, 400, "{what}: {v}");
    }
    assert_err(d.get("/sandboxes/mal/logs?limit=abc"), 400, "invalid_query", "bad limit");
    let (s, v) = d.post_raw("/sandboxes/mal/files/upload", "application/json", br#"{"file_path": "a", "content": "***"}"#);
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_base64")), "{v}");
    let (ct, body) = multipart(&[("mount_path", None, b"/workspace")]);
    let (s, v) = d.post_raw("/sandboxes/mal/files", &ct, &body);
    assert_eq!(s, 400, "multipart without a file: {v}");
    let (s, v) = d.post_raw("/sandboxes/mal/files", "multipart/form-data; boundary=x", b"garbage");
    assert_eq!(s, 400, "broken multipart: {v}");
}

#[test]
fn uploads_over_the_limit_are_413_and_leave_nothing() {
    let Some(d) = Daemon::start_with(&[("HEYVM_MAX_UPLOAD_BYTES", "1000")]) else { return };
    let id = d.create(json!({"name": "big", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    let big = vec![b'x'; 2000];
    assert_err(d.upload_multipart(&id, "/workspace", "big.bin", &big), 413, "payload_too_large", "multipart");
    assert_err(d.upload_json(&id, "/workspace", "big.bin", &big), 413, "payload_too_large", "json");
    let left = workspace_names(&d, &id);
    assert!(left.is_empty(), "a rejected upload left files behind: {left:?}");
    let (s, v) = d.upload_multipart(&id, "/workspace", "ok.bin", &big[..1000]);
    assert_eq!(s, 201, "exactly the limit is fine: {v}");
    let (s, v) = d.upload_json(&id, "/workspace", "ok2.bin", &big[..1000]);
    assert_eq!(s, 201, "exactly the limit is fine: {v}");
    // A too-large upload over an existing file keeps the old content.
    assert_err(d.upload_multipart(&id, "/workspace", "ok.bin", &big), 413, "payload_too_large", "overwrite");
    assert_eq!(d.sh(&id, "wc -c < /workspace/ok.bin")["stdout"], "1000\n");
    assert_eq!(workspace_names(&d, &id), ["ok.bin", "ok2.bin"]);
}

/// What `/workspace` holds, sorted, as the sandbox sees it (a VM's is a
/// disk of its own, whose ext4 root has a `lost+found`).
fn workspace_names(d: &Daemon, id: &str) -> Vec<String> {
    let v = d.sh(id, "ls -A /workspace");
    let mut names: Vec<String> = v["stdout"].as_str().unwrap().lines().filter(|n| *n != "lost+found").map(String::from).collect();
    names.sort();
    names
}

/// Deploy archives and build contexts share the image uploads' body loop:
/// over the limit a 413, empty a 400, and no file is left either way.
#[test]
fn archive_and_build_bodies_over_the_limit_are_413_and_leave_nothing() {
    let Some(d) = Daemon::start_with(&[("HEYVM_MAX_UPLOAD_BYTES", "1000")]) else { return };
    let big = vec![b'x'; 2000];
    for path in ["/archives", "/images/build?tag=never%3A1"] {
        let (s, v) = d.post_raw(path, "application/gzip", &big);
        assert_eq!((s, v["error"].as_str()), (413, Some("payload_too_large")), "{path}: {v}");
        let (s, v) = d.post_raw(path, "application/gzip", b"");
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_archive")), "{path} empty: {v}");
    }
    for dir in ["archives", "builds"] {
        let left: Vec<_> =
            std::fs::read_dir(d.data.path().join(dir)).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "a refused body left files in {dir}/: {left:?}");
    }
}

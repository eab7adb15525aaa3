//! The file routes carried by the in-sandbox agent: on a VM (the only way
//! its files can be reached) and on bubblewrap with
//! `HEYVM_FILES_VIA_AGENT=1`, with the same answers as the host route. The
//! hostile cases attack the agent route's defences: a FIFO must not hang
//! the download, a symlink must not reach what the sandbox itself cannot
//! read, a file grown during a download must not overrun its length.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{on_vm, vm_support, Daemon};

/// Upload (JSON and multipart), list, download, delete and the usual
/// errors, the same on every route.
fn round_trip(d: &Daemon, id: &str) {
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let (s, v) = d.upload_multipart(id, "/workspace", "deep/dir/big.bin", &big);
    assert_eq!((s, v["size"].as_u64()), (201, Some(5_000_000)), "{v}");
    let (s, v) = d.upload_json(id, "/workspace", "note.txt", b"hello agent");
    assert_eq!((s, v["mount_path"].as_str()), (201, Some("/workspace")), "{v}");
    let (s, body) = d.get_bytes(&format!("/sandboxes/{id}/files/deep/dir/big.bin"));
    assert_eq!(s, 200);
    assert!(body == big, "download differs ({} bytes)", body.len());
    let (s, v) = d.get(&format!("/sandboxes/{id}/files?path=deep"));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["files"][0]["name"], "dir");
    assert_eq!((v["files"][0]["path"].as_str(), v["files"][0]["is_dir"].as_bool()), (Some("deep/dir"), Some(true)), "{v}");
    let (s, v) = d.post(&format!("/sandbox/{id}/read-file"), &json!({"file_path": "note.txt"}));
    assert_eq!((s, v["content"].as_str()), (200, Some("aGVsbG8gYWdlbnQ=")), "{v}");
    // The sandbox sees what was written, owned by its root.
    let v = d.sh(id, "cat /workspace/note.txt; stat -c %u /workspace/note.txt");
    assert_eq!(v["stdout"], "hello agent0\n", "{v}");

    let err = |r: (u16, Value)| (r.0, r.1["error"].as_str().unwrap_or_default().to_string());
    assert_eq!(err(d.get(&format!("/sandboxes/{id}/files/nope.txt"))), (404, "file_not_found".into()));
    assert_eq!(err(d.get(&format!("/sandboxes/{id}/files/deep"))), (400, "invalid_path".into()));
    assert_eq!(err(d.delete(&format!("/sandboxes/{id}/files/deep"))), (409, "conflict".into()));
    assert_eq!(err(d.get(&format!("/sandboxes/{id}/files?path=../etc"))), (400, "invalid_path".into()));
    let (s, v) = d.delete(&format!("/sandboxes/{id}/files/deep?recursive=true"));
    assert_eq!((s, v["deleted"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(d.sh(id, "test -e /workspace/deep && echo left || echo gone")["stdout"], "gone\n");
}

/// Symlinks planted in the mount: a request scoped to it (`mount_path`)
/// never follows one out (the agent resolves beneath the mount; on
/// bubblewrap without openat2, which its seccomp profile refuses, by
/// hand), while links that stay inside still work.
fn planted_links(d: &Daemon, id: &str) {
    let plant = "cd /workspace && mkdir -p in/d && echo inside > in/d/f && ln -sfn /etc etc && ln -sfn ../../.. up && ln -sfn in/d ok";
    assert_eq!(d.sh(id, plant)["exit_code"], 0);
    let err = |r: (u16, Value)| (r.0, r.1["error"].as_str().unwrap_or_default().to_string());
    let bad = (400, "invalid_path".to_string());
    for path in ["etc/passwd", "up/etc/passwd"] {
        let (s, body) = d.get_bytes(&format!("/sandboxes/{id}/files/{path}?mount_path=/workspace"));
        assert_eq!(s, 400, "download {path}: {}", String::from_utf8_lossy(&body));
        assert_eq!(err(d.upload_json(id, "/workspace", &format!("{path}.new"), b"x")), bad, "upload {path}");
        assert_eq!(err(d.delete(&format!("/sandboxes/{id}/files/{path}?mount_path=/workspace"))), bad, "delete {path}");
    }
    assert_eq!(err(d.get(&format!("/sandboxes/{id}/files?mount_path=/workspace&path=etc"))), bad, "list etc");
    assert_eq!(d.sh(id, "test -e /etc/passwd.new && echo written || echo no")["stdout"], "no\n");
    let (s, body) = d.get_bytes(&format!("/sandboxes/{id}/files/ok/f"));
    assert_eq!((s, body.as_slice()), (200, b"inside\n".as_slice()));
    assert_eq!(d.sh(id, "rm -rf /workspace/in /workspace/etc /workspace/up /workspace/ok")["exit_code"], 0);
}

#[test]
fn bubblewrap_files_through_the_agent_match_the_host_route_and_resist_planted_files() {
    let Some(d) = Daemon::start_with(&[("HEYVM_FILES_VIA_AGENT", "1")]) else { return };
    let id = d.create(json!({"name": "fa", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    round_trip(&d, &id);
    planted_links(&d, &id);

    // A FIFO nobody writes: refused at once, the daemon stays responsive.
    d.sh(&id, "mkfifo /workspace/p");
    let t = Instant::now();
    let (s, v) = d.get(&format!("/sandboxes/{id}/files/p"));
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_path")), "{v}");
    assert!(t.elapsed() < Duration::from_secs(5), "the FIFO download took {:?}", t.elapsed());
    // A symlink to a host file the sandbox cannot read itself: the agent
    // acts with the sandbox's rights, so it cannot read it either.
    let host_secret = std::fs::read("/etc/shadow").unwrap_or_default();
    d.sh(&id, "ln -s /etc/shadow /workspace/s; ln -s /dev/zero /workspace/z");
    let (s, body) = d.get_bytes(&format!("/sandboxes/{id}/files/s"));
    assert!(s >= 400 || host_secret.is_empty() || body != host_secret, "the host's /etc/shadow came out ({s})");
    let (s, _) = d.get_bytes(&format!("/sandboxes/{id}/files/z"));
    assert_eq!(s, 400, "a device was streamed");
    // A file the sandbox keeps growing: the download ends at the length it
    // announced, it does not follow the writer.
    let writer = d.sh(
        &id,
        "head -c 1000000 /dev/zero > /workspace/grow; \
         (while :; do head -c 65536 /dev/zero >> /workspace/grow; done) >/dev/null 2>&1 & echo $!",
    );
    let writer = writer["stdout"].as_str().unwrap().trim().to_string();
    let (s, body) = d.get_bytes(&format!("/sandboxes/{id}/files/grow"));
    d.sh(&id, &format!("kill {writer}; rm -f /workspace/grow"));
    assert_eq!(s, 200);
    assert!(body.len() >= 1_000_000 && body.len() < 1_000_000_000, "{} bytes", body.len());

    // Stopped: the agent route needs a running sandbox; bubblewrap falls
    // back to the host route and keeps answering; a VM has no host route.
    let (s, _) = d.post(&format!("/sandboxes/{id}/stop"), &json!({}));
    assert_eq!(s, 200);
    let (s, v) = d.get(&format!("/sandboxes/{id}/files"));
    if on_vm() {
        assert_eq!((s, v["error"].as_str()), (409, Some("invalid_state")), "{v}");
    } else {
        assert_eq!(s, 200, "{v}");
    }
}

#[test]
fn vm_files_go_through_the_agent() {
    if !vm_support() {
        return;
    }
    let Some(d) = Daemon::start() else { return };
    let sb = d.create(json!({"name": "vmfiles", "backend_type": "kvm", "size_class": "micro"}));
    let id = sb["id"].as_str().unwrap().to_string();
    round_trip(&d, &id);
    planted_links(&d, &id);
    // Only the guest can see its disks: a stopped VM's files answer 409.
    let (s, _) = d.post(&format!("/sandboxes/{id}/stop"), &json!({}));
    assert_eq!(s, 200);
    let (s, v) = d.get(&format!("/sandboxes/{id}/files"));
    assert_eq!((s, v["error"].as_str()), (409, Some("invalid_state")), "{v}");
}

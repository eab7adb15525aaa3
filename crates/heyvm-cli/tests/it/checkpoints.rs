//! Filesystem checkpoints of bubblewrap sandboxes: the writable layer and
//! `/workspace` (the sandbox's own disk image, copied while frozen),
//! `memory: false`, processes restarted on restore and fork. The VM tier's
//! checkpoints (with memory) are in `vm.rs`.

use serde_json::{json, Value};

use crate::support::Daemon;

fn stdout(v: &Value) -> String {
    v["stdout"].as_str().unwrap_or_default().trim().to_string()
}

fn create_bwrap(d: &Daemon, name: &str) -> String {
    let sb = d.create(json!({"name": name, "backend_type": "bubblewrap", "size_class": "micro"}));
    sb["id"].as_str().unwrap().to_string()
}

#[test]
fn bubblewrap_checkpoint_restore_and_fork_bring_files_back_and_restart_processes() {
    let Some(d) = Daemon::start() else { return };
    let id = create_bwrap(&d, "ck1");
    // Files in /workspace, in the writable root, in an overlaid system
    // directory, and a deleted host file (a whiteout in the upper layer).
    d.sh(&id, "echo before > /workspace/w && echo root > /root/r && echo etc > /etc/heyvm-ck && rm -f /etc/issue && echo ok");
    let pid = stdout(&d.sh(&id, "sleep 1000 >/dev/null 2>&1 & echo $!"));

    let ck = d.heyvm_json(&["checkpoint", &id, "--name", "one"]);
    assert_eq!((ck["name"].as_str(), ck["memory"].as_bool()), (Some("one"), Some(false)), "{ck}");
    assert!(ck["size_bytes"].as_u64().unwrap() > 0, "{ck}");
    assert!(ck["created_at"].as_str().unwrap().ends_with('Z'));
    let list = d.heyvm_json(&["checkpoints", &id]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let (s, v) = d.post(&format!("/sandboxes/{id}/checkpoints"), &json!({"name": "one"}));
    assert_eq!((s, v["error"].as_str()), (409, Some("conflict")), "a taken name: {v}");
    assert_eq!(stdout(&d.sh(&id, "echo still > /workspace/alive && cat /workspace/alive")), "still", "thawed after the copy");

    // A name the store cannot hold is the caller's mistake (400), on the
    // API and the compat route (one handler), and nothing is taken.
    for bad in ["../up", "a b", "x".repeat(65).as_str()] {
        let (s, v) = d.post(&format!("/sandboxes/{id}/checkpoints"), &json!({ "name": bad }));
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "{bad}: {v}");
    }
    assert_eq!(d.heyvm_json(&["checkpoints", &id]).as_array().map(Vec::len), Some(1), "only 'one'");

    // Changes after the checkpoint, which the restore takes away.
    d.sh(&id, "echo changed > /workspace/w && echo later > /root/after && rm /root/r && touch /etc/issue");
    let r = d.heyvm_json(&["restore", &id, "one"]);
    assert_eq!(r["processes"], "restarted", "{r}");
    assert_eq!(r["checkpoint"]["memory"], false, "{r}");
    assert_eq!(r["sandbox"]["status"], "running", "{r}");
    let check = format!(
        "cat /workspace/w /root/r /etc/heyvm-ck; test -e /root/after && echo after || echo no-after; \
         test -e /etc/issue && echo issue || echo no-issue; kill -0 {pid} 2>/dev/null && echo alive || echo restarted"
    );
    assert_eq!(stdout(&d.sh(&id, &check)), "before\nroot\netc\nno-after\nno-issue\nrestarted");

    // A fork: a new sandbox with the checkpoint's files, its own name and
    // uid range (root inside still owns root's files), independent.
    let (s, f) = d.post(&format!("/sandboxes/{id}/fork"), &json!({"checkpoint": "one", "name": "ck1-fork"}));
    assert_eq!(s, 201, "{f}");
    assert_eq!(f["processes"], "restarted", "{f}");
    let fid = f["sandbox"]["id"].as_str().unwrap().to_string();
    assert_ne!(fid, id);
    let v = d.sh(&fid, "cat /workspace/w /root/r; hostname; stat -c %u:%g /workspace/w /root; echo x > /root/mine && echo wrote");
    assert_eq!(stdout(&v), "before\nroot\nck1-fork\n0:0\n0:0\nwrote", "{v}");
    d.sh(&id, "echo original > /workspace/only-original");
    let v = d.sh(&fid, "test -e /workspace/only-original && echo leaked || echo separate");
    assert_eq!(stdout(&v), "separate");
    assert_eq!(stdout(&d.sh(&id, "test -e /root/mine && echo leaked || echo separate")), "separate");
    // The fork's files belong to its own uid range on the host.
    let (src_uid, fork_uid) = (host_uid(&d, &id, "workspace/w"), host_uid(&d, &fid, "workspace/w"));
    assert_ne!(src_uid, fork_uid, "each sandbox has its own uid range");

    // Forking without a name of a checkpoint takes the latest.
    let f2 = d.heyvm_json(&["fork", &id]);
    assert_eq!(f2["checkpoint"]["name"], "one", "{f2}");

    let r = d.heyvm(&["checkpoint", "rm", &id, "one"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (s, v) = d.post(&format!("/sandboxes/{id}/restore"), &json!({"name": "one"}));
    assert_eq!((s, v["error"].as_str()), (404, Some("checkpoint_not_found")), "{v}");

    // A stopped sandbox can be checkpointed and restored too.
    let (s, _) = d.post(&format!("/sandboxes/{id}/stop"), &json!({}));
    assert_eq!(s, 200);
    let (s, ck) = d.post(&format!("/sandboxes/{id}/checkpoints"), &json!({"name": "stopped"}));
    assert_eq!((s, ck["memory"].as_bool()), (201, Some(false)), "{ck}");
    let (s, r) = d.post(&format!("/sandboxes/{id}/restore"), &json!({}));
    assert_eq!((s, r["sandbox"]["status"].as_str()), (200, Some("running")), "{r}");
    assert_eq!(stdout(&d.sh(&id, "cat /workspace/only-original")), "original");
}

fn host_uid(d: &Daemon, id: &str, rel: &str) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(d.storage(id).join(rel)).unwrap().uid()
}

/// Attack: a sandbox plants symlinks to a host file and to `/`, FIFOs,
/// hardlinks and device nodes in its writable layer and `/workspace`, then
/// asks for a checkpoint, a restore and a fork. The host side must copy
/// none of the targets, never block on a FIFO, never chown through a link,
/// and the planted things come back as what they were.
#[test]
fn attack_planted_links_fifos_and_devices_are_not_followed_by_checkpoints() {
    let Some(d) = Daemon::start() else { return };
    let secret = format!("HOST-SECRET-{}", std::process::id());
    let bait = d.data.path().join("bait");
    std::fs::write(&bait, &secret).unwrap();
    let id = create_bwrap(&d, "ck2");
    let bait_s = bait.display().to_string();
    let plant = format!(
        "ln -s {bait_s} /workspace/bait; ln -s {bait_s} /root/bait; ln -s / /workspace/hostroot; ln -s /etc/passwd /root/pw; \
         mkfifo /workspace/fifo /root/fifo; echo data > /workspace/a; ln /workspace/a /workspace/a-hard; \
         mknod /root/null c 1 3 2>/dev/null; mknod /workspace/zero c 1 5 2>/dev/null; echo planted"
    );
    assert_eq!(stdout(&d.sh(&id, &plant)), "planted");

    let (s, ck) = d.post(&format!("/sandboxes/{id}/checkpoints"), &json!({"name": "trap"}));
    assert_eq!(s, 201, "{ck}");
    let image = d.data.path().join("sandboxes").join(&id).join("checkpoints/trap/disk.img");
    let bytes = std::fs::read(&image).unwrap();
    assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "the host file was copied into the checkpoint");

    let (s, r) = d.post(&format!("/sandboxes/{id}/restore"), &json!({"name": "trap"}));
    assert_eq!(s, 200, "{r}");
    let (s, f) = d.post(&format!("/sandboxes/{id}/fork"), &json!({"checkpoint": "trap", "name": "ck2-fork"}));
    assert_eq!(s, 201, "{f}");
    let fid = f["sandbox"]["id"].as_str().unwrap().to_string();

    let inspect = "readlink /workspace/bait /root/bait /workspace/hostroot; test -p /workspace/fifo && test -p /root/fifo && echo fifos; \
         test $(stat -c %i /workspace/a) = $(stat -c %i /workspace/a-hard) && echo hardlinked; \
         for n in /root/null /workspace/zero; do test -e $n && { test -c $n || echo not-a-device; }; done; \
         cat /workspace/bait 2>/dev/null || echo unreadable";
    let want = format!("{bait_s}\n{bait_s}\n/\nfifos\nhardlinked\nunreadable");
    for sb in [&id, &fid] {
        assert_eq!(stdout(&d.sh(sb, inspect)), want, "sandbox {sb}");
    }
    // Nothing on the host was touched through the links: the fork's
    // ownership move did not chown the bait or the host's root files.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&bait).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0), "bait chowned through a planted link");
    assert_eq!(std::fs::read_to_string(&bait).unwrap(), secret);
    for host in ["/etc/passwd", "/", "/usr/bin"] {
        assert_eq!(std::fs::metadata(host).unwrap().uid(), 0, "{host} chowned through a planted link");
    }
}

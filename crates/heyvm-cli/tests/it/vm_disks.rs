//! A VM's disks on the host: the root overlay's cap (a guest filling `/`
//! is stopped, not allowed to take the host's disk) and the cache of image
//! base disks (`images rm` / `images prune` remove the ones nothing needs).
//! One VM on a small OCI image serves every assertion (TCG boots are slow).

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{vm_support, Daemon};

fn stdout(v: &Value) -> String {
    v["stdout"].as_str().unwrap_or_default().trim().to_string()
}

#[test]
fn attack_vm_filling_its_root_disk_is_stopped_at_the_cap_and_unused_base_disks_are_pruned() {
    if !vm_support() {
        return;
    }
    let Some(reg) = crate::registry::Registry::shared() else { return };
    let mirror = format!("docker.io={}", reg.addr);
    let Some(d) = Daemon::start_with(&[("HEYVM_VM_ROOT_DISK_MB", "64"), ("HEYVM_REGISTRY_MIRRORS", &mirror)]) else { return };
    let base = reg.with_busybox().image("busybox:1");
    // An image of its own (a unique layer), so its base disk is this test's.
    let ctx = tempfile::tempdir_in("/tmp").unwrap();
    let unique = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
    std::fs::write(ctx.path().join("Dockerfile"), format!("FROM {base}\nRUN echo '{unique}' > /unique\n")).unwrap();
    let out = d.heyvm_json(&["images", "build", "--backend-type", "kvm", "-t", "vmcap:1", ctx.path().to_str().unwrap()]);
    assert_eq!(out["prepared_for"], "kvm", "{out}");

    let sb = d.create(json!({"name": "vmcap", "backend_type": "kvm", "size_class": "micro", "network": "none", "image": "vmcap:1"}));
    let id = sb["id"].as_str().unwrap().to_string();
    let overlay = d.data.path().join("sandboxes").join(&id).join("vm/root.qcow2");
    let info = std::process::Command::new("qemu-img").args(["info", "-U", "--output=json"]).arg(&overlay).output().unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap_or(Value::Null);
    let base_disk = std::path::PathBuf::from(info["backing-filename"].as_str().unwrap_or_default());
    assert!(base_disk.to_string_lossy().contains("/images/oci/"), "{info}");
    let (s, _) = d.post("/images/prune", &json!({}));
    assert_eq!(s, 200);
    assert!(base_disk.exists(), "a base disk in use survives a prune");

    // Below the cap, writes to / work.
    assert_eq!(stdout(&d.sh(&id, "dd if=/dev/zero of=/small bs=1M count=8 2>/dev/null && sync && echo ok")), "ok");
    // The attack: fill the root disk far past the 64 MiB cap.
    let fill = json!({"command": "/bin/sh", "args": ["-c", "dd if=/dev/zero of=/fill bs=1M count=600; sync; echo survived"]});
    let (_, v) = d.post(&format!("/sandboxes/{id}/execute"), &fill);
    assert_ne!(stdout(&v), "survived", "the guest wrote 600 MiB past a 64 MiB cap: {v}");
    d.wait_until("the VM to be stopped", Duration::from_secs(120), || d.get(&format!("/sandboxes/{id}")).1["status"] == "failed");
    let (_, v) = d.get(&format!("/sandboxes/{id}"));
    assert!(v["error_message"].as_str().unwrap_or_default().contains("root disk grew past its cap"), "{v}");
    let used = std::fs::metadata(&overlay).unwrap().blocks() * 512;
    assert!(used < 500 << 20, "stopped near the cap, not after the whole write ({} MiB)", used >> 20);
    // It does not boot again past its cap.
    let (s, v) = d.post(&format!("/sandboxes/{id}/start"), &json!({}));
    assert!(s >= 400 && v["message"].as_str().unwrap_or_default().contains("cap"), "{s} {v}");

    // Base disks: kept while the image is in the store, removed with it
    // once no VM file names it.
    let (s, _) = d.delete(&format!("/sandboxes/{id}"));
    assert_eq!(s, 200);
    let (s, _) = d.post("/images/prune", &json!({}));
    assert_eq!(s, 200);
    assert!(base_disk.exists(), "the image is still in the store");
    let out = d.heyvm(&["images", "rm", "vmcap:1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!base_disk.exists(), "images rm removed the unused base disk");
}

/// PATCH `disk_size_gb` on a running VM grows its `/workspace` at once:
/// QEMU's `block_resize` makes the disk larger, the guest agent grows the
/// mounted ext4 (`EXT4_IOC_RESIZE_FS`). Same boot, same processes, files
/// intact, the new space usable, and the file system clean afterwards.
#[test]
fn vm_workspace_disk_grows_online_without_a_restart() {
    if !vm_support() {
        return;
    }
    let Some(d) = Daemon::start() else { return };
    let sb = d.create(json!({"name": "vmgrow", "backend_type": "kvm", "size_class": "micro", "network": "none", "disk_size_gb": 1}));
    let id = sb["id"].as_str().unwrap().to_string();
    let size_kib = |d: &Daemon| -> u64 { stdout(&d.sh(&id, "df -k --output=size /workspace | tail -1")).parse().unwrap() };
    let before = size_kib(&d);
    assert!(before > 900 << 10 && before <= 1 << 20, "{before} KiB");
    let boot_id = stdout(&d.sh(&id, "cat /proc/sys/kernel/random/boot_id"));
    assert_eq!(stdout(&d.sh(&id, "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo started")), "started");
    let sum = stdout(&d.sh(
        &id,
        "head -c 50M /dev/urandom > /workspace/data && mkdir -p /workspace/d && echo kept > /workspace/d/f && sha256sum /workspace/data",
    ));

    let (s, v) = d.patch(&format!("/sandboxes/{id}"), &json!({"disk_size_gb": 3}));
    assert_eq!((s, v["disk_limit"].as_u64(), v["status"].as_str()), (200, Some(3 << 30), Some("running")), "{v}");
    let after = size_kib(&d);
    assert!(after > 2900 << 10 && after <= 3 << 20, "df shows {after} KiB after growing to 3 GiB");
    // No restart: same boot, the background process still there.
    assert_eq!(stdout(&d.sh(&id, "cat /proc/sys/kernel/random/boot_id")), boot_id);
    assert_eq!(stdout(&d.sh(&id, "pgrep -x sleep >/dev/null && echo alive")), "alive");
    assert_eq!(stdout(&d.sh(&id, "sha256sum /workspace/data; cat /workspace/d/f")), format!("{sum}\nkept"));
    // The new space is there to use (more than the old disk held).
    assert_eq!(stdout(&d.sh(&id, "fallocate -l 2G /workspace/big && echo ok && rm /workspace/big")), "ok");
    let logs = d.heyvm(&["logs", &id]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("disk grows to 3 GiB (online)"), "{}", String::from_utf8_lossy(&logs.stdout));
    // A second PATCH to the same size changes nothing; shrinking is refused.
    let (s, v) = d.patch(&format!("/sandboxes/{id}"), &json!({"disk_size_gb": 2}));
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "{v}");

    // Stopped, the host checks the disk: a clean 3 GiB ext4.
    let (s, v) = d.post(&format!("/sandboxes/{id}/stop"), &json!({}));
    assert_eq!(s, 200, "{v}");
    let disk = d.data.path().join("sandboxes").join(&id).join("vm/workspace.ext4");
    let fsck = std::process::Command::new("e2fsck").args(["-f", "-n"]).arg(&disk).output().unwrap();
    assert_eq!(fsck.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&fsck.stdout), String::from_utf8_lossy(&fsck.stderr));
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 3 << 30);
    let (s, v) = d.post(&format!("/sandboxes/{id}/start"), &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(stdout(&d.sh(&id, "cat /workspace/d/f")), "kept");
    assert!(size_kib(&d) > 2900 << 10);
}

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

//! Attacks on QEMU as a boundary (issue 10): a guest that escapes its
//! kernel into QEMU must find an unprivileged process, not host root. The
//! QEMU of a running VM runs as an id of the sandbox's own recorded range,
//! with no capabilities and (where the QEMU build has it) seccomp; a guest
//! writing into a host mount creates files that the directory's host
//! owner owns, exactly as on bubblewrap, and a read-only mount stays
//! read-only. Boots one VM (about a minute under TCG), so it runs only with
//! `HEYVM_TEST_BACKEND=kvm` (the VM subset of `scripts/test.sh`).

use std::os::unix::fs::MetadataExt;

use serde_json::json;

use crate::support::{on_vm, vm_support, Daemon};

/// `Key:` fields of /proc/PID/status.
fn status_of(pid: u32) -> std::collections::HashMap<String, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("QEMU's status");
    s.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.trim().to_string())).collect()
}

fn recorded_range(d: &Daemon, id: &str) -> (u32, u32) {
    let db = rusqlite::Connection::open(d.data.path().join("heyvm.db")).unwrap();
    db.query_row("SELECT base, size FROM id_ranges WHERE sandbox_id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?))).expect("a recorded range")
}

fn qemu_has_seccomp() -> bool {
    let qemu = std::env::var("HEYVM_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
    std::process::Command::new(qemu).args(["-sandbox", "on", "-version"]).output().is_ok_and(|o| o.status.success())
}

#[test]
fn qemu_runs_unprivileged_in_the_sandbox_range_and_mounts_keep_their_owner() {
    if !on_vm() {
        eprintln!("SKIP: a VM test (HEYVM_TEST_BACKEND=kvm)");
        return;
    }
    if !vm_support() {
        return;
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs a root daemon (QEMU drops from root to the sandbox's ids)");
        return;
    }
    let Some(d) = Daemon::start() else { return };
    // A user's directory (uid 1000) with a file only its owner may read,
    // and a root-owned directory mounted read-only.
    let user_dir = tempfile::tempdir().unwrap();
    std::fs::write(user_dir.path().join("secret"), "owner only").unwrap();
    std::os::unix::fs::chown(user_dir.path().join("secret"), Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(user_dir.path().join("secret"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(user_dir.path(), Some(1000), Some(1000)).unwrap();
    let root_dir = tempfile::tempdir().unwrap();
    std::fs::write(root_dir.path().join("hello"), "from root\n").unwrap();
    let mounts = json!([
        {"host_path": user_dir.path().to_str().unwrap(), "sandbox_path": "/data", "read_only": false},
        {"host_path": root_dir.path().to_str().unwrap(), "sandbox_path": "/ro", "read_only": true},
    ]);
    let sb = d.create(json!({"name": "vmconf", "backend_type": "kvm", "size_class": "micro", "mounts": mounts}));
    let id = sb["id"].as_str().unwrap().to_string();
    assert_eq!(sb["status"], "running", "{sb}");

    // QEMU: one id of the sandbox's range for every uid and gid, no
    // supplementary group but that one, no capabilities, seccomp filtering.
    let pid = d.qemu_pid(&id).expect("QEMU's pid file");
    let st = status_of(pid);
    let (base, size) = recorded_range(&d, &id);
    for key in ["Uid", "Gid"] {
        let ids: Vec<u32> = st[key].split_whitespace().map(|x| x.parse().unwrap()).collect();
        assert!(ids.iter().all(|&i| i != 0 && i >= base && i - base < size), "{key}: {ids:?} not in [{base}, +{size}): {st:?}");
    }
    let groups: Vec<u32> = st["Groups"].split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert!(groups.iter().all(|&g| g >= base && g - base < size), "supplementary groups {groups:?}");
    assert_eq!(st["CapEff"], "0000000000000000", "{st:?}");
    assert_eq!(st["CapPrm"], "0000000000000000", "{st:?}");
    assert_eq!(st["NoNewPrivs"], "1", "{st:?}");
    if qemu_has_seccomp() {
        assert_eq!(st["Seccomp"], "2", "QEMU's -sandbox filter: {st:?}");
    } else {
        eprintln!("SKIP seccomp check: this QEMU has no -sandbox");
    }

    // The guest writes into the user's mount: what it creates is the
    // directory owner's on the host, and the owner-only file reads.
    let v = d.sh(&id, "cat /data/secret && echo new > /data/new.txt && mkdir /data/sub && echo x > /data/sub/f && sync && echo ok");
    assert_eq!(v["stdout"].as_str().unwrap_or_default().trim(), "owner onlyok", "{v}");
    for p in ["new.txt", "sub", "sub/f"] {
        let md = std::fs::metadata(user_dir.path().join(p)).unwrap();
        assert_eq!((md.uid(), md.gid()), (1000, 1000), "{p} is owned by the directory's host owner");
    }
    assert_eq!(std::fs::read_to_string(user_dir.path().join("new.txt")).unwrap(), "new\n");
    // The read-only mount: readable, and not writable even by the guest's root.
    let v = d.sh(&id, "cat /ro/hello; touch /ro/x 2>/dev/null && echo wrote || echo refused");
    assert_eq!(v["stdout"].as_str().unwrap_or_default().trim(), "from root\nrefused", "{v}");
    assert!(!root_dir.path().join("x").exists());
    let (s, _) = d.delete(&format!("/sandboxes/{id}"));
    assert_eq!(s, 200);
}

//! Attacks from inside a sandbox on the host kernel and host files:
//! sysctl writes, kernel memory and keys through /proc, setuid and
//! file-capability plants on a host mount, new namespaces and mounts, and
//! reading root-only host files through the copy-on-write system view.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use serde_json::json;

use crate::support::{not_on_vm, Daemon};

fn start(d: &Daemon, body: serde_json::Value) -> String {
    d.create(body)["id"].as_str().unwrap().to_string()
}

#[test]
fn host_kernel_knobs_are_out_of_reach() {
    let Some(d) = Daemon::start() else { return };
    let id = start(&d, json!({"name": "knobs", "size_class": "micro"}));
    let before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let v = d.sh(
        &id,
        "echo '|/tmp/pwn %p' > /proc/sys/kernel/core_pattern && echo WROTE; echo 1 > /proc/sys/vm/drop_caches && echo WROTE2; true",
    );
    assert_eq!(std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(), before, "the sandbox rewrote core_pattern: {v}");
    if not_on_vm("a VM's /proc/sys, sysrq, seccomp and namespaces belong to its own kernel; the host's core_pattern is checked above") {
        return;
    }
    assert!(!v["stdout"].as_str().unwrap().contains("WROTE"), "a /proc/sys write succeeded: {v}");
    let v = d.sh(&id, "(echo h > /proc/sysrq-trigger) 2>/dev/null && echo SYSRQ; for f in kcore keys timer_list; do head -c 16 /proc/$f 2>/dev/null | wc -c; done");
    let out = v["stdout"].as_str().unwrap();
    assert!(!out.contains("SYSRQ"), "sysrq-trigger is writable: {v}");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0", "0", "0"], "kcore/keys/timer_list are not masked: {v}");
    assert_eq!(d.sh(&id, "grep NoNewPrivs /proc/self/status")["stdout"], "NoNewPrivs:\t1\n");
    assert_eq!(d.sh(&id, "grep -c '^Seccomp:.2' /proc/self/status")["stdout"], "1\n", "no seccomp filter");
    let v = d.sh(&id, "unshare -U true 2>/dev/null && echo NS; mount -t tmpfs x /mnt 2>/dev/null && echo MOUNTED; true");
    assert_eq!(v["stdout"], "", "new namespaces or mounts were allowed: {v}");
}

#[test]
fn setuid_and_capability_plants_never_reach_a_host_mount() {
    let Some(d) = Daemon::start() else { return };
    // A mount whose source is owned by root, as the attack used.
    let host = tempfile::tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(std::fs::metadata(host.path()).unwrap().uid(), 0, "the mount's source must be root's");
    let id = start(&d, json!({"name": "plant", "size_class": "micro", "mounts": [{"host_path": host.path(), "sandbox_path": "/data"}]}));
    let script = "cp /bin/true /data/t1; chmod 4755 /data/t1; chmod g+s /data/t1; \
                  install -m 4755 /bin/true /data/t2; \
                  python3 -c 'import os; os.close(os.open(\"/data/t3\", os.O_CREAT|os.O_WRONLY, 0o6755))'; \
                  mkdir -m 2775 /data/d1; \
                  cp /bin/true /data/t4 && python3 -c 'import os; os.setxattr(\"/data/t4\", \"security.capability\", bytes.fromhex(\"0100000201000000000000000000000000000000\"))'; \
                  true";
    d.sh(&id, script);
    for entry in std::fs::read_dir(host.path()).unwrap().flatten() {
        let md = entry.metadata().unwrap();
        assert_eq!(md.mode() & 0o6000, 0, "{} reached the host with mode {:o}", entry.path().display(), md.mode());
    }
    let t4 = host.path().join("t4");
    if t4.exists() {
        let out = std::process::Command::new("getfattr").args(["-n", "security.capability"]).arg(&t4).output();
        if let Ok(out) = out {
            assert!(!out.status.success(), "a file capability reached the host");
        }
    }
    // Ordinary writes still work.
    assert_eq!(d.sh(&id, "echo ok > /data/plain && chmod 755 /data/plain && cat /data/plain")["stdout"], "ok\n");
}

#[test]
fn root_only_host_files_stay_hidden() {
    if not_on_vm("a VM's / is its image's own disk: no host file is in it to hide") {
        return;
    }
    let Some(d) = Daemon::start() else { return };
    let id = start(&d, json!({"name": "secrets", "size_class": "micro"}));
    let candidates = ["/etc/ssl/private", "/var/cache/debconf/passwords.dat", "/etc/security/opasswd", "/var/log/btmp"];
    let present: Vec<&str> = candidates.iter().copied().filter(|p| std::path::Path::new(p).exists()).collect();
    if present.is_empty() {
        return eprintln!("SKIP: this host has none of the root-only files the test looks for");
    }
    for p in present {
        let v = d.sh(&id, &format!("ls -d {p} 2>/dev/null && echo VISIBLE; cat {p} 2>/dev/null | head -c 1 | wc -c"));
        assert_eq!(v["stdout"], "0\n", "root-only host file {p} is visible inside: {v}");
    }
    // World-readable neighbours are still there.
    assert_eq!(d.sh(&id, "test -r /etc/passwd && test -d /etc/ssl/certs && echo ok")["stdout"], "ok\n");
}

//! Resource attacks from inside a sandbox: filling the host's disk
//! (`fallocate`, `dd` through the workspace and through the copy-on-write
//! system layers), exhausting open files, and reading the host's data-dir
//! path from `/proc/self/mountinfo`. Plus the disk size's knobs:
//! `disk_size_gb` at create, growing it (compat `resize`, PATCH) and
//! `disk_usage` in the sandbox's info.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{not_on_vm, on_vm, Daemon};

const GIB: u64 = 1 << 30;

fn start(d: &Daemon, body: Value) -> String {
    d.create(body)["id"].as_str().unwrap().to_string()
}

/// Free bytes on the filesystem holding `path`.
fn host_free(path: &std::path::Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs fills the zeroed struct it is given.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail * st.f_frsize
}

/// Bytes the host really holds for the sandbox's disk image (a VM's: its
/// `/workspace` disk and its root overlay).
fn image_allocated(d: &Daemon, id: &str) -> u64 {
    let dir = d.data.path().join("sandboxes").join(id);
    let images = if on_vm() { vec![dir.join("vm/workspace.ext4"), dir.join("vm/root.qcow2")] } else { vec![dir.join("disk.img")] };
    images.iter().map(|img| std::fs::metadata(img).map(|m| m.blocks() * 512).unwrap_or_else(|e| panic!("{}: {e}", img.display()))).sum()
}

/// The size of the filesystem at `path` inside the sandbox, in bytes.
fn df_size(d: &Daemon, id: &str, path: &str) -> u64 {
    let v = d.sh(id, &format!("df -B1 --output=size {path} | tail -1"));
    v["stdout"].as_str().unwrap().trim().parse().unwrap_or_else(|_| panic!("df: {v}"))
}

fn no_space(v: &Value) -> bool {
    let err = v["stderr"].as_str().unwrap_or("");
    v["exit_code"] != 0 && (err.contains("No space left on device") || err.contains("Disk quota exceeded"))
}

#[test]
fn writing_past_the_disk_limit_fails_inside_and_spares_the_host() {
    let Some(d) = Daemon::start() else { return };
    let free_before = host_free(d.data.path());
    // micro: 2 GiB, the class's default.
    let id = start(&d, json!({"name": "filler", "size_class": "micro"}));
    let (_, info) = d.get(&format!("/sandboxes/{id}"));
    assert_eq!((info["disk_size_gb"].as_u64(), info["disk_limit"].as_u64()), (Some(2), Some(2 * GIB)), "{info}");
    let v = d.sh(&id, "fallocate -l 50G /workspace/big");
    assert!(no_space(&v), "a 50 GiB fallocate inside a 2 GiB sandbox: {v}");
    d.sh(&id, "rm -f /workspace/big");
    assert!(df_size(&d, &id, "/workspace") <= 2 * GIB);
    // A VM's `/` is its image's disk, capped on the host instead (below).
    assert!(on_vm() || df_size(&d, &id, "/") <= 2 * GIB);

    // dd through the workspace and through the copy-on-write /var layer
    // (written with the mounter's credentials) of a 1 GiB disk.
    let small = start(&d, json!({"name": "dd", "size_class": "micro", "disk_size_gb": 1}));
    let v = d.sh(&small, "dd if=/dev/zero of=/workspace/fill bs=1M count=1500");
    assert!(no_space(&v), "dd past 1 GiB in /workspace: {v}");
    // A VM's root overlay is capped by the host instead: past
    // HEYVM_VM_ROOT_DISK_MB QEMU is stopped (vm_disks' attack test).
    if !on_vm() {
        let v = d.sh(&small, "rm /workspace/fill; dd if=/dev/zero of=/var/tmp/fill bs=1M count=1500");
        assert!(no_space(&v), "dd past 1 GiB under /var: {v}");
    }

    // The host holds at most the limits' worth, whatever was attempted.
    let held = image_allocated(&d, &id) + image_allocated(&d, &small);
    assert!(held < 3 * GIB + (256 << 20), "the host holds {held} bytes for 3 GiB of disks");
    let used = free_before.saturating_sub(host_free(d.data.path()));
    assert!(used < 10 * GIB, "the host lost {used} bytes of free space");
    // Freeing space inside works and the sandbox carries on.
    assert_eq!(d.sh(&small, "rm -f /var/tmp/fill /workspace/fill && echo ok > /workspace/ok && cat /workspace/ok")["stdout"], "ok\n");
}

#[test]
fn disk_size_gb_overrides_the_class_and_resize_grows_it() {
    let Some(d) = Daemon::start() else { return };
    let id = start(&d, json!({"name": "sized", "size_class": "micro", "disk_size_gb": 3}));
    let (_, info) = d.get(&format!("/sandboxes/{id}"));
    assert_eq!((info["disk_size_gb"].as_u64(), info["disk_limit"].as_u64()), (Some(3), Some(3 * GIB)), "{info}");
    let size = df_size(&d, &id, "/workspace");
    assert!(size > 2 * GIB && size <= 3 * GIB, "df says {size}");

    // The compat resize route grows it: at once where the host allows
    // (CAP_SYS_RESOURCE), else at the next start.
    let (s, v) = d.post(&format!("/deployed-sandboxes/{id}/resize"), &json!({"disk_size_gb": 4}));
    assert_eq!((s, v["disk_size_gb"].as_u64()), (200, Some(4)), "{v}");
    assert_eq!(d.post(&format!("/sandboxes/{id}/restart"), &json!({})).0, 200);
    let size = df_size(&d, &id, "/workspace");
    assert!(size > 3 * GIB && size <= 4 * GIB, "after resize to 4 GiB, df says {size}");
    let (_, info) = d.get(&format!("/sandboxes/{id}"));
    assert_eq!(info["disk_limit"].as_u64(), Some(4 * GIB), "{info}");

    // PATCH grows a stopped sandbox's disk at once; a disk never shrinks.
    assert_eq!(d.post(&format!("/sandboxes/{id}/stop"), &json!({})).0, 200);
    let (s, v) = d.patch(&format!("/sandboxes/{id}"), &json!({"disk_size_gb": 5}));
    assert_eq!((s, v["disk_limit"].as_u64()), (200, Some(5 * GIB)), "{v}");
    let (s, v) = d.patch(&format!("/sandboxes/{id}"), &json!({"disk_size_gb": 2}));
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "{v}");
    let (s, v) = d.post("/sandboxes", &json!({"name": "zero", "disk_size_gb": 0}));
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "{v}");
    assert_eq!(d.post(&format!("/sandboxes/{id}/start"), &json!({})).0, 200);
    assert!(df_size(&d, &id, if on_vm() { "/workspace" } else { "/" }) > 4 * GIB);
    // The CLI shows the same.
    let out = d.heyvm(&["get", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("disk") && l.contains("of 5.0 GiB")), "{text}");
}

#[test]
fn disk_usage_is_reported() {
    let Some(d) = Daemon::start() else { return };
    let id = start(&d, json!({"name": "usage", "size_class": "micro"}));
    let usage = |d: &Daemon| d.get(&format!("/sandboxes/{id}")).1["disk_usage"].as_u64().expect("disk_usage is a number");
    let before = usage(&d);
    d.sh(&id, "head -c 64M /dev/urandom > /workspace/blob && head -c 16M /dev/urandom > /etc/blob2 && sync");
    let after = usage(&d);
    assert!(after >= before + (80 << 20), "disk_usage went from {before} to {after} after writing 80 MiB");
    // Also while stopped (the files are still there), and in the list.
    assert_eq!(d.post(&format!("/sandboxes/{id}/stop"), &json!({})).0, 200);
    assert!(usage(&d) >= 80 << 20);
    let (_, list) = d.get("/sandboxes?status=all");
    let entry = list.as_array().unwrap().iter().find(|e| e["id"] == id.as_str()).cloned().unwrap_or_default();
    assert!(entry["disk_usage"].as_u64().unwrap_or(0) >= 80 << 20, "{entry}");
}

#[test]
fn open_files_are_limited_inside() {
    if not_on_vm("a VM's root may raise its own kernel's rlimits; its open files take guest memory only") {
        return;
    }
    let Some(d) = Daemon::start() else { return };
    let id = start(&d, json!({"name": "fds", "size_class": "micro"}));
    let v = d.sh(
        &id,
        "python3 -c '
import os, resource
print(resource.getrlimit(resource.RLIMIT_NOFILE))
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20)); print(\"RAISED\")
except (ValueError, OSError):
    pass
fds = []
try:
    while len(fds) < 100000:
        fds.append(os.open(\"/dev/null\", os.O_RDONLY))
except OSError as e:
    print(\"EMFILE\" if e.errno == 24 else e, len(fds))
'",
    );
    let out = v["stdout"].as_str().unwrap();
    assert!(out.starts_with("(4096, 4096)"), "micro gets 4096 open files, soft and hard: {v}");
    assert!(!out.contains("RAISED"), "the sandbox raised its own limit: {v}");
    let opened: usize = out.lines().find_map(|l| l.strip_prefix("EMFILE ")).and_then(|n| n.parse().ok()).unwrap_or(usize::MAX);
    assert!(opened < 4096, "opened {opened} files: {v}");
    // Commands of a running sandbox see the limit too (also a shell's children).
    assert_eq!(d.sh(&id, "ulimit -Hn")["stdout"], "4096\n");
    // The sandbox is fine afterwards.
    d.wait_until("the sandbox to answer", Duration::from_secs(5), || d.sh(&id, "echo ok")["stdout"] == "ok\n");
}

#[test]
fn mountinfo_never_shows_the_data_dir() {
    let Some(d) = Daemon::start() else { return };
    let id = start(&d, json!({"name": "mounts", "size_class": "micro"}));
    let data = d.data.path().to_string_lossy().into_owned();
    for file in ["/proc/self/mountinfo", "/proc/self/mounts", "/proc/1/mountinfo"] {
        let v = d.sh(&id, &format!("cat {file}"));
        let text = v["stdout"].as_str().unwrap();
        assert!(text.contains(" /workspace "), "{file} lists the workspace: {v}");
        assert!(!text.contains(&data), "{file} reveals the data dir {data}:\n{text}");
    }
    // Nor after a restart (the owner mounts again).
    assert_eq!(d.post(&format!("/sandboxes/{id}/restart"), &json!({})).0, 200);
    assert!(!d.sh(&id, "cat /proc/self/mountinfo")["stdout"].as_str().unwrap().contains(&data));
}

#[test]
fn sandboxes_from_before_disk_limits_keep_working_unlimited() {
    if not_on_vm("the layout from before disk limits is bubblewrap's; a VM always had its /workspace disk") {
        return;
    }
    let Some(mut d) = Daemon::start() else { return };
    let id = start(&d, json!({"name": "legacy", "size_class": "micro"}));
    d.sh(&id, "echo old > /workspace/f && echo etc > /etc/legacy-file");
    assert_eq!(d.post(&format!("/sandboxes/{id}/stop"), &json!({})).0, 200);
    d.kill9();
    // Rewrite it into the layout of a sandbox made before disks existed:
    // its layers directly in its directory, no disk image.
    let dir = d.data.path().join("sandboxes").join(&id);
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .args(["root", "workspace", "upper", "work"].map(|n| dir.join("disk").join(n)))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(copied.success());
    crate::support::unmount_under(&dir);
    std::fs::remove_file(dir.join("disk.img")).unwrap();
    std::fs::remove_dir(dir.join("disk")).unwrap();
    d.restart();

    assert_eq!(d.post(&format!("/sandboxes/{id}/start"), &json!({})).0, 200);
    assert_eq!(d.sh(&id, "cat /workspace/f /etc/legacy-file")["stdout"], "old\netc\n");
    let (_, info) = d.get(&format!("/sandboxes/{id}"));
    assert!(info["disk_limit"].is_null() && info["disk_usage"].is_null(), "{info}");
    let (_, logs) = d.get(&format!("/sandboxes/{id}/logs?limit=200"));
    assert!(logs.to_string().contains("created before disk limits"), "no warning in the log: {logs}");
    // Growing it is refused with a clear error rather than pretending.
    let (s, v) = d.patch(&format!("/sandboxes/{id}"), &json!({"disk_size_gb": 4}));
    assert_eq!((s, v["error"].as_str()), (501, Some("unsupported")), "{v}");
}

#[test]
fn mounts_never_expose_the_data_dir() {
    let Some(d) = Daemon::start() else { return };
    let data = d.data.path().canonicalize().unwrap();
    let victim = start(&d, json!({"name": "victim", "size_class": "micro", "no_start": true}));
    // The data dir, a directory holding it, and one inside it: each would
    // let the sandbox rewrite another sandbox's launch plan (run as root).
    let inside = data.join("sandboxes").join(&victim);
    for host in [data.clone(), data.parent().unwrap().to_path_buf(), inside] {
        let body = json!({"name": "peek", "mounts": [{"host_path": host, "sandbox_path": "/data", "read_only": true}]});
        let (s, v) = d.post("/sandboxes", &body);
        assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")), "mounted {}: {v}", host.display());
        let (s, v) = d.post(&format!("/sandboxes/{victim}/mounts"), &json!({"host_path": host, "sandbox_path": "/data"}));
        assert_eq!(s, 400, "added a mount of {}: {v}", host.display());
    }
}

/// The loop devices whose backing file lies under `dir`.
fn loop_devices_under(dir: &std::path::Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            backing.starts_with(&prefix).then(|| format!("{} {}", e.file_name().to_string_lossy(), backing.trim()))
        })
        .collect()
}

/// Every sandbox owner starts from a copy of the host's mounts, which holds
/// every other sandbox's disk. A copy left there keeps that disk mounted
/// (its loop device busy) for as long as the later sandbox runs, so a
/// stopped sandbox's disk could not be grown offline: the grow waits for
/// the disk to be unmounted everywhere. Owners drop every other disk (one
/// call per data dir) and keep their own, which must stay usable.
#[test]
fn a_stopped_sandboxs_disk_is_free_while_later_sandboxes_run() {
    let Some(d) = Daemon::start() else { return };
    if not_on_vm("loop-mounted sandbox disks are a bubblewrap feature") {
        return;
    }
    let first = start(&d, json!({"name": "first", "size_class": "micro", "disk_size_gb": 3}));
    let first_dir = d.data.path().join("sandboxes").join(&first);
    if loop_devices_under(&first_dir).is_empty() {
        eprintln!("SKIP: sandbox disks are not loop devices here (not root?)");
        return;
    }
    assert_eq!(d.post(&format!("/sandboxes/{first}/stop"), &json!({})).0, 200);
    // Created while the stopped sandbox's disk is still mounted on the host.
    let later = start(&d, json!({"name": "later", "size_class": "micro"}));
    let (s, v) = d.patch(&format!("/sandboxes/{first}"), &json!({"disk_size_gb": 4}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(d.post(&format!("/sandboxes/{first}/start"), &json!({})).0, 200);
    let size = df_size(&d, &first, "/workspace");
    assert!(size > 3 * GIB, "the disk did not grow while a later sandbox ran: df says {size}");
    // The later sandbox still has its own disk, writable and persistent.
    let v = d.sh(&later, "echo kept > /workspace/f && sync && cat /workspace/f");
    assert_eq!(v["stdout"], "kept\n", "{v}");
    for action in ["stop", "start"] {
        let (s, v) = d.post(&format!("/sandboxes/{later}/{action}"), &json!({}));
        assert_eq!(s, 200, "{action}: {v}");
    }
    assert_eq!(d.sh(&later, "cat /workspace/f")["stdout"], "kept\n");
}

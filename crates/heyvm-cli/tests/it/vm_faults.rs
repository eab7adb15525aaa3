//! Faults of the microVM tier through the real binary: a guest kernel that
//! QEMU cannot load, a guest whose init never answers the agent handshake,
//! QEMU killed in the middle of an exec. Each ends in a `failed` sandbox
//! with a reason, within a bounded time, and leaves no QEMU behind.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{vm_support, Daemon};

/// The real guest assets' directory (what `scripts/vm-assets.sh` made).
fn assets() -> std::path::PathBuf {
    std::env::var("HEYVM_VM_DIR").unwrap_or_else(|_| "/var/cache/heyvm/vm".into()).into()
}

/// A VM asset directory of its own: the real images and modules, and
/// either the real kernel or `bad_kernel` bytes in its place.
fn vm_dir(bad_kernel: Option<&[u8]>) -> tempfile::TempDir {
    let t = tempfile::tempdir_in("/tmp").unwrap();
    let real = assets();
    std::os::unix::fs::symlink(real.join("images"), t.path().join("images")).unwrap();
    match bad_kernel {
        None => std::os::unix::fs::symlink(real.join("kernel"), t.path().join("kernel")).unwrap(),
        Some(bytes) => {
            let k = t.path().join("kernel");
            std::fs::create_dir(&k).unwrap();
            std::fs::write(k.join("vmlinux"), bytes).unwrap();
            std::os::unix::fs::symlink(real.join("kernel/modules"), k.join("modules")).unwrap();
            std::fs::copy(real.join("kernel/version"), k.join("version")).unwrap();
        }
    }
    t
}

/// QEMU processes whose command line names `needle`.
fn qemus_naming(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.starts_with("qemu-system") && cmd.contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Creates a VM that must fail; returns the answer, the sandbox as listed
/// afterwards and how long the create took.
fn failing_create(d: &Daemon, name: &str) -> (u16, Value, Value, Duration) {
    let t = Instant::now();
    let (s, v) = d.post("/sandboxes", &json!({"name": name, "backend_type": "kvm", "size_class": "micro", "network": "none"}));
    let took = t.elapsed();
    let (_, list) = d.get("/sandboxes");
    let sb = list.as_array().into_iter().flatten().find(|s| s["name"] == name).cloned().unwrap_or(Value::Null);
    (s, v, sb, took)
}

#[test]
fn vm_faults_fail_the_sandbox_in_bounded_time_and_leak_no_qemu() {
    if !vm_support() {
        return;
    }
    // 1. A kernel QEMU cannot load: QEMU exits at once, its error is the reason.
    let dir = vm_dir(Some(b"this is not a kernel"));
    let Some(d) = Daemon::start_with(&[("HEYVM_VM_DIR", dir.path().to_str().unwrap()), ("HEYVM_VM_ACCEL", "tcg")]) else { return };
    let (s, v, sb, took) = failing_create(&d, "badkernel");
    assert!(s >= 400, "{s} {v}");
    assert_eq!(sb["status"], "failed", "{sb}");
    let why = sb["error_message"].as_str().unwrap_or_default();
    assert!(why.contains("QEMU exited") && why.contains("qemu:"), "QEMU's own error in the reason: {sb}");
    assert!(took < Duration::from_secs(30), "failed after {took:?}");
    assert!(qemus_naming(d.data.path().to_str().unwrap()).is_empty(), "QEMU left behind");
    drop(d);

    // 2. A guest whose init never answers (a busybox init instead of the
    // agent): the boot timeout fails it with the console tail, and the
    // still running QEMU is killed.
    let Some(busybox) = which("busybox") else {
        eprintln!("SKIP: busybox not installed");
        return;
    };
    let dir = vm_dir(None);
    let env = [
        ("HEYVM_VM_DIR", dir.path().to_str().unwrap()),
        ("HEYVM_VM_ACCEL", "tcg"),
        ("HEYVM_VM_BOOT_TIMEOUT", "5"),
        ("HEYVM_AGENT_BIN", busybox.to_str().unwrap()),
    ];
    let Some(d) = Daemon::start_with(&env) else { return };
    let (s, v, sb, took) = failing_create(&d, "silent");
    assert!(s >= 400, "{s} {v}");
    assert_eq!(sb["status"], "failed", "{sb}");
    let why = sb["error_message"].as_str().unwrap_or_default();
    assert!(why.contains("did not answer"), "{sb}");
    assert!(took < Duration::from_secs(60), "failed after {took:?}");
    let id = sb["id"].as_str().unwrap();
    assert!(qemus_naming(id).is_empty(), "the silent guest's QEMU was not killed");
}

#[test]
fn vm_qemu_killed_mid_exec_ends_the_exec_and_fails_the_sandbox() {
    let Some(d) = (if vm_support() { Daemon::start() } else { None }) else { return };
    let sb = d.create(json!({"name": "midexec", "backend_type": "kvm", "size_class": "micro", "network": "none"}));
    let id = sb["id"].as_str().unwrap().to_string();
    assert_eq!(d.sh(&id, "echo up")["stdout"], "up\n");
    let exec = {
        let (url, id) = (d.url.clone(), id.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let body = json!({"command": "/bin/sh", "args": ["-c", "echo started; sleep 120; echo never"]}).to_string();
            let r = agent.post(format!("{url}/sandboxes/{id}/execute")).content_type("application/json").send(body.as_bytes());
            let answer = r.map(|mut r| (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()));
            (answer.map_err(|e| e.to_string()), t.elapsed())
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let pid_file = d.data.path().join("sandboxes").join(&id).join("vm/run/qemu.pid");
    let qemu: i32 = std::fs::read_to_string(pid_file).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) on the pid our own daemon recorded for this VM.
    unsafe { libc::kill(qemu, libc::SIGKILL) };
    let (answer, took) = exec.join().unwrap();
    assert!(took < Duration::from_secs(60), "the exec hung for {took:?} after QEMU died");
    if let Ok((status, body)) = &answer {
        assert!(*status >= 400 || !body.contains("never"), "{status} {body}");
    }
    d.wait_until("the sandbox to fail", Duration::from_secs(60), || d.get(&format!("/sandboxes/{id}")).1["status"] == "failed");
    let (_, v) = d.get(&format!("/sandboxes/{id}"));
    assert!(v["error_message"].as_str().unwrap_or_default().contains("QEMU exited"), "{v}");
    assert!(!Path::new(&format!("/proc/{qemu}/cmdline")).exists() || qemus_naming(&id).is_empty());
}

fn which(prog: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(prog)).find(|p| p.is_file()))
}

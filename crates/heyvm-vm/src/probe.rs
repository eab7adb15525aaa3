//! Which accelerator VMs use, decided honestly: `/dev/kvm` existing proves
//! nothing (nested PVM-based "KVM" cannot boot a stock Linux guest), so KVM
//! is used only when a test boot with it reaches the guest init. Otherwise
//! TCG, and the reason says why. `HEYVM_VM_ACCEL=tcg|kvm` forces a choice.
//!
//! The verdict is cached in `<vm dir>/accel-probe.json`, keyed by the host
//! kernel and the guest kernel, so only the first daemon pays for a probe.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::qemu::{Accel, Machine, VmSpec};

/// What the guest init prints when `heyvm.probe=1` is on its command line
/// (keep in sync with heyvm-agent's `guest_init`).
pub const PROBE_MARKER: &str = "heyvm-probe: guest init reached";
/// A KVM guest reaches init in well under a second; a hung one never does.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelVerdict {
    pub accel: Accel,
    /// Why this accelerator (always set for TCG).
    pub reason: String,
    /// Cache key: host kernel release + guest kernel version.
    #[serde(default)]
    pub key: String,
}

/// The accelerator to use, from the environment, the cache, or a test boot.
pub fn decide(vm_dir: &Path, kernel: &Path, initrd: &Path, guest_version: &str) -> AccelVerdict {
    match heyvm_core::config::string(heyvm_core::config::VM_ACCEL).as_deref() {
        Some("tcg") => return verdict(Accel::Tcg, "HEYVM_VM_ACCEL=tcg", ""),
        Some("kvm") => return verdict(Accel::Kvm, "HEYVM_VM_ACCEL=kvm (not probed)", ""),
        _ => {}
    }
    let key = format!("{}|{guest_version}", host_release());
    let cache = vm_dir.join("accel-probe.json");
    if let Some(v) = std::fs::read(&cache).ok().and_then(|b| serde_json::from_slice::<AccelVerdict>(&b).ok()) {
        if v.key == key {
            return v;
        }
    }
    let mut v = probe(vm_dir, kernel, initrd);
    v.key = key;
    let tmp = cache.with_extension(format!("tmp.{}", std::process::id()));
    if std::fs::write(&tmp, serde_json::to_vec_pretty(&v).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, &cache);
    }
    v
}

fn verdict(accel: Accel, reason: &str, key: &str) -> AccelVerdict {
    AccelVerdict { accel, reason: reason.to_string(), key: key.to_string() }
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

/// Boots the guest kernel + initramfs under KVM with `heyvm.probe=1` and
/// waits for the init's marker on the console.
fn probe(vm_dir: &Path, kernel: &Path, initrd: &Path) -> AccelVerdict {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return verdict(Accel::Tcg, &format!("/dev/kvm is not usable ({e}); using TCG (software emulation)"), "");
    }
    let dir = vm_dir.join(format!("probe-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let spec = VmSpec {
        machine: Machine::Microvm,
        accel: Accel::Kvm,
        vcpus: 1,
        memory_mib: 256,
        kernel: kernel.to_path_buf(),
        initrd: initrd.to_path_buf(),
        cmdline: "heyvm.probe=1".into(),
        disks: vec![],
        shares: vec![],
        read_only_binds: vec![],
        agent_socket: dir.join("agent.sock"),
        qmp_socket: dir.join("qmp.sock"),
        console_log: dir.join("console.log"),
        tap: None,
        mac: None,
        incoming_fd: None,
        runas: None,
        seccomp: false,
    };
    let started = Instant::now();
    let child =
        Command::new("qemu-system-x86_64").args(spec.args()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return verdict(Accel::Tcg, &format!("cannot run qemu-system-x86_64 ({e})"), ""),
    };
    let outcome = loop {
        let console = std::fs::read_to_string(&spec.console_log).unwrap_or_default();
        if console.contains(PROBE_MARKER) {
            break Ok(started.elapsed());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            let tail: String = last_line(&err).or_else(|| last_line(&console)).unwrap_or_default();
            break Err(format!("a KVM test boot exited ({status}) before the guest init: {tail}"));
        }
        if started.elapsed() > PROBE_TIMEOUT {
            break Err(format!("a KVM test boot did not reach the guest init in {}s", PROBE_TIMEOUT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok(t) => verdict(Accel::Kvm, &format!("a KVM test boot reached the guest init in {} ms", t.as_millis()), ""),
        Err(why) => verdict(Accel::Tcg, &format!("/dev/kvm exists but {why}; using TCG (software emulation, much slower)"), ""),
    }
}

fn last_line(s: &str) -> Option<String> {
    s.lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_override_and_cache_key() {
        let t = tempfile::tempdir().unwrap();
        // A cached verdict with the current key is reused without a boot.
        let key = format!("{}|v1", host_release());
        let cached = AccelVerdict { accel: Accel::Tcg, reason: "cached".into(), key };
        std::fs::write(t.path().join("accel-probe.json"), serde_json::to_vec(&cached).unwrap()).unwrap();
        if heyvm_core::config::string(heyvm_core::config::VM_ACCEL).is_none() {
            let v = decide(t.path(), Path::new("/nonexistent"), Path::new("/nonexistent"), "v1");
            assert_eq!(v.reason, "cached");
        }
        assert_eq!(last_line("a\nb\n\n").as_deref(), Some("b"));
    }
}

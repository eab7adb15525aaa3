//! The cap on a VM's root disk. `/workspace` is a raw disk of the sandbox's
//! disk limit, but `/` is a qcow2 overlay that grows with every block the
//! guest writes outside `/workspace`, up to the size of the image's base
//! disk (4 GiB for the default image): a guest filling `/` would take host
//! disk the sandbox's limit never counted. QEMU has no size limit for a
//! qcow2 file, so the host checks it: the overlay may hold at most
//! `HEYVM_VM_ROOT_DISK_MB` MiB (default: the sandbox's disk limit); past
//! that the VM is stopped (the daemon checks liveness every second) and the
//! sandbox fails with the reason, and a start refuses until a restore or a
//! larger cap. The overlay's host blocks are what counts: a guest that
//! deletes files gets them back only once it discards them (`fstrim`; the
//! drive passes discards through).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use heyvm_core::LaunchSpec;

use crate::error::{VmError, VmResult};
use crate::vmproc::VmLayout;

/// The cap for this sandbox in bytes, if any.
pub fn cap_bytes(spec: &LaunchSpec) -> Option<u64> {
    let configured = heyvm_core::config::parse::<u64>(heyvm_core::config::VM_ROOT_DISK_MB).map(|mb| mb << 20);
    configured.or(Some(spec.limits.disk_bytes)).filter(|b| *b > 0)
}

/// Host bytes the root overlay occupies.
pub fn used_bytes(layout: &VmLayout) -> u64 {
    std::fs::metadata(layout.overlay()).map(|m| m.blocks() * 512).unwrap_or(0)
}

fn marker(layout: &VmLayout) -> PathBuf {
    layout.dir.join("root-over-cap")
}

fn message(used: u64, cap: u64) -> String {
    format!(
        "the VM's root disk grew past its cap ({} MiB written, cap {} MiB, HEYVM_VM_ROOT_DISK_MB or the disk limit); QEMU was stopped. \
         Keep large data in /workspace; restore a checkpoint or delete the sandbox",
        used >> 20,
        cap >> 20
    )
}

/// Whether the overlay is past `cap`; if so the reason is recorded for
/// [`reason`] (the caller stops the VM).
pub fn check(layout: &VmLayout, cap: u64) -> bool {
    let used = used_bytes(layout);
    if used <= cap {
        return false;
    }
    let _ = std::fs::write(marker(layout), message(used, cap));
    true
}

/// Why the VM was stopped, if the cap did it.
pub fn reason(layout: &VmLayout) -> Option<String> {
    std::fs::read_to_string(marker(layout)).ok()
}

/// Before a start: a root disk past the cap does not boot again.
pub fn admit(spec: &LaunchSpec, layout: &VmLayout) -> VmResult<()> {
    let _ = std::fs::remove_file(marker(layout));
    match cap_bytes(spec) {
        Some(cap) if used_bytes(layout) > cap => Err(VmError::RootDiskFull(message(used_bytes(layout), cap))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_is_recorded_and_refused() {
        let t = tempfile::tempdir().unwrap();
        let layout = VmLayout::new(t.path());
        std::fs::create_dir_all(&layout.dir).unwrap();
        std::fs::write(layout.overlay(), vec![1u8; 256 << 10]).unwrap();
        assert!(!check(&layout, 1 << 20));
        assert_eq!(reason(&layout), None);
        assert!(check(&layout, 64 << 10));
        assert!(reason(&layout).unwrap().contains("cap 0 MiB"), "{:?}", reason(&layout));
    }
}

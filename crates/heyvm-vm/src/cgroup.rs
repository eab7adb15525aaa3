//! The host cgroup a VM's QEMU runs in: `heyvm/<id>`, the same cgroup a
//! bubblewrap sandbox of that id gets ([`heyvm_backends::cgroups`]), so a
//! size class bounds a VM on the host as it bounds a bubblewrap sandbox.
//!
//! - CPU: the size class's quota (micro: 25 ms per 100 ms). The guest gets
//!   whole vCPUs (at least one); the quota caps what all of QEMU's threads
//!   (vCPUs, device emulation, I/O) take together.
//! - Memory: the guest's RAM plus [`QEMU_OVERHEAD`] for QEMU itself. The
//!   guest never sees this limit (its own kernel reclaims and OOM-kills
//!   inside its RAM); it stops a QEMU that would grow past what its size
//!   class pays for (the host's OOM killer then ends that QEMU only, and the
//!   sandbox fails with "QEMU exited").
//! - pids: the size class's, counting QEMU's threads.
//!
//! QEMU joins the cgroup between fork and exec, before it allocates
//! anything, so all its memory is charged there.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use heyvm_backends::cgroups::Cgroups;
use heyvm_core::LaunchSpec;
use heyvm_types::Limits;

/// What QEMU takes beyond guest RAM: TCG's 64 MiB translation buffer
/// (`tb-size=64`), its heap, device and block-layer buffers, the parts of
/// its binary and libraries it touches. Measured under TCG: a micro VM
/// whose guest filled its 512 MiB until its own OOM killer struck peaked
/// at 607 MiB in its cgroup (95 MiB beyond its RAM); the rest is headroom.
pub const QEMU_OVERHEAD: u64 = 256 << 20;

/// The host limits for a VM with `limits` (its size class): the guest's
/// RAM as QEMU will be given it, plus [`QEMU_OVERHEAD`].
pub fn host_limits(limits: &Limits) -> Limits {
    let ram = crate::launch::memory_mib(limits.memory_bytes) << 20;
    Limits { memory_bytes: ram + QEMU_OVERHEAD, ..*limits }
}

/// The host's cgroup hierarchies, when this daemon can use them (root);
/// else why not, logged once.
pub fn detect() -> Option<Cgroups> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        tracing::warn!("kvm backend: QEMU runs without cgroup limits (the daemon is not root)");
        return None;
    }
    match Cgroups::detect() {
        Ok(cg) => Some(cg),
        Err(why) => {
            tracing::warn!("kvm backend: QEMU runs without cgroup limits: {why}");
            None
        }
    }
}

/// Creates the sandbox's cgroups with its VM limits and opens the files a
/// process writes to join them (kept open across the fork, see [`Join`]).
pub fn create(cg: &Cgroups, spec: &LaunchSpec) -> io::Result<Join> {
    cg.create(&spec.id, &host_limits(&spec.limits))?;
    let files = cg
        .procs_files(&spec.id)
        .iter()
        .map(|p| OpenOptions::new().write(true).open(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display()))))
        .collect::<io::Result<Vec<File>>>()?;
    Ok(Join { files })
}

/// Open `cgroup.procs` files of one sandbox's cgroups.
pub struct Join {
    files: Vec<File>,
}

impl Join {
    /// The raw descriptors, for [`join_self`] in a forked child.
    pub fn fds(&self) -> Vec<RawFd> {
        self.files.iter().map(|f| f.as_raw_fd()).collect()
    }
}

/// Moves the calling process into the cgroups behind `fds` ("0" means the
/// writer itself). Only a `write(2)` per descriptor: safe between fork and
/// exec.
pub fn join_self(fds: &[RawFd]) -> io::Result<()> {
    for &fd in fds {
        // SAFETY: write(2) of a 1-byte static buffer to a descriptor the
        // parent opened and keeps open until the child has exec'd.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_guest_ram_plus_overhead() {
        let micro = heyvm_types::SizeClass::Micro.limits();
        let host = host_limits(&micro);
        assert_eq!(host.memory_bytes, (512 << 20) + QEMU_OVERHEAD);
        assert_eq!(Limits { memory_bytes: micro.memory_bytes, ..host }, micro, "only memory differs");
        // A guest never gets less than the smallest RAM that boots.
        let tiny = Limits { memory_bytes: 1 << 20, ..micro };
        assert_eq!(host_limits(&tiny).memory_bytes, (crate::launch::MIN_MEMORY_MIB << 20) + QEMU_OVERHEAD);
    }
}

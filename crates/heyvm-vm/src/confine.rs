//! QEMU as a second boundary behind the guest kernel. A guest that breaks
//! out of its kernel into QEMU (a device emulation bug) lands in a process
//! that is not host root:
//!
//! - **Its own uid.** QEMU drops to the first id of the sandbox's recorded
//!   range (`heyvm_core::id_ranges`; "root inside" of a bubblewrap
//!   sandbox), with that id as its only group and no capabilities. No two
//!   sandboxes share a range, so one VM's QEMU cannot signal, trace or
//!   write another's. The drop is QEMU's own `-runas UID:GID`, after it
//!   has opened what needs root: `/dev/kvm` and `/dev/net/tun` (mode 0600
//!   on these hosts), the disks, the console log and its sockets in the
//!   0700 run directory (reached through data directories that may be 0700
//!   too). Nothing QEMU opens later goes by a path that needs root: the 9p
//!   shares are opened at start and walked from that descriptor, and
//!   checkpoint memory files are handed over as descriptors (QMP `getfd`,
//!   `-incoming fd:N`). So the VM's files stay root's and need no chown,
//!   VMs made before this change included.
//! - **seccomp** (`-sandbox`, when the QEMU build has it): no exec or
//!   fork, no obsolete syscalls, no scheduler or memory-policy changes.
//!   `elevateprivileges` stays `allow` because both other values also
//!   forbid the setgid/setuid of `-runas` itself (QEMU installs its filter
//!   before it drops; measured: SIGSYS at start); once dropped QEMU has no
//!   capabilities and `no_new_privs`, so set*id can only pick among its
//!   own ids.
//! - **Host mounts** are clones of the user's directories made for QEMU
//!   alone (in its own mount namespace), idmapped so that the directory's
//!   host owner is QEMU's uid: a guest writing into a mount creates files
//!   that the directory's owner owns, as on bubblewrap, and QEMU can write
//!   nowhere else on that file system. Read-only mounts are read-only
//!   clones.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use heyvm_backends::idmap::{self, IdMap};
use heyvm_core::LaunchSpec;

use crate::error::{VmError, VmResult};
use crate::qemu::Share;

/// QEMU's `-sandbox` setting (see the module docs for `elevateprivileges`).
pub const SECCOMP: &str = "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny";

/// The host ids QEMU runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QemuUser {
    pub uid: u32,
    pub gid: u32,
}

/// Who this sandbox's QEMU runs as: the base of its range when the daemon
/// is root (a root daemon without a range refuses rather than run QEMU as
/// root); None for a daemon that is not root, whose QEMU is its own user.
pub fn user_for(spec: &LaunchSpec) -> VmResult<Option<QemuUser>> {
    if !heyvm_core::id_ranges::daemon_is_root() {
        return Ok(None);
    }
    let range = spec.ids.ok_or(VmError::NoIdRange)?;
    Ok(Some(QemuUser { uid: range.base, gid: range.base }))
}

/// Whether this QEMU binary was built with seccomp: `-sandbox` is parsed
/// before `-version` exits, and a build without it refuses the option.
pub fn qemu_has_seccomp(qemu: &str) -> bool {
    Command::new(qemu)
        .args(["-sandbox", "on", "-version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What QEMU's child side needs besides its argv: the shares' idmapped
/// clones to put over their paths in QEMU's mount namespace, and a
/// checkpoint's memory file to inherit. Held by the parent until QEMU
/// started (the child borrows the raw descriptors).
#[derive(Default)]
pub struct Handover {
    pub trees: Vec<(CString, OwnedFd)>,
    pub incoming: Option<std::fs::File>,
}

impl Handover {
    /// `(path, fd)` pairs for the child.
    pub fn raw_trees(&self) -> Vec<(CString, RawFd)> {
        self.trees.iter().map(|(p, fd)| (p.clone(), fd.as_raw_fd())).collect()
    }
}

/// Idmapped clones of the shares' directories, mapping each directory's
/// host owner (uid and gid) to QEMU's ids. A file system that cannot be
/// idmapped keeps its plain path, which QEMU then reaches only as its own
/// uid (what others may do there), with a warning; so does bubblewrap.
pub fn share_trees(sandbox: &str, shares: &[Share], user: &QemuUser) -> Vec<(CString, OwnedFd)> {
    let mut users: Vec<((u32, u32), OwnedFd)> = Vec::new();
    let mut out = Vec::new();
    for s in shares {
        let made = (|| -> std::io::Result<(CString, OwnedFd)> {
            let md = std::fs::metadata(&s.host_path)?;
            let owner = (md.uid(), md.gid());
            if !users.iter().any(|(o, _)| *o == owner) {
                users.push((owner, idmap::new_userns(&IdMap::owner(owner.0, owner.1, user.uid))?));
            }
            let userns = &users.iter().find(|(o, _)| *o == owner).expect("just added").1;
            let tree = idmap::idmapped_tree(&s.host_path, userns, s.read_only, true)?;
            let path = CString::new(s.host_path.as_os_str().as_bytes()).map_err(|_| std::io::Error::other("a NUL byte in a mount path"))?;
            Ok((path, tree))
        })();
        match made {
            Ok(t) => out.push(t),
            Err(e) => {
                tracing::warn!(sandbox, path = %s.host_path.display(), "QEMU reaches this mount without an id mapping (as uid {}): {e}", user.uid)
            }
        }
    }
    out
}

/// Child side, between fork and exec, as root in QEMU's fresh mount
/// namespace: each share's idmapped clone goes over the share's own path
/// (so QEMU's argv names the usual path), in the order given, before the
/// read-only binds that may sit inside them. Raw syscalls only.
pub fn attach_trees(trees: &[(CString, RawFd)]) -> std::io::Result<()> {
    for (path, fd) in trees {
        idmap::attach(*fd, path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ids: Option<heyvm_core::id_ranges::IdRange>) -> LaunchSpec {
        LaunchSpec {
            id: "sb-00000001".into(),
            hostname: "t".into(),
            paths: heyvm_core::paths::SandboxPaths { dir: "/nonexistent".into() },
            limits: heyvm_types::SizeClass::Micro.limits(),
            mounts: vec![],
            network: Default::default(),
            image_layers: vec![],
            ids,
        }
    }

    #[test]
    fn a_root_daemon_runs_qemu_as_the_range_base_and_never_as_root() {
        let range = heyvm_core::id_ranges::IdRange { base: 1_000_131_072, size: 65_536 };
        if heyvm_core::id_ranges::daemon_is_root() {
            assert_eq!(user_for(&spec(Some(range))).unwrap(), Some(QemuUser { uid: range.base, gid: range.base }));
            assert!(matches!(user_for(&spec(None)), Err(VmError::NoIdRange)));
        } else {
            assert_eq!(user_for(&spec(Some(range))).unwrap(), None, "QEMU is the daemon's own user");
        }
    }
}

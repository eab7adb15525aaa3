//! The sandbox's own ids, owner side (root only). Each sandbox runs in a
//! user namespace mapping inside ids 0..65536 to its recorded host range
//! (`heyvm_core::id_ranges`), so root inside is an unprivileged host uid
//! and `setgroups`/`setuid` to other inside users work (package managers
//! need them).
//!
//! bwrap only writes one-id maps, and `newuidmap` is not installed here, so
//! the owner makes the namespace: a short-lived child unshares a user
//! namespace, the owner (root in the parent namespace) writes its
//! `uid_map`/`gid_map` and keeps a descriptor to it. bwrap 0.8's own
//! `--userns FD` does not fit a root caller: bwrap clones its mount
//! namespace while still host root and joins the user namespace afterwards,
//! so that mount namespace belongs to the host's user namespace and bwrap
//! fails on its first file ("Creating newroot failed: Value too large",
//! host uid 0 having no id inside). Instead the owner joins the namespace
//! itself (`setns`, then uid/gid 0 inside) and execs bwrap there without
//! `--unshare-user`: bwrap sees itself as root, and every namespace it
//! creates belongs to the sandbox's user namespace.
//!
//! Shared read-only layers (the host's system directories, the masking
//! layer) keep their host ownership: the owner, still host root, clones
//! them as idmapped mounts (`open_tree`, then `mount_setattr` with
//! `MOUNT_ATTR_IDMAP`, then `move_mount`) through the sandbox's namespace,
//! so host uid 0 appears as root inside, and uses those as the overlay's
//! lower layers (overlayfs accepts idmapped lower layers since Linux 5.19;
//! an overlay mount itself cannot be idmapped). Nothing is chowned per
//! sandbox. User mounts get a namespace of their own mapping the
//! directory's host owner to the sandbox's root, so root inside writes
//! files the host owner owns.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: u32 = 1;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;

/// One id map: `inside host count` lines for uids and gids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub uid_map: String,
    pub gid_map: String,
}

impl IdMap {
    /// The sandbox's map: inside 0.. to host `base`..
    pub fn range(base: u32, size: u32) -> Self {
        let line = format!("0 {base} {size}\n");
        IdMap { uid_map: line.clone(), gid_map: line }
    }

    /// A mount's map: its host owner (`uid`, `gid`) is the sandbox's root
    /// (host `base`), so files root inside writes belong to that owner.
    pub fn owner(uid: u32, gid: u32, base: u32) -> Self {
        IdMap { uid_map: format!("{uid} {base} 1\n"), gid_map: format!("{gid} {base} 1\n") }
    }
}

/// A mount the owner clones with an id mapping before bwrap runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdmappedMount {
    pub source: PathBuf,
    /// Where the owner puts it (in its private mount namespace).
    pub target: PathBuf,
    pub map: IdMap,
    pub read_only: bool,
    /// `nosuid,nodev`: host directories the sandbox writes into.
    pub host_dir: bool,
}

/// Makes a user namespace with `map` and returns a descriptor to it.
pub fn new_userns(map: &IdMap) -> io::Result<OwnedFd> {
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // SAFETY: the owner is single-threaded; the child only calls
    // async-signal-safe functions and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(err("fork"));
    }
    if pid == 0 {
        // SAFETY: raw syscalls in the forked child, which never returns.
        unsafe {
            // Only the parent keeps the go pipe's write end: if it dies
            // first, the read below sees EOF instead of blocking forever
            // (holding a copy of every descriptor the parent had).
            libc::close(go_w.as_raw_fd());
            let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
            libc::write(ready_w.as_raw_fd(), [u8::from(ok)].as_ptr().cast(), 1);
            let mut b = [0u8; 1];
            libc::read(go_r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(go_r);
    let result = (|| {
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a valid buffer.
        if unsafe { libc::read(ready_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) } != 1 || b[0] != 1 {
            return Err(io::Error::other("the helper could not create a user namespace"));
        }
        std::fs::write(format!("/proc/{pid}/uid_map"), &map.uid_map).map_err(|e| ctx(e, "writing uid_map"))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), &map.gid_map).map_err(|e| ctx(e, "writing gid_map"))?;
        let f = std::fs::File::open(format!("/proc/{pid}/ns/user")).map_err(|e| ctx(e, "opening the user namespace"))?;
        Ok(OwnedFd::from(f))
    })();
    // SAFETY: writing one byte from a valid buffer.
    unsafe { libc::write(go_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    result
}

/// Clones `m.source` as a detached mount, idmaps it through `userns` and
/// attaches it at `m.target` (created if missing, as a file for a file).
pub fn mount_idmapped(m: &IdmappedMount, userns: &OwnedFd) -> io::Result<()> {
    let tree = idmapped_tree(&m.source, userns, m.read_only, m.host_dir)?;
    make_target(m)?;
    attach(tree.as_raw_fd(), &cstr(&m.target)?)
        .map_err(|e| ctx(e, &format!("attaching the idmapped {} at {}", m.source.display(), m.target.display())))
}

/// A detached clone of the mount at `source`, idmapped through `userns`
/// (and read-only, and `nosuid,nodev` for `host_dir`). Nothing shows until
/// [`attach`] puts it somewhere, possibly in another mount namespace.
pub fn idmapped_tree(source: &Path, userns: &OwnedFd, read_only: bool, host_dir: bool) -> io::Result<OwnedFd> {
    let src = cstr(source)?;
    // SAFETY: open_tree on a valid path; the result is checked and owned.
    let tree = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, src.as_ptr(), OPEN_TREE_CLONE | libc::O_CLOEXEC as u32) };
    if tree < 0 {
        return Err(err(&format!("open_tree {}", source.display())));
    }
    // SAFETY: a fresh descriptor we own.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let mut set = MOUNT_ATTR_IDMAP;
    if read_only {
        set |= MOUNT_ATTR_RDONLY;
    }
    if host_dir {
        set |= MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    }
    let attr = MountAttr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    // SAFETY: mount_setattr on our detached tree with a valid struct.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(err(&format!("idmapping {} (does its filesystem support idmapped mounts?)", source.display())));
    }
    Ok(tree)
}

/// Attaches a detached tree ([`idmapped_tree`]) over the existing path
/// `target`. Only raw syscalls: safe between fork and exec.
pub fn attach(tree: std::os::fd::RawFd, target: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: move_mount of a detached tree onto a valid C string path.
    let r = unsafe { libc::syscall(libc::SYS_move_mount, tree, c"".as_ptr(), libc::AT_FDCWD, target.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The fallback for a host directory that cannot be idmapped: a plain
/// `nosuid,nodev` bind at `m.target`.
pub fn mount_plain(m: &IdmappedMount) -> io::Result<()> {
    make_target(m)?;
    let (src, dst) = (cstr(&m.source)?, cstr(&m.target)?);
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
    if m.read_only {
        flags |= libc::MS_RDONLY;
    }
    // SAFETY: mount(2) with valid C strings.
    unsafe {
        if libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND | libc::MS_REC, std::ptr::null()) != 0 {
            return Err(err(&format!("binding {}", m.source.display())));
        }
        if libc::mount(std::ptr::null(), dst.as_ptr(), std::ptr::null(), flags, std::ptr::null()) != 0 {
            return Err(err(&format!("remounting {} nosuid,nodev", m.target.display())));
        }
    }
    Ok(())
}

fn make_target(m: &IdmappedMount) -> io::Result<()> {
    if m.source.is_dir() {
        std::fs::create_dir_all(&m.target)
    } else {
        if let Some(p) = m.target.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&m.target).map(drop)
    }
}

/// Joins the sandbox's user namespace as its root (uid/gid 0 inside, no
/// supplementary groups). The process keeps its mount and network
/// namespaces, which belong to the host's user namespace; bwrap's new ones
/// will belong to the sandbox's.
pub fn enter(userns: &OwnedFd) -> io::Result<()> {
    // SAFETY: plain syscalls on this single-threaded process.
    unsafe {
        if libc::setns(userns.as_raw_fd(), libc::CLONE_NEWUSER) != 0 {
            return Err(err("joining the sandbox's user namespace"));
        }
        if libc::setgroups(0, std::ptr::null()) != 0 || libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
            return Err(err("becoming root in the sandbox's user namespace"));
        }
    }
    Ok(())
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(err("pipe"));
    }
    // SAFETY: fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn ctx(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

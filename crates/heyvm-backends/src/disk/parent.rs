//! One parent mount for a data dir's sandbox disks, so a sandbox owner can
//! drop every other sandbox's disk from its copy of the host's mounts in
//! one call.
//!
//! Each owner's mount namespace starts as a copy of the host's, holding
//! every sandbox disk; a copy left there would keep a deleted sandbox's
//! disk (and its loop device) alive as long as this sandbox runs. Detaching
//! them one by one costs an RCU grace period each: 10 ms of a 15 ms owner
//! setup with 73 disks on the host, growing with every sandbox. So the
//! daemon bind-mounts `<data>/sandboxes` on itself before it mounts the
//! first disk there; an owner clones its own disk's mount, detaches the
//! whole `sandboxes` mount (every disk under it goes in the same call),
//! and puts its own disk back at the same path on the directory beneath.
//! `/run/netns` is handled the same way (`net::netns::detach_all`).
//!
//! A data dir whose disks were mounted before it had the parent mount
//! (upgraded while sandboxes ran) keeps working: the parent is made only
//! when no disk is mounted under it, and owners detach whatever the
//! parents did not take, one by one.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Parents this process checked or made, and those it made.
static DONE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
static MADE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Daemon shutdown: unmounts the parents it made that no disk is left
/// under, so a data dir without sandboxes can simply be removed.
pub fn release() {
    let made = std::mem::take(&mut *MADE.lock().unwrap_or_else(|e| e.into_inner()));
    DONE.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let Ok(mounts) = mount_points() else { return };
    for dir in made {
        if !mounts.iter().any(|m| m.starts_with(&dir) && *m != dir) {
            detach(&dir);
        }
    }
}

/// Daemon side, before mounting a disk under `sandboxes`: makes it a mount
/// point of its own unless it is one, or disks are already mounted beneath
/// it (a bind over them would hide them where no unmount reaches).
pub fn ensure(sandboxes: &Path) -> io::Result<()> {
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if done.contains(sandboxes) {
        return Ok(());
    }
    let mounts = mount_points()?;
    if !mounts.contains(sandboxes) {
        if mounts.iter().any(|m| m.starts_with(sandboxes)) {
            tracing::info!(dir = %sandboxes.display(), "sandbox disks were mounted before their parent mount: owners detach them one by one");
        } else {
            std::fs::create_dir_all(sandboxes)?;
            let dir = cstr(sandboxes)?;
            // SAFETY: mount(2) with a valid C string and no data.
            if unsafe { libc::mount(dir.as_ptr(), dir.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) } != 0 {
                return Err(last(&format!("bind-mounting {} on itself", sandboxes.display())));
            }
            MADE.lock().unwrap_or_else(|e| e.into_inner()).insert(sandboxes.to_path_buf());
        }
    }
    done.insert(sandboxes.to_path_buf());
    Ok(())
}

/// Owner side, in its private copy of the host's mounts: detaches every
/// sandbox disk but `own` (`…/sandboxes/<id>/disk`), whole parents first.
/// Returns how many foreign disks went and how many umount calls it took.
pub fn detach_foreign(own: &Path) -> io::Result<(usize, usize)> {
    let before = mount_points()?;
    let disks: Vec<&PathBuf> = before.iter().filter(|m| super::is_disk_mount(m)).collect();
    let foreign = disks.iter().filter(|d| d.as_path() != own).count();
    let parents: BTreeSet<&Path> = disks.iter().filter_map(|d| d.parent().and_then(Path::parent)).filter(|p| before.contains(*p)).collect();
    let own_parent = own.parent().and_then(Path::parent);
    let mut calls = 0;
    for parent in parents {
        calls += 1;
        if Some(parent) == own_parent && before.contains(own) {
            keep_while_detaching(own, parent)?;
        } else {
            detach(parent);
        }
    }
    // Disks no parent took (mounted before their parent was made, or in a
    // data dir without one).
    for disk in mount_points()?.iter().filter(|m| super::is_disk_mount(m) && m.as_path() != own) {
        calls += 1;
        detach(disk);
    }
    Ok((foreign, calls))
}

/// Detaches `parent` with everything under it, then mounts a clone of
/// `own`'s disk back at `own` (now on the directory beneath `parent`).
fn keep_while_detaching(own: &Path, parent: &Path) -> io::Result<()> {
    let path = cstr(own)?;
    // SAFETY: open_tree with a valid C string; the result is checked and owned.
    let tree = unsafe {
        let fd = libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint);
        if fd < 0 {
            return Err(last(&format!("cloning the mount of {}", own.display())));
        }
        OwnedFd::from_raw_fd(fd as i32)
    };
    detach(parent);
    // SAFETY: move_mount of the detached tree onto a valid C string path.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            std::os::fd::AsRawFd::as_raw_fd(&tree),
            c"".as_ptr(),
            libc::AT_FDCWD,
            path.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved != 0 {
        return Err(last(&format!("mounting the sandbox's own disk back at {}", own.display())));
    }
    Ok(())
}

fn detach(target: &Path) {
    if let Ok(t) = cstr(target) {
        // SAFETY: a valid C string.
        unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Every mount point in this mount namespace.
fn mount_points() -> io::Result<BTreeSet<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info.lines().filter_map(|l| l.split(' ').nth(4)).map(|t| PathBuf::from(super::unescape(t))).collect())
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path"))
}

fn last(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

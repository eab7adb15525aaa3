//! Spare disks: a few empty default-size disks made ahead of time (image
//! copied from the template, loop-attached, mounted, the sandbox
//! directory skeleton made), so that a new
//! sandbox's first start does not wait for them (~10–60 ms on a loaded
//! 2-core host: the copy, the loop attach and the ext4 mount).
//!
//! They live in `<data dir>/spare-disks/sandboxes/sb-<hex>/` (a layout
//! like a sandbox's, so each owner's `detach_foreign` detaches them from
//! its mount namespace as it does other sandboxes' disks). Taking one
//! renames its image into the sandbox's directory and moves its mount
//! there. A spare disk is empty and was never a sandbox's: nothing passes
//! between sandboxes. Removed at shutdown, and leftovers of a killed
//! daemon when the next one starts.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use heyvm_core::paths::{DataDir, SandboxPaths};

use crate::stock::{random_tag, Stock};

static STOCK: Stock<SandboxPaths> = Stock::new();

/// `<data dir>/spare-disks` and the spares' size, once opened.
static ROOT: Mutex<Option<(PathBuf, u64)>> = Mutex::new(None);

fn root() -> Option<(PathBuf, u64)> {
    ROOT.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn c(p: &Path) -> Option<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).ok()
}

/// At daemon start: removes the spare disks a killed daemon left under
/// `data` and starts making `want` of `bytes` each.
pub fn open(data: &Path, bytes: u64, want: usize) {
    let root = data.join("spare-disks");
    remove_all(&root);
    *ROOT.lock().unwrap_or_else(|e| e.into_inner()) = Some((root, bytes));
    STOCK.open(want);
    refill();
}

fn remove_all(root: &Path) {
    let dir = DataDir::new(root.to_path_buf()).sandboxes_dir();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let p = DataDir::new(root.to_path_buf()).sandbox(&e.file_name().to_string_lossy());
        discard(&p);
    }
}

fn discard(p: &SandboxPaths) {
    super::unmount(p);
    heyvm_core::backend::remove_tree(&p.dir);
}

/// Daemon shutdown: removes every spare disk and makes no more.
pub fn close() {
    for p in STOCK.close() {
        discard(&p);
    }
}

/// Gives `p` (a new sandbox's paths, no disk yet) a spare disk of `bytes`,
/// mounted. False when there is none of that size ready, or moving it
/// failed (the caller makes one the ordinary way).
pub fn take(p: &SandboxPaths, bytes: u64) -> bool {
    let ours = root().is_some_and(|(root, b)| b == bytes && root.parent() == p.dir.parent().and_then(Path::parent));
    if !ours {
        return false;
    }
    let spare = STOCK.take();
    refill();
    let Some(spare) = spare else { return false };
    match move_into(&spare, p) {
        Ok(()) => {
            heyvm_core::backend::remove_tree(&spare.dir);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not hand a spare disk over; making one");
            // Undo whatever part moved.
            super::unmount(p);
            let _ = std::fs::remove_file(p.disk_image());
            discard(&spare);
            false
        }
    }
}

/// Renames the image and moves (or binds, then detaches) the mount.
fn move_into(spare: &SandboxPaths, p: &SandboxPaths) -> std::io::Result<()> {
    if !super::is_mounted(spare) {
        return Err(std::io::Error::other("the spare disk is not mounted"));
    }
    std::fs::create_dir_all(p.disk_mount())?;
    std::fs::rename(spare.disk_image(), p.disk_image())?;
    let (from, to) = (c(&spare.disk_mount()).ok_or_else(bad)?, c(&p.disk_mount()).ok_or_else(bad)?);
    // SAFETY: mount(2)/umount2(2) with valid C strings and no data.
    unsafe {
        if libc::mount(from.as_ptr(), to.as_ptr(), std::ptr::null(), libc::MS_MOVE, std::ptr::null()) != 0 {
            // Under a shared parent a mount cannot move: bind it (same
            // filesystem and flags), then drop the old place.
            if libc::mount(from.as_ptr(), to.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::umount2(from.as_ptr(), libc::MNT_DETACH);
        }
    }
    Ok(())
}

fn bad() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path")
}

fn refill() {
    let Some((root, bytes)) = root() else { return };
    STOCK.refill("a spare disk", move || make(&root, bytes), |p| discard(&p));
}

/// Makes one spare disk (cleaning up after itself when that fails).
fn make(root: &Path, bytes: u64) -> std::io::Result<SandboxPaths> {
    let p = DataDir::new(root.to_path_buf()).sandbox(&format!("sb-{}", random_tag()));
    // The template lives beside the real sandboxes' (one copy of it).
    let made = std::fs::create_dir_all(&p.dir)
        .and_then(|()| super::create_with_templates(&p, bytes, &templates(root)))
        .and_then(|()| crate::bubblewrap::skeleton(&p).map_err(std::io::Error::other));
    match made {
        Ok(()) => Ok(p),
        Err(e) => {
            discard(&p);
            Err(e)
        }
    }
}

fn templates(root: &Path) -> PathBuf {
    root.parent().unwrap_or(root).join("disk-templates")
}

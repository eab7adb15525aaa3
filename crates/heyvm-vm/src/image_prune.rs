//! Removing cached image base disks nobody needs (`images rm`, `images
//! prune`). The cache is shared by every daemon on the host, and a base
//! disk must outlive every qcow2 file naming it as its backing file (a VM's
//! root overlay, a fork's copy, a checkpoint's copy), wherever it lives. So
//! each such file registers itself next to the base disk
//! (`<key>.users/<hash of its path>`, holding the path); a base disk is
//! removable when no registered file still exists with it as its backing
//! file and the asking daemon's store has no image with its layers.
//!
//! Races: an overlay is made while holding a shared `flock` on the base
//! disk, and a base disk that vanished before the lock was taken is made
//! again ([`pinned`]); the pruner takes the lock exclusively without
//! waiting and skips a disk in use.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{VmError, VmResult};

fn users_dir(base: &Path) -> PathBuf {
    base.with_extension("users")
}

fn is_image_base(p: &Path) -> bool {
    p.parent().is_some_and(|d| d.ends_with("images/oci")) && p.extension().is_some_and(|e| e == "ext4")
}

/// The backing file a qcow2 file names (its header), if any.
pub fn backing_file(qcow2: &Path) -> Option<PathBuf> {
    let mut f = fs::File::open(qcow2).ok()?;
    let mut h = [0u8; 20];
    f.read_exact(&mut h).ok()?;
    if &h[..4] != b"QFI\xfb" {
        return None;
    }
    let off = u64::from_be_bytes(h[8..16].try_into().ok()?);
    let len = u32::from_be_bytes(h[16..20].try_into().ok()?) as usize;
    if off == 0 || len == 0 || len > 4096 {
        return None;
    }
    let mut name = vec![0u8; len];
    f.seek(SeekFrom::Start(off)).ok()?;
    f.read_exact(&mut name).ok()?;
    Some(PathBuf::from(String::from_utf8(name).ok()?))
}

/// Registers a qcow2 file as a user of its image base disk (nothing for the
/// default image, which is never pruned).
pub fn register(qcow2: &Path) -> io::Result<()> {
    let Some(base) = backing_file(qcow2).filter(|b| is_image_base(b)) else { return Ok(()) };
    let path = fs::canonicalize(qcow2)?;
    let dir = users_dir(&base);
    fs::create_dir_all(&dir)?;
    let key: String = Sha256::digest(path.as_os_str().as_encoded_bytes()).iter().take(12).map(|b| format!("{b:02x}")).collect();
    fs::write(dir.join(key), path.as_os_str().as_encoded_bytes())
}

/// Whether a registered file still boots on `base`; stale entries go.
fn in_use(base: &Path) -> bool {
    let Ok(rd) = fs::read_dir(users_dir(base)) else { return false };
    let mut used = false;
    for e in rd.flatten() {
        let user = fs::read_to_string(e.path()).map(PathBuf::from).ok();
        if user.as_deref().and_then(backing_file).is_some_and(|b| b == base) {
            used = true;
        } else {
            let _ = fs::remove_file(e.path());
        }
    }
    used
}

fn flock(f: &fs::File, how: i32) -> io::Result<()> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), how) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The base disk `make` returns, locked shared (the guard) so no prune
/// removes it while an overlay is made on it; made again if a prune
/// removed it in between.
pub fn pinned(make: impl Fn() -> VmResult<PathBuf>) -> VmResult<(PathBuf, Option<fs::File>)> {
    for _ in 0..3 {
        let base = make()?;
        if !is_image_base(&base) {
            return Ok((base, None));
        }
        let f = match fs::File::open(&base) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(VmError::io(format!("opening {}", base.display()), e)),
        };
        flock(&f, libc::LOCK_SH).map_err(|e| VmError::io("locking the base disk", e))?;
        if f.metadata().is_ok_and(|m| m.nlink() > 0) {
            return Ok((base, Some(f)));
        }
    }
    Err(VmError::io("the image's base disk", io::Error::other("removed by a prune three times in a row")))
}

/// Removes every image base disk in `cache_dir` that is not in `keep` and
/// not in use; returns the host bytes freed.
pub fn prune(cache_dir: &Path, keep: &[PathBuf]) -> u64 {
    let Ok(rd) = fs::read_dir(cache_dir.join("images/oci")) else { return 0 };
    let mut freed = 0;
    for e in rd.flatten() {
        let base = e.path();
        if !is_image_base(&base) || e.file_name().to_string_lossy().starts_with('.') || keep.contains(&base) {
            continue;
        }
        let Ok(f) = fs::File::open(&base) else { continue };
        if flock(&f, libc::LOCK_EX | libc::LOCK_NB).is_err() || in_use(&base) {
            continue;
        }
        let bytes = f.metadata().map(|m| m.blocks() * 512).unwrap_or(0);
        if fs::remove_file(&base).is_ok() {
            freed += bytes;
            let _ = fs::remove_dir_all(users_dir(&base));
            tracing::info!(disk = %base.display(), bytes, "removed an unused image base disk");
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qcow2_naming(path: &Path, backing: &Path) {
        let name = backing.to_string_lossy();
        let mut h = vec![0u8; 72];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[8..16].copy_from_slice(&72u64.to_be_bytes());
        h[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
        h.extend_from_slice(name.as_bytes());
        fs::write(path, h).unwrap();
    }

    #[test]
    fn unused_base_disks_go_used_and_kept_ones_stay() {
        let t = tempfile::tempdir().unwrap();
        let oci = t.path().join("images/oci");
        fs::create_dir_all(&oci).unwrap();
        let (used, unused, kept) = (oci.join("a.ext4"), oci.join("b.ext4"), oci.join("c.ext4"));
        for b in [&used, &unused, &kept] {
            fs::write(b, "disk").unwrap();
        }
        let overlay = t.path().join("root.qcow2");
        qcow2_naming(&overlay, &used);
        assert_eq!(backing_file(&overlay), Some(used.clone()));
        register(&overlay).unwrap();
        // A user that moved to another base no longer counts.
        let moved = t.path().join("moved.qcow2");
        qcow2_naming(&moved, &unused);
        register(&moved).unwrap();
        qcow2_naming(&moved, &kept);
        prune(t.path(), std::slice::from_ref(&kept));
        assert!(used.exists() && kept.exists() && !unused.exists());
        fs::remove_file(&overlay).unwrap();
        prune(t.path(), &[]);
        assert!(!used.exists() && !kept.exists() && !users_dir(&used).exists());
        // A base disk the launcher holds is not removed.
        fs::write(&unused, "disk").unwrap();
        let (p, guard) = pinned(|| Ok(unused.clone())).unwrap();
        assert_eq!(p, unused);
        prune(t.path(), &[]);
        assert!(unused.exists());
        drop(guard);
        prune(t.path(), &[]);
        assert!(!unused.exists());
    }
}

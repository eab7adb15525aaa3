//! Unpacks one layer tarball into a directory that overlayfs can use as a
//! lower layer: OCI whiteouts (`.wh.NAME`) become overlay whiteouts (a 0/0
//! character device), opaque markers (`.wh..wh..opq`) become the
//! `trusted.overlay.opaque` xattr; hard links, symlinks, modes, ownership,
//! mtimes and safe xattrs are kept.
//!
//! A layer is hostile input: no entry may leave the directory, none is
//! written through a symlink (the parent chain is checked with
//! `symlink_metadata` and files are opened `O_NOFOLLOW | O_EXCL`), and the
//! layer's own `trusted.*` xattrs are dropped so it cannot forge overlay
//! metadata.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{ImageError, Result};

/// Unpacks `tar` (already decompressed) into `dest` (an empty directory)
/// and returns the `sha256:` digest of the uncompressed stream (the layer's
/// diff id).
pub fn unpack_layer(tar: impl Read, dest: &Path) -> Result<String> {
    let mut hashing = HashingReader { inner: tar, hasher: Sha256::new() };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
        for entry in archive.entries().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            if let Some(d) = unpack_entry(entry, dest)? {
                dirs.push(d);
            }
        }
        // Directory modes and times last: a read-only directory must still
        // take its children, and adding them changes its mtime.
        for (path, mode, mtime) in dirs.iter().rev() {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))?;
            set_mtime(path, *mtime);
        }
    }
    // Trailing padding after the end-of-archive marker is part of the diff.
    io::copy(&mut hashing, &mut io::sink())?;
    Ok(format!("sha256:{}", crate::oci::hex(&hashing.hasher.finalize())))
}

fn bad(e: io::Error) -> ImageError {
    ImageError::InvalidArchive(format!("layer tar: {e}"))
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The entry's path inside `dest`, refusing `..` and absolute escapes.
fn confined(dest: &Path, raw: &Path) -> Result<Option<PathBuf>> {
    let mut out = dest.to_path_buf();
    let mut depth = 0;
    for c in raw.components() {
        match c {
            Component::Normal(n) => {
                out.push(n);
                depth += 1;
            }
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ImageError::InvalidArchive(format!("layer entry '{}' leaves the layer", raw.display())))
            }
        }
    }
    Ok((depth > 0).then_some(out))
}

/// Creates missing parents and refuses a symlink anywhere on the way.
fn prepare_parent(dest: &Path, path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(dest);
    let rel = parent.strip_prefix(dest).unwrap_or(Path::new(""));
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ImageError::InvalidArchive(format!("layer writes through the symlink '{}'", rel.display())))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => fs::remove_file(&cur).and_then(|()| fs::create_dir(&cur))?,
            Err(_) => fs::create_dir(&cur)?,
        }
    }
    Ok(())
}

/// Removes whatever is at `path` (a later entry replaces an earlier one),
/// except a directory that a directory entry re-states.
fn clear(path: &Path, keep_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && keep_dir => Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

fn unpack_entry<R: Read>(mut entry: tar::Entry<R>, dest: &Path) -> Result<Option<(PathBuf, u32, u64)>> {
    let raw = entry.path().map_err(bad)?.into_owned();
    let Some(path) = confined(dest, &raw)? else { return Ok(None) };
    prepare_parent(dest, &path)?;
    let name = path.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
    if name == b".wh..wh..opq" {
        let dir = path.parent().unwrap_or(dest);
        setxattr(dir, "trusted.overlay.opaque", b"y")?;
        return Ok(None);
    }
    if let Some(hidden) = name.strip_prefix(b".wh.") {
        let target = path.with_file_name(std::ffi::OsStr::from_bytes(hidden));
        clear(&target, false)?;
        mknod(&target, libc::S_IFCHR, 0)?;
        return Ok(None);
    }
    let h = entry.header().clone();
    let mode = h.mode().map_err(bad)? & 0o7777;
    let (uid, gid) = (h.uid().map_err(bad)? as u32, h.gid().map_err(bad)? as u32);
    let mtime = h.mtime().unwrap_or(0);
    let kind = h.entry_type();
    clear(&path, kind.is_dir())?;
    let xattrs = pax_xattrs(&mut entry);
    match kind {
        tar::EntryType::Directory => {
            if !path.is_dir() {
                fs::create_dir(&path)?;
            }
            chown(&path, uid, gid)?;
            apply_xattrs(&path, &xattrs)?;
            return Ok(Some((path, mode, mtime)));
        }
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            let mut f = fs::OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).mode(0o600).open(&path)?;
            io::copy(&mut entry, &mut f)?;
            drop(f);
        }
        tar::EntryType::Symlink => {
            let target = entry.link_name().map_err(bad)?.ok_or_else(|| ImageError::InvalidArchive("symlink without a target".into()))?;
            std::os::unix::fs::symlink(&target, &path)?;
            lchown(&path, uid, gid)?;
            set_mtime(&path, mtime);
            return Ok(None);
        }
        tar::EntryType::Link => {
            let target = entry.link_name().map_err(bad)?.ok_or_else(|| ImageError::InvalidArchive("hard link without a target".into()))?;
            let src = confined(dest, &target)?.ok_or_else(|| ImageError::InvalidArchive("hard link to the layer root".into()))?;
            prepare_parent(dest, &src)?;
            let m = fs::symlink_metadata(&src).map_err(|_| {
                ImageError::Unsupported(format!("hard link '{}' points outside its own layer ('{}')", raw.display(), target.display()))
            })?;
            if m.is_dir() {
                return Err(ImageError::InvalidArchive(format!("hard link to a directory: {}", raw.display())));
            }
            fs::hard_link(&src, &path)?;
            return Ok(None);
        }
        tar::EntryType::Fifo => mknod(&path, libc::S_IFIFO | 0o600, 0)?,
        tar::EntryType::Char | tar::EntryType::Block => {
            // Device nodes from an image are never created: a sandbox gets its
            // own /dev.
            tracing::debug!("skipping device node {} in a layer", raw.display());
            return Ok(None);
        }
        tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
            return Ok(None)
        }
        other => return Err(ImageError::InvalidArchive(format!("unsupported tar entry type {other:?} at {}", raw.display()))),
    }
    chown(&path, uid, gid)?;
    // After chown, which clears setuid bits.
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    apply_xattrs(&path, &xattrs)?;
    set_mtime(&path, mtime);
    Ok(None)
}

/// `SCHILY.xattr.*` PAX records a layer may carry: `user.*` and
/// `security.capability` only.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<R>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    if name.starts_with("user.") || name == "security.capability" {
                        out.push((name.to_string(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
    }
    out
}

fn apply_xattrs(path: &Path, xattrs: &[(String, Vec<u8>)]) -> Result<()> {
    for (k, v) in xattrs {
        if let Err(e) = setxattr(path, k, v) {
            tracing::debug!("xattr {k} on {}: {e}", path.display());
        }
    }
    Ok(())
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn setxattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    let (p, n) = (cpath(path)?, CString::new(name).map_err(|_| ImageError::InvalidArchive("NUL in xattr name".into()))?);
    // SAFETY: valid C strings and a buffer of the given length.
    check(unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) })?;
    Ok(())
}

fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknod(p.as_ptr(), mode, dev) })
}

fn chown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    lchown(path, uid, gid)
}

/// Ownership is kept as the layer says when we may set it (root); without
/// root files stay ours.
fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let p = cpath(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::lchown(p.as_ptr(), uid, gid) })
}

fn set_mtime(path: &Path, mtime: u64) {
    let Ok(p) = cpath(path) else { return };
    let t = libc::timespec { tv_sec: mtime as libc::time_t, tv_nsec: 0 };
    let times = [t, t];
    // SAFETY: valid C string and a two-element timespec array.
    unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
}

#[cfg(test)]
mod tests;

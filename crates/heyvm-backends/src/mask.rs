//! The shared masking layer. Root inside a sandbox is host root today, so
//! the copy-on-write view of the host's system directories would show it
//! every root-only host file (`/etc/ssl/private`, ssh host keys,
//! `/var/cache/debconf/passwords.dat`, databases under /var/lib). One
//! overlay layer of whiteouts, above the host directory in each sandbox's
//! overlay, hides every path under the system directories that is not
//! world-readable (and the daemon's data directory, should it live there).
//!
//! The layer is host-wide, under `/run/heyvm-mask/<hash of its content>`
//! (never changed once built, so running sandboxes keep a stable lower
//! layer), with `current` naming the newest. Each daemon rescans the host
//! at start in the background; launches use the newest layer, waiting for
//! the scan only when none exists yet.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

const ROOT: &str = "/run/heyvm-mask";
/// The host directories bubblewrap shows through overlays.
const DIRS: &[&str] = &["usr", "etc", "var", "opt"];

/// The layer built by this process's scan (None if it failed).
static SCANNED: LazyLock<Option<PathBuf>> = LazyLock::new(|| match rebuild(DIRS, extra_hidden()) {
    Ok(p) => Some(p),
    Err(e) => {
        tracing::warn!(error = %e, "cannot build the masking layer");
        None
    }
});

fn extra_hidden() -> Vec<PathBuf> {
    heyvm_core::config::string(heyvm_core::config::DATA_DIR).map(PathBuf::from).into_iter().collect()
}

/// Starts the rescan in the background (daemon start).
pub fn start_rescan() {
    std::thread::spawn(|| LazyLock::force(&SCANNED));
}

/// The masking layer to use now: the newest built on this host, else the
/// one this process is building.
pub fn current() -> Option<PathBuf> {
    std::fs::canonicalize(Path::new(ROOT).join("current")).ok().or_else(|| SCANNED.clone())
}

/// Paths under `dirs` that others cannot read (directories: read and
/// search), not descending into them nor into other filesystems.
fn secrets(dirs: &[&str]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for d in dirs {
        let top = Path::new("/").join(d);
        let Ok(md) = top.symlink_metadata() else { continue };
        if md.is_dir() {
            walk(&top, md.dev(), &mut out);
        }
    }
    out
}

fn walk(dir: &Path, dev: u64, out: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(md) = path.symlink_metadata() else { continue };
        let mode = md.mode();
        if md.file_type().is_symlink() {
            continue;
        }
        if md.is_dir() {
            if mode & 0o005 != 0o005 {
                out.insert(path);
            } else if md.dev() == dev {
                walk(&path, dev, out);
            }
        } else if mode & 0o004 == 0 {
            out.insert(path);
        }
    }
}

/// Scans and builds (or reuses) the layer; points `current` at it.
fn rebuild(dirs: &[&str], extra: Vec<PathBuf>) -> std::io::Result<PathBuf> {
    let started = std::time::Instant::now();
    let mut hide = secrets(dirs);
    for p in extra {
        if dirs.iter().any(|d| p.starts_with(Path::new("/").join(d))) {
            hide.insert(p);
        }
    }
    let list: String = hide.iter().map(|p| format!("{}\n", p.display())).collect();
    let hash = list.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
    let root = Path::new(ROOT);
    std::fs::create_dir_all(root)?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711))?;
    let layer = root.join(format!("{hash:016x}"));
    if !layer.is_dir() {
        let tmp = root.join(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        for d in dirs {
            std::fs::create_dir_all(tmp.join(d))?;
            copy_dir_attrs(&Path::new("/").join(d), &tmp.join(d));
        }
        for p in &hide {
            whiteout(&tmp, p)?;
        }
        if std::fs::rename(&tmp, &layer).is_err() {
            // Another daemon built the same layer meanwhile.
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    let link = root.join(format!("current-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&layer, &link)?;
    std::fs::rename(&link, root.join("current"))?;
    tracing::info!(hidden = hide.len(), ms = started.elapsed().as_millis() as u64, layer = %layer.display(), "masking layer ready");
    Ok(layer)
}

/// A whiteout (character device 0:0) at `host`'s place in the layer, with
/// its parents created as copies of the host's (an overlay directory takes
/// its owner and mode from the topmost layer that has it).
fn whiteout(layer: &Path, host: &Path) -> std::io::Result<()> {
    let rel = host.strip_prefix("/").unwrap_or(host);
    let target = layer.join(rel);
    let mut built = layer.to_path_buf();
    let mut real = PathBuf::from("/");
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            built.push(c);
            real.push(c);
            if !built.exists() {
                std::fs::create_dir(&built)?;
                copy_dir_attrs(&real, &built);
            }
        }
    }
    let c = CString::new(target.as_os_str().as_encoded_bytes()).map_err(|_| std::io::Error::other("NUL in path"))?;
    // SAFETY: mknod with a valid path; 0:0 is overlayfs's whiteout.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn copy_dir_attrs(from: &Path, to: &Path) {
    if let Ok(md) = from.metadata() {
        let _ = std::fs::set_permissions(to, std::fs::Permissions::from_mode(md.mode() & 0o7777));
        let _ = std::os::unix::fs::chown(to, Some(md.uid()), Some(md.gid()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_root_only_files_and_not_public_ones() {
        let s = secrets(&["etc"]);
        if Path::new("/etc/shadow").exists() {
            assert!(s.contains(Path::new("/etc/shadow")));
        }
        assert!(!s.contains(Path::new("/etc/passwd")));
        assert!(
            !s.iter().any(|p| p.starts_with("/etc/ssl/private") && p != Path::new("/etc/ssl/private")),
            "no descent into hidden directories"
        );
    }
}

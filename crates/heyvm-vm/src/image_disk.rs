//! Read-only base disks for OCI images: an image's unpacked layers (from
//! the shared layer store, overlay-style whiteouts) are merged by a
//! read-only overlayfs mount in a private mount namespace and written into
//! an ext4 file system with `mkfs.ext4 -d`, once per image. Every VM on the
//! image boots a qcow2 overlay of that disk, so no boot copies the root.
//!
//! Disks are cached in `$HEYVM_VM_DIR/images/oci/<key>.ext4`, where the key
//! hashes the layer digests (layers are content-addressed, so the same
//! image gives the same key in every daemon on the host). A disk is never
//! replaced once published: overlays name it as their backing file, and a
//! second `mkfs` of the same tree is not byte-identical.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::error::{VmError, VmResult};

/// Bumped when the way base disks are made changes (gives new keys).
const FORMAT: &str = "heyvm-oci-ext4-v2";
/// Overlay mount options must fit in one page.
const MAX_OVERLAY_OPTS: usize = 4000;
/// The smallest root file system a VM on an image gets (sparse: only the
/// blocks written cost host disk).
pub const MIN_BASE_BYTES: u64 = 2 << 30;

/// One build at a time in this process (a second caller then finds the
/// disk made); other daemons are kept apart by [`publish`].
static BUILDING: Mutex<()> = Mutex::new(());

/// Where the base disk for these layers lives (made or not).
pub fn path_for(cache_dir: &Path, layers: &[PathBuf]) -> PathBuf {
    let mut h = Sha256::new();
    h.update(FORMAT.as_bytes());
    for l in layers {
        h.update(b"\0");
        h.update(l.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
    }
    let key: String = h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    cache_dir.join("images/oci").join(format!("{key}.ext4"))
}

/// The base disk for an image's layers (bottom first), made if missing.
pub fn ensure(cache_dir: &Path, layers: &[PathBuf]) -> VmResult<PathBuf> {
    if layers.is_empty() {
        return Err(VmError::ImageWithoutLayers);
    }
    let out = path_for(cache_dir, layers);
    if out.exists() {
        return Ok(out);
    }
    let _guard = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if out.exists() {
        return Ok(out);
    }
    build(layers, &out).map_err(VmError::ImageDisk)?;
    Ok(out)
}

fn build(layers: &[PathBuf], out: &Path) -> io::Result<()> {
    let dir = out.parent().ok_or_else(|| io::Error::other("bad cache path"))?;
    fs::create_dir_all(dir)?;
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let work = dir.join(format!(".{stem}.{}.build", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let (merged, empty, tmp) = (work.join("merged"), work.join("empty"), work.join("disk.ext4"));
    fs::create_dir_all(&merged)?;
    fs::create_dir_all(&empty)?;
    let res = (|| {
        let bytes = base_size(layers);
        fs::File::create(&tmp)?.set_len(bytes)?;
        // overlayfs lists lower layers top first; without an upper layer it
        // wants two at least, hence the empty one at the bottom.
        let mut lower: Vec<String> = layers.iter().rev().map(|l| l.display().to_string()).collect();
        lower.push(empty.display().to_string());
        if lower.iter().any(|l| l.contains([':', ',', '\n'])) {
            return Err(io::Error::other("a layer path contains ':' or ','"));
        }
        let opts = format!("lowerdir={}", lower.join(":"));
        if opts.len() > MAX_OVERLAY_OPTS {
            return Err(io::Error::other(format!("image has too many layers ({}) for one overlay mount", layers.len())));
        }
        // A private mount namespace: the merged view vanishes with the
        // process, whatever happens to this daemon. `mkfs.ext4` always
        // makes a `/lost+found`; an image without one must not gain it (a
        // VM's root would list a directory the image and a bubblewrap
        // sandbox on it do not have), so the empty one goes again.
        let script = "mount -t overlay heyvm-image -o \"$1\" \"$2\" && mkfs.ext4 -q -F -L heyvm-root -d \"$2\" \"$3\" && \
                      { [ -e \"$2/lost+found\" ] || debugfs -w -R 'rmdir /lost+found' \"$3\"; }";
        let o = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
            .arg(&opts)
            .arg(&merged)
            .arg(&tmp)
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("unshare: {e}")))?;
        if !o.status.success() {
            return Err(io::Error::other(format!("mkfs.ext4 -d: {}", String::from_utf8_lossy(&o.stderr).trim())));
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444))?;
        fs::File::open(&tmp)?.sync_all()?;
        publish(&tmp, out)
    })();
    let _ = fs::remove_dir_all(&work);
    res
}

/// Puts the finished disk in place unless another daemon did first (a hard
/// link never replaces an existing name, a rename would).
fn publish(tmp: &Path, out: &Path) -> io::Result<()> {
    match fs::hard_link(tmp, out) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Twice the layers' apparent size plus room for metadata and the guest's
/// own writes, at least [`MIN_BASE_BYTES`], in whole MiB.
fn base_size(layers: &[PathBuf]) -> u64 {
    let content: u64 = layers.iter().map(|l| tree_bytes(l)).sum();
    let want = (2 * content + (512 << 20)).max(MIN_BASE_BYTES);
    want.div_ceil(1 << 20) << 20
}

/// Apparent size of a tree (files' lengths plus 4 KiB per entry), never
/// following links.
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += 4096 + if m.is_file() { m.len() } else { 0 };
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layer_digests_not_their_location() {
        let c = Path::new("/cache");
        let a = path_for(c, &["/d1/images/layers/aa".into(), "/d1/images/layers/bb".into()]);
        assert_eq!(a, path_for(c, &["/d2/images/layers/aa".into(), "/d2/images/layers/bb".into()]));
        assert_ne!(a, path_for(c, &["/d1/images/layers/bb".into(), "/d1/images/layers/aa".into()]));
        assert!(a.starts_with("/cache/images/oci") && a.extension().unwrap() == "ext4");
    }

    #[test]
    fn merges_layers_with_whiteouts_when_root() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || Command::new("mkfs.ext4").arg("-V").output().is_err() {
            eprintln!("SKIP: needs root and mkfs.ext4");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (l1, l2) = (t.path().join("layers/l1"), t.path().join("layers/l2"));
        fs::create_dir_all(l1.join("etc")).unwrap();
        fs::create_dir_all(&l2).unwrap();
        fs::write(l1.join("etc/keep"), "k").unwrap();
        fs::write(l1.join("gone"), "g").unwrap();
        // An overlay whiteout (0/0 character device) removes `gone`.
        let wh = std::ffi::CString::new(l2.join("gone").to_str().unwrap()).unwrap();
        // SAFETY: mknod with a valid path.
        assert_eq!(unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR | 0o600, 0) }, 0);
        let disk = ensure(&t.path().join("cache"), &[l1, l2]).unwrap();
        assert!(disk.exists());
        let list = Command::new("debugfs").args(["-R", "ls -l /"]).arg(&disk).output().unwrap();
        let text = String::from_utf8_lossy(&list.stdout);
        assert!(text.contains("etc") && !text.contains("gone"), "{text}");
        assert!(!text.contains("lost+found"), "mkfs's lost+found is not in the image: {text}");
    }
}

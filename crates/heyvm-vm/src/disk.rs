//! Disks of a VM: a qcow2 overlay whose backing file is the image's
//! read-only base disk (a boot never copies the root filesystem), and a
//! persistent ext4 disk for `/workspace` that the host can loop-mount while
//! the VM is stopped. That disk is the sandbox's disk limit
//! (`disk_size_gb` or the size class's): a write past it fails with ENOSPC
//! in the guest; it grows (never shrinks) while the VM is stopped.

use std::io;
use std::path::Path;
use std::process::Command;

/// Size of a new `/workspace` disk when the sandbox has no disk limit
/// (sparse: only used blocks cost).
pub const WORKSPACE_BYTES: u64 = 8 << 30;

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output().map_err(|e| io::Error::new(e.kind(), format!("{:?}: {e}", cmd.get_program())))?;
    if !out.status.success() {
        return Err(io::Error::other(format!("{:?} failed: {}", cmd.get_program(), String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

/// Creates `overlay` (qcow2) on top of the raw `base`. The base is named by
/// absolute path; it must never change while overlays use it.
pub fn create_overlay(base: &Path, overlay: &Path) -> io::Result<()> {
    let base = std::fs::canonicalize(base)?;
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"]).arg(&base).arg(overlay))
}

/// Creates an empty ext4 file system of `bytes` at `path` (sparse).
pub fn create_ext4(path: &Path, bytes: u64, label: &str) -> io::Result<()> {
    create_ext4_from(path, bytes, label, None)
}

/// Creates an ext4 file system of `bytes` at `path` (sparse) holding a copy
/// of the tree `from` (`mkfs.ext4 -d`: symlinks stay symlinks, hard links,
/// modes, owners and times are kept; nothing is followed out of `from`).
pub fn create_ext4_from(path: &Path, bytes: u64, label: &str, from: Option<&Path>) -> io::Result<()> {
    let f = std::fs::File::create(path)?;
    f.set_len(bytes)?;
    drop(f);
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F", "-L", label, "-E", "root_owner=0:0"]);
    if let Some(dir) = from {
        cmd.arg("-d").arg(dir);
    }
    run(cmd.arg(path))
}

/// Grows the ext4 file system in the (unused) disk image `path` to
/// `bytes`: check it (a VM killed mid-write leaves a journal to replay),
/// extend the file, resize. True when it grew; never shrinks. Judged by the
/// file system's size, not the file's: a live growth the guest could not
/// finish left the file larger than its file system.
pub fn grow_ext4(path: &Path, bytes: u64) -> io::Result<bool> {
    let len = std::fs::metadata(path)?.len();
    let fs_bytes = ext4_usage(path).map(|(_, total)| total).unwrap_or(len);
    if fs_bytes >= bytes && len >= bytes {
        return Ok(false);
    }
    // e2fsck exits 1 when it fixed something (e.g. replayed the journal).
    let out = Command::new("e2fsck").args(["-f", "-y"]).arg(path).output()?;
    if !matches!(out.status.code(), Some(0 | 1)) {
        return Err(io::Error::other(format!("e2fsck: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    if len < bytes {
        std::fs::OpenOptions::new().write(true).open(path)?.set_len(bytes)?;
    }
    run(Command::new("resize2fs").arg("-f").arg(path).arg(format!("{}K", bytes >> 10)))?;
    Ok(true)
}

/// Used and total bytes of the ext4 file system in `path`, from its
/// superblock (as of the guest's last write-back of it).
pub fn ext4_usage(path: &Path) -> Option<(u64, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(1024)).ok()?;
    let mut sb = [0u8; 1024];
    f.read_exact(&mut sb).ok()?;
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]) as u64;
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xef53 {
        return None;
    }
    let block = 1024u64 << u32_at(0x18).min(16);
    let wide = u32_at(0x60) & 0x80 != 0; // INCOMPAT_64BIT
    let hi = |o: usize| if wide { u32_at(o) << 32 } else { 0 };
    let blocks = u32_at(0x04) | hi(0x150);
    let free = u32_at(0x0c) | hi(0x158);
    Some((blocks.saturating_sub(free) * block, blocks * block))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have(tool: &str) -> bool {
        Command::new(tool).arg("--version").output().is_ok()
    }

    #[test]
    fn overlay_names_its_backing_file() {
        if !have("qemu-img") || !have("mkfs.ext4") {
            eprintln!("SKIP: qemu-img / mkfs.ext4 missing");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base.ext4");
        create_ext4(&base, 64 << 20, "base").unwrap();
        let ov = t.path().join("ov.qcow2");
        create_overlay(&base, &ov).unwrap();
        let info = Command::new("qemu-img").args(["info", "--output=json"]).arg(&ov).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(v["backing-filename"], base.to_string_lossy().as_ref());
        // The overlay starts tiny: nothing of the base is copied.
        assert!(std::fs::metadata(&ov).unwrap().len() < 1 << 20);
    }

    #[test]
    fn a_tree_becomes_a_disk_as_it_is() {
        if !have("mkfs.ext4") || !have("debugfs") {
            eprintln!("SKIP: e2fsprogs missing");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::write(src.join("a/b/f.txt"), "hello").unwrap();
        std::fs::hard_link(src.join("a/b/f.txt"), src.join("hard.txt")).unwrap();
        // A link pointing out of the tree is copied as a link, never followed.
        std::os::unix::fs::symlink("/etc/passwd", src.join("out")).unwrap();
        let disk = t.path().join("ws.ext4");
        create_ext4_from(&disk, 64 << 20, "workspace", Some(&src)).unwrap();
        let debugfs = |req: &str| {
            let o = Command::new("debugfs").arg("-R").arg(req).arg(&disk).output().unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        assert_eq!(debugfs("cat /a/b/f.txt"), "hello");
        let inode = |p: &str| debugfs(&format!("stat {p}")).split_whitespace().nth(1).unwrap().to_string();
        assert_eq!(inode("/hard.txt"), inode("/a/b/f.txt"), "hard links stay one inode");
        assert!(debugfs("stat /out").contains("Type: symlink"));
        assert!(debugfs("stat /out").contains("Fast link dest: \"/etc/passwd\""), "{}", debugfs("stat /out"));
        assert_eq!(ext4_usage(&disk).unwrap().1, 64 << 20);
    }

    #[test]
    fn workspace_grows_and_reports_its_use() {
        if !have("mkfs.ext4") || !have("resize2fs") {
            eprintln!("SKIP: e2fsprogs missing");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let ws = t.path().join("ws.ext4");
        create_ext4(&ws, 64 << 20, "workspace").unwrap();
        let (used, total) = ext4_usage(&ws).unwrap();
        assert_eq!(total, 64 << 20);
        assert!(used > 0 && used < total / 2, "{used}");
        assert!(!grow_ext4(&ws, 32 << 20).unwrap(), "never shrinks");
        assert!(grow_ext4(&ws, 128 << 20).unwrap());
        assert_eq!(ext4_usage(&ws).unwrap().1, 128 << 20);
        // A file already grown (QMP block_resize) whose file system was not.
        std::fs::OpenOptions::new().write(true).open(&ws).unwrap().set_len(192 << 20).unwrap();
        assert!(grow_ext4(&ws, 192 << 20).unwrap());
        assert_eq!(ext4_usage(&ws).unwrap().1, 192 << 20);
        std::fs::write(t.path().join("junk"), [0u8; 4096]).unwrap();
        assert!(ext4_usage(&t.path().join("junk")).is_none());
    }
}

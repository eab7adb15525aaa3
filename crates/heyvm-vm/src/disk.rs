//! Disks of a VM: a qcow2 overlay whose backing file is the image's
//! read-only base disk (a boot never copies the root filesystem), and a
//! persistent ext4 disk for `/workspace` that the host can loop-mount while
//! the VM is stopped.

use std::io;
use std::path::Path;
use std::process::Command;

/// Default size of a new `/workspace` disk (sparse: only used blocks cost).
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
    let f = std::fs::File::create(path)?;
    f.set_len(bytes)?;
    drop(f);
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", label, "-E", "root_owner=0:0"]).arg(path))
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
}

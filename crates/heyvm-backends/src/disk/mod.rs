//! Per-sandbox disks (bubblewrap as root). A sandbox's writable layer and
//! `/workspace` live on an ext4 filesystem of its own: a sparse image file
//! `sandboxes/<id>/disk.img` the size of its limit, loop-mounted on the
//! host at `sandboxes/<id>/disk` (nosuid, nodev, discard so freed blocks go
//! back to the host). Writing past the size fails inside with `ENOSPC`; the
//! host's disk only ever holds what the sandbox really wrote.
//!
//! Why not project quotas on one shared volume: ext4 quota support needs a
//! kernel with `CONFIG_QFMT_V2`, which this project's machines lack (the
//! mount fails); one image per sandbox works everywhere loop devices do.
//!
//! The host mount stays while the sandbox exists (files are reachable when
//! it is stopped, and it survives daemon restarts and `kill -9`); deleting
//! the sandbox unmounts it and the loop device frees itself (autoclear).
//! Each sandbox owner copies the host's mounts into its private namespace
//! and detaches every other sandbox's disk there (`detach_foreign`), so a
//! deleted sandbox's disk is really released.

mod loopdev;
pub mod spare;
mod template;

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::{self, Read, Seek};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

use heyvm_core::backend::DiskUsage;
use heyvm_core::paths::SandboxPaths;

/// `_IOW('f', 16, __u64)`: grow a mounted ext4 filesystem.
const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;

/// Why sandbox disks cannot be limited on this host.
#[derive(Debug, thiserror::Error)]
pub enum DiskUnavailable {
    #[error("not running as root (loop mounts need it)")]
    NotRoot,
    #[error("no loop devices (/dev/loop-control is missing)")]
    NoLoopDevices,
    #[error("{0} is not installed (apt-get install e2fsprogs)")]
    ToolMissing(&'static str),
}

/// Whether sandbox disks can be limited on this host, and if not, why.
pub fn probe() -> Result<(), DiskUnavailable> {
    if !crate::procs::is_root() {
        return Err(DiskUnavailable::NotRoot);
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err(DiskUnavailable::NoLoopDevices);
    }
    for tool in ["mkfs.ext4", "e2fsck", "resize2fs"] {
        if crate::procs::find_in_path(tool).is_none() {
            return Err(DiskUnavailable::ToolMissing(tool));
        }
    }
    Ok(())
}

fn c(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(io::Error::other(format!("{:?} failed: {}", cmd.get_program(), err.trim())));
    }
    Ok(())
}

/// Creates and mounts a new sandbox's disk of `bytes`.
pub fn create(p: &SandboxPaths, bytes: u64) -> io::Result<()> {
    let data_dir = p.dir.parent().and_then(Path::parent).ok_or_else(|| io::Error::other("sandbox directory outside a data dir"))?;
    create_with_templates(p, bytes, &data_dir.join("disk-templates"))
}

/// [`create`] with the templates in `templates`.
fn create_with_templates(p: &SandboxPaths, bytes: u64, templates: &Path) -> io::Result<()> {
    let image = p.disk_image();
    if let Err(e) = template::fresh(&image, bytes, templates) {
        let _ = std::fs::remove_file(&image);
        return Err(e);
    }
    std::fs::create_dir_all(p.disk_mount())?;
    mount(p)
}

/// Whether the disk is mounted on the host (something other than the
/// sandbox directory's own filesystem is at the mount point).
pub fn is_mounted(p: &SandboxPaths) -> bool {
    match (std::fs::metadata(&p.dir), std::fs::metadata(p.disk_mount())) {
        (Ok(d), Ok(m)) => d.dev() != m.dev(),
        _ => false,
    }
}

/// Mounts the disk on the host unless it already is.
pub fn mount(p: &SandboxPaths) -> io::Result<()> {
    if is_mounted(p) {
        return Ok(());
    }
    std::fs::create_dir_all(p.disk_mount())?;
    // A device that already carries the image (a running sandbox's
    // namespace still has it mounted) is mounted again rather than a second
    // one attached: two devices on one image would corrupt it.
    let (dev, _attached) = match loopdev::find(&p.disk_image()) {
        Some(dev) => (dev, None),
        None => {
            let d = loopdev::attach(&p.disk_image())?;
            (d.path.clone(), Some(d))
        }
    };
    let (src, target) = (c(&dev)?, c(&p.disk_mount())?);
    let flags = libc::MS_NOSUID | libc::MS_NODEV;
    // SAFETY: valid C strings for the duration of the call.
    let r = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), c"ext4".as_ptr(), flags, c"discard".as_ptr().cast()) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("mounting {} on {}: {e}", p.disk_image().display(), p.disk_mount().display())));
    }
    Ok(())
}

/// Unmounts the disk on the host (lazily: a dying sandbox may still hold it).
pub fn unmount(p: &SandboxPaths) {
    if let Ok(target) = c(&p.disk_mount()) {
        while is_mounted(p) {
            // SAFETY: a valid C string.
            if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
                break;
            }
        }
    }
}

/// The filesystem's size in bytes, from the image's ext4 superblock.
pub fn fs_bytes(image: &Path) -> io::Result<u64> {
    let mut f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(image)?;
    let mut sb = [0u8; 1024];
    f.seek(io::SeekFrom::Start(1024))?;
    f.read_exact(&mut sb)?;
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return Err(io::Error::other(format!("{} has no ext4 superblock", image.display())));
    }
    let mut blocks = u64::from(u32_at(0x04));
    // INCOMPAT_64BIT: the high half of the block count.
    if u32_at(0x60) & 0x80 != 0 {
        blocks |= u64::from(u32_at(0x150)) << 32;
    }
    Ok(blocks << (10 + u32_at(0x18)))
}

/// Used and total bytes, while the disk is mounted.
pub fn usage(p: &SandboxPaths) -> Option<DiskUsage> {
    if !is_mounted(p) {
        return None;
    }
    let target = c(&p.disk_mount()).ok()?;
    // SAFETY: statvfs fills the struct it is given.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a writable struct.
    if unsafe { libc::statvfs(target.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let used = (st.f_blocks.saturating_sub(st.f_bfree)) as u64 * st.f_frsize as u64;
    Some(DiskUsage { used_bytes: used, limit_bytes: fs_bytes(&p.disk_image()).ok()? })
}

/// Grows the mounted filesystem to `bytes` at once (needs CAP_SYS_RESOURCE).
/// Ok(false) when the kernel refused (the growth waits for the next start).
pub fn grow_online(p: &SandboxPaths, bytes: u64) -> io::Result<bool> {
    let image = p.disk_image();
    OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(&image)?.set_len(bytes)?;
    let mount_dev = std::fs::metadata(p.disk_mount())?.dev();
    let Some(dev) = loopdev::device_of(mount_dev, &image) else { return Ok(false) };
    loopdev::set_capacity(&dev)?;
    let dir = OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW).open(p.disk_mount())?;
    // SAFETY: statvfs on a valid directory descriptor.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a writable struct.
    if unsafe { libc::fstatvfs(dir.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let blocks: u64 = bytes / st.f_bsize as u64;
    // SAFETY: the ioctl reads one u64 that outlives the call.
    if unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS as _, &blocks) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EPERM) {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(true)
}

/// Grows the filesystem to `bytes` with the disk unmounted everywhere
/// (e2fsck + resize2fs on the image), then mounts it again. Refuses while
/// anything still has it mounted: resizing a mounted image offline would
/// corrupt it.
pub fn grow_offline(p: &SandboxPaths, bytes: u64) -> io::Result<()> {
    let image = p.disk_image();
    unmount(p);
    // An autoclear device detaches shortly after its last unmount.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while loopdev::find(&image).is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if loopdev::find(&image).is_some() {
        mount(p)?;
        return Err(io::Error::other("the disk is still in use; it grows at a later start"));
    }
    let grown = (|| {
        OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(&image)?.set_len(bytes)?;
        // e2fsck exits 1 when it fixed something, which is fine here.
        let st = Command::new("e2fsck").args(["-f", "-p"]).arg(&image).output()?;
        if st.status.code().is_none_or(|c| c > 1) {
            return Err(io::Error::other(format!("e2fsck failed: {}", String::from_utf8_lossy(&st.stdout).trim())));
        }
        run(Command::new("resize2fs").arg(&image))
    })();
    let mounted = mount(p);
    grown.and(mounted)
}

/// Before a launch: the disk is mounted and as large as `bytes` (growing
/// it now if it could not grow while the sandbox ran).
pub fn ready(p: &SandboxPaths, bytes: u64) -> io::Result<()> {
    mount(p)?;
    if fs_bytes(&p.disk_image())? < bytes {
        if let Err(e) = grow_offline(p, bytes) {
            tracing::warn!(disk = %p.disk_image().display(), error = %e, "cannot grow the sandbox disk");
        }
    }
    Ok(())
}

/// In a sandbox owner's private mount namespace (a copy of the host's):
/// detaches every sandbox disk but `own`, so that deleting another sandbox
/// really releases its disk. Returns how many it detached: each costs an
/// RCU grace period, so this is the one part of a create that grows with
/// the number of sandboxes on the host.
pub fn detach_foreign(own: &Path) -> usize {
    let mut n = 0;
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return 0 };
    for target in info.lines().filter_map(|l| l.split(' ').nth(4)).map(unescape) {
        let t = Path::new(&target);
        let is_disk = t.file_name().is_some_and(|n| n == "disk")
            && t.parent().and_then(|s| s.file_name()).is_some_and(|id| heyvm_core::ids::looks_like_id(&id.to_string_lossy()))
            && t.parent().and_then(Path::parent).and_then(|s| s.file_name()).is_some_and(|n| n == "sandboxes");
        if is_disk && t != own {
            if let Ok(ct) = c(t) {
                // SAFETY: a valid C string.
                if unsafe { libc::umount2(ct.as_ptr(), libc::MNT_DETACH) } == 0 {
                    n += 1;
                }
            }
        }
    }
    n
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/tmp/a\040b/sandboxes/sb-1/disk"), "/tmp/a b/sandboxes/sb-1/disk");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
    }

    #[test]
    fn superblock_size_of_a_fresh_image() {
        if crate::procs::find_in_path("mkfs.ext4").is_none() {
            return eprintln!("SKIP: no mkfs.ext4");
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("d.img");
        std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img)).unwrap();
        assert_eq!(fs_bytes(&img).unwrap(), 64 << 20);
    }
}

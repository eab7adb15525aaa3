//! Loop devices through their ioctls (no `losetup`): attach an image with
//! autoclear (the device frees itself once the filesystem on it is
//! unmounted everywhere), find the device behind a mount, and tell a device
//! that its image grew.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, LOOP_CONFIGURE since 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device. Keep it open until the filesystem on it is
/// mounted: with autoclear, the last close of an unmounted device detaches it.
pub struct LoopDevice {
    pub path: PathBuf,
    _dev: File,
}

/// Attaches `image` to a free loop device.
pub fn attach(image: &Path) -> io::Result<LoopDevice> {
    let backing = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW).open(image)?;
    if !backing.metadata()?.is_file() {
        return Err(io::Error::other(format!("{} is not a regular file", image.display())));
    }
    let ctl = OpenOptions::new().read(true).write(true).open("/dev/loop-control")?;
    // Another process may take the device we were offered before we
    // configure it: ask again.
    for _ in 0..32 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns an index.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(&path)?;
        // SAFETY: an all-zero loop_config is valid; the fields set below are plain data.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing.as_raw_fd() as u32;
        cfg.info.flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: a valid loop_config that outlives the call.
        if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &cfg) } == 0 {
            return Ok(LoopDevice { path, _dev: dev });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(io::Error::new(e.kind(), format!("configuring {}: {e}", path.display())));
        }
    }
    Err(io::Error::other("no free loop device (every one offered was taken)"))
}

/// The loop device `/dev/loopN` whose block device number is `dev`, if
/// its backing file is `image`.
pub fn device_of(dev: u64, image: &Path) -> Option<PathBuf> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let backing = std::fs::read_to_string(sys.join("loop/backing_file")).ok()?;
    if Path::new(backing.trim_end()) != image {
        return None;
    }
    let uevent = std::fs::read_to_string(sys.join("uevent")).ok()?;
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    Some(Path::new("/dev").join(name))
}

/// The loop device already backed by `image`, if any (its filesystem is
/// mounted somewhere, maybe only in a sandbox's mount namespace).
pub fn find(image: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/block").ok()?;
    entries
        .flatten()
        .find(|e| std::fs::read_to_string(e.path().join("loop/backing_file")).is_ok_and(|f| Path::new(f.trim_end()) == image))
        .map(|e| Path::new("/dev").join(e.file_name()))
}

/// Makes the device re-read its image's size.
pub fn set_capacity(dev: &Path) -> io::Result<()> {
    let f = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(dev)?;
    // SAFETY: LOOP_SET_CAPACITY takes no argument.
    if unsafe { libc::ioctl(f.as_raw_fd(), LOOP_SET_CAPACITY as _, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_config_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}

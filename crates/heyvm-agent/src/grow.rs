//! A VM's mounted disks, seen from inside: online growth of a mounted ext4
//! file system (a VM's `/workspace` after the host made its disk larger
//! with QMP `block_resize`), and how full one is. For growth the agent
//! waits until the guest kernel sees the block device's new size, then asks
//! ext4 to fill it (`EXT4_IOC_RESIZE_FS`, what `resize2fs` does on a mounted
//! file system), so an image needs no e2fsprogs of its own.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

/// `_IOW('f', 16, __u64)` from linux/ext4.h.
const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;
const EXT4_SUPER_MAGIC: i64 = 0xEF53;
/// virtio-blk tells the guest about a new capacity through a config
/// interrupt; it lands within milliseconds, this bounds a lost one.
const DEVICE_WAIT: Duration = Duration::from_secs(10);

/// Grows the ext4 file system mounted at `path` to `bytes` (never shrinks:
/// a smaller `bytes` is a no-op).
pub fn grow(path: &str, bytes: u64) -> io::Result<()> {
    let dir = File::open(path)?;
    let (bsize, blocks_now) = ext4_geometry(&dir, path)?;
    let want = bytes / bsize;
    // statfs counts blocks minus ext4's own overhead: below it, nothing to do.
    if want <= blocks_now {
        return Ok(());
    }
    let dev = dir.metadata()?.dev();
    let sysfs = format!("/sys/dev/block/{}:{}/size", libc::major(dev), libc::minor(dev));
    let deadline = Instant::now() + DEVICE_WAIT;
    loop {
        let sectors: u64 = std::fs::read_to_string(&sysfs)?.trim().parse().map_err(|_| io::Error::other(format!("bad {sysfs}")))?;
        if sectors * 512 >= want * bsize {
            break;
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!("the disk under {path} is {} bytes, not the {bytes} the host set", sectors * 512)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: ioctl on an open descriptor with a pointer to a u64 that
    // outlives the call, as EXT4_IOC_RESIZE_FS expects.
    if unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS as _, &want as *const u64) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("resizing the file system at {path}: {e}")));
    }
    Ok(())
}

/// Used and total bytes of the file system mounted at `path` (`statfs`:
/// blocks not free, so ext4's metadata counts as used, as on the host).
pub fn usage(path: &str) -> io::Result<(u64, u64)> {
    let st = statfs(&File::open(path)?)?;
    let unit = st.f_frsize as u64;
    let (blocks, free) = (st.f_blocks as u64, st.f_bfree as u64);
    Ok((blocks.saturating_sub(free) * unit, blocks * unit))
}

fn statfs(f: &File) -> io::Result<libc::statfs> {
    // SAFETY: fstatfs fills the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Block size and block count of the ext4 file system `dir` is on.
fn ext4_geometry(dir: &File, path: &str) -> io::Result<(u64, u64)> {
    let st = statfs(dir)?;
    if st.f_type as i64 != EXT4_SUPER_MAGIC {
        return Err(io::Error::other(format!("{path} is not an ext4 file system")));
    }
    Ok((st.f_bsize as u64, st.f_blocks as u64))
}

#[cfg(test)]
mod tests {
    #[test]
    fn usage_of_a_mounted_file_system() {
        let (used, total) = super::usage("/").unwrap();
        assert!(total > 0 && used <= total, "{used} of {total}");
        assert!(super::usage("/no/such/dir").is_err());
    }
}

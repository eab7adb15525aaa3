//! New disks as sparse copies of an empty filesystem. `mkfs.ext4` costs
//! 10–50 ms per disk (more for larger ones), on every cold create; a copy
//! of the few MiB of metadata an empty filesystem holds costs a few. One
//! template per size lives in `<data dir>/disk-templates/<bytes>.img`
//! (host only), made on first use and put in place atomically. The copies
//! share the template's filesystem UUID, which nothing here relies on.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes a fresh, empty ext4 filesystem of `bytes` to `image` (which must
/// not exist).
pub fn fresh(image: &Path, bytes: u64, templates: &Path) -> io::Result<()> {
    let tpl = templates.join(format!("{bytes}.img"));
    if !tpl.is_file() {
        make(&tpl, bytes)?;
    }
    let src = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&tpl)?;
    let dst = OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(image)?;
    dst.set_len(bytes)?;
    sparse_copy(&src, &dst, bytes)
}

fn make(tpl: &Path, bytes: u64) -> io::Result<()> {
    let dir = tpl.parent().ok_or_else(|| io::Error::other("template without a directory"))?;
    std::fs::create_dir_all(dir)?;
    // Unique per attempt: two launches may make the same template at once.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{bytes}.{}.{seq}.tmp", std::process::id()));
    let made = (|| {
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?.set_len(bytes)?;
        // Lazy init keeps the image sparse: only what is written takes
        // space on the host.
        super::run(
            std::process::Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"])
                .arg(&tmp),
        )?;
        std::fs::rename(&tmp, tpl)
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    made
}

/// Copies the data regions of `src` (its holes stay holes in `dst`).
fn sparse_copy(src: &File, dst: &File, len: u64) -> io::Result<()> {
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on a valid descriptor.
        let data = unsafe { libc::lseek(s, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENXIO) { Ok(()) } else { Err(e) };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(s, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let (mut off_in, mut off_out) = (data, data);
        while off_in < hole {
            // SAFETY: valid descriptors and offsets that outlive the call.
            let n = unsafe { libc::copy_file_range(s, &mut off_in, d, &mut off_out, (hole - off_in) as usize, 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                break;
            }
        }
        pos = hole;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_sparse_and_equal() {
        if crate::procs::find_in_path("mkfs.ext4").is_none() {
            return eprintln!("SKIP: no mkfs.ext4");
        }
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        fresh(&a, 256 << 20, &dir.path().join("t")).unwrap();
        fresh(&b, 256 << 20, &dir.path().join("t")).unwrap();
        let head = |p: &Path| {
            let mut v = vec![0u8; 8 << 20];
            std::io::Read::read_exact(&mut File::open(p).unwrap(), &mut v).unwrap();
            v
        };
        assert_eq!(head(&a), head(&dir.path().join("t/268435456.img")));
        use std::os::unix::fs::MetadataExt;
        assert!(std::fs::metadata(&b).unwrap().blocks() * 512 < 32 << 20, "the copy is not sparse");
        assert_eq!(super::super::fs_bytes(&b).unwrap(), 256 << 20);
        assert!(fresh(&b, 256 << 20, &dir.path().join("t")).is_err(), "an existing image is never overwritten");
    }
}

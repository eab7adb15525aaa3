//! A writer for the `newc` cpio format, the one the kernel unpacks as an
//! initramfs: a 110-byte ASCII header per entry, the name and the data each
//! padded to four bytes, and a `TRAILER!!!` entry at the end.

use std::io::{self, Write};

/// Builds an archive in memory (initramfs images are a few MiB).
#[derive(Default)]
pub struct CpioWriter {
    buf: Vec<u8>,
    next_ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

impl CpioWriter {
    pub fn dir(&mut self, name: &str, mode: u32) {
        self.entry(name, S_IFDIR | mode, 0, &[]);
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, S_IFREG | mode, 0, data);
    }

    /// A character device node (e.g. `/dev/console`, 5:1).
    pub fn char_dev(&mut self, name: &str, mode: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | mode, (major << 8) | minor, &[]);
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: u32, data: &[u8]) {
        self.next_ino += 1;
        let name = name.trim_start_matches('/');
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let (rmaj, rmin) = (rdev >> 8, rdev & 0xff);
        let fields = [self.next_ino, mode, 0, 0, nlink, 0, data.len() as u32, 0, 0, rmaj, rmin, name.len() as u32 + 1, 0];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// Appends the trailer and writes the archive out.
    pub fn finish(mut self, out: &mut impl Write) -> io::Result<()> {
        self.next_ino = 0;
        self.entry("TRAILER!!!", 0, 0, &[]);
        out.write_all(&self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut w = CpioWriter::default();
        w.dir("/dev", 0o755);
        w.file("init", 0o755, b"abc");
        let mut out = Vec::new();
        w.finish(&mut out).unwrap();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        // The entry for "dev": header (110) + "dev\0" (4) = 114 -> padded to 116.
        assert_eq!(&out[110..114], b"dev\0");
        assert_eq!(&out[116..122], b"070701");
        let s = String::from_utf8_lossy(&out);
        assert!(s.contains("init\0") && s.contains("abc") && s.contains("TRAILER!!!"));
        // File size field of "init" is 3.
        let init_hdr = &out[116..116 + 110];
        assert_eq!(&init_hdr[54..62], b"00000003");
    }

    #[test]
    fn char_device_numbers() {
        let mut w = CpioWriter::default();
        w.char_dev("dev/console", 0o600, 5, 1);
        let mut out = Vec::new();
        w.finish(&mut out).unwrap();
        assert_eq!(&out[6 + 8..6 + 16], b"00002180");
        assert_eq!(&out[6 + 9 * 8..6 + 10 * 8], b"00000005");
        assert_eq!(&out[6 + 10 * 8..6 + 11 * 8], b"00000001");
    }
}

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::*;

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_mtime(1_600_000_000);
    h
}

fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn files_dirs_links_modes_and_diff_id() {
    let tar = layer(|b| {
        let mut d = header(tar::EntryType::Directory, 0o555, 0);
        b.append_data(&mut d, "ro/", &[][..]).unwrap();
        file(b, "ro/f", b"hello", 0o4755);
        let mut l = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut l, "ro/link", "/etc/passwd").unwrap();
        let mut h = header(tar::EntryType::Link, 0o644, 0);
        b.append_link(&mut h, "hard", "ro/f").unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let diff = unpack_layer(&tar[..], dir.path()).unwrap();
    assert_eq!(diff, crate::oci::sha256_digest(&tar));
    let f = dir.path().join("ro/f");
    assert_eq!(fs::read(&f).unwrap(), b"hello");
    let m = fs::metadata(&f).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_eq!(m.mtime(), 1_600_000_000);
    assert_eq!(m.nlink(), 2, "hard link kept");
    assert_eq!(fs::read_link(dir.path().join("ro/link")).unwrap(), Path::new("/etc/passwd"));
    assert_eq!(fs::metadata(dir.path().join("ro")).unwrap().mode() & 0o777, 0o555);
    if is_root() {
        assert_eq!((m.uid(), m.gid()), (1000, 1000));
    }
    fs::set_permissions(dir.path().join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn whiteouts_and_opaque_dirs_become_overlay_markers() {
    if !is_root() {
        eprintln!("SKIP: whiteouts need root (mknod, trusted xattrs)");
        return;
    }
    let tar = layer(|b| {
        file(b, "etc/.wh.gone", b"", 0o644);
        file(b, "var/.wh..wh..opq", b"", 0o644);
        file(b, "var/new", b"x", 0o644);
    });
    let dir = tempfile::tempdir().unwrap();
    unpack_layer(&tar[..], dir.path()).unwrap();
    let m = fs::symlink_metadata(dir.path().join("etc/gone")).unwrap();
    assert!(m.file_type().is_char_device() && m.rdev() == 0);
    assert!(!dir.path().join("etc/.wh.gone").exists());
    let mut buf = [0u8; 4];
    let p = cpath(&dir.path().join("var")).unwrap();
    let n = unsafe { libc::lgetxattr(p.as_ptr(), c"trusted.overlay.opaque".as_ptr(), buf.as_mut_ptr().cast(), 4) };
    assert_eq!((n, buf[0]), (1, b'y'));
}

#[test]
fn hostile_entries_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    // `..` in a path.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Regular, 0o644, 1);
    // append_data refuses `..`, so write the name into the header directly.
    h.as_gnu_mut().unwrap().name[..7].copy_from_slice(b"../evil");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(unpack_layer(&b.into_inner().unwrap()[..], dir.path()), Err(ImageError::InvalidArchive(_))));
    // A symlink to a directory outside, then a file through it.
    let target = outside.path().display().to_string();
    let tar = layer(|b| {
        let mut l = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut l, "esc", &target).unwrap();
        file(b, "esc/pwned", b"x", 0o644);
    });
    let dir = tempfile::tempdir().unwrap();
    assert!(unpack_layer(&tar[..], dir.path()).is_err());
    assert!(!outside.path().join("pwned").exists(), "nothing written outside");
    // A symlink, then a regular file at the same path replaces the link
    // instead of writing through it.
    let victim = outside.path().join("victim");
    fs::write(&victim, b"safe").unwrap();
    let v = victim.display().to_string();
    let tar = layer(|b| {
        let mut l = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut l, "f", &v).unwrap();
        file(b, "f", b"overwritten", 0o644);
    });
    let dir = tempfile::tempdir().unwrap();
    unpack_layer(&tar[..], dir.path()).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"safe");
    assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"overwritten");
    // A hard link to a file outside the layer.
    let tar = layer(|b| {
        let mut h = header(tar::EntryType::Link, 0o644, 0);
        b.append_link(&mut h, "h", "nothere").unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    assert!(unpack_layer(&tar[..], dir.path()).is_err());
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let junk = vec![0x42u8; 1024];
    assert!(unpack_layer(&junk[..], dir.path()).is_err());
}

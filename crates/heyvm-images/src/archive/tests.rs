use super::*;
use crate::settings::RegistrySettings;

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = ImageStore::open(dir.path().join("images"), RegistrySettings::default()).unwrap();
    (dir, s)
}

/// A one-layer image tagged `name` with `/hello.txt` in it.
fn image(s: &ImageStore, name: &str) -> LocalImage {
    let layer = s
        .write_layer(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(6);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, "hello.txt", &b"hello\n"[..])?;
            Ok(())
        })
        .unwrap();
    let mut config = oci::ImageConfig { os: "linux".into(), architecture: oci::host_platform().1.into(), ..Default::default() };
    config.config.user = Some("1000".into());
    let digest = s.commit(&[], &[layer], config).unwrap();
    let r = ImageRef::parse(name).unwrap();
    s.set_ref(&r, &digest).unwrap();
    s.find(name).unwrap().unwrap()
}

fn saved(s: &ImageStore, img: &LocalImage) -> Vec<u8> {
    let mut out = Vec::new();
    s.export_oci(img, &mut out).unwrap();
    out
}

fn write(dir: &tempfile::TempDir, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(format!("upload-{}.tar", bytes.len()));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A tar entry with a raw name (the tar crate's own `set_path` refuses `..`).
fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// A saved archive with `extra` entries appended.
fn with_extra(s: &ImageStore, img: &LocalImage, extra: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    extra(&mut b);
    let good = saved(s, img);
    let mut a = tar::Archive::new(&good[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        b.append(&h, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn save_then_load_gives_the_same_image_by_name() {
    let (d1, a) = store();
    let img = image(&a, "127.0.0.1:5000/app:v1");
    let bytes = saved(&a, &img);
    let (d2, b) = store();
    let path = write(&d2, &bytes);
    assert_eq!(sniff(&path).unwrap(), UploadKind::Tar);
    let got = b.import_oci(&path, None).unwrap();
    assert_eq!(got.digest, img.digest);
    assert_eq!(got.reference, "127.0.0.1:5000/app:v1");
    assert_eq!(got.config.config.user.as_deref(), Some("1000"));
    let layers = b.layer_dirs(&got).unwrap();
    assert_eq!(std::fs::read_to_string(layers[0].join("hello.txt")).unwrap(), "hello\n");
    // An explicit name wins; gzip'd archives load too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes).unwrap();
    let path = d2.path().join("x.tar.gz");
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    let got = b.import_oci(&path, Some(&ImageRef::parse("mine:2").unwrap())).unwrap();
    assert_eq!((got.reference.as_str(), got.digest.as_str()), ("docker.io/library/mine:2", img.digest.as_str()));
    drop(d1);
}

fn assert_refused(s: &ImageStore, dir: &tempfile::TempDir, bytes: &[u8], want: &str) {
    let before: Vec<_> = std::fs::read_dir(s.root().join("blobs/sha256")).unwrap().flatten().map(|e| e.file_name()).collect();
    let path = write(dir, bytes);
    let err = s.import_oci(&path, Some(&ImageRef::parse("x:1").unwrap())).map(|i| i.digest).unwrap_err();
    assert!(err.to_string().contains(want), "{want}: {err}");
    assert_eq!(err.status(), 400, "{err}");
    assert!(s.find("x:1").unwrap().is_none(), "nothing tagged");
    // Nothing half-written: no temp file left, no unverified blob.
    assert_eq!(std::fs::read_dir(s.tmp_dir()).unwrap().count(), 0, "{want}");
    for e in std::fs::read_dir(s.root().join("blobs/sha256")).unwrap().flatten() {
        let name = e.file_name();
        if !before.contains(&name) {
            let d = format!("sha256:{}", name.to_string_lossy());
            assert_eq!(oci::sha256_digest(&std::fs::read(e.path()).unwrap()), d, "only verified blobs");
        }
    }
}

#[test]
fn hostile_archives_are_refused_and_nothing_escapes() {
    let (src_dir, src) = store();
    let img = image(&src, "app:1");
    let (dir, s) = store();
    let outside = dir.path().join("escaped");
    let layer_hex = img.manifest.layers[0].digest[7..].to_string();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (with_extra(&src, &img, |b| raw_entry(b, "../escaped", tar::EntryType::Regular, None, b"x")), "points outside"),
        (with_extra(&src, &img, |b| raw_entry(b, "blobs/../../escaped", tar::EntryType::Regular, None, b"x")), "points outside"),
        (with_extra(&src, &img, |b| raw_entry(b, "/tmp/escaped", tar::EntryType::Regular, None, b"x")), "points outside"),
        (
            with_extra(&src, &img, |b| {
                raw_entry(b, &format!("blobs/sha256/{layer_hex}"), tar::EntryType::Symlink, Some(outside.to_str().unwrap()), b"")
            }),
            "only regular files",
        ),
        (with_extra(&src, &img, |b| raw_entry(b, "blobs/sha256/x", tar::EntryType::Link, Some("/etc/passwd"), b"")), "only regular files"),
        (with_extra(&src, &img, |b| raw_entry(b, "blobs", tar::EntryType::Char, None, b"")), "only regular files"),
        (with_extra(&src, &img, |b| raw_entry(b, "etc/passwd", tar::EntryType::Regular, None, b"x")), "unexpected entry"),
        (
            with_extra(&src, &img, |b| raw_entry(b, &format!("blobs/sha256/{}", "0".repeat(64)), tar::EntryType::Regular, None, b"x")),
            "does not match",
        ),
        (with_extra(&src, &img, |b| raw_entry(b, "manifest.json", tar::EntryType::Regular, None, b"[]")), "docker save"),
        (b"this is not an archive at all".repeat(100), "neither an OCI image archive"),
    ];
    for (bytes, want) in &cases {
        assert_refused(&s, &dir, bytes, want);
        assert!(!outside.exists(), "{want}: wrote outside the store");
    }
    // An archive without its layer blob, or a truncated one.
    let good = saved(&src, &img);
    let mut b = tar::Builder::new(Vec::new());
    for e in tar::Archive::new(&good[..]).entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy().contains(&layer_hex) {
            continue;
        }
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        b.append(&h, &data[..]).unwrap();
    }
    let (dir2, s2) = store();
    assert_refused(&s2, &dir2, &b.into_inner().unwrap(), "not in the archive");
    // Truncated: refused whatever part is missing.
    assert_refused(&s2, &dir2, &good[..good.len() / 2], "");
    drop(src_dir);
}

#[test]
fn ext4_images_are_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let mut img = vec![0u8; 4096];
    img[1080] = 0x53;
    img[1081] = 0xEF;
    let p = dir.path().join("root.ext4");
    std::fs::write(&p, &img).unwrap();
    assert_eq!(sniff(&p).unwrap(), UploadKind::Ext4);
}

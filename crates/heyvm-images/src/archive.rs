//! Images as files: an OCI image layout in a tar (what `skopeo copy
//! oci-archive:` and `images save` write) out of and into the store, and
//! an ext4 root filesystem (what heyo-sdk's `upload_image` sends) turned
//! into a one-layer image.
//!
//! An uploaded archive is hostile input. Only `oci-layout`, `index.json`
//! and `blobs/sha256/<64 hex>` regular files (plus the two directories) are
//! accepted: a `..`, an absolute path, a symlink, a hard link or a device
//! is refused before anything is written. Each blob is hashed while it is
//! copied to a temp file and renamed into `blobs/` only when its digest is
//! its name; the image is tagged only after its manifest, config and every
//! layer (unpacked, diff id checked) are in place.

use std::io::{self, Read, Write};
use std::path::{Component, Path};

use sha2::{Digest as _, Sha256};

use crate::error::{ImageError, Result};
use crate::oci::{self, Descriptor, Index, Manifest};
use crate::reference::{check_digest, ImageRef};
use crate::store::{ImageStore, LocalImage};

/// Annotation holding the tag (OCI image layout convention).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation holding the full reference (containerd's convention).
pub const IMAGE_NAME: &str = "io.containerd.image.name";
/// Largest `index.json` / `oci-layout` / manifest read into memory.
const MAX_META: u64 = 4 << 20;

/// What an uploaded file is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadKind {
    /// A tar (OCI image layout).
    Tar,
    /// A gzip'd tar.
    TarGz,
    /// An ext2/3/4 filesystem image (a root filesystem).
    Ext4,
}

/// Tells a tar, a tar.gz and an ext4 image apart.
pub fn sniff(path: &Path) -> Result<UploadKind> {
    let mut head = vec![0u8; 2048];
    let mut f = std::fs::File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    head.truncate(n);
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(UploadKind::TarGz);
    }
    if head.len() >= 512 && (&head[257..262] == b"ustar" || tar_checksum_ok(&head[..512])) {
        return Ok(UploadKind::Tar);
    }
    // The ext superblock starts at 1024; its magic 0xEF53 is at offset 56.
    if head.len() >= 1082 && head[1080..1082] == [0x53, 0xEF] {
        return Ok(UploadKind::Ext4);
    }
    Err(ImageError::InvalidArchive("neither an OCI image archive (tar or tar.gz) nor an ext4 filesystem image".into()))
}

/// Whether a 512-byte block is a tar header (old v7 headers have no magic,
/// only their checksum).
fn tar_checksum_ok(h: &[u8]) -> bool {
    let field = std::str::from_utf8(&h[148..156]).unwrap_or_default();
    let Ok(want) = u32::from_str_radix(field.trim_matches(|c: char| c == ' ' || c == '\0'), 8) else { return false };
    let sum: u32 = h.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { b' ' as u32 } else { b as u32 }).sum();
    sum == want && h[0] != 0
}

fn invalid(why: impl Into<String>) -> ImageError {
    ImageError::InvalidArchive(why.into())
}

/// The archive-relative name of an entry, refusing anything that could
/// point outside (absolute, `..`) or is not plain UTF-8.
fn entry_name(path: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().ok_or_else(|| invalid("an entry name is not UTF-8"))?),
            Component::CurDir => {}
            _ => return Err(invalid(format!("entry '{}' points outside the archive", path.display()))),
        }
    }
    Ok(parts.join("/"))
}

fn is_blob_name(name: &str) -> Option<String> {
    let hex = name.strip_prefix("blobs/sha256/")?;
    let d = format!("sha256:{hex}");
    check_digest(&d).ok().map(|_| d)
}

struct HashTo<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashTo<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies an entry's data: a read error is the archive's fault (400), a
/// write error the store's (a full disk stays `disk_full`).
fn copy_entry(data: &mut impl Read, out: &mut impl Write) -> Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = data.read(&mut buf).map_err(|e| invalid(format!("tar: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])?;
    }
}

/// Reads a small entry (at most [`MAX_META`] bytes) into memory.
fn read_meta(data: &mut impl Read, what: &str) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    data.take(MAX_META + 1).read_to_end(&mut v).map_err(|e| invalid(format!("tar: {e}")))?;
    if v.len() as u64 > MAX_META {
        return Err(invalid(format!("{what} is too large")));
    }
    Ok(v)
}

impl ImageStore {
    /// Writes `img` as an OCI image layout tar: `oci-layout`, `index.json`
    /// (naming the reference), then the manifest, config and layer blobs.
    pub fn export_oci(&self, img: &LocalImage, out: impl Write) -> Result<()> {
        let _op = self.begin();
        let manifest = self.read_blob(&img.digest)?;
        let r = ImageRef::parse(&img.reference).ok();
        let mut annotations = std::collections::BTreeMap::new();
        if let Some(r) = r.as_ref().filter(|r| r.digest.is_none()) {
            annotations.insert(IMAGE_NAME.to_string(), r.to_string());
            if let Some(t) = &r.tag {
                annotations.insert(REF_NAME.to_string(), t.clone());
            }
        }
        let desc = Descriptor {
            media_type: img.manifest.media_type.clone().unwrap_or_else(|| oci::OCI_MANIFEST.into()),
            digest: img.digest.clone(),
            size: manifest.len() as u64,
            platform: None,
            annotations: Some(annotations).filter(|a| !a.is_empty()),
        };
        let index = serde_json::json!({ "schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": [desc] });
        let mut b = tar::Builder::new(out);
        let add = |b: &mut tar::Builder<_>, name: &str, data: &mut dyn Read, size: u64| -> Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data)?;
            Ok(())
        };
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        add(&mut b, "oci-layout", &mut &layout[..], layout.len() as u64)?;
        let index = serde_json::to_vec(&index).map_err(|e| ImageError::Io(io::Error::other(e)))?;
        add(&mut b, "index.json", &mut &index[..], index.len() as u64)?;
        let mut blobs = vec![img.digest.clone(), img.manifest.config.digest.clone()];
        blobs.extend(img.manifest.layers.iter().map(|l| l.digest.clone()));
        let mut seen = std::collections::BTreeSet::new();
        for d in blobs.into_iter().filter(|d| seen.insert(d.clone())) {
            let path = self.blob_path(&d)?;
            let mut f = std::fs::File::open(&path).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => ImageError::NotFound(format!("{d} (blob of {})", img.reference)),
                _ => e.into(),
            })?;
            let size = f.metadata()?.len();
            add(&mut b, &format!("blobs/sha256/{}", &d[7..]), &mut f, size)?;
        }
        b.into_inner()?.flush()?;
        Ok(())
    }

    /// Imports the OCI image layout tar (or tar.gz) at `path`; the image is
    /// tagged `name`, else the reference its `index.json` records.
    pub fn import_oci(&self, path: &Path, name: Option<&ImageRef>) -> Result<LocalImage> {
        let _op = self.begin();
        let file = std::fs::File::open(path)?;
        let reader: Box<dyn Read> = match sniff(path)? {
            UploadKind::TarGz => Box::new(flate2::read::GzDecoder::new(io::BufReader::new(file))),
            UploadKind::Tar => Box::new(io::BufReader::new(file)),
            UploadKind::Ext4 => return Err(invalid("an ext4 image is not an OCI archive")),
        };
        let mut index: Option<Vec<u8>> = None;
        let mut saw_layout = false;
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(|e| invalid(format!("not a tar: {e}")))? {
            let mut entry = entry.map_err(|e| invalid(format!("tar: {e}")))?;
            let name = entry_name(&entry.path().map_err(|e| invalid(format!("tar: {e}")))?)?;
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                if ["", "blobs", "blobs/sha256"].contains(&name.as_str()) {
                    continue;
                }
                return Err(invalid(format!("unexpected directory '{name}'")));
            }
            if !(kind.is_file() || kind == tar::EntryType::Continuous) {
                return Err(invalid(format!("entry '{name}' is a {kind:?}: an image archive holds only regular files")));
            }
            match name.as_str() {
                "oci-layout" => {
                    let v = read_meta(&mut entry, "oci-layout")?;
                    let ok = serde_json::from_slice::<serde_json::Value>(&v)
                        .ok()
                        .is_some_and(|l| l.get("imageLayoutVersion").is_some_and(|v| v.is_string()));
                    if !ok {
                        return Err(invalid("oci-layout is not an OCI image layout marker"));
                    }
                    saw_layout = true;
                }
                "index.json" => {
                    if index.is_some() {
                        return Err(invalid("index.json appears twice"));
                    }
                    index = Some(read_meta(&mut entry, "index.json")?);
                }
                "manifest.json" | "repositories" => {
                    return Err(ImageError::Unsupported(
                        "a `docker save` archive; send an OCI image layout (skopeo copy … oci-archive:FILE)".into(),
                    ))
                }
                other => match is_blob_name(other) {
                    Some(d) => self.import_blob(&d, &mut entry)?,
                    None => return Err(invalid(format!("unexpected entry '{other}'"))),
                },
            }
        }
        if !saw_layout {
            return Err(invalid("no oci-layout file: not an OCI image layout"));
        }
        let index = index.ok_or_else(|| invalid("no index.json"))?;
        self.register_imported(&index, name)
    }

    /// Copies one blob to a temp file while hashing it; renamed into the
    /// store only when its content matches its name.
    fn import_blob(&self, digest: &str, data: &mut impl Read) -> Result<()> {
        self.touch(digest);
        let dest = self.blob_path(digest)?;
        if dest.is_file() {
            return copy_entry(data, &mut io::sink());
        }
        let tmp = self.temp_path("import");
        let res = (|| {
            let mut w = HashTo { inner: std::fs::File::create(&tmp)?, hasher: Sha256::new() };
            copy_entry(data, &mut w)?;
            w.inner.sync_all()?;
            let actual = format!("sha256:{}", oci::hex(&w.hasher.finalize()));
            if actual != digest {
                return Err(invalid(format!("blob {digest} does not match its content ({actual})")));
            }
            std::fs::rename(&tmp, &dest)?;
            Ok(())
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    /// Checks the image `index.json` names is complete, unpacks its layers
    /// and tags it.
    fn register_imported(&self, index: &[u8], name: Option<&ImageRef>) -> Result<LocalImage> {
        let idx: Index = serde_json::from_slice(index).map_err(|e| invalid(format!("index.json: {e}")))?;
        let desc = match idx.manifests.as_slice() {
            [one] => one.clone(),
            [] => return Err(invalid("index.json lists no image")),
            many => oci::pick_platform(&Index { manifests: many.to_vec() })
                .cloned()
                .ok_or_else(|| invalid("index.json lists several images and none for this host's platform"))?,
        };
        let mut digest = desc.digest.clone();
        check_digest(&digest).map_err(|e| invalid(format!("index.json: {e}")))?;
        let mut bytes = self.meta_blob(&digest)?;
        if desc.media_type == oci::OCI_INDEX || desc.media_type == oci::DOCKER_LIST {
            let nested: Index = serde_json::from_slice(&bytes).map_err(|e| invalid(format!("nested index: {e}")))?;
            let (os, arch) = oci::host_platform();
            digest = oci::pick_platform(&nested)
                .ok_or_else(|| ImageError::Unsupported(format!("no {os}/{arch} image in the archive")))?
                .digest
                .clone();
            bytes = self.meta_blob(&digest)?;
        }
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| invalid(format!("manifest {digest}: {e}")))?;
        if manifest.schema_version != 2 {
            return Err(ImageError::Unsupported(format!("manifest schema version {}", manifest.schema_version)));
        }
        self.touch(&manifest.config.digest);
        manifest.layers.iter().for_each(|l| self.touch(&l.digest));
        let config: oci::ImageConfig =
            serde_json::from_slice(&self.meta_blob(&manifest.config.digest)?).map_err(|e| invalid(format!("image config: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(invalid("config and manifest disagree on the layer count"));
        }
        for (l, diff) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            if !self.has_blob(&l.digest) {
                return Err(invalid(format!("layer {} is not in the archive", l.digest)));
            }
            let size = std::fs::metadata(self.blob_path(&l.digest)?)?.len();
            if size != l.size {
                return Err(invalid(format!("layer {} is {size} bytes, the manifest says {}", l.digest, l.size)));
            }
            self.ensure_layer(&l.digest, &l.media_type, Some(diff))?;
        }
        let reference = match name {
            Some(r) => r.clone(),
            None => {
                let ann = desc.annotations.unwrap_or_default();
                let named = ann.get(IMAGE_NAME).or_else(|| ann.get(REF_NAME).filter(|n| n.contains(['/', ':'])));
                let n = named.ok_or_else(|| invalid("the archive names no image reference; give one (images load --name REF)"))?;
                ImageRef::parse(n)?
            }
        };
        if reference.digest.is_some() {
            return Err(ImageError::InvalidReference(format!("'{reference}': an image is named by a tag, not a digest")));
        }
        self.set_ref(&reference, &digest)?;
        self.load(&reference.to_string(), &digest)
    }

    /// A small blob (manifest, index, config) that must be in the store.
    fn meta_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        let len = std::fs::metadata(&p).map_err(|_| invalid(format!("blob {digest} is not in the archive")))?.len();
        if len > MAX_META {
            return Err(invalid(format!("blob {digest} is too large for a manifest or config")));
        }
        Ok(std::fs::read(p)?)
    }

    /// Makes a one-layer image of the root filesystem tree `dir` (ids as
    /// they are, no whiteouts) with `config` and tags it `name`.
    pub fn import_rootfs_dir(&self, dir: &Path, name: &ImageRef, mut config: oci::ImageConfig) -> Result<LocalImage> {
        let _op = self.begin();
        let layer = self.write_layer(|b| crate::layer::export_dir(b, dir, 0, &|_| false))?;
        config.rootfs = oci::RootFs::default();
        let digest = self.commit(&[], &[layer], config)?;
        self.set_ref(name, &digest)?;
        self.load(&name.to_string(), &digest)
    }
}

#[cfg(test)]
mod tests;

//! Making new layers and images in the store (what builds produce): a
//! layer is written as a gzip'd tar straight into a temp blob while both
//! digests (compressed and uncompressed) are computed, then renamed into
//! place and unpacked like any pulled layer. [`export_dir`] turns an
//! overlay upper directory into OCI form (overlay whiteouts -> `.wh.`
//! entries, opaque dirs -> `.wh..wh..opq`), shifting ids back by
//! `id_base` (the build sandbox's uid range).

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{ImageError, Result};
use crate::oci::{self, Descriptor, ImageConfig, Manifest};
use crate::store::ImageStore;

/// A layer written into the store.
#[derive(Debug, Clone)]
pub struct NewLayer {
    pub descriptor: Descriptor,
    pub diff_id: String,
}

/// A writer that hashes and counts what passes through.
pub struct HashWrite<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashWrite<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The tar stream a new layer is written into.
pub type LayerTar = tar::Builder<HashWrite<flate2::write::GzEncoder<HashWrite<std::fs::File>>>>;

impl ImageStore {
    /// Writes a layer whose tar entries `fill` appends; verifies nothing
    /// half-written stays behind.
    pub fn write_layer(&self, fill: impl FnOnce(&mut LayerTar) -> Result<()>) -> Result<NewLayer> {
        let tmp = self.temp_path("newlayer");
        let res = (|| {
            let file = std::fs::File::create(&tmp)?;
            let gz = flate2::write::GzEncoder::new(HashWrite { inner: file, hasher: Sha256::new(), bytes: 0 }, flate2::Compression::fast());
            let mut b = tar::Builder::new(HashWrite { inner: gz, hasher: Sha256::new(), bytes: 0 });
            b.mode(tar::HeaderMode::Complete);
            b.follow_symlinks(false);
            fill(&mut b)?;
            let raw = b.into_inner()?;
            let diff_id = format!("sha256:{}", oci::hex(&raw.hasher.finalize()));
            let mut gzw = raw.inner.finish()?;
            gzw.flush()?;
            gzw.inner.sync_all()?;
            let digest = format!("sha256:{}", oci::hex(&gzw.hasher.finalize()));
            Ok::<_, ImageError>((digest, diff_id, gzw.bytes))
        })();
        let (digest, diff_id, size) = match res {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        self.touch(&digest);
        std::fs::rename(&tmp, self.blob_path(&digest)?)?;
        self.ensure_layer(&digest, oci::OCI_LAYER_GZIP, Some(&diff_id))?;
        let descriptor = Descriptor { media_type: oci::OCI_LAYER_GZIP.into(), digest, size, platform: None, annotations: None };
        Ok(NewLayer { descriptor, diff_id })
    }

    /// Stores an image made of `base`'s layers plus `new_layers` with
    /// `config`; returns the manifest digest.
    pub fn commit(&self, base_layers: &[Descriptor], new_layers: &[NewLayer], mut config: ImageConfig) -> Result<String> {
        config.rootfs.kind = "layers".into();
        config.rootfs.diff_ids.extend(new_layers.iter().map(|l| l.diff_id.clone()));
        let mut layers = base_layers.to_vec();
        layers.extend(new_layers.iter().map(|l| l.descriptor.clone()));
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(ImageError::Build("internal: layer and diff id counts differ".into()));
        }
        let raw_config = serde_json::to_vec(&config).map_err(|e| ImageError::Build(e.to_string()))?;
        let config_digest = self.put_blob(&raw_config)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::OCI_MANIFEST.into()),
            config: Descriptor {
                media_type: oci::OCI_CONFIG.into(),
                digest: config_digest,
                size: raw_config.len() as u64,
                platform: None,
                annotations: None,
            },
            layers,
        };
        self.put_blob(&serde_json::to_vec(&manifest).map_err(|e| ImageError::Build(e.to_string()))?)
    }
}

/// A tar header for `meta` with ids shifted back by `id_base`.
fn header_for(meta: &std::fs::Metadata, id_base: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    h.set_uid(meta.uid().saturating_sub(id_base) as u64);
    h.set_gid(meta.gid().saturating_sub(id_base) as u64);
    h
}

fn is_opaque(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else { return false };
    let mut buf = [0u8; 2];
    // SAFETY: valid C strings and buffer.
    let n = unsafe { libc::lgetxattr(c.as_ptr(), c"trusted.overlay.opaque".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    n == 1 && buf[0] == b'y'
}

/// Appends the overlay upper directory `dir` as OCI layer entries, skipping
/// paths (relative) for which `skip` says so.
pub fn export_dir(b: &mut LayerTar, dir: &Path, id_base: u32, skip: &dyn Fn(&Path) -> bool) -> Result<()> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(dir.join(&rel))?.flatten().collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
        for e in entries {
            let rel_path = rel.join(e.file_name());
            if skip(&rel_path) {
                continue;
            }
            let full = e.path();
            let meta = std::fs::symlink_metadata(&full)?;
            let ft = meta.file_type();
            if ft.is_char_device() && meta.rdev() == 0 {
                let wh = rel.join(format!(".wh.{}", e.file_name().to_string_lossy()));
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(0);
                h.set_mode(0o644);
                b.append_data(&mut h, &wh, io::empty())?;
                continue;
            }
            let mut h = header_for(&meta, id_base);
            if ft.is_dir() {
                b.append_data(&mut h, &rel_path, io::empty())?;
                if is_opaque(&full) {
                    let mut o = tar::Header::new_gnu();
                    o.set_entry_type(tar::EntryType::Regular);
                    o.set_size(0);
                    o.set_mode(0o644);
                    b.append_data(&mut o, rel_path.join(".wh..wh..opq"), io::empty())?;
                }
                stack.push(rel_path);
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&full)?;
                b.append_link(&mut h, &rel_path, &target)?;
            } else if ft.is_file() {
                if meta.nlink() > 1 {
                    if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                        h.set_entry_type(tar::EntryType::Link);
                        h.set_size(0);
                        b.append_link(&mut h, &rel_path, first)?;
                        continue;
                    }
                    links.insert((meta.dev(), meta.ino()), rel_path.clone());
                }
                b.append_data(&mut h, &rel_path, std::fs::File::open(&full)?)?;
            } else if ft.is_fifo() {
                h.set_entry_type(tar::EntryType::Fifo);
                b.append_data(&mut h, &rel_path, io::empty())?;
            }
            // Sockets and device nodes are not part of an image.
        }
    }
    Ok(())
}

//! The content-addressed image store (`MVM_DATA_DIR/images`):
//!
//! ```text
//! blobs/sha256/<hex>   manifests, configs and compressed layers, verified
//! layers/<hex>/        each layer unpacked once (keyed by its blob digest),
//!                      shared read-only by every image and sandbox
//! tmp/                 downloads in progress (`<hex>.partial`, resumable)
//!                      and unpacks in progress; renamed into place once verified
//! refs.json            reference -> manifest digest
//! ```
//!
//! Nothing half-written is ever visible under `blobs/` or `layers/`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};
use crate::oci::{self, ImageConfig, Manifest};
use crate::reference::{check_digest, ImageRef};
use crate::settings::RegistrySettings;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefEntry {
    pub digest: String,
    pub modified_at: u64,
}

/// An image present in the store.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// Canonical reference it was found by (or the digest itself).
    pub reference: String,
    pub digest: String,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

impl LocalImage {
    /// Sum of the image's blob sizes (config and compressed layers).
    pub fn size_bytes(&self) -> u64 {
        self.manifest.config.size + self.manifest.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

pub struct ImageStore {
    root: PathBuf,
    pub settings: RegistrySettings,
    /// Serialises work on one blob or layer across concurrent pulls.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    refs_lock: Mutex<()>,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub blobs_removed: usize,
    pub layers_removed: usize,
    pub bytes_freed: u64,
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn hex_of(digest: &str) -> Result<&str> {
    check_digest(digest).map_err(|e| ImageError::InvalidReference(format!("'{digest}': {e}")))?;
    Ok(&digest[7..])
}

impl ImageStore {
    pub fn open(root: PathBuf, settings: RegistrySettings) -> Result<Self> {
        for d in ["blobs/sha256", "layers", "tmp"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        Ok(ImageStore { root, settings, locks: Mutex::default(), refs_lock: Mutex::default() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }
    pub fn layer_dir(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.root.join("layers").join(hex_of(digest)?))
    }
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// A lock for one digest's blob or layer.
    pub(crate) fn lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_string()).or_default().clone()
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        std::fs::read(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImageError::NotFound(digest.to_string()),
            _ => e.into(),
        })
    }

    /// Stores `bytes` under their digest (temp file, fsync, rename).
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        let digest = oci::sha256_digest(bytes);
        let dest = self.blob_path(&digest)?;
        if !dest.exists() {
            let tmp = self.temp_path("blob");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes).and_then(|()| f.sync_all()).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })?;
            std::fs::rename(&tmp, &dest)?;
        }
        Ok(digest)
    }

    /// A fresh unique path under `tmp/`.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let mut r = [0u8; 6];
        let _ = getrandom::getrandom(&mut r);
        self.tmp_dir().join(format!("{what}-{}", oci::hex(&r)))
    }

    /// Unpacks the layer blob `digest` (if not yet) and checks its diff id.
    pub fn ensure_layer(&self, digest: &str, media_type: &str, diff_id: Option<&str>) -> Result<PathBuf> {
        let dest = self.layer_dir(digest)?;
        if dest.is_dir() {
            return Ok(dest);
        }
        let gzip = oci::layer_compression(media_type)
            .ok_or_else(|| ImageError::Unsupported(format!("layer media type '{media_type}' (gzip or plain tar layers only)")))?;
        let file = std::fs::File::open(self.blob_path(digest)?)?;
        let reader: Box<dyn Read> = if gzip {
            Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
        } else {
            Box::new(std::io::BufReader::new(file))
        };
        let tmp = self.temp_path("layer");
        std::fs::create_dir(&tmp)?;
        let res = crate::unpack::unpack_layer(reader, &tmp).and_then(|got| match diff_id {
            Some(want) if want != got => {
                Err(ImageError::DigestMismatch { what: format!("uncompressed layer {digest}"), expected: want.into(), actual: got })
            }
            _ => Ok(()),
        });
        if let Err(e) = res {
            remove_tree(&tmp);
            return Err(e);
        }
        match std::fs::rename(&tmp, &dest) {
            Ok(()) => Ok(dest),
            // Someone else finished first: theirs is as good as ours.
            Err(_) if dest.is_dir() => {
                remove_tree(&tmp);
                Ok(dest)
            }
            Err(e) => {
                remove_tree(&tmp);
                Err(e.into())
            }
        }
    }

    fn refs_path(&self) -> PathBuf {
        self.root.join("refs.json")
    }

    pub fn refs(&self) -> BTreeMap<String, RefEntry> {
        std::fs::read(self.refs_path()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Changes the reference table atomically (temp file + rename).
    pub fn update_refs<T>(&self, f: impl FnOnce(&mut BTreeMap<String, RefEntry>) -> Result<T>) -> Result<T> {
        let _g = self.refs_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut refs = self.refs();
        let out = f(&mut refs)?;
        let tmp = self.temp_path("refs");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&refs).unwrap_or_default())?;
        std::fs::rename(&tmp, self.refs_path())?;
        Ok(out)
    }

    pub fn set_ref(&self, reference: &ImageRef, digest: &str) -> Result<()> {
        let key = reference.to_string();
        let digest = digest.to_string();
        self.update_refs(|r| {
            r.insert(key, RefEntry { digest, modified_at: now_secs() });
            Ok(())
        })
    }

    /// The image a user's reference (or a bare `sha256:` digest) names, if
    /// it is in the store.
    pub fn find(&self, reference: &str) -> Result<Option<LocalImage>> {
        if reference.starts_with("sha256:") {
            hex_of(reference)?;
            if !self.has_blob(reference) {
                return Ok(None);
            }
            return self.load(reference, reference).map(Some);
        }
        let r = ImageRef::parse(reference)?;
        if let Some(d) = &r.digest {
            if self.has_blob(d) {
                return self.load(&r.to_string(), d).map(Some);
            }
            return Ok(None);
        }
        match self.refs().get(&r.to_string()) {
            Some(e) => self.load(&r.to_string(), &e.digest.clone()).map(Some),
            None => Ok(None),
        }
    }

    /// Reads an image's manifest and config from the store.
    pub fn load(&self, reference: &str, digest: &str) -> Result<LocalImage> {
        let manifest: Manifest = serde_json::from_slice(&self.read_blob(digest)?)
            .map_err(|e| ImageError::InvalidArchive(format!("stored manifest {digest}: {e}")))?;
        let config: ImageConfig = serde_json::from_slice(&self.read_blob(&manifest.config.digest)?)
            .map_err(|e| ImageError::InvalidArchive(format!("stored config {}: {e}", manifest.config.digest)))?;
        Ok(LocalImage { reference: reference.to_string(), digest: digest.to_string(), manifest, config })
    }

    /// Every tagged image, one entry per reference.
    pub fn list(&self) -> Vec<(LocalImage, u64)> {
        self.refs().into_iter().filter_map(|(r, e)| self.load(&r, &e.digest).ok().map(|i| (i, e.modified_at))).collect()
    }

    /// The unpacked layer directories of an image, bottom layer first,
    /// unpacking any not yet unpacked.
    pub fn layer_dirs(&self, img: &LocalImage) -> Result<Vec<PathBuf>> {
        let diff_ids = &img.config.rootfs.diff_ids;
        img.manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| self.ensure_layer(&l.digest, &l.media_type, diff_ids.get(i).map(String::as_str)))
            .collect()
    }

    /// Removes a reference. Refuses (`image_in_use`) when sandboxes use the
    /// image it names and no other reference keeps it.
    pub fn remove(&self, reference: &str, users: &dyn Fn(&str) -> Vec<String>) -> Result<LocalImage> {
        let img = self.find(reference)?.ok_or_else(|| ImageError::NotFound(reference.to_string()))?;
        self.update_refs(|refs| {
            let others = refs.iter().filter(|(k, e)| **k != img.reference && e.digest == img.digest).count();
            let using = users(&img.digest);
            if others == 0 && !using.is_empty() {
                return Err(ImageError::InUse { image: reference.to_string(), sandboxes: using });
            }
            if reference.starts_with("sha256:") {
                if !using.is_empty() {
                    return Err(ImageError::InUse { image: reference.to_string(), sandboxes: using });
                }
                refs.retain(|_, e| e.digest != img.digest);
            } else {
                refs.remove(&img.reference);
            }
            Ok(())
        })?;
        Ok(img)
    }

    /// Deletes blobs and unpacked layers that no reference and no sandbox
    /// (`keep`: manifest digests in use) needs, and stale temp files.
    pub fn prune(&self, keep: &[String]) -> Result<PruneReport> {
        let mut live: BTreeSet<String> = BTreeSet::new();
        let mut roots: Vec<String> = self.refs().into_values().map(|e| e.digest).collect();
        roots.extend(keep.iter().cloned());
        for d in roots {
            let Ok(img) = self.load(&d, &d) else { continue };
            live.insert(d);
            live.insert(img.manifest.config.digest.clone());
            live.extend(img.manifest.layers.iter().map(|l| l.digest.clone()));
        }
        let mut rep = PruneReport::default();
        for (sub, is_layer) in [("blobs/sha256", false), ("layers", true)] {
            for e in std::fs::read_dir(self.root.join(sub))?.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if live.contains(&format!("sha256:{name}")) {
                    continue;
                }
                rep.bytes_freed += tree_size(&e.path());
                if is_layer {
                    remove_tree(&e.path());
                    rep.layers_removed += 1;
                } else {
                    let _ = std::fs::remove_file(e.path());
                    rep.blobs_removed += 1;
                }
            }
        }
        // Finished or abandoned temp work; `.partial` downloads are kept for
        // resuming only while some pull might still want them.
        for e in std::fs::read_dir(self.tmp_dir())?.flatten() {
            rep.bytes_freed += tree_size(&e.path());
            remove_tree(&e.path());
        }
        Ok(rep)
    }
}

/// Disk usage of a file or tree (not following symlinks).
pub fn tree_size(p: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else { return 0 };
    if !m.is_dir() {
        return std::os::unix::fs::MetadataExt::blocks(&m) * 512;
    }
    std::fs::read_dir(p).map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum()).unwrap_or(0)
}

/// Removes a tree, making read-only directories writable first.
pub fn remove_tree(p: &Path) {
    if std::fs::remove_dir_all(p).is_ok() || !p.exists() {
        return;
    }
    fn open_up(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::symlink_metadata(p) {
            if m.is_dir() {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
                if let Ok(rd) = std::fs::read_dir(p) {
                    rd.flatten().for_each(|e| open_up(&e.path()));
                }
            }
        }
    }
    open_up(p);
    let _ = std::fs::remove_dir_all(p);
}

impl ImageStore {
    fn cache_path(&self) -> PathBuf {
        self.root.join("build-cache.json")
    }

    /// The image a build step with cache key `key` produced before, if its
    /// blobs are all still here (prune may have removed them).
    pub fn cache_get(&self, key: &str) -> Option<LocalImage> {
        let map: BTreeMap<String, String> = std::fs::read(self.cache_path()).ok().and_then(|b| serde_json::from_slice(&b).ok())?;
        let digest = map.get(key)?;
        let img = self.load(digest, digest).ok()?;
        img.manifest.layers.iter().all(|l| self.has_blob(&l.digest)).then_some(img)
    }

    pub fn cache_put(&self, key: &str, digest: &str) -> Result<()> {
        let _g = self.refs_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut map: BTreeMap<String, String> =
            std::fs::read(self.cache_path()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        map.insert(key.to_string(), digest.to_string());
        let tmp = self.temp_path("cache");
        std::fs::write(&tmp, serde_json::to_vec(&map).unwrap_or_default())?;
        std::fs::rename(&tmp, self.cache_path())?;
        Ok(())
    }
}

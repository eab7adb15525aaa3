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
//!
//! Pulls, builds and imports run as operations ([`ImageStore::begin`]).
//! Every digest an operation writes or is about to rely on is *touched*;
//! `prune` spares touched digests and every temp file until no operation
//! is in progress, so it never deletes a blob or layer a concurrent pull
//! has fetched but not yet tagged (see [`ImageStore::prune`]).

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
    /// Operations in progress and the digests they touched.
    ops: Mutex<Ops>,
}

#[derive(Default)]
struct Ops {
    active: usize,
    touched: BTreeSet<String>,
}

/// An operation in progress (pull, build, import); see [`ImageStore::begin`].
pub struct Operation<'a> {
    store: &'a ImageStore,
}

impl Drop for Operation<'_> {
    fn drop(&mut self) {
        let mut ops = self.store.ops();
        ops.active -= 1;
        if ops.active == 0 {
            ops.touched.clear();
        }
    }
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
        Ok(ImageStore { root, settings, locks: Mutex::default(), refs_lock: Mutex::default(), ops: Mutex::default() })
    }

    fn ops(&self) -> std::sync::MutexGuard<'_, Ops> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts an operation that writes to the store: until every operation
    /// has ended, `prune` leaves what they touched and all temp files alone.
    pub fn begin(&self) -> Operation<'_> {
        self.ops().active += 1;
        Operation { store: self }
    }

    /// Marks `digest` as needed by the operations in progress. Call it
    /// *before* checking whether the blob or layer exists: a prune either
    /// ran before (and the check sees it gone) or spares it.
    pub fn touch(&self, digest: &str) {
        let mut ops = self.ops();
        if ops.active > 0 {
            ops.touched.insert(digest.to_string());
        }
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
        self.touch(&digest);
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
        self.touch(digest);
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
    ///
    /// Spares what operations in progress touched and, while any runs, every
    /// temp file (a `.partial` download, a layer being unpacked). Deciding
    /// and moving the dead entries aside happens under the operations lock,
    /// so a pull cannot start relying on a blob between the two; the slow
    /// deleting happens after.
    pub fn prune(&self, keep: &[String]) -> Result<PruneReport> {
        // (path moved aside, what it was: Some(is_layer), None for temp work)
        let mut moved: Vec<(PathBuf, Option<bool>)> = Vec::new();
        let ops = self.ops();
        let mut live: BTreeSet<String> = ops.touched.clone();
        let mut roots: Vec<String> = self.refs().into_values().map(|e| e.digest).collect();
        roots.extend(keep.iter().cloned());
        for d in roots {
            let Ok(img) = self.load(&d, &d) else { continue };
            live.insert(d);
            live.insert(img.manifest.config.digest.clone());
            live.extend(img.manifest.layers.iter().map(|l| l.digest.clone()));
        }
        let mut doomed: Vec<(PathBuf, Option<bool>)> = Vec::new();
        for (sub, is_layer) in [("blobs/sha256", false), ("layers", true)] {
            for e in std::fs::read_dir(self.root.join(sub))?.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !live.contains(&format!("sha256:{name}")) {
                    doomed.push((e.path(), Some(is_layer)));
                }
            }
        }
        // Finished or abandoned temp work, only while nothing runs.
        if ops.active == 0 {
            doomed.extend(std::fs::read_dir(self.tmp_dir())?.flatten().map(|e| (e.path(), None)));
        }
        for (p, kind) in doomed {
            let aside = self.temp_path("pruned");
            if std::fs::rename(&p, &aside).is_ok() {
                moved.push((aside, kind));
            }
        }
        drop(ops);
        let mut rep = PruneReport::default();
        for (p, kind) in moved {
            rep.bytes_freed += tree_size(&p);
            match kind {
                Some(true) => rep.layers_removed += 1,
                Some(false) => rep.blobs_removed += 1,
                None => {}
            }
            remove_tree(&p);
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
    if std::fs::symlink_metadata(p).is_ok_and(|m| !m.is_dir()) {
        let _ = std::fs::remove_file(p);
        return;
    }
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
        // A build reuses this unreferenced image: spared while it runs.
        self.touch(digest);
        let img = self.load(digest, digest).ok()?;
        self.touch(&img.manifest.config.digest);
        img.manifest.layers.iter().for_each(|l| self.touch(&l.digest));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = ImageStore::open(dir.path().join("images"), RegistrySettings::default()).unwrap();
        (dir, s)
    }

    #[test]
    fn prune_spares_what_an_operation_in_progress_wrote_or_relies_on() {
        let (_d, s) = store();
        let stale = s.put_blob(b"left over, nothing references it").unwrap();
        let op = s.begin();
        // A pull has fetched a config blob, is half-way through a layer, and
        // relies on a blob that was already there (unreferenced).
        let fetched = s.put_blob(b"config of an image being pulled").unwrap();
        let partial = s.tmp_dir().join(format!("{}.partial", "ab".repeat(32)));
        std::fs::write(&partial, b"half a layer").unwrap();
        s.touch(&stale);
        let rep = s.prune(&[]).unwrap();
        assert_eq!(rep.blobs_removed, 0, "{rep:?}");
        assert!(s.has_blob(&fetched) && s.has_blob(&stale) && partial.is_file());
        drop(op);
        // Once nothing runs, what nothing references goes, temp files too.
        let rep = s.prune(&[]).unwrap();
        assert_eq!(rep.blobs_removed, 2, "{rep:?}");
        assert!(!s.has_blob(&fetched) && !s.has_blob(&stale) && !partial.exists());
        assert_eq!(std::fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn touching_outside_an_operation_pins_nothing() {
        let (_d, s) = store();
        let b = s.put_blob(b"x").unwrap();
        s.touch(&b);
        assert_eq!(s.prune(&[]).unwrap().blobs_removed, 1);
        // Overlapping operations: the touched set lives until the last ends.
        let (a, b2) = (s.begin(), s.begin());
        let kept = s.put_blob(b"y").unwrap();
        drop(a);
        assert_eq!(s.prune(&[]).unwrap().blobs_removed, 0);
        drop(b2);
        assert_eq!(s.prune(&[]).unwrap().blobs_removed, 1);
        assert!(!s.has_blob(&kept));
    }
}

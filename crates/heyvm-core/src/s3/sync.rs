//! Restoring a mount's directory from its prefix and saving it back,
//! incrementally: a manifest (host-only, beside the sandbox's other state)
//! remembers each file's ETag, SHA-256, size and mtime as of the last sync,
//! so unchanged files are neither fetched nor hashed nor sent again.
//!
//! The directory is written by the sandbox, so it is hostile: files are
//! opened beneath it only (`safe_fs::Confined`), only regular files are
//! read, and object keys from the bucket (which another server's sandbox
//! may have written) are checked like any user path before they name a
//! local file.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use reqwest::Method;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::client::{expect_ok, Body};
use super::{data_prefix, S3Error, S3};
use crate::error::{CoreError, Result};
use crate::safe_fs::{clean_relative, Confined};

/// Most files a mount may hold (a bound on the walk and the manifest).
const MAX_FILES: usize = 200_000;
/// Names of in-flight atomic writes (never saved).
const TEMP_PREFIX: &str = ".heyvm-upload-";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    etag: String,
    sha256: String,
    size: u64,
    mtime: (i64, i64),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    files: BTreeMap<String, Entry>,
}

/// What one sync did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub transferred: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub bytes: u64,
}

/// One mount: its prefix in the bucket, its directory, its manifest file.
pub struct Volume<'a> {
    pub s3: &'a S3,
    pub prefix: &'a str,
    pub dir: &'a Path,
    pub manifest: &'a Path,
}

fn load(path: &Path) -> Manifest {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn store(path: &Path, m: &Manifest) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(m).map_err(|e| CoreError::Corrupt(e.to_string()))?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn stamp(meta: &std::fs::Metadata) -> (u64, (i64, i64)) {
    (meta.len(), (meta.mtime(), meta.mtime_nsec()))
}

/// Every entry beneath the root: `(relative path, is a directory)`, not
/// following symlinks (a symlink is listed as a non-directory).
fn walk(c: &Confined) -> Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = c.list(&dir) else { continue };
        for e in entries {
            if out.len() >= MAX_FILES {
                return Err(CoreError::invalid(format!("the mount holds more than {MAX_FILES} entries; not syncing it")));
            }
            let rel = dir.join(&e.name);
            let is_dir = e.is_dir && !e.is_symlink;
            if is_dir {
                todo.push(rel.clone());
            }
            out.push((rel.to_string_lossy().into_owned(), is_dir));
        }
    }
    Ok(out)
}

/// Whether a host file is a VM guest's symlink, device or FIFO: a VM sees
/// its host mounts through 9p with QEMU's `mapped-xattr` model, which
/// stores what the guest makes as a regular host file and the guest's file
/// type and mode in its `user.virtfs.mode` xattr (a little-endian u32).
fn vm_special(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    let mut mode = [0u8; 4];
    // SAFETY: fgetxattr with a valid fd, a NUL-terminated name and a 4-byte buffer.
    let n = unsafe { libc::fgetxattr(file.as_raw_fd(), c"user.virtfs.mode".as_ptr(), mode.as_mut_ptr().cast(), mode.len()) };
    n == 4 && u32::from_le_bytes(mode) & libc::S_IFMT != libc::S_IFREG
}

impl Volume<'_> {
    fn confined(&self) -> Result<Confined> {
        std::fs::create_dir_all(self.dir)?;
        Confined::open(self.dir)
    }

    /// Makes the directory hold exactly the prefix's objects.
    pub async fn restore(&self) -> Result<Report> {
        let c = self.confined()?;
        let dp = data_prefix(self.prefix);
        let mut manifest = load(self.manifest);
        let mut wanted: BTreeMap<String, super::client::Object> = BTreeMap::new();
        for o in self.s3.list(&dp).await? {
            let Some(rel) = o.key.strip_prefix(&dp) else { continue };
            if rel.is_empty() || rel.ends_with('/') {
                continue;
            }
            match clean_relative(rel) {
                Ok(p) if !p.as_os_str().is_empty() => {
                    wanted.insert(p.to_string_lossy().into_owned(), o);
                }
                _ => tracing::warn!(key = %o.key, "skipping an S3 object whose key is not a safe relative path"),
            }
        }
        let mut report = Report::default();
        // First clear what the bucket does not have (and directories where
        // it has files), so the downloads below never meet a stale path.
        for (rel, is_dir) in walk(&c)? {
            let stale = if is_dir { wanted.contains_key(&rel) } else { !wanted.contains_key(&rel) };
            if stale {
                match c.remove(Path::new(&rel), true) {
                    Ok(()) | Err(CoreError::FileNotFound(_)) => report.deleted += 1,
                    Err(e) => return Err(e),
                }
                manifest.files.remove(&rel);
            }
        }
        manifest.files.retain(|k, _| wanted.contains_key(k));
        for (rel, o) in &wanted {
            let local = c.open_read(Path::new(rel)).ok().and_then(|(f, _)| f.metadata().ok()).map(|m| stamp(&m));
            if let (Some(e), Some((size, mtime))) = (manifest.files.get(rel), local) {
                if e.etag == o.etag && e.size == size && e.mtime == mtime {
                    report.unchanged += 1;
                    continue;
                }
            }
            let entry = self.download(&c, &o.key, rel, &o.etag).await;
            match entry {
                Ok(e) => {
                    report.transferred += 1;
                    report.bytes += e.size;
                    manifest.files.insert(rel.clone(), e);
                }
                Err(e) => {
                    store(self.manifest, &manifest)?;
                    return Err(e);
                }
            }
        }
        store(self.manifest, &manifest)?;
        Ok(report)
    }

    async fn download(&self, c: &Confined, key: &str, rel: &str, etag: &str) -> Result<Entry> {
        let resp = self.s3.send(Method::GET, key, &[], &[], Body::Empty).await?;
        let mut resp = expect_ok(resp, "downloading an object").await?;
        let expected = resp.headers().get("x-amz-meta-sha256").and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut out = c.create(Path::new(rel))?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| S3Error::Unreachable(e.to_string()))? {
            hasher.update(&chunk);
            out.write(&chunk)?;
        }
        let sha256 = super::sign::hex(&hasher.finalize());
        if expected.as_deref().is_some_and(|e| e != sha256) {
            return Err(S3Error::Checksum(key.into()).into());
        }
        out.commit()?;
        let (f, _) = c.open_read(Path::new(rel))?;
        let (size, mtime) = stamp(&f.metadata()?);
        Ok(Entry { etag: etag.to_string(), sha256, size, mtime })
    }

    /// Sends what changed since the last sync; deletes in the bucket what
    /// was deleted here. Files that fail are reported after the others
    /// are done (the first error is returned).
    pub async fn save(&self) -> Result<Report> {
        let c = self.confined()?;
        let dp = data_prefix(self.prefix);
        let mut manifest = load(self.manifest);
        let mut report = Report::default();
        let mut present = BTreeSet::new();
        let mut first_error: Option<CoreError> = None;
        for (rel, is_dir) in walk(&c)? {
            let name = Path::new(&rel).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if is_dir || name.starts_with(TEMP_PREFIX) {
                continue;
            }
            // Symlinks, FIFOs and devices are refused here: only regular files are saved.
            let Ok((file, _)) = c.open_read(Path::new(&rel)) else { continue };
            if vm_special(&file) {
                continue;
            }
            let (size, mtime) = stamp(&file.metadata()?);
            present.insert(rel.clone());
            if manifest.files.get(&rel).is_some_and(|e| e.size == size && e.mtime == mtime) {
                report.unchanged += 1;
                continue;
            }
            let (file, sha256) = tokio::task::spawn_blocking(move || hash(file))
                .await
                .map_err(|e| CoreError::Corrupt(format!("hashing panicked: {e}")))??;
            if let Some(e) = manifest.files.get_mut(&rel).filter(|e| e.sha256 == sha256) {
                (e.size, e.mtime) = (size, mtime);
                report.unchanged += 1;
                continue;
            }
            match self.upload(&format!("{dp}{rel}"), file, size, &sha256).await {
                Ok(etag) => {
                    report.transferred += 1;
                    report.bytes += size;
                    manifest.files.insert(rel, Entry { etag, sha256, size, mtime });
                }
                Err(e) => {
                    tracing::warn!(file = %rel, error = %e, "could not save a file to S3");
                    first_error.get_or_insert(e);
                }
            }
        }
        let gone: Vec<String> = manifest.files.keys().filter(|k| !present.contains(*k)).cloned().collect();
        for rel in gone {
            match self.s3.delete(&format!("{dp}{rel}")).await {
                Ok(()) => {
                    manifest.files.remove(&rel);
                    report.deleted += 1;
                }
                Err(e) => {
                    first_error.get_or_insert(e.into());
                }
            }
        }
        store(self.manifest, &manifest)?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    async fn upload(&self, key: &str, file: std::fs::File, size: u64, sha256: &str) -> Result<String> {
        let body = Body::File { file: tokio::fs::File::from_std(file), len: size, sha256_hex: sha256.to_string() };
        let resp = self.s3.send(Method::PUT, key, &[], &[("x-amz-meta-sha256", sha256.to_string())], body).await?;
        let resp = expect_ok(resp, "uploading an object").await?;
        Ok(resp.headers().get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).unwrap_or("").trim_matches('"').to_string())
    }
}

/// The file's SHA-256 (hex), and the file rewound for sending.
fn hash(mut file: std::fs::File) -> Result<(std::fs::File, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    file.rewind()?;
    Ok((file, super::sign::hex(&hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::vm_special;

    fn with_mode(mode: Option<u32>) -> bool {
        // Not /tmp: a tmpfs before Linux 6.6 has no user xattrs.
        let f = tempfile::NamedTempFile::new_in("/var/tmp").unwrap();
        if let Some(m) = mode {
            let c = std::ffi::CString::new(f.path().as_os_str().as_encoded_bytes()).unwrap();
            let v = m.to_le_bytes();
            // SAFETY: setxattr with valid C strings and a 4-byte buffer.
            assert_eq!(unsafe { libc::setxattr(c.as_ptr(), c"user.virtfs.mode".as_ptr(), v.as_ptr().cast(), 4, 0) }, 0);
        }
        vm_special(f.as_file())
    }

    #[test]
    fn a_guests_links_and_devices_on_a_9p_share_are_told_apart() {
        assert!(with_mode(Some(libc::S_IFLNK | 0o777)));
        assert!(with_mode(Some(libc::S_IFCHR | 0o600)));
        assert!(!with_mode(Some(libc::S_IFREG | 0o644)));
        assert!(!with_mode(None), "a host file without the xattr is what it is");
    }
}

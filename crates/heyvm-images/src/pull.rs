//! Pulling an image into the store: resolve the reference (mirrors first),
//! pick the host's platform from an index, fetch config and layers
//! concurrently (each blob once, resuming a partial download), verify every
//! digest, unpack the layers, then record the reference.

use std::io::{Seek, Write};
use std::sync::Arc;

use futures_util::StreamExt;
use oci_client::client::BlobResponse;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::error::{ImageError, Result};
use crate::oci::{self, Descriptor, Index, Manifest};
use crate::reference::ImageRef;
use crate::registry::{worth_falling_back, Endpoint};
use crate::store::{ImageStore, LocalImage};

/// How many layers download at once.
const PARALLEL_LAYERS: usize = 4;

/// Progress of a pull, for bars and SSE.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    Resolved { reference: String, digest: String, registry: String, layers: Vec<LayerInfo> },
    Progress { digest: String, downloaded: u64, total: u64 },
    LayerDone { digest: String, cached: bool },
    Done { reference: String, digest: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub digest: String,
    pub size: u64,
}

pub type ProgressFn = Arc<dyn Fn(PullEvent) + Send + Sync>;

pub fn no_progress() -> ProgressFn {
    Arc::new(|_| {})
}

impl ImageStore {
    /// The image `reference` names: from the store if there, else pulled.
    pub async fn get_or_pull(self: &Arc<Self>, reference: &str, progress: ProgressFn) -> Result<LocalImage> {
        if let Some(img) = self.find(reference)? {
            return Ok(img);
        }
        self.pull(reference, progress).await
    }

    /// Pulls `reference` (always asking the registry) and tags it locally.
    pub async fn pull(self: &Arc<Self>, reference: &str, progress: ProgressFn) -> Result<LocalImage> {
        let r = ImageRef::parse(reference)?;
        // What this pull fetches is spared by a concurrent prune until tagged.
        let _op = self.begin();
        let mut last = None;
        for registry in self.settings.endpoints(&r) {
            let ep = Endpoint::new(&self.settings, &registry);
            match self.pull_from(&ep, &r, progress.clone()).await {
                Ok(img) => return Ok(img),
                Err(e) if registry != r.registry && worth_falling_back(&e) => {
                    tracing::info!("mirror {registry} could not serve {r}: {e}; trying the next");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ImageError::NotFound(reference.to_string())))
    }

    async fn pull_from(self: &Arc<Self>, ep: &Endpoint, r: &ImageRef, progress: ProgressFn) -> Result<LocalImage> {
        let name = r.familiar();
        let (mut bytes, mut digest) = self.fetch_manifest(ep, r, &name).await?;
        let head: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::BadRegistryAnswer { registry: ep.registry.clone(), why: e.to_string() })?;
        let media = head.get("mediaType").and_then(|m| m.as_str()).unwrap_or_default();
        if media == oci::OCI_INDEX || media == oci::DOCKER_LIST || head.get("manifests").is_some() {
            let index: Index = serde_json::from_slice(&bytes)
                .map_err(|e| ImageError::BadRegistryAnswer { registry: ep.registry.clone(), why: format!("image index: {e}") })?;
            let (os, arch) = oci::host_platform();
            let pick = oci::pick_platform(&index).ok_or_else(|| ImageError::Unsupported(format!("'{name}' has no {os}/{arch} variant")))?;
            let (b, d) = self.fetch_manifest(ep, &r.with_digest(&pick.digest), &name).await?;
            (bytes, digest) = (b, d);
        }
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::BadRegistryAnswer { registry: ep.registry.clone(), why: format!("manifest: {e}") })?;
        if manifest.schema_version != 2 {
            return Err(ImageError::Unsupported(format!("manifest schema version {}", manifest.schema_version)));
        }
        for l in &manifest.layers {
            oci::layer_compression(&l.media_type)
                .ok_or_else(|| ImageError::Unsupported(format!("layer media type '{}' (gzip or plain tar layers only)", l.media_type)))?;
        }
        let layers = manifest.layers.iter().map(|l| LayerInfo { digest: l.digest.clone(), size: l.size }).collect();
        progress(PullEvent::Resolved { reference: r.to_string(), digest: digest.clone(), registry: ep.registry.clone(), layers });
        let oref = ep.reference(r);
        self.fetch_blob(ep, &oref, &manifest.config, &name, &progress).await?;
        let config: oci::ImageConfig = serde_json::from_slice(&self.read_blob(&manifest.config.digest)?)
            .map_err(|e| ImageError::BadRegistryAnswer { registry: ep.registry.clone(), why: format!("image config: {e}") })?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::BadRegistryAnswer {
                registry: ep.registry.clone(),
                why: "config and manifest disagree on the layer count".into(),
            });
        }
        let mut jobs = Vec::new();
        for (l, diff) in manifest.layers.iter().cloned().zip(config.rootfs.diff_ids.iter().cloned()) {
            jobs.push(self.clone().fetch_layer(ep, oref.clone(), l, diff, name.clone(), progress.clone()));
        }
        let results: Vec<Result<()>> = futures_util::stream::iter(jobs).buffer_unordered(PARALLEL_LAYERS).collect().await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        self.put_blob(&bytes)?;
        if r.digest.is_none() {
            self.set_ref(r, &digest)?;
        }
        progress(PullEvent::Done { reference: r.to_string(), digest: digest.clone() });
        self.load(&r.to_string(), &digest)
    }

    /// Downloads and unpacks one layer unless it is already unpacked; one
    /// pull at a time per layer.
    async fn fetch_layer(
        self: Arc<Self>,
        ep: &Endpoint,
        oref: oci_client::Reference,
        l: Descriptor,
        diff: String,
        name: String,
        progress: ProgressFn,
    ) -> Result<()> {
        let lock = self.lock(&l.digest);
        let _g = lock.lock().await;
        self.touch(&l.digest);
        let cached = self.layer_dir(&l.digest)?.is_dir();
        if !cached {
            self.fetch_blob(ep, &oref, &l, &name, &progress).await?;
            let me = self.clone();
            let (d, m) = (l.digest.clone(), l.media_type.clone());
            tokio::task::spawn_blocking(move || me.ensure_layer(&d, &m, Some(&diff)))
                .await
                .map_err(|e| ImageError::Io(std::io::Error::other(e.to_string())))??;
        }
        progress(PullEvent::LayerDone { digest: l.digest.clone(), cached });
        Ok(())
    }

    /// A manifest's bytes and digest, verified against the digest we asked
    /// for (if any) and the registry's own claim.
    async fn fetch_manifest(&self, ep: &Endpoint, r: &ImageRef, name: &str) -> Result<(Vec<u8>, String)> {
        let oref = ep.reference(r);
        let (bytes, claimed) = ep.client.pull_manifest_raw(&oref, &ep.auth, oci::MANIFEST_TYPES).await.map_err(|e| ep.error(name, e))?;
        let actual = oci::sha256_digest(&bytes);
        self.touch(&actual);
        let expected = r.digest.clone().unwrap_or(claimed);
        if expected.starts_with("sha256:") && expected != actual {
            return Err(ImageError::DigestMismatch { what: format!("manifest of {name}"), expected, actual });
        }
        Ok((bytes.to_vec(), actual))
    }

    /// Downloads one blob into the store, resuming a partial download, and
    /// verifies its size and digest before it becomes visible.
    async fn fetch_blob(
        &self,
        ep: &Endpoint,
        oref: &oci_client::Reference,
        d: &Descriptor,
        name: &str,
        progress: &ProgressFn,
    ) -> Result<()> {
        let dest = self.blob_path(&d.digest)?;
        self.touch(&d.digest);
        if dest.is_file() {
            return Ok(());
        }
        let partial = self.tmp_dir().join(format!("{}.partial", &d.digest[7..]));
        let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(&partial)?;
        let mut have = file.metadata()?.len();
        if have > d.size {
            file.set_len(0)?;
            have = 0;
        }
        let mut hasher = Sha256::new();
        if have > 0 {
            file.seek(std::io::SeekFrom::Start(0))?;
            std::io::copy(&mut std::io::Read::take(&mut file, have), &mut HashWriter(&mut hasher))?;
        }
        let digest = d.digest.as_str();
        let mut stream = if have > 0 {
            match ep.client.pull_blob_stream_partial(oref, digest, have, None).await.map_err(|e| ep.error(name, e))? {
                BlobResponse::Partial(s) => s,
                BlobResponse::Full(s) => {
                    file.set_len(0)?;
                    have = 0;
                    hasher = Sha256::new();
                    s
                }
            }
        } else {
            ep.client.pull_blob_stream(oref, digest).await.map_err(|e| ep.error(name, e))?
        };
        let unreachable =
            |e: std::io::Error| ImageError::RegistryUnreachable { registry: ep.registry.clone(), why: format!("reading {digest}: {e}") };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(unreachable)?;
            have += chunk.len() as u64;
            if have > d.size {
                drop(file);
                let _ = std::fs::remove_file(&partial);
                return Err(ImageError::DigestMismatch {
                    what: format!("blob {digest}"),
                    expected: format!("{} bytes", d.size),
                    actual: "more".into(),
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk)?;
            progress(PullEvent::Progress { digest: d.digest.clone(), downloaded: have, total: d.size });
        }
        file.sync_all()?;
        drop(file);
        if have < d.size {
            // Kept: the next pull resumes from here.
            return Err(unreachable(std::io::Error::other(format!("the download ended after {have} of {} bytes", d.size))));
        }
        let actual = format!("sha256:{}", oci::hex(&hasher.finalize()));
        if actual != d.digest || have != d.size {
            let _ = std::fs::remove_file(&partial);
            return Err(ImageError::DigestMismatch { what: format!("blob of {name}"), expected: d.digest.clone(), actual });
        }
        std::fs::rename(&partial, &dest)?;
        Ok(())
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

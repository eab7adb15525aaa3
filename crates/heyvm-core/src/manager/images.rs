//! Sandboxes on OCI images: resolving a create's `image` through the store
//! (pulling when missing), the image config's defaults, the layers a launch
//! stacks, and which sandboxes use which image (`images rm` refuses those).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use heyvm_images::{ImageError, LocalImage, ProgressFn};

use super::SandboxManager;
use crate::error::{CoreError, Result};
use crate::record::SandboxRecord;

/// What a create's `image` means when it is absent or one of these: the
/// host's system directories, copy-on-write (the fast default).
pub const HOST_IMAGE: &str = "host";

/// Whether `image` asks for the host rootfs rather than an OCI image.
pub fn is_host_image(image: Option<&str>) -> bool {
    image.is_none_or(|i| i.is_empty() || i == HOST_IMAGE)
}

/// An image's runtime defaults as a sandbox takes them.
pub struct ImageDefaults {
    pub digest: String,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

impl From<&LocalImage> for ImageDefaults {
    fn from(img: &LocalImage) -> Self {
        let c = &img.config.config;
        ImageDefaults {
            digest: img.digest.clone(),
            env: img.config.env_map(),
            working_dir: c.working_dir.clone().filter(|w| w.starts_with('/')),
            user: c.user.clone().filter(|u| !u.is_empty()),
        }
    }
}

impl SandboxManager {
    pub fn images(&self) -> &Arc<heyvm_images::ImageStore> {
        &self.images
    }

    /// The image `reference` names, pulled if the store lacks it, with every
    /// layer unpacked.
    pub async fn resolve_image(&self, reference: &str, progress: ProgressFn) -> Result<LocalImage> {
        let img = self.images.get_or_pull(reference, progress).await?;
        let (store, i) = (self.images.clone(), img.clone());
        tokio::task::spawn_blocking(move || store.layer_dirs(&i))
            .await
            .map_err(|e| CoreError::Backend(crate::backend::BackendError::Failed(format!("unpacking layers panicked: {e}"))))??;
        Ok(img)
    }

    /// Unpacked layer directories (bottom first) of the image a sandbox
    /// runs on; empty for the host rootfs.
    pub(crate) async fn image_layers(&self, rec: &SandboxRecord) -> Result<Vec<PathBuf>> {
        match rec.image_digest.clone() {
            Some(digest) => self.image_layers_of(&digest).await,
            None => Ok(Vec::new()),
        }
    }

    /// Unpacked layer directories (bottom first) of a stored image.
    pub(crate) async fn image_layers_of(&self, digest: &str) -> Result<Vec<PathBuf>> {
        let digest = digest.to_string();
        let store = self.images.clone();
        tokio::task::spawn_blocking(move || {
            let img = store.load(&digest, &digest).map_err(|e| match e {
                ImageError::NotFound(_) => ImageError::NotFound(format!("{digest} (removed from the image store)")),
                e => e,
            })?;
            store.layer_dirs(&img)
        })
        .await
        .map_err(|e| CoreError::Backend(crate::backend::BackendError::Failed(format!("unpacking layers panicked: {e}"))))?
        .map_err(Into::into)
    }

    /// Names of the sandboxes whose image is `digest`.
    pub fn image_users(&self, digest: &str) -> Vec<String> {
        self.store.list().unwrap_or_default().into_iter().filter(|r| r.image_digest.as_deref() == Some(digest)).map(|r| r.name).collect()
    }

    /// Manifest digest -> names of sandboxes using it.
    pub fn images_in_use(&self) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.store.list().unwrap_or_default() {
            if let Some(d) = r.image_digest {
                m.entry(d).or_default().push(r.name);
            }
        }
        m
    }

    /// Removes an image reference unless a sandbox needs it.
    pub fn remove_image(&self, reference: &str) -> Result<LocalImage> {
        let img = self.images.remove(reference, &|d| self.image_users(d))?;
        self.prune_backend_image_caches();
        Ok(img)
    }

    /// Deletes what no image reference and no sandbox needs, the backends'
    /// per-image caches (VM base disks) included.
    pub fn prune_images(&self) -> Result<heyvm_images::store::PruneReport> {
        let keep: Vec<String> = self.images_in_use().into_keys().collect();
        let mut report = self.images.prune(&keep)?;
        report.bytes_freed += self.prune_backend_image_caches();
        Ok(report)
    }

    /// Each backend drops what it cached for images no longer in the store
    /// (the layer directories of the ones left are kept, by name).
    fn prune_backend_image_caches(&self) -> u64 {
        let keep: Vec<Vec<PathBuf>> = self
            .images
            .list()
            .iter()
            .filter_map(|(img, _)| {
                img.manifest.layers.iter().map(|l| self.images.layer_dir(&l.digest)).collect::<std::result::Result<_, _>>().ok()
            })
            .collect();
        self.backends.iter().map(|b| b.prune_image_cache(&keep)).sum()
    }
}

/// The wire form of a store entry.
pub(super) fn to_info(store: &heyvm_images::ImageStore, img: &LocalImage, modified_at: u64, users: Vec<String>) -> heyvm_types::ImageInfo {
    let name = heyvm_images::ImageRef::parse(&img.reference).map(|r| r.familiar()).unwrap_or_else(|_| img.reference.clone());
    heyvm_types::ImageInfo {
        name,
        path: store.blob_path(&img.digest).map(|p| p.display().to_string()).unwrap_or_default(),
        size_bytes: img.size_bytes(),
        modified_at,
        reference: img.reference.clone(),
        digest: img.digest.clone(),
        in_use_by: users,
    }
}

impl SandboxManager {
    /// Every tagged image with the sandboxes using it.
    pub fn list_images(&self) -> Vec<heyvm_types::ImageInfo> {
        let users = self.images_in_use();
        self.images
            .list()
            .iter()
            .map(|(img, at)| to_info(&self.images, img, *at, users.get(&img.digest).cloned().unwrap_or_default()))
            .collect()
    }

    fn modified_at(&self, img: &LocalImage) -> u64 {
        self.images.refs().get(&img.reference).map(|e| e.modified_at).unwrap_or(0)
    }

    /// One image by reference or digest (`image_not_found` otherwise).
    pub fn image_details(&self, reference: &str) -> Result<heyvm_types::ImageDetails> {
        let img = self.images.find(reference)?.ok_or_else(|| ImageError::NotFound(reference.to_string()))?;
        let info = to_info(&self.images, &img, self.modified_at(&img), self.image_users(&img.digest));
        Ok(heyvm_types::ImageDetails {
            info,
            architecture: img.config.architecture.clone(),
            os: img.config.os.clone(),
            config: serde_json::to_value(&img.config.config).unwrap_or_default(),
            layers: img
                .manifest
                .layers
                .iter()
                .map(|l| heyvm_types::ImageLayer { digest: l.digest.clone(), size: l.size, media_type: l.media_type.clone() })
                .collect(),
        })
    }

    /// Pulls `reference` from its registry (mirrors first), always asking
    /// the registry for the current digest.
    pub async fn pull_image(&self, reference: &str, progress: ProgressFn) -> Result<heyvm_types::ImageInfo> {
        let img = self.images.pull(reference, progress).await?;
        let (store, i) = (self.images.clone(), img.clone());
        tokio::task::spawn_blocking(move || store.layer_dirs(&i))
            .await
            .map_err(|e| CoreError::Backend(crate::backend::BackendError::Failed(format!("unpacking layers panicked: {e}"))))??;
        Ok(to_info(&self.images, &img, self.modified_at(&img), self.image_users(&img.digest)))
    }

    /// Gives the image `source` names the reference `target` too.
    pub fn tag_image(&self, source: &str, target: &str) -> Result<heyvm_types::ImageInfo> {
        let img = self.images.find(source)?.ok_or_else(|| ImageError::NotFound(source.to_string()))?;
        let t = heyvm_images::ImageRef::parse(target)?;
        if t.digest.is_some() {
            return Err(ImageError::InvalidReference(format!("'{target}': a tag target cannot carry a digest")).into());
        }
        self.images.set_ref(&t, &img.digest)?;
        let img = self.images.load(&t.to_string(), &img.digest)?;
        Ok(to_info(&self.images, &img, self.modified_at(&img), self.image_users(&img.digest)))
    }

    /// Stores registry credentials for later pulls and pushes.
    pub fn registry_login(&self, registry: &str, username: &str, password: &str) -> Result<()> {
        if registry.is_empty() || username.is_empty() || registry.contains(['/', ' ']) {
            return Err(CoreError::invalid("registry login needs a registry host (host[:port]) and a username"));
        }
        let creds = heyvm_images::settings::Credentials { username: username.into(), password: password.into() };
        Ok(self.images.settings.save_login(registry, &creds)?)
    }
}

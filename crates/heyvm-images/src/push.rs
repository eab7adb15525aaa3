//! Pushing an image from the store to any registry: each blob the registry
//! lacks, then the manifest's exact bytes (so the digest stays the same).

use oci_client::secrets::RegistryAuth;

use crate::error::{ImageError, Result};
use crate::pull::{ProgressFn, PullEvent};
use crate::reference::ImageRef;
use crate::registry::Endpoint;
use crate::store::ImageStore;

impl ImageStore {
    /// Pushes the local image `reference` to the registry it names; returns
    /// the manifest digest.
    pub async fn push(&self, reference: &str, progress: ProgressFn) -> Result<String> {
        let img = self.find(reference)?.ok_or_else(|| ImageError::NotFound(reference.to_string()))?;
        let r = ImageRef::parse(&img.reference).or_else(|_| ImageRef::parse(reference))?;
        if r.tag.is_none() {
            return Err(ImageError::InvalidReference(format!("'{reference}': push needs a tagged reference")));
        }
        let ep = Endpoint::new(&self.settings, &r.registry);
        let oref = ep.reference(&r);
        let name = r.familiar();
        ep.client.store_auth_if_needed(oref.resolve_registry(), &ep.auth).await;
        if !matches!(ep.auth, RegistryAuth::Anonymous) {
            ep.client.auth(&oref, &ep.auth, oci_client::RegistryOperation::Push).await.map_err(|e| ep.error(&name, e))?;
        }
        let mut blobs = vec![img.manifest.config.clone()];
        blobs.extend(img.manifest.layers.iter().cloned());
        let layers = blobs.iter().map(|b| crate::pull::LayerInfo { digest: b.digest.clone(), size: b.size }).collect();
        progress(PullEvent::Resolved { reference: r.to_string(), digest: img.digest.clone(), registry: r.registry.clone(), layers });
        for b in &blobs {
            let exists = ep.client.blob_exists(&oref, &b.digest).await.map_err(|e| ep.error(&name, e))?;
            if !exists {
                let data = tokio::fs::read(self.blob_path(&b.digest)?).await?;
                ep.client.push_blob(&oref, data, &b.digest).await.map_err(|e| ep.error(&name, e))?;
            }
            progress(PullEvent::LayerDone { digest: b.digest.clone(), cached: exists });
        }
        let raw = self.read_blob(&img.digest)?;
        let media = img.manifest.media_type.clone().unwrap_or_else(|| crate::oci::OCI_MANIFEST.to_string());
        let ct = media.parse().map_err(|_| ImageError::Unsupported(format!("manifest media type '{media}'")))?;
        ep.client.push_manifest_raw(&oref, raw, ct).await.map_err(|e| ep.error(&name, e))?;
        progress(PullEvent::Done { reference: r.to_string(), digest: img.digest.clone() });
        Ok(img.digest)
    }
}

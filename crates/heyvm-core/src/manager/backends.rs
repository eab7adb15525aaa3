//! Which backend a request gets, and what `GET /system/backends` reports.
//! Aliases (`firecracker`, `libvirt`, ... for `kvm`) resolve to the backend
//! that declares them, and the daemon log says so once per alias.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use heyvm_types::BackendInfo;

use super::SandboxManager;
use crate::backend::Backend;
use crate::error::{CoreError, Result};
use crate::record::SandboxRecord;

impl SandboxManager {
    /// The backend for a create request: the named one (or alias), else
    /// `HEYVM_DEFAULT_BACKEND`, else the first. Refuses one that does not
    /// work on this host, with its reason.
    pub(crate) fn backend_for_request(&self, requested: Option<&str>) -> Result<Arc<dyn Backend>> {
        let default = crate::config::string(crate::config::DEFAULT_BACKEND);
        let Some(name) = requested.map(str::to_string).or(default) else { return Ok(self.backends[0].clone()) };
        let backend = self.find_backend(&name).ok_or_else(|| {
            let names: Vec<&str> = self.backends.iter().map(|b| b.name()).collect();
            CoreError::BackendUnavailable(name.clone(), format!("this daemon runs: {}", names.join(", ")))
        })?;
        if backend.name() != name {
            note_alias_once(&name, backend.name());
        }
        let status = backend.status();
        if !status.available {
            return Err(CoreError::BackendUnavailable(
                backend.name().into(),
                status.reason.unwrap_or_else(|| "not available on this host".into()),
            ));
        }
        Ok(backend)
    }

    /// Every backend this daemon knows, available or not.
    pub fn backends(&self) -> Vec<BackendInfo> {
        self.backends
            .iter()
            .map(|b| {
                let s = b.status();
                BackendInfo {
                    name: s.name.to_string(),
                    available: s.available,
                    reason: s.reason,
                    accel: s.accel,
                    aliases: b.aliases().iter().map(|a| a.to_string()).collect(),
                }
            })
            .collect()
    }

    /// What each available backend boots for a sandbox created without an
    /// OCI image, default backend first (`GET /public-images`); only the
    /// backend `named` (a name or alias) when given.
    pub fn base_images(&self, named: Option<&str>) -> Vec<BaseImage> {
        let default = self.backend_for_request(None).map(|b| b.name()).unwrap_or(self.backends[0].name());
        let wanted = named.map(|n| self.find_backend(n).map(|b| b.name()));
        let mut out: Vec<BaseImage> = self
            .backends
            .iter()
            .filter(|b| wanted.is_none_or(|w| w == Some(b.name())) && b.status().available)
            .map(|b| BaseImage { backend: b.name(), image: b.default_image().unwrap_or(super::HOST_IMAGE), oci: b.supports_images() })
            .collect();
        out.sort_by_key(|i| i.backend != default);
        out
    }

    /// The accelerator of a VM sandbox's backend.
    pub(crate) fn accel_of(&self, rec: &SandboxRecord) -> Option<String> {
        self.find_backend(&rec.backend_type)?.status().accel
    }

    /// The image a sandbox reports: its OCI reference, else what its
    /// backend boots without one (a VM's default image; `host` on
    /// bubblewrap). The record keeps `host` either way.
    pub(crate) fn image_of(&self, rec: &SandboxRecord) -> String {
        if !super::is_host_image(Some(&rec.image)) {
            return rec.image.clone();
        }
        self.find_backend(&rec.backend_type).and_then(|b| b.default_image()).unwrap_or(super::HOST_IMAGE).to_string()
    }
}

/// One backend's image-less sandbox ([`SandboxManager::base_images`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    pub backend: &'static str,
    /// `host` (the host's own system) or the backend's default image.
    pub image: &'static str,
    /// Whether it also boots OCI images from the store.
    pub oci: bool,
}

fn note_alias_once(alias: &str, name: &str) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if seen.insert(alias.to_string()) {
        tracing::info!("backend_type '{alias}' is served by the '{name}' backend");
    }
}

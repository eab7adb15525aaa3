//! Images: the store's listing (heyo-sdk's `ImageInfo` fields plus the
//! reference, digest and users), inspection, pull/tag/prune bodies.

use serde::{Deserialize, Serialize};

/// One tagged image (`GET /images`, `GET /images/:ref`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageInfo {
    /// Short reference (`busybox:1`, `127.0.0.1:5000/app:v1`).
    pub name: String,
    /// The image's manifest in the store.
    pub path: String,
    /// Config plus compressed layers, in bytes.
    pub size_bytes: u64,
    /// Unix seconds the reference last changed.
    pub modified_at: u64,
    /// Full reference (`docker.io/library/busybox:1`).
    pub reference: String,
    /// Manifest digest (`sha256:…`).
    pub digest: String,
    /// Names of the sandboxes running on it.
    #[serde(default)]
    pub in_use_by: Vec<String>,
}

/// `GET /images/:ref`: the listing entry plus what the image is made of.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageDetails {
    #[serde(flatten)]
    pub info: ImageInfo,
    pub architecture: String,
    pub os: String,
    /// The OCI image config's `config` (Env, WorkingDir, User, Cmd, ...).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: serde_json::Value,
    pub layers: Vec<ImageLayer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageLayer {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// `POST /images/pull`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PullImageRequest {
    pub reference: String,
}

/// `POST /images/tag`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TagImageRequest {
    pub source: String,
    pub target: String,
}

/// `POST /images/push`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PushImageRequest {
    pub reference: String,
}

/// `POST /images/prune`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PruneImagesResponse {
    pub blobs_removed: usize,
    pub layers_removed: usize,
    pub bytes_freed: u64,
}

/// `POST /images/login`: credentials kept by the daemon for a registry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryLoginRequest {
    pub registry: String,
    pub username: String,
    pub password: String,
}

//! Deploy archives (`POST /archives`).

use serde::{Deserialize, Serialize};

/// What `POST /archives` returns.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    /// `ar-` + 8 hex digits; pass it as `archive_id` when creating a sandbox.
    pub archive_id: String,
    /// Size of the uploaded (compressed) archive in bytes.
    pub size: u64,
    /// Regular files in the archive.
    #[serde(default)]
    pub files: u64,
    /// Bytes the files take once unpacked.
    #[serde(default)]
    pub unpacked_bytes: u64,
}

use serde::{Deserialize, Serialize};

/// One entry of `GET /sandboxes/:id/files`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// Path relative to the mount path.
    pub path: String,
    pub size: u64,
    pub is_dir: bool,
    pub is_symlink: bool,
    /// Seconds since the Unix epoch.
    pub modified: i64,
    pub mode: u32,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileList {
    pub mount_path: String,
    pub path: String,
    pub files: Vec<FileEntry>,
}

/// Body of `POST /sandboxes/:id/files/upload`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadJsonRequest {
    #[serde(default = "default_mount")]
    pub mount_path: String,
    pub file_path: String,
    /// Base64 (standard alphabet) file content.
    pub content: String,
}

fn default_mount() -> String {
    crate::WORKSPACE_PATH.to_string()
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadResponse {
    pub mount_path: String,
    pub file_path: String,
    pub size: u64,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteFileResponse {
    pub mount_path: String,
    pub file_path: String,
    pub deleted: bool,
}

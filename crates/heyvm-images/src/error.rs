//! What can go wrong with images, each with a stable code and HTTP status.
//! Registry failures are 502, never 401: a client reads 401 as "my token to
//! heyvm expired", which a registry refusing us is not.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("invalid image reference {0}")]
    InvalidReference(String),
    #[error("image '{0}' not found")]
    NotFound(String),
    #[error("registry {registry} is unreachable: {why}")]
    RegistryUnreachable { registry: String, why: String },
    #[error("registry {registry} refused our credentials for {image}: {why}")]
    RegistryUnauthorized { registry: String, image: String, why: String },
    #[error("registry {registry} answered something that is not a valid image: {why}")]
    BadRegistryAnswer { registry: String, why: String },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    #[error("image '{image}' is used by sandboxes: {}", sandboxes.join(", "))]
    InUse { image: String, sandboxes: Vec<String> },
    #[error("unsupported image: {0}")]
    Unsupported(String),
    #[error("invalid image archive: {0}")]
    InvalidArchive(String),
    #[error("{0}")]
    Build(String),
    #[error("image store: {0}")]
    Io(#[from] std::io::Error),
}

impl ImageError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidReference(_) => "invalid_reference",
            Self::NotFound(_) => "image_not_found",
            Self::RegistryUnreachable { .. } => "registry_unreachable",
            Self::RegistryUnauthorized { .. } => "registry_unauthorized",
            Self::BadRegistryAnswer { .. } => "registry_bad_answer",
            Self::DigestMismatch { .. } => "digest_mismatch",
            Self::InUse { .. } => "image_in_use",
            Self::Unsupported(_) => "unsupported_image",
            Self::InvalidArchive(_) => "invalid_image_archive",
            Self::Build(_) => "build_failed",
            Self::Io(e) if e.raw_os_error() == Some(libc::ENOSPC) => "disk_full",
            Self::Io(_) => "image_store_error",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidReference(_) | Self::Unsupported(_) | Self::InvalidArchive(_) | Self::Build(_) => 400,
            Self::NotFound(_) => 404,
            Self::InUse { .. } => 409,
            Self::RegistryUnreachable { .. }
            | Self::RegistryUnauthorized { .. }
            | Self::BadRegistryAnswer { .. }
            | Self::DigestMismatch { .. } => 502,
            Self::Io(e) if e.raw_os_error() == Some(libc::ENOSPC) => 507,
            Self::Io(_) => 500,
        }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

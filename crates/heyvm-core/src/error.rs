use thiserror::Error;

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Every failure the engine reports. Each variant has a stable `code()` and
/// an HTTP-style `status()` so all surfaces report it the same way.
#[derive(Debug, Error)]
pub enum CoreError {
    #[error("sandbox '{0}' not found")]
    NotFound(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidPath(String),
    /// A mount the sandbox's backend cannot set up (`Backend::check_mounts`).
    #[error("{0}")]
    InvalidMount(String),
    #[error("a sandbox named '{0}' already exists")]
    NameTaken(String),
    #[error("sandbox '{id}' is {status}; {action} needs it {needs}")]
    InvalidState { id: String, status: String, action: &'static str, needs: &'static str },
    #[error("{0}")]
    Conflict(String),
    #[error("mount '{0}' is read-only")]
    ReadOnlyMount(String),
    #[error("file '{0}' not found")]
    FileNotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("backend '{0}' is not available: {1}")]
    BackendUnavailable(String, String),
    #[error("sandbox {id} failed: {reason}")]
    SandboxFailed { id: String, reason: String },
    #[error("backend error: {0}")]
    Backend(#[from] crate::backend::BackendError),
    /// A record in the state store that does not decode, or other state
    /// the daemon itself wrote and cannot read back.
    #[error("corrupt state: {0}")]
    Corrupt(String),
    #[error("the sandbox agent did not answer: {0}")]
    AgentUnreachable(String),
    #[error("{0}")]
    EndpointNotFound(String),
    /// Nothing accepts connections on the requested sandbox port.
    #[error("{0}")]
    PortUnreachable(String),
    #[error("invalid archive: {0}")]
    InvalidArchive(String),
    #[error("archive '{0}' not found")]
    ArchiveNotFound(String),
    #[error("state store error: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Image(#[from] heyvm_images::ImageError),
    #[error("{0}")]
    CheckpointUnsupported(String),
    #[error("checkpoint '{0}' not found")]
    CheckpointNotFound(String),
    /// The sandbox's own permissions refuse a file operation.
    #[error("{0}")]
    PermissionDenied(String),
    /// The sandbox's disk (or quota) is full.
    #[error("{0}")]
    NoSpace(String),
    /// The sandbox runs an agent too old for the request; a restart
    /// gives it the daemon's agent.
    #[error("{0}")]
    AgentOutdated(String),
    /// A per-daemon quota (sandboxes, running VMs) is full.
    #[error("{0}")]
    QuotaExceeded(String),
    #[error(transparent)]
    S3(#[from] crate::s3::S3Error),
}

impl CoreError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "sandbox_not_found",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidPath(_) => "invalid_path",
            Self::InvalidMount(_) => "invalid_mount",
            Self::NameTaken(_) => "name_taken",
            Self::InvalidState { .. } => "invalid_state",
            Self::Conflict(_) => "conflict",
            Self::ReadOnlyMount(_) => "read_only_mount",
            Self::FileNotFound(_) => "file_not_found",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::BackendUnavailable(..) => "backend_unavailable",
            Self::SandboxFailed { .. } => "sandbox_failed",
            Self::Backend(crate::backend::BackendError::Unsupported { .. }) => "unsupported",
            Self::Backend(crate::backend::BackendError::Conflict(_)) => "conflict",
            Self::Backend(_) => "backend_error",
            Self::Corrupt(_) => "store_error",
            Self::AgentUnreachable(_) => "agent_unreachable",
            Self::EndpointNotFound(_) => "endpoint_not_found",
            Self::PortUnreachable(_) => "port_unreachable",
            Self::InvalidArchive(_) => "invalid_archive",
            Self::ArchiveNotFound(_) => "archive_not_found",
            Self::Store(_) => "store_error",
            Self::Io(_) => "io_error",
            Self::Image(e) => e.code(),
            Self::CheckpointUnsupported(_) => "checkpoint_unsupported",
            Self::CheckpointNotFound(_) => "checkpoint_not_found",
            Self::PermissionDenied(_) => "permission_denied",
            Self::NoSpace(_) => "no_space",
            Self::AgentOutdated(_) => "agent_outdated",
            Self::QuotaExceeded(_) => "quota_exceeded",
            Self::S3(e) => e.code(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound(_) | Self::FileNotFound(_) | Self::EndpointNotFound(_) => 404,
            Self::InvalidRequest(_)
            | Self::InvalidPath(_)
            | Self::InvalidMount(_)
            | Self::BackendUnavailable(..)
            | Self::InvalidArchive(_) => 400,
            Self::ArchiveNotFound(_) | Self::CheckpointNotFound(_) => 404,
            Self::CheckpointUnsupported(_) => 409,
            Self::ReadOnlyMount(_) | Self::PermissionDenied(_) => 403,
            Self::NoSpace(_) => 507,
            Self::AgentOutdated(_) => 409,
            Self::QuotaExceeded(_) => 429,
            Self::NameTaken(_) | Self::InvalidState { .. } | Self::Conflict(_) => 409,
            Self::PayloadTooLarge(_) => 413,
            Self::AgentUnreachable(_) | Self::PortUnreachable(_) => 502,
            Self::Backend(crate::backend::BackendError::Unsupported { .. }) => 501,
            Self::Backend(crate::backend::BackendError::Conflict(_)) => 409,
            Self::SandboxFailed { .. } | Self::Backend(_) | Self::Corrupt(_) | Self::Store(_) | Self::Io(_) => 500,
            Self::Image(e) => e.status(),
            Self::S3(e) => e.status(),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidRequest(msg.into())
    }
}

//! Why a sandbox did not come up. Its text becomes the failed sandbox's
//! `error_message` and the `sandbox_failed` response, so the variants keep
//! the wording users already see.

use crate::backend::BackendError;
use crate::error::CoreError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum StartFailure {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The agent did not answer (handshake, identity reset).
    #[error(transparent)]
    Agent(#[from] std::io::Error),
    #[error("sandbox did not come up: {0}")]
    DidNotComeUp(String),
    #[error("its processes exited")]
    Exited,
    #[error("setup hook {index} could not run: {source}")]
    HookUnrunnable { index: usize, source: std::io::Error },
    #[error("setup hook {index} failed with exit code {code}: {hook}")]
    HookFailed { index: usize, code: i32, hook: String },
    #[error("no randomness for the new identity: {0}")]
    Entropy(String),
}

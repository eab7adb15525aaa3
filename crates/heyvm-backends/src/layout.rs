//! Where the bubblewrap backend keeps a sandbox's copy-on-write layers,
//! on the sandbox's disk (or in its directory when it has none): a backend
//! fact, not the manager's.

use std::path::PathBuf;

use heyvm_core::paths::SandboxPaths;

pub trait OverlayPaths {
    /// Copy-on-write upper layers over the host's system directories.
    fn upper(&self) -> PathBuf;
    fn overlay_work(&self) -> PathBuf;
    fn merged(&self) -> PathBuf;
}

impl OverlayPaths for SandboxPaths {
    fn upper(&self) -> PathBuf {
        self.storage().join("upper")
    }
    fn overlay_work(&self) -> PathBuf {
        self.storage().join("work")
    }
    fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }
}

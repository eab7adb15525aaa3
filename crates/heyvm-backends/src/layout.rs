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
    /// Mount points of the idmapped views (shared layers, user mounts) in
    /// the owner's private mount namespace; empty directories on the host.
    fn idmapped(&self) -> PathBuf;
    /// Records which uid range the layers' ownership was shifted into.
    fn ids_marker(&self) -> PathBuf;
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
    fn idmapped(&self) -> PathBuf {
        self.dir.join("idmapped")
    }
    fn ids_marker(&self) -> PathBuf {
        self.dir.join("ids")
    }
}

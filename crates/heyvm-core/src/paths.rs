//! The data directory layout (`MVM_DATA_DIR`, default `~/.heyo`).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// `MVM_DATA_DIR` if set, else `$HOME/.heyo`.
    pub fn from_env() -> Self {
        if let Some(d) = crate::config::string(crate::config::DATA_DIR) {
            return Self::new(PathBuf::from(d));
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        Self::new(home.join(".heyo"))
    }

    pub fn new(root: PathBuf) -> Self {
        // Absolute, so paths handed to sandbox supervisors stay valid.
        let root = if root.is_absolute() { root } else { std::env::current_dir().map(|c| c.join(&root)).unwrap_or(root) };
        DataDir { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn db_path(&self) -> PathBuf {
        self.root.join("heyvm.db")
    }
    pub fn daemon_lock(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.root.join("daemon.log")
    }
    /// The OCI image store (blobs, unpacked layers, references).
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.root.join("sandboxes")
    }
    pub fn sandbox(&self, id: &str) -> SandboxPaths {
        SandboxPaths { dir: self.sandboxes_dir().join(id) }
    }
}

/// Files of one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxPaths {
    pub dir: PathBuf,
}

impl SandboxPaths {
    /// The sandbox's own disk image (bubblewrap as root; see
    /// heyvm-backends' `disk`). Never mounted inside.
    pub fn disk_image(&self) -> PathBuf {
        self.dir.join("disk.img")
    }
    /// Where the disk image is mounted on the host.
    pub fn disk_mount(&self) -> PathBuf {
        self.dir.join("disk")
    }
    /// Where the sandbox's writable files live: on its disk when it has
    /// one, else (no root, or a sandbox from before disk limits) directly in
    /// its directory.
    pub fn storage(&self) -> PathBuf {
        if self.disk_image().exists() {
            self.disk_mount()
        } else {
            self.dir.clone()
        }
    }
    /// Persistent writable root directory (becomes `/` in the sandbox).
    pub fn root(&self) -> PathBuf {
        self.storage().join("root")
    }
    pub fn workspace(&self) -> PathBuf {
        self.storage().join("workspace")
    }
    /// The agent's listening socket (bubblewrap). The sandbox directory
    /// itself is never mounted inside, so the sandbox cannot replace it.
    pub fn agent_socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }
    /// The sandbox log (written by the daemon only; never inside the sandbox).
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("logs.jsonl")
    }
    pub fn owner_json(&self) -> PathBuf {
        self.dir.join("owner.json")
    }
    pub fn owner_log(&self) -> PathBuf {
        self.dir.join("owner.log")
    }
    pub fn launch_json(&self) -> PathBuf {
        self.dir.join("launch.json")
    }
}

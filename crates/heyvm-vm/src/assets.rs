//! Where the microVM tier's guest assets live (built by
//! `scripts/vm-assets.sh`): `$HEYVM_VM_DIR`, default `/var/cache/heyvm/vm`,
//! shared by every daemon on the host because building them takes a while.
//!
//! ```text
//! kernel/vmlinux           uncompressed kernel (Debian's linux-image package)
//! kernel/modules/**.ko     the modules the guest loads
//! kernel/version
//! images/debian.current    the default VM image: a link to its base disk,
//! images/debian-<recipe>.ext4  one per package list (read-only; older ones
//!                          stay for the VMs whose overlays name them)
//! images/debian.ext4       the default image of assets made before recipes
//! initramfs-<hash>.cpio    built on demand from the agent + modules
//! ```

use std::path::{Path, PathBuf};

pub const DEFAULT_VM_DIR: &str = "/var/cache/heyvm/vm";
/// The image a VM boots when the request names none.
pub const DEFAULT_IMAGE: &str = "debian";
/// How the API names [`DEFAULT_IMAGE`] (`SandboxInfo::image` of a VM
/// created without one): a plain `debian` would read as Docker Hub's.
pub const DEFAULT_IMAGE_NAME: &str = "debian-vm";

#[derive(Debug, Clone)]
pub struct VmAssets {
    pub dir: PathBuf,
}

impl VmAssets {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$HEYVM_VM_DIR` or the default.
    pub fn from_env() -> Self {
        Self::new(heyvm_core::config::string(heyvm_core::config::VM_DIR).map(PathBuf::from).unwrap_or_else(|| DEFAULT_VM_DIR.into()))
    }

    pub fn kernel(&self) -> PathBuf {
        self.dir.join("kernel/vmlinux")
    }

    pub fn modules(&self) -> PathBuf {
        self.dir.join("kernel/modules")
    }

    pub fn kernel_version(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("kernel/version")).ok().map(|s| s.trim().to_string())
    }

    /// The base disk of a built-in image: the one `<name>.current` links to
    /// (the newest recipe), else `<name>.ext4` (assets made before recipes).
    /// Overlays name the resolved file, so a newer recipe never changes the
    /// base disk under an existing VM.
    pub fn image(&self, name: &str) -> PathBuf {
        let current = self.dir.join("images").join(format!("{name}.current"));
        if current.exists() {
            return current;
        }
        self.dir.join("images").join(format!("{name}.ext4"))
    }

    /// What is missing for booting `image`, as a sentence; `None` if ready.
    pub fn missing(&self, image: &str) -> Option<String> {
        let need: [(&Path, &str); 3] =
            [(&self.kernel(), "guest kernel"), (&self.modules(), "guest kernel modules"), (&self.image(image), "VM image")];
        let missing: Vec<String> = need.iter().filter(|(p, _)| !p.exists()).map(|(p, what)| format!("{what} {}", p.display())).collect();
        if missing.is_empty() {
            None
        } else {
            Some(format!("missing {} (run scripts/vm-assets.sh)", missing.join(", ")))
        }
    }
}

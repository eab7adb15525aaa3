//! Sandboxes on an OCI image (bubblewrap backend): `/` is an overlay of the
//! image's shared read-only layers with the sandbox's own persistent
//! writable layer (`upper/rootfs`), instead of the host's system
//! directories. The agent is the static `heyvm-agent`, so it runs in any
//! image, including ones without a C library.

use std::path::{Path, PathBuf};

use heyvm_core::paths::SandboxPaths;
use heyvm_core::LaunchSpec;

use crate::layout::OverlayPaths;
use crate::owner::Overlay;

/// Overlay mount options must fit in one page.
const MAX_OVERLAY_OPTS: usize = 4000;

/// An image sandbox's own writable layer (the overlay's upper directory).
pub fn writable_layer(p: &SandboxPaths) -> PathBuf {
    p.upper().join("rootfs")
}

/// The overlay that becomes an image sandbox's `/`.
pub fn image_root(spec: &LaunchSpec) -> std::io::Result<Overlay> {
    let p = &spec.paths;
    let (upper, work, merged) = (writable_layer(p), p.overlay_work().join("rootfs"), p.merged().join("rootfs"));
    let fresh = !upper.exists();
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d)?;
    }
    // overlayfs lists lower layers top first.
    let lower: Vec<String> = spec.image_layers.iter().rev().map(|l| l.display().to_string()).collect();
    let lower = lower.join(":");
    if lower.len() + 2 * upper.as_os_str().len() > MAX_OVERLAY_OPTS {
        return Err(std::io::Error::other(format!("image has too many layers ({}) for one overlay mount", spec.image_layers.len())));
    }
    // Only into a layer the sandbox has never run on: once it has, the
    // upper layer is sandbox-written and a planted `etc` symlink would
    // steer this (root) write onto the host.
    if fresh {
        copy_resolv_conf(&spec.image_layers, &upper);
    }
    Ok(Overlay { lower: PathBuf::from(lower), upper, work, merged })
}

/// Gives the sandbox the host's resolver configuration (what its network
/// uses), as Docker does. Skipped when the image's `/etc` is not a plain
/// directory.
fn copy_resolv_conf(layers: &[PathBuf], upper: &Path) {
    let etc_ok = layers.iter().all(|l| std::fs::symlink_metadata(l.join("etc")).map(|m| m.is_dir()).unwrap_or(true));
    if !etc_ok {
        return;
    }
    if let Ok(content) = std::fs::read("/etc/resolv.conf") {
        let _ = std::fs::create_dir_all(upper.join("etc")).and_then(|()| std::fs::write(upper.join("etc/resolv.conf"), content));
    }
}

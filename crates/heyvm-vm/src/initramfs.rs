//! The guest's initramfs: `/init` is the static `heyvm-agent` (it notices it
//! is PID 1 in a VM by [`MODULES_ORDER`]), plus the kernel modules it loads,
//! already in dependency order. Built in memory and cached by the hash of
//! its inputs, so a new agent binary or kernel gives a new image.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cpio::CpioWriter;
use crate::modules::{ModuleTree, GUEST_MODULES};

/// Path of the module list inside the initramfs; the agent's guest init
/// looks for exactly this file (keep in sync with heyvm-agent's
/// `guest_init::INITRAMFS_MARKER`).
pub const MODULES_ORDER: &str = "lib/heyvm/modules.order";

/// Builds (or reuses) `cache_dir/initramfs-<hash>.cpio` for this agent and
/// modules tree; returns its path.
pub fn build_cached(agent: &Path, modules_root: &Path, cache_dir: &Path) -> io::Result<PathBuf> {
    let agent_bytes = fs::read(agent).map_err(|e| io::Error::new(e.kind(), format!("reading the agent {}: {e}", agent.display())))?;
    let tree = ModuleTree::scan(modules_root)
        .map_err(|e| io::Error::new(e.kind(), format!("kernel modules in {}: {e}", modules_root.display())))?;
    let modules = tree.load_order(GUEST_MODULES)?;
    let mut hash = Sha256::new();
    hash.update(&agent_bytes);
    for (name, path) in &modules {
        hash.update(name.as_bytes());
        let meta = fs::metadata(path)?;
        hash.update(meta.len().to_le_bytes());
        hash.update(format!("{:?}", meta.modified().ok()).as_bytes());
    }
    let digest = hash.finalize();
    let tag: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let out = cache_dir.join(format!("initramfs-{tag}.cpio"));
    if out.exists() {
        return Ok(out);
    }
    fs::create_dir_all(cache_dir)?;
    let mut w = CpioWriter::default();
    for dir in ["dev", "proc", "sys", "newroot", "lib", "lib/heyvm"] {
        w.dir(dir, 0o755);
    }
    w.char_dev("dev/console", 0o600, 5, 1);
    w.char_dev("dev/null", 0o666, 1, 3);
    w.file("init", 0o755, &agent_bytes);
    let mut order = String::new();
    for (i, (name, path)) in modules.iter().enumerate() {
        let file = format!("{i:02}-{name}.ko");
        w.file(&format!("lib/heyvm/{file}"), 0o644, &fs::read(path)?);
        order.push_str(&file);
        order.push('\n');
    }
    w.file(MODULES_ORDER, 0o644, order.as_bytes());
    // Write under a temporary name and rename: concurrent daemons may build
    // the same image, and a reader must never see half of one.
    let tmp = cache_dir.join(format!(".initramfs-{tag}.{}.tmp", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    w.finish(&mut f)?;
    f.sync_all()?;
    fs::rename(&tmp, &out)?;
    Ok(out)
}

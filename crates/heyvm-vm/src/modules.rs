//! Kernel modules for the guest: finds `.ko` files under a modules tree
//! (Debian's `lib/modules/<version>`, unpacked with `dpkg -x`) and orders a
//! wanted set with its dependencies first. Dependencies come from each
//! module's own `.modinfo` (`depends=a,b`), so no `depmod` output is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What a microVM guest loads: virtio transports (mmio for `-M microvm`, pci
/// for q35), the console/agent port, disks, ext4, 9p shares, the network
/// card and the entropy device. Dependencies are added automatically.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_pci",
    "virtio_console",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "9pnet_virtio",
    "9p",
    "virtio_net",
    "virtio-rng",
];

/// Module names treat `-` and `_` alike.
fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// Index of a modules tree: normalised name -> file.
pub struct ModuleTree {
    files: BTreeMap<String, PathBuf>,
}

impl ModuleTree {
    pub fn scan(root: &Path) -> io::Result<Self> {
        let mut files = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    stack.push(path);
                } else if let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko")) {
                    files.insert(normalise(stem), path);
                }
            }
        }
        Ok(Self { files })
    }

    /// The modules in `wanted` plus their dependencies, each after the ones
    /// it depends on. A wanted module missing from the tree is an error
    /// (it may be built into the kernel: then leave it out of `wanted`).
    pub fn load_order(&self, wanted: &[&str]) -> io::Result<Vec<(String, PathBuf)>> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for name in wanted {
            self.visit(&normalise(name), &mut done, &mut BTreeSet::new(), &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        done: &mut BTreeSet<String>,
        path: &mut BTreeSet<String>,
        order: &mut Vec<(String, PathBuf)>,
    ) -> io::Result<()> {
        if done.contains(name) {
            return Ok(());
        }
        if !path.insert(name.to_string()) {
            return Err(io::Error::other(format!("module dependency cycle at {name}")));
        }
        let file =
            self.files.get(name).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("kernel module {name} not found")))?;
        for dep in depends(&fs::read(file)?) {
            self.visit(&normalise(&dep), done, path, order)?;
        }
        path.remove(name);
        done.insert(name.to_string());
        order.push((name.to_string(), file.clone()));
        Ok(())
    }
}

/// The `depends=` entry of a module's `.modinfo` strings. The strings are
/// NUL-separated `key=value` pairs; scanning the whole file for the
/// NUL-preceded key finds them without an ELF parser.
pub fn depends(ko: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else { return Vec::new() };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ko(dir: &Path, rel: &str, deps: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, format!("\x7fELF...\0license=GPL\0depends={deps}\0vermagic=6.1\0")).unwrap();
    }

    #[test]
    fn dependencies_come_first_and_dashes_match_underscores() {
        let t = tempfile::tempdir().unwrap();
        ko(t.path(), "fs/ext4/ext4.ko", "jbd2,mbcache");
        ko(t.path(), "fs/jbd2/jbd2.ko", "");
        ko(t.path(), "fs/mbcache.ko", "");
        ko(t.path(), "char/virtio-rng.ko", "virtio");
        ko(t.path(), "virtio/virtio.ko", "");
        let tree = ModuleTree::scan(t.path()).unwrap();
        let names: Vec<_> = tree.load_order(&["ext4", "virtio-rng", "jbd2"]).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["jbd2", "mbcache", "ext4", "virtio", "virtio_rng"]);
    }

    #[test]
    fn missing_module_and_cycles_are_errors() {
        let t = tempfile::tempdir().unwrap();
        ko(t.path(), "a.ko", "b");
        ko(t.path(), "b.ko", "a");
        ko(t.path(), "c.ko", "nothere");
        let tree = ModuleTree::scan(t.path()).unwrap();
        assert!(tree.load_order(&["a"]).unwrap_err().to_string().contains("cycle"));
        assert!(tree.load_order(&["c"]).unwrap_err().to_string().contains("nothere"));
    }
}

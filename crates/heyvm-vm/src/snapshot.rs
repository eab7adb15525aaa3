//! VM checkpoints: memory and disks, taken while the VM is paused so they
//! agree. Memory is QEMU's migration stream written to a file (QMP
//! `migrate` to a descriptor the daemon opened: QEMU runs unprivileged and
//! may not spawn, [`crate::confine`]); the disks are sparse copies of the
//! root overlay and the `/workspace` disk. A restore (or a fork, into
//! another sandbox's directory) puts the disk copies in place and marks the
//! next launch to start QEMU with `-incoming` from the memory file (an
//! inherited descriptor), so processes keep running with the same pids.
//!
//! Layout: `vm/checkpoints/<name>/{memory,root.qcow2,workspace.ext4,meta.json}`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{VmError, VmResult};
use crate::qmp::Qmp;
use crate::vmproc::VmLayout;

/// What the API returns for one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub name: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub size_bytes: u64,
    /// Whether memory (running processes) is included.
    pub memory: bool,
    /// The machine the memory belongs to; absent in checkpoints taken
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
}

/// A VM's shape, as QEMU was started: a migration stream only loads into
/// the same vCPUs and RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub vcpus: u32,
    pub memory_mib: u64,
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} vCPU, {} MiB", self.vcpus, self.memory_mib)
    }
}

/// Checkpoint names become directory names (one rule for every backend).
pub fn valid_name(name: &str) -> bool {
    heyvm_types::CheckpointInfo::valid_name(name)
}

fn dir_of(layout: &VmLayout, name: &str) -> PathBuf {
    layout.checkpoints().join(name)
}

/// The marker a launch consumes: restore from this checkpoint directory.
fn restore_marker(layout: &VmLayout) -> PathBuf {
    layout.dir.join("restore-from")
}

/// Takes a checkpoint of a running VM. The VM is paused for the memory
/// write and the disk copies, then resumed.
pub fn take(layout: &VmLayout, name: &str, machine: Machine) -> VmResult<CheckpointMeta> {
    if !valid_name(name) {
        return Err(VmError::CheckpointName(name.to_string()));
    }
    let dir = dir_of(layout, name);
    if dir.exists() {
        return Err(VmError::CheckpointExists(name.to_string()));
    }
    let tmp = layout.checkpoints().join(format!(".{name}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| VmError::io(format!("creating {}", tmp.display()), e))?;
    let result = (|| -> VmResult<()> {
        let mut qmp = Qmp::connect(&layout.qmp_socket(), Duration::from_secs(10))?;
        // Pausing flushes the block layer, so disk copies match memory.
        qmp.execute("stop", serde_json::json!({}))?;
        let saved = (|| -> VmResult<()> {
            let memory = fs::File::create(tmp.join("memory")).map_err(|e| VmError::io("creating the memory file", e))?;
            qmp.migrate_to_file(&memory, Duration::from_secs(120))?;
            drop(memory);
            sparse_copy(&layout.overlay(), &tmp.join("root.qcow2"))?;
            sparse_copy(&layout.workspace_disk(), &tmp.join("workspace.ext4"))
        })();
        let resumed = qmp.execute("cont", serde_json::json!({}));
        saved?;
        resumed.map(|_| ()).map_err(VmError::from)
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let meta = CheckpointMeta {
        name: name.to_string(),
        created_at: rfc3339_now(),
        size_bytes: disk_usage(&tmp),
        memory: true,
        machine: Some(machine),
    };
    fs::write(tmp.join("meta.json"), serde_json::to_vec_pretty(&meta).unwrap_or_default())
        .and_then(|()| fs::rename(&tmp, &dir))
        // The copy of the root overlay keeps the image's base disk alive.
        .and_then(|()| crate::image_prune::register(&dir.join("root.qcow2")))
        .map_err(|e| VmError::io(format!("saving checkpoint {name}"), e))?;
    Ok(meta)
}

/// Every checkpoint, oldest first.
pub fn list(layout: &VmLayout) -> Vec<CheckpointMeta> {
    let Ok(rd) = fs::read_dir(layout.checkpoints()) else { return Vec::new() };
    let mut out: Vec<CheckpointMeta> = rd
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| serde_json::from_slice(&fs::read(e.path().join("meta.json")).ok()?).ok())
        .collect();
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
    out
}

pub fn remove(layout: &VmLayout, name: &str) -> VmResult<()> {
    if !valid_name(name) || !dir_of(layout, name).exists() {
        return Err(VmError::CheckpointNotFound(name.to_string()));
    }
    fs::remove_dir_all(dir_of(layout, name)).map_err(|e| VmError::io(format!("removing checkpoint {name}"), e))
}

/// Puts checkpoint `name` of `from` in place as `to`'s disks and marks
/// `to`'s next launch to load its memory. `from == to` is a restore; the VM
/// must be stopped. For a fork, `to` is a new sandbox's layout. `to`
/// boots as `machine`, which must be the checkpoint's (a resized sandbox
/// could not load the memory: QEMU quits mid-restore).
pub fn stage(from: &VmLayout, name: &str, to: &VmLayout, machine: Machine) -> VmResult<()> {
    let src = dir_of(from, name);
    if !valid_name(name) || !src.join("meta.json").exists() {
        return Err(VmError::CheckpointNotFound(name.to_string()));
    }
    let meta: Option<CheckpointMeta> = fs::read(src.join("meta.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(was) = meta.and_then(|m| m.machine).filter(|was| *was != machine) {
        return Err(VmError::CheckpointMachine { name: name.to_string(), was, now: machine });
    }
    fs::create_dir_all(&to.dir).map_err(|e| VmError::io(format!("creating {}", to.dir.display()), e))?;
    sparse_copy(&src.join("root.qcow2"), &to.overlay())?;
    sparse_copy(&src.join("workspace.ext4"), &to.workspace_disk())?;
    crate::image_prune::register(&to.overlay()).map_err(|e| VmError::io("registering the root disk", e))?;
    fs::write(restore_marker(to), src.join("memory").to_string_lossy().as_bytes()).map_err(|e| VmError::io("marking the restore", e))
}

/// Whether the next launch loads a checkpoint's memory.
pub fn restore_pending(layout: &VmLayout) -> bool {
    restore_marker(layout).exists()
}

/// The memory file the next launch must load, consuming the marker.
pub fn take_restore_marker(layout: &VmLayout) -> Option<PathBuf> {
    let p = fs::read_to_string(restore_marker(layout)).ok()?;
    let _ = fs::remove_file(restore_marker(layout));
    let p = PathBuf::from(p.trim());
    p.exists().then_some(p)
}

/// Copies a disk image keeping holes (the workspace disk is mostly holes).
fn sparse_copy(src: &Path, dst: &Path) -> VmResult<()> {
    let what = || format!("copying {}", src.display());
    let tmp = dst.with_extension("copying");
    let out =
        Command::new("cp").arg("--sparse=always").arg("--reflink=auto").arg(src).arg(&tmp).output().map_err(|e| VmError::io(what(), e))?;
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(VmError::io(what(), io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string())));
    }
    fs::rename(&tmp, dst).map_err(|e| VmError::io(what(), e))
}

/// Bytes actually used on disk by the files of a directory.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir(dir).map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.blocks() * 512).sum()).unwrap_or(0)
}

fn rfc3339_now() -> String {
    heyvm_types::CheckpointInfo::now_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_and_marker_and_list() {
        let t = tempfile::tempdir().unwrap();
        let from = VmLayout::new(&t.path().join("a"));
        let ck = from.checkpoints().join("one");
        fs::create_dir_all(&ck).unwrap();
        for f in ["memory", "root.qcow2", "workspace.ext4"] {
            fs::write(ck.join(f), f).unwrap();
        }
        let meta = CheckpointMeta { name: "one".into(), created_at: rfc3339_now(), size_bytes: 1, memory: true, machine: None };
        fs::write(ck.join("meta.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
        assert_eq!(list(&from), vec![meta.clone()]);
        let to = VmLayout::new(&t.path().join("b"));
        let micro = Machine { vcpus: 1, memory_mib: 512 };
        assert!(stage(&from, "nope", &to, micro).is_err());
        // Taken before machines were recorded: staged whatever the shape.
        stage(&from, "one", &to, Machine { vcpus: 2, memory_mib: 4096 }).unwrap();
        let _ = take_restore_marker(&to);
        // A recorded machine must match the one `to` boots.
        let meta = CheckpointMeta { machine: Some(micro), ..meta };
        fs::write(ck.join("meta.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
        let e = stage(&from, "one", &to, Machine { vcpus: 1, memory_mib: 2048 }).unwrap_err();
        assert!(matches!(e, VmError::CheckpointMachine { .. }) && e.to_string().contains("512 MiB"), "{e}");
        assert_eq!(take_restore_marker(&to), None, "nothing staged");
        stage(&from, "one", &to, micro).unwrap();
        assert_eq!(fs::read_to_string(to.overlay()).unwrap(), "root.qcow2");
        assert_eq!(take_restore_marker(&to), Some(ck.join("memory")));
        assert_eq!(take_restore_marker(&to), None);
        remove(&from, "one").unwrap();
        assert!(list(&from).is_empty());
        assert!(remove(&from, "../a").is_err());
    }
}

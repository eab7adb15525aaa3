//! Sandbox disks: each sandbox's size limit (its size class's, or
//! `disk_size_gb`), its use in `SandboxInfo`, growing it, and deleting a
//! sandbox's files through its backend (which may have a disk to unmount
//! first). The backend enforces the limit; see `docs/security.md`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use heyvm_types::{SandboxStatus, MAX_DISK_GB};

use super::SandboxManager;
use crate::backend::{remove_tree, DiskGrowth, DiskUsage};
use crate::error::{CoreError, Result};
use crate::record::SandboxRecord;

/// How long [`SandboxManager::measure_disks`] waits for agents, together.
const MEASURE_WAIT: Duration = Duration::from_secs(2);

/// A `disk_size_gb` a user asked for.
pub fn valid_size(gb: u64) -> Result<u64> {
    if !(1..=MAX_DISK_GB).contains(&gb) {
        return Err(CoreError::invalid(format!("disk_size_gb must be between 1 and {MAX_DISK_GB}")));
    }
    Ok(gb)
}

/// Applies an update's disk size to `rec`: an explicit size may only grow
/// the disk, and a smaller size class keeps the disk it has (disks never
/// shrink). `before_gb` is the size before the update. Returns whether the
/// disk grows.
pub fn apply_update(rec: &mut SandboxRecord, before_gb: u64, asked: Option<u64>) -> Result<bool> {
    if let Some(gb) = asked {
        let gb = valid_size(gb)?;
        if gb < before_gb {
            return Err(CoreError::invalid(format!("disk_size_gb cannot shrink a disk (it has {before_gb} GiB)")));
        }
        rec.disk_size_gb = Some(gb);
    }
    if rec.disk_gb() < before_gb {
        rec.disk_size_gb = Some(before_gb);
    }
    Ok(rec.disk_gb() > before_gb)
}

impl SandboxManager {
    /// Deletes a sandbox's files (its processes are gone).
    pub(super) fn remove_files(&self, rec: &SandboxRecord) {
        let spec = self.spec(rec);
        match self.backend_for(rec) {
            Ok(b) => {
                if let Err(e) = b.remove_files(&spec) {
                    tracing::warn!(sandbox = %rec.id, error = %e, "could not remove the sandbox's files");
                }
            }
            Err(_) => remove_tree(&spec.paths.dir),
        }
    }

    /// [`Self::remove_files`] on a blocking thread: unmounting a disk and
    /// removing a tree takes tens of milliseconds that would otherwise
    /// stall one of the runtime's few worker threads (and every request
    /// queued on it).
    pub(super) async fn remove_files_off_thread(self: &std::sync::Arc<Self>, rec: &SandboxRecord) {
        let (me, r) = (self.clone(), rec.clone());
        if tokio::task::spawn_blocking(move || me.remove_files(&r)).await.is_err() {
            tracing::warn!(sandbox = %rec.id, "removing the sandbox's files panicked");
        }
    }

    /// What `SandboxInfo` reports: the agent's last measurement for a
    /// running sandbox whose disk only its guest can measure, else the
    /// host's view.
    pub(super) fn disk_usage(&self, rec: &SandboxRecord) -> Option<DiskUsage> {
        let backend = self.backend_for(rec).ok()?;
        let measured = self
            .running(&rec.id)
            .filter(|_| rec.status == SandboxStatus::Running)
            .map(|r| r.disk_used_inside.load(Ordering::Relaxed))
            .filter(|&used| used != u64::MAX);
        match measured {
            Some(used) => backend.disk_usage_measured(&self.spec(rec), used),
            None => backend.disk_usage(&self.spec(rec)),
        }
    }

    /// Asks the agents of these sandboxes (those running, on a backend
    /// whose disk only the guest can measure) how full that disk is, all at
    /// once and for at most [`MEASURE_WAIT`]; [`Self::disk_usage`] reports
    /// the answers. One that does not answer keeps its previous figure.
    pub async fn measure_disks(self: &Arc<Self>, recs: &[SandboxRecord]) {
        let asks = recs.iter().filter(|r| r.status == SandboxStatus::Running).filter_map(|rec| {
            let mount = self.backend_for(rec).ok()?.disk_measured_inside()?;
            let (me, rec) = (self.clone(), rec.clone());
            Some(async move {
                let running = me.running(&rec.id)?;
                let (used, _) = me.agent(&rec).await.ok()?.fs_usage(mount).await.ok()?;
                running.disk_used_inside.store(used, Ordering::Relaxed);
                Some(())
            })
        });
        let _ = tokio::time::timeout(MEASURE_WAIT, futures_util::future::join_all(asks)).await;
    }

    /// Grows the disk to the size now recorded (the caller holds the
    /// sandbox's lock and has stored the record).
    pub(super) async fn grow_disk(&self, rec: &SandboxRecord) -> Result<()> {
        let backend = self.backend_for(rec)?;
        let spec = self.spec(rec);
        let growth = tokio::task::spawn_blocking(move || backend.grow_disk(&spec))
            .await
            .map_err(|e| CoreError::Corrupt(format!("growing the disk panicked: {e}")))??;
        let gb = rec.disk_gb();
        let when = match growth {
            DiskGrowth::Done => String::new(),
            DiskGrowth::NextStart if rec.status != SandboxStatus::Running => String::new(),
            DiskGrowth::NextStart => " at the next start".into(),
            // The device is larger; the guest grows its mounted file system.
            // If it cannot, the next start grows it offline (the disk file
            // is already larger than its file system).
            DiskGrowth::InGuest { mount, bytes } => match self.agent(rec).await {
                Ok(agent) => match agent.grow_fs(&mount, bytes).await {
                    Ok(()) => " (online)".into(),
                    Err(e) => format!(" at the next start ({e})"),
                },
                Err(e) => format!(" at the next start ({e})"),
            },
        };
        self.log_system(rec, &format!("disk grows to {gb} GiB{when}"));
        Ok(())
    }

    /// Makes every sandbox's files reachable (daemon start).
    pub(super) fn open_storage_all(&self) -> Result<()> {
        for rec in self.store.list()? {
            let Ok(backend) = self.backend_for(&rec) else { continue };
            if let Err(e) = backend.open_storage(&self.spec(&rec)) {
                tracing::warn!(sandbox = %rec.id, error = %e, "cannot open the sandbox's disk");
                self.log_system_level(&rec, "error", &format!("cannot open the sandbox's disk: {e}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heyvm_types::SizeClass;

    #[test]
    fn disks_grow_and_never_shrink() {
        let mut r = SandboxRecord::with_defaults("sb-00000001".into(), "d");
        r.size_class = SizeClass::Micro;
        assert_eq!(r.disk_gb(), 2);
        assert!(apply_update(&mut r, 2, Some(3)).unwrap());
        assert_eq!(r.limits().disk_bytes, 3 << 30);
        assert!(apply_update(&mut r, 3, Some(2)).is_err());
        assert!(apply_update(&mut r, 3, Some(0)).is_err());
        // A larger class grows an unpinned disk; a smaller one keeps it.
        let mut r = SandboxRecord::with_defaults("sb-00000002".into(), "e");
        r.size_class = SizeClass::Medium;
        assert!(apply_update(&mut r, 10, None).unwrap());
        r.size_class = SizeClass::Micro;
        assert!(!apply_update(&mut r, 20, None).unwrap());
        assert_eq!(r.disk_gb(), 20);
    }
}

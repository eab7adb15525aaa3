//! S3-backed mounts in the sandbox lifecycle (see `crate::s3` for the
//! format and the guarantees): the lease is taken on create and start,
//! files are restored before launch and saved after the sandbox's
//! processes are gone (stop, delete), and while it runs a task renews the
//! lease and, with `s3_sync_seconds`, saves periodically.
//!
//! Each mount's directory is `<storage>/s3/<hash of its sandbox path>` (on
//! the sandbox's own disk, so it counts against its disk limit); its
//! manifest and "unsaved changes" marker are host-only files beside the
//! sandbox's other state.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use heyvm_types::{MountSpec, SandboxStatus};
use sha2::{Digest, Sha256};

use super::SandboxManager;
use crate::error::{CoreError, Result};
use crate::record::SandboxRecord;
use crate::s3::{lease, sync::Volume, S3Config, S3Error, S3};

/// The bucket, if this server has S3 volumes on (read once from the environment).
pub fn bucket() -> Result<&'static S3> {
    static S3_CLIENT: OnceLock<std::result::Result<Option<S3>, String>> = OnceLock::new();
    let c = S3_CLIENT.get_or_init(|| match S3Config::from_env() {
        Ok(Some(cfg)) => S3::new(cfg).map(Some).map_err(|e| e.to_string()),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    });
    match c {
        Ok(Some(s3)) => Ok(s3),
        Ok(None) => Err(S3Error::Disabled.into()),
        Err(e) => Err(CoreError::invalid(format!("S3 volumes are misconfigured: {e}"))),
    }
}

/// Sandboxes whose background S3 task runs.
fn tasks() -> &'static Mutex<HashSet<String>> {
    static TASKS: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    TASKS.get_or_init(Default::default)
}

fn lease_secs() -> u64 {
    crate::config::parse::<u64>(crate::config::S3_LEASE_SECS).filter(|s| *s >= 10).unwrap_or(300)
}

fn s3_mounts(rec: &SandboxRecord) -> impl Iterator<Item = (&MountSpec, &str)> {
    rec.mounts.iter().filter_map(|m| m.s3_prefix.as_deref().map(|p| (m, p)))
}

fn mount_name(m: &MountSpec) -> String {
    crate::s3::sign::hex(&Sha256::digest(m.sandbox_path.as_bytes()))[..16].to_string()
}

impl SandboxManager {
    /// The record's mounts with S3-backed ones pointing at their directory.
    pub(crate) fn resolved_mounts(&self, rec: &SandboxRecord) -> Vec<MountSpec> {
        rec.mounts
            .iter()
            .map(|m| match m.s3_prefix {
                Some(_) => MountSpec { host_path: self.s3_dir(rec, m).display().to_string(), ..m.clone() },
                None => m.clone(),
            })
            .collect()
    }

    fn s3_dir(&self, rec: &SandboxRecord, m: &MountSpec) -> PathBuf {
        self.data.sandbox(&rec.id).storage().join("s3").join(mount_name(m))
    }

    fn s3_state(&self, rec: &SandboxRecord, m: &MountSpec, what: &str) -> PathBuf {
        self.data.sandbox(&rec.id).dir.join(format!("s3-{}.{what}", mount_name(m)))
    }

    /// Who holds a lease: this server (its data dir's id) and the sandbox.
    fn holder(&self, rec: &SandboxRecord) -> String {
        let file = self.data.root().join("server-id");
        let id = std::fs::read_to_string(&file).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).unwrap_or_else(|| {
            let id = crate::ids::random_hex(16);
            let _ = std::fs::write(&file, &id);
            id
        });
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("sandbox {} on {} (server {id})", rec.id, host.trim())
    }

    /// Takes every S3 mount's lease (409 `s3_prefix_in_use` when another
    /// sandbox has one; the leases taken so far are given back).
    pub(super) async fn s3_lease_all(&self, rec: &SandboxRecord) -> Result<()> {
        if s3_mounts(rec).next().is_none() {
            return Ok(());
        }
        let s3 = bucket()?;
        let holder = self.holder(rec);
        let mut taken = Vec::new();
        for (_, prefix) in s3_mounts(rec) {
            if let Err(e) = lease::acquire(s3, prefix, &holder, lease_secs()).await {
                for p in taken {
                    let _ = lease::release(s3, p, &holder).await;
                }
                return Err(e.into());
            }
            taken.push(prefix);
        }
        Ok(())
    }

    /// Gives every S3 mount's lease back (errors are logged: it lapses).
    pub(super) async fn s3_release_all(&self, rec: &SandboxRecord) {
        let Ok(s3) = bucket() else { return };
        let holder = self.holder(rec);
        for (_, prefix) in s3_mounts(rec) {
            if let Err(e) = lease::release(s3, prefix, &holder).await {
                tracing::warn!(sandbox = %rec.id, prefix, error = %e, "could not release an S3 lease (it lapses by itself)");
            }
        }
    }

    /// Before launch: the leases, any changes a failed save left behind,
    /// then the files from the bucket.
    pub(super) async fn s3_attach(&self, rec: &SandboxRecord) -> Result<()> {
        if s3_mounts(rec).next().is_none() {
            return Ok(());
        }
        self.s3_lease_all(rec).await?;
        let result = self.s3_restore_all(rec).await;
        if result.is_err() {
            self.s3_release_all(rec).await;
        }
        result
    }

    async fn s3_restore_all(&self, rec: &SandboxRecord) -> Result<()> {
        let s3 = bucket()?;
        for (m, prefix) in s3_mounts(rec) {
            let (dir, manifest, dirty) = (self.s3_dir(rec, m), self.s3_state(rec, m, "json"), self.s3_state(rec, m, "unsaved"));
            let v = Volume { s3, prefix, dir: &dir, manifest: &manifest };
            if dirty.exists() {
                v.save().await?;
                let _ = std::fs::remove_file(&dirty);
            }
            let r = v.restore().await?;
            self.log_system(
                rec,
                &format!("S3 mount {} restored from {prefix}: {} fetched, {} unchanged", m.sandbox_path, r.transferred, r.unchanged),
            );
        }
        Ok(())
    }

    /// Saves every S3 mount. On failure the mount is marked unsaved (the
    /// next start saves before it restores, so nothing is overwritten) and
    /// the lease is kept. A mount whose lease another sandbox has taken
    /// meanwhile (this server was gone longer than the lease) is not saved:
    /// its changes conflict with the new holder's and are dropped, logged.
    pub(super) async fn s3_save_all(&self, rec: &SandboxRecord) -> Result<()> {
        if s3_mounts(rec).next().is_none() {
            return Ok(());
        }
        let s3 = bucket()?;
        let holder = self.holder(rec);
        let mut first_error = None;
        for (m, prefix) in s3_mounts(rec) {
            let (dir, manifest, dirty) = (self.s3_dir(rec, m), self.s3_state(rec, m, "json"), self.s3_state(rec, m, "unsaved"));
            let v = Volume { s3, prefix, dir: &dir, manifest: &manifest };
            let saved = match lease::acquire(s3, prefix, &holder, lease_secs()).await {
                Err(e @ S3Error::InUse { .. }) => {
                    let _ = std::fs::remove_file(&dirty);
                    self.log_system_level(rec, "error", &format!("S3 mount {} not saved, its lease was lost: {e}", m.sandbox_path));
                    continue;
                }
                Err(e) => Err(e.into()),
                Ok(()) => v.save().await,
            };
            match saved {
                Ok(r) => {
                    let _ = std::fs::remove_file(&dirty);
                    self.log_system(
                        rec,
                        &format!("S3 mount {} saved to {prefix}: {} sent, {} deleted", m.sandbox_path, r.transferred, r.deleted),
                    );
                }
                Err(e) => {
                    let _ = std::fs::write(&dirty, e.to_string());
                    self.log_system_level(rec, "error", &format!("S3 mount {} could not be saved: {e}", m.sandbox_path));
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// After the sandbox's processes are gone: save, then release.
    pub(super) async fn s3_detach(&self, rec: &SandboxRecord) -> Result<()> {
        if s3_mounts(rec).next().is_none() {
            return Ok(());
        }
        self.s3_save_all(rec).await?;
        self.s3_release_all(rec).await;
        Ok(())
    }

    /// Before a sandbox is deleted (its processes gone): a running one is
    /// saved and its leases released; a stopped one with unsaved changes
    /// takes its leases again to save them. A server without S3 (any more)
    /// only warns, so the sandbox can still be deleted.
    pub(super) async fn s3_before_delete(&self, rec: &SandboxRecord) -> Result<()> {
        if s3_mounts(rec).next().is_none() {
            return Ok(());
        }
        if let Err(e) = bucket() {
            tracing::warn!(sandbox = %rec.id, error = %e, "deleting a sandbox with S3 mounts without saving them");
            return Ok(());
        }
        let unsaved = s3_mounts(rec).any(|(m, _)| self.s3_state(rec, m, "unsaved").exists());
        match rec.status {
            SandboxStatus::Running | SandboxStatus::Provisioning => self.s3_detach(rec).await,
            _ if unsaved => {
                self.s3_lease_all(rec).await?;
                self.s3_detach(rec).await
            }
            _ => Ok(()),
        }
    }

    /// Renews the sandbox's S3 leases every third of their lifetime until
    /// stopped: while it boots and runs its hooks, before its running task
    /// exists (a TCG boot alone outlasted a 12 s lease). None without S3 mounts.
    pub(super) fn s3_keepalive(self: &Arc<Self>, rec: &SandboxRecord) -> Option<S3Keepalive> {
        s3_mounts(rec).next()?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (me, rec) = (Arc::downgrade(self), rec.clone());
        let task = tokio::spawn(async move {
            let renew = Duration::from_secs(lease_secs() / 3);
            // A renewal under way is finished before stop() returns.
            while tokio::time::timeout(renew, &mut stopped).await.is_err() {
                let Some(me) = me.upgrade() else { break };
                if let Err(e) = me.s3_lease_all(&rec).await {
                    me.log_system_level(&rec, "error", &format!("S3 lease could not be renewed: {e}"));
                }
            }
        });
        Some(S3Keepalive { stop, task })
    }

    /// Starts the background task of each running sandbox with S3 mounts
    /// that has none (after a start, or after a daemon restart).
    pub(super) fn s3_upkeep(self: &Arc<Self>) {
        let Ok(records) = self.store.list() else { return };
        for rec in records.into_iter().filter(|r| r.status == SandboxStatus::Running && s3_mounts(r).next().is_some()) {
            if tasks().lock().unwrap_or_else(|e| e.into_inner()).insert(rec.id.clone()) {
                self.spawn_s3_task(rec);
            }
        }
    }

    /// Renews the leases (a third of their lifetime) and saves every
    /// `s3_sync_seconds` (the shortest of the mounts') while the sandbox
    /// runs the same run it was started for.
    fn spawn_s3_task(self: &Arc<Self>, rec: SandboxRecord) {
        let me = Arc::downgrade(self);
        let sync_every = s3_mounts(&rec).filter_map(|(m, _)| m.s3_sync_seconds).min();
        tokio::spawn(async move {
            let renew = Duration::from_secs(lease_secs() / 3);
            let tick = sync_every.map(|s| Duration::from_secs(s.max(1)).min(renew)).unwrap_or(renew);
            let mut last_save = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(tick).await;
                let Some(me) = me.upgrade() else { break };
                let lock = me.lock_for(&rec.id);
                let _g = lock.lock().await;
                let current = match me.store.resolve(&rec.id) {
                    Ok(r) if r.status == SandboxStatus::Running && r.running_since == rec.running_since => r,
                    _ => break,
                };
                if let Err(e) = me.s3_lease_all(&current).await {
                    me.log_system_level(&current, "error", &format!("S3 lease could not be renewed: {e}"));
                }
                if sync_every.is_some_and(|s| last_save.elapsed() >= Duration::from_secs(s)) {
                    last_save = tokio::time::Instant::now();
                    let _ = me.s3_save_all(&current).await;
                }
            }
            tasks().lock().unwrap_or_else(|e| e.into_inner()).remove(&rec.id);
        });
    }
}

/// A launch's lease renewal ([`SandboxManager::s3_keepalive`]).
pub(super) struct S3Keepalive {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl S3Keepalive {
    /// Ends the renewals; none is under way once this returns.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

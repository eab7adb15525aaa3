//! A small pool of warm sandboxes. Launching a sandbox costs tens of
//! milliseconds (cgroup attach, network namespace, overlays, bwrap); a
//! create whose shape matches the pool's (no mounts, default network, no
//! egress policy, the default disk size) adopts an already-running sandbox
//! instead and only pays for giving it its name: hostname, limits, setup
//! hooks, start command.
//!
//! Warm sandboxes have no row in the store, so they are invisible to every
//! API. The pool refills in the background after each adoption. Warm
//! sandboxes left behind by a daemon that died are removed at startup.
//!
//! Its size follows the recent create rate: the pool aims to hold as many
//! sandboxes as pool-shaped creates arrived in the last [`DEMAND_WINDOW`],
//! never fewer than `HEYVM_POOL_SIZE` and never more than `HEYVM_POOL_MAX`
//! (the memory budget, see [`default_pool_max`]). When creates slow down
//! the extra warm sandboxes are retired, one per reaper pass.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use heyvm_types::{NetworkMode, SandboxStatus};

use super::SandboxManager;
use crate::backend::{Backend, BackendError};
use crate::error::{CoreError, Result};
use crate::ids;
use crate::record::SandboxRecord;

/// The blank record a warm sandbox is launched from (always NAT: the only
/// network a create can adopt it for).
fn blank(id: String) -> SandboxRecord {
    let name = format!("warm-{}", &id[3..]);
    let mut rec = SandboxRecord::with_defaults(id, &name);
    rec.status = SandboxStatus::Provisioning;
    rec.network = NetworkMode::Nat;
    rec
}

/// An id for [`blank`] when only a warm sandbox's limits are wanted (they
/// do not depend on the id; a fresh random one per create was wasted).
const WARM_PLACEHOLDER_ID: &str = "sb-warm";

/// How far back creates count towards the pool's size.
pub const DEMAND_WINDOW: Duration = Duration::from_secs(120);

/// What one idle warm sandbox costs the host, for the default
/// `HEYVM_POOL_MAX`. Measured (`bench/` section 7, 500 idle sandboxes):
/// its three processes 0.5 MiB PSS, its memory cgroup 0.9 MiB, the daemon
/// 5.1 MiB of RSS per sandbox; plus the kernel side of its loop-mounted
/// disk, overlays and namespaces. 12 MiB leaves room to spare.
const WARM_SANDBOX_BUDGET: u64 = 12 << 20;

/// The default `HEYVM_POOL_MAX`: warm sandboxes may use up to 1/16 of the
/// host's memory, between 4 and 256 of them (125 on a 24 GiB host).
pub fn default_pool_max() -> usize {
    ((super::quota::host_memory() / 16 / WARM_SANDBOX_BUDGET) as usize).clamp(4, 256)
}

impl SandboxManager {
    pub fn warm_pool_len(&self) -> usize {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// How many warm sandboxes the pool aims for now: the pool-shaped
    /// creates of the last [`DEMAND_WINDOW`], within the configured bounds.
    pub fn pool_target(&self) -> usize {
        if self.config.pool_size == 0 {
            return 0;
        }
        let recent = {
            let mut d = self.pool_demand.lock().unwrap_or_else(|e| e.into_inner());
            while d.front().is_some_and(|t| t.elapsed() > DEMAND_WINDOW) {
                d.pop_front();
            }
            d.len()
        };
        recent.clamp(self.config.pool_size, self.config.pool_max.max(self.config.pool_size))
    }

    /// Counts a create the pool could have served towards its size.
    fn note_demand(&self) {
        let mut d = self.pool_demand.lock().unwrap_or_else(|e| e.into_inner());
        d.push_back(Instant::now());
        // Never more remembered than the pool could use.
        while d.len() > self.config.pool_max.max(self.config.pool_size) {
            d.pop_front();
        }
    }

    /// Retires one warm sandbox beyond the current target (reaper pass).
    pub(super) async fn trim_pool(&self) {
        let extra = {
            let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            // The oldest first: it has sat unused longest.
            (p.len() > self.pool_target()).then(|| p.remove(0))
        };
        if let Some(id) = extra {
            self.discard_warm(&self.blank(id)).await;
        }
    }

    /// The backend warm sandboxes are made on: the one creates without a
    /// `backend_type` get (`HEYVM_DEFAULT_BACKEND`, else the first), so a
    /// daemon defaulting to VMs keeps VMs warm.
    fn pool_backend(&self) -> Arc<dyn Backend> {
        self.backend_for_request(None).unwrap_or_else(|_| self.backends[0].clone())
    }

    /// Whether a new sandbox can be a warm one renamed.
    pub(super) fn pool_fits(&self, rec: &SandboxRecord) -> bool {
        let backend = self.pool_backend();
        self.config.pool_size > 0
            && rec.backend_type == backend.name()
            // A VM keeps the vCPUs and RAM it booted with.
            && backend.can_adopt_limits(&blank(WARM_PLACEHOLDER_ID.into()).limits(), &rec.limits())
            && self.pool_can_rename()
            && rec.mounts.is_empty()
            && rec.network == NetworkMode::Nat
            && rec.allow_out.is_empty()
            && rec.deny_out.is_empty()
            && rec.image_digest.is_none()
            // A warm sandbox's disk has the default size; disks cannot shrink.
            && rec.disk_gb() == heyvm_types::SizeClass::default().disk_gb()
    }

    /// A live warm sandbox's id, removed from the pool; dead ones are
    /// cleaned up on the way.
    pub(super) async fn take_warm(self: &Arc<Self>) -> Option<String> {
        self.note_demand();
        loop {
            let id = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            let rec = self.blank(id.clone());
            let alive = self.liveness(&rec) == crate::backend::Liveness::Alive;
            if alive && matches!(self.agent(&rec).await, Ok(a) if a.ping().await.is_ok()) {
                return Some(id);
            }
            self.discard_warm(&rec).await;
        }
    }

    /// The oldest warm sandbox, out of the pool, if the pool keeps VMs
    /// (to make room under the running-VM quota, see `quota.rs`).
    pub(super) fn take_warm_vm(&self) -> Option<String> {
        if !self.pool_backend().is_vm() {
            return None;
        }
        let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        (!p.is_empty()).then(|| p.remove(0))
    }

    pub(super) async fn discard_warm_id(&self, id: String) {
        self.discard_warm(&self.blank(id)).await
    }

    async fn discard_warm(&self, rec: &SandboxRecord) {
        let _ = self.kill_instance(rec).await;
        self.remove_files(rec);
        let _ = self.store.release_id_range(&rec.id);
    }

    /// Whether warm sandboxes of the default backend can take a new name.
    fn pool_can_rename(&self) -> bool {
        // Only known once one runs; bubblewrap as root can, which the
        // backend says through its instances. Assume yes until a warm
        // sandbox says otherwise.
        self.pool_rename_ok.load(Ordering::SeqCst)
    }

    /// The blank record a warm sandbox is launched from (always NAT: the
    /// only network a create can adopt it for), on the default backend.
    fn blank(&self, id: String) -> SandboxRecord {
        let mut rec = blank(id);
        rec.backend_type = self.pool_backend().name().to_string();
        rec
    }

    /// Tops the pool up to its target in the background (one launch at a
    /// time: on a small host parallel launches only slow the creates that
    /// are being served meanwhile).
    pub(super) fn refill_pool(self: &Arc<Self>) {
        let off = self.config.pool_size == 0 || !self.pool_can_rename() || self.pool_closed.load(Ordering::SeqCst);
        if off || self.pool_filling.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            while !me.pool_closed.load(Ordering::SeqCst) && me.pool.lock().unwrap_or_else(|e| e.into_inner()).len() < me.pool_target() {
                match me.launch_warm().await {
                    Ok(id) if me.pool_closed.load(Ordering::SeqCst) => me.discard_warm(&me.blank(id)).await,
                    Ok(id) => me.pool.lock().unwrap_or_else(|e| e.into_inner()).push(id),
                    Err(e @ CoreError::QuotaExceeded(_)) => {
                        tracing::debug!(error = %e, "no room for a warm sandbox; pool paused");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not launch a warm sandbox; pool paused");
                        break;
                    }
                }
            }
            me.pool_filling.store(false, Ordering::SeqCst);
        });
    }

    async fn launch_warm(self: &Arc<Self>) -> Result<String> {
        let rec = self.blank(ids::new_sandbox_id());
        let backend = self.backend_for(&rec)?;
        // A warm VM takes a running VM's place; it never pushes another out.
        let _vm = self.reserve_vm(backend.as_ref(), &rec.id, false).await?;
        prepare_off_thread(&backend, &self.spec(&rec)).await?;
        if let Err(e) = self.launch_instance(&rec).await {
            self.discard_warm(&rec).await;
            return Err(CoreError::Backend(BackendError::Failed(format!("warm sandbox did not come up: {e}"))));
        }
        if !self.running(&rec.id).is_some_and(|r| r.instance.supports_rename() || r.instance.renames_in_guest()) {
            // This backend cannot rename a running sandbox here: no pool.
            self.pool_rename_ok.store(false, Ordering::SeqCst);
            self.discard_warm(&rec).await;
            return Err(CoreError::Backend(BackendError::Unsupported {
                backend: "default",
                what: "renaming running sandboxes (warm pool off)",
            }));
        }
        Ok(rec.id)
    }

    /// Stops and removes every warm sandbox and launches no more (daemon
    /// shutdown).
    pub async fn close_pool(&self) {
        self.pool_closed.store(true, Ordering::SeqCst);
        // A warm sandbox still launching is in no list yet: wait for the
        // refill to finish it (it discards what it launches once closed),
        // or it would outlive the daemon. Bounded by the start timeout.
        let deadline = tokio::time::Instant::now() + self.config.start_timeout + Duration::from_secs(5);
        while self.pool_filling.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ids: Vec<String> = std::mem::take(&mut *self.pool.lock().unwrap_or_else(|e| e.into_inner()));
        for id in ids {
            self.discard_warm(&self.blank(id)).await;
        }
        for b in &self.backends {
            b.close().await;
        }
    }

    /// Removes sandbox directories that have no record: warm sandboxes of
    /// a daemon that died (run at startup, before anything is created).
    pub(super) async fn remove_orphans(&self) -> Result<()> {
        let known: std::collections::HashSet<String> = self.store.list()?.into_iter().map(|r| r.id).collect();
        let Ok(dir) = std::fs::read_dir(self.data.sandboxes_dir()) else { return Ok(()) };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if ids::looks_like_id(&name) && !known.contains(&name) {
                tracing::info!(sandbox = %name, "removing a warm sandbox left by an earlier daemon");
                self.discard_warm(&self.blank(name)).await;
            }
        }
        Ok(())
    }
}

/// [`Backend::prepare`] (files, a disk) on a blocking thread: it takes
/// milliseconds of file system work that would otherwise stall one of the
/// runtime's few worker threads.
pub(super) async fn prepare_off_thread(backend: &Arc<dyn Backend>, spec: &crate::backend::LaunchSpec) -> Result<()> {
    let (b, s) = (backend.clone(), spec.clone());
    tokio::task::spawn_blocking(move || b.prepare(&s))
        .await
        .map_err(|e| CoreError::Corrupt(format!("preparing the sandbox panicked: {e}")))?
        .map_err(CoreError::from)
}

//! Idle stop and transparent resume.
//!
//! Every exec, file call, shell and proxy connection marks its sandbox used
//! ([`SandboxManager::prepare_use`]). A running sandbox with an idle timeout
//! (its own `idle_timeout_seconds`, else `HEYVM_IDLE_TIMEOUT_SECS`; 0 or
//! neither = never) that has not been used for that long, and has no exec
//! in flight, is stopped with `stop_reason: "idle"`. The next use of a
//! sandbox stopped for idleness (or of any stopped sandbox with
//! `auto_resume`) starts it again first; its files are where they were.
//!
//! Last-use times live in memory (a write per exec would cost more than the
//! exec) and are saved to the record when the sandbox stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use heyvm_types::SandboxStatus;

use super::SandboxManager;
use crate::error::Result;
use crate::record::{now_secs, SandboxRecord};

/// `stop_reason` of a sandbox stopped by the idle timeout.
pub const STOP_IDLE: &str = "idle";
/// `stop_reason` of a sandbox stopped through the API or CLI.
pub const STOP_USER: &str = "user";

/// In-memory use tracking, one entry per sandbox.
#[derive(Default)]
pub struct IdleTracker {
    inner: Mutex<HashMap<String, Use>>,
}

#[derive(Default, Clone, Copy)]
struct Use {
    last: i64,
    /// Execs in flight: a sandbox running a long command is not idle.
    busy: u32,
}

impl IdleTracker {
    fn with<R>(&self, id: &str, f: impl FnOnce(&mut Use) -> R) -> R {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(id.to_string()).or_default())
    }

    pub fn touch(&self, id: &str) {
        self.with(id, |u| u.last = now_secs());
    }

    fn last(&self, id: &str) -> Option<i64> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).get(id).map(|u| u.last).filter(|&t| t > 0)
    }

    fn busy(&self, id: &str) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).get(id).is_some_and(|u| u.busy > 0)
    }

    /// Drops entries of sandboxes that no longer exist.
    fn retain(&self, live: &std::collections::HashSet<&str>) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).retain(|id, _| live.contains(id.as_str()));
    }
}

/// Held while an exec runs; counts the sandbox as busy.
pub struct BusyGuard {
    mgr: std::sync::Weak<SandboxManager>,
    id: String,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if let Some(mgr) = self.mgr.upgrade() {
            mgr.idle.with(&self.id, |u| {
                u.busy = u.busy.saturating_sub(1);
                u.last = now_secs();
            });
        }
    }
}

impl SandboxManager {
    /// When the sandbox was last used (exec, files, shell, proxy), if known.
    pub fn last_used_at(&self, rec: &SandboxRecord) -> Option<i64> {
        self.idle.last(&rec.id).max(rec.last_used_at)
    }

    /// The idle timeout that applies to `rec`, in seconds (None = never).
    pub fn idle_timeout_of(&self, rec: &SandboxRecord) -> Option<u64> {
        rec.idle_timeout_seconds.or(self.config.idle_timeout_secs).filter(|&t| t > 0)
    }

    /// Marks the sandbox used and, if it was stopped for idleness (or is
    /// stopped with `auto_resume`), starts it first. Returns its record.
    pub async fn prepare_use(self: &Arc<Self>, key: &str) -> Result<SandboxRecord> {
        let rec = self.store.resolve(key)?;
        self.idle.touch(&rec.id);
        if !wants_resume(&rec) {
            return Ok(rec);
        }
        let lock = self.lock_for(&rec.id);
        let _guard = lock.lock().await;
        let rec = self.store.resolve(&rec.id)?;
        if !wants_resume(&rec) {
            return Ok(rec);
        }
        tracing::info!(sandbox = %rec.id, reason = ?rec.stop_reason, "resuming a stopped sandbox on use");
        self.log_system(&rec, "sandbox resumed on use");
        let rec = self.start_locked(rec).await?;
        self.idle.touch(&rec.id);
        Ok(rec)
    }

    /// Counts the sandbox (by id) as in use until the guard is dropped: an
    /// exec, an attached shell or an open proxy connection.
    pub fn busy_guard(self: &Arc<Self>, id: &str) -> BusyGuard {
        self.idle.with(id, |u| {
            u.busy += 1;
            u.last = now_secs();
        });
        BusyGuard { mgr: Arc::downgrade(self), id: id.to_string() }
    }

    /// One pass of the idle reaper: stops running sandboxes idle for longer
    /// than their timeout.
    pub async fn stop_idle_once(self: &Arc<Self>) -> Result<()> {
        let now = now_secs();
        let all = self.store.list()?;
        self.idle.retain(&all.iter().map(|r| r.id.as_str()).collect());
        for rec in all {
            if rec.status != SandboxStatus::Running || self.idle.busy(&rec.id) {
                continue;
            }
            let Some(timeout) = self.idle_timeout_of(&rec) else { continue };
            let last = self.last_used_at(&rec).or(rec.running_since).unwrap_or(now);
            if now - last < timeout as i64 {
                continue;
            }
            let lock = self.lock_for(&rec.id);
            let _guard = lock.lock().await;
            let Ok(mut rec) = self.store.resolve(&rec.id) else { continue };
            if rec.status != SandboxStatus::Running || self.idle.busy(&rec.id) {
                continue;
            }
            tracing::info!(sandbox = %rec.id, idle_secs = now - last, "stopping idle sandbox");
            rec.stop_reason = Some(STOP_IDLE.into());
            rec.last_used_at = self.last_used_at(&rec);
            if let Err(e) = self.stop_locked(rec, false).await {
                tracing::warn!(error = %e, "idle stop failed");
            }
        }
        Ok(())
    }
}

fn wants_resume(rec: &SandboxRecord) -> bool {
    rec.status == SandboxStatus::Stopped && (rec.stop_reason.as_deref() == Some(STOP_IDLE) || rec.auto_resume)
}

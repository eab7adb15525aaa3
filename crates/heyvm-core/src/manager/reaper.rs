//! Background upkeep: TTL expiry, noticing sandboxes that died, and
//! reconciling state after a daemon restart.

use std::sync::Arc;

use heyvm_types::SandboxStatus;

use super::SandboxManager;
use crate::backend::Liveness;
use crate::error::Result;
use crate::record::{now_secs, SandboxRecord};

impl SandboxManager {
    /// On daemon start: sandboxes whose processes survived stay `running`;
    /// anything else recorded as running or provisioning becomes `failed`
    /// with the reason, so nothing stays in a transitional state.
    pub(super) async fn reconcile(self: &Arc<Self>) -> Result<()> {
        self.fail_interrupted_operations()?;
        for mut rec in self.store.list()? {
            if !matches!(rec.status, SandboxStatus::Running | SandboxStatus::Provisioning) {
                continue;
            }
            let alive = match self.agent(&rec).await {
                Ok(agent) => agent.ping().await.is_ok(),
                Err(_) => false,
            };
            match (rec.status, alive) {
                (SandboxStatus::Running, true) => tracing::info!(sandbox = %rec.id, "sandbox still running"),
                (SandboxStatus::Provisioning, _) => {
                    let _ = self.kill_instance(&rec).await;
                    self.mark_failed(&mut rec, "the daemon stopped while the sandbox was starting; start it again")?;
                }
                _ => {
                    let _ = self.kill_instance(&rec).await;
                    self.mark_failed(
                        &mut rec,
                        "the sandbox's processes were gone when the daemon restarted (host reboot or crash); start it again",
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Runs the reaper loop until the process exits: TTLs and liveness,
    /// then idle stops, on one timer.
    pub fn spawn_reaper(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.config.reap_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.reap_once().await {
                    tracing::warn!(error = %e, "reaper pass failed");
                }
                if let Err(e) = me.stop_idle_once().await {
                    tracing::warn!(error = %e, "idle reaper pass failed");
                }
                me.s3_upkeep();
                me.trim_pool().await;
            }
        });
    }

    pub async fn reap_once(self: &Arc<Self>) -> Result<()> {
        let now = now_secs();
        // Archives: swept once a minute (or once per TTL if that is shorter).
        let sweep_every = self.config.archive_ttl.min(std::time::Duration::from_secs(60));
        let due = {
            let mut last = self.last_archive_sweep.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.elapsed() >= sweep_every;
            if due {
                *last = std::time::Instant::now();
            }
            due
        };
        if due {
            let (me, ttl) = (self.clone(), self.config.archive_ttl);
            let _ = tokio::task::spawn_blocking(move || me.expire_archives(ttl)).await;
        }
        for rec in self.store.list()? {
            if rec.status != SandboxStatus::Running {
                continue;
            }
            if rec.ttl_seconds.is_some() && rec.ttl_remaining(now) == Some(0) {
                // The list is a snapshot and each delete can take seconds
                // (a VM shuts down): decide again on the current record.
                let expired = |r: &SandboxRecord| r.status == SandboxStatus::Running && r.ttl_remaining(now_secs()) == Some(0);
                if self.delete_if(&rec.id, expired).await?.is_some() {
                    tracing::info!(sandbox = %rec.id, "TTL expired; deleted");
                }
                continue;
            }
            // Only a sandbox known to be dead is failed: `Unknown` (the
            // check itself failed) leaves it alone.
            if self.liveness(&rec) == Liveness::Dead {
                // Re-check under the lock: a stop may be in progress.
                let lock = self.lock_for(&rec.id);
                let Ok(_g) = lock.try_lock() else { continue };
                let mut fresh = self.store.resolve(&rec.id)?;
                if fresh.status == SandboxStatus::Running && self.liveness(&fresh) == Liveness::Dead {
                    // Ask the instance why before killing it forgets.
                    let why = self.running(&fresh.id).and_then(|r| r.instance.failure_reason());
                    let _ = self.kill_instance(&fresh).await;
                    let reason = match why {
                        Some(w) => format!("the sandbox's processes exited unexpectedly: {w}"),
                        None => "the sandbox's processes exited unexpectedly".to_string(),
                    };
                    self.mark_failed(&mut fresh, &reason)?;
                }
            }
        }
        Ok(())
    }
}

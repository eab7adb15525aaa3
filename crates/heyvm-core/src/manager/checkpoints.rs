//! Checkpoints, restore and fork. The backend does the storage (a VM: its
//! memory and disks; bubblewrap: its files); here are the rules: which
//! states allow what, the per-sandbox lock, the latest checkpoint as the
//! default, and what a resumed VM must change (clock, RNG, hostname,
//! address) before anyone uses it.

use std::sync::Arc;

use heyvm_types::{CheckpointInfo, CreateSandboxRequest, ForkRequest, ProcessFate, RestoreResponse, SandboxStatus};

use super::start_failure::StartFailure;
use super::SandboxManager;
use crate::backend::BackendError;
use crate::error::{CoreError, Result};
use crate::record::SandboxRecord;

/// A backend's "cannot" becomes 409 `checkpoint_unsupported` with its reason.
fn unsupported(e: BackendError) -> CoreError {
    match e {
        BackendError::Unsupported { backend, what } => {
            CoreError::CheckpointUnsupported(format!("the {backend} backend cannot do this: {what}"))
        }
        BackendError::NotRunning => CoreError::Conflict("the sandbox must be running: a VM checkpoint includes its memory".into()),
        BackendError::Conflict(why) => CoreError::Conflict(why),
        other => CoreError::Backend(other),
    }
}

impl SandboxManager {
    pub async fn checkpoint(self: &Arc<Self>, key: &str, name: Option<String>) -> Result<CheckpointInfo> {
        let id = self.store.resolve(key)?.id;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let rec = self.store.resolve(&id)?;
        if rec.status == SandboxStatus::Provisioning {
            return Err(CoreError::Conflict(format!("sandbox {id} is starting; checkpoint it once it runs")));
        }
        let name = name.unwrap_or_else(|| format!("ck-{}", crate::record::now_secs()));
        if !CheckpointInfo::valid_name(&name) {
            return Err(CoreError::invalid(format!("invalid checkpoint name {name:?} (1-64 of letters, digits, '.', '_', '-')")));
        }
        let backend = self.backend_for(&rec)?;
        if backend.checkpoints(&self.spec(&rec)).iter().any(|c| c.name == name) {
            return Err(CoreError::Conflict(format!("checkpoint '{name}' already exists")));
        }
        let info = backend.checkpoint(&self.spec(&rec), rec.status == SandboxStatus::Running, &name).await.map_err(unsupported)?;
        self.log_system(&rec, &format!("checkpoint '{}' taken ({} bytes, memory: {})", info.name, info.size_bytes, info.memory));
        Ok(info)
    }

    pub async fn checkpoints(&self, key: &str) -> Result<Vec<CheckpointInfo>> {
        let rec = self.store.resolve(key)?;
        Ok(self.backend_for(&rec)?.checkpoints(&self.spec(&rec)))
    }

    pub async fn delete_checkpoint(&self, key: &str, name: &str) -> Result<()> {
        let id = self.store.resolve(key)?.id;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let rec = self.store.resolve(&id)?;
        let backend = self.backend_for(&rec)?;
        let spec = self.spec(&rec);
        if !backend.checkpoints(&spec).iter().any(|c| c.name == name) {
            return Err(CoreError::CheckpointNotFound(name.to_string()));
        }
        backend.delete_checkpoint(&spec, name).map_err(unsupported)
    }

    /// The named checkpoint, or the latest.
    fn pick_checkpoint(&self, rec: &SandboxRecord, name: Option<&str>) -> Result<CheckpointInfo> {
        let all = self.backend_for(rec)?.checkpoints(&self.spec(rec));
        match name {
            Some(n) => all.into_iter().find(|c| c.name == n).ok_or_else(|| CoreError::CheckpointNotFound(n.to_string())),
            None => all.into_iter().last().ok_or_else(|| CoreError::CheckpointNotFound(format!("(latest; sandbox {} has none)", rec.id))),
        }
    }

    /// Puts the sandbox back to a checkpoint and runs it.
    pub async fn restore(self: &Arc<Self>, key: &str, name: Option<&str>) -> Result<RestoreResponse> {
        let id = self.store.resolve(key)?.id;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let mut rec = self.store.resolve(&id)?;
        let checkpoint = self.pick_checkpoint(&rec, name)?;
        if rec.status == SandboxStatus::Running {
            // The checkpoint replaces everything: no graceful shutdown.
            rec = self.stop_locked(rec, true).await?;
        } else {
            self.kill_instance(&rec).await?;
        }
        let backend = self.backend_for(&rec)?;
        let spec = self.spec(&rec);
        let processes = backend.stage_checkpoint(&spec, &checkpoint.name, &spec).await.map_err(unsupported)?;
        self.log_system(&rec, &format!("restoring checkpoint '{}'", checkpoint.name));
        let rec = self.resume_locked(rec, processes).await?;
        Ok(RestoreResponse { sandbox: self.info(&rec), checkpoint, processes })
    }

    /// A new sandbox from a checkpoint of `key` (taken now if none is named
    /// and none exists), with the same settings.
    pub async fn fork(self: &Arc<Self>, key: &str, req: ForkRequest) -> Result<RestoreResponse> {
        let src = self.store.resolve(key)?;
        // Checked again by the create; first so that a fork with no room
        // takes no checkpoint.
        drop(self.reserve_sandbox()?);
        let checkpoint = match (req.checkpoint.as_deref(), self.pick_checkpoint(&src, None)) {
            (Some(n), _) => self.pick_checkpoint(&src, Some(n))?,
            (None, Ok(latest)) => latest,
            (None, Err(_)) => self.checkpoint(key, Some(format!("fork-{}", crate::record::now_secs()))).await?,
        };
        let create = CreateSandboxRequest {
            name: req.name,
            sandbox_type: Some(src.sandbox_type.clone()),
            image: Some(src.image.clone()),
            backend_type: Some(src.backend_type.clone()),
            size_class: Some(src.size_class),
            ttl_seconds: src.ttl_seconds,
            start_command: src.start_command.clone(),
            working_directory: Some(src.working_directory.clone()),
            env_vars: Some(src.env_vars.clone()),
            mounts: Some(src.mounts.clone()),
            network: Some(src.network.to_string()),
            allow_out: Some(src.allow_out.clone()),
            deny_out: Some(src.deny_out.clone()),
            no_start: Some(true),
            ..Default::default()
        };
        let created = self.create(create).await?;
        let lock = self.lock_for(&created.id);
        let _guard = lock.lock().await;
        let mut rec = self.store.resolve(&created.id)?;
        let backend = self.backend_for(&rec)?;
        // Checked before the checkpoint is copied: a fork with no room to
        // run leaves nothing behind.
        let _vm_slot = match self.reserve_vm(backend.as_ref(), &rec.id, true).await {
            Ok(s) => s,
            Err(e) => {
                drop(_guard);
                let _ = self.delete(&created.id).await;
                return Err(e);
            }
        };
        let staged = backend.stage_checkpoint(&self.spec(&src), &checkpoint.name, &self.spec(&rec)).await.map_err(unsupported);
        let processes = match staged {
            Ok(p) => p,
            Err(e) => {
                drop(_guard);
                let _ = self.delete(&created.id).await;
                return Err(e);
            }
        };
        // The files come from the source, which already ran its setup hooks.
        rec.hooks_done = true;
        self.store.update(&rec)?;
        self.log_system(&rec, &format!("forked from {} checkpoint '{}'", src.id, checkpoint.name));
        let rec = self.resume_locked(rec, processes).await?;
        Ok(RestoreResponse { sandbox: self.info(&rec), checkpoint, processes })
    }

    /// Launches a sandbox whose files (and maybe memory) a checkpoint staged.
    /// Resumed processes keep running: no hooks, no start command; the
    /// guest takes a fresh clock, RNG seed, name and address first.
    async fn resume_locked(self: &Arc<Self>, mut rec: SandboxRecord, processes: ProcessFate) -> Result<SandboxRecord> {
        if processes == ProcessFate::Restarted {
            return self.start_locked(rec).await;
        }
        let _vm_slot = self.reserve_vm(self.backend_for(&rec)?.as_ref(), &rec.id, true).await?;
        rec.status = SandboxStatus::Provisioning;
        rec.error_message = None;
        self.store.update(&rec)?;
        let reset = async {
            self.launch_instance(&rec).await?;
            let ip = self.running(&rec.id).and_then(|r| r.instance.guest_ip());
            let gateway = ip.as_deref().and_then(gateway_of);
            let mut seed = [0u8; 32];
            getrandom::getrandom(&mut seed).map_err(|e| StartFailure::Entropy(e.to_string()))?;
            let seed: String = seed.iter().map(|b| format!("{b:02x}")).collect();
            let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
            let agent = self.agent(&rec).await?;
            agent.reset_identity(now_ms, &rec.slug, seed, ip.map(|i| format!("{i}/30")), gateway).await?;
            Ok::<_, StartFailure>(())
        };
        if let Err(reason) = reset.await {
            let reason = reason.to_string();
            let _ = self.kill_instance(&rec).await;
            self.mark_failed(&mut rec, &reason)?;
            return Err(CoreError::SandboxFailed { id: rec.id.clone(), reason });
        }
        rec.status = SandboxStatus::Running;
        rec.running_since = Some(crate::record::now_secs());
        self.store.update(&rec)?;
        self.log_system(&rec, "sandbox running (resumed from a checkpoint)");
        Ok(rec)
    }
}

/// Sandbox networks are /30s with the host end just below the guest.
fn gateway_of(ip: &str) -> Option<String> {
    let a: std::net::Ipv4Addr = ip.parse().ok()?;
    Some(std::net::Ipv4Addr::from(u32::from(a).checked_sub(1)?).to_string())
}

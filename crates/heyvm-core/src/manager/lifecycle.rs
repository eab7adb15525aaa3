//! create, start, stop, restart, force-stop, delete, update.

use std::sync::Arc;
use std::time::Duration;

use heyvm_types::{CreateSandboxRequest, SandboxInfo, SandboxStatus, UpdateSandboxRequest, WORKSPACE_PATH};

use super::start_failure::StartFailure;
use super::transitions::{self, Action};
use super::{validate, SandboxManager};
use crate::error::{CoreError, Result};
use crate::ids;
use crate::record::{now_secs, SandboxRecord};

impl SandboxManager {
    pub async fn create(self: &Arc<Self>, req: CreateSandboxRequest) -> Result<SandboxInfo> {
        let mut ph = super::phases::Phases::start();
        let id = ids::new_sandbox_id();
        let name = match req.name {
            Some(n) => {
                ids::validate_name(&n)?;
                n
            }
            None => format!("sandbox-{}", &id[3..]),
        };
        let backend = self.backend_for_request(req.backend_type.as_deref())?;
        // Held from here (an image pull may take a while) to the insert.
        let slot = self.reserve_sandbox()?;
        let mut env_vars = req.env_vars.unwrap_or_default();
        validate::env(&env_vars)?;
        // Pulled before anything is recorded: an image that cannot be had
        // leaves no sandbox behind.
        // The backend's own default (`host`, or a VM's image by the name
        // its sandboxes report) is no OCI reference.
        let default_image = |i: &str| super::is_host_image(Some(i)) || backend.default_image() == Some(i);
        let image = match req.image.as_deref() {
            Some(i) if !default_image(i) => {
                if !backend.supports_images() {
                    return Err(CoreError::Backend(crate::backend::BackendError::Unsupported {
                        backend: backend.name(),
                        what: "OCI images (create it without `image`, or on bubblewrap)",
                    }));
                }
                let started = std::time::Instant::now();
                let img = self.resolve_image(i, heyvm_images::no_progress()).await?;
                tracing::debug!(image = %i, us = started.elapsed().as_micros() as u64, "create: image resolved");
                Some(super::images::ImageDefaults::from(&img))
            }
            _ => None,
        };
        if let Some(img) = &image {
            // The request's own values win over the image's.
            let mut merged = img.env.clone();
            merged.extend(env_vars);
            env_vars = merged;
        }
        let working_directory = match (req.working_directory, image.as_ref().and_then(|i| i.working_dir.clone())) {
            (Some(w), _) => validate::sandbox_path(&w, "working_directory")?,
            (None, Some(w)) => w,
            (None, None) => WORKSPACE_PATH.to_string(),
        };
        if let Some(c) = &req.start_command {
            validate::command_text(c, "start_command")?;
        }
        let setup_hooks = req.setup_hooks.unwrap_or_default();
        for h in &setup_hooks {
            validate::command_text(h, "setup hook")?;
        }
        if let Some(t) = req.ttl_seconds {
            validate::ttl(t)?;
        }
        if let Some(a) = &req.archive_id {
            self.check_archive(a)?;
        }
        let region = super::archives::region(req.region.as_deref())?;
        let mounts = validate::mounts(&req.mounts.unwrap_or_default())?;
        for m in &mounts {
            validate::outside_data_dir(m, self.data.root())?;
        }
        validate::backend_mounts(backend.as_ref(), &mounts)?;
        if req.archive_id.is_some() && mounts.iter().any(|m| m.sandbox_path == WORKSPACE_PATH) {
            return Err(CoreError::invalid("archive_id cannot be combined with a mount at /workspace (the archive is unpacked there)"));
        }
        let rec = SandboxRecord {
            slug: ids::slugify(&name),
            id,
            name,
            status: SandboxStatus::Provisioning,
            sandbox_type: validate::sandbox_type(req.sandbox_type.as_deref())?,
            image: req.image.filter(|i| !default_image(i)).unwrap_or_else(|| super::HOST_IMAGE.into()),
            backend_type: backend.name().to_string(),
            size_class: req.size_class.unwrap_or_default(),
            ttl_seconds: req.ttl_seconds,
            ttl_used_secs: 0,
            running_since: None,
            created_at: now_secs(),
            start_command: req.start_command,
            working_directory,
            env_vars,
            setup_hooks,
            mounts,
            open_ports: validate::ports(&req.open_ports.unwrap_or_default())?,
            error_message: None,
            hooks_done: false,
            network: validate::network(req.network.as_deref())?,
            allow_out: validate::egress(&req.allow_out.unwrap_or_default(), "allow_out")?,
            deny_out: validate::egress(&req.deny_out.unwrap_or_default(), "deny_out")?,
            archive_id: req.archive_id,
            region,
            idle_timeout_seconds: req.idle_timeout_seconds,
            auto_resume: req.auto_resume.unwrap_or(false),
            stop_reason: None,
            last_used_at: None,
            image_digest: image.as_ref().map(|i| i.digest.clone()),
            image_user: image.and_then(|i| i.user),
            disk_size_gb: req.disk_size_gb.map(super::disk::valid_size).transpose()?,
        };
        let mut rec = rec;
        // Adopt a warm sandbox when the request fits the pool's shape.
        let pool_shaped = req.no_start != Some(true) && self.pool_fits(&rec);
        let warm = if pool_shaped { self.take_warm().await } else { None };
        if let Some(id) = &warm {
            rec.id = id.clone();
        }
        // A VM about to boot needs room among the running ones (a warm one
        // already has it); held until it runs.
        let _vm_slot = match req.no_start {
            Some(true) => None,
            _ => match self.reserve_vm(backend.as_ref(), &rec.id, true).await {
                Ok(s) => Some(s),
                Err(e) => {
                    if warm.is_some() {
                        self.discard_warm_id(rec.id.clone()).await;
                    }
                    return Err(e);
                }
            },
        };
        ph.mark("validated");
        let lock = self.lock_for(&rec.id);
        let _guard = lock.lock().await;
        // S3 mounts: 409 when another sandbox has a prefix, before anything is recorded.
        self.s3_lease_all(&rec).await?;
        let inserted = self.insert_reserved(slot, &rec);
        ph.mark("inserted");
        if let Err(e) = inserted {
            self.s3_release_all(&rec).await;
            if warm.is_some() {
                let _ = self.kill_instance(&rec).await;
                self.remove_files(&rec);
                self.refill_pool();
            }
            return Err(e);
        }
        let spec = self.spec(&rec);
        let mut prepared = if warm.is_some() { Ok(()) } else { super::pool::prepare_off_thread(&backend, &spec).await };
        ph.mark("prepared");
        if let (Ok(()), Some(a)) = (&prepared, rec.archive_id.clone()) {
            // Files in place before setup hooks and the start command run.
            let (me, r) = (self.clone(), rec.clone());
            prepared = tokio::task::spawn_blocking(move || me.unpack_archive(&r, &a))
                .await
                .unwrap_or_else(|e| Err(CoreError::Corrupt(format!("archive unpacking panicked: {e}"))));
        }
        if let Err(e) = prepared {
            self.s3_release_all(&rec).await;
            let _ = self.store.delete(&rec.id);
            self.remove_files(&rec);
            let _ = self.store.release_id_range(&rec.id);
            return Err(e);
        }
        self.log_system(&rec, &format!("sandbox created (size {}, backend {})", rec.size_class, rec.backend_type));
        if let Some(d) = &rec.image_digest {
            self.log_system(&rec, &format!("image {} ({d})", rec.image));
        }
        if req.no_start == Some(true) {
            self.s3_release_all(&rec).await;
            let mut rec = rec;
            rec.status = SandboxStatus::Stopped;
            self.store.update(&rec)?;
            return Ok(self.info(&rec));
        }
        let rec = if warm.is_some() {
            let adopted = self.adopt_warm(rec).await;
            // Refill once this create is done, not while it competes for CPU.
            self.refill_pool();
            adopted?
        } else {
            let started = self.start_locked(rec).await;
            if pool_shaped {
                // The pool ran dry: demand grew, so it grows too.
                self.refill_pool();
            }
            started?
        };
        ph.mark("started");
        let info = self.info(&rec);
        ph.mark("info");
        ph.log(&rec.id, "create");
        Ok(info)
    }

    /// Gives a running warm sandbox `rec`'s identity and finishes its boot.
    async fn adopt_warm(self: &Arc<Self>, mut rec: SandboxRecord) -> Result<SandboxRecord> {
        let renamed = match self.running(&rec.id) {
            Some(r) => match self.rename_running(&rec, &r.instance).await {
                Ok(()) => r.instance.set_limits(&rec.limits()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            None => Err("the warm sandbox is gone".to_string()),
        };
        match renamed {
            Ok(()) => self.finish_start(rec).await,
            Err(reason) => {
                let reason = reason.to_string();
                let _ = self.kill_instance(&rec).await;
                self.mark_failed(&mut rec, &reason)?;
                Err(CoreError::SandboxFailed { id: rec.id.clone(), reason })
            }
        }
    }

    pub async fn start(self: &Arc<Self>, key: &str) -> Result<SandboxInfo> {
        let id = self.store.resolve(key)?.id;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let rec = self.store.resolve(&id)?;
        transitions::check(&rec, Action::Start)?;
        let rec = self.start_locked(rec).await?;
        Ok(self.info(&rec))
    }

    pub async fn stop(self: &Arc<Self>, key: &str, force: bool) -> Result<SandboxInfo> {
        let id = self.store.resolve(key)?.id;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let rec = self.store.resolve(&id)?;
        transitions::check(&rec, if force { Action::ForceStop } else { Action::Stop })?;
        let rec = self.stop_locked(rec, force).await?;
        Ok(self.info(&rec))
    }

    pub async fn restart(self: &Arc<Self>, key: &str) -> Result<SandboxInfo> {
        let id = self.store.resolve(key)?.id;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let mut rec = self.store.resolve(&id)?;
        transitions::check(&rec, Action::Restart)?;
        if rec.status == SandboxStatus::Running {
            rec = self.stop_locked(rec, false).await?;
        }
        let rec = self.start_locked(rec).await?;
        Ok(self.info(&rec))
    }

    /// Removes the sandbox: processes, cgroups, mounts and files.
    pub async fn delete(self: &Arc<Self>, key: &str) -> Result<SandboxInfo> {
        Ok(self.delete_if(key, |_| true).await?.expect("an unconditional delete deletes"))
    }

    /// Deletes the sandbox if `still` holds for its record as read under
    /// the sandbox's lock (`None` when it no longer does). For deciders
    /// working from an older read, such as the reaper's list: a PATCH or a
    /// stop may have come in between.
    pub(super) async fn delete_if(self: &Arc<Self>, key: &str, still: impl FnOnce(&SandboxRecord) -> bool) -> Result<Option<SandboxInfo>> {
        let mut ph = super::phases::Phases::start();
        let id = self.store.resolve(key)?.id;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let rec = self.store.resolve(&id)?;
        if !still(&rec) {
            return Ok(None);
        }
        ph.mark("locked");
        self.kill_instance(&rec).await?;
        ph.mark("killed");
        // S3 mounts keep their files in the bucket: save what is unsaved
        // first, and keep the sandbox (stopped) when that fails.
        if let Err(e) = self.s3_before_delete(&rec).await {
            let mut rec = rec;
            if rec.status == SandboxStatus::Running {
                rec.end_running_period(now_secs());
                rec.status = SandboxStatus::Stopped;
                self.store.update(&rec)?;
            }
            return Err(e);
        }
        self.store.delete(&rec.id)?;
        ph.mark("record deleted");
        self.remove_files_off_thread(&rec).await;
        ph.mark("files removed");
        self.store.release_id_range(&rec.id)?;
        ph.mark("range released");
        ph.log(&rec.id, "delete");
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).remove(&rec.id);
        self.cpu_samples.lock().unwrap_or_else(|e| e.into_inner()).remove(&rec.id);
        self.urls.lock().unwrap_or_else(|e| e.into_inner()).remove(&rec.id);
        self.forget_endpoints(&rec.id);
        let mut info = self.info(&rec);
        info.status = SandboxStatus::Stopped;
        Ok(Some(info))
    }

    pub async fn update(self: &Arc<Self>, key: &str, req: UpdateSandboxRequest) -> Result<SandboxInfo> {
        let id = self.store.resolve(key)?.id;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let mut rec = self.store.resolve(&id)?;
        let mut restart_service = false;
        let old_slug = rec.slug.clone();
        if let Some(n) = req.name {
            ids::validate_name(&n)?;
            rec.slug = ids::slugify(&n);
            rec.name = n;
        }
        if let Some(c) = req.start_command {
            validate::command_text(&c, "start_command")?;
            restart_service = rec.start_command.as_deref() != Some(c.as_str());
            rec.start_command = Some(c);
        }
        if let Some(w) = req.working_directory {
            rec.working_directory = validate::sandbox_path(&w, "working_directory")?;
        }
        if let Some(env) = req.env_vars {
            validate::env(&env)?;
            // Merged into the existing variables; new execs see them at once.
            rec.env_vars.extend(env);
        }
        if let Some(p) = req.open_ports {
            rec.open_ports = validate::ports(&p)?;
        }
        if req.clear_ttl == Some(true) {
            rec.ttl_seconds = None;
        }
        if let Some(t) = req.ttl_seconds {
            validate::ttl(t)?;
            rec.ttl_seconds = Some(t);
        }
        let resized = req.size_class.is_some_and(|s| s != rec.size_class);
        let disk_before = rec.disk_gb();
        if let Some(s) = req.size_class {
            rec.size_class = s;
        }
        let disk_grows = super::disk::apply_update(&mut rec, disk_before, req.disk_size_gb)?;
        if let Some(t) = req.idle_timeout_seconds {
            rec.idle_timeout_seconds = Some(t);
        }
        if let Some(a) = req.auto_resume {
            rec.auto_resume = a;
        }
        // First, so that a disk that cannot grow leaves the record as it was.
        if disk_grows {
            self.grow_disk(&rec).await?;
        }
        self.store.update(&rec)?;
        if let Some(r) = self.running(&rec.id).filter(|_| rec.status == SandboxStatus::Running) {
            // The hostname follows the name (otherwise from the next start).
            if rec.slug != old_slug && (r.instance.supports_rename() || r.instance.renames_in_guest()) {
                self.rename_running(&rec, &r.instance).await?;
            }
            if resized {
                r.instance.set_limits(&rec.limits())?;
            }
        }
        if rec.status == SandboxStatus::Running && restart_service {
            self.start_service(&rec).await?;
        }
        Ok(self.info(&rec))
    }

    /// Launches the sandbox, runs pending setup hooks and the start command.
    /// On failure the sandbox is left `failed` with the reason.
    pub(super) async fn start_locked(self: &Arc<Self>, mut rec: SandboxRecord) -> Result<SandboxRecord> {
        // Past the running-VM quota the sandbox stays as it was (429).
        let _vm_slot = self.reserve_vm(self.backend_for(&rec)?.as_ref(), &rec.id, true).await?;
        // S3 mounts: lease and files before anything runs (a 409 or an
        // unreachable bucket leaves the sandbox as it was).
        self.s3_attach(&rec).await?;
        // The leases are renewed through the boot and the hooks, which can
        // take longer than a lease lasts; the running sandbox's task takes over.
        let keep = self.s3_keepalive(&rec);
        rec.status = SandboxStatus::Provisioning;
        rec.error_message = None;
        self.store.update(&rec)?;
        if let Err(reason) = self.launch_instance(&rec).await {
            let reason = reason.to_string();
            let _ = self.kill_instance(&rec).await;
            if let Some(k) = keep {
                k.stop().await;
            }
            self.s3_release_all(&rec).await;
            self.mark_failed(&mut rec, &reason)?;
            return Err(CoreError::SandboxFailed { id: rec.id.clone(), reason });
        }
        self.finish_start_keeping(rec, keep).await
    }

    /// Setup hooks and start command on a launched sandbox, then `running`.
    pub(super) async fn finish_start(self: &Arc<Self>, rec: SandboxRecord) -> Result<SandboxRecord> {
        self.finish_start_keeping(rec, None).await
    }

    /// [`Self::finish_start`] with the launch's S3 lease renewal, stopped
    /// once the hooks are over (before the leases are handed on or given back).
    async fn finish_start_keeping(
        self: &Arc<Self>,
        mut rec: SandboxRecord,
        keep: Option<super::s3_volumes::S3Keepalive>,
    ) -> Result<SandboxRecord> {
        let hooks = self.run_hooks_and_service(&mut rec).await;
        if let Some(k) = keep {
            k.stop().await;
        }
        match hooks {
            Ok(()) => {
                rec.status = SandboxStatus::Running;
                rec.running_since = Some(now_secs());
                rec.stop_reason = None;
                self.store.update(&rec)?;
                self.log_system(&rec, "sandbox running");
                if rec.mounts.iter().any(|m| m.s3_prefix.is_some()) {
                    self.s3_upkeep();
                }
                Ok(rec)
            }
            Err(reason) => {
                let reason = reason.to_string();
                let _ = self.kill_instance(&rec).await;
                let _ = self.s3_detach(&rec).await;
                self.mark_failed(&mut rec, &reason)?;
                Err(CoreError::SandboxFailed { id: rec.id.clone(), reason })
            }
        }
    }

    async fn run_hooks_and_service(self: &Arc<Self>, rec: &mut SandboxRecord) -> std::result::Result<(), StartFailure> {
        if !rec.hooks_done && !rec.setup_hooks.is_empty() {
            for (i, hook) in rec.setup_hooks.clone().iter().enumerate() {
                self.log_system(rec, &format!("setup hook {}: {hook}", i + 1));
                let code = self.run_hook(rec, hook).await.map_err(|source| StartFailure::HookUnrunnable { index: i + 1, source })?;
                if code != 0 {
                    return Err(StartFailure::HookFailed { index: i + 1, code, hook: hook.clone() });
                }
            }
        }
        if !rec.hooks_done {
            rec.hooks_done = true;
            self.store.update(rec)?;
        }
        self.start_service(rec).await?;
        Ok(())
    }

    pub(super) async fn start_service(&self, rec: &SandboxRecord) -> Result<()> {
        let Some(cmd) = &rec.start_command else { return Ok(()) };
        let env = self.base_env(rec);
        // The image config's `User`, as for exec and shells (create has no
        // user of its own).
        let user = super::exec::command_user(rec, None)?;
        self.agent(rec)
            .await?
            .start_service(cmd, env, &rec.working_directory, user)
            .await
            .map_err(|e| CoreError::AgentUnreachable(format!("start command could not be launched: {e}")))?
            .map_err(CoreError::InvalidRequest)?;
        Ok(())
    }

    pub(super) async fn stop_locked(&self, mut rec: SandboxRecord, force: bool) -> Result<SandboxRecord> {
        if !force && self.liveness(&rec) == crate::backend::Liveness::Alive {
            let grace = self.config.stop_grace;
            if let Ok(agent) = self.agent(&rec).await {
                let _ = tokio::time::timeout(grace + Duration::from_secs(2), agent.shutdown(grace)).await;
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while self.liveness(&rec) == crate::backend::Liveness::Alive && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.kill_instance(&rec).await?;
        // S3 mounts are saved once nothing can write to them any more.
        let saved = self.s3_detach(&rec).await;
        rec.end_running_period(now_secs());
        rec.status = SandboxStatus::Stopped;
        // The idle reaper sets its own reason before stopping.
        rec.stop_reason.get_or_insert_with(|| super::idle::STOP_USER.into());
        self.store.update(&rec)?;
        self.log_system(&rec, if force { "sandbox force-stopped" } else { "sandbox stopped" });
        saved.map(|()| rec)
    }

    pub(super) fn mark_failed(&self, rec: &mut SandboxRecord, reason: &str) -> Result<()> {
        rec.end_running_period(now_secs());
        rec.status = SandboxStatus::Failed;
        rec.error_message = Some(reason.to_string());
        self.store.update(rec)?;
        self.log_system_level(rec, "error", &format!("sandbox failed: {reason}"));
        Ok(())
    }
}

//! Running sandboxes: one backend [`Instance`] and one agent session each.
//!
//! The manager keeps the instance handle a launch (or, after a daemon
//! restart, an attach) returned, and lazily holds one multiplexed session to
//! the agent over the byte stream the instance hands out. Each new session
//! also starts the log subscription that copies the agent's log lines into
//! the sandbox's log file, a file only the host can reach.

use std::sync::Arc;
use std::time::Duration;

use super::start_failure::StartFailure;
use super::SandboxManager;
use crate::agent::{AgentClient, AgentSession};
use crate::backend::{Backend, Instance, Liveness, Usage};
use crate::error::{CoreError, Result};
use crate::record::SandboxRecord;

/// How long a re-attached agent has to answer the handshake.
const ATTACH_HANDSHAKE: Duration = Duration::from_secs(3);
/// A launch that looks dead this long has failed (one "dead" reading can
/// be a process caught mid-execve on a loaded host).
const DEAD_FOR: Duration = Duration::from_millis(50);

pub(crate) struct Running {
    pub instance: Arc<dyn Instance>,
    session: tokio::sync::Mutex<Option<Arc<AgentSession>>>,
    /// Bytes in use on the disk the agent measures
    /// ([`Backend::disk_measured_inside`]), as it last answered; `u64::MAX`
    /// until it has.
    pub(crate) disk_used_inside: std::sync::atomic::AtomicU64,
    /// A VM (counts against the running-VM quota, see `quota.rs`).
    pub(crate) vm: bool,
}

impl SandboxManager {
    /// The backend a sandbox was made with.
    pub(crate) fn backend_for(&self, rec: &SandboxRecord) -> Result<Arc<dyn Backend>> {
        self.find_backend(&rec.backend_type)
            .ok_or_else(|| CoreError::BackendUnavailable(rec.backend_type.clone(), "this daemon does not run that backend".into()))
    }

    /// A backend by name or alias.
    pub(crate) fn find_backend(&self, name: &str) -> Option<Arc<dyn Backend>> {
        self.backends.iter().find(|b| b.name() == name || b.aliases().contains(&name)).cloned()
    }

    pub(crate) fn running(&self, id: &str) -> Option<Arc<Running>> {
        self.instances.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    fn remember(&self, id: &str, instance: Arc<dyn Instance>, backend: &dyn Backend) -> Arc<Running> {
        let r = Arc::new(Running {
            vm: backend.is_vm(),
            instance,
            session: tokio::sync::Mutex::new(None),
            disk_used_inside: std::sync::atomic::AtomicU64::new(u64::MAX),
        });
        self.instances.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), r.clone());
        r
    }

    fn forget(&self, id: &str) -> Option<Arc<Running>> {
        self.instances.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }

    /// Launches the sandbox and waits for its agent's handshake.
    pub(crate) async fn launch_instance(&self, rec: &SandboxRecord) -> std::result::Result<(), StartFailure> {
        let mut ph = super::phases::Phases::start();
        let backend = self.backend_for(rec)?;
        self.assign_id_range(&rec.id)?;
        ph.mark("id range");
        let mut spec = self.spec(rec);
        spec.image_layers = self.image_layers(rec).await?;
        // Recorded before this check existed: refuse rather than expose.
        for m in &spec.mounts {
            super::validate::outside_data_dir(m, self.data.root())?;
        }
        ph.mark("spec");
        // A previous crash may have left processes behind.
        self.kill_instance(rec).await?;
        ph.mark("old killed");
        for w in [backend.network_warning(&spec), backend.storage_warning(&spec)].into_iter().flatten() {
            self.log_system(rec, &format!("warning: {w}"));
        }
        if !backend.limits_enforced() {
            self.log_system(rec, "warning: resource limits are not enforced on this host (no usable cgroups)");
        }
        let launched_at = std::time::Instant::now();
        let instance = backend.launch(&spec).await?;
        let launched = launched_at.elapsed();
        ph.mark("launched");
        let running = self.remember(&rec.id, instance.clone(), backend.as_ref());
        let connect = async {
            let transport = instance.connect_agent().await?;
            let timeout = backend.start_timeout().unwrap_or(self.config.start_timeout).max(self.config.start_timeout);
            Ok::<_, StartFailure>(AgentSession::handshake(transport, timeout).await?)
        };
        let died = async {
            let mut dead_since = None;
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if instance.liveness() == Liveness::Dead {
                    let now = tokio::time::Instant::now();
                    if now - *dead_since.get_or_insert(now) >= DEAD_FOR {
                        return;
                    }
                } else {
                    dead_since = None;
                }
            }
        };
        let session = tokio::select! {
            r = connect => r,
            () = died => Err(StartFailure::Exited),
        };
        match session {
            Ok(s) => {
                ph.mark("agent answered");
                ph.log(&rec.id, "launch_instance");
                tracing::debug!(sandbox = %rec.id, launch_us = launched.as_micros() as u64, up_us = launched_at.elapsed().as_micros() as u64, "agent answered");
                self.start_log_feed(rec, &s);
                *running.session.lock().await = Some(s);
                if instance.renames_in_guest() {
                    // A VM's clock was set from its kernel command line when
                    // QEMU started: the boot since (seconds under TCG) left
                    // it that far behind. It takes the host's time now.
                    if let Err(e) = self.rename_running(rec, &instance).await {
                        tracing::warn!(sandbox = %rec.id, error = %e, "could not set the guest's clock");
                    }
                }
                Ok(())
            }
            Err(e) => {
                // The backend's own account (e.g. the owner's log) beats
                // the symptom the handshake saw.
                Err(StartFailure::DidNotComeUp(instance.failure_reason().unwrap_or_else(|| e.to_string())))
            }
        }
    }

    /// The instance of a sandbox recorded as running, re-attaching after a
    /// daemon restart.
    pub(crate) async fn instance_of(&self, rec: &SandboxRecord) -> Result<Arc<Running>> {
        if let Some(r) = self.running(&rec.id) {
            return Ok(r);
        }
        let backend = self.backend_for(rec)?;
        match backend.attach(&self.spec(rec)).await? {
            Some(instance) => Ok(self.remember(&rec.id, instance, backend.as_ref())),
            None => Err(CoreError::AgentUnreachable("the sandbox's processes are gone".into())),
        }
    }

    /// Gives a running sandbox its record's hostname: the backend's way,
    /// or the guest agent's for a VM, which also takes the host's time and
    /// fresh randomness then (its address stays).
    pub(crate) async fn rename_running(&self, rec: &SandboxRecord, instance: &Arc<dyn Instance>) -> Result<()> {
        if !instance.renames_in_guest() {
            return Ok(instance.set_hostname(&rec.slug)?);
        }
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| CoreError::Corrupt(format!("no randomness for the guest: {e}")))?;
        let seed: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let agent = self.agent(rec).await?;
        agent
            .reset_identity(now_ms, &rec.slug, seed, None, None)
            .await
            .map_err(|e| CoreError::Backend(crate::backend::BackendError::io("renaming the guest", e)))
    }

    /// A client for the sandbox's agent, (re)connecting the session if needed.
    pub(crate) async fn agent(&self, rec: &SandboxRecord) -> Result<AgentClient> {
        let running = self.instance_of(rec).await?;
        let mut slot = running.session.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(AgentClient::new(s.clone()));
        }
        let unreachable = |e: String| CoreError::AgentUnreachable(e);
        let transport = running.instance.connect_agent().await.map_err(|e| unreachable(e.to_string()))?;
        let session = AgentSession::handshake(transport, ATTACH_HANDSHAKE).await.map_err(|e| unreachable(e.to_string()))?;
        self.start_log_feed(rec, &session);
        *slot = Some(session.clone());
        Ok(AgentClient::new(session))
    }

    /// Copies the agent's log lines into the sandbox log until the session ends.
    fn start_log_feed(&self, rec: &SandboxRecord, session: &Arc<AgentSession>) {
        let client = AgentClient::new(session.clone());
        let path = self.data.sandbox(&rec.id).log_file();
        let id = rec.id.clone();
        tokio::spawn(async move {
            let Ok(mut feed) = client.logs().await else { return };
            while let Ok(line) = feed.next().await {
                let line = super::logs::sanitize(line);
                if let Err(e) = super::logs::append_line(&path, &line) {
                    tracing::warn!(sandbox = %id, error = %e, "cannot append to sandbox log");
                }
            }
        });
    }

    /// Kills the sandbox's processes and releases its runtime resources,
    /// whether or not this daemon launched it. Files stay.
    pub(crate) async fn kill_instance(&self, rec: &SandboxRecord) -> Result<()> {
        match self.forget(&rec.id) {
            Some(r) => Ok(r.instance.kill().await?),
            None => Ok(self.backend_for(rec)?.cleanup(&self.spec(rec)).await?),
        }
    }

    pub(crate) fn liveness(&self, rec: &SandboxRecord) -> Liveness {
        self.running(&rec.id).map(|r| r.instance.liveness()).unwrap_or(Liveness::Dead)
    }

    pub(crate) fn instance_usage(&self, rec: &SandboxRecord) -> Usage {
        self.running(&rec.id).map(|r| r.instance.usage()).unwrap_or_default()
    }
}

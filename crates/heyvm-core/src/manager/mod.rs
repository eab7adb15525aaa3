//! [`SandboxManager`]: lifecycle rules in one place.
//!
//! Lifecycle operations on one sandbox are serialised by a per-sandbox lock;
//! execs and file operations do not take it, so they run concurrently.

mod archives;
mod backends;
mod build;
mod build_steps;
mod checkpoints;
mod disk;
mod exec;
mod exec_stdin;
#[cfg(test)]
mod fake_tests;
mod file_io;
mod files;
mod idle;
mod image_files;
mod images;
mod instances;
mod lifecycle;
mod logs;
mod operations;
mod phases;
mod pool;
mod proxy;
mod quota;
#[cfg(test)]
mod quota_tests;
mod reaper;
mod s3_volumes;
mod shell;
mod start_failure;
pub mod transitions;
mod usage;
mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heyvm_types::{SandboxInfo, SandboxStatus, Uptime, UrlInfo};

pub use archives::{valid_archive_id, ArchiveUpload};
pub use backends::BaseImage;
pub use build::{ArchiveBuild, BuildEvent, BuildLog, BuildOutcome, BuildRequest, SIDE_DOCKERFILE};
pub use disk::valid_size as valid_disk_size;
pub use exec::RunningExec;
pub use exec_stdin::MAX_STDIN_BYTES;
pub use file_io::{computer_path, FileSource, OpenedFile, UploadSink};
pub use files::MountRoot;
pub use idle::{STOP_IDLE, STOP_USER};
pub use images::{is_host_image, HOST_IMAGE};
pub use logs::LogQuery;
pub use pool::{default_pool_max, DEMAND_WINDOW};
pub use proxy::{is_subdomain, Endpoint};
pub use quota::{default_max_running_vms, default_max_sandboxes};
pub use shell::{terminal_size, ShellRequest};
pub use usage::{HostStats, SandboxStats, UsageReport};

use crate::backend::{Backend, LaunchSpec};
use crate::error::Result;
use crate::paths::DataDir;
use crate::record::{now_secs, SandboxRecord};
use crate::store::Store;

/// Tunables; defaults suit interactive use.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// How long a sandbox may take to answer after launch.
    pub start_timeout: Duration,
    /// SIGTERM-to-SIGKILL grace on stop.
    pub stop_grace: Duration,
    /// Largest accepted file upload.
    pub max_upload_bytes: u64,
    /// Largest accepted image upload (`PUT /images/:name`).
    pub max_image_upload_bytes: u64,
    /// How often the reaper checks TTLs and liveness.
    pub reap_interval: Duration,
    /// How long an interactive shell session survives with no client.
    pub shell_idle_expiry: Duration,
    /// Warm sandboxes kept ready for fast creates at least (see `pool.rs`);
    /// 0 turns the pool off.
    pub pool_size: usize,
    /// At most this many warm sandboxes, however fast creates come
    /// (`HEYVM_POOL_MAX`): the pool's memory budget.
    pub pool_max: usize,
    /// Uploaded deploy archives older than this are deleted
    /// (`HEYVM_ARCHIVE_TTL_SECS`, default one day).
    pub archive_ttl: Duration,
    /// Idle timeout of sandboxes that set none (`HEYVM_IDLE_TIMEOUT_SECS`;
    /// None or 0 = never). See `idle.rs`.
    pub idle_timeout_secs: Option<u64>,
    /// Host uids/gids sandboxes get ranges from (`HEYVM_SUBIDS`); an
    /// unusable value stops the daemon from starting.
    pub id_pool: std::result::Result<crate::id_ranges::IdPool, crate::id_ranges::BadIdPool>,
    /// File routes of running sandboxes go through the agent on every
    /// backend (`HEYVM_FILES_VIA_AGENT`), not only where the host cannot
    /// reach the files. See `file_io.rs`.
    pub files_via_agent: bool,
    /// Most sandboxes (any state) this daemon holds (`HEYVM_MAX_SANDBOXES`;
    /// see `quota.rs`).
    pub max_sandboxes: usize,
    /// Most VMs running or starting at once (`HEYVM_MAX_RUNNING_VMS`).
    pub max_running_vms: usize,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            start_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(5),
            max_upload_bytes: 1 << 30,
            max_image_upload_bytes: 16 << 30,
            reap_interval: Duration::from_secs(1),
            shell_idle_expiry: crate::shell::IDLE_EXPIRY,
            pool_size: 1,
            pool_max: 16,
            archive_ttl: Duration::from_secs(86_400),
            idle_timeout_secs: None,
            id_pool: Ok(crate::id_ranges::DEFAULT_POOL),
            files_via_agent: false,
            max_sandboxes: 1024,
            max_running_vms: 8,
        }
    }
}

impl ManagerConfig {
    /// The defaults, overridden by the environment (see [`crate::config`]).
    pub fn from_env() -> Self {
        use crate::config::{self, parse};
        let d = Self::default();
        ManagerConfig {
            max_upload_bytes: parse(config::MAX_UPLOAD_BYTES).unwrap_or(d.max_upload_bytes),
            max_image_upload_bytes: parse(config::MAX_IMAGE_UPLOAD_BYTES).unwrap_or(d.max_image_upload_bytes),
            shell_idle_expiry: parse(config::SHELL_IDLE_SECS).map(Duration::from_secs).unwrap_or(d.shell_idle_expiry),
            pool_size: parse(config::POOL_SIZE).unwrap_or(d.pool_size),
            pool_max: parse(config::POOL_MAX).unwrap_or_else(pool::default_pool_max),
            archive_ttl: parse(config::ARCHIVE_TTL_SECS).map(Duration::from_secs).unwrap_or(d.archive_ttl),
            idle_timeout_secs: parse::<u64>(config::IDLE_TIMEOUT_SECS).filter(|&t| t > 0),
            id_pool: crate::id_ranges::IdPool::from_env(),
            files_via_agent: config::string(config::FILES_VIA_AGENT).is_some_and(|v| v == "1" || v == "true"),
            max_sandboxes: parse(config::MAX_SANDBOXES).unwrap_or_else(quota::default_max_sandboxes),
            max_running_vms: parse(config::MAX_RUNNING_VMS).unwrap_or_else(quota::default_max_running_vms),
            ..d
        }
    }
}

pub struct SandboxManager {
    data: DataDir,
    store: Store,
    /// Every backend this daemon runs; the first is the default.
    backends: Vec<Arc<dyn Backend>>,
    /// Handles of running sandboxes (see `instances.rs`).
    instances: Mutex<HashMap<String, Arc<instances::Running>>>,
    config: ManagerConfig,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Last CPU sample per sandbox, for `cpu_usage` as a rate.
    cpu_samples: Mutex<HashMap<String, (Instant, u64, f64)>>,
    /// Proxy endpoints are added by the networking layer; kept here so
    /// `SandboxInfo.urls` has one source.
    urls: Mutex<HashMap<String, Vec<UrlInfo>>>,
    /// Bumped on every proxy endpoint change (see `proxy.rs`).
    endpoint_gen: tokio::sync::watch::Sender<u64>,
    /// Interactive shell sessions (they outlive client connections).
    shells: crate::shell::ShellSessions,
    /// Ids of warm sandboxes ready to be adopted.
    pool: Mutex<Vec<String>>,
    /// When recent pool-shaped creates came (the pool's size follows them).
    pool_demand: Mutex<std::collections::VecDeque<Instant>>,
    pool_filling: std::sync::atomic::AtomicBool,
    /// Cleared once a warm sandbox shows the backend cannot rename it.
    pool_rename_ok: std::sync::atomic::AtomicBool,
    pool_closed: std::sync::atomic::AtomicBool,
    /// When the reaper last swept expired archives.
    last_archive_sweep: Mutex<Instant>,
    /// Last use per sandbox, for idle stop (see `idle.rs`).
    idle: idle::IdleTracker,
    /// OCI images and their shared layers (`MVM_DATA_DIR/images`).
    images: Arc<heyvm_images::ImageStore>,
    /// Reservations of creates and VM launches (see `quota.rs`).
    quota: Arc<Mutex<quota::State>>,
}

impl SandboxManager {
    /// Opens the store and reconciles recorded state with what is actually
    /// running (the daemon may have been killed, or the host rebooted).
    pub async fn open(data: DataDir, backends: Vec<Arc<dyn Backend>>, config: ManagerConfig) -> Result<Arc<Self>> {
        if let Err(e) = &config.id_pool {
            return Err(crate::CoreError::invalid(e.to_string()));
        }
        if backends.is_empty() {
            return Err(crate::CoreError::BackendUnavailable("any".into(), "no backend is available".into()));
        }
        std::fs::create_dir_all(data.sandboxes_dir())?;
        let store = Store::open(&data.db_path())?;
        let shells = crate::shell::ShellSessions::new(config.shell_idle_expiry);
        let settings = heyvm_images::RegistrySettings::new(
            data.root(),
            &crate::config::string(crate::config::REGISTRY_MIRRORS).unwrap_or_default(),
            &crate::config::string(crate::config::INSECURE_REGISTRIES).unwrap_or_default(),
            crate::config::docker_config_file(),
        )?;
        let images = Arc::new(heyvm_images::ImageStore::open(data.images_dir(), settings)?);
        let mgr = Arc::new(SandboxManager {
            data,
            store,
            backends,
            instances: Mutex::default(),
            config,
            locks: Mutex::default(),
            cpu_samples: Mutex::default(),
            urls: Mutex::default(),
            endpoint_gen: tokio::sync::watch::Sender::new(0),
            shells,
            pool: Mutex::default(),
            pool_demand: Mutex::default(),
            pool_filling: Default::default(),
            pool_rename_ok: std::sync::atomic::AtomicBool::new(true),
            pool_closed: Default::default(),
            last_archive_sweep: Mutex::new(Instant::now()),
            idle: idle::IdleTracker::default(),
            images,
            quota: Arc::default(),
        });
        mgr.open_storage_all()?;
        mgr.reconcile().await?;
        mgr.remove_orphans().await?;
        mgr.store.release_orphan_id_ranges()?;
        for b in &mgr.backends {
            b.open(&mgr.data.sandboxes_dir()).await;
        }
        mgr.refill_pool();
        Ok(mgr)
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// The default backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backends[0].name()
    }

    /// The canonical name of a backend this daemon runs, by name or alias.
    pub fn backend_named(&self, name: &str) -> Option<&'static str> {
        self.find_backend(name).map(|b| b.name())
    }

    /// What each backend this daemon runs reports about itself.
    pub fn backend_statuses(&self) -> Vec<crate::backend::BackendStatus> {
        self.backends.iter().map(|b| b.status()).collect()
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).entry(id.to_string()).or_default().clone()
    }

    pub(crate) fn spec(&self, rec: &SandboxRecord) -> LaunchSpec {
        LaunchSpec {
            id: rec.id.clone(),
            hostname: rec.slug.clone(),
            paths: self.data.sandbox(&rec.id),
            limits: rec.limits(),
            mounts: self.resolved_mounts(rec),
            network: crate::backend::NetworkSpec { mode: rec.network, allow_out: rec.allow_out.clone(), deny_out: rec.deny_out.clone() },
            image_layers: Vec::new(),
            ids: self.id_range_of(&rec.id),
        }
    }

    /// Who the sandbox's root is on the host, for files a root daemon
    /// writes into its layer (None: the daemon is not root, so files are
    /// its own, as is the sandbox's root).
    pub(crate) fn sandbox_root_ids(&self, rec: &SandboxRecord) -> Option<(u32, u32)> {
        if !crate::id_ranges::daemon_is_root() || rec.backend_type != "bubblewrap" {
            return None;
        }
        self.id_range_of(&rec.id).map(|r| (r.base, r.base))
    }

    /// The sandbox's recorded uid/gid range (see `id_ranges`); launches
    /// allocate it ([`Self::assign_id_range`]).
    fn id_range_of(&self, id: &str) -> Option<crate::id_ranges::IdRange> {
        self.store.recorded_id_range(id).unwrap_or_else(|e| {
            tracing::error!(sandbox = id, error = %e, "cannot read the uid/gid range");
            None
        })
    }

    /// Allocates the sandbox's range if it has none yet (first launch,
    /// including of a sandbox made before ranges existed).
    pub(crate) fn assign_id_range(&self, id: &str) -> Result<()> {
        let pool = self.config.id_pool.as_ref().map_err(|e| crate::CoreError::invalid(e.to_string()))?;
        self.store.id_range(id, pool).map(drop)
    }

    pub fn resolve(&self, key: &str) -> Result<SandboxRecord> {
        self.store.resolve(key)
    }

    pub fn get(&self, key: &str) -> Result<SandboxInfo> {
        Ok(self.info(&self.store.resolve(key)?))
    }

    pub fn list(&self, status: Option<SandboxStatus>) -> Result<Vec<SandboxInfo>> {
        Ok(self.store.list()?.iter().filter(|r| status.is_none_or(|s| r.status == s)).map(|r| self.info(r)).collect())
    }

    /// [`Self::get`] after asking the agent how full a disk only the guest
    /// can measure is (a running VM's; see [`Self::measure_disks`]).
    pub async fn get_measured(self: &Arc<Self>, key: &str) -> Result<SandboxInfo> {
        let rec = self.store.resolve(key)?;
        self.measure_disks(std::slice::from_ref(&rec)).await;
        self.get(&rec.id)
    }

    /// [`Self::list`] after [`Self::measure_disks`] of the listed sandboxes.
    pub async fn list_measured(self: &Arc<Self>, status: Option<SandboxStatus>) -> Result<Vec<SandboxInfo>> {
        let recs: Vec<_> = self.store.list()?.into_iter().filter(|r| status.is_none_or(|s| r.status == s)).collect();
        self.measure_disks(&recs).await;
        self.list(status)
    }

    pub fn set_urls(&self, id: &str, urls: Vec<UrlInfo>) {
        self.urls.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), urls);
    }

    pub fn info(&self, r: &SandboxRecord) -> SandboxInfo {
        let now = now_secs();
        let running = r.status == SandboxStatus::Running;
        let (cpu_usage, memory_usage) = if running { self.sample_usage(r) } else { (0.0, 0) };
        let uptime_secs = r.running_since.filter(|_| running).map(|s| (now - s).max(0) as u64).unwrap_or(0);
        let urls = self.urls.lock().unwrap_or_else(|e| e.into_inner()).get(&r.id).cloned().unwrap_or_default();
        let disk = self.disk_usage(r);
        SandboxInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            slug: r.slug.clone(),
            status: r.status,
            sandbox_type: r.sandbox_type.clone(),
            image: self.image_of(r),
            backend_type: r.backend_type.clone(),
            size_class: r.size_class,
            uptime: Uptime { secs: uptime_secs, nanos: 0 },
            cpu_usage,
            memory_usage,
            mounts: r.mounts.clone(),
            open_ports: r.open_ports.clone(),
            ttl_seconds: r.ttl_seconds,
            ttl_remaining_seconds: r.ttl_remaining(now),
            created_at: r.created_at,
            guest_ip: if running { self.running(&r.id).and_then(|i| i.instance.guest_ip()) } else { None },
            urls,
            start_command: r.start_command.clone(),
            working_directory: r.working_directory.clone(),
            env_vars: r.env_vars.clone(),
            setup_hooks: r.setup_hooks.clone(),
            error_message: r.error_message.clone(),
            is_deployed: r.archive_id.is_some(),
            archive_id: r.archive_id.clone(),
            region: r.region.clone(),
            network: r.network.to_string(),
            allow_out: r.allow_out.clone(),
            deny_out: r.deny_out.clone(),
            idle_timeout_seconds: self.idle_timeout_of(r),
            auto_resume: r.auto_resume,
            stop_reason: if r.status == SandboxStatus::Stopped { r.stop_reason.clone() } else { None },
            last_used_at: self.last_used_at(r),
            disk_size_gb: r.disk_gb(),
            disk_usage: disk.map(|d| d.used_bytes),
            disk_limit: disk.map(|d| d.limit_bytes),
            accel: self.accel_of(r),
        }
    }

    /// CPU as percent of one core since the previous sample (or since the
    /// sandbox started, for the first one), and memory in bytes.
    fn sample_usage(&self, r: &SandboxRecord) -> (f64, u64) {
        let usage = self.instance_usage(r);
        let now = Instant::now();
        let mut samples = self.cpu_samples.lock().unwrap_or_else(|e| e.into_inner());
        let pct = match samples.get(&r.id) {
            Some(&(t, ns, last_pct)) => {
                let dt = now.duration_since(t).as_nanos() as f64;
                if dt < 1e8 {
                    // Too close to the last sample to be meaningful.
                    return (last_pct, usage.memory_bytes);
                }
                usage.cpu_ns.saturating_sub(ns) as f64 / dt * 100.0
            }
            None => {
                let secs = r.running_since.map(|s| (now_secs() - s).max(1)).unwrap_or(1) as f64;
                usage.cpu_ns as f64 / (secs * 1e9) * 100.0
            }
        };
        let pct = (pct * 10.0).round() / 10.0;
        samples.insert(r.id.clone(), (now, usage.cpu_ns, pct));
        (pct, usage.memory_bytes)
    }

    pub fn usage(&self, key: &str) -> Result<crate::backend::Usage> {
        let r = self.store.resolve(key)?;
        Ok(self.instance_usage(&r))
    }

    /// Whether the default backend enforces resource limits here.
    pub fn limits_enforced(&self) -> bool {
        self.backends[0].limits_enforced()
    }
}

//! The `kvm` backend: QEMU microVMs behind heyvm-core's `Backend` and
//! `Instance` seam. KVM when a test boot proves it works, TCG otherwise
//! (and the status, the daemon log and every sandbox's `accel` say which).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use heyvm_core::agent::AgentTransport;
use heyvm_core::backend::{Backend, BackendError, BackendResult, BackendStatus, DiskGrowth, Instance, LaunchSpec, Liveness, Usage};
use heyvm_types::{CheckpointInfo, Limits, ProcessFate};

use heyvm_backends::cgroups::Cgroups;

use crate::assets::{VmAssets, DEFAULT_IMAGE};
use crate::error::{VmError, VmResult};
use crate::launch::{self, HostSetup};
use crate::snapshot::{self, CheckpointMeta};
use crate::vmproc::{self, VmLayout, VmProcess};

pub const NAME: &str = "kvm";
/// Names clients use for VM backends (seeds 002 and 004); all mean this one.
pub const ALIASES: &[&str] = &["vm", "firecracker", "firecracker_containerd", "libvirt"];

pub struct KvmBackend {
    assets: VmAssets,
    /// The host verdict, decided once and reported on every use.
    setup: OnceLock<Result<HostSetup, Unavailable>>,
    /// The host's cgroups for QEMU ([`crate::cgroup`]), detected once.
    cgroups: OnceLock<Option<Cgroups>>,
}

impl Default for KvmBackend {
    fn default() -> Self {
        Self::new(VmAssets::from_env())
    }
}

impl KvmBackend {
    pub fn new(assets: VmAssets) -> Self {
        Self { assets, setup: OnceLock::new(), cgroups: OnceLock::new() }
    }

    fn cgroups(&self) -> Option<&Cgroups> {
        self.cgroups.get_or_init(crate::cgroup::detect).as_ref()
    }

    /// Assets, initramfs and accelerator, decided once (the probe may boot
    /// a test VM; its verdict is cached on disk too).
    pub fn host(&self) -> Result<&HostSetup, Unavailable> {
        self.setup.get_or_init(|| self.decide().map_err(|e| Unavailable(e.to_string()))).as_ref().map_err(Clone::clone)
    }

    fn decide(&self) -> VmResult<HostSetup> {
        if which(&vmproc::qemu_binary()).is_none() {
            return Err(VmError::QemuMissing(vmproc::qemu_binary()));
        }
        if let Some(missing) = self.assets.missing(DEFAULT_IMAGE) {
            return Err(VmError::AssetsMissing(missing));
        }
        let agent = heyvm_core::backend::static_agent_path().ok_or(VmError::AgentMissing)?;
        let initrd = crate::initramfs::build_cached(&agent, &self.assets.modules(), &self.assets.dir).map_err(VmError::Initramfs)?;
        let verdict =
            crate::probe::decide(&self.assets.dir, &self.assets.kernel(), &initrd, &self.assets.kernel_version().unwrap_or_default());
        match verdict.accel {
            crate::qemu::Accel::Kvm => tracing::info!("kvm backend: accelerator KVM ({})", verdict.reason),
            crate::qemu::Accel::Tcg => tracing::warn!("kvm backend: accelerator TCG, software emulation ({})", verdict.reason),
        }
        let seccomp = crate::confine::qemu_has_seccomp(&vmproc::qemu_binary());
        if !seccomp {
            tracing::warn!("kvm backend: this QEMU has no seccomp (-sandbox); QEMU runs without a syscall filter");
        }
        Ok(HostSetup {
            assets: self.assets.clone(),
            accel: verdict.accel,
            accel_reason: verdict.reason,
            initrd,
            image: DEFAULT_IMAGE.into(),
            cgroups: self.cgroups().cloned(),
            seccomp,
        })
    }
}

fn which(prog: &str) -> Option<std::path::PathBuf> {
    if prog.contains('/') {
        return std::path::Path::new(prog).is_file().then(|| prog.into());
    }
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(prog)).find(|p| p.is_file()))
}

/// The vCPUs and RAM QEMU gets for this sandbox (as `launch` sizes it).
fn machine_of(spec: &LaunchSpec) -> snapshot::Machine {
    snapshot::Machine { vcpus: launch::vcpus(spec.limits.millicpu), memory_mib: launch::memory_mib(spec.limits.memory_bytes) }
}

fn info(m: CheckpointMeta) -> CheckpointInfo {
    CheckpointInfo { name: m.name, created_at: m.created_at, size_bytes: m.size_bytes, memory: m.memory }
}

/// Why the backend cannot run VMs on this host (the cached verdict).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

impl From<Unavailable> for BackendError {
    fn from(e: Unavailable) -> Self {
        BackendError::Failed(e.0)
    }
}

/// Runs blocking VM work off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> VmResult<T> + Send + 'static) -> BackendResult<T> {
    Ok(tokio::task::spawn_blocking(f).await.map_err(VmError::from)??)
}

#[async_trait]
impl Backend for KvmBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn aliases(&self) -> &'static [&'static str] {
        ALIASES
    }

    fn is_vm(&self) -> bool {
        true
    }

    /// 9p shares directories only, and guest paths travel on the kernel
    /// command line: what `launch` would refuse at boot, refused now.
    fn check_mounts(&self, mounts: &[heyvm_types::MountSpec]) -> Result<(), String> {
        crate::launch::check_mounts(mounts).map_err(|e| e.to_string())
    }

    /// The guest's disks are not the host's to open: files go through the agent.
    fn files_on_host(&self) -> bool {
        false
    }

    fn status(&self) -> BackendStatus {
        match self.host() {
            Ok(h) => BackendStatus {
                name: NAME,
                available: true,
                reason: Some(h.accel_reason.clone()),
                accel: Some(h.accel.as_str().to_string()),
            },
            Err(why) => BackendStatus { name: NAME, available: false, reason: Some(why.0), accel: None },
        }
    }

    fn limits_enforced(&self) -> bool {
        true
    }

    /// A warm VM serves only creates that boot the same vCPUs and RAM.
    fn can_adopt_limits(&self, running: &Limits, wanted: &Limits) -> bool {
        launch::vcpus(running.millicpu) == launch::vcpus(wanted.millicpu)
            && launch::memory_mib(running.memory_bytes) == launch::memory_mib(wanted.memory_bytes)
    }

    fn start_timeout(&self) -> Option<Duration> {
        Some(Duration::from_secs(heyvm_core::config::parse(heyvm_core::config::VM_BOOT_TIMEOUT).unwrap_or(120)))
    }

    async fn checkpoint(&self, spec: &LaunchSpec, running: bool, name: &str) -> BackendResult<CheckpointInfo> {
        if !spec.mounts.is_empty() {
            return Err(BackendError::Unsupported {
                backend: NAME,
                what: "checkpoints of a VM with host mounts (QEMU cannot migrate a VM with a 9p share)",
            });
        }
        if !running {
            return Err(BackendError::NotRunning);
        }
        if !snapshot::valid_name(name) {
            return Err(VmError::CheckpointName(name.to_string()).into());
        }
        let layout = VmLayout::new(&spec.paths.dir);
        let n = name.to_string();
        let machine = machine_of(spec);
        Ok(info(blocking(move || snapshot::take(&layout, &n, machine)).await?))
    }

    fn checkpoints(&self, spec: &LaunchSpec) -> Vec<CheckpointInfo> {
        snapshot::list(&VmLayout::new(&spec.paths.dir)).into_iter().map(info).collect()
    }

    fn delete_checkpoint(&self, spec: &LaunchSpec, name: &str) -> BackendResult<()> {
        Ok(snapshot::remove(&VmLayout::new(&spec.paths.dir), name)?)
    }

    async fn stage_checkpoint(&self, from: &LaunchSpec, name: &str, to: &LaunchSpec) -> BackendResult<ProcessFate> {
        let (src, dst, n) = (VmLayout::new(&from.paths.dir), VmLayout::new(&to.paths.dir), name.to_string());
        let machine = machine_of(to);
        blocking(move || snapshot::stage(&src, &n, &dst, machine)).await?;
        Ok(ProcessFate::Kept)
    }

    fn supports_images(&self) -> bool {
        true
    }

    fn default_image(&self) -> Option<&'static str> {
        Some(crate::assets::DEFAULT_IMAGE_NAME)
    }

    fn prepare_image(&self, layers: &[std::path::PathBuf]) -> BackendResult<()> {
        let host = self.host()?;
        Ok(crate::image_disk::ensure(&host.assets.dir, layers).map(|_| ())?)
    }

    /// Base disks of images no VM file and no image of `keep` needs.
    fn prune_image_cache(&self, keep: &[Vec<std::path::PathBuf>]) -> u64 {
        let dir = &self.assets.dir;
        let keep: Vec<_> = keep.iter().map(|layers| crate::image_disk::path_for(dir, layers)).collect();
        crate::image_prune::prune(dir, &keep)
    }

    /// `/workspace` as its ext4 superblock says (exact once the guest
    /// unmounted it: a stopped VM) plus the root overlay's host bytes
    /// (everything written outside `/workspace`, as [`crate::rootcap`]
    /// counts it). The limit is `/workspace`'s size.
    fn disk_usage(&self, spec: &LaunchSpec) -> Option<heyvm_core::backend::DiskUsage> {
        let layout = VmLayout::new(&spec.paths.dir);
        let (used, limit_bytes) = crate::disk::ext4_usage(&layout.workspace_disk())?;
        Some(heyvm_core::backend::DiskUsage { used_bytes: used + crate::rootcap::used_bytes(&layout), limit_bytes })
    }

    /// While the VM runs its superblock on the host is stale (the guest
    /// writes it back rarely): the agent measures `/workspace` instead.
    fn disk_measured_inside(&self) -> Option<&'static str> {
        Some(heyvm_types::WORKSPACE_PATH)
    }

    fn disk_usage_measured(&self, spec: &LaunchSpec, used_bytes: u64) -> Option<heyvm_core::backend::DiskUsage> {
        let layout = VmLayout::new(&spec.paths.dir);
        let (_, limit_bytes) = crate::disk::ext4_usage(&layout.workspace_disk())?;
        Some(heyvm_core::backend::DiskUsage { used_bytes: used_bytes + crate::rootcap::used_bytes(&layout), limit_bytes })
    }

    /// A running VM's disk grows live (QMP, then the guest agent grows its
    /// mounted file system); a stopped one's at once, offline.
    fn grow_disk(&self, spec: &LaunchSpec) -> BackendResult<DiskGrowth> {
        if vmproc::find(&VmLayout::new(&spec.paths.dir)).is_some() {
            let s = spec.clone();
            let bytes = launch::grow_live(&s)?;
            return Ok(DiskGrowth::InGuest { mount: heyvm_types::WORKSPACE_PATH.to_string(), bytes });
        }
        launch::grow_workspace(spec)?;
        Ok(DiskGrowth::Done)
    }

    fn prepare(&self, spec: &LaunchSpec) -> BackendResult<()> {
        self.host()?;
        Ok(launch::prepare_disks(spec)?)
    }

    /// A deploy archive becomes the `/workspace` disk before the first boot,
    /// so setup hooks and the start command find the files in place.
    fn import_workspace(&self, spec: &LaunchSpec, dir: &std::path::Path) -> BackendResult<()> {
        Ok(launch::import_workspace(spec, dir)?)
    }

    async fn launch(&self, spec: &LaunchSpec) -> BackendResult<Arc<dyn Instance>> {
        let host = self.host()?.clone();
        let s = spec.clone();
        let process = blocking(move || launch::start(&s, &host)).await?;
        Ok(Arc::new(VmInstance::new(spec.clone(), process, self.cgroups().cloned())))
    }

    async fn attach(&self, spec: &LaunchSpec) -> BackendResult<Option<Arc<dyn Instance>>> {
        let cgroups = self.cgroups().cloned();
        Ok(vmproc::find(&VmLayout::new(&spec.paths.dir)).map(|p| Arc::new(VmInstance::new(spec.clone(), p, cgroups)) as Arc<dyn Instance>))
    }

    async fn cleanup(&self, spec: &LaunchSpec) -> BackendResult<()> {
        let (s, cg) = (spec.clone(), self.cgroups().cloned());
        blocking(move || {
            launch::stop(&s, cg.as_ref());
            Ok(())
        })
        .await
    }
}

/// One running VM.
pub struct VmInstance {
    spec: LaunchSpec,
    layout: VmLayout,
    process: VmProcess,
    /// Most bytes the root overlay may take ([`crate::rootcap`]).
    root_cap: Option<u64>,
    /// Where QEMU runs with its size class's limits, if the host has them.
    cgroups: Option<Cgroups>,
}

impl VmInstance {
    fn new(spec: LaunchSpec, process: VmProcess, cgroups: Option<Cgroups>) -> Self {
        Self { layout: VmLayout::new(&spec.paths.dir), root_cap: crate::rootcap::cap_bytes(&spec), spec, process, cgroups }
    }
}

#[async_trait]
impl Instance for VmInstance {
    fn liveness(&self) -> Liveness {
        match self.process.alive() {
            // The daemon asks every second: the root disk's cap is checked
            // here, and a VM past it is stopped (its reason kept).
            Some(true) if self.root_cap.is_some_and(|cap| crate::rootcap::check(&self.layout, cap)) => {
                self.process.kill();
                Liveness::Dead
            }
            Some(true) => Liveness::Alive,
            Some(false) => Liveness::Dead,
            None => Liveness::Unknown,
        }
    }

    async fn kill(&self) -> BackendResult<()> {
        let (s, cg) = (self.spec.clone(), self.cgroups.clone());
        blocking(move || {
            launch::stop(&s, cg.as_ref());
            Ok(())
        })
        .await
    }

    fn usage(&self) -> Usage {
        vmproc::trim_console(&self.layout);
        let (cpu_ns, memory_bytes) = self.process.usage();
        Usage { cpu_ns, memory_bytes, pids: 0, oom_kills: crate::oom::count(&self.layout.console_log()) }
    }

    /// The CPU quota and pids limit change live (the host cgroup); vCPUs
    /// and guest RAM are fixed while the VM runs.
    fn set_limits(&self, limits: &Limits) -> BackendResult<()> {
        if launch::vcpus(limits.millicpu) == launch::vcpus(self.spec.limits.millicpu)
            && launch::memory_mib(limits.memory_bytes) == launch::memory_mib(self.spec.limits.memory_bytes)
        {
            if let Some(cg) = &self.cgroups {
                cg.set_limits(&self.spec.id, &crate::cgroup::host_limits(limits))
                    .map_err(|e| BackendError::io("updating the VM's cgroup limits", e))?;
            }
            return Ok(());
        }
        Err(BackendError::Unsupported { backend: NAME, what: "changing vCPUs or memory of a running VM (stop and start it)" })
    }

    async fn connect_agent(&self) -> BackendResult<AgentTransport> {
        // QEMU creates the socket a moment after it starts.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::net::UnixStream::connect(self.layout.agent_socket()).await {
                Ok(s) => return Ok(Box::new(s)),
                Err(e) if Instant::now() > deadline || self.process.alive() == Some(false) => {
                    return Err(BackendError::io("connecting to the VM's agent port", e));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn failure_reason(&self) -> Option<String> {
        if let Some(why) = crate::rootcap::reason(&self.layout) {
            return Some(why);
        }
        let detail = vmproc::failure_reason(&self.layout);
        let head = match self.process.alive() {
            Some(true) => "the guest did not answer in time (QEMU still running)",
            _ => "QEMU exited",
        };
        Some(match detail {
            Some(d) => format!("{head}; {d}"),
            None => head.to_string(),
        })
    }

    fn guest_ip(&self) -> Option<String> {
        heyvm_backends::net::guest_ip(&self.spec)
    }

    /// The guest's hostname is its kernel's: the agent sets it.
    fn renames_in_guest(&self) -> bool {
        true
    }
}

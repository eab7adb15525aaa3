//! The bubblewrap backend: each sandbox is a bwrap process tree with its own
//! user, pid, mount, ipc, uts and network namespaces. Its `/` is a
//! persistent per-sandbox directory; the host's system directories appear
//! through copy-on-write overlays (as root) or read-only binds (without
//! root); `/workspace` is a persistent directory of its own. As root, both
//! the writable layer and `/workspace` live on the sandbox's own disk
//! ([`crate::disk`]). Networking (`nat` / `none`, egress policy) is in
//! [`crate::net`].

mod checkpoint;
mod instance;
mod ownership;
pub(crate) mod parked;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use heyvm_core::backend::{BackendError, BackendResult, DiskGrowth, Instance};
use heyvm_core::{Backend, LaunchSpec};

use crate::cgroups::Cgroups;
use crate::idmap::{IdMap, IdmappedMount};
use crate::layout::OverlayPaths;
use crate::net::{self, OwnerNet};
use crate::owner::{Overlay, OwnerPlan, UsernsPlan, AGENT_FD};
use crate::procs;

pub use instance::BwrapInstance;

/// The host's top-level system directories the sandbox sees.
const SYSTEM_DIRS: &[&str] = &["usr", "etc", "var", "opt"];
/// Host files hidden from sandboxes even though /etc is visible.
const MASKED_FILES: &[&str] = &["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-"];
/// Capabilities kept (inside the sandbox's user namespace) when running as
/// root: enough for package managers, not enough to remount or escape.
const KEPT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_AUDIT_WRITE",
    // Not CAP_SETFCAP: root inside may write a user mount as its host
    // owner (root, say), so a file capability written there would count on
    // the host.
    "CAP_MKNOD",
];
/// Where the agent binary appears inside.
const AGENT_DIR: &str = "/run/heyvm-bin";

pub struct BubblewrapBackend {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    bwrap: PathBuf,
    heyvm_exe: PathBuf,
    /// The static agent, when installed; else the heyvm binary's `__agent`
    /// (which needs the host's C library, so only suits the host rootfs).
    agent: Option<PathBuf>,
    pub(crate) cgroups: Option<Cgroups>,
    overlays: bool,
    /// Ok when sandboxes get disks of their own, else why not.
    disks: Result<(), crate::disk::DiskUnavailable>,
}

/// Why the bubblewrap backend cannot run on this host.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("bubblewrap is not installed (apt-get install bubblewrap)")]
    BwrapMissing,
    #[error("cannot locate the heyvm binary: {0}")]
    CurrentExe(std::io::Error),
}

impl BubblewrapBackend {
    /// Checks that bwrap is installed and works here.
    pub fn probe() -> std::result::Result<Self, ProbeError> {
        let bwrap = procs::find_in_path("bwrap").ok_or(ProbeError::BwrapMissing)?;
        let heyvm_exe = std::env::current_exe().map_err(ProbeError::CurrentExe)?;
        let root = procs::is_root();
        let cgroups = if root {
            match Cgroups::detect() {
                Ok(c) => Some(c),
                Err(why) => {
                    tracing::warn!("resource limits disabled: {why}");
                    None
                }
            }
        } else {
            tracing::warn!("resource limits disabled: not running as root");
            None
        };
        if root {
            crate::mask::start_rescan();
        }
        let disks = crate::disk::probe();
        if let Err(why) = &disks {
            tracing::warn!("disk limits disabled: {why}");
        }
        let agent = heyvm_core::backend::static_agent_path();
        if agent.is_none() {
            tracing::info!("no static heyvm-agent found; sandboxes run the agent from the heyvm binary");
        }
        Ok(BubblewrapBackend { inner: Arc::new(Inner { bwrap, heyvm_exe, agent, cgroups, overlays: root, disks }) })
    }
}

impl Inner {
    /// Whether sandboxes get their own user namespace with a uid range
    /// (root only; see `idmap`).
    pub(crate) fn maps_ids(&self) -> bool {
        self.overlays
    }

    fn plan(&self, spec: &LaunchSpec, net: OwnerNet) -> BackendResult<OwnerPlan> {
        let p = &spec.paths;
        let s = |p: &Path| p.display().to_string();
        let ids = spec.ids.filter(|_| self.maps_ids());
        let mut a: Vec<String> = vec![s(&self.bwrap)];
        let mut idmapped = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|x| x.to_string()));
        if ids.is_none() {
            push(&["--unshare-user"]);
        }
        push(&["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]);
        if net.netns.is_none() {
            push(&["--unshare-net"]);
        }
        if ids.is_none() {
            push(&["--uid", "0", "--gid", "0"]);
        }
        push(&["--hostname", &spec.hostname, "--new-session"]);
        let sandbox_map = ids.map(|r| IdMap::range(r.base, r.size));
        // An idmapped view of a shared layer when ids are mapped, else the
        // layer itself.
        let mut view = |src: PathBuf, name: String| match &sandbox_map {
            Some(map) => {
                let target = p.idmapped().join(name);
                idmapped.push(IdmappedMount { source: src, target: target.clone(), map: map.clone(), read_only: true, host_dir: false });
                target
            }
            None => src,
        };
        let mut overlays = Vec::new();
        // On an OCI image, `/` is the image's layers under the sandbox's own
        // writable layer; otherwise the host's system directories are
        // overlaid on a persistent root of the sandbox's own.
        let on_image = !spec.image_layers.is_empty();
        if on_image {
            if !self.overlays {
                return Err(BackendError::Failed("sandboxes on images need a root daemon (overlay mounts)".into()));
            }
            if self.agent.is_none() {
                return Err(BackendError::Failed(
                    "sandboxes on images need the static heyvm-agent (build it with scripts/build-agent.sh)".into(),
                ));
            }
            let mut root = crate::rootfs::image_root(spec).map_err(|e| BackendError::io("preparing the image root", e))?;
            if sandbox_map.is_some() {
                // Shared image layers keep their ownership: idmapped views.
                let views: Vec<String> = root
                    .lower
                    .to_string_lossy()
                    .split(':')
                    .enumerate()
                    .map(|(i, l)| view(PathBuf::from(l), format!("layer-{i}")).display().to_string())
                    .collect();
                root.lower = PathBuf::from(views.join(":"));
            }
            push(&["--bind", &s(&root.merged), "/"]);
            overlays.push(root);
        } else {
            push(&["--bind", &s(&p.root()), "/"]);
        }
        let mask = if self.overlays { crate::mask::current() } else { None };
        for d in SYSTEM_DIRS.iter().filter(|_| !on_image) {
            let host = Path::new("/").join(d);
            if !host.is_dir() || host.is_symlink() {
                continue;
            }
            if self.overlays {
                let merged = p.merged().join(d);
                // The masking layer's whiteouts sit above the host directory.
                let host_view = view(host.clone(), d.to_string());
                let lower = match &mask {
                    Some(m) => PathBuf::from(format!("{}:{}", view(m.join(d), format!("mask-{d}")).display(), host_view.display())),
                    None => host_view,
                };
                overlays.push(Overlay { lower, upper: p.upper().join(d), work: p.overlay_work().join(d), merged: merged.clone() });
                push(&["--bind", &s(&merged), &s(&host)]);
            } else {
                push(&["--ro-bind", &s(&host), &s(&host)]);
            }
        }
        push(&["--proc", "/proc", "--dev", "/dev"]);
        let hardening = crate::hardening::proc_args();
        push(&hardening.iter().map(String::as_str).collect::<Vec<_>>());
        push(&["--bind", &s(&p.workspace()), heyvm_types::WORKSPACE_PATH]);
        let agent_src = self.agent.as_ref().unwrap_or(&self.heyvm_exe);
        let agent_bin = format!("{AGENT_DIR}/{}", if self.agent.is_some() { "heyvm-agent" } else { "heyvm" });
        push(&["--ro-bind", &s(agent_src), &agent_bin]);
        for (i, m) in spec.mounts.iter().enumerate() {
            let source = match ids {
                // Root inside writes as the directory's host owner.
                Some(r) => {
                    let (uid, gid) = std::fs::metadata(&m.host_path).map(|md| (md.uid(), md.gid())).unwrap_or((0, 0));
                    let target = p.idmapped().join(format!("mount-{i}"));
                    let map = IdMap::owner(uid, gid, r.base);
                    let source = PathBuf::from(&m.host_path);
                    idmapped.push(IdmappedMount { source, target: target.clone(), map, read_only: m.read_only, host_dir: true });
                    s(&target)
                }
                None => m.host_path.clone(),
            };
            push(&[if m.read_only { "--ro-bind" } else { "--bind" }, &source, &m.sandbox_path]);
        }
        for f in MASKED_FILES.iter().filter(|_| !on_image) {
            if Path::new(f).exists() {
                push(&["--ro-bind", "/dev/null", f]);
            }
        }
        push(&["--cap-drop", "ALL"]);
        if procs::is_root() {
            for c in KEPT_CAPS {
                push(&["--cap-add", c]);
            }
        }
        push(&["--chdir", "/"]);
        let fd = AGENT_FD.to_string();
        if self.agent.is_some() {
            push(&[&agent_bin, "--listen-fd", &fd]);
        } else {
            push(&[&agent_bin, "__agent", "--listen-fd", &fd]);
        }
        Ok(OwnerPlan {
            cgroup_procs: self.cgroups.as_ref().map(|c| c.procs_files(&spec.id)).unwrap_or_default(),
            overlays,
            protect_from_oom: procs::is_root(),
            bwrap: a,
            net,
            log_file: Some(p.log_file()),
            seccomp: true,
            open_files: Some(spec.limits.open_files),
            data_dir: p.dir.parent().and_then(Path::parent).map(Path::to_path_buf),
            own_disk: p.disk_image().exists().then(|| p.disk_mount()),
            userns: sandbox_map.map(|map| UsernsPlan { map, mounts: idmapped }),
        })
    }
}

/// The directories every sandbox's storage has (idempotent). Spare disks
/// get them ahead of time (see `disk::spare`): on a fresh ext4 each first
/// directory costs reads through the loop device, off the create's path.
pub(crate) fn skeleton(p: &heyvm_core::paths::SandboxPaths) -> BackendResult<()> {
    let mkdir = |d: &Path| fs::create_dir_all(d).map_err(|e| io_err("creating", d, e));
    let root = p.root();
    for d in [p.workspace(), root.clone()] {
        mkdir(&d)?;
    }
    for d in SYSTEM_DIRS {
        for base in [p.upper(), p.overlay_work(), p.merged()] {
            mkdir(&base.join(d))?;
        }
    }
    for (d, mode) in [("tmp", 0o1777), ("root", 0o700), ("home", 0o755), ("mnt", 0o755), ("srv", 0o755), ("run", 0o755)] {
        let path = root.join(d);
        mkdir(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(|e| io_err("chmod", &path, e))?;
    }
    // Mirror the host's top-level symlinks (merged-/usr layouts: /bin -> usr/bin).
    if let Ok(entries) = fs::read_dir("/") {
        for e in entries.flatten() {
            if let Ok(target) = fs::read_link(e.path()) {
                let link = root.join(e.file_name());
                if link.symlink_metadata().is_err() {
                    std::os::unix::fs::symlink(&target, &link).map_err(|er| io_err("symlinking", &link, er))?;
                }
            }
        }
    }
    Ok(())
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> BackendError {
    BackendError::io(format!("{what} {}", path.display()), e)
}

#[async_trait]
impl Backend for BubblewrapBackend {
    fn name(&self) -> &'static str {
        "bubblewrap"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["bwrap"]
    }

    fn limits_enforced(&self) -> bool {
        self.inner.cgroups.is_some()
    }

    async fn open(&self, sandboxes: &Path) {
        let want = net::spare::wanted();
        if procs::is_root() && net::tools_present() {
            let dir = sandboxes.to_path_buf();
            let _ = tokio::task::spawn_blocking(move || net::spare::open(&dir, want)).await;
        }
        if let (Ok(()), Some(data)) = (&self.inner.disks, sandboxes.parent()) {
            let (data, bytes) = (data.to_path_buf(), heyvm_types::SizeClass::default().limits().disk_bytes);
            let _ = tokio::task::spawn_blocking(move || crate::disk::spare::open(&data, bytes, want)).await;
        }
        if let Some(cg) = self.inner.cgroups.clone() {
            let (exe, dir) = (self.inner.heyvm_exe.clone(), sandboxes.to_path_buf());
            let _ = tokio::task::spawn_blocking(move || parked::open(&exe, &cg, &dir)).await;
        }
    }

    async fn close(&self) {
        let cg = self.inner.cgroups.clone();
        let _ = tokio::task::spawn_blocking(move || {
            net::spare::close();
            parked::close(cg.as_ref());
            crate::disk::spare::close();
        })
        .await;
    }

    fn supports_images(&self) -> bool {
        true
    }

    fn image_writable_layer(&self, paths: &heyvm_core::paths::SandboxPaths) -> Option<PathBuf> {
        Some(crate::rootfs::writable_layer(paths))
    }

    fn network_warning(&self, spec: &LaunchSpec) -> Option<String> {
        net::choose_why(spec, procs::is_root()).1.map(String::from)
    }

    fn prepare(&self, spec: &LaunchSpec) -> BackendResult<()> {
        let p = &spec.paths;
        let mkdir = |d: &Path| fs::create_dir_all(d).map_err(|e| io_err("creating", d, e));
        if self.inner.disks.is_ok() && !p.disk_image().exists() {
            mkdir(&p.dir)?;
            // A spare disk (made ahead of time) when one of this size is ready.
            if !crate::disk::spare::take(p, spec.limits.disk_bytes) {
                crate::disk::create(p, spec.limits.disk_bytes).map_err(|e| BackendError::io("creating the sandbox disk", e))?;
            }
        }
        skeleton(p)
    }

    async fn launch(&self, spec: &LaunchSpec) -> BackendResult<Arc<dyn Instance>> {
        Ok(Arc::new(instance::launch(self.inner.clone(), spec).await?))
    }

    async fn attach(&self, spec: &LaunchSpec) -> BackendResult<Option<Arc<dyn Instance>>> {
        Ok(BwrapInstance::attach(self.inner.clone(), spec).map(|i| Arc::new(i) as Arc<dyn Instance>))
    }

    async fn cleanup(&self, spec: &LaunchSpec) -> BackendResult<()> {
        instance::release(&self.inner, spec, None).await
    }

    fn open_storage(&self, spec: &LaunchSpec) -> BackendResult<()> {
        if spec.paths.disk_image().exists() {
            crate::disk::mount(&spec.paths).map_err(|e| BackendError::io("mounting the sandbox disk", e))?;
        }
        Ok(())
    }

    fn remove_files(&self, spec: &LaunchSpec) -> BackendResult<()> {
        crate::disk::unmount(&spec.paths);
        heyvm_core::backend::remove_tree(&spec.paths.dir);
        Ok(())
    }

    fn disk_usage(&self, spec: &LaunchSpec) -> Option<heyvm_core::backend::DiskUsage> {
        crate::disk::usage(&spec.paths)
    }

    fn grow_disk(&self, spec: &LaunchSpec) -> BackendResult<DiskGrowth> {
        let p = &spec.paths;
        if !p.disk_image().exists() {
            return Err(BackendError::Unsupported { backend: "bubblewrap", what: "growing the disk of a sandbox without a disk limit" });
        }
        let bytes = spec.limits.disk_bytes;
        let io = |e| BackendError::io("growing the sandbox disk", e);
        if crate::disk::grow_online(p, bytes).map_err(io)? {
            return Ok(DiskGrowth::Done);
        }
        // Without CAP_SYS_RESOURCE: offline, now if the sandbox is not
        // running, else at its next start.
        if !instance::owner_alive(spec) && crate::disk::grow_offline(p, bytes).is_ok() {
            return Ok(DiskGrowth::Done);
        }
        Ok(DiskGrowth::NextStart)
    }

    /// A filesystem checkpoint (see [`checkpoint`]): files only, so
    /// processes are restarted on restore and fork.
    async fn checkpoint(&self, spec: &LaunchSpec, _running: bool, name: &str) -> BackendResult<heyvm_types::CheckpointInfo> {
        let (s, n) = (spec.clone(), name.to_string());
        tokio::task::spawn_blocking(move || checkpoint::take(&s, &n)).await.map_err(|e| BackendError::Failed(format!("checkpoint: {e}")))?
    }

    fn checkpoints(&self, spec: &LaunchSpec) -> Vec<heyvm_types::CheckpointInfo> {
        checkpoint::list(&spec.paths)
    }

    fn delete_checkpoint(&self, spec: &LaunchSpec, name: &str) -> BackendResult<()> {
        checkpoint::remove(&spec.paths, name)
    }

    async fn stage_checkpoint(&self, from: &LaunchSpec, name: &str, to: &LaunchSpec) -> BackendResult<heyvm_types::ProcessFate> {
        let (f, n, t, maps) = (from.clone(), name.to_string(), to.clone(), self.inner.maps_ids());
        tokio::task::spawn_blocking(move || checkpoint::stage(&f, &n, &t, maps))
            .await
            .map_err(|e| BackendError::Failed(format!("restore: {e}")))??;
        Ok(heyvm_types::ProcessFate::Restarted)
    }

    fn storage_warning(&self, spec: &LaunchSpec) -> Option<String> {
        match &self.inner.disks {
            Err(why) => Some(format!("the disk is not limited on this host: {why}")),
            Ok(()) if !spec.paths.disk_image().exists() => {
                Some("this sandbox was created before disk limits; its disk is not limited (recreate it to get one)".into())
            }
            Ok(()) => None,
        }
    }
}

//! From a sandbox's [`LaunchSpec`] to a running QEMU: disks, initramfs,
//! network, 9p shares, the kernel command line the guest init reads.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use heyvm_core::LaunchSpec;
use heyvm_types::NetworkMode;

use crate::assets::VmAssets;
use crate::error::{VmError, VmResult};
use crate::qemu::{Accel, Disk, Machine, Share, VmSpec};
use crate::vmproc::{self, VmLayout, VmProcess};

/// The smallest guest that boots the default image comfortably.
pub const MIN_MEMORY_MIB: u64 = 256;

/// What the backend decided once for all its VMs.
#[derive(Debug, Clone)]
pub struct HostSetup {
    pub assets: VmAssets,
    pub accel: Accel,
    /// Why this accelerator (the probe's verdict).
    pub accel_reason: String,
    pub initrd: PathBuf,
    pub image: String,
    /// The host's cgroups, where QEMU gets its size class's limits
    /// ([`crate::cgroup`]); None without root or usable controllers.
    pub cgroups: Option<heyvm_backends::cgroups::Cgroups>,
    /// Whether this QEMU has seccomp (`-sandbox`, [`crate::confine`]).
    pub seccomp: bool,
}

/// The read-only base disk a VM's root overlay sits on: the image's (built
/// from its layers once) or the default VM image.
pub fn base_disk(spec: &LaunchSpec, host: &HostSetup) -> VmResult<PathBuf> {
    if spec.image_layers.is_empty() {
        return Ok(host.assets.image(&host.image));
    }
    crate::image_disk::ensure(&host.assets.dir, &spec.image_layers)
}

/// Creates the VM's `/workspace` disk if missing. The root overlay waits
/// for the first launch, which knows the image's layers.
pub fn prepare_disks(spec: &LaunchSpec) -> VmResult<()> {
    let layout = VmLayout::new(&spec.paths.dir);
    std::fs::create_dir_all(&layout.dir).map_err(|e| VmError::io(format!("creating {}", layout.dir.display()), e))?;
    if !layout.workspace_disk().exists() {
        let tmp = layout.workspace_disk().with_extension("ext4.tmp");
        crate::disk::create_ext4(&tmp, workspace_bytes(spec), "workspace")
            .and_then(|()| std::fs::rename(&tmp, layout.workspace_disk()))
            .map_err(|e| VmError::io("workspace disk", e))?;
    }
    Ok(())
}

/// Makes a new VM's `/workspace` disk hold the tree `dir` (a deploy
/// archive the daemon unpacked): a fresh file system built from it
/// replaces the empty one [`prepare_disks`] made. Never for a VM that runs.
pub fn import_workspace(spec: &LaunchSpec, dir: &Path) -> VmResult<()> {
    let layout = VmLayout::new(&spec.paths.dir);
    if vmproc::find(&layout).is_some() {
        return Err(VmError::WorkspaceInUse);
    }
    std::fs::create_dir_all(&layout.dir).map_err(|e| VmError::io(format!("creating {}", layout.dir.display()), e))?;
    let tmp = layout.workspace_disk().with_extension("ext4.tmp");
    crate::disk::create_ext4_from(&tmp, workspace_bytes(spec), "workspace", Some(dir))
        .and_then(|()| std::fs::rename(&tmp, layout.workspace_disk()))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            VmError::io("writing the archive into the workspace disk", e)
        })
}

/// The `/workspace` disk's size: the sandbox's disk limit.
pub fn workspace_bytes(spec: &LaunchSpec) -> u64 {
    match spec.limits.disk_bytes {
        0 => crate::disk::WORKSPACE_BYTES,
        b => b,
    }
}

/// Position of the `/workspace` disk in [`VmSpec::disks`] (the root
/// overlay is first).
pub const WORKSPACE_DISK: usize = 1;

/// Grows a running VM's `/workspace` disk to its limit: QEMU makes the
/// disk file and the guest's virtio-blk device larger (`block_resize`);
/// the file system on it is the guest agent's to grow (`grow_fs`).
pub fn grow_live(spec: &LaunchSpec) -> VmResult<u64> {
    let layout = VmLayout::new(&spec.paths.dir);
    let bytes = workspace_bytes(spec);
    let size = std::fs::metadata(layout.workspace_disk()).map_err(|e| VmError::io("the workspace disk", e))?.len();
    if size < bytes {
        let mut qmp = crate::qmp::Qmp::connect(&layout.qmp_socket(), std::time::Duration::from_secs(30))?;
        qmp.execute("block_resize", serde_json::json!({ "device": crate::qemu::drive_id(WORKSPACE_DISK), "size": bytes }))?;
    }
    Ok(bytes)
}

/// Grows a stopped VM's `/workspace` disk to its limit (after a resize).
pub fn grow_workspace(spec: &LaunchSpec) -> VmResult<bool> {
    let disk = VmLayout::new(&spec.paths.dir).workspace_disk();
    if !disk.exists() {
        return Ok(false); // made at its full size by the next start
    }
    crate::disk::grow_ext4(&disk, workspace_bytes(spec)).map_err(|e| VmError::io("growing the workspace disk", e))
}

/// vCPUs for a CPU limit in thousandths of a core: rounded up, at least 1,
/// at most the host's CPUs (more only adds contention under TCG).
pub fn vcpus(millicpu: u32) -> u32 {
    let host = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    millicpu.div_ceil(1000).clamp(1, host.max(1))
}

/// Guest RAM in MiB for a memory limit.
pub fn memory_mib(bytes: u64) -> u64 {
    (bytes >> 20).max(MIN_MEMORY_MIB)
}

/// A guest path is handed to the guest on the kernel command line: no
/// whitespace, no `:` (the field separator), absolute.
fn check_guest_path(p: &str) -> VmResult<()> {
    if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c == ':' || c.is_control()) || p.split('/').any(|c| c == "..") {
        return Err(VmError::GuestPath(p.to_string()));
    }
    Ok(())
}

/// How a sandbox's host mounts reach its guest.
#[derive(Debug, PartialEq)]
struct MountPlan {
    /// Per mount: whether it is a 9p share of its own.
    shared: Vec<bool>,
    /// See [`VmSpec::read_only_binds`].
    read_only_binds: Vec<PathBuf>,
}

/// 9p shares directories only. A file mount is served by a directory mount
/// that already shows it at the same guest path (`heyvm wt`'s worktree
/// `.git` inside the worktree at `/workspace`); any other file mount is
/// refused with a reason, not left to QEMU's "Not a directory". A read-only
/// mount that a writable share also shows (that `.git` again: host git
/// trusts it, so the sandbox must not rewrite it) is made read-only on the
/// host side, for QEMU itself: a guest's own read-only mount is the guest
/// kernel's to undo.
fn plan_mounts(mounts: &[heyvm_types::MountSpec]) -> VmResult<MountPlan> {
    let real = |p: &str| std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p));
    let hosts: Vec<PathBuf> = mounts.iter().map(|m| real(&m.host_path)).collect();
    let dirs: Vec<bool> = hosts.iter().map(|h| h.is_dir()).collect();
    let mut plan = MountPlan { shared: vec![true; mounts.len()], read_only_binds: Vec::new() };
    for (i, m) in mounts.iter().enumerate() {
        let inside = |j: usize| j != i && dirs[j] && hosts[i] != hosts[j] && hosts[i].starts_with(&hosts[j]);
        if m.read_only && (0..mounts.len()).any(|j| inside(j) && !mounts[j].read_only) {
            plan.read_only_binds.push(hosts[i].clone());
        }
        if !hosts[i].is_file() {
            continue;
        }
        let shown = (0..mounts.len()).any(|j| {
            inside(j)
                && hosts[i]
                    .strip_prefix(&hosts[j])
                    .is_ok_and(|rel| Path::new(&mounts[j].sandbox_path).join(rel) == Path::new(&m.sandbox_path))
        });
        if !shown {
            return Err(VmError::FileMount(m.host_path.clone()));
        }
        plan.shared[i] = false;
    }
    Ok(plan)
}

/// Whether these host mounts can reach a guest at all (guest paths, file
/// mounts), without making anything: the backend's `check_mounts`.
pub fn check_mounts(mounts: &[heyvm_types::MountSpec]) -> VmResult<()> {
    for m in mounts {
        check_guest_path(&m.sandbox_path)?;
    }
    plan_mounts(mounts).map(drop)
}

/// Everything but the process: the QEMU spec for this sandbox.
pub fn vm_spec(spec: &LaunchSpec, host: &HostSetup, net: Option<&GuestNet>) -> VmResult<VmSpec> {
    let layout = VmLayout::new(&spec.paths.dir);
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let mut cmdline = format!(
        "heyvm.root=serial:root heyvm.ws=serial:workspace heyvm.hostname={} heyvm.time={now_ms} heyvm.pids={}",
        spec.hostname, spec.limits.pids
    );
    let mut shares = Vec::new();
    let plan = plan_mounts(&spec.mounts)?;
    for (i, m) in spec.mounts.iter().enumerate() {
        check_guest_path(&m.sandbox_path)?;
        if !plan.shared[i] {
            continue;
        }
        let tag = format!("m{i}");
        cmdline.push_str(&format!(" heyvm.share={tag}:{}{}", m.sandbox_path, if m.read_only { ":ro" } else { "" }));
        shares.push(Share { tag, host_path: PathBuf::from(&m.host_path), read_only: m.read_only });
    }
    if let Some(n) = net {
        cmdline.push_str(&format!(" heyvm.ip={}/30 heyvm.gw={}", n.ip, n.gateway));
        if !n.dns.is_empty() {
            cmdline.push_str(&format!(" heyvm.dns={}", n.dns.join(",")));
        }
        if let Some(mtu) = n.mtu {
            cmdline.push_str(&format!(" heyvm.mtu={mtu}"));
        }
    }
    Ok(VmSpec {
        machine: Machine::Microvm,
        accel: host.accel,
        vcpus: vcpus(spec.limits.millicpu),
        memory_mib: memory_mib(spec.limits.memory_bytes),
        kernel: host.assets.kernel(),
        initrd: host.initrd.clone(),
        cmdline,
        disks: vec![
            Disk { path: layout.overlay(), format: "qcow2", serial: "root".into(), read_only: false },
            Disk { path: layout.workspace_disk(), format: "raw", serial: "workspace".into(), read_only: false },
        ],
        shares,
        read_only_binds: plan.read_only_binds,
        agent_socket: layout.agent_socket(),
        qmp_socket: layout.qmp_socket(),
        console_log: layout.console_log(),
        tap: net.map(|_| crate::net::TAP.to_string()),
        mac: net.map(|_| crate::net::mac_for(&spec.id)),
        incoming_fd: None,
        runas: crate::confine::user_for(spec)?,
        seccomp: host.seccomp,
    })
}

/// The guest's side of a `nat` network.
#[derive(Debug, Clone)]
pub struct GuestNet {
    pub ip: String,
    pub gateway: String,
    pub dns: Vec<String>,
    pub mtu: Option<u32>,
    pub netns_path: PathBuf,
}

/// Builds the sandbox's namespace (shared code with bubblewrap) and hands
/// its address to the guest through a bridged tap.
pub fn setup_network(spec: &LaunchSpec) -> VmResult<Option<GuestNet>> {
    if spec.network.mode != NetworkMode::Nat {
        return Ok(None);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(VmError::NatNeedsRoot);
    }
    let owner_net = heyvm_backends::net::setup(spec)?;
    let netns_path = owner_net.netns.clone().ok_or(VmError::NetShape("has no namespace"))?;
    let routed = (|| {
        let netns = netns_path.file_name().and_then(|n| n.to_str()).ok_or(VmError::NetShape("has a bad namespace path"))?.to_string();
        let ip = heyvm_backends::net::guest_ip(spec).ok_or(VmError::NetShape("has no address"))?;
        let gateway = crate::net::gateway_for(&ip).ok_or(VmError::NetShape("has a bad address"))?;
        crate::net::route_tap(&netns, &ip, &gateway)?;
        crate::net::guard_source(&netns, &ip)?;
        // The egress policy, in the namespace's forward hook: loaded before
        // QEMU starts, so the guest never sends a packet without it.
        if let Some(script) = &owner_net.nft_script {
            crate::net::apply_policy(&netns, &heyvm_backends::net::policy::for_forwarding(script, crate::net::TAP))?;
        }
        Ok::<_, VmError>(GuestNet { dns: crate::net::host_nameservers(), mtu: crate::net::eth0_mtu(&netns), ip, gateway, netns_path })
    })();
    if routed.is_err() {
        heyvm_backends::net::teardown(spec);
    }
    routed.map(Some)
}

/// Starts the VM: network, QEMU. The disks must exist ([`prepare_disks`]).
pub fn start(spec: &LaunchSpec, host: &HostSetup) -> VmResult<VmProcess> {
    let layout = VmLayout::new(&spec.paths.dir);
    prepare_disks(spec)?;
    // Not under a checkpoint's memory: the restored guest has the disk's
    // old file system mounted, an offline resize under it would corrupt it.
    if !crate::snapshot::restore_pending(&layout) {
        grow_workspace(spec)?;
    }
    if !layout.overlay().exists() {
        // Held until the overlay is registered as a user of the base disk.
        let (base, _pin) = crate::image_prune::pinned(|| base_disk(spec, host))?;
        let tmp = layout.overlay().with_extension("qcow2.tmp");
        crate::disk::create_overlay(&base, &tmp)
            .and_then(|()| std::fs::rename(&tmp, layout.overlay()))
            .and_then(|()| crate::image_prune::register(&layout.overlay()))
            .map_err(|e| VmError::io("root disk", e))?;
    }
    crate::rootcap::admit(spec, &layout)?;
    let net = setup_network(spec)?;
    let mut vm = vm_spec(spec, host, net.as_ref())?;
    let mut handover = crate::confine::Handover::default();
    // A restore or fork staged a checkpoint: load its memory instead of booting.
    if let Some(memory) = crate::snapshot::take_restore_marker(&layout) {
        if !vm.shares.is_empty() {
            return Err(VmError::RestoreWithMounts);
        }
        let file = std::fs::File::open(&memory).map_err(|e| VmError::io(format!("opening {}", memory.display()), e))?;
        vm.incoming_fd = Some(std::os::fd::AsRawFd::as_raw_fd(&file));
        handover.incoming = Some(file);
    }
    if let Some(user) = vm.runas {
        handover.trees = crate::confine::share_trees(&spec.id, &vm.shares, &user);
    }
    // Each boot starts a fresh console log; the previous one is kept once.
    let _ = std::fs::rename(layout.console_log(), layout.dir.join("console.prev.log"));
    let _ = std::fs::remove_file(layout.qemu_log());
    let undo = |e: VmError| {
        heyvm_backends::net::teardown(spec);
        if let Some(cg) = &host.cgroups {
            cg.remove(&spec.id);
        }
        e
    };
    let join = match &host.cgroups {
        Some(cg) => Some(crate::cgroup::create(cg, spec).map_err(|e| undo(VmError::io("setting up the VM's cgroups", e)))?),
        None => None,
    };
    let process = vmproc::spawn(&vm, &layout, net.as_ref().map(|n| n.netns_path.as_path()), join.as_ref(), &handover)
        .map_err(|e| undo(VmError::Spawn(e)))?;
    drop(handover);
    if vm.incoming_fd.is_some() {
        if let Err(e) = resume_incoming(&layout, &process) {
            process.kill();
            wait_gone(&process, std::time::Duration::from_secs(5));
            return Err(undo(VmError::Restore(e)));
        }
    }
    write_owner(spec, process.pid, net.as_ref().map(|n| n.ip.as_str()));
    Ok(process)
}

/// `owner.json` in the sandbox's directory, as a bubblewrap sandbox's
/// owner writes it (`{pid, guest_ip}`): the process that holds the VM
/// (QEMU, in a session of its own) and the guest's address (none with
/// `network: none`). For people and tools; the daemon itself finds a VM
/// by `vm/run/qemu.pid` and QEMU's command line. Best effort: the VM runs
/// without it.
fn write_owner(spec: &LaunchSpec, pid: i32, guest_ip: Option<&str>) {
    let mut owner = serde_json::json!({ "pid": pid });
    if let Some(ip) = guest_ip {
        owner["guest_ip"] = ip.into();
    }
    if let Err(e) = std::fs::write(spec.paths.owner_json(), owner.to_string()) {
        tracing::warn!(sandbox = %spec.id, "writing owner.json: {e}");
    }
}

/// Waits for QEMU to load the checkpoint's memory, then lets the vCPUs run.
fn resume_incoming(layout: &VmLayout, process: &VmProcess) -> crate::error::QmpResult<()> {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut qmp = loop {
        match crate::qmp::Qmp::connect(&layout.qmp_socket(), Duration::from_secs(30)) {
            Ok(q) => break q,
            Err(e) if Instant::now() > deadline || process.alive() == Some(false) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    qmp.wait_incoming(Duration::from_secs(120))?;
    qmp.execute("cont", serde_json::json!({})).map(|_| ())
}

/// Stops the VM's QEMU and removes its network and cgroups. Files stay.
pub fn stop(spec: &LaunchSpec, cgroups: Option<&heyvm_backends::cgroups::Cgroups>) {
    if let Some(p) = vmproc::find(&VmLayout::new(&spec.paths.dir)) {
        p.kill();
        wait_gone(&p, std::time::Duration::from_secs(5));
    }
    let _ = std::fs::remove_file(spec.paths.owner_json());
    if let Some(cg) = cgroups {
        // Whatever is left in there (QEMU's threads on their way out).
        cg.kill_all(&spec.id);
        cg.remove(&spec.id);
    }
    heyvm_backends::net::teardown(spec);
}

fn wait_gone(p: &VmProcess, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while p.alive() == Some(true) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Whether a sandbox directory holds a VM (used to pick files paths).
pub fn is_vm_dir(dir: &Path) -> bool {
    VmLayout::new(dir).overlay().exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_mounts_ride_on_a_directory_share_and_read_only_ones_are_bound_read_only() {
        let t = tempfile::tempdir().unwrap();
        let (wt, other) = (t.path().join("wt"), t.path().join("other"));
        std::fs::create_dir_all(&wt).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(wt.join(".git"), "gitdir: /r/.git/worktrees/wt\n").unwrap();
        std::fs::write(other.join("f"), "").unwrap();
        let m = |h: &Path, at: &str, ro: bool| heyvm_types::MountSpec::host(h.display().to_string(), at, ro);
        // `heyvm wt`: the worktree at /workspace, its .git read-only over it.
        let plan = plan_mounts(&[m(&wt, "/workspace", false), m(&wt.join(".git"), "/workspace/.git", true)]).unwrap();
        assert_eq!(plan, MountPlan { shared: vec![true, false], read_only_binds: vec![wt.join(".git")] });
        // A read-only directory inside a writable share is bound read-only too, and still shared.
        let plan = plan_mounts(&[m(t.path(), "/all", false), m(&other, "/ro", true)]).unwrap();
        assert_eq!(plan, MountPlan { shared: vec![true, true], read_only_binds: vec![other.clone()] });
        // Inside a read-only share only: nothing to bind.
        let plan = plan_mounts(&[m(t.path(), "/all", true), m(&other, "/ro", true)]).unwrap();
        assert!(plan.read_only_binds.is_empty(), "{plan:?}");
        // A file no directory share shows at its path: refused, naming it.
        for mounts in [vec![m(&other.join("f"), "/f", true)], vec![m(&other, "/o", false), m(&other.join("f"), "/elsewhere/f", false)]] {
            let e = plan_mounts(&mounts).unwrap_err().to_string();
            assert!(e.contains("is a file") && e.contains("other/f"), "{e}");
            // The check a create or `POST /mounts` gets says the same, beforehand.
            assert_eq!(check_mounts(&mounts).unwrap_err().to_string(), e);
        }
        assert!(check_mounts(&[m(&wt, "/workspace", false), m(&wt.join(".git"), "/workspace/.git", true)]).is_ok());
        // A guest path the kernel command line cannot carry.
        let e = check_mounts(&[m(&other, "/a:b", false)]).unwrap_err().to_string();
        assert!(e.contains("/a:b"), "{e}");
    }

    #[test]
    fn sizes_and_paths() {
        assert_eq!(vcpus(250), 1);
        assert!(vcpus(8000) >= 1);
        assert_eq!(memory_mib(512 << 20), 512);
        assert_eq!(memory_mib(1), MIN_MEMORY_MIB);
        assert!(check_guest_path("/data").is_ok());
        for bad in ["data", "/a b", "/a:b", "/a/../b", "/x\n"] {
            assert!(check_guest_path(bad).is_err(), "{bad}");
        }
    }
}

//! One running bubblewrap sandbox: its owner process (which became bwrap),
//! cgroups and network, and the agent's listening socket.
//!
//! The daemon creates that socket in the sandbox's directory on the host,
//! which is never mounted inside, and the agent inherits the listening
//! descriptor (fd 3) through the owner and bwrap. So the daemon reaches the
//! agent by a path the sandbox cannot see or replace, also after a daemon
//! restart.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use heyvm_core::agent::AgentTransport;
use heyvm_core::backend::{BackendError, BackendResult, Instance, Liveness};
use heyvm_core::{LaunchSpec, Usage};
use heyvm_types::Limits;
use serde::{Deserialize, Serialize};

use super::Inner;
use crate::net::{self, OwnerNet};
use crate::owner::AGENT_FD;
use crate::procs;

/// `owner.json`: how a later daemon finds the sandbox again (the owner
/// process, bwrap after its exec) and, once the network is up, the
/// sandbox's address.
#[derive(Serialize, Deserialize)]
struct OwnerFile {
    pid: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    guest_ip: Option<String>,
}

pub struct BwrapInstance {
    inner: Arc<Inner>,
    spec: LaunchSpec,
    owner_pid: i32,
    /// Polls readable once the owner has exited; immune to pid reuse.
    pidfd: Option<OwnedFd>,
}

/// The owner's and bwrap's command line marker: `/sandboxes/<id>/`, the
/// tail of the sandbox directory's path. Not the whole path: with a uid
/// range bwrap is handed the data directory's view (`data_view`), so its
/// paths start `/run/heyvm-data/` rather than with the data directory.
fn marker(spec: &LaunchSpec) -> String {
    let dir = &spec.paths.dir;
    let name = |p: Option<&std::path::Path>| p.and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!("/{}/{}/", name(dir.parent()), name(Some(dir)))
}

fn failed(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(format!("{what}: {e}"))
}

pub(super) async fn launch(inner: Arc<Inner>, spec: &LaunchSpec) -> BackendResult<BwrapInstance> {
    let p = &spec.paths;
    // Where a launch's time goes, at debug level (HEYVM_LOG=heyvm_backends=debug).
    let t0 = std::time::Instant::now();
    let mut phases: Vec<(&str, u64)> = Vec::new();
    let mut mark = |name: &'static str| phases.push((name, t0.elapsed().as_micros() as u64));
    if p.disk_image().exists() {
        let (paths, bytes) = (p.clone(), spec.limits.disk_bytes);
        tokio::task::spawn_blocking(move || crate::disk::ready(&paths, bytes))
            .await
            .map_err(|e| failed("disk setup", e))?
            .map_err(|e| BackendError::io("mounting the sandbox disk", e))?;
    }
    mark("disk");
    // A parked owner brings cgroups it already sits in (see `parked`).
    let parked = inner.cgroups.as_ref().and_then(|cg| super::parked::take(&inner.heyvm_exe, cg, &spec.id, &spec.limits));
    if let (Some(cg), None) = (&inner.cgroups, &parked) {
        cg.create(&spec.id, &spec.limits).map_err(|e| failed("setting up cgroups", e))?;
    }
    mark("cgroups");
    if inner.maps_ids() && spec.ids.is_none() {
        return Err(BackendError::Failed("no uid/gid range could be allocated for this sandbox".into()));
    }
    let choice = net::choose(spec, procs::is_root());
    let owner_net = if choice == net::Choice::Nat {
        let s = spec.clone();
        tokio::task::spawn_blocking(move || {
            let mut n = net::setup(&s)?;
            // The egress policy goes in from here, in-process, before the
            // owner (and so any sandbox process) enters the namespace.
            if let (Some(path), Some(script)) = (&n.netns, &n.nft_script) {
                if let Err(e) = net::nft::run_in(path, script) {
                    net::teardown(&s);
                    return Err(e);
                }
                n.nft_script = None;
            }
            Ok(n)
        })
        .await
        .map_err(|e| failed("network setup", e))?
        .map_err(|e: net::NetError| failed("setting up the sandbox network", e))?
    } else {
        OwnerNet::default()
    };
    mark("network");
    let mut plan = inner.plan(spec, owner_net)?;
    if parked.is_some() {
        plan.cgroup_procs.clear();
    }
    if let Some(range) = spec.ids.filter(|_| inner.maps_ids()) {
        // After the plan, which may have made a fresh image layer.
        let s = spec.clone();
        tokio::task::spawn_blocking(move || super::ownership::ensure(&s, &range))
            .await
            .map_err(|e| failed("shifting ownership", e))?
            .map_err(|e| failed("moving the sandbox's files into its uid range", e))?;
    }
    mark("plan");
    let plan_json = serde_json::to_vec_pretty(&plan).map_err(|e| failed("encoding the launch plan", e))?;
    fs::write(p.launch_json(), plan_json).map_err(|e| BackendError::io("writing the launch plan", e))?;
    let listener = agent_listener(spec)?;
    let log = fs::File::create(p.owner_log()).map_err(|e| BackendError::io("creating owner.log", e))?;
    let (pid, pidfd) = match parked {
        Some(owner) => {
            super::parked::start(owner, &p.launch_json(), &listener, &log).map_err(|e| failed("starting the parked sandbox owner", e))?
        }
        None => spawn_owner(&inner, spec, &listener, log)?,
    };
    drop(listener);
    fs::write(p.owner_json(), serde_json::to_vec(&OwnerFile { pid, guest_ip: None }).unwrap_or_default())
        .map_err(|e| BackendError::io("writing owner.json", e))?;
    if choice == net::Choice::Slirp {
        let s = spec.clone();
        tokio::task::spawn_blocking(move || net::slirp::attach(&s, pid))
            .await
            .map_err(|e| failed("network setup", e))?
            .map_err(|e| failed("setting up the sandbox network", e))?;
    }
    if let Some(ip) = net::guest_ip(spec) {
        fs::write(p.owner_json(), serde_json::to_vec(&OwnerFile { pid, guest_ip: Some(ip) }).unwrap_or_default())
            .map_err(|e| BackendError::io("writing owner.json", e))?;
    }
    mark("owner spawned");
    tracing::debug!(sandbox = %spec.id, ?phases, "launch phases (µs since start)");
    Ok(BwrapInstance { inner, spec: spec.clone(), owner_pid: pid, pidfd })
}

/// Starts a sandbox owner (`heyvm __sandbox_owner <plan>`) the ordinary
/// way; returns its pid and pidfd. A thread reaps it when it exits.
fn spawn_owner(inner: &Inner, spec: &LaunchSpec, listener: &UnixListener, log: fs::File) -> BackendResult<(i32, Option<OwnedFd>)> {
    let mut cmd = std::process::Command::new(&inner.heyvm_exe);
    cmd.arg("__sandbox_owner").arg(spec.paths.launch_json());
    cmd.stdin(Stdio::null()).stdout(log.try_clone().map_err(|e| BackendError::io("owner.log", e))?).stderr(log);
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let lfd = listener.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec. A new
    // session keeps terminal signals aimed at the daemon away from the
    // sandbox; the listening socket lands on AGENT_FD without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if lfd == AGENT_FD {
                libc::fcntl(lfd, libc::F_SETFD, 0);
            } else if libc::dup2(lfd, AGENT_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| failed("spawning the sandbox owner", e))?;
    let pid = child.id() as i32;
    let pidfd = pidfd_open(pid).ok();
    // Reap it when it exits; if the daemon dies first, init does.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok((pid, pidfd))
}

/// The agent's listening socket, in the sandbox directory on the host,
/// reachable by the daemon's user only.
fn agent_listener(spec: &LaunchSpec) -> BackendResult<UnixListener> {
    let path = spec.paths.agent_socket();
    let _ = fs::remove_file(&path);
    let l = UnixListener::bind(&path).map_err(|e| BackendError::io(format!("binding {}", path.display()), e))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|e| BackendError::io("chmod agent socket", e))?;
    Ok(l)
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn recorded_owner(spec: &LaunchSpec) -> Option<i32> {
    let f: OwnerFile = serde_json::from_slice(&fs::read(spec.paths.owner_json()).ok()?).ok()?;
    Some(f.pid)
}

/// Whether the sandbox's processes run (whoever launched them).
pub(super) fn owner_alive(spec: &LaunchSpec) -> bool {
    recorded_owner(spec).is_some_and(|p| procs::alive_with(p, &marker(spec)))
}

impl BwrapInstance {
    /// The sandbox an earlier daemon launched, if its owner still runs.
    pub(super) fn attach(inner: Arc<Inner>, spec: &LaunchSpec) -> Option<Self> {
        let pid = recorded_owner(spec)?;
        // The pidfd pins the process; checking the marker after opening it
        // rules out a reused pid.
        let pidfd = pidfd_open(pid).ok();
        procs::alive_with(pid, &marker(spec)).then(|| BwrapInstance { inner, spec: spec.clone(), owner_pid: pid, pidfd })
    }

    /// The init of the sandbox's pid namespace (bwrap's child).
    fn init_pid(&self) -> Option<i32> {
        procs::children(self.owner_pid).first().copied()
    }
}

/// Kills a sandbox's processes (the owner `pid`, else the one recorded) and
/// releases its cgroups, network and agent socket.
pub(super) async fn release(inner: &Inner, spec: &LaunchSpec, pid: Option<i32>) -> BackendResult<()> {
    let marker = marker(spec);
    let owner = pid.or_else(|| recorded_owner(spec)).filter(|&p| procs::alive_with(p, &marker));
    if let Some(pid) = owner {
        // Killing the namespace's init (bwrap's child) takes down every
        // process in the sandbox's pid namespace at once.
        for c in procs::children(pid) {
            procs::sigkill(c);
        }
        procs::sigkill(pid);
    }
    // A sandbox that never ran (a create's launch checks first) has
    // nothing to release: no thread hand-off for a few existence checks.
    let cgroups_exist = || inner.cgroups.as_ref().is_some_and(|cg| cg.dirs(&spec.id).iter().any(|d| d.exists()));
    if owner.is_none() && !cgroups_exist() && !net::present(spec) {
        let _ = fs::remove_file(spec.paths.owner_json());
        let _ = fs::remove_file(spec.paths.agent_socket());
        return Ok(());
    }
    let cgroups = inner.cgroups.clone();
    let spec2 = spec.clone();
    tokio::task::spawn_blocking(move || {
        let t0 = std::time::Instant::now();
        if let Some(cg) = &cgroups {
            cg.kill_all(&spec2.id);
        }
        let killed = t0.elapsed().as_micros() as u64;
        // Wait for the owner to be reaped so liveness turns Dead.
        for _ in 0..500 {
            if !owner.is_some_and(|p| procs::alive_with(p, &marker)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let reaped = t0.elapsed().as_micros() as u64;
        if let Some(cg) = &cgroups {
            cg.remove(&spec2.id);
        }
        let removed = t0.elapsed().as_micros() as u64;
        net::teardown(&spec2);
        let torn = t0.elapsed().as_micros() as u64;
        tracing::debug!(sandbox = %spec2.id, killed, reaped, removed, torn, "release phases (µs)");
    })
    .await
    .map_err(|e| failed("releasing the sandbox", e))?;
    let _ = fs::remove_file(spec.paths.owner_json());
    let _ = fs::remove_file(spec.paths.agent_socket());
    Ok(())
}

#[async_trait]
impl Instance for BwrapInstance {
    fn liveness(&self) -> Liveness {
        let Some(fd) = &self.pidfd else {
            return if procs::alive_with(self.owner_pid, &marker(&self.spec)) { Liveness::Alive } else { Liveness::Dead };
        };
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, zero timeout.
        match unsafe { libc::poll(&mut p, 1, 0) } {
            0 => Liveness::Alive,
            n if n > 0 => Liveness::Dead,
            _ => Liveness::Unknown,
        }
    }

    async fn kill(&self) -> BackendResult<()> {
        release(&self.inner, &self.spec, Some(self.owner_pid)).await
    }

    fn usage(&self) -> Usage {
        self.inner.cgroups.as_ref().map(|c| c.usage(&self.spec.id)).unwrap_or_default()
    }

    fn oom_kills(&self) -> u64 {
        self.inner.cgroups.as_ref().map(|c| c.oom_kills(&self.spec.id)).unwrap_or_default()
    }

    fn set_limits(&self, limits: &Limits) -> BackendResult<()> {
        match &self.inner.cgroups {
            Some(cg) => cg.set_limits(&self.spec.id, limits).map_err(|e| failed("updating limits", e)),
            None => Ok(()),
        }
    }

    async fn connect_agent(&self) -> BackendResult<AgentTransport> {
        let path = self.spec.paths.agent_socket();
        let s = tokio::net::UnixStream::connect(&path).await.map_err(|e| BackendError::io("connecting to the agent", e))?;
        Ok(Box::new(s))
    }

    fn failure_reason(&self) -> Option<String> {
        let log = fs::read_to_string(self.spec.paths.owner_log()).ok()?;
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        (!lines.is_empty()).then(|| lines[lines.len().saturating_sub(3)..].join("; "))
    }

    fn guest_ip(&self) -> Option<String> {
        net::guest_ip(&self.spec)
    }

    fn pids(&self) -> Vec<u32> {
        let pids = self.inner.cgroups.as_ref().map(|c| c.pids(&self.spec.id)).unwrap_or_default();
        pids.into_iter().filter_map(|p| u32::try_from(p).ok()).collect()
    }

    /// Renaming needs root: the daemon joins the sandbox's UTS namespace.
    fn supports_rename(&self) -> bool {
        procs::is_root()
    }

    fn set_hostname(&self, hostname: &str) -> BackendResult<()> {
        if !procs::is_root() {
            return Err(BackendError::Unsupported { backend: "bubblewrap", what: "renaming a running sandbox without root" });
        }
        let init = self.init_pid().ok_or(BackendError::NotRunning)?;
        let ns = fs::File::open(format!("/proc/{init}/ns/uts")).map_err(|e| BackendError::io("opening the UTS namespace", e))?;
        let name = hostname.to_string();
        // setns(CLONE_NEWUTS) only moves the calling thread: a short-lived
        // thread keeps the daemon's own threads in the host namespace.
        std::thread::spawn(move || -> std::io::Result<()> {
            // SAFETY: setns/sethostname with a valid fd and buffer.
            unsafe {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUTS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::sethostname(name.as_ptr().cast(), name.len()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
        .join()
        .map_err(|_| BackendError::Failed("hostname thread panicked".into()))?
        .map_err(|e| BackendError::io("setting the hostname", e))
    }
}

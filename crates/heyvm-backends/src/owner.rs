//! The sandbox owner: a short-lived step between the daemon and bwrap
//! (`heyvm __sandbox_owner <plan.json>`). It joins the sandbox's cgroups,
//! protects the sandbox's init from the OOM killer, mounts the
//! copy-on-write system layers in a private mount namespace (so they vanish
//! with the sandbox and never leak into the host's), enters the sandbox's
//! network namespace and loads its egress rules (see `net`), and execs bwrap. It
//! runs in its own session, so the sandbox outlives the daemon.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The descriptor number of the agent's listening socket, from the owner
/// through bwrap to the agent.
pub(crate) const AGENT_FD: i32 = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overlay {
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnerPlan {
    pub cgroup_procs: Vec<PathBuf>,
    pub overlays: Vec<Overlay>,
    pub protect_from_oom: bool,
    /// Full argv, starting with the bwrap binary.
    pub bwrap: Vec<String>,
    #[serde(default)]
    pub net: crate::net::OwnerNet,
    /// The sandbox log (JSON lines) that the owner's own lines also go to,
    /// as source `owner`, so `heyvm logs` shows them.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// Hand bwrap the seccomp filter (see `seccomp`).
    #[serde(default)]
    pub seccomp: bool,
    /// RLIMIT_NOFILE (soft and hard) for everything in the sandbox.
    #[serde(default)]
    pub open_files: Option<u64>,
    /// The data directory: overlay paths under it are given to the kernel
    /// relative to it, so the sandbox's /proc/self/mountinfo never shows it.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The sandbox's own disk mount; every other sandbox disk is detached
    /// from the owner's mount namespace (see `disk::detach_foreign`).
    #[serde(default)]
    pub own_disk: Option<PathBuf>,
    /// Root only: the sandbox's user namespace and the idmapped mounts made
    /// for it before bwrap runs (see `idmap`).
    #[serde(default)]
    pub userns: Option<UsernsPlan>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsernsPlan {
    /// Inside ids to the sandbox's host range.
    pub map: crate::idmap::IdMap,
    pub mounts: Vec<crate::idmap::IdmappedMount>,
}

/// Never returns on success (the process becomes bwrap).
pub fn run(plan_path: &std::path::Path) -> io::Result<()> {
    let plan: OwnerPlan = serde_json::from_slice(&std::fs::read(plan_path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let r = become_bwrap(&plan);
    if let Err(e) = &r {
        log(&plan, &format!("error: {e}"));
    }
    r
}

/// A parked owner (see `bubblewrap::parked`): waits for its plan, then
/// runs it. Never returns on success; Ok when the daemon went away first.
pub fn run_parked() -> io::Result<()> {
    match crate::handoff::receive_plan(AGENT_FD)? {
        Some(plan) => {
            // Parked by a background (niced) thread; the sandbox runs at
            // the normal priority.
            crate::procs::normal_priority();
            run(&plan)
        }
        None => Ok(()),
    }
}

/// A line in `owner.log` (stderr) and in the sandbox log. The sandbox can
/// write to its log file between runs, so it is opened without following
/// symlinks and only appended to when it is a regular file.
fn log(plan: &OwnerPlan, msg: &str) {
    eprintln!("heyvm-owner[{}]: {msg}", std::process::id());
    let Some(path) = &plan.log_file else { return };
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().append(true).create(true).mode(0o644).custom_flags(libc::O_NOFOLLOW).open(path);
    if let Ok(mut f) = file {
        if f.metadata().is_ok_and(|m| m.is_file()) {
            let _ = f.write_all(&heyvm_protocol::LogLine::new("owner", msg).to_jsonl());
        }
    }
}

/// Where the owner's setup time goes, for its last log line: a create's
/// latency is mostly this plus bwrap's own start.
struct Steps {
    last: std::time::Instant,
    done: Vec<(String, f64)>,
}

impl Steps {
    fn new() -> Self {
        Steps { last: std::time::Instant::now(), done: Vec::new() }
    }

    fn mark(&mut self, step: impl Into<String>) {
        let now = std::time::Instant::now();
        self.done.push((step.into(), (now - self.last).as_secs_f64() * 1e3));
        self.last = now;
    }

    /// `12.3 ms (user namespace 1.0, …)`, leaving out steps under 0.05 ms.
    fn summary(&self) -> String {
        let total: f64 = self.done.iter().map(|(_, ms)| ms).sum();
        let parts: Vec<String> = self.done.iter().filter(|(_, ms)| *ms >= 0.05).map(|(s, ms)| format!("{s} {ms:.1}")).collect();
        format!("{total:.1} ms ({})", parts.join(", "))
    }
}

fn become_bwrap(plan: &OwnerPlan) -> io::Result<()> {
    let mut steps = Steps::new();
    log(plan, &format!("sandbox owner started (pid {})", std::process::id()));
    let pid = std::process::id().to_string();
    for f in &plan.cgroup_procs {
        std::fs::write(f, &pid).map_err(|e| io::Error::new(e.kind(), format!("joining {}: {e}", f.display())))?;
    }
    steps.mark("joining cgroups");
    if let Some(n) = plan.open_files {
        set_open_files(n)?;
    }
    if plan.protect_from_oom {
        // Inherited by bwrap's init and the agent; the agent resets it to 0
        // for every command it runs.
        let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    }
    // Made before any mount: the idmapped views need its descriptor.
    let userns = plan.userns.as_ref().map(|u| crate::idmap::new_userns(&u.map)).transpose()?;
    steps.mark("user namespace");
    // Opened before the mounts: the namespace files of other sandboxes (and
    // spares) are detached from this owner's mount namespace below.
    let netns = match &plan.net.netns {
        Some(path) => Some(std::fs::File::open(path).map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?),
        None => None,
    };
    // Where bwrap, as the sandbox's mapped root, finds the data directory.
    let mut data_view = None;
    if !plan.overlays.is_empty() || userns.is_some() {
        // SAFETY: plain syscalls on this single-threaded process.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(err("unshare(CLONE_NEWNS)"));
            }
            let root = CString::new("/").expect("no NUL");
            if libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
                return Err(err("making mounts private"));
            }
        }
        steps.mark("mount namespace");
        if let Some(own) = &plan.own_disk {
            let n = crate::disk::detach_foreign(own);
            steps.mark(format!("detaching {n} other sandboxes' disks"));
        }
        // A copy of every pinned network namespace would keep each alive
        // for as long as this sandbox runs, long after its own is deleted.
        crate::net::netns::detach_all();
        if let (Some(u), Some(ns)) = (&plan.userns, &userns) {
            mount_idmapped(plan, u, ns)?;
        }
        if let Some(d) = &plan.data_dir {
            std::env::set_current_dir(d).map_err(|e| io::Error::new(e.kind(), format!("entering {}: {e}", d.display())))?;
        }
        for o in &plan.overlays {
            mount_overlay(o, plan.data_dir.as_deref())?;
        }
        std::env::set_current_dir("/")?;
        if let (Some(d), Some(_)) = (&plan.data_dir, &userns) {
            crate::data_view::mount(d)?;
            data_view = Some(d.as_path());
        }
    }
    steps.mark("mounts");
    enter_network(&plan.net, netns)?;
    steps.mark("network");
    if plan.net.netns.is_some() {
        log(plan, "entered the sandbox's network namespace");
    }

    log(plan, &format!("starting bwrap after {} of setup; the agent becomes the sandbox's first process", steps.summary()));
    let mut bwrap = plan.bwrap.clone();
    if let Some(d) = data_view {
        crate::data_view::rewrite(&mut bwrap, d);
    }
    if plan.seccomp {
        if let Some(fd) = crate::seccomp::filter_fd()? {
            // Inherited by bwrap, which reads and installs it.
            let fd = std::os::fd::IntoRawFd::into_raw_fd(fd);
            bwrap.splice(1..1, ["--seccomp".to_string(), fd.to_string()]);
        }
    }
    if let Some(ns) = &userns {
        // Last: from here on the owner has no privilege on the host (and
        // cannot open the host-owned log file).
        crate::idmap::enter(ns)?;
    }
    let argv: Vec<CString> = bwrap
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in argument")))
        .collect::<io::Result<_>>()?;
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let env = [CString::new("PATH=/usr/sbin:/usr/bin:/sbin:/bin").expect("no NUL")];
    let envp = [env[0].as_ptr(), std::ptr::null()];
    // SAFETY: argv/envp are NUL-terminated arrays of valid C strings that
    // outlive the call.
    unsafe { libc::execve(ptrs[0], ptrs.as_ptr(), envp.as_ptr()) };
    Err(err("exec bwrap"))
}

/// Joins the prepared network namespace, then configures it from inside
/// (sysctls under /proc/sys/net apply to the caller's namespace).
fn enter_network(net: &crate::net::OwnerNet, ns: Option<std::fs::File>) -> io::Result<()> {
    let (Some(path), Some(ns)) = (&net.netns, ns) else { return Ok(()) };
    // SAFETY: setns on a valid namespace descriptor.
    if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) } != 0 {
        return Err(err(&format!("entering network namespace {}", path.display())));
    }
    for (file, value) in &net.sysctls {
        std::fs::write(file, value).map_err(|e| io::Error::new(e.kind(), format!("setting {file}: {e}")))?;
    }
    if let Some(script) = &net.nft_script {
        crate::net::nft::run(script).map_err(|e| io::Error::other(format!("loading the egress policy: {e}")))?;
    }
    Ok(())
}

/// Lowers the hard and soft limit on open files (lowering needs no
/// privilege; raising past the current hard limit would).
fn set_open_files(n: u64) -> io::Result<()> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(err("getrlimit(RLIMIT_NOFILE)"));
        }
        let n = n.min(lim.rlim_max);
        lim = libc::rlimit { rlim_cur: n, rlim_max: n };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(err("setrlimit(RLIMIT_NOFILE)"));
        }
    }
    Ok(())
}

/// The shared layers through the sandbox's namespace, user mounts through
/// one namespace per distinct host owner.
fn mount_idmapped(plan: &OwnerPlan, u: &UsernsPlan, sandbox_ns: &std::os::fd::OwnedFd) -> io::Result<()> {
    let mut others: Vec<(crate::idmap::IdMap, std::os::fd::OwnedFd)> = Vec::new();
    for m in &u.mounts {
        let ns = if m.map == u.map {
            sandbox_ns
        } else {
            if !others.iter().any(|(map, _)| *map == m.map) {
                others.push((m.map.clone(), crate::idmap::new_userns(&m.map)?));
            }
            &others.iter().find(|(map, _)| *map == m.map).expect("just added").1
        };
        match crate::idmap::mount_idmapped(m, ns) {
            Ok(()) => {}
            // A user mount on a filesystem without idmapping support (FUSE,
            // NFS…): a plain bind, where root inside is nobody to the
            // directory's files, rather than no sandbox.
            Err(e) if m.host_dir => {
                log(plan, &format!("warning: {e}; {} is mounted without id mapping", m.source.display()));
                crate::idmap::mount_plain(m)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `path` relative to `base` when it lies under it (the owner's working
/// directory is `base` while it mounts).
fn hidden(path: &str, base: Option<&Path>) -> String {
    match base.and_then(|b| Path::new(path).strip_prefix(b).ok()) {
        Some(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.to_string(),
    }
}

fn mount_overlay(o: &Overlay, base: Option<&Path>) -> io::Result<()> {
    let lower: Vec<String> = o.lower.display().to_string().split(':').map(|l| hidden(l, base)).collect();
    let (upper, work) = (hidden(&o.upper.display().to_string(), base), hidden(&o.work.display().to_string(), base));
    let opts = format!("lowerdir={},upperdir={upper},workdir={work}", lower.join(":"));
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"));
    let (src, target, fstype, data) = (c("overlay")?, c(&o.merged.display().to_string())?, c("overlay")?, c(&opts)?);
    // SAFETY: all pointers are valid C strings for the duration of the call.
    let r = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast()) };
    if r != 0 {
        return Err(err(&format!("mounting overlay on {}", o.merged.display())));
    }
    Ok(())
}

fn err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

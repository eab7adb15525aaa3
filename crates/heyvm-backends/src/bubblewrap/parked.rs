//! Parked owners: pre-provisioned cgroups with a sandbox owner process
//! already inside. On cgroup v1 the first write of a pid to a
//! `cgroup.procs` costs ~6–15 ms (the kernel waits for an RCU grace period
//! before it may move a task), and starting the owner (exec of the heyvm
//! binary) a few more; both happen here ahead of time, so a launch only
//! renames the cgroups to the sandbox's id, sets its limits and hands the
//! owner its plan.
//!
//! A parked owner (`heyvm __sandbox_owner_parked`) blocks reading its
//! stdin, one end of a `SOCK_SEQPACKET` pair, for the plan's path and two
//! descriptors (the agent's listening socket, the owner log); then it is an
//! ordinary owner that skips joining cgroups. It never ran anything of a
//! sandbox before, so nothing passes from one sandbox to another. If the
//! daemon dies its socket closes and parked owners exit; their cgroups
//! (`heyvm/spare-<key>-<hex>`, key from the data directory as for spare
//! networks, so daemons on other data directories keep theirs) are removed
//! when the next daemon on that directory starts, and at shutdown. Only on
//! cgroup v1 (v2 cannot rename a cgroup, and does not pay that cost).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cgroups::Cgroups;
use crate::stock::{random_tag, Stock};

/// One parked owner.
pub(super) struct Parked {
    /// Its cgroups' name (`spare-<key>-<hex>`).
    name: String,
    pub pid: i32,
    pub pidfd: Option<OwnedFd>,
    sock: OwnedFd,
}

static STOCK: Stock<Parked> = Stock::new();

/// The data directory's key (see [`crate::net::spare::key_of`]), once opened.
static KEY: AtomicU32 = AtomicU32::new(0);

const PREFIX: &str = "spare-";

/// How many to keep: as many as spare networks (`HEYVM_SPARES`), the
/// two go together on a first start.
fn wanted() -> usize {
    crate::net::spare::wanted()
}

/// This data directory's prefix of parked cgroup names.
fn prefix(key: u16) -> String {
    format!("{PREFIX}{key:04x}-")
}

/// At daemon start: removes parked cgroups a killed daemon on the same data
/// directory (`sandboxes`) left (their owners exited with it, or are killed
/// here) and starts parking owners.
pub(super) fn open(exe: &Path, cg: &Cgroups, sandboxes: &Path) {
    if !matches!(cg, Cgroups::V1 { .. }) {
        return;
    }
    let key = crate::net::spare::key_of(sandboxes);
    remove_leftovers(cg, key);
    KEY.store(u32::from(key), Ordering::Relaxed);
    STOCK.open(wanted());
    refill(exe.to_path_buf(), cg.clone());
}

fn remove_leftovers(cg: &Cgroups, key: u16) {
    // Only this data directory's: other daemons (tests run several at
    // once) park owners under the same cgroup root.
    let ours = prefix(key);
    let mut names: Vec<String> = Vec::new();
    for d in cg.dirs("") {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&ours) && !names.contains(&n) {
                names.push(n);
            }
        }
    }
    for n in names.into_iter().filter(|n| !STOCK.any(|p| &p.name == n)) {
        tracing::info!(cgroup = %n, "removing a parked sandbox owner left by an earlier daemon");
        cg.kill_all(&n);
        cg.remove(&n);
    }
}

/// Daemon shutdown: ends every parked owner and removes its cgroups.
pub(super) fn close(cg: Option<&Cgroups>) {
    for p in STOCK.close() {
        discard(p, cg);
    }
}

fn discard(p: Parked, cg: Option<&Cgroups>) {
    drop(p.sock);
    crate::procs::sigkill(p.pid);
    if let Some(cg) = cg {
        cg.kill_all(&p.name);
        cg.remove(&p.name);
    }
}

/// A parked owner whose cgroups now carry `id`'s name (the sandbox's own
/// cgroups must not exist yet) and `limits`; None when there is none ready
/// or the handover failed (the caller launches the ordinary way).
pub(super) fn take(exe: &Path, cg: &Cgroups, id: &str, limits: &heyvm_types::Limits) -> Option<Parked> {
    let p = STOCK.take();
    refill(exe.to_path_buf(), cg.clone());
    let p = p?;
    let alive = p.pidfd.as_ref().is_some_and(|fd| {
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut pfd, 1, 0) == 0 }
    });
    if !alive {
        discard(p, Some(cg));
        return None;
    }
    match cg.rename(&p.name, id).and_then(|()| cg.set_limits(id, limits)) {
        Ok(()) => Some(p),
        Err(e) => {
            tracing::warn!(error = %e, "could not hand a parked owner's cgroups over; launching without it");
            // Whatever got renamed already is the sandbox's now; its
            // processes are the parked owner's.
            cg.kill_all(id);
            cg.remove(id);
            discard(p, Some(cg));
            None
        }
    }
}

/// Hands the parked owner its plan, the agent's listening socket and the
/// log it writes to; it then runs like any owner.
pub(super) fn start(p: Parked, plan: &Path, listener: &impl AsRawFd, log: &impl AsRawFd) -> io::Result<(i32, Option<OwnedFd>)> {
    let path = plan.as_os_str().as_encoded_bytes();
    crate::handoff::send_with_fds(&p.sock, path, &[listener.as_raw_fd(), log.as_raw_fd()])?;
    Ok((p.pid, p.pidfd))
}

fn refill(exe: PathBuf, cg: Cgroups) {
    let key = KEY.load(Ordering::Relaxed) as u16;
    let cg2 = cg.clone();
    STOCK.refill("a parked sandbox owner", move || park(&exe, &cg, key), move |p| discard(p, Some(&cg2)));
}

/// Starts one owner and moves it into fresh cgroups of its own.
fn park(exe: &Path, cg: &Cgroups, key: u16) -> io::Result<Parked> {
    let name = format!("{}{}", prefix(key), random_tag());
    let mut fds = [0i32; 2];
    // SAFETY: socketpair into a two-element array.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors we own.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("__sandbox_owner_parked");
    cmd.stdin(Stdio::from(theirs)).stdout(Stdio::null()).stderr(Stdio::null());
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    // SAFETY: setsid is async-signal-safe. A session of its own, as for
    // any owner: the sandbox it becomes outlives the daemon.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    // SAFETY: pidfd_open with a pid we just spawned (not yet reaped).
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    // SAFETY: a fresh descriptor, when the call succeeded.
    let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) });
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    let joined = (|| {
        cg.create(&name, &heyvm_types::SizeClass::default().limits())?;
        for f in cg.procs_files(&name) {
            fs::write(&f, pid.to_string()).map_err(|e| io::Error::new(e.kind(), format!("joining {}: {e}", f.display())))?;
        }
        Ok(())
    })();
    let p = Parked { name, pid, pidfd, sock: ours };
    if let Err(e) = joined {
        discard(p, Some(cg));
        return Err(e);
    }
    Ok(p)
}

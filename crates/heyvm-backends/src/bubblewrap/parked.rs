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
//! when the next daemon on that directory starts, and at shutdown. Only on cgroup v1 (v2 cannot rename a cgroup, and does not pay
//! that cost).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use crate::cgroups::Cgroups;

/// One parked owner.
pub(super) struct Parked {
    /// Its cgroups' name (`spare-<hex>`).
    name: String,
    pub pid: i32,
    pub pidfd: Option<OwnedFd>,
    sock: OwnedFd,
}

#[derive(Default)]
struct State {
    ready: Vec<Parked>,
    want: usize,
    filling: bool,
    closed: bool,
    opened: bool,
    /// The data directory's key (see [`crate::net::spare::key_of`]).
    key: u16,
}

static STATE: Mutex<State> = Mutex::new(State { ready: Vec::new(), want: 0, filling: false, closed: false, opened: false, key: 0 });

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

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
    {
        let mut s = state();
        s.key = key;
        s.want = wanted();
        s.opened = true;
        s.closed = false;
    }
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
    let live: Vec<String> = state().ready.iter().map(|p| p.name.clone()).collect();
    for n in names.into_iter().filter(|n| !live.contains(n)) {
        tracing::info!(cgroup = %n, "removing a parked sandbox owner left by an earlier daemon");
        cg.kill_all(&n);
        cg.remove(&n);
    }
}

/// Daemon shutdown: ends every parked owner and removes its cgroups.
pub(super) fn close(cg: Option<&Cgroups>) {
    let ready = {
        let mut s = state();
        s.closed = true;
        std::mem::take(&mut s.ready)
    };
    for p in ready {
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
    let p = {
        let mut s = state();
        if !s.opened || s.closed {
            return None;
        }
        s.ready.pop()
    };
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
    send_with_fds(&p.sock, path, &[listener.as_raw_fd(), log.as_raw_fd()])?;
    Ok((p.pid, p.pidfd))
}

fn refill(exe: PathBuf, cg: Cgroups) {
    {
        let mut s = state();
        if s.closed || s.filling || s.ready.len() >= s.want {
            return;
        }
        s.filling = true;
    }
    std::thread::spawn(move || loop {
        let more = {
            let s = state();
            !s.closed && s.ready.len() < s.want
        };
        if !more {
            state().filling = false;
            return;
        }
        match park(&exe, &cg) {
            Ok(p) => {
                let mut s = state();
                if s.closed {
                    drop(s);
                    discard(p, Some(&cg));
                } else {
                    s.ready.push(p);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not park a sandbox owner; parking paused until the next launch");
                state().filling = false;
                return;
            }
        }
    });
}

/// Starts one owner and moves it into fresh cgroups of its own.
fn park(exe: &Path, cg: &Cgroups) -> io::Result<Parked> {
    let mut buf = [0u8; 4];
    // SAFETY: getrandom into a buffer we own.
    unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    let name = format!("{}{}", prefix(state().key), buf.iter().map(|b| format!("{b:02x}")).collect::<String>());
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

/// Sends `data` with descriptors attached (SCM_RIGHTS).
fn send_with_fds(sock: &OwnedFd, data: &[u8], fds: &[i32]) -> io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: msghdr over buffers that outlive sendmsg; the control header
    // is filled through the CMSG macros within `control`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), fd_bytes);
        if libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Owner side: waits on stdin for the plan path and two descriptors, puts
/// them in place (listener on the agent's descriptor, log on stdout and
/// stderr, /dev/null on stdin) and returns the plan's path. None when the
/// daemon went away first.
pub fn receive_plan(agent_fd: i32) -> io::Result<Option<PathBuf>> {
    let mut data = vec![0u8; 4096];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE((2 * std::mem::size_of::<i32>()) as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
    let mut fds = Vec::new();
    // SAFETY: recvmsg into buffers we own; the control data is read
    // through the CMSG macros within `control`.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let n = loop {
            let n = libc::recvmsg(0, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break n;
            }
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<i32>();
                let p = libc::CMSG_DATA(c).cast::<i32>();
                for i in 0..count {
                    fds.push(std::ptr::read_unaligned(p.add(i)));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        n as usize
    };
    if n == 0 {
        return Ok(None);
    }
    let [listener, log] = fds[..] else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the plan came without its two descriptors"));
    };
    // SAFETY: dup2/fcntl/open/close on descriptors this process owns; the
    // log goes to 1 and 2 before anything may land on the agent's number.
    unsafe {
        for target in [1, 2] {
            if libc::dup2(log, target) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if listener != agent_fd && libc::dup2(listener, agent_fd) < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::fcntl(agent_fd, libc::F_SETFD, 0);
        for fd in [listener, log] {
            if fd > 2 && fd != agent_fd {
                libc::close(fd);
            }
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        if null >= 0 {
            libc::dup2(null, 0);
            if null != 0 && null != agent_fd {
                libc::close(null);
            }
        }
    }
    data.truncate(n);
    Ok(Some(PathBuf::from(String::from_utf8(data).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "plan path"))?)))
}

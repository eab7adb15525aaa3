//! One exec request: spawn, stream output frames, enforce the timeout, kill
//! the process group if the host goes away.

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use heyvm_protocol::{encode, encode_json, read_frame, write_json, Event, ExecSpec, ExitStatus, Frame, FrameKind};

/// How long to keep forwarding output after the command exits: a background
/// child that inherited the pipes must not hold the exec open forever.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// What an exec and a shell check before they start: the working
/// directory exists, and the user (None: the agent's own) resolves in the
/// sandbox's passwd/group. Err is the message for the host.
pub(crate) fn where_and_who(cwd: &str, user: Option<&str>) -> Result<Option<crate::user::Ident>, String> {
    if !Path::new(cwd).is_dir() {
        return Err(format!("working directory '{cwd}' does not exist in the sandbox"));
    }
    crate::user::resolve(user)
}

pub fn run(mut conn: UnixStream, spec: ExecSpec) -> io::Result<()> {
    if spec.argv.is_empty() {
        return write_json(&mut conn, &Event::Error { message: "empty command".into() });
    }
    let user = match where_and_who(&spec.cwd, spec.user.as_deref()) {
        Ok(u) => u,
        Err(message) => return write_json(&mut conn, &Event::Error { message }),
    };
    let tag = exec_tag();
    let mut env: std::collections::BTreeMap<String, String> = spec.env.clone();
    if let Some(id) = &user {
        env.extend(crate::user::env_for(id, &spec.env));
    }
    env.insert(TAG_VAR.into(), tag.clone());
    let env: Vec<(String, String)> = env.into_iter().collect();
    let started = Instant::now();
    // The timeout guard thread is created before the command starts: once a
    // fork bomb is running, the sandbox's pids limit leaves no room for it.
    let timed_out = Arc::new(AtomicBool::new(false));
    let timer = match spec.timeout_ms {
        Some(ms) => Some(timeout_guard(Duration::from_millis(ms), timed_out.clone())?),
        None => None,
    };
    let mut child = match start(&spec, &env, user.as_ref()) {
        Ok(c) => c,
        Err(e) => return report_spawn_failure(&mut conn, &spec.argv[0], e),
    };
    let tree = Tree { pgid: child.pid, tag: Arc::new(tag) };
    if let Some(t) = &timer {
        let _ = t.send(tree.clone());
    }
    // One thread per exec: poll() over the output pipes, the host
    // connection and a pidfd for the exit. (Thread-per-pipe cost ~0.3 ms per
    // exec in wake-ups and thread creation.)
    let pidfd = pidfd_open(child.pid)?;
    conn.write_all(&encode_json(&Event::Started { pid: child.pid as u32 }))?;
    let mut pipes: [Option<(File, FrameKind)>; 2] = [Some((child.stdout, FrameKind::Stdout)), Some((child.stderr, FrameKind::Stderr))];
    // Stdin is written without blocking: a command that never reads it
    // must not stall this loop (its output, its exit, the host going away).
    let mut stdin = child.stdin.take().map(StdinPipe::new);
    let mut host_gone = false;
    let mut status = None;
    let mut drain_until: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if status.is_some() && pipes.iter().all(Option::is_none) {
            break;
        }
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(4);
        let poll_in = |fd: i32| libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        for p in pipes.iter().flatten() {
            fds.push(poll_in(p.0.as_raw_fd()));
        }
        // While the command's stdin backlog is full, host frames wait in
        // the socket (and so, by flow control, on the host); a hang-up is
        // still reported.
        let throttled = stdin.as_ref().is_some_and(StdinPipe::full);
        let conn_slot = (!host_gone).then(|| {
            fds.push(libc::pollfd { fd: conn.as_raw_fd(), events: if throttled { 0 } else { libc::POLLIN }, revents: 0 });
            fds.len() - 1
        });
        let stdin_slot = stdin.as_ref().filter(|s| s.pending()).map(|s| {
            fds.push(libc::pollfd { fd: s.fd(), events: libc::POLLOUT, revents: 0 });
            fds.len() - 1
        });
        let pid_slot = status.is_none().then(|| {
            fds.push(poll_in(pidfd.as_raw_fd()));
            fds.len() - 1
        });
        let wait_ms = match drain_until {
            Some(t) => {
                let left = t.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                left.as_millis() as i32 + 1
            }
            None => -1,
        };
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if pid_slot.is_some_and(|i| fds[i].revents != 0) {
            status = Some(wait_for(child.pid)?);
            // A background child that inherited the pipes must not hold the
            // exec open: forward what comes within the drain window.
            drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
        }
        let mut slot = 0;
        for pipe in pipes.iter_mut() {
            let Some((file, kind)) = pipe else { continue };
            let ready = fds[slot].revents != 0;
            slot += 1;
            if !ready {
                continue;
            }
            match file.read(&mut buf) {
                Ok(0) => *pipe = None,
                Ok(n) if !host_gone => {
                    if conn.write_all(&encode(*kind, &buf[..n])).is_err() {
                        host_gone = true;
                        if !spec.background && status.is_none() {
                            tree.kill();
                        }
                    }
                }
                Ok(_) => {} // host gone: drain so the command never blocks
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => *pipe = None,
            }
        }
        if stdin_slot.is_some_and(|i| fds[i].revents != 0) && stdin.as_mut().is_some_and(|s| s.flush().is_err()) {
            stdin = None;
        }
        if stdin.as_ref().is_some_and(StdinPipe::finished) {
            stdin = None;
        }
        if conn_slot.is_some_and(|i| fds[i].revents != 0) {
            let frame = if throttled { Ok(None) } else { read_frame(&mut conn) };
            match frame {
                Ok(Some(Frame::Stdin(data))) => {
                    if stdin.as_mut().is_some_and(|s| s.push(data).is_err()) {
                        stdin = None;
                    }
                }
                Ok(Some(Frame::StdinEof)) => {
                    if let Some(s) = stdin.as_mut() {
                        s.eof = true;
                    }
                    if stdin.as_ref().is_some_and(StdinPipe::finished) {
                        stdin = None;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    // The host went away: kill the command unless it was
                    // started to outlive its connection.
                    host_gone = true;
                    if !spec.background && status.is_none() {
                        tree.kill();
                    }
                }
            }
        }
    }
    drop(timer);
    let timed_out = timed_out.load(Ordering::SeqCst);
    if timed_out {
        // Stragglers that left the group die with the command.
        tree.kill();
    }
    let Some(status) = status else { return Err(io::Error::other("exec loop ended before the command")) };
    if host_gone {
        return Ok(());
    }
    let signal = status.signal();
    let code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
    let exit = ExitStatus { code, signal, timed_out, duration_ms: started.elapsed().as_millis() as u64 };
    conn.write_all(&encode_json(&Event::Exit(exit)))
}

/// A thread that kills the command's tree when `after` has passed. It gets
/// the tree once the command is spawned, and ends early when the sender is
/// dropped (the command finished). A thread rather than a poll() deadline,
/// because the exec loop can block writing to a host that reads slowly.
fn timeout_guard(after: Duration, flag: Arc<AtomicBool>) -> io::Result<mpsc::Sender<Tree>> {
    let (tx, rx) = mpsc::channel::<Tree>();
    let deadline = Instant::now() + after;
    thread::Builder::new().spawn(move || {
        let Ok(tree) = rx.recv() else { return };
        let left = deadline.saturating_duration_since(Instant::now());
        if matches!(rx.recv_timeout(left), Err(mpsc::RecvTimeoutError::Timeout)) {
            flag.store(true, Ordering::SeqCst);
            tree.kill();
        }
    })?;
    Ok(tx)
}

/// A started command: its pid and the host ends of its pipes.
struct Started {
    pid: i32,
    stdin: Option<File>,
    stdout: File,
    stderr: File,
}

/// Starts `spec` (see [`crate::spawn`]) with piped output, stdin piped or
/// `/dev/null`, in its own session, as `user` if given.
fn start(spec: &ExecSpec, env: &[(String, String)], user: Option<&crate::user::Ident>) -> io::Result<Started> {
    let mut launch = crate::spawn::Spawn::new(&spec.argv, env, &spec.cwd)?;
    launch.identity = user.cloned();
    let (stdin_read, stdin_write) = if spec.stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        (OwnedFd::from(File::open("/dev/null")?), None)
    };
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    launch.stdio = [stdin_read.as_raw_fd(), stdout_write.as_raw_fd(), stderr_write.as_raw_fd()];
    let pid = launch.start()?;
    // The child's ends close here, so end of output is seen when it exits.
    Ok(Started { pid, stdin: stdin_write.map(File::from), stdout: File::from(stdout_read), stderr: File::from(stderr_read) })
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array; the result is checked.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reaps `pid` (the pidfd said it exited).
fn wait_for(pid: i32) -> io::Result<std::process::ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid status pointer.
        if unsafe { libc::waitpid(pid, &mut status, 0) } >= 0 {
            return Ok(std::process::ExitStatus::from_raw(status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn report_spawn_failure(conn: &mut UnixStream, program: &str, e: io::Error) -> io::Result<()> {
    // Mirror the shell: 127 for "not found", 126 for "cannot execute".
    let code = if e.kind() == ErrorKind::NotFound { 127 } else { 126 };
    let msg = if code == 127 { format!("heyvm: {program}: command not found\n") } else { format!("heyvm: {program}: {e}\n") };
    conn.write_all(&encode(FrameKind::Control, &serde_json::to_vec(&Event::Started { pid: 0 }).unwrap_or_default()))?;
    conn.write_all(&encode(FrameKind::Stderr, msg.as_bytes()))?;
    let exit = ExitStatus { code, signal: None, timed_out: false, duration_ms: 0 };
    write_json(conn, &Event::Exit(exit))
}

/// Environment variable that marks every process started by one exec. A
/// background child that calls `setsid` (or daemonizes) leaves the process
/// group, but keeps its inherited environment, so the tag still finds it.
const TAG_VAR: &str = "HEYVM_EXEC_TAG";

fn exec_tag() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The processes of one exec: its process group plus anything carrying its
/// tag.
#[derive(Clone)]
struct Tree {
    pgid: i32,
    tag: Arc<String>,
}

impl Tree {
    fn kill(&self) {
        kill_group(self.pgid);
        let needle = format!("{TAG_VAR}={}", self.tag).into_bytes();
        // Repeat while tagged processes remain: they may be forking. Bounded
        // by time, not rounds: on a loaded host a round of a fork bomb at
        // its pids limit can take long, and a survivor would bomb on.
        let deadline = Instant::now() + KILL_PATIENCE;
        while Instant::now() < deadline {
            let pids = tagged_pids(&needle);
            if pids.is_empty() {
                return;
            }
            for p in pids {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

fn tagged_pids(needle: &[u8]) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle)))
        .collect()
}

/// Puts the child in its own session (so its whole tree can be signalled
/// as one group), in a VM's process-limited cgroup ([`crate::guest_pids`])
/// and gives it a normal OOM score: the agent itself runs protected so the
/// OOM killer picks the command, not the agent.
pub fn isolate_child(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe functions (setsid, open, write, close).
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            prepare_command_process();
            Ok(())
        });
    }
}

/// What every command, shell and start command gets between fork and exec,
/// after its own session: the VM's process-limited cgroup
/// ([`crate::guest_pids`]) and a normal OOM score (the agent itself runs
/// protected, so the OOM killer picks the command, not the agent).
///
/// Only async-signal-safe calls (open, write, close on prebuilt paths): it
/// runs in the child of a multi-threaded process.
pub fn prepare_command_process() {
    crate::guest_pids::join();
    // SAFETY: open/write/close with a static C string and buffer.
    unsafe {
        let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
}

/// How long a kill keeps at a tree that keeps forking (the tag scan
/// finishes early: a zombie's environment reads empty).
const KILL_PATIENCE: Duration = Duration::from_secs(10);

/// SIGKILLs a process group until it is gone (a fork bomb keeps spawning
/// while the first kill is delivered).
pub fn kill_group(pgid: i32) {
    for _ in 0..200 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        if unsafe { libc::kill(-pgid, libc::SIGKILL) } != 0 {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
pub fn kill_group_gracefully(pgid: i32, grace: Duration) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    // SAFETY: signal 0 only checks for existence.
    while Instant::now() < deadline && unsafe { libc::kill(-pgid, 0) } == 0 {
        thread::sleep(Duration::from_millis(20));
    }
    kill_group(pgid);
}

/// The command's stdin, written without blocking: what the pipe does not
/// take at once waits in a bounded backlog.
struct StdinPipe {
    pipe: File,
    backlog: std::collections::VecDeque<u8>,
    /// The host sent end-of-input: close once the backlog is written.
    eof: bool,
}

/// Backlog beyond which host input is left unread (flow control then
/// holds it on the host).
const STDIN_BACKLOG: usize = 256 * 1024;

impl StdinPipe {
    fn new(pipe: File) -> Self {
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let fl = libc::fcntl(pipe.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(pipe.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        StdinPipe { pipe, backlog: std::collections::VecDeque::new(), eof: false }
    }

    fn fd(&self) -> i32 {
        self.pipe.as_raw_fd()
    }

    fn full(&self) -> bool {
        self.backlog.len() >= STDIN_BACKLOG
    }

    fn pending(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Everything written and the host is done: time to close the pipe.
    fn finished(&self) -> bool {
        self.eof && self.backlog.is_empty()
    }

    fn push(&mut self, data: Vec<u8>) -> io::Result<()> {
        self.backlog.extend(data);
        self.flush()
    }

    /// Writes what the pipe takes now; Err when the command closed it.
    fn flush(&mut self) -> io::Result<()> {
        while !self.backlog.is_empty() {
            let (head, _) = self.backlog.as_slices();
            match self.pipe.write(head) {
                Ok(n) => {
                    self.backlog.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

//! The in-sandbox agent. It runs as the first process inside a sandbox and
//! serves the host over one byte stream (protocol v2, see
//! `heyvm_protocol::mux`): a listening socket created outside the sandbox
//! and inherited (bubblewrap), or a virtio-serial port (a VM). Each stream
//! the host opens runs one request: an exec with streamed output, a shell,
//! a port connection, the start command, the log subscription, a file
//! operation, a shutdown.
//!
//! It depends only on the protocol crate, libc and std, so it builds as a
//! small static binary that runs in any root filesystem; it has no async
//! runtime, and a thread per stream keeps concurrent execs independent.

mod beneath;
mod connect;
mod exec;
mod file_error;
mod files;
mod files_write;
mod grow;
pub mod guest_init;
mod guest_names;
mod guest_net;
mod guest_pids;
mod logfile;
pub mod mux;
mod pty;
mod service;
mod spawn;
mod user;

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;

use heyvm_protocol::{decode_json, read_frame, write_json, Event, Frame, Request, PROTOCOL_VERSION};

pub use logfile::LogSink;
pub use mux::Source;

/// Parses the agent's command line and runs it; returns the exit code.
/// Shared by the `heyvm-agent` binary and `heyvm __agent`.
pub fn main_with_args(args: &[String]) -> i32 {
    // Everything the agent inherited stays its own: the listening socket
    // (a command holding it could accept the host's connections and speak
    // for the agent) and whatever the daemon's own parent left open.
    close_on_exec_from(3);
    let source = match args {
        [flag, fd] if flag == "--listen-fd" => match fd.parse::<i32>() {
            // SAFETY: the launcher handed us this descriptor for our own use.
            Ok(fd) if fd > 2 => Source::Listener(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }),
            _ => return usage(&format!("bad descriptor '{fd}'")),
        },
        [flag, path] if flag == "--port" => match std::fs::OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => Source::Stream(f.into()),
            Err(e) => return usage(&format!("cannot open {path}: {e}")),
        },
        _ => return usage("expected --listen-fd N or --port PATH"),
    };
    match run(source) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("heyvm-agent: {e}");
            1
        }
    }
}

/// Marks every descriptor from `first` up close-on-exec (the daemon uses
/// it too, so nothing its own parent left open reaches a sandbox): `close_range`
/// where the kernel (and heyvm's seccomp profile) allow it, else one by one
/// from `/proc/self/fd`.
pub fn close_on_exec_from(first: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes descriptor flags here.
    if unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) } == 0 {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<i32> = dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).filter(|&fd| fd >= first as i32).collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number; a stale one (the read_dir's own) fails harmlessly.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

fn usage(why: &str) -> i32 {
    eprintln!("heyvm-agent: {why}\nusage: heyvm-agent --listen-fd N | --port PATH");
    2
}

struct Shared {
    log: Arc<LogSink>,
    service: service::Service,
    /// False when the agent serves inside another program (a test double
    /// of a sandbox): then a shutdown signals nobody and exits nothing.
    owns_sandbox: bool,
}

/// Serves requests until a shutdown request arrives.
pub fn run(source: Source) -> io::Result<()> {
    // Ignored signals survive exec: a daemon started with `&` from a script
    // ignores SIGINT/SIGQUIT, and every command, start command and shell
    // would inherit that. Start the sandbox's processes from a clean slate.
    for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM] {
        // SAFETY: signal(2) with SIG_DFL has no memory-safety preconditions.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    serve_with(source, true)
}

/// Serves like [`run`] but inside a host program (tests without a
/// sandbox): commands run on the host as its user, and a shutdown request
/// is answered without signalling or exiting anything.
pub fn run_hosted(source: Source) -> io::Result<()> {
    serve_with(source, false)
}

fn serve_with(source: Source, owns_sandbox: bool) -> io::Result<()> {
    let shared = Arc::new(Shared { log: Arc::new(LogSink::default()), service: service::Service::default(), owns_sandbox });
    shared.log.system("agent started");
    mux::serve(source, move |conn| {
        if let Err(e) = handle(conn, &shared) {
            eprintln!("heyvm-agent: stream error: {e}");
        }
    })
}

fn handle(mut conn: UnixStream, shared: &Shared) -> io::Result<()> {
    let Some(Frame::Control(body)) = read_frame(&mut conn)? else {
        return Ok(());
    };
    match decode_json::<Request>(&body)? {
        Request::Ping { version } => {
            if version != PROTOCOL_VERSION {
                let message = format!("agent speaks protocol {PROTOCOL_VERSION}, host sent {version}");
                return write_json(&mut conn, &Event::Error { message });
            }
            write_json(&mut conn, &Event::Pong { version: PROTOCOL_VERSION, pid: std::process::id() })
        }
        Request::Exec(spec) => exec::run(conn, spec),
        Request::Shell(spec) => pty::run(conn, spec),
        Request::Resize { .. } => write_json(&mut conn, &Event::Error { message: "resize outside a shell connection".into() }),
        Request::Connect { port } => connect::run(conn, port),
        Request::StartService { command, env, cwd, user } => match shared.service.start(&command, &env, &cwd, user.as_deref(), &shared.log)
        {
            Ok(pid) => write_json(&mut conn, &Event::Started { pid }),
            Err(e) => write_json(&mut conn, &Event::Error { message: format!("start command failed: {e}") }),
        },
        Request::Logs => stream_logs(conn, &shared.log),
        Request::FileStat(r) => files::stat(conn, r),
        Request::FileList(r) => files::list(conn, r),
        Request::FileRead(r) => files::read(conn, r),
        Request::FileWrite(r) => files_write::write(conn, r),
        Request::FileRemove(r) => files::remove(conn, r),
        Request::ResetIdentity { time_ms, hostname, seed, ip, gateway } => {
            let net = ip.as_deref().map(|ip| (ip, gateway.as_deref()));
            match guest_init::reset_identity(time_ms, &hostname, &seed, net) {
                Ok(()) => write_json(&mut conn, &Event::Done),
                Err(e) => write_json(&mut conn, &Event::Error { message: format!("reset after restore: {e}") }),
            }
        }
        Request::GrowFs { path, bytes } => match grow::grow(&path, bytes) {
            Ok(()) => write_json(&mut conn, &Event::Done),
            Err(e) => write_json(&mut conn, &Event::Error { message: format!("growing {path}: {e}") }),
        },
        Request::FsUsage { path } => match grow::usage(&path) {
            Ok((used_bytes, total_bytes)) => write_json(&mut conn, &Event::FsUsage { used_bytes, total_bytes }),
            Err(e) => write_json(&mut conn, &Event::Error { message: format!("measuring {path}: {e}") }),
        },
        Request::Shutdown { .. } if !shared.owns_sandbox => write_json(&mut conn, &Event::Done),
        Request::Shutdown { grace_ms } => {
            shared.log.system("sandbox stopping");
            pty::hang_up_all();
            terminate_all(grace_ms);
            let _ = write_json(&mut conn, &Event::Done);
            std::process::exit(0);
        }
    }
}

/// Sends log lines to the host until the stream breaks or a newer
/// subscription takes over.
fn stream_logs(mut conn: UnixStream, log: &LogSink) -> io::Result<()> {
    let generation = log.subscribe();
    while let Some(line) = log.peek(generation) {
        write_json(&mut conn, &Event::Log(line))?;
        log.pop(generation);
    }
    Ok(())
}

/// Signals every other process in the sandbox's pid namespace: SIGTERM, a
/// grace period, then SIGKILL. `kill(-1)` spares pid 1 and the caller.
fn terminate_all(grace_ms: u64) {
    // SAFETY: kill(2) with pid -1 has no memory-safety preconditions.
    unsafe { libc::kill(-1, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(grace_ms);
    while std::time::Instant::now() < deadline && others_alive() {
        reap_children();
        thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-1, libc::SIGKILL) };
}

fn reap_children() {
    // SAFETY: waitpid with WNOHANG on any child; status pointer may be null.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

/// Whether any process besides pid 1 and the agent itself is still alive.
fn others_alive() -> bool {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else { return false };
    dir.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.bytes().all(|b| b.is_ascii_digit()) && name != "1" && name != me.as_str() && !is_zombie(&name)
    })
}

fn is_zombie(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')).unwrap_or(false))
        .unwrap_or(true)
}

//! The in-sandbox agent. It runs as the first process inside a sandbox,
//! listens on a unix socket that the daemon reaches through a bind mount (or
//! a virtio-serial port in a VM) and, per connection, runs one request:
//! an exec with streamed output, the start command, or a shutdown.
//!
//! It depends only on the protocol crate and std: it is small, has no async
//! runtime, and a thread per connection keeps concurrent execs independent.

mod connect;
mod exec;
pub mod guest_init;
mod guest_net;
mod logfile;
mod pty;
mod service;

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use heyvm_protocol::{decode_json, read_frame, write_json, Event, Frame, Request, PROTOCOL_VERSION};

pub use logfile::LogFile;

/// Where the agent listens and logs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub socket: PathBuf,
    pub log_file: PathBuf,
}

struct Shared {
    log: Arc<LogFile>,
    service: service::Service,
}

/// Serves requests until a shutdown request arrives.
pub fn run(cfg: AgentConfig) -> io::Result<()> {
    // Ignored signals survive exec: a daemon started with `&` from a script
    // ignores SIGINT/SIGQUIT, and every command, start command and shell
    // would inherit that. Start the sandbox's processes from a clean slate.
    for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM] {
        // SAFETY: signal(2) with SIG_DFL has no memory-safety preconditions.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let _ = std::fs::remove_file(&cfg.socket);
    // Bind to a temporary name and rename, so the daemon never connects to a
    // socket that is not yet listening.
    let tmp = cfg.socket.with_extension("sock.tmp");
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    std::fs::rename(&tmp, &cfg.socket)?;
    let shared = Arc::new(Shared { log: Arc::new(LogFile::open(&cfg.log_file)?), service: service::Service::default() });
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let shared = shared.clone();
        // At the sandbox's pids limit a thread cannot be created: drop this
        // connection rather than panic the agent (`thread::spawn` would).
        let spawned = thread::Builder::new().spawn(move || {
            if let Err(e) = handle(conn, &shared) {
                eprintln!("heyvm-agent: connection error: {e}");
            }
        });
        if let Err(e) = spawned {
            eprintln!("heyvm-agent: cannot start a thread for a connection: {e}");
        }
    }
    Ok(())
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
        Request::StartService { command, env, cwd } => match shared.service.start(&command, &env, &cwd, &shared.log) {
            Ok(pid) => write_json(&mut conn, &Event::Started { pid }),
            Err(e) => write_json(&mut conn, &Event::Error { message: format!("start command failed: {e}") }),
        },
        Request::Shutdown { grace_ms } => {
            shared.log.system("sandbox stopping");
            pty::hang_up_all();
            terminate_all(grace_ms);
            let _ = write_json(&mut conn, &Event::Done);
            std::process::exit(0);
        }
    }
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

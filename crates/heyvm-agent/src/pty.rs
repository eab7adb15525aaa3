//! An interactive shell on a pseudo-terminal.
//!
//! The shell gets its own session with the PTY as controlling terminal, so
//! job control, `stty` and full-screen programs behave as on a real login.
//! PTY output is forwarded as `Stdout` frames; `Stdin` frames are typed into
//! the terminal and `Resize` control frames set its window size (the kernel
//! then sends SIGWINCH to the foreground job). When the host closes its side
//! the terminal is hung up.

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use heyvm_protocol::{decode_json, encode, encode_json, read_frame, write_json, Event, ExitStatus, Frame, FrameKind, Request, ShellSpec};

/// Output still read after the shell exits: a background job that kept the
/// terminal open must not hold the session open forever.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(300);
/// Between SIGHUP (host hung up) and SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_millis(500);

/// Process groups of the open shells, so a sandbox shutdown can hang them
/// up first (an interactive shell ignores SIGTERM).
static SHELLS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// SIGHUP to every open shell, as when a terminal is closed.
pub fn hang_up_all() {
    for &pgid in SHELLS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(-pgid, libc::SIGHUP);
            libc::kill(-pgid, libc::SIGCONT);
        }
    }
}

pub fn run(mut conn: UnixStream, spec: ShellSpec) -> io::Result<()> {
    let user = match crate::exec::where_and_who(&spec.cwd, spec.user.as_deref()) {
        Ok(u) => u,
        Err(message) => return write_json(&mut conn, &Event::Error { message }),
    };
    let argv = spec.argv.clone().filter(|a| !a.is_empty()).unwrap_or_else(login_shell);
    let (master, slave) = match open_pty(spec.cols, spec.rows) {
        Ok(p) => p,
        Err(e) => return write_json(&mut conn, &Event::Error { message: format!("cannot open a terminal: {e}") }),
    };
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear().envs(&spec.env).env("TERM", "xterm-256color").current_dir(&spec.cwd);
    cmd.stdin(Stdio::from(slave.try_clone()?)).stdout(Stdio::from(slave.try_clone()?)).stderr(Stdio::from(slave));
    // SAFETY: between fork and exec only async-signal-safe calls: setsid,
    // ioctl, open, write, close.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // A daemon started with `&` from a script ignores SIGINT and
            // SIGQUIT, and shells pass ignored signals on: Ctrl-C would
            // then not stop anything. A terminal session starts clean.
            for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU, libc::SIGHUP, libc::SIGTERM] {
                libc::signal(sig, libc::SIG_DFL);
            }
            // stdin is the slave: make it the controlling terminal.
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            crate::exec::prepare_command_process();
            Ok(())
        });
    }
    // After the closure above: it writes /proc/self files, which a process
    // that changed its uid can no longer open.
    if let Some(id) = &user {
        crate::user::run_as(&mut cmd, id, &spec.env);
    }
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let message = format!("cannot start {}: {e}", argv[0]);
            return write_json(&mut conn, &Event::Error { message });
        }
    };
    // The Command still holds copies of the slave; they must be closed or
    // reading the master never sees the end of the terminal.
    drop(cmd);
    let pid = child.id() as i32;
    let writer = Arc::new(Mutex::new(conn.try_clone()?));
    send(&writer, &encode_json(&Event::Started { pid: pid as u32 }))?;

    let master = Arc::new(master);
    let (out_done_tx, out_done_rx) = mpsc::channel::<()>();
    forward_output(File::from(master.try_clone()?), writer.clone(), out_done_tx);
    watch_host(conn, master.clone(), pid);

    SHELLS.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    let status = child.wait();
    SHELLS.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != pid);
    let status = status?;
    // Whatever the shell left in its session (background jobs) goes with it.
    hang_up(pid, Duration::ZERO);
    let _ = out_done_rx.recv_timeout(DRAIN_AFTER_EXIT);
    let signal = status.signal();
    let code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
    let exit = ExitStatus { code, signal, timed_out: false, duration_ms: started.elapsed().as_millis() as u64 };
    send(&writer, &encode_json(&Event::Exit(exit)))
}

fn login_shell() -> Vec<String> {
    let shell = if Path::new("/bin/bash").exists() { "/bin/bash" } else { "/bin/sh" };
    vec![shell.to_string(), "-l".to_string()]
}

/// A new PTY pair with the given window size: `(master, slave)`.
fn open_pty(cols: u16, rows: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: plain libc calls; every returned descriptor is checked and
    // immediately owned.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if m < 0 {
            return Err(io::Error::last_os_error());
        }
        let master = OwnedFd::from_raw_fd(m);
        if libc::grantpt(m) != 0 || libc::unlockpt(m) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        if libc::ptsname_r(m, name.as_mut_ptr(), name.len()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let s = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        let slave = OwnedFd::from_raw_fd(s);
        set_size(&master, cols, rows)?;
        Ok((master, slave))
    }
}

fn set_size(master: &OwnedFd, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize { ws_row: rows.max(1), ws_col: cols.max(1), ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn send(writer: &Mutex<UnixStream>, frame: &[u8]) -> io::Result<()> {
    writer.lock().unwrap_or_else(|e| e.into_inner()).write_all(frame)
}

/// PTY output to `Stdout` frames until the terminal closes (EIO once every
/// slave descriptor is gone) or the host stops reading.
fn forward_output(mut master: File, writer: Arc<Mutex<UnixStream>>, done: mpsc::Sender<()>) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match master.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if send(&writer, &encode(FrameKind::Stdout, &buf[..n])).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
}

/// Host frames: keystrokes and resizes. The host going away hangs up the
/// terminal, as closing an ssh connection does.
fn watch_host(mut conn: UnixStream, master: Arc<OwnedFd>, pid: i32) {
    thread::spawn(move || {
        let mut input = match master.try_clone() {
            Ok(fd) => File::from(fd),
            Err(_) => return hang_up(pid, HANGUP_GRACE),
        };
        loop {
            match read_frame(&mut conn) {
                Ok(Some(Frame::Stdin(data))) => {
                    if input.write_all(&data).is_err() {
                        break;
                    }
                }
                Ok(Some(Frame::Control(body))) => {
                    if let Ok(Request::Resize { cols, rows }) = decode_json::<Request>(&body) {
                        let _ = set_size(&master, cols, rows);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        hang_up(pid, HANGUP_GRACE);
    });
}

/// SIGHUP + SIGCONT to the shell's session (its pid is the process group
/// id), then SIGKILL after `grace` if anything is left.
fn hang_up(pgid: i32, grace: Duration) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(-pgid, libc::SIGHUP);
        libc::kill(-pgid, libc::SIGCONT);
    }
    let deadline = Instant::now() + grace;
    // SAFETY: signal 0 only checks for existence.
    while Instant::now() < deadline && unsafe { libc::kill(-pgid, 0) } == 0 {
        thread::sleep(Duration::from_millis(20));
    }
    crate::exec::kill_group(pgid);
}

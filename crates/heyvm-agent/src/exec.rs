//! One exec request: spawn, stream output frames, enforce the timeout, kill
//! the process group if the host goes away.

use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use heyvm_protocol::{encode, encode_json, read_frame, write_json, Event, ExecSpec, ExitStatus, Frame, FrameKind};

/// How long to keep forwarding output after the command exits: a background
/// child that inherited the pipes must not hold the exec open forever.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

pub fn run(mut conn: UnixStream, spec: ExecSpec) -> io::Result<()> {
    if spec.argv.is_empty() {
        return write_json(&mut conn, &Event::Error { message: "empty command".into() });
    }
    if !Path::new(&spec.cwd).is_dir() {
        let message = format!("working directory '{}' does not exist in the sandbox", spec.cwd);
        return write_json(&mut conn, &Event::Error { message });
    }
    let mut cmd = Command::new(&spec.argv[0]);
    let tag = exec_tag();
    cmd.args(&spec.argv[1..]).env_clear().envs(&spec.env).env(TAG_VAR, &tag).current_dir(&spec.cwd);
    cmd.stdin(if spec.stdin { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    isolate_child(&mut cmd);
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return report_spawn_failure(&mut conn, &spec.argv[0], e),
    };
    let pgid = Tree { pgid: child.id() as i32, tag: Arc::new(tag) };
    let writer = Arc::new(Mutex::new(conn.try_clone()?));
    send(&writer, &encode_json(&Event::Started { pid: child.id() }))?;

    let finished = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut pumps = 0;
    // A background command outlives its host connection: for the disconnect
    // checks it counts as already finished.
    let keep_alive = if spec.background { Arc::new(AtomicBool::new(true)) } else { finished.clone() };
    if let Some(out) = child.stdout.take() {
        pump(out, FrameKind::Stdout, writer.clone(), done_tx.clone(), pgid.clone(), keep_alive.clone());
        pumps += 1;
    }
    if let Some(err) = child.stderr.take() {
        pump(err, FrameKind::Stderr, writer.clone(), done_tx.clone(), pgid.clone(), keep_alive.clone());
        pumps += 1;
    }
    watch_host(conn, child.stdin.take(), pgid.clone(), keep_alive);

    let (exit_tx, exit_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    let mut timed_out = false;
    let status = match spec.timeout_ms {
        Some(ms) => match exit_rx.recv_timeout(Duration::from_millis(ms)) {
            Ok(s) => s,
            Err(_) => {
                timed_out = true;
                pgid.kill();
                exit_rx.recv().map_err(|_| io::Error::other("waiter vanished"))?
            }
        },
        None => exit_rx.recv().map_err(|_| io::Error::other("waiter vanished"))?,
    }?;
    if timed_out {
        // Stragglers that left the group cannot hold the pipes open longer
        // than the drain window either.
        pgid.kill();
    }
    let deadline = Instant::now() + DRAIN_AFTER_EXIT;
    for _ in 0..pumps {
        let left = deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    finished.store(true, Ordering::SeqCst);
    let signal = status.signal();
    let code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
    let exit = ExitStatus { code, signal, timed_out, duration_ms: started.elapsed().as_millis() as u64 };
    send(&writer, &encode_json(&Event::Exit(exit)))
}

fn report_spawn_failure(conn: &mut UnixStream, program: &str, e: io::Error) -> io::Result<()> {
    // Mirror the shell: 127 for "not found", 126 for "cannot execute".
    let code = if e.kind() == ErrorKind::NotFound { 127 } else { 126 };
    let msg = if code == 127 {
        format!("heyvm: {program}: command not found\n")
    } else {
        format!("heyvm: {program}: {e}\n")
    };
    conn.write_all(&encode(FrameKind::Control, &serde_json::to_vec(&Event::Started { pid: 0 }).unwrap_or_default()))?;
    conn.write_all(&encode(FrameKind::Stderr, msg.as_bytes()))?;
    let exit = ExitStatus { code, signal: None, timed_out: false, duration_ms: 0 };
    write_json(conn, &Event::Exit(exit))
}

fn send(writer: &Mutex<UnixStream>, frame: &[u8]) -> io::Result<()> {
    writer.lock().unwrap_or_else(|e| e.into_inner()).write_all(frame)
}

/// Copies one output pipe into frames. If the host stops reading, the
/// command is killed rather than left running unobserved.
fn pump(
    mut src: impl Read + Send + 'static,
    kind: FrameKind,
    writer: Arc<Mutex<UnixStream>>,
    done: mpsc::Sender<()>,
    pgid: Tree,
    finished: Arc<AtomicBool>,
) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut host_gone = false;
        loop {
            match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if host_gone {
                        continue; // drain so the command never blocks on a full pipe
                    }
                    if send(&writer, &encode(kind, &buf[..n])).is_err() {
                        if !finished.load(Ordering::SeqCst) {
                            pgid.kill();
                            break;
                        }
                        host_gone = true;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
}

/// Reads stdin frames from the host; end of stream before the command has
/// finished means the host went away, so the command is killed.
fn watch_host(mut conn: UnixStream, mut stdin: Option<std::process::ChildStdin>, pgid: Tree, finished: Arc<AtomicBool>) {
    thread::spawn(move || loop {
        match read_frame(&mut conn) {
            Ok(Some(Frame::Stdin(data))) => {
                if let Some(s) = stdin.as_mut() {
                    if s.write_all(&data).is_err() {
                        stdin = None;
                    }
                }
            }
            Ok(Some(Frame::StdinEof)) => stdin = None,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                if !finished.load(Ordering::SeqCst) {
                    pgid.kill();
                }
                return;
            }
        }
    });
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
        // Repeat while tagged processes remain: they may be forking.
        for _ in 0..100 {
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
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle))
        })
        .collect()
}

/// Puts the child in its own session (so its whole tree can be signalled
/// as one group) and gives it a normal OOM score: the agent itself runs
/// protected so the OOM killer picks the command, not the agent.
pub fn isolate_child(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe functions (setsid, open, write, close).
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
            if fd >= 0 {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
            Ok(())
        });
    }
}

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

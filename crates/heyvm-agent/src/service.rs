//! The start command: one long-running process whose output becomes the
//! sandbox log.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::LogSink;

#[derive(Default)]
pub struct Service {
    /// Process group of the running start command.
    pgid: Mutex<Option<i32>>,
}

impl Service {
    /// Stops a previous instance (if any) and launches `command` under sh,
    /// as `user` if given (an unknown user is an error, never root).
    pub fn start(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        cwd: &str,
        user: Option<&str>,
        log: &Arc<LogSink>,
    ) -> io::Result<u32> {
        let user = crate::user::resolve(user).map_err(io::Error::other)?;
        let mut guard = self.pgid.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pgid) = guard.take() {
            crate::exec::kill_group_gracefully(pgid, Duration::from_secs(2));
        }
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(command).env_clear().envs(env).current_dir(cwd);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        crate::exec::isolate_child(&mut cmd);
        // After isolate_child: its closures write /proc/self files, which a
        // process that changed its uid can no longer open.
        if let Some(id) = &user {
            crate::user::run_as(&mut cmd, id, env);
        }
        let mut child = cmd.spawn()?;
        let pid = child.id();
        *guard = Some(pid as i32);
        log.system(&format!("start command launched (pid {pid}): {command}"));
        let log = log.clone();
        let out = child.stdout.take().map(|s| forward(s, "stdout", log.clone()));
        let err = child.stderr.take().map(|s| forward(s, "stderr", log.clone()));
        thread::spawn(move || {
            let status = child.wait();
            for t in [out, err].into_iter().flatten() {
                let _ = t.join();
            }
            let msg = match status {
                Ok(s) => match (s.code(), s.signal()) {
                    (Some(c), _) => format!("start command exited with code {c}"),
                    (_, Some(sig)) => format!("start command killed by signal {sig}"),
                    _ => "start command ended".to_string(),
                },
                Err(e) => format!("start command wait failed: {e}"),
            };
            log.system(&msg);
        });
        Ok(pid)
    }
}

fn forward(stream: impl Read + Send + 'static, source: &'static str, log: Arc<LogSink>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            // At most one log line's worth per read: a program that never
            // prints a newline must not grow this buffer without bound.
            match (&mut reader).take(crate::logfile::MAX_LINE as u64).read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    log.append(source, line.trim_end_matches(['\n', '\r']));
                }
            }
        }
    })
}

//! A minimal QMP client (QEMU's JSON control socket): greeting, capability
//! negotiation, one command at a time, asynchronous events skipped. Used for
//! the VM's run state, pause/resume, migration to a file (checkpoints) and
//! a clean quit. QEMU serves one QMP client per socket at a time, so each
//! use opens its own short connection.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{QmpError, QmpResult};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    pub fn connect(socket: &Path, timeout: Duration) -> QmpResult<Self> {
        let stream = UnixStream::connect(socket).map_err(|source| QmpError::Connect { path: socket.to_path_buf(), source })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut q = Qmp { reader: BufReader::new(stream.try_clone()?), writer: stream };
        let greeting = q.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Greeting(greeting.to_string()));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read_message(&mut self) -> QmpResult<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(QmpError::Closed);
        }
        serde_json::from_str(&line).map_err(QmpError::BadJson)
    }

    /// Runs one command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> QmpResult<Value> {
        let msg = json!({ "execute": command, "arguments": arguments });
        self.writer.write_all(format!("{msg}\n").as_bytes())?;
        loop {
            let reply = self.read_message()?;
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(err) = reply.get("error") {
                let desc = err.get("desc").and_then(Value::as_str).unwrap_or("unknown error").to_string();
                return Err(QmpError::Command { command: command.to_string(), desc });
            }
            return Ok(reply.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// `running`, `paused`, `inmigrate`, `postmigrate`, ...
    pub fn status(&mut self) -> QmpResult<String> {
        let r = self.execute("query-status", json!({}))?;
        Ok(r.get("status").and_then(Value::as_str).unwrap_or("unknown").to_string())
    }

    /// Writes the VM's state (devices + RAM) into `file` through `exec:`
    /// (QEMU 7.2 has no `file:` URI) and waits until it completes. The VM is
    /// paused afterwards (`postmigrate`); the caller decides to `cont`.
    pub fn migrate_to_file(&mut self, file: &Path, timeout: Duration) -> QmpResult<()> {
        let uri = format!("exec:cat > {}", crate::qemu::shell_quote(&file.to_string_lossy()));
        self.execute("migrate", json!({ "uri": uri }))?;
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.execute("query-migrate", json!({}))?;
            match r.get("status").and_then(Value::as_str).unwrap_or("") {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    let why = r.get("error-desc").and_then(Value::as_str).unwrap_or("no reason given");
                    return Err(QmpError::MigrationFailed(why.to_string()));
                }
                _ => {}
            }
            if Instant::now() > deadline {
                let _ = self.execute("migrate_cancel", json!({}));
                return Err(QmpError::Timeout("the migration"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for an incoming migration (a restore) to finish loading.
    pub fn wait_incoming(&mut self, timeout: Duration) -> QmpResult<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status()?;
            if s != "inmigrate" {
                let r = self.execute("query-migrate", json!({}))?;
                let m = r.get("status").and_then(Value::as_str).unwrap_or("");
                if m == "failed" {
                    return Err(QmpError::IncomingFailed);
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(QmpError::Timeout("loading the checkpoint"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

//! A minimal QMP client (QEMU's JSON control socket): greeting, capability
//! negotiation, one command at a time, asynchronous events skipped. Used for
//! the VM's run state, pause/resume, migration to a file (checkpoints) and
//! a clean quit. QEMU serves one QMP client per socket at a time, so each
//! use opens its own short connection.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    pub fn connect(socket: &Path, timeout: Duration) -> io::Result<Self> {
        let stream = UnixStream::connect(socket).map_err(|e| io::Error::new(e.kind(), format!("QMP socket {}: {e}", socket.display())))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut q = Qmp { reader: BufReader::new(stream.try_clone()?), writer: stream };
        let greeting = q.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(io::Error::other(format!("not a QMP greeting: {greeting}")));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read_message(&mut self) -> io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "QMP connection closed"));
        }
        serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("QMP sent bad JSON: {e}")))
    }

    /// Runs one command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> io::Result<Value> {
        let msg = json!({ "execute": command, "arguments": arguments });
        self.writer.write_all(format!("{msg}\n").as_bytes())?;
        loop {
            let reply = self.read_message()?;
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(err) = reply.get("error") {
                let desc = err.get("desc").and_then(Value::as_str).unwrap_or("unknown error");
                return Err(io::Error::other(format!("QMP {command}: {desc}")));
            }
            return Ok(reply.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// `running`, `paused`, `inmigrate`, `postmigrate`, ...
    pub fn status(&mut self) -> io::Result<String> {
        let r = self.execute("query-status", json!({}))?;
        Ok(r.get("status").and_then(Value::as_str).unwrap_or("unknown").to_string())
    }

    /// Writes the VM's state (devices + RAM) into `file` through `exec:`
    /// (QEMU 7.2 has no `file:` URI) and waits until it completes. The VM is
    /// paused afterwards (`postmigrate`); the caller decides to `cont`.
    pub fn migrate_to_file(&mut self, file: &Path, timeout: Duration) -> io::Result<()> {
        let uri = format!("exec:cat > {}", crate::qemu::shell_quote(&file.to_string_lossy()));
        self.execute("migrate", json!({ "uri": uri }))?;
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.execute("query-migrate", json!({}))?;
            match r.get("status").and_then(Value::as_str).unwrap_or("") {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    let why = r.get("error-desc").and_then(Value::as_str).unwrap_or("no reason given");
                    return Err(io::Error::other(format!("migration failed: {why}")));
                }
                _ => {}
            }
            if Instant::now() > deadline {
                let _ = self.execute("migrate_cancel", json!({}));
                return Err(io::Error::new(io::ErrorKind::TimedOut, "migration did not complete in time"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for an incoming migration (a restore) to finish loading.
    pub fn wait_incoming(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status()?;
            if s != "inmigrate" {
                let r = self.execute("query-migrate", json!({}))?;
                let m = r.get("status").and_then(Value::as_str).unwrap_or("");
                if m == "failed" {
                    return Err(io::Error::other("loading the checkpoint failed"));
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "loading the checkpoint did not finish in time"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

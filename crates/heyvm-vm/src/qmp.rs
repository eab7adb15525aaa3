//! A minimal QMP client (QEMU's JSON control socket): greeting, capability
//! negotiation, one command at a time, asynchronous events skipped. Used for
//! the VM's run state, pause/resume, migration to a file (checkpoints) and
//! a clean quit. QEMU serves one QMP client per socket at a time, so each
//! use opens its own short connection.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{QmpError, QmpResult};

/// The name a checkpoint's memory file has in QEMU (`getfd`); QEMU closes
/// it when the migration ends.
const MIGRATION_FD: &str = "heyvm-migration";

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
        self.reply(command)
    }

    /// Hands QEMU a descriptor under `name` (`getfd`: the command and the
    /// descriptor in one message, as SCM_RIGHTS), for URIs like `fd:NAME`.
    /// QEMU runs as an unprivileged uid and cannot open the daemon's files.
    pub fn send_fd(&mut self, name: &str, fd: &impl AsRawFd) -> QmpResult<()> {
        let msg = format!("{}\n", json!({ "execute": "getfd", "arguments": { "fdname": name } }));
        let raw = fd.as_raw_fd();
        let mut iov = libc::iovec { iov_base: msg.as_ptr() as *mut libc::c_void, iov_len: msg.len() };
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        let mut control = vec![0u8; space];
        // SAFETY: a zeroed msghdr is valid; every pointer set below points
        // at buffers that live until sendmsg returns.
        let sent = unsafe {
            let mut hdr: libc::msghdr = std::mem::zeroed();
            hdr.msg_iov = &mut iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_controllen = space as _;
            let c = libc::CMSG_FIRSTHDR(&hdr);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), raw);
            libc::sendmsg(self.writer.as_raw_fd(), &hdr, libc::MSG_NOSIGNAL)
        };
        if sent < 0 {
            return Err(QmpError::Io(std::io::Error::last_os_error()));
        }
        if (sent as usize) < msg.len() {
            self.writer.write_all(&msg.as_bytes()[sent as usize..])?;
        }
        self.reply("getfd").map(drop)
    }

    fn reply(&mut self, command: &str) -> QmpResult<Value> {
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

    /// Writes the VM's state (devices + RAM) into `file`, handed over as a
    /// descriptor (QEMU 7.2 has no `file:` URI, and its seccomp filter
    /// forbids `exec:`), and waits until it completes. The VM is paused
    /// afterwards (`postmigrate`); the caller decides to `cont`.
    pub fn migrate_to_file(&mut self, file: &std::fs::File, timeout: Duration) -> QmpResult<()> {
        self.send_fd(MIGRATION_FD, file)?;
        self.execute("migrate", json!({ "uri": format!("fd:{MIGRATION_FD}") }))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The descriptor arrives with the `getfd` command, in one message.
    #[test]
    fn send_fd_passes_the_descriptor_with_getfd() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut q = Qmp { reader: BufReader::new(ours.try_clone().unwrap()), writer: ours };
        let t = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(t.path().join("memory")).unwrap();
        let want = file.metadata().unwrap().ino();
        let qemu = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            let mut control = [0u8; 64];
            // SAFETY: recvmsg into buffers that outlive the call; the
            // received descriptor is then owned here.
            let (n, fd) = unsafe {
                let mut hdr: libc::msghdr = std::mem::zeroed();
                hdr.msg_iov = &mut iov;
                hdr.msg_iovlen = 1;
                hdr.msg_control = control.as_mut_ptr().cast();
                hdr.msg_controllen = control.len() as _;
                let n = libc::recvmsg(theirs.as_raw_fd(), &mut hdr, 0);
                let c = libc::CMSG_FIRSTHDR(&hdr);
                assert!(!c.is_null() && (*c).cmsg_type == libc::SCM_RIGHTS);
                (n, std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>()))
            };
            // SAFETY: a descriptor we just received and now own.
            let got = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            (&theirs).write_all(b"{\"return\": {}}\n").unwrap();
            (String::from_utf8_lossy(&buf[..n as usize]).into_owned(), got.metadata().unwrap().ino())
        });
        q.send_fd("x", &file).unwrap();
        let (msg, ino) = qemu.join().unwrap();
        let v: Value = serde_json::from_str(msg.trim()).unwrap();
        assert_eq!(v, json!({"execute": "getfd", "arguments": {"fdname": "x"}}));
        assert_eq!(ino, want, "the same file");
    }
}

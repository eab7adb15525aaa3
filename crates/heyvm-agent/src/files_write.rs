//! Atomic file writes: the bytes go to a temporary file beside the target,
//! which is renamed over it only once every byte is on disk. A host that
//! goes away mid-write, a full disk or a bad frame leave the old file (or
//! nothing) in place, never a partial one.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};

use heyvm_protocol::files::{FileErrorCode, FileWrite};
use heyvm_protocol::{read_frame, write_json, Event, Frame};

use crate::beneath::{is_type, lstat_at, Target};
use crate::file_error::{fail, os, send_failure, FResult};
use crate::user;

/// Makes temporary names unique within the agent.
static COUNTER: AtomicU64 = AtomicU64::new(0);

pub fn write(mut conn: UnixStream, w: FileWrite) -> io::Result<()> {
    let target = (|| {
        user::act_as(w.user.as_deref())?;
        let t = Target::new(&w.path, w.beneath.as_deref())?;
        Pending::create(&t, w.mode, w.parents)
    })();
    let mut pending = match target {
        Ok(t) => t,
        Err(f) => return send_failure(&mut conn, f),
    };
    write_json(&mut conn, &Event::Ready)?;
    loop {
        match read_frame(&mut conn)? {
            Some(Frame::Stdin(data)) => {
                if let Err(e) = pending.file.write_all(&data) {
                    return send_failure(&mut conn, os(&pending.display, e));
                }
                pending.size += data.len() as u64;
            }
            Some(Frame::StdinEof) => break,
            // The host went away: dropping `pending` removes the temporary file.
            None => return Ok(()),
            Some(_) => return send_failure(&mut conn, fail(FileErrorCode::Io, "unexpected frame during a write")),
        }
    }
    match pending.commit() {
        Ok(size) => write_json(&mut conn, &Event::Written { size }),
        Err(f) => send_failure(&mut conn, f),
    }
}

/// A write in progress: a temporary file in the target's directory.
struct Pending {
    dir: OwnedFd,
    tmp: CString,
    name: CString,
    file: File,
    mode: u32,
    /// The replaced file's owner, kept when root replaces it.
    owner: Option<(u32, u32)>,
    size: u64,
    display: std::path::PathBuf,
    done: bool,
}

fn cstring(p: &[u8]) -> FResult<CString> {
    CString::new(p).map_err(|_| fail(FileErrorCode::InvalidPath, "path contains a NUL byte"))
}

impl Pending {
    fn create(t: &Target, mode: Option<u32>, parents: bool) -> FResult<Pending> {
        let p = &t.display;
        let Some((dir, name)) = t.parent(parents)? else {
            return Err(fail(FileErrorCode::InvalidPath, format!("'{}' is a directory, not a file path", p.display())));
        };
        let st = match lstat_at(dir.as_raw_fd(), &name) {
            Ok(st) => Some(st),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(e) => return Err(os(p, e)),
        };
        if st.is_some_and(|st| is_type(&st, libc::S_IFDIR)) {
            return Err(fail(FileErrorCode::IsDirectory, format!("'{}' is a directory", p.display())));
        }
        let existing = st.filter(|st| is_type(st, libc::S_IFREG));
        let mode = mode.map(|m| m & 0o7777).unwrap_or(existing.map_or(0o644, |st| st.st_mode & 0o7777));
        let owner = existing.map(|st| (st.st_uid, st.st_gid));
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = cstring(format!(".heyvm-write-{}-{n}", std::process::id()).as_bytes())?;
        // O_EXCL|O_NOFOLLOW: a name the sandbox planted (a symlink, a FIFO)
        // fails the create instead of redirecting the write.
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: valid dirfd and name; the descriptor is checked, then owned.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), tmp.as_ptr(), flags, 0o600) };
        if fd < 0 {
            return Err(os(p, io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own.
        let file = unsafe { File::from_raw_fd(fd) };
        Ok(Pending { dir, tmp, name, file, mode, owner, size: 0, display: p.clone(), done: false })
    }

    fn commit(mut self) -> FResult<u64> {
        let p = self.display.clone();
        self.file.sync_all().map_err(|e| os(&p, e))?;
        // SAFETY: fchmod/fchown on our own descriptor.
        if unsafe { libc::fchmod(self.file.as_raw_fd(), self.mode) } != 0 {
            return Err(os(&p, io::Error::last_os_error()));
        }
        if let Some((uid, gid)) = self.owner.filter(|_| user::acting_as_root()) {
            // Editing /home/app/x as root keeps it app's; best effort.
            // SAFETY: as above.
            unsafe { libc::fchown(self.file.as_raw_fd(), uid, gid) };
        }
        // SAFETY: valid dirfd and names.
        if unsafe { libc::renameat(self.dir.as_raw_fd(), self.tmp.as_ptr(), self.dir.as_raw_fd(), self.name.as_ptr()) } != 0 {
            return Err(os(&p, io::Error::last_os_error()));
        }
        self.done = true;
        Ok(self.size)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            // SAFETY: valid dirfd and name.
            unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.tmp.as_ptr(), 0) };
        }
    }
}

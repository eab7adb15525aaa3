//! File requests (see `heyvm_protocol::files`): stat, list, read and remove
//! in the sandbox's own filesystem view; writes are in `files_write`.
//!
//! The agent runs inside the sandbox, so following a symlink here can only
//! lead to another sandbox path. What still needs care is what the sandbox
//! may have planted: a FIFO or a device where a file is read (opened
//! non-blocking and refused unless regular, so a read never hangs or
//! streams `/dev/zero` forever), and paths with `..` (refused, so removing
//! `/a/..` can never mean `/`).

use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};

use heyvm_protocol::files::{FileErrorCode, FileKind, FilePath, FileRead, FileRemove, FileStat, LIST_BATCH};
use heyvm_protocol::{encode, write_json, Event, FrameKind};

use crate::file_error::{fail, os, send_failure, FResult};
use crate::user;

/// Bytes per output frame of a read.
const CHUNK: usize = 64 * 1024;

fn answer(conn: &mut UnixStream, r: FResult<Event>) -> io::Result<()> {
    match r {
        Ok(ev) => write_json(conn, &ev),
        Err(f) => send_failure(conn, f),
    }
}

/// Checks a request path: absolute, no NUL, no `..`, at most 4096 bytes;
/// returns it with `.` and repeated slashes dropped.
pub(crate) fn check_path(path: &str) -> FResult<PathBuf> {
    let invalid = |why: &str| fail(FileErrorCode::InvalidPath, format!("'{path}': {why}"));
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    if path.len() > 4096 {
        return Err(invalid("longer than 4096 bytes"));
    }
    if !path.starts_with('/') {
        return Err(invalid("not an absolute path"));
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(invalid("contains '..'")),
        }
    }
    Ok(out)
}

pub(crate) fn file_stat(path: &Path, meta: &Metadata) -> FileStat {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "/".into());
    FileStat { name, kind, size: meta.len(), mode: meta.mode() & 0o7777, mtime: meta.mtime(), uid: meta.uid(), gid: meta.gid() }
}

pub fn stat(mut conn: UnixStream, r: FilePath) -> io::Result<()> {
    let res = (|| {
        user::act_as(r.user.as_deref())?;
        let p = check_path(&r.path)?;
        let meta = std::fs::metadata(&p).map_err(|e| os(&p, e))?;
        Ok(Event::FileInfo(file_stat(&p, &meta)))
    })();
    answer(&mut conn, res)
}

pub fn list(mut conn: UnixStream, r: FilePath) -> io::Result<()> {
    let dir = (|| {
        user::act_as(r.user.as_deref())?;
        let p = check_path(&r.path)?;
        let dir = std::fs::read_dir(&p).map_err(|e| os(&p, e))?;
        Ok((p, dir))
    })();
    let (p, dir) = match dir {
        Ok(d) => d,
        Err(f) => return send_failure(&mut conn, f),
    };
    let mut batch = Vec::with_capacity(LIST_BATCH);
    for entry in dir {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => return send_failure(&mut conn, os(&p, e)),
        };
        // An entry removed since the directory was read is skipped.
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        batch.push(file_stat(&entry.path(), &meta));
        if batch.len() == LIST_BATCH {
            write_json(&mut conn, &Event::FileEntries { entries: std::mem::take(&mut batch) })?;
        }
    }
    if !batch.is_empty() {
        write_json(&mut conn, &Event::FileEntries { entries: batch })?;
    }
    write_json(&mut conn, &Event::Done)
}

/// Opens a regular file for reading without ever blocking in open(2): a
/// FIFO opens at once with `O_NONBLOCK` and is then refused by its type.
fn open_regular(p: &Path) -> FResult<(File, Metadata)> {
    let c = CString::new(p.as_os_str().as_bytes()).map_err(|_| fail(FileErrorCode::InvalidPath, "path contains a NUL byte"))?;
    // SAFETY: a valid NUL-terminated path; the descriptor is checked, then owned.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Err(fail(FileErrorCode::NotRegularFile, format!("'{}' is a socket, not a regular file", p.display())));
        }
        return Err(os(p, e));
    }
    // SAFETY: a fresh descriptor we own.
    let file = unsafe { File::from_raw_fd(fd) };
    let meta = file.metadata().map_err(|e| os(p, e))?;
    if meta.is_dir() {
        return Err(fail(FileErrorCode::IsDirectory, format!("'{}' is a directory; list it instead", p.display())));
    }
    if !meta.is_file() {
        return Err(fail(FileErrorCode::NotRegularFile, format!("'{}' is not a regular file", p.display())));
    }
    Ok((file, meta))
}

pub fn read(mut conn: UnixStream, r: FileRead) -> io::Result<()> {
    let opened = (|| {
        user::act_as(r.user.as_deref())?;
        let p = check_path(&r.path)?;
        let (file, meta) = open_regular(&p)?;
        Ok((p, file, meta))
    })();
    let (p, mut file, meta) = match opened {
        Ok(o) => o,
        Err(f) => return send_failure(&mut conn, f),
    };
    write_json(&mut conn, &Event::FileInfo(file_stat(&p, &meta)))?;
    if r.offset > 0 {
        if let Err(e) = file.seek(SeekFrom::Start(r.offset)) {
            return send_failure(&mut conn, os(&p, e));
        }
    }
    let mut left = r.limit.unwrap_or(u64::MAX);
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let want = (left.min(CHUNK as u64)) as usize;
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return send_failure(&mut conn, os(&p, e)),
        };
        // Blocks while the host has no credit for us: a large file is
        // never held in memory, here or on the host.
        io::Write::write_all(&mut conn, &encode(FrameKind::Stdout, &buf[..n]))?;
        left -= n as u64;
    }
    write_json(&mut conn, &Event::Done)
}

pub fn remove(mut conn: UnixStream, r: FileRemove) -> io::Result<()> {
    let res = (|| {
        user::act_as(r.user.as_deref())?;
        let p = check_path(&r.path)?;
        if p == Path::new("/") {
            return Err(fail(FileErrorCode::InvalidPath, "refusing to remove '/'"));
        }
        let meta = p.symlink_metadata().map_err(|e| os(&p, e))?;
        if !meta.is_dir() {
            // A symlink is removed itself, never its target.
            std::fs::remove_file(&p).map_err(|e| os(&p, e))?;
        } else if r.recursive {
            // std's remove_dir_all never follows symlinks inside the tree.
            std::fs::remove_dir_all(&p).map_err(|e| os(&p, e))?;
        } else {
            std::fs::remove_dir(&p).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => {
                    fail(FileErrorCode::NotEmpty, format!("directory '{}' is not empty (remove it recursively)", p.display()))
                }
                _ => os(&p, e),
            })?;
        }
        Ok(Event::Done)
    })();
    answer(&mut conn, res)
}

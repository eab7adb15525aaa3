//! File requests (see `heyvm_protocol::files`): stat, list, read and remove
//! in the sandbox's own filesystem view; writes are in `files_write`.
//!
//! The agent runs inside the sandbox, so following a symlink here can only
//! lead to another sandbox path; a request confined `beneath` a directory
//! (a mount) never leaves it (see `beneath`). What else needs care is what
//! the sandbox may have planted: a FIFO or a device where a file is read
//! (opened non-blocking and refused unless regular, so a read never hangs
//! or streams `/dev/zero` forever), and paths with `..` (refused, so
//! removing `/a/..` can never mean `/`).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};

use heyvm_protocol::files::{FileErrorCode, FileKind, FilePath, FileRead, FileRemove, FileStat, LIST_BATCH};
use heyvm_protocol::{encode, write_json, Event, FrameKind};

use crate::beneath::{is_type, lstat_at, remove_tree, Dir, Target};
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

/// What `st` says about the file called `name`.
pub(crate) fn file_stat(name: String, st: &libc::stat) -> FileStat {
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFREG => FileKind::File,
        _ => FileKind::Other,
    };
    FileStat { name, kind, size: st.st_size as u64, mode: st.st_mode & 0o7777, mtime: st.st_mtime, uid: st.st_uid, gid: st.st_gid }
}

fn name_of(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "/".into())
}

pub fn stat(mut conn: UnixStream, r: FilePath) -> io::Result<()> {
    let res = (|| {
        user::act_as(r.user.as_deref())?;
        let t = Target::new(&r.path, r.beneath.as_deref())?;
        let fd = t.open(libc::O_PATH)?;
        let st = lstat_at(fd.as_raw_fd(), c"").map_err(|e| os(&t.display, e))?;
        Ok(Event::FileInfo(file_stat(name_of(&t.abs), &st)))
    })();
    answer(&mut conn, res)
}

pub fn list(mut conn: UnixStream, r: FilePath) -> io::Result<()> {
    let dir = (|| {
        user::act_as(r.user.as_deref())?;
        let t = Target::new(&r.path, r.beneath.as_deref())?;
        let fd = t.open(libc::O_RDONLY | libc::O_DIRECTORY)?;
        let dir = Dir::new(fd).map_err(|e| os(&t.display, e))?;
        Ok((t.display, dir))
    })();
    let (p, dir) = match dir {
        Ok(d) => d,
        Err(f) => return send_failure(&mut conn, f),
    };
    let dfd = dir.fd();
    let mut batch = Vec::with_capacity(LIST_BATCH);
    for name in dir {
        let name = match name {
            Ok(n) => n,
            Err(e) => return send_failure(&mut conn, os(&p, e)),
        };
        // An entry removed since the directory was read is skipped.
        let Ok(st) = lstat_at(dfd, &name) else { continue };
        batch.push(file_stat(name.to_string_lossy().into_owned(), &st));
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
fn open_regular(t: &Target) -> FResult<(File, libc::stat)> {
    let p = &t.display;
    let fd = match t.open(libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY) {
        Ok(fd) => fd,
        Err(f) if f.code == FileErrorCode::NotRegularFile => {
            return Err(fail(FileErrorCode::NotRegularFile, format!("'{}' is a socket, not a regular file", p.display())));
        }
        Err(f) => return Err(f),
    };
    let st = lstat_at(fd.as_raw_fd(), c"").map_err(|e| os(p, e))?;
    if is_type(&st, libc::S_IFDIR) {
        return Err(fail(FileErrorCode::IsDirectory, format!("'{}' is a directory; list it instead", p.display())));
    }
    if !is_type(&st, libc::S_IFREG) {
        return Err(fail(FileErrorCode::NotRegularFile, format!("'{}' is not a regular file", p.display())));
    }
    Ok((File::from(fd), st))
}

pub fn read(mut conn: UnixStream, r: FileRead) -> io::Result<()> {
    let opened = (|| {
        user::act_as(r.user.as_deref())?;
        let t = Target::new(&r.path, r.beneath.as_deref())?;
        let (file, st) = open_regular(&t)?;
        Ok((t, file, st))
    })();
    let (t, mut file, st) = match opened {
        Ok(o) => o,
        Err(f) => return send_failure(&mut conn, f),
    };
    let p = t.display;
    write_json(&mut conn, &Event::FileInfo(file_stat(name_of(&t.abs), &st)))?;
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
        let t = Target::new(&r.path, r.beneath.as_deref())?;
        let p = &t.display;
        let Some((dir, name)) = t.parent(false)? else {
            return Err(fail(FileErrorCode::InvalidPath, format!("refusing to remove '{}'", p.display())));
        };
        let st = lstat_at(dir.as_raw_fd(), &name).map_err(|e| os(p, e))?;
        if !is_type(&st, libc::S_IFDIR) {
            // A symlink is removed itself, never its target.
            // SAFETY: valid descriptor and name.
            if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } != 0 {
                return Err(os(p, io::Error::last_os_error()));
            }
        } else if r.recursive {
            // Never follows a symlink inside the tree.
            remove_tree(dir.as_raw_fd(), &name).map_err(|e| os(p, e))?;
        // SAFETY: valid descriptor and name.
        } else if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) } != 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => {
                    fail(FileErrorCode::NotEmpty, format!("directory '{}' is not empty (remove it recursively)", p.display()))
                }
                _ => os(p, e),
            });
        }
        Ok(Event::Done)
    })();
    answer(&mut conn, res)
}

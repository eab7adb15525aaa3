//! Where a file request's path leads, resolved one way for every handler.
//!
//! A [`Target`] is a directory descriptor (the root `/`, or the request's
//! `beneath` directory) plus the path relative to it; the handlers only
//! ever open, stat, create, rename and unlink relative to descriptors it
//! hands out, never by absolute path.
//!
//! - Without `beneath` (files anywhere in the sandbox) paths resolve as
//!   any program's would: symlinks are followed, wherever they lead.
//! - With `beneath` (a request scoped to a mount) the kernel resolves the
//!   relative path with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`:
//!   a symlink planted by the sandbox that leads out of the directory
//!   (`/workspace/etc -> /etc`, `up -> ../..`), any absolute symlink and
//!   any `/proc` magic link fails with `EXDEV`/`ELOOP`, answered as
//!   `invalid_path`. Where `openat2` is missing (`ENOSYS`: heyvm's own
//!   bubblewrap seccomp profile refuses it, as its mode cannot be
//!   inspected) [`walk`] resolves the same way by hand.

use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use heyvm_protocol::files::FileErrorCode;

use crate::file_error::{fail, os, FResult, Failure};
use crate::files::check_path;

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_BENEATH: u64 = 0x08;
/// Symlinks followed in one resolution before `ELOOP`, as the kernel does.
const MAX_LINKS: u32 = 40;

/// Set once `openat2` answered `ENOSYS`: later requests walk at once.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// A request's path, resolved relative to a directory descriptor.
pub(crate) struct Target {
    root: OwnedFd,
    /// The `beneath` directory; `None` resolves from `/` without limits.
    beneath: Option<PathBuf>,
    /// Relative to `root`; empty for the root itself.
    rel: PathBuf,
    /// The absolute sandbox path.
    pub abs: PathBuf,
    /// The path as messages name it: relative to `beneath` when confined
    /// (as the host's own route names paths relative to the mount), else
    /// absolute.
    pub display: PathBuf,
}

impl Target {
    /// Checks `path` (and `beneath`, under which it must lie) and opens
    /// the directory it is resolved from.
    pub(crate) fn new(path: &str, beneath: Option<&str>) -> FResult<Target> {
        let abs = check_path(path)?;
        let (root_path, beneath) = match beneath {
            None => (PathBuf::from("/"), None),
            Some(b) => {
                let b = check_path(b)?;
                (b.clone(), Some(b))
            }
        };
        let Ok(rel) = abs.strip_prefix(&root_path).map(Path::to_path_buf) else {
            let msg = format!("'{}' is not under '{}'", abs.display(), root_path.display());
            return Err(fail(FileErrorCode::InvalidPath, msg));
        };
        let root = open_path(&root_path, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| os(&root_path, e))?;
        let display = if beneath.is_some() && !rel.as_os_str().is_empty() { rel.clone() } else { abs.clone() };
        Ok(Target { root, beneath, rel, abs, display })
    }

    /// Opens the target itself with `flags` (symlinks followed, within
    /// the limits of this target).
    pub(crate) fn open(&self, flags: i32) -> FResult<OwnedFd> {
        self.open_rel(&self.rel, flags).map_err(|e| self.failure(&self.display, e))
    }

    /// The target's parent directory (created with its missing ancestors,
    /// mode 0755, if `create`) and the target's final name; `None` for the
    /// root itself.
    pub(crate) fn parent(&self, create: bool) -> FResult<Option<(OwnedFd, CString)>> {
        let (Some(parent), Some(name)) = (self.rel.parent(), self.rel.file_name()) else { return Ok(None) };
        let shown = &self.shown(parent);
        let open_dir = |p: &Path| self.open_rel(p, libc::O_PATH | libc::O_DIRECTORY);
        let dir = match open_dir(parent) {
            Ok(fd) => fd,
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                let mut prefix = PathBuf::new();
                for comp in parent.components() {
                    let here = open_dir(&prefix).map_err(|e| self.failure(&self.shown(&prefix), e))?;
                    let c = cstring(comp.as_os_str().as_bytes())?;
                    // SAFETY: a valid directory descriptor and NUL-terminated name.
                    if unsafe { libc::mkdirat(here.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
                        let e = io::Error::last_os_error();
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(self.failure(&self.shown(&prefix.join(comp)), e));
                        }
                    }
                    prefix.push(comp);
                }
                open_dir(parent).map_err(|e| self.failure(shown, e))?
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let msg = format!("the directory '{}' does not exist (ask for parent directories to create it)", shown.display());
                return Err(fail(FileErrorCode::NotFound, msg));
            }
            Err(e) => return Err(self.failure(shown, e)),
        };
        Ok(Some((dir, cstring(name.as_bytes())?)))
    }

    /// The failure for `e` on `shown`: an escape from `beneath` says so.
    pub(crate) fn failure(&self, shown: &Path, e: io::Error) -> Failure {
        match (&self.beneath, e.raw_os_error()) {
            (Some(b), Some(libc::EXDEV) | Some(libc::ELOOP)) => {
                fail(FileErrorCode::InvalidPath, format!("'{}' resolves outside '{}' (through a symlink)", shown.display(), b.display()))
            }
            _ => os(shown, e),
        }
    }

    /// A path relative to the root, as messages name it.
    fn shown(&self, rel: &Path) -> PathBuf {
        match &self.beneath {
            Some(b) if rel.as_os_str().is_empty() => b.clone(),
            Some(_) => rel.to_path_buf(),
            None => Path::new("/").join(rel),
        }
    }

    fn open_rel(&self, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        let c = CString::new(rel.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        if self.beneath.is_none() {
            return openat(self.root.as_raw_fd(), &c, flags);
        }
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            match openat2_beneath(self.root.as_raw_fd(), &c, flags) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
                r => return r,
            }
        }
        walk(self.root.as_raw_fd(), rel, flags)
    }
}

fn cstring(p: &[u8]) -> FResult<CString> {
    CString::new(p).map_err(|_| fail(FileErrorCode::InvalidPath, "path contains a NUL byte"))
}

fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn open_path(p: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid NUL-terminated path.
    owned(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) } as libc::c_long)
}

pub(crate) fn openat(dir: RawFd, name: &CStr, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: a valid descriptor and NUL-terminated name; no O_CREAT, so no mode.
    owned(unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC) } as libc::c_long)
}

fn openat2_beneath(dir: RawFd, rel: &CStr, flags: i32) -> io::Result<OwnedFd> {
    let how = OpenHow { flags: (flags | libc::O_CLOEXEC) as u64, mode: 0, resolve: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
    // SAFETY: valid pointers for the call; the size matches the struct.
    owned(unsafe { libc::syscall(libc::SYS_openat2, dir, rel.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>()) })
}

/// `fstatat` without following a final symlink (`name` empty: `fd` itself).
pub(crate) fn lstat_at(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    let flags = if name.is_empty() { libc::AT_EMPTY_PATH } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, name and buffer.
    if unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

pub(crate) fn is_type(st: &libc::stat, t: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == t
}

/// What `openat2(dir, rel, flags, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
/// does, in user space: one component at a time, each directory opened
/// with `O_NOFOLLOW` and held, so a rename meanwhile cannot move us; a
/// symlink is read and its target resolved in its place, an absolute one
/// refused (`EXDEV`); `..` pops the directories walked (`EXDEV` past the
/// start), never the file system's own `..`. A magic link reads as an
/// absolute path or a name like `pipe:[1]`, so it is refused or not found.
/// The final component is opened with `O_NOFOLLOW`: one swapped for a
/// symlink after it was checked fails instead of being followed.
pub(crate) fn walk(dir: RawFd, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
    let err = |n: i32| io::Error::from_raw_os_error(n);
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut todo: VecDeque<Vec<u8>> = rel.as_os_str().as_bytes().split(|b| *b == b'/').map(<[u8]>::to_vec).collect();
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        let cur = stack.last().map_or(dir, AsRawFd::as_raw_fd);
        match name.as_slice() {
            b"" | b"." => continue,
            b".." => {
                stack.pop().ok_or_else(|| err(libc::EXDEV))?;
                continue;
            }
            _ => {}
        }
        let c = CString::new(name).map_err(|_| err(libc::EINVAL))?;
        let last = todo.iter().all(|n| n.is_empty() || n == b".");
        let st = match lstat_at(cur, &c) {
            Ok(st) => st,
            Err(_) if last => return openat(cur, &c, flags | libc::O_NOFOLLOW),
            Err(e) => return Err(e),
        };
        if is_type(&st, libc::S_IFLNK) {
            links += 1;
            if links > MAX_LINKS {
                return Err(err(libc::ELOOP));
            }
            let target = readlinkat(cur, &c)?;
            if target.first() == Some(&b'/') {
                return Err(err(libc::EXDEV));
            }
            for comp in target.split(|b| *b == b'/').rev() {
                todo.push_front(comp.to_vec());
            }
        } else if last && !todo.iter().any(|n| n == b".") {
            return openat(cur, &c, flags | libc::O_NOFOLLOW);
        } else if is_type(&st, libc::S_IFDIR) {
            stack.push(openat(cur, &c, libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)?);
        } else {
            return Err(err(libc::ENOTDIR));
        }
    }
    // The path ended in `.` or `..`: the directory reached.
    openat(stack.last().map_or(dir, AsRawFd::as_raw_fd), c".", flags)
}

fn readlinkat(dir: RawFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: valid descriptor and name; the buffer is as long as given.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// A directory's entries (without `.` and `..`), read from a descriptor.
pub(crate) struct Dir(*mut libc::DIR);

impl Dir {
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Dir> {
        let raw = fd.into_raw_fd();
        // SAFETY: a valid descriptor; on success the DIR owns it.
        let d = unsafe { libc::fdopendir(raw) };
        if d.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so the descriptor is still ours.
            drop(unsafe { OwnedFd::from_raw_fd(raw) });
            return Err(e);
        }
        Ok(Dir(d))
    }

    /// The descriptor, for `*at` calls on the entries.
    pub(crate) fn fd(&self) -> RawFd {
        // SAFETY: a valid DIR.
        unsafe { libc::dirfd(self.0) }
    }
}

impl Iterator for Dir {
    type Item = io::Result<CString>;

    fn next(&mut self) -> Option<io::Result<CString>> {
        loop {
            // SAFETY: errno is thread-local; readdir reports errors only there.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: a valid DIR, used by this thread only.
            let ent = unsafe { libc::readdir(self.0) };
            if ent.is_null() {
                let e = io::Error::last_os_error();
                return (e.raw_os_error() != Some(0)).then_some(Err(e));
            }
            // SAFETY: readdir returns a valid entry with a NUL-terminated name.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                return Some(Ok(name.to_owned()));
            }
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: a valid DIR, closed once.
        unsafe { libc::closedir(self.0) };
    }
}

/// Removes the directory `name` in `dir` and everything in it, never
/// following a symlink (a link is removed, not its target).
pub(crate) fn remove_tree(dir: RawFd, name: &CStr) -> io::Result<()> {
    let mut d = Dir::new(openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)?)?;
    let fd = d.fd();
    // All names first: the directory is not changed while it is read.
    let names: Vec<CString> = d.by_ref().collect::<io::Result<_>>()?;
    for n in &names {
        let gone = |e: &io::Error| e.raw_os_error() == Some(libc::ENOENT);
        match lstat_at(fd, n) {
            Err(e) if gone(&e) => {}
            Err(e) => return Err(e),
            Ok(st) if is_type(&st, libc::S_IFDIR) => remove_tree(fd, n)?,
            // SAFETY: valid descriptor and name.
            Ok(_) if unsafe { libc::unlinkat(fd, n.as_ptr(), 0) } == 0 => {}
            Ok(_) => {
                let e = io::Error::last_os_error();
                if !gone(&e) {
                    return Err(e);
                }
            }
        }
    }
    drop(d);
    // SAFETY: valid descriptor and name.
    if unsafe { libc::unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fresh directory, removed when dropped (no dev-dependencies here).
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("heyvm-agent-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir(&p).unwrap();
            TempDir(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn root(p: &Path) -> OwnedFd {
        open_path(p, libc::O_PATH | libc::O_DIRECTORY).unwrap()
    }

    fn errno(r: io::Result<OwnedFd>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }

    /// The hand-made resolver answers what openat2 answers (where the
    /// kernel has it), for escapes and for legitimate links alike.
    #[test]
    fn walk_stays_beneath_like_openat2() {
        let t = TempDir::new("walk");
        let top = t.path().join("top");
        std::fs::create_dir_all(top.join("d/e")).unwrap();
        std::fs::write(top.join("d/e/f"), "f").unwrap();
        std::fs::write(t.path().join("secret"), "s").unwrap();
        symlink("/etc", top.join("etc")).unwrap();
        symlink("../secret", top.join("up")).unwrap();
        symlink("d/../../top/d", top.join("out_and_back")).unwrap();
        symlink("d/e/../e/f", top.join("in")).unwrap();
        symlink("e", top.join("d/ee")).unwrap();
        symlink("/proc/self/root", top.join("magic")).unwrap();
        symlink("loop", top.join("loop")).unwrap();
        let r = root(&top);
        let fd = r.as_raw_fd();
        let ro = libc::O_RDONLY;
        for (p, want) in [
            ("etc/passwd", Some(libc::EXDEV)),
            ("etc", Some(libc::EXDEV)),
            ("up", Some(libc::EXDEV)),
            ("out_and_back/e/f", Some(libc::EXDEV)),
            ("magic/etc/passwd", Some(libc::EXDEV)),
            ("loop", Some(libc::ELOOP)),
            ("nope", Some(libc::ENOENT)),
            ("d/e/f/g", Some(libc::ENOTDIR)),
            ("in", None),
            ("d/ee/f", None),
            ("d/e/f", None),
            ("d/e/.", None),
        ] {
            let by_hand = errno(walk(fd, Path::new(p), ro));
            assert_eq!(by_hand, want, "walk {p}");
            let c = CString::new(p).unwrap();
            match errno(openat2_beneath(fd, &c, ro)) {
                Some(libc::ENOSYS) => {}
                kernel => assert_eq!(kernel, want, "openat2 {p}"),
            }
        }
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(walk(fd, Path::new("in"), ro).unwrap()), &mut s).unwrap();
        assert_eq!(s, "f");
    }

    #[test]
    fn remove_tree_removes_links_not_their_targets() {
        let t = TempDir::new("tree");
        std::fs::create_dir_all(t.path().join("tree/a/b")).unwrap();
        std::fs::create_dir(t.path().join("keep")).unwrap();
        std::fs::write(t.path().join("keep/k"), "k").unwrap();
        std::fs::write(t.path().join("tree/a/b/x"), "x").unwrap();
        symlink(t.path().join("keep"), t.path().join("tree/a/link")).unwrap();
        let r = root(t.path());
        remove_tree(r.as_raw_fd(), c"tree").unwrap();
        assert!(!t.path().join("tree").exists());
        assert!(t.path().join("keep/k").exists());
    }
}

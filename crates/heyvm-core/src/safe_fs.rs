//! File access confined to a directory. Every user-supplied path is checked
//! lexically (no absolute paths, no `..`) and then resolved by the kernel
//! with `openat2(RESOLVE_BENEATH)`, so a symlink planted inside the sandbox
//! cannot lead outside it, even racing us. Writes go to a temporary file
//! that is renamed into place: a failed upload never leaves a partial file.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use heyvm_types::FileEntry;

use crate::error::{CoreError, Result};

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_BENEATH: u64 = 0x08;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// A directory that paths are resolved beneath.
pub struct Confined {
    root: OwnedFd,
    display: String,
    /// Who files and directories created here belong to (a root daemon
    /// writing into a sandbox's uid range or a mount's owner), else the
    /// daemon's own user.
    owner: Option<(u32, u32)>,
}

/// Checks a user path lexically and returns it as a relative path. The empty
/// path (or ".") means the root itself.
pub fn clean_relative(path: &str) -> Result<PathBuf> {
    if path.contains('\0') {
        return Err(CoreError::InvalidPath("path contains a NUL byte".into()));
    }
    if path.len() > 4096 {
        return Err(CoreError::InvalidPath("path is longer than 4096 bytes".into()));
    }
    let p = Path::new(path);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => {
                if n.len() > 255 {
                    return Err(CoreError::InvalidPath("a path component is longer than 255 bytes".into()));
                }
                out.push(n)
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(CoreError::InvalidPath(format!("'{path}' is absolute; give a path relative to the mount")))
            }
            Component::ParentDir => return Err(CoreError::InvalidPath(format!("'{path}' contains '..'; paths may not leave the mount"))),
        }
    }
    Ok(out)
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| CoreError::InvalidPath("path contains a NUL byte".into()))
}

fn escape_error(rel: &Path, e: io::Error) -> CoreError {
    match e.raw_os_error() {
        Some(libc::EXDEV) | Some(libc::ELOOP) => {
            CoreError::InvalidPath(format!("'{}' resolves outside the mount (through a symlink)", rel.display()))
        }
        Some(libc::ENOENT) => CoreError::FileNotFound(rel.display().to_string()),
        Some(libc::ENOTDIR) => CoreError::InvalidPath(format!("'{}' or one of its parents is not a directory", rel.display())),
        Some(libc::EISDIR) => CoreError::InvalidPath(format!("'{}' is a directory", rel.display())),
        _ => CoreError::Io(e),
    }
}

impl Confined {
    pub fn open(root: &Path) -> Result<Self> {
        let c = cstr(root)?;
        // SAFETY: `c` is a valid NUL-terminated string; the returned fd is
        // checked and then owned.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(CoreError::Backend(crate::backend::BackendError::io(format!("cannot open mount root {}", root.display()), e)));
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Confined { root: unsafe { OwnedFd::from_raw_fd(fd) }, display: root.display().to_string(), owner: None })
    }

    /// Creates files and directories as `owner` (uid, gid).
    pub fn owned_by(mut self, owner: Option<(u32, u32)>) -> Self {
        self.owner = owner;
        self
    }

    fn openat2(&self, rel: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
        let target = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        let c = CString::new(target.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: if flags & libc::O_CREAT != 0 { mode as u64 } else { 0 },
            resolve: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: pointers are valid for the call; size matches the struct.
        let fd = unsafe {
            libc::syscall(libc::SYS_openat2, self.root.as_raw_fd(), c.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>())
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Opens `rel`'s parent directory (creating missing directories if
    /// `create`) and returns it with the final name.
    fn parent_of(&self, rel: &Path, create: bool) -> Result<(OwnedFd, CString)> {
        let name = rel.file_name().ok_or_else(|| CoreError::InvalidPath("a file path is required".into()))?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let open_dir = |p: &Path| self.openat2(p, libc::O_PATH | libc::O_DIRECTORY, 0);
        let fd = match open_dir(parent) {
            Ok(fd) => fd,
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                let mut prefix = PathBuf::new();
                for comp in parent.components() {
                    let here = open_dir(&prefix).map_err(|e| escape_error(&prefix, e))?;
                    let c = cstr(Path::new(comp.as_os_str()))?;
                    // SAFETY: valid dirfd and NUL-terminated name.
                    let r = unsafe { libc::mkdirat(here.as_raw_fd(), c.as_ptr(), 0o755) };
                    if let (0, Some((uid, gid))) = (r, self.owner) {
                        // SAFETY: valid dirfd and name; never follows a link.
                        unsafe { libc::fchownat(here.as_raw_fd(), c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) };
                    }
                    if r != 0 {
                        let e = io::Error::last_os_error();
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(escape_error(&prefix.join(comp), e));
                        }
                    }
                    prefix.push(comp);
                }
                open_dir(parent).map_err(|e| escape_error(parent, e))?
            }
            Err(e) => return Err(escape_error(parent, e)),
        };
        Ok((fd, cstr(Path::new(name))?))
    }

    /// Starts an atomic write of `rel`.
    pub fn create(&self, rel: &Path) -> Result<AtomicFile> {
        let (dir, name) = self.parent_of(rel, true)?;
        // Refuse to replace a directory with a file.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid dirfd, name and stat buffer.
        let r = unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        if r == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFDIR {
            return Err(CoreError::InvalidPath(format!("'{}' is a directory", rel.display())));
        }
        let tmp = CString::new(format!(".heyvm-upload-{}", crate::ids::random_hex(8))).expect("no NUL");
        // SAFETY: valid dirfd and name; the descriptor is checked and owned.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o644,
            )
        };
        if fd < 0 {
            return Err(escape_error(rel, io::Error::last_os_error()));
        }
        if let Some((uid, gid)) = self.owner {
            // SAFETY: fchown on the descriptor just created.
            unsafe { libc::fchown(fd, uid, gid) };
        }
        // SAFETY: fresh descriptor we own.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(AtomicFile { dir, tmp, name, file, written: 0, committed: false })
    }

    /// Opens a regular file for reading. The path is resolved to an
    /// `O_PATH` descriptor and its type checked before anything is opened
    /// for real, so a FIFO (which would block the open) or a device (whose
    /// open has side effects) planted by the sandbox is refused, not read.
    pub fn open_read(&self, rel: &Path) -> Result<(File, u64)> {
        let path_fd = self.openat2(rel, libc::O_PATH, 0).map_err(|e| escape_error(rel, e))?;
        let meta = File::from(path_fd.try_clone()?).metadata()?;
        if meta.is_dir() {
            return Err(CoreError::InvalidPath(format!("'{}' is a directory; list it instead", rel.display())));
        }
        if !meta.is_file() {
            return Err(CoreError::InvalidPath(format!("'{}' is not a regular file", rel.display())));
        }
        // Re-open the very inode the O_PATH descriptor names.
        let again = cstr(Path::new(&format!("/proc/self/fd/{}", path_fd.as_raw_fd())))?;
        // SAFETY: open(2) with a valid C string.
        let fd = unsafe { libc::open(again.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: fresh descriptor we own.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok((file, meta.len()))
    }

    pub fn list(&self, rel: &Path) -> Result<Vec<FileEntry>> {
        let fd = self.openat2(rel, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(|e| escape_error(rel, e))?;
        // The /proc/self/fd link names the very directory we opened safely.
        let dir_path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir_path)? {
            let entry = entry?;
            let Ok(meta) = entry.path().symlink_metadata() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            out.push(FileEntry {
                path: rel.join(&name).display().to_string(),
                name,
                size: meta.len(),
                is_dir: meta.is_dir(),
                is_symlink: meta.file_type().is_symlink(),
                modified: meta.mtime(),
                mode: meta.mode() & 0o7777,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes a file, a symlink (not its target) or a directory (only with
    /// `recursive` when it is not empty).
    pub fn remove(&self, rel: &Path, recursive: bool) -> Result<()> {
        if rel.as_os_str().is_empty() {
            return Err(CoreError::InvalidPath("refusing to delete the mount root".into()));
        }
        let (dir, name) = self.parent_of(rel, false)?;
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid dirfd, name and stat buffer.
        if unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
            return Err(escape_error(rel, io::Error::last_os_error()));
        }
        let is_dir = (st.st_mode & libc::S_IFMT) == libc::S_IFDIR;
        if is_dir && recursive {
            // std's remove_dir_all never follows symlinks; the parent is
            // reached through the descriptor we resolved safely.
            let p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(rel.file_name().unwrap_or_default());
            std::fs::remove_dir_all(p)?;
            return Ok(());
        }
        let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: valid dirfd and name.
        if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOTEMPTY) {
                return Err(CoreError::Conflict(format!("directory '{}' is not empty (use recursive=true)", rel.display())));
            }
            return Err(escape_error(rel, e));
        }
        Ok(())
    }

    pub fn display(&self) -> &str {
        &self.display
    }
}

/// A file being written; it appears under its real name only on `commit`.
pub struct AtomicFile {
    dir: OwnedFd,
    tmp: CString,
    name: CString,
    file: File,
    written: u64,
    committed: bool,
}

impl AtomicFile {
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn commit(mut self) -> Result<u64> {
        self.file.sync_all()?;
        // SAFETY: valid dirfd and names.
        let r = unsafe { libc::renameat(self.dir.as_raw_fd(), self.tmp.as_ptr(), self.dir.as_raw_fd(), self.name.as_ptr()) };
        if r != 0 {
            return Err(CoreError::Io(io::Error::last_os_error()));
        }
        self.committed = true;
        Ok(self.written)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            // SAFETY: valid dirfd and name.
            unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.tmp.as_ptr(), 0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_checks() {
        assert!(clean_relative("a/b.txt").is_ok());
        assert_eq!(clean_relative("./a//b").unwrap(), PathBuf::from("a/b"));
        assert!(matches!(clean_relative("/etc/passwd"), Err(CoreError::InvalidPath(_))));
        assert!(matches!(clean_relative("a/../../x"), Err(CoreError::InvalidPath(_))));
        assert!(matches!(clean_relative("a\0b"), Err(CoreError::InvalidPath(_))));
    }

    #[test]
    fn symlinks_out_are_refused_and_writes_are_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let outside = dir.path().join("secret");
        std::fs::write(&outside, "s").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("rel")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("dirlink")).unwrap();
        let c = Confined::open(&root).unwrap();
        for p in ["abs", "rel"] {
            assert!(matches!(c.open_read(Path::new(p)), Err(CoreError::InvalidPath(_))), "{p}");
        }
        assert!(matches!(c.create(Path::new("dirlink/new")), Err(CoreError::InvalidPath(_))));
        assert!(!dir.path().join("new").exists());

        let mut f = c.create(Path::new("sub/dir/file.txt")).unwrap();
        f.write(b"hello").unwrap();
        assert!(!root.join("sub/dir/file.txt").exists(), "visible before commit");
        f.commit().unwrap();
        assert_eq!(std::fs::read(root.join("sub/dir/file.txt")).unwrap(), b"hello");

        let mut g = c.create(Path::new("sub/aborted")).unwrap();
        g.write(b"partial").unwrap();
        drop(g);
        let names: Vec<_> = c.list(Path::new("sub")).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec!["dir"]);

        // Deleting a symlink removes the link, never its target.
        c.remove(Path::new("abs"), false).unwrap();
        assert!(outside.exists());
        assert!(matches!(c.remove(Path::new("sub"), false), Err(CoreError::Conflict(_))));
        c.remove(Path::new("sub"), true).unwrap();
        assert!(!root.join("sub").exists());
    }
}

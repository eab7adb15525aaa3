//! The file API (list, read, upload, delete) on either of two routes with
//! the same answers and error codes:
//!
//! - **host**: the mount's host directory, opened with `safe_fs` (symlink-
//!   safe `openat2(RESOLVE_BENEATH)`); works while the sandbox is stopped.
//!   Bubblewrap keeps it by default: it is the faster route (see the
//!   README's measurements) and its defences are tested.
//! - **agent**: the in-sandbox agent does the work in the sandbox's own
//!   view (`heyvm_protocol::files`). Needed where the host cannot see the
//!   files (a VM's disks), chosen for every running sandbox with
//!   `HEYVM_FILES_VIA_AGENT=1`, and for absolute paths (files anywhere in
//!   the sandbox: a path starting with `/` and no `mount_path`), which
//!   need the sandbox running. A request scoped to a mount names it as the
//!   directory the agent must stay `beneath`, so a symlink planted in the
//!   mount is refused on this route as on the host's; absolute paths
//!   anywhere in the sandbox follow symlinks like any program there.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use heyvm_protocol::files::{FileKind, FileRead, FileStat, FileWrite};
use heyvm_types::{FileEntry, FileList};

use super::SandboxManager;
use crate::agent::{AgentClient, AgentFileReader, AgentFileWriter};
use crate::error::{CoreError, Result};
use crate::record::SandboxRecord;
use crate::safe_fs::{clean_relative, AtomicFile};

/// A file opened for download.
pub struct OpenedFile {
    /// Bytes this read delivers (the whole file, or the range asked for).
    pub size: u64,
    /// The file's size.
    pub total: u64,
    pub source: FileSource,
}

/// Where a request's path points: under a mount, or anywhere in the
/// sandbox (an absolute path with no `mount_path`).
enum Place {
    Mount(PathBuf),
    Anywhere(String),
}

fn place(mount_path: Option<&str>, path: &str) -> Result<Place> {
    if path.starts_with('/') && mount_path.is_none_or(str::is_empty) {
        let p = super::validate::sandbox_path(path, "path").map_err(|e| CoreError::InvalidPath(e.to_string()))?;
        return Ok(Place::Anywhere(p));
    }
    Ok(Place::Mount(clean_relative(path)?))
}

/// The mount (longest sandbox path first) an absolute path lies under, and
/// the path relative to it.
fn under_mount(mounts: &[heyvm_types::MountSpec], path: &str) -> Option<(String, PathBuf)> {
    let m = mounts
        .iter()
        .filter(|m| path == m.sandbox_path || path.starts_with(&format!("{}/", m.sandbox_path)))
        .max_by_key(|m| m.sandbox_path.len())?;
    Some((m.sandbox_path.clone(), PathBuf::from(path[m.sandbox_path.len()..].trim_start_matches('/'))))
}

pub enum FileSource {
    Host(File),
    Agent(AgentFileReader),
}

/// An upload in progress; nothing is visible until [`UploadSink::commit`].
pub enum UploadSink {
    Host(AtomicFile),
    Agent(AgentFileWriter),
}

/// The agent side of a request: the client and the absolute sandbox path.
struct AgentTarget {
    client: AgentClient,
    path: String,
    mount_path: String,
    /// The mount a scoped request must stay in: the agent refuses symlinks
    /// that lead out of it, as `safe_fs` does on the host route.
    beneath: Option<String>,
    read_only: bool,
    /// The instance the client talks to (see [`SandboxManager::settle`]).
    used: Option<Arc<super::instances::Running>>,
}

impl SandboxManager {
    /// Where a request points, and the mount path to use for it. An
    /// absolute path under a mount of a sandbox that is not running goes
    /// to that mount's host directory, so `/workspace/x` works while the
    /// sandbox is stopped, as `x` does; anywhere else needs it running.
    fn locate(&self, rec: &SandboxRecord, mount_path: Option<&str>, path: &str) -> Result<(Place, Option<String>)> {
        let given = mount_path.filter(|m| !m.is_empty()).map(str::to_string);
        match place(mount_path, path)? {
            Place::Anywhere(p) if rec.status != heyvm_types::SandboxStatus::Running && !self.files_via_agent(rec)? => {
                match under_mount(&self.mounts_of(rec), &p) {
                    Some((mp, rel)) => Ok((Place::Mount(rel), Some(mp))),
                    None => Ok((Place::Anywhere(p), given)),
                }
            }
            other => Ok((other, given)),
        }
    }

    /// Whether this sandbox's files go through its agent.
    fn files_via_agent(&self, rec: &SandboxRecord) -> Result<bool> {
        let on_host = self.backend_for(rec)?.files_on_host();
        Ok(!on_host || (self.config.files_via_agent && rec.status == heyvm_types::SandboxStatus::Running))
    }

    async fn agent_target(&self, rec: &SandboxRecord, mount_path: Option<&str>, place: &Place) -> Result<AgentTarget> {
        let (path, mount_path, beneath, read_only) = match place {
            Place::Mount(rel) => {
                let m = self.choose_mount(rec, mount_path)?;
                let path = if rel.as_os_str().is_empty() { m.mount_path.clone() } else { format!("{}/{}", m.mount_path, rel.display()) };
                (path, m.mount_path.clone(), Some(m.mount_path), m.read_only)
            }
            Place::Anywhere(path) => (path.clone(), "/".to_string(), None, false),
        };
        let what = if matches!(place, Place::Anywhere(_)) { "access files outside its mounts" } else { "file access" };
        super::transitions::check(rec, super::transitions::Action::Use(what))?;
        let client = self.settle(&rec.id, None, self.agent(rec).await)?;
        Ok(AgentTarget { client, path, mount_path, beneath, read_only, used: self.running(&rec.id) })
    }

    /// An agent request that failed because a stop, restart, restore or
    /// delete of its sandbox ended the instance it went to (that operation
    /// still holds the sandbox's lock, the record is no longer running, or
    /// the instance `used` is gone or replaced) conflicts with that
    /// operation: 409 (404 once deleted), not an unreachable agent's 502.
    fn settle<T>(&self, id: &str, used: Option<&Arc<super::instances::Running>>, r: Result<T>) -> Result<T> {
        match r {
            Err(CoreError::AgentUnreachable(why)) => {
                let replaced = used.is_some_and(|u| !self.running(id).is_some_and(|now| Arc::ptr_eq(u, &now)));
                let busy = self.locks.lock().unwrap_or_else(|e| e.into_inner()).get(id).is_some_and(|l| l.try_lock().is_err());
                let stopped = self.store.resolve(id)?.status != heyvm_types::SandboxStatus::Running;
                Err(if replaced || busy || stopped {
                    CoreError::Conflict(format!("sandbox '{id}' was stopped or restarted during the request ({why}); retry once it runs"))
                } else {
                    CoreError::AgentUnreachable(why)
                })
            }
            other => other,
        }
    }

    pub async fn list_files(self: &Arc<Self>, key: &str, mount_path: Option<&str>, path: &str) -> Result<FileList> {
        let rec = self.store.resolve(key)?;
        let (place, mount_path) = self.locate(&rec, mount_path, path)?;
        let mount_path = mount_path.as_deref();
        let shown = match &place {
            Place::Mount(rel) if !self.files_via_agent(&rec)? => {
                let root = self.mount_root(&rec, mount_path)?;
                let files = root.dir.list(rel)?;
                return Ok(FileList { mount_path: root.mount_path, path: rel.display().to_string(), files });
            }
            Place::Mount(rel) => rel.clone(),
            Place::Anywhere(p) => PathBuf::from(p),
        };
        let t = self.agent_target(&rec, mount_path, &place).await?;
        let listed = t.client.file_list(&t.path, t.beneath.as_deref(), None).await;
        let mut files: Vec<FileEntry> = self.settle(&rec.id, t.used.as_ref(), listed)?.into_iter().map(|s| entry(&shown, s)).collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(FileList { mount_path: t.mount_path, path: shown.display().to_string(), files })
    }

    pub async fn open_file(self: &Arc<Self>, key: &str, mount_path: Option<&str>, path: &str) -> Result<OpenedFile> {
        self.open_range(key, mount_path, path, 0, None).await
    }

    /// Opens `limit` bytes (all if None) of a file from `offset`.
    pub async fn open_range(
        self: &Arc<Self>,
        key: &str,
        mount_path: Option<&str>,
        path: &str,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<OpenedFile> {
        let rec = self.store.resolve(key)?;
        let (place, mount_path) = self.locate(&rec, mount_path, path)?;
        let mount_path = mount_path.as_deref();
        let span = |total: u64| total.saturating_sub(offset).min(limit.unwrap_or(u64::MAX));
        if let Place::Mount(rel) = &place {
            if !self.files_via_agent(&rec)? {
                // Opening walks the sandbox's directories: off the async runtime.
                let (mgr, mount_path, rel) = (self.clone(), mount_path.map(str::to_string), rel.clone());
                let (file, total) = tokio::task::spawn_blocking(move || -> Result<(File, u64)> {
                    let (mut file, total) = mgr.mount_root(&rec, mount_path.as_deref())?.dir.open_read(&rel)?;
                    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))?;
                    Ok((file, total))
                })
                .await
                .map_err(|e| CoreError::Io(std::io::Error::other(e.to_string())))??;
                return Ok(OpenedFile { size: span(total), total, source: FileSource::Host(file) });
            }
        }
        let t = self.agent_target(&rec, mount_path, &place).await?;
        let read = FileRead { path: t.path.clone(), offset, limit, user: None, beneath: t.beneath.clone() };
        let mut reader = self.settle(&rec.id, t.used.as_ref(), t.client.file_read(read).await)?;
        // The length announced to the client comes from the size at open;
        // a file the sandbox grows meanwhile is cut there.
        let total = reader.stat.size;
        reader.limit_to(span(total));
        Ok(OpenedFile { size: span(total), total, source: FileSource::Agent(reader) })
    }

    /// Begins an atomic upload; the caller writes and commits it, checking
    /// size against `config().max_upload_bytes`. Returns the mount path.
    pub async fn begin_upload(self: &Arc<Self>, key: &str, mount_path: Option<&str>, path: &str) -> Result<(UploadSink, String)> {
        let rec = self.store.resolve(key)?;
        let (place, mount_path) = self.locate(&rec, mount_path, path)?;
        let mount_path = mount_path.as_deref();
        if let Place::Mount(rel) = &place {
            if rel.as_os_str().is_empty() {
                return Err(CoreError::InvalidPath("file_path is required".into()));
            }
            if !self.files_via_agent(&rec)? {
                let root = self.mount_root(&rec, mount_path)?;
                if root.read_only {
                    return Err(CoreError::ReadOnlyMount(root.mount_path));
                }
                return Ok((UploadSink::Host(root.dir.create(rel)?), root.mount_path));
            }
        }
        let t = self.agent_target(&rec, mount_path, &place).await?;
        if t.read_only {
            return Err(CoreError::ReadOnlyMount(t.mount_path));
        }
        let write = FileWrite { path: t.path.clone(), mode: None, parents: true, user: None, beneath: t.beneath.clone() };
        let w = self.settle(&rec.id, t.used.as_ref(), t.client.file_write(write).await)?;
        Ok((UploadSink::Agent(w), t.mount_path))
    }

    pub async fn delete_file(self: &Arc<Self>, key: &str, mount_path: Option<&str>, path: &str, recursive: bool) -> Result<String> {
        let rec = self.store.resolve(key)?;
        let (place, mount_path) = self.locate(&rec, mount_path, path)?;
        let mount_path = mount_path.as_deref();
        if let Place::Mount(rel) = &place {
            if !self.files_via_agent(&rec)? {
                let root = self.mount_root(&rec, mount_path)?;
                if root.read_only {
                    return Err(CoreError::ReadOnlyMount(root.mount_path));
                }
                root.dir.remove(rel, recursive)?;
                return Ok(root.mount_path);
            }
            if rel.as_os_str().is_empty() {
                return Err(CoreError::InvalidPath("refusing to delete the mount root".into()));
            }
        }
        let t = self.agent_target(&rec, mount_path, &place).await?;
        if t.read_only {
            return Err(CoreError::ReadOnlyMount(t.mount_path));
        }
        let shown = path.to_string();
        let removed = t.client.file_remove(&t.path, t.beneath.as_deref(), recursive, None).await.map_err(|e| match e {
            CoreError::Conflict(_) => CoreError::Conflict(format!("directory '{shown}' is not empty (use recursive=true)")),
            e => e,
        });
        self.settle(&rec.id, t.used.as_ref(), removed)?;
        Ok(t.mount_path)
    }
}

impl SandboxManager {
    /// Reads up to `limit` bytes from `offset` of a file anywhere in the
    /// sandbox (see [`computer_path`]), resuming it if idle; returns the
    /// file's size and the bytes. For agent computers and MCP tools.
    pub async fn read_path(self: &Arc<Self>, key: &str, path: &str, offset: u64, limit: u64) -> Result<(u64, Vec<u8>)> {
        self.prepare_use(key).await?;
        let opened = self.open_range(key, None, &computer_path(path), offset, Some(limit)).await?;
        let total = opened.total;
        Ok((total, opened.read_to_vec(limit).await?))
    }

    /// Writes a whole file anywhere in the sandbox, atomically, creating
    /// its parent directories; returns its size.
    pub async fn write_path(self: &Arc<Self>, key: &str, path: &str, data: &[u8]) -> Result<u64> {
        self.prepare_use(key).await?;
        let (mut sink, _) = self.begin_upload(key, None, &computer_path(path)).await?;
        sink.write(data).await?;
        sink.commit().await
    }
}

/// A computer's file path: absolute as given, otherwise under /workspace.
pub fn computer_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", heyvm_types::WORKSPACE_PATH)
    }
}

/// A listing entry as the file routes have always shown it.
fn entry(rel: &Path, s: FileStat) -> FileEntry {
    FileEntry {
        path: rel.join(&s.name).display().to_string(),
        is_dir: s.kind == FileKind::Dir,
        is_symlink: s.kind == FileKind::Symlink,
        name: s.name,
        size: s.size,
        modified: s.mtime,
        mode: s.mode,
    }
}

impl OpenedFile {
    /// The whole file in memory, for callers that answer with it at once
    /// (they check `size` against their own cap first).
    pub async fn read_to_vec(self, max: u64) -> Result<Vec<u8>> {
        match self.source {
            FileSource::Host(file) => tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut buf = Vec::with_capacity(self.size.min(max) as usize);
                file.take(max).read_to_end(&mut buf).map(|_| buf)
            })
            .await
            .map_err(|e| CoreError::Io(std::io::Error::other(e.to_string())))?
            .map_err(CoreError::from),
            FileSource::Agent(mut reader) => {
                reader.limit_to(max);
                let mut buf = Vec::with_capacity(self.size.min(max) as usize);
                while let Some(chunk) = reader.next_chunk().await? {
                    buf.extend(chunk);
                }
                Ok(buf)
            }
        }
    }
}

impl UploadSink {
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        match self {
            UploadSink::Host(f) => f.write(data),
            UploadSink::Agent(w) => w.send(data).await,
        }
    }

    pub fn written(&self) -> u64 {
        match self {
            UploadSink::Host(f) => f.written(),
            UploadSink::Agent(w) => w.written(),
        }
    }

    /// Puts the file in place; returns its size.
    pub async fn commit(self) -> Result<u64> {
        match self {
            UploadSink::Host(f) => f.commit(),
            UploadSink::Agent(w) => w.finish().await,
        }
    }

    /// Copies a spooled upload into place and commits it; the host route
    /// runs off the async runtime.
    pub async fn copy_from(self, mut src: File) -> Result<u64> {
        use std::io::Read;
        match self {
            UploadSink::Host(mut f) => tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = src.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    f.write(&buf[..n])?;
                }
                f.commit()
            })
            .await
            .map_err(|e| CoreError::Io(std::io::Error::other(e.to_string())))?,
            UploadSink::Agent(mut w) => {
                let mut src = tokio::fs::File::from_std(src);
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = tokio::io::AsyncReadExt::read(&mut src, &mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    w.send(&buf[..n]).await?;
                }
                w.finish().await
            }
        }
    }
}

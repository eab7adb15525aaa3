//! File requests of the inner protocol: the agent reads, writes, lists and
//! removes files in the sandbox's own view of its filesystem, so the host
//! never touches sandbox paths (a VM's disks are not even visible to it).
//!
//! Paths are absolute sandbox paths; the agent refuses `..` components
//! rather than guess what the caller meant. Every request may name a
//! directory to stay `beneath` (feature [`FEATURE_FILES_BENEATH`]): the
//! path must lie under it, and the agent resolves the rest relative to it
//! the way `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` does, so a
//! symlink the sandbox planted (`/workspace/etc -> /etc`), an absolute
//! symlink or a magic link fails with `invalid_path` instead of leading
//! out of it. The host sends it for requests scoped to a mount; without
//! it (files anywhere in the sandbox) symlinks are followed. Every request may name a
//! `user` (a name from the sandbox's `/etc/passwd` or a numeric uid): the
//! agent then acts with that user's file permissions; without one it acts
//! as the sandbox's root.
//!
//! Exchanges (each on a stream of its own):
//! - [`crate::Request::FileStat`] -> [`crate::Event::FileInfo`]
//! - [`crate::Request::FileList`] -> [`crate::Event::FileEntries`]… then
//!   [`crate::Event::Done`]
//! - [`crate::Request::FileRead`] -> [`crate::Event::FileInfo`], the bytes
//!   as `Stdout` frames, then [`crate::Event::Done`]
//! - [`crate::Request::FileWrite`] -> [`crate::Event::Ready`]; the host
//!   sends the bytes as `Stdin` frames and `StdinEof`; the agent answers
//!   [`crate::Event::Written`] once the file is in place. A stream that
//!   ends without `StdinEof` leaves nothing behind.
//! - [`crate::Request::FileRemove`] -> [`crate::Event::Done`]
//!
//! Any of them may instead end with [`crate::Event::FileError`].

use serde::{Deserialize, Serialize};

/// The feature an agent announces in its hello when it serves these.
pub const FEATURE_FILES: &str = "files";
/// The agent honours `beneath` on file requests. An older agent ignores
/// the field (and would follow symlinks out of it), so the host must not
/// send a confined request to an agent without this feature.
pub const FEATURE_FILES_BENEATH: &str = "files_beneath";

/// Entries per [`crate::Event::FileEntries`] frame: small enough that a
/// frame of 255-byte names stays far below [`crate::MAX_FRAME`].
pub const LIST_BATCH: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePath {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Stay beneath this absolute directory (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beneath: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRead {
    pub path: String,
    #[serde(default)]
    pub offset: u64,
    /// At most this many bytes; `None` reads to the end of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Stay beneath this absolute directory (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beneath: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWrite {
    pub path: String,
    /// Permission bits; `None` keeps those of the file replaced, else 0644.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Create missing parent directories (0755), like `mkdir -p`.
    #[serde(default)]
    pub parents: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Stay beneath this absolute directory (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beneath: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRemove {
    pub path: String,
    /// Remove a non-empty directory with everything in it.
    #[serde(default)]
    pub recursive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Stay beneath this absolute directory (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beneath: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// What `lstat` (in a listing) or `stat` (otherwise) says about a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    pub uid: u32,
    pub gid: u32,
}

/// Stable reasons a file request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileErrorCode {
    NotFound,
    IsDirectory,
    NotADirectory,
    /// A FIFO, socket or device where a regular file was needed.
    NotRegularFile,
    PermissionDenied,
    /// Not absolute, `..`, NUL, too long, or the root itself.
    InvalidPath,
    NotEmpty,
    ReadOnly,
    NoSpace,
    UnknownUser,
    /// Anything else; also what an unknown code from a newer agent decodes to.
    #[serde(other)]
    Io,
}

impl FileErrorCode {
    /// The code for an OS error number.
    pub fn from_errno(errno: i32) -> Self {
        match errno {
            libc_errno::ENOENT => Self::NotFound,
            libc_errno::EISDIR => Self::IsDirectory,
            libc_errno::ENOTDIR => Self::NotADirectory,
            libc_errno::EACCES | libc_errno::EPERM => Self::PermissionDenied,
            libc_errno::ENOTEMPTY => Self::NotEmpty,
            libc_errno::EROFS => Self::ReadOnly,
            libc_errno::ENOSPC | libc_errno::EDQUOT => Self::NoSpace,
            libc_errno::ENXIO => Self::NotRegularFile,
            libc_errno::ENAMETOOLONG | libc_errno::ELOOP => Self::InvalidPath,
            _ => Self::Io,
        }
    }
}

/// The Linux errno values the codes map from (this crate has no libc).
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const ENXIO: i32 = 6;
    pub const EACCES: i32 = 13;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const ENOSPC: i32 = 28;
    pub const EROFS: i32 = 30;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOTEMPTY: i32 = 39;
    pub const ELOOP: i32 = 40;
    pub const EDQUOT: i32 = 122;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Request};

    /// The JSON shape is the protocol: a change here breaks deployed agents.
    #[test]
    fn schema_snapshot() {
        let read = Request::FileRead(FileRead { path: "/etc/hosts".into(), offset: 0, limit: Some(10), user: None, beneath: None });
        assert_eq!(serde_json::to_string(&read).unwrap(), r#"{"type":"file_read","path":"/etc/hosts","offset":0,"limit":10}"#);
        let write = Request::FileWrite(FileWrite {
            path: "/tmp/x".into(),
            mode: Some(0o755),
            parents: true,
            user: Some("app".into()),
            beneath: None,
        });
        assert_eq!(
            serde_json::to_string(&write).unwrap(),
            r#"{"type":"file_write","path":"/tmp/x","mode":493,"parents":true,"user":"app"}"#
        );
        let list = Request::FileList(FilePath { path: "/".into(), user: None, beneath: None });
        assert_eq!(serde_json::to_string(&list).unwrap(), r#"{"type":"file_list","path":"/"}"#);
        let rm = Request::FileRemove(FileRemove { path: "/tmp/d".into(), recursive: true, user: None, beneath: None });
        assert_eq!(serde_json::to_string(&rm).unwrap(), r#"{"type":"file_remove","path":"/tmp/d","recursive":true}"#);
        // Confined to a mount: the field appears only when set, so an
        // unconfined request is byte-identical to what older hosts sent.
        let scoped = Request::FileStat(FilePath { path: "/workspace/a".into(), user: None, beneath: Some("/workspace".into()) });
        assert_eq!(serde_json::to_string(&scoped).unwrap(), r#"{"type":"file_stat","path":"/workspace/a","beneath":"/workspace"}"#);
        let old: Request = serde_json::from_str(r#"{"type":"file_read","path":"/x"}"#).unwrap();
        assert_eq!(old, Request::FileRead(FileRead { path: "/x".into(), offset: 0, limit: None, user: None, beneath: None }));
        assert!(crate::FEATURES.contains(&FEATURE_FILES_BENEATH));
        let stat = FileStat { name: "x".into(), kind: FileKind::File, size: 3, mode: 0o644, mtime: 5, uid: 0, gid: 0 };
        assert_eq!(
            serde_json::to_string(&Event::FileInfo(stat)).unwrap(),
            r#"{"type":"file_info","name":"x","kind":"file","size":3,"mode":420,"mtime":5,"uid":0,"gid":0}"#
        );
        let err = Event::FileError { code: FileErrorCode::NotFound, message: "m".into() };
        assert_eq!(serde_json::to_string(&err).unwrap(), r#"{"type":"file_error","code":"not_found","message":"m"}"#);
        assert_eq!(serde_json::to_string(&Event::Written { size: 7 }).unwrap(), r#"{"type":"written","size":7}"#);
        assert_eq!(serde_json::to_string(&Event::Ready).unwrap(), r#"{"type":"ready"}"#);
        // A code this host does not know yet is still an error, not a decode failure.
        let newer: Event = serde_json::from_str(r#"{"type":"file_error","code":"quota_exceeded","message":"m"}"#).unwrap();
        assert_eq!(newer, Event::FileError { code: FileErrorCode::Io, message: "m".into() });
    }
}

//! File requests to the in-sandbox agent (see `heyvm_protocol::files`).
//!
//! The agent is hostile ground, so nothing it says is trusted to be small
//! or prompt: a read never yields more bytes than asked for (it is cut
//! there), a listing
//! stops at [`MAX_LIST_ENTRIES`], and every wait for the agent is bounded
//! by a timeout. Errors become the engine's stable codes.

use std::time::Duration;

use heyvm_protocol::files::{FileErrorCode, FilePath, FileRead, FileRemove, FileStat, FileWrite, FEATURE_FILES, FEATURE_FILES_BENEATH};
use heyvm_protocol::{encode, encode_json, Event, Frame, FrameKind, Request};
use tokio::io::{AsyncWriteExt, BufReader, ReadHalf, WriteHalf};

use super::client::{read_frame, AgentClient};
use super::session::MuxStream;
use crate::error::{CoreError, Result};

/// Longest directory listing the daemon holds for one answer.
pub const MAX_LIST_ENTRIES: usize = 100_000;
/// How long the agent may take to answer a request (open, stat, rename)
/// or to send the next piece of a read or listing.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes per `Stdin` frame of a write (one mux frame each).
const WRITE_CHUNK: usize = 64 * 1024;

type Reader = BufReader<ReadHalf<MuxStream>>;

/// A file being read; see [`AgentClient::file_read`]. It never yields more
/// than the limit asked for; dropping it early abandons the read.
pub struct AgentFileReader {
    pub stat: FileStat,
    reader: Reader,
    _writer: WriteHalf<MuxStream>,
    left: u64,
    done: bool,
}

/// A file being written; nothing appears until [`AgentFileWriter::finish`].
/// Dropping it abandons the write (the agent removes its temporary file).
pub struct AgentFileWriter {
    reader: Reader,
    writer: WriteHalf<MuxStream>,
    path: String,
    sent: u64,
}

impl AgentClient {
    fn require_files(&self) -> Result<()> {
        if self.session().supports(FEATURE_FILES) {
            return Ok(());
        }
        Err(CoreError::AgentOutdated("this sandbox runs an older agent without file operations; restart the sandbox to update it".into()))
    }

    async fn file_request(&self, req: &Request) -> Result<(Reader, WriteHalf<MuxStream>)> {
        self.require_files()?;
        // An older agent would ignore `beneath` and follow symlinks out of
        // the mount: never send it a confined request.
        if confined(req) && !self.session().supports(FEATURE_FILES_BENEATH) {
            return Err(CoreError::AgentOutdated(
                "this sandbox runs an older agent that cannot keep file access inside a mount; restart the sandbox to update it".into(),
            ));
        }
        let mut stream = self.session().open().map_err(unreachable)?;
        stream.write_all(&encode_json(req)).await.map_err(unreachable)?;
        let (r, w) = tokio::io::split(stream);
        Ok((BufReader::with_capacity(64 * 1024, r), w))
    }

    /// Metadata of `path` (symlinks followed; with `beneath`, never out of
    /// that directory: see `heyvm_protocol::files`).
    pub async fn file_stat(&self, path: &str, beneath: Option<&str>, user: Option<&str>) -> Result<FileStat> {
        let req = Request::FileStat(FilePath { path: path.into(), user: user.map(Into::into), beneath: beneath.map(Into::into) });
        let (mut r, _w) = self.file_request(&req).await?;
        match next_event(&mut r, path).await? {
            Event::FileInfo(stat) => Ok(stat),
            other => Err(unexpected(&other)),
        }
    }

    /// The directory's entries (lstat of each), unsorted.
    pub async fn file_list(&self, path: &str, beneath: Option<&str>, user: Option<&str>) -> Result<Vec<FileStat>> {
        let req = Request::FileList(FilePath { path: path.into(), user: user.map(Into::into), beneath: beneath.map(Into::into) });
        let (mut r, _w) = self.file_request(&req).await?;
        let mut out = Vec::new();
        loop {
            match next_event(&mut r, path).await? {
                Event::FileEntries { entries } => {
                    out.extend(entries);
                    if out.len() > MAX_LIST_ENTRIES {
                        return Err(CoreError::PayloadTooLarge(format!(
                            "'{path}' has more than {MAX_LIST_ENTRIES} entries; list a subdirectory"
                        )));
                    }
                }
                Event::Done => return Ok(out),
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// Starts reading a regular file: its metadata now, the bytes from
    /// [`AgentFileReader::next_chunk`] (at most `limit` of them).
    pub async fn file_read(&self, req: FileRead) -> Result<AgentFileReader> {
        let path = req.path.clone();
        let left = req.limit.unwrap_or(u64::MAX);
        let (mut reader, writer) = self.file_request(&Request::FileRead(req)).await?;
        match next_event(&mut reader, &path).await? {
            Event::FileInfo(stat) => Ok(AgentFileReader { stat, reader, _writer: writer, left, done: false }),
            other => Err(unexpected(&other)),
        }
    }

    /// Starts an atomic write; the agent has checked the target and made
    /// its temporary file when this returns.
    pub async fn file_write(&self, req: FileWrite) -> Result<AgentFileWriter> {
        let path = req.path.clone();
        let (mut reader, writer) = self.file_request(&Request::FileWrite(req)).await?;
        match next_event(&mut reader, &path).await? {
            Event::Ready => Ok(AgentFileWriter { reader, writer, path, sent: 0 }),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn file_remove(&self, path: &str, beneath: Option<&str>, recursive: bool, user: Option<&str>) -> Result<()> {
        let req =
            Request::FileRemove(FileRemove { path: path.into(), recursive, user: user.map(Into::into), beneath: beneath.map(Into::into) });
        let (mut r, _w) = self.file_request(&req).await?;
        match next_event(&mut r, path).await? {
            Event::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

impl AgentFileReader {
    /// Lowers the number of bytes this read may still deliver.
    pub fn limit_to(&mut self, max: u64) {
        self.left = self.left.min(max);
        if self.left == 0 {
            self.done = true;
        }
    }

    /// The next piece of the file; `None` once it is complete.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let frame = timed(read_frame(&mut self.reader)).await?.map_err(unreachable)?;
        match frame {
            Frame::Stdout(mut data) => {
                // Beyond the limit (a file that grew, or an agent that
                // ignores the request) the read simply ends.
                if data.len() as u64 >= self.left {
                    data.truncate(self.left as usize);
                    self.done = true;
                }
                self.left -= data.len() as u64;
                Ok(Some(data))
            }
            Frame::Control(body) => {
                self.done = true;
                match heyvm_protocol::decode_json::<Event>(&body).map_err(unreachable)? {
                    Event::Done => Ok(None),
                    Event::FileError { code, message } => Err(file_error(code, message)),
                    other => Err(unexpected(&other)),
                }
            }
            other => Err(CoreError::AgentUnreachable(format!("unexpected frame from the agent: {other:?}"))),
        }
    }
}

impl AgentFileWriter {
    /// Sends the next bytes (waits while the agent's window is full).
    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(WRITE_CHUNK) {
            let frame = encode(FrameKind::Stdin, chunk);
            timed(self.writer.write_all(&frame)).await?.map_err(unreachable)?;
            self.sent += chunk.len() as u64;
        }
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.sent
    }

    /// Ends the write: the agent syncs and renames the file into place.
    pub async fn finish(mut self) -> Result<u64> {
        let eof = encode(FrameKind::StdinEof, &[]);
        timed(self.writer.write_all(&eof)).await?.map_err(unreachable)?;
        match next_event(&mut self.reader, &self.path).await? {
            Event::Written { size } if size == self.sent => Ok(size),
            Event::Written { size } => {
                Err(CoreError::Io(std::io::Error::other(format!("the agent wrote {size} bytes of the {} sent", self.sent))))
            }
            other => Err(unexpected(&other)),
        }
    }
}

/// Whether a file request is confined `beneath` a directory.
fn confined(req: &Request) -> bool {
    match req {
        Request::FileStat(r) | Request::FileList(r) => r.beneath.is_some(),
        Request::FileRead(r) => r.beneath.is_some(),
        Request::FileWrite(r) => r.beneath.is_some(),
        Request::FileRemove(r) => r.beneath.is_some(),
        _ => false,
    }
}

/// The next control event; a `FileError` becomes the matching error.
async fn next_event(r: &mut Reader, path: &str) -> Result<Event> {
    let frame = timed(read_frame(r)).await?.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            CoreError::AgentUnreachable(format!("the agent ended the request on '{path}' without an answer"))
        } else {
            unreachable(e)
        }
    })?;
    let Frame::Control(body) = frame else {
        return Err(CoreError::AgentUnreachable(format!("unexpected frame from the agent: {frame:?}")));
    };
    match heyvm_protocol::decode_json::<Event>(&body).map_err(unreachable)? {
        Event::FileError { code, message } => Err(file_error(code, message)),
        ev => Ok(ev),
    }
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(ANSWER_TIMEOUT, f)
        .await
        .map_err(|_| CoreError::AgentUnreachable(format!("the agent did not answer a file request within {ANSWER_TIMEOUT:?}")))
}

/// The engine error for an agent's file error (the HTTP codes the host
/// path routes have always used, so clients see no difference).
pub fn file_error(code: FileErrorCode, message: String) -> CoreError {
    match code {
        FileErrorCode::NotFound => {
            CoreError::FileNotFound(message.trim_end_matches(": no such file or directory").trim_matches('\'').into())
        }
        FileErrorCode::IsDirectory | FileErrorCode::NotADirectory | FileErrorCode::NotRegularFile | FileErrorCode::InvalidPath => {
            CoreError::InvalidPath(message)
        }
        FileErrorCode::NotEmpty => CoreError::Conflict(message),
        FileErrorCode::PermissionDenied => CoreError::PermissionDenied(message),
        FileErrorCode::ReadOnly => CoreError::ReadOnlyMount(message.trim_end_matches(": read-only file system").trim_matches('\'').into()),
        FileErrorCode::NoSpace => CoreError::NoSpace(message),
        FileErrorCode::UnknownUser => CoreError::InvalidRequest(message),
        FileErrorCode::Io => CoreError::Io(std::io::Error::other(message)),
    }
}

fn unreachable(e: std::io::Error) -> CoreError {
    CoreError::AgentUnreachable(e.to_string())
}

fn unexpected(e: &Event) -> CoreError {
    CoreError::AgentUnreachable(format!("unexpected agent event: {e:?}"))
}

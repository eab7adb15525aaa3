//! How a file request fails: a stable code from the protocol and a
//! readable message, sent to the host as one `FileError` event. A leaf
//! shared by the file handlers and the user resolver they act through.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;

use heyvm_protocol::files::FileErrorCode;
use heyvm_protocol::{write_json, Event};

/// Why a file request failed, as sent to the host.
pub(crate) struct Failure {
    pub code: FileErrorCode,
    pub message: String,
}

pub(crate) type FResult<T> = Result<T, Failure>;

pub(crate) fn fail(code: FileErrorCode, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

/// An OS error on `path`, with its stable code and a readable message.
pub(crate) fn os(path: &Path, e: io::Error) -> Failure {
    let code = e.raw_os_error().map(FileErrorCode::from_errno).unwrap_or(FileErrorCode::Io);
    if e.raw_os_error() == Some(libc::ENOTDIR) {
        return fail(code, format!("'{}' or one of its parents is not a directory", path.display()));
    }
    let text = e.to_string();
    // "No such file or directory (os error 2)" -> "no such file or directory"
    let text = text.split(" (os error").next().unwrap_or(&text).to_lowercase();
    fail(code, format!("'{}': {text}", path.display()))
}

pub(crate) fn send_failure(conn: &mut UnixStream, f: Failure) -> io::Result<()> {
    write_json(conn, &Event::FileError { code: f.code, message: f.message })
}

//! What the file tools share with the agent-computer routes: read windows
//! and how bytes are shown to a model. The files themselves are read and
//! written by the sandbox's agent (`SandboxOps::read_file`/`write_file`),
//! so any path in the sandbox works, in any image (no shell needed).

use base64::Engine;

/// Default and largest read windows.
pub const READ_DEFAULT: u64 = 256 * 1024;
pub const READ_MAX: u64 = 16 * 1024 * 1024;

/// The window a read asks for: `limit` bytes, by default 256 KiB, at most 16 MiB.
pub fn read_limit(limit: Option<u64>) -> u64 {
    limit.unwrap_or(READ_DEFAULT).min(READ_MAX)
}

/// Bytes as text when they are UTF-8, else base64; with the encoding's name.
pub fn shown(bytes: Vec<u8>) -> (String, &'static str) {
    match String::from_utf8(bytes) {
        Ok(text) => (text, "utf8"),
        Err(e) => (base64::engine::general_purpose::STANDARD.encode(e.into_bytes()), "base64"),
    }
}

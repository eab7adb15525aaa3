//! Files on a computer through exec, so they work at any path in any
//! sandbox (and any backend) with the sandbox's own permissions: a write
//! goes to a temporary file beside the target and is renamed over it; a
//! read returns the size and a base64 window of the file.

use base64::Engine;
use heyvm_types::{ExecRequest, ExecResponse};

/// Default and largest read windows.
pub const READ_DEFAULT: u64 = 256 * 1024;
pub const READ_MAX: u64 = 16 * 1024 * 1024;

const WRITE: &str = r#"set -e; f="$1"; mkdir -p -- "$(dirname -- "$f")"; t="$f.heyvm-tmp.$$"; cat > "$t"; mv -f -- "$t" "$f""#;
const READ: &str = r#"set -e; f="$1"; [ -f "$f" ] || { echo "no such file: $f" >&2; exit 2; }; wc -c < "$f"; tail -c +$(($2 + 1)) -- "$f" | head -c "$3" | base64 -w0"#;

fn script(body: &str, args: &[String], stdin: Option<String>) -> ExecRequest {
    let mut argv = vec!["-c".to_string(), body.to_string(), "heyvm".to_string()];
    argv.extend_from_slice(args);
    ExecRequest {
        command: "/bin/sh".into(),
        args: argv,
        cwd: Some(heyvm_types::WORKSPACE_PATH.into()),
        timeout_secs: Some(120.0),
        stdin_encoding: stdin.as_ref().map(|_| "base64".to_string()),
        stdin,
        ..Default::default()
    }
}

/// Writes `bytes` to `path` (absolute, or relative to /workspace).
pub fn write_request(path: &str, bytes: &[u8]) -> ExecRequest {
    script(WRITE, &[path.to_string()], Some(base64::engine::general_purpose::STANDARD.encode(bytes)))
}

/// Reads up to `limit` (default 256 KiB, at most 16 MiB) bytes from `offset`.
pub fn read_request(path: &str, offset: u64, limit: Option<u64>) -> ExecRequest {
    let limit = limit.unwrap_or(READ_DEFAULT).min(READ_MAX);
    script(READ, &[path.to_string(), offset.to_string(), limit.to_string()], None)
}

/// A script's failure reason (its stderr, else the exit code).
pub fn failure(r: &ExecResponse) -> String {
    let why = r.stderr.trim();
    if why.is_empty() {
        format!("failed with exit code {}", r.exit_code)
    } else {
        why.to_string()
    }
}

pub struct FileRead {
    /// The file's total size.
    pub size: u64,
    pub bytes_read: u64,
    /// Text, or base64 when the bytes are not UTF-8.
    pub content: String,
    /// `utf8` or `base64`.
    pub encoding: &'static str,
}

/// The answer of [`read_request`]; Err is why it failed.
pub fn parse_read(r: &ExecResponse) -> Result<FileRead, String> {
    if r.exit_code != 0 {
        return Err(failure(r));
    }
    let mut lines = r.stdout.splitn(2, '\n');
    let size: u64 = lines.next().unwrap_or("0").trim().parse().map_err(|_| "unexpected answer from the sandbox".to_string())?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(lines.next().unwrap_or("").trim())
        .map_err(|_| "unexpected answer from the sandbox".to_string())?;
    let bytes_read = bytes.len() as u64;
    Ok(match String::from_utf8(bytes) {
        Ok(text) => FileRead { size, bytes_read, content: text, encoding: "utf8" },
        Err(e) => {
            FileRead { size, bytes_read, content: base64::engine::general_purpose::STANDARD.encode(e.into_bytes()), encoding: "base64" }
        }
    })
}

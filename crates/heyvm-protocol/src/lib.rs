//! The host <-> agent protocol, version 2, in two layers.
//!
//! The outer layer ([`mux`]) multiplexes many streams, with a handshake and
//! per-stream credit flow control, over the single byte stream a sandbox
//! offers (an inherited unix socket for bubblewrap, a virtio-serial port
//! for a VM). Each stream carries one request of the inner layer, defined
//! here: the host sends a JSON control frame, the agent answers with frames.
//!
//! Wire format of an inner frame: `kind: u8`, `len: u32 big-endian`, `len`
//! bytes. Control frames carry JSON; output frames carry raw bytes so binary
//! output costs nothing to encode.

pub mod files;
pub mod mux;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change; the agent refuses other versions.
/// Compatible additions are announced as features in the hello instead.
pub const PROTOCOL_VERSION: u32 = 2;
/// What this agent announces in its hello (see `mux::Hello::features`).
pub const FEATURES: &[&str] = &[files::FEATURE_FILES, files::FEATURE_FILES_BENEATH, FEATURE_GROW_FS, FEATURE_FS_USAGE];
/// The agent grows a mounted ext4 file system online ([`Request::GrowFs`]).
pub const FEATURE_GROW_FS: &str = "grow_fs";
/// The agent measures a mounted file system ([`Request::FsUsage`]).
pub const FEATURE_FS_USAGE: &str = "fs_usage";
/// Upper bound on one inner frame's payload, so a corrupt or hostile header
/// cannot make either side allocate without bound.
pub const MAX_FRAME: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// JSON-encoded [`Request`] or [`Event`].
    Control = 1,
    Stdout = 2,
    Stderr = 3,
    Stdin = 4,
    /// End of stdin.
    StdinEof = 5,
}

impl FrameKind {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Control,
            2 => Self::Stdout,
            3 => Self::Stderr,
            4 => Self::Stdin,
            5 => Self::StdinEof,
            _ => return None,
        })
    }
}

/// Host -> agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Liveness probe; answered with [`Event::Pong`].
    Ping {
        version: u32,
    },
    /// Run a command to completion, streaming its output.
    Exec(ExecSpec),
    /// (Re)start the long-running start command; its output goes to the log.
    StartService {
        command: String,
        env: BTreeMap<String, String>,
        cwd: String,
        /// Run as this sandbox user (as in [`ShellSpec::user`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// Terminate every process in the sandbox, waiting `grace_ms` before
    /// SIGKILL; answered with [`Event::Done`] just before the agent exits.
    Shutdown {
        grace_ms: u64,
    },
    /// Connect to `127.0.0.1:port` inside the sandbox. On success the agent
    /// answers [`Event::Connected`] and from then on the connection carries
    /// raw bytes both ways (no more frames) until either side closes.
    Connect {
        port: u16,
    },
    /// Open an interactive shell on a new pseudo-terminal. The agent answers
    /// [`Event::Started`], then PTY output as `Stdout` frames and finally
    /// [`Event::Exit`]; the host sends `Stdin` frames and [`Request::Resize`]
    /// control frames on the same connection. Closing the host's side hangs
    /// up the terminal.
    Shell(ShellSpec),
    /// Only valid on an open shell connection: new terminal size.
    Resize {
        cols: u16,
        rows: u16,
    },
    /// Subscribe to the sandbox log: the agent sends what it buffered while
    /// nobody listened, then every new line, as [`Event::Log`]. A newer
    /// subscription replaces an older one.
    Logs,
    /// Only inside a VM, after a restore or a fork: set the clock to
    /// `time_ms`, mix `seed` (hex) into the kernel's RNG, take `hostname`
    /// and, if given, the address `ip` (CIDR) with default route `gateway`.
    /// Answered with [`Event::Done`] or [`Event::Error`].
    ResetIdentity {
        time_ms: u64,
        hostname: String,
        seed: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<String>,
    },
    /// Only inside a VM (feature [`FEATURE_GROW_FS`]): the host made the
    /// disk under `path` (a mounted ext4 file system) `bytes` large; grow
    /// the file system to fill it, online. Answered with [`Event::Done`] or
    /// [`Event::Error`].
    GrowFs {
        path: String,
        bytes: u64,
    },
    /// (Feature [`FEATURE_FS_USAGE`]) how full the file system mounted at
    /// `path` is, as the sandbox's kernel sees it (`statfs`): answered with
    /// [`Event::FsUsage`] or [`Event::Error`]. The host needs it for a VM's
    /// disks, whose state on the host lags the guest's caches and journal.
    FsUsage {
        path: String,
    },
    /// File requests (feature `files`; see [`files`] for the exchanges).
    FileStat(files::FilePath),
    FileList(files::FilePath),
    FileRead(files::FileRead),
    FileWrite(files::FileWrite),
    FileRemove(files::FileRemove),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShellSpec {
    /// The program; `None` means the login shell (`/bin/bash -l`, else `/bin/sh -l`).
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub cwd: String,
    pub cols: u16,
    pub rows: u16,
    /// Run as this sandbox user (`user`, `uid`, `user:group`, `uid:gid`,
    /// from the sandbox's `/etc/passwd`); `None` means the agent's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: String,
    /// Kill the whole process group after this long.
    pub timeout_ms: Option<u64>,
    /// Whether the host will send stdin frames; otherwise stdin is /dev/null.
    #[serde(default)]
    pub stdin: bool,
    /// Keep the command running if the host disconnects (its output is then
    /// discarded); otherwise a disconnect kills the process group.
    #[serde(default, skip_serializing_if = "is_false")]
    pub background: bool,
    /// Run as this sandbox user (as in [`ShellSpec::user`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Agent -> host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Pong {
        version: u32,
        pid: u32,
    },
    Started {
        pid: u32,
    },
    Exit(ExitStatus),
    Done,
    Error {
        message: String,
    },
    /// Answer to [`Request::Connect`]: the byte stream starts right after.
    Connected,
    /// One line of the sandbox log (see [`Request::Logs`]).
    Log(LogLine),
    /// A file's metadata (stat, or the start of a read).
    FileInfo(files::FileStat),
    /// Some entries of a directory listing.
    FileEntries {
        entries: Vec<files::FileStat>,
    },
    /// A write may send its bytes.
    Ready,
    /// A write is in place with this many bytes.
    Written {
        size: u64,
    },
    FileError {
        code: files::FileErrorCode,
        message: String,
    },
    /// Answer to [`Request::FsUsage`]: bytes in use (blocks not free,
    /// ext4's own metadata included) and the file system's size.
    FsUsage {
        used_bytes: u64,
        total_bytes: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Shell convention: the exit code, or 128 + signal.
    pub code: i32,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Control(Vec<u8>),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Stdin(Vec<u8>),
    StdinEof,
}

pub fn encode(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(5 + payload.len());
    buf.push(kind as u8);
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    buf
}

pub fn encode_json<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("protocol messages always serialise");
    encode(FrameKind::Control, &body)
}

/// Parses a 5-byte header into kind and length, validating both.
pub fn parse_header(h: [u8; 5]) -> io::Result<(FrameKind, usize)> {
    let kind =
        FrameKind::from_u8(h[0]).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unknown frame kind {}", h[0])))?;
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes exceeds limit")));
    }
    Ok((kind, len))
}

pub fn make_frame(kind: FrameKind, payload: Vec<u8>) -> Frame {
    match kind {
        FrameKind::Control => Frame::Control(payload),
        FrameKind::Stdout => Frame::Stdout(payload),
        FrameKind::Stderr => Frame::Stderr(payload),
        FrameKind::Stdin => Frame::Stdin(payload),
        FrameKind::StdinEof => Frame::StdinEof,
    }
}

/// Blocking read of one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut h = [0u8; 5];
    match r.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (kind, len) = parse_header(h)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some(make_frame(kind, payload)))
}

pub fn write_json<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    w.write_all(&encode_json(msg))
}

pub fn decode_json<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> io::Result<T> {
    serde_json::from_slice(payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_json(&mut buf, &Request::Ping { version: PROTOCOL_VERSION }).unwrap();
        buf.extend(encode(FrameKind::Stdout, b"hello"));
        buf.extend(encode(FrameKind::StdinEof, b""));
        let mut r = &buf[..];
        let Some(Frame::Control(c)) = read_frame(&mut r).unwrap() else { panic!("control expected") };
        assert_eq!(decode_json::<Request>(&c).unwrap(), Request::Ping { version: PROTOCOL_VERSION });
        assert_eq!(read_frame(&mut r).unwrap(), Some(Frame::Stdout(b"hello".to_vec())));
        assert_eq!(read_frame(&mut r).unwrap(), Some(Frame::StdinEof));
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }

    #[test]
    fn rejects_oversized_and_unknown_frames() {
        let mut h = [1u8, 0, 0, 0, 0];
        h[1..].copy_from_slice(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert!(parse_header(h).is_err());
        assert!(parse_header([9, 0, 0, 0, 0]).is_err());
    }

    /// The JSON shape is the protocol: a change here breaks deployed agents.
    #[test]
    fn schema_snapshot() {
        let exec = Request::Exec(ExecSpec {
            argv: vec!["echo".into(), "hi".into()],
            env: BTreeMap::from([("A".into(), "1".into())]),
            cwd: "/workspace".into(),
            timeout_ms: Some(1000),
            stdin: false,
            background: false,
            user: None,
        });
        assert_eq!(
            serde_json::to_string(&exec).unwrap(),
            r#"{"type":"exec","argv":["echo","hi"],"env":{"A":"1"},"cwd":"/workspace","timeout_ms":1000,"stdin":false}"#
        );
        // `user` only when given (older agents ignore it; this one runs as it).
        let as_user = Request::Exec(ExecSpec {
            argv: vec!["id".into()],
            env: BTreeMap::new(),
            cwd: "/".into(),
            timeout_ms: None,
            stdin: false,
            background: false,
            user: Some("app".into()),
        });
        assert!(serde_json::to_string(&as_user).unwrap().ends_with(r#","user":"app"}"#));
        let service = |user: Option<&str>| Request::StartService {
            command: "serve".into(),
            env: BTreeMap::new(),
            cwd: "/".into(),
            user: user.map(Into::into),
        };
        assert_eq!(serde_json::to_string(&service(None)).unwrap(), r#"{"type":"start_service","command":"serve","env":{},"cwd":"/"}"#);
        assert_eq!(
            serde_json::to_string(&service(Some("1000"))).unwrap(),
            r#"{"type":"start_service","command":"serve","env":{},"cwd":"/","user":"1000"}"#
        );
        let exit = Event::Exit(ExitStatus { code: 137, signal: Some(9), timed_out: true, duration_ms: 5 });
        assert_eq!(serde_json::to_string(&exit).unwrap(), r#"{"type":"exit","code":137,"signal":9,"timed_out":true,"duration_ms":5}"#);
        let shell =
            Request::Shell(ShellSpec { argv: None, env: BTreeMap::new(), cwd: "/workspace".into(), cols: 80, rows: 24, user: None });
        assert_eq!(
            serde_json::to_string(&shell).unwrap(),
            r#"{"type":"shell","argv":null,"env":{},"cwd":"/workspace","cols":80,"rows":24}"#
        );
        assert_eq!(serde_json::to_string(&Request::Resize { cols: 100, rows: 30 }).unwrap(), r#"{"type":"resize","cols":100,"rows":30}"#);
        assert_eq!(serde_json::to_string(&Request::Connect { port: 8080 }).unwrap(), r#"{"type":"connect","port":8080}"#);
        assert_eq!(serde_json::to_string(&Event::Connected).unwrap(), r#"{"type":"connected"}"#);
        assert_eq!(serde_json::to_string(&Request::Logs).unwrap(), r#"{"type":"logs"}"#);
        let log = Event::Log(LogLine { timestamp: 1, source: "stdout".into(), level: "info".into(), message: "hi".into() });
        assert_eq!(serde_json::to_string(&log).unwrap(), r#"{"type":"log","timestamp":1,"source":"stdout","level":"info","message":"hi"}"#);
        let reset =
            Request::ResetIdentity { time_ms: 5, hostname: "h".into(), seed: "00ff".into(), ip: Some("10.0.0.2/30".into()), gateway: None };
        assert_eq!(
            serde_json::to_string(&reset).unwrap(),
            r#"{"type":"reset_identity","time_ms":5,"hostname":"h","seed":"00ff","ip":"10.0.0.2/30"}"#
        );
        let grow = Request::GrowFs { path: "/workspace".into(), bytes: 2 << 30 };
        assert_eq!(serde_json::to_string(&grow).unwrap(), r#"{"type":"grow_fs","path":"/workspace","bytes":2147483648}"#);
        let usage = Request::FsUsage { path: "/workspace".into() };
        assert_eq!(serde_json::to_string(&usage).unwrap(), r#"{"type":"fs_usage","path":"/workspace"}"#);
        let used = Event::FsUsage { used_bytes: 4096, total_bytes: 1 << 30 };
        assert_eq!(serde_json::to_string(&used).unwrap(), r#"{"type":"fs_usage","used_bytes":4096,"total_bytes":1073741824}"#);
    }
}

/// One line of the sandbox log: sent by the agent, stored by the daemon as
/// JSON lines in a file only the host can reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub timestamp: i64,
    pub source: String,
    pub level: String,
    pub message: String,
}

impl LogLine {
    pub fn new(source: &str, message: &str) -> Self {
        let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        LogLine { timestamp, source: source.into(), level: log_level(message).into(), message: message.into() }
    }

    /// The line as appended to the log file, newline included.
    pub fn to_jsonl(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("log lines always serialise");
        v.push(b'\n');
        v
    }
}

/// Programs rarely tag their output, so the level is inferred from the
/// words of the message: `error` for error/fatal/panic, `warn` for
/// warnings, otherwise `info`.
pub fn log_level(message: &str) -> &'static str {
    let lower = message.to_ascii_lowercase();
    if ["error", "fatal", "panic", "exception", "traceback"].iter().any(|w| lower.contains(w)) {
        "error"
    } else if lower.contains("warn") {
        "warn"
    } else {
        "info"
    }
}

//! Requests to the in-sandbox agent (the inner layer of `heyvm-protocol`).
//! Each request gets a stream of its own on the sandbox's session, so
//! concurrent execs never share one.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use heyvm_protocol::{decode_json, encode_json, parse_header, Event, ExecSpec, ExitStatus, Frame, FrameKind, Request, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};

use super::session::{AgentSession, MuxStream};

type OwnedReadHalf = ReadHalf<MuxStream>;
type OwnedWriteHalf = WriteHalf<MuxStream>;

/// The agent's answer when nothing accepts connections on the port: its
/// own explanation (e.g. "connection refused").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PortRefused(pub String);

pub struct AgentClient {
    session: Arc<AgentSession>,
}

/// Output of a running exec, in the order the agent produced it.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecEvent {
    Started { pid: u32 },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitStatus),
}

/// A running exec: read events with [`AgentExec::next`]; dropping it closes
/// the connection, which makes the agent kill the command.
pub struct AgentExec {
    reader: BufReader<OwnedReadHalf>,
    writer: Option<OwnedWriteHalf>,
}

/// The stdin side of an exec, taken with [`AgentExec::take_stdin`] so it can
/// be fed from another task while output is read. Keep it until the command
/// exits: dropping it tells the agent the host is gone, which kills the
/// command.
pub struct AgentStdin {
    writer: OwnedWriteHalf,
}

impl AgentClient {
    pub fn new(session: Arc<AgentSession>) -> Self {
        AgentClient { session }
    }

    pub(super) fn session(&self) -> &AgentSession {
        &self.session
    }

    async fn request(&self, req: &Request) -> io::Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf)> {
        let mut stream = self.session.open()?;
        stream.write_all(&encode_json(req)).await?;
        let (r, w) = tokio::io::split(stream);
        Ok((BufReader::with_capacity(64 * 1024, r), w))
    }

    pub async fn ping(&self) -> io::Result<u32> {
        let (mut r, _w) = self.request(&Request::Ping { version: PROTOCOL_VERSION }).await?;
        match read_event(&mut r).await? {
            Event::Pong { pid, .. } => Ok(pid),
            Event::Error { message } => Err(io::Error::other(message)),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn exec(&self, spec: ExecSpec) -> io::Result<AgentExec> {
        let (reader, writer) = self.request(&Request::Exec(spec)).await?;
        Ok(AgentExec { reader, writer: Some(writer) })
    }

    /// Launches the start command; the inner `Err` is the agent's refusal
    /// (e.g. an unknown user), the outer one a transport failure.
    pub async fn start_service(
        &self,
        command: &str,
        env: BTreeMap<String, String>,
        cwd: &str,
        user: Option<String>,
    ) -> io::Result<std::result::Result<u32, String>> {
        let req = Request::StartService { command: command.into(), env, cwd: cwd.into(), user };
        let (mut r, _w) = self.request(&req).await?;
        match read_event(&mut r).await? {
            Event::Started { pid } => Ok(Ok(pid)),
            Event::Error { message } => Ok(Err(message)),
            other => Err(unexpected(&other)),
        }
    }

    /// After a VM restore or fork: new clock, RNG seed, hostname, address.
    pub async fn reset_identity(
        &self,
        time_ms: u64,
        hostname: &str,
        seed: String,
        ip: Option<String>,
        gateway: Option<String>,
    ) -> io::Result<()> {
        let req = Request::ResetIdentity { time_ms, hostname: hostname.into(), seed, ip, gateway };
        let (mut r, _w) = self.request(&req).await?;
        match read_event(&mut r).await? {
            Event::Done => Ok(()),
            Event::Error { message } => Err(io::Error::other(message)),
            other => Err(unexpected(&other)),
        }
    }

    /// Inside a VM whose disk under `path` the host just grew: the agent
    /// grows the mounted file system to `bytes`. `Unsupported` from an
    /// agent without the feature (the disk then grows at the next start).
    pub async fn grow_fs(&self, path: &str, bytes: u64) -> io::Result<()> {
        if !self.session.supports(heyvm_protocol::FEATURE_GROW_FS) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "the agent cannot grow a file system (an older agent)"));
        }
        let (mut r, _w) = self.request(&Request::GrowFs { path: path.into(), bytes }).await?;
        match read_event(&mut r).await? {
            Event::Done => Ok(()),
            Event::Error { message } => Err(io::Error::other(message)),
            other => Err(unexpected(&other)),
        }
    }

    /// Used and total bytes of the file system mounted at `path`, as the
    /// sandbox's kernel sees it. `Unsupported` from an agent without the
    /// feature.
    pub async fn fs_usage(&self, path: &str) -> io::Result<(u64, u64)> {
        if !self.session.supports(heyvm_protocol::FEATURE_FS_USAGE) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "the agent cannot measure a file system (an older agent)"));
        }
        let (mut r, _w) = self.request(&Request::FsUsage { path: path.into() }).await?;
        match read_event(&mut r).await? {
            Event::FsUsage { used_bytes, total_bytes } => Ok((used_bytes, total_bytes)),
            Event::Error { message } => Err(io::Error::other(message)),
            other => Err(unexpected(&other)),
        }
    }

    /// Opens a byte stream to `127.0.0.1:port` inside the sandbox. The
    /// answer is read byte-exactly (no buffering) because the sandbox
    /// program's bytes may follow it immediately. The inner `Err` is the
    /// agent's refusal (nothing listens on the port).
    pub async fn connect_port(&self, port: u16) -> io::Result<Result<MuxStream, PortRefused>> {
        let mut stream = self.session.open()?;
        stream.write_all(&encode_json(&Request::Connect { port })).await?;
        let mut h = [0u8; 5];
        stream.read_exact(&mut h).await?;
        let (kind, len) = parse_header(h)?;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await?;
        if kind != FrameKind::Control {
            return Err(io::Error::other(format!("unexpected frame from agent: {kind:?}")));
        }
        match decode_json::<Event>(&payload)? {
            Event::Connected => Ok(Ok(stream)),
            Event::Error { message } => Ok(Err(PortRefused(message))),
            other => Err(unexpected(&other)),
        }
    }

    /// Subscribes to the sandbox log; see [`LogFeed::next`].
    pub async fn logs(&self) -> io::Result<LogFeed> {
        let (reader, writer) = self.request(&Request::Logs).await?;
        Ok(LogFeed { reader, _writer: writer })
    }

    pub async fn shutdown(&self, grace: Duration) -> io::Result<()> {
        let req = Request::Shutdown { grace_ms: grace.as_millis() as u64 };
        let (mut r, _w) = self.request(&req).await?;
        match read_event(&mut r).await {
            Ok(Event::Done) => Ok(()),
            // The agent exits right after answering; a cut stream is fine.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e),
        }
    }
}

/// What a shell connection delivers, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ShellEvent {
    Started {
        pid: u32,
    },
    /// Terminal output (stdout and stderr are one stream on a PTY).
    Output(Vec<u8>),
    Exit(ExitStatus),
}

/// Reading half of a shell connection (see [`AgentClient::shell`]).
pub struct AgentShellReader {
    reader: BufReader<OwnedReadHalf>,
}

/// Writing half of a shell connection. Dropping it (or [`Self::hang_up`])
/// hangs up the terminal; the reader then still receives the exit.
pub struct AgentShellWriter {
    writer: OwnedWriteHalf,
}

impl AgentClient {
    /// Opens a shell on a new PTY inside the sandbox.
    pub async fn shell(&self, spec: heyvm_protocol::ShellSpec) -> io::Result<(AgentShellReader, AgentShellWriter)> {
        let (reader, writer) = self.request(&Request::Shell(spec)).await?;
        Ok((AgentShellReader { reader }, AgentShellWriter { writer }))
    }
}

impl AgentShellReader {
    /// The next event; an agent-side refusal (bad cwd, no shell) is an
    /// `InvalidInput` error.
    pub async fn next(&mut self) -> io::Result<ShellEvent> {
        match read_frame(&mut self.reader).await? {
            Frame::Stdout(d) | Frame::Stderr(d) => Ok(ShellEvent::Output(d)),
            Frame::Control(body) => match decode_json::<Event>(&body)? {
                Event::Started { pid } => Ok(ShellEvent::Started { pid }),
                Event::Exit(s) => Ok(ShellEvent::Exit(s)),
                Event::Error { message } => Err(io::Error::new(io::ErrorKind::InvalidInput, message)),
                other => Err(unexpected(&other)),
            },
            other => Err(io::Error::other(format!("unexpected frame from agent: {other:?}"))),
        }
    }
}

impl AgentShellWriter {
    pub async fn stdin(&mut self, data: &[u8]) -> io::Result<()> {
        self.writer.write_all(&heyvm_protocol::encode(FrameKind::Stdin, data)).await
    }

    pub async fn resize(&mut self, cols: u16, rows: u16) -> io::Result<()> {
        self.writer.write_all(&encode_json(&Request::Resize { cols, rows })).await
    }

    /// Closes the host's side: the agent sends SIGHUP to the shell.
    pub async fn hang_up(mut self) -> io::Result<()> {
        self.writer.shutdown().await
    }
}

impl AgentExec {
    /// The next event; an agent-side error becomes `Err`.
    pub async fn next(&mut self) -> io::Result<ExecEvent> {
        match read_frame(&mut self.reader).await? {
            Frame::Stdout(d) => Ok(ExecEvent::Stdout(d)),
            Frame::Stderr(d) => Ok(ExecEvent::Stderr(d)),
            Frame::Control(body) => match decode_json::<Event>(&body)? {
                Event::Started { pid } => Ok(ExecEvent::Started { pid }),
                Event::Exit(s) => Ok(ExecEvent::Exit(s)),
                Event::Error { message } => Err(io::Error::new(io::ErrorKind::InvalidInput, message)),
                other => Err(unexpected(&other)),
            },
            other => Err(io::Error::other(format!("unexpected frame from agent: {other:?}"))),
        }
    }

    /// Takes the stdin side (once; `None` afterwards).
    pub fn take_stdin(&mut self) -> Option<AgentStdin> {
        self.writer.take().map(|writer| AgentStdin { writer })
    }
}

impl AgentStdin {
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.writer.write_all(&heyvm_protocol::encode(FrameKind::Stdin, data)).await
    }

    /// End of input: the command reads EOF.
    pub async fn close(&mut self) -> io::Result<()> {
        self.writer.write_all(&heyvm_protocol::encode(FrameKind::StdinEof, &[])).await
    }
}

/// The agent's log subscription.
pub struct LogFeed {
    reader: BufReader<OwnedReadHalf>,
    _writer: OwnedWriteHalf,
}

impl LogFeed {
    /// The next log line; an error when the stream ends.
    pub async fn next(&mut self) -> io::Result<heyvm_protocol::LogLine> {
        match read_event(&mut self.reader).await? {
            Event::Log(line) => Ok(line),
            other => Err(unexpected(&other)),
        }
    }
}

pub(super) async fn read_frame(r: &mut BufReader<OwnedReadHalf>) -> io::Result<Frame> {
    let mut h = [0u8; 5];
    r.read_exact(&mut h).await?;
    let (kind, len) = parse_header(h)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(heyvm_protocol::make_frame(kind, payload))
}

async fn read_event(r: &mut BufReader<OwnedReadHalf>) -> io::Result<Event> {
    match read_frame(r).await? {
        Frame::Control(body) => decode_json(&body),
        other => Err(io::Error::other(format!("unexpected frame from agent: {other:?}"))),
    }
}

fn unexpected(e: &Event) -> io::Error {
    io::Error::other(format!("unexpected agent event: {e:?}"))
}

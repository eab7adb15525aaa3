//! `heyvm sh <id>` and `heyvm connect <url> --shell`: an interactive shell
//! in the local terminal over the `shell-stream` WebSocket.
//!
//! One poll(2) loop waits on the socket, the keyboard and a SIGWINCH pipe.
//! Keys go out as stdin frames, output frames are written as they arrive
//! (de-duplicated by sequence number), window changes become resize frames
//! and received output is acknowledged a few times a second. A dropped
//! connection is resumed with the session id and the last sequence number
//! received, so nothing is lost or repeated.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use heyvm_client::Client;
use serde::Serialize;
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

use super::tty::{self, RawMode, WinchPipe};
use crate::output::{self, Format};

const ACK_EVERY: Duration = Duration::from_millis(200);
const RECONNECT_ATTEMPTS: u32 = 5;
/// After piped stdin ends, how often another end-of-file keystroke is sent.
const EOF_REPEAT: Duration = Duration::from_millis(500);

/// What the shell is opened with.
#[derive(Debug, Clone, Default)]
pub struct ShellOpts {
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
}

#[derive(Serialize)]
struct ShellJson {
    exit_code: i32,
    session_id: String,
}

/// `heyvm sh <id>`: asks the API for the stream URL, then attaches.
pub fn sh(c: &Client, f: Format, token: Option<&str>, id: &str, opts: ShellOpts) -> anyhow::Result<ExitCode> {
    let session = c.shell_session(id)?;
    let url = session["connection_url"].as_str().ok_or_else(|| anyhow!("the server's shell-session answer has no connection_url"))?;
    connect(f, token, url, opts)
}

/// Runs an interactive shell in sandbox `id` to its end; its exit code.
pub fn run_shell(c: &Client, token: Option<&str>, id: &str, opts: ShellOpts) -> anyhow::Result<i32> {
    let session = c.shell_session(id)?;
    let url = session["connection_url"].as_str().ok_or_else(|| anyhow!("the server's shell-session answer has no connection_url"))?;
    Ok(Session::new(url, token, opts).run()?.0)
}

/// `heyvm connect <url> --shell`.
pub fn connect(f: Format, token: Option<&str>, url: &str, opts: ShellOpts) -> anyhow::Result<ExitCode> {
    let (code, session_id) = Session::new(url, token, opts).run()?;
    if f == Format::Json {
        output::json(&ShellJson { exit_code: code, session_id });
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

fn dial(url: &str, token: Option<&str>) -> anyhow::Result<WebSocket<TcpStream>> {
    let rest = match url.split_once("://") {
        Some(("ws", rest)) => rest,
        Some(("wss", _)) => bail!("wss:// URLs need TLS, which this heyvm build does not include"),
        _ => bail!("'{url}' is not a ws:// URL"),
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let addr = if authority.rsplit_once(':').is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())) && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let stream = TcpStream::connect(&addr).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut req = url.into_client_request().with_context(|| format!("bad URL '{url}'"))?;
    if let Some(t) = token {
        req.headers_mut().insert("Authorization", format!("Bearer {t}").parse()?);
    }
    let (ws, _) = tungstenite::client::client(req, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let msg = serde_json::from_str::<Value>(&body).ok().and_then(|v| v["message"].as_str().map(String::from));
            anyhow!("{}", msg.unwrap_or_else(|| format!("the server refused the shell stream (HTTP {})", resp.status())))
        }
        other => anyhow!("WebSocket handshake failed: {other}"),
    })?;
    ws.get_ref().set_nonblocking(true)?;
    Ok(ws)
}

/// How one connection ended.
enum Outcome {
    Exited(i32),
    /// The connection dropped; the session may be resumed.
    Dropped(String),
}

struct Session<'a> {
    url: &'a str,
    token: Option<&'a str>,
    opts: ShellOpts,
    session_id: Option<String>,
    last_seq: u64,
    acked: u64,
    stdin_open: bool,
    /// When stdin ended (piped input), the last end-of-file keystroke sent.
    eof_sent: Option<Instant>,
    /// The last byte forwarded from stdin.
    last_input: u8,
    /// Keystrokes whose frame could not be sent: resent after reconnecting.
    unsent: Vec<u8>,
    raw: Option<RawMode>,
}

impl<'a> Session<'a> {
    fn new(url: &'a str, token: Option<&'a str>, opts: ShellOpts) -> Self {
        Session {
            url,
            token,
            opts,
            session_id: None,
            last_seq: 0,
            acked: 0,
            stdin_open: true,
            eof_sent: None,
            last_input: b'\n',
            unsent: Vec::new(),
            raw: None,
        }
    }

    fn run(mut self) -> anyhow::Result<(i32, String)> {
        let winch = WinchPipe::install()?;
        let mut attempt = 0;
        loop {
            let outcome = match dial(self.url, self.token) {
                Ok(ws) => self.attach(ws, &winch)?,
                Err(e) => Outcome::Dropped(e.to_string()),
            };
            match outcome {
                Outcome::Exited(code) => {
                    drop(self.raw.take());
                    return Ok((code, self.session_id.unwrap_or_default()));
                }
                Outcome::Dropped(why) if self.session_id.is_some() && attempt < RECONNECT_ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(100) * (1 << attempt));
                    tracing::debug!(%why, attempt, "reconnecting");
                }
                Outcome::Dropped(why) => {
                    drop(self.raw.take());
                    bail!("shell connection lost: {why}");
                }
            }
        }
    }

    /// Serves one connection: init, then the event loop.
    fn attach(&mut self, ws: WebSocket<TcpStream>, winch: &WinchPipe) -> anyhow::Result<Outcome> {
        let (cols, rows) = tty::window_size().unwrap_or((80, 24));
        let mut init = json!({"type": "init", "cols": cols, "rows": rows});
        if let Some(sid) = &self.session_id {
            init["sessionId"] = json!(sid);
            init["lastSeq"] = json!(self.last_seq);
        } else {
            if let Some(cwd) = &self.opts.cwd {
                init["cwd"] = json!(cwd);
            }
            if !self.opts.env.is_empty() {
                init["env"] = json!(self.opts.env);
            }
            if let Some(user) = &self.opts.user {
                init["user"] = json!(user);
            }
        }
        let mut conn = Conn { ws, flush_pending: false };
        if let Err(why) = conn.send(Message::text(init.to_string())) {
            return Ok(Outcome::Dropped(why));
        }
        if !self.unsent.is_empty() {
            let mut frame = vec![0x01];
            frame.append(&mut self.unsent);
            if let Err(why) = conn.send(Message::binary(frame)) {
                return Ok(Outcome::Dropped(why));
            }
        }
        let mut last_ack = Instant::now();
        let sock = conn.ws.get_ref().as_raw_fd();
        loop {
            let mut fds = vec![
                libc::pollfd { fd: sock, events: libc::POLLIN | if conn.flush_pending { libc::POLLOUT } else { 0 }, revents: 0 },
                libc::pollfd { fd: winch.fd(), events: libc::POLLIN, revents: 0 },
            ];
            if self.stdin_open && self.raw_ready() {
                fds.push(libc::pollfd { fd: libc::STDIN_FILENO, events: libc::POLLIN, revents: 0 });
            }
            // SAFETY: poll over a local array of pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ACK_EVERY.as_millis() as i32) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            if fds[0].revents != 0 {
                if let Some(outcome) = self.read_socket(&mut conn)? {
                    return Ok(outcome);
                }
                if let Err(why) = conn.flush() {
                    return Ok(Outcome::Dropped(why));
                }
            }
            if fds[1].revents != 0 {
                winch.drain();
                if let Some((cols, rows)) = tty::window_size() {
                    if let Err(why) = conn.send(Message::text(json!({"type": "resize", "cols": cols, "rows": rows}).to_string())) {
                        return Ok(Outcome::Dropped(why));
                    }
                }
            }
            if fds.get(2).is_some_and(|p| p.revents != 0) {
                if let Err(why) = self.forward_stdin(&mut conn) {
                    return Ok(Outcome::Dropped(why));
                }
            }
            if self.eof_sent.is_some_and(|t| t.elapsed() >= EOF_REPEAT) {
                // The program that read the last end-of-file (say `cat`) may
                // have exited; the shell behind it needs one too.
                self.eof_sent = Some(Instant::now());
                if let Err(why) = conn.send(Message::binary(vec![0x01, 0x04])) {
                    return Ok(Outcome::Dropped(why));
                }
            }
            if self.last_seq > self.acked && last_ack.elapsed() >= ACK_EVERY {
                if let Err(why) = conn.send(Message::text(json!({"type": "ack", "seq": self.last_seq}).to_string())) {
                    return Ok(Outcome::Dropped(why));
                }
                self.acked = self.last_seq;
                last_ack = Instant::now();
            }
        }
    }

    /// Keys are only read once the session is ready (the terminal is raw).
    fn raw_ready(&self) -> bool {
        self.session_id.is_some()
    }

    fn forward_stdin(&mut self, conn: &mut Conn) -> Result<(), String> {
        let mut buf = [0u8; 8192];
        // SAFETY: read(2) into a local buffer.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        let data: &[u8] = match n {
            n if n > 0 => &buf[..n as usize],
            0 => {
                // Piped input ended. Like `sh < script`, an unterminated last
                // line still runs; then end-of-file keystrokes follow (again
                // every EOF_REPEAT) until the shell exits.
                self.stdin_open = false;
                self.eof_sent = Some(Instant::now());
                if self.last_input == b'\n' {
                    b"\x04"
                } else {
                    b"\n\x04"
                }
            }
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => return Ok(()),
            _ => {
                self.stdin_open = false;
                return Ok(());
            }
        };
        self.last_input = *data.last().unwrap_or(&self.last_input);
        let mut frame = Vec::with_capacity(data.len() + 1);
        frame.push(0x01);
        frame.extend_from_slice(data);
        conn.send(Message::binary(frame)).inspect_err(|_| self.unsent.extend_from_slice(data))
    }

    /// Handles every frame available now; `Some` when the connection ended.
    fn read_socket(&mut self, conn: &mut Conn) -> anyhow::Result<Option<Outcome>> {
        loop {
            let msg = match conn.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Ok(Some(Outcome::Dropped(e.to_string()))),
            };
            match msg {
                Message::Binary(b) if b.len() >= 9 && b[0] == 0x02 => {
                    let seq = u64::from_be_bytes(b[1..9].try_into().expect("8 bytes"));
                    if seq > self.last_seq {
                        self.last_seq = seq;
                        let mut out = io::stdout().lock();
                        out.write_all(&b[9..])?;
                        out.flush()?;
                    }
                }
                Message::Text(t) => {
                    if let Some(outcome) = self.control(&t)? {
                        return Ok(Some(outcome));
                    }
                }
                Message::Close(_) => return Ok(Some(Outcome::Dropped("the server closed the connection".into()))),
                _ => {}
            }
        }
    }

    fn control(&mut self, text: &str) -> anyhow::Result<Option<Outcome>> {
        let v: Value = serde_json::from_str(text).unwrap_or_default();
        match v["type"].as_str().unwrap_or_default() {
            "ready" => {
                self.session_id = v["sessionId"].as_str().map(String::from);
                if self.raw.is_none() {
                    self.raw = RawMode::enable(libc::STDIN_FILENO)?;
                }
            }
            "exit" => return Ok(Some(Outcome::Exited(v["code"].as_i64().unwrap_or(1) as i32))),
            "error" => {
                let code = v["code"].as_str().unwrap_or("error");
                let message = v["message"].as_str().unwrap_or("shell stream error");
                if code == "output_lost" {
                    eprint!("\r\n[heyvm: {message}]\r\n");
                } else {
                    drop(self.raw.take());
                    bail!("{message}");
                }
            }
            _ => {}
        }
        Ok(None)
    }
}

/// A non-blocking WebSocket whose unsent bytes are flushed when the socket
/// becomes writable.
struct Conn {
    ws: WebSocket<TcpStream>,
    flush_pending: bool,
}

impl Conn {
    fn send(&mut self, msg: Message) -> Result<(), String> {
        match self.ws.send(msg) {
            Ok(()) => Ok(()),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.flush_pending = true;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn flush(&mut self) -> Result<(), String> {
        match self.ws.flush() {
            Ok(()) => {
                self.flush_pending = false;
                Ok(())
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.flush_pending = true;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

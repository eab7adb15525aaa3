//! Exec without `--`, stdin from the CLI (pipe and file), the API's `stdin`
//! field (text and base64) on `execute` and the SSE route, and the
//! bidirectional `GET /sandboxes/:id/exec/ws`.

use std::io::Write;
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::support::Daemon;

fn sandbox(d: &Daemon, name: &str) -> String {
    d.create(json!({"name": name}))["id"].as_str().unwrap().to_string()
}

/// Runs the CLI with `input` on a pipe.
fn heyvm_piped(d: &Daemon, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = d.cmd().args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

#[test]
fn exec_without_double_dash_and_trailing_format() {
    let Some(d) = Daemon::start() else { return };
    let id = sandbox(&d, "nodash");
    let out = d.heyvm(&["exec", &id, "uname", "-s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Linux");
    // Flags after the command are the command's ...
    let out = d.heyvm(&["exec", &id, "sh", "-c", "echo $0 $1", "--cwd", "x"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "--cwd x");
    // ... except a final --format json, which is heyvm's (seed 001 scripts).
    let out = d.heyvm(&["exec", &id, "sh", "-c", "echo hi; exit 3", "--format", "json"]);
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stdout"], "hi\n");
    assert_eq!(v["exit_code"], 3);
    // heyvm's own flags before the command still work, and `--` too.
    let out = d.heyvm(&["exec", &id, "--cwd", "/tmp", "pwd"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "/tmp");
    let out = d.heyvm(&["exec", &id, "--", "ls", "--version"]);
    assert!(out.status.success());
}

#[test]
fn cli_forwards_piped_and_file_stdin() {
    let Some(d) = Daemon::start() else { return };
    let id = sandbox(&d, "stdin-cli");
    let out = heyvm_piped(&d, &["exec", &id, "cat"], b"hello from a pipe\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from a pipe\n", "{}", String::from_utf8_lossy(&out.stderr));
    // Binary input arrives byte for byte (sent as base64).
    let bin: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let out = heyvm_piped(&d, &["exec", &id, "--format", "json", "--", "sh", "-c", "wc -c; md5sum"], &bin);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stdout = v["stdout"].as_str().unwrap();
    assert!(stdout.starts_with("300000\n"), "{stdout}");
    // md5sum sees an empty rest: wc consumed everything.
    assert!(stdout.contains("d41d8cd98f00b204e9800998ecf8427e"), "{stdout}");
    // A file as stdin.
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), "line1\nline2\n").unwrap();
    let out = d.cmd().args(["exec", &id, "wc", "-l"]).stdin(std::fs::File::open(f.path()).unwrap()).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    // --no-stdin: the command reads EOF at once.
    let out = heyvm_piped(&d, &["exec", &id, "--no-stdin", "wc", "-c"], b"ignored");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    // No stdin at all (/dev/null): also EOF, never a hang.
    let out = d.heyvm(&["exec", &id, "cat"]);
    assert!(out.status.success() && out.stdout.is_empty());
}

#[test]
fn api_stdin_text_base64_and_bad_input() {
    let Some(d) = Daemon::start() else { return };
    let id = sandbox(&d, "stdin-api");
    let (s, v) = d.post(&format!("/sandboxes/{id}/execute"), &json!({"command": "tr", "args": ["a-z", "A-Z"], "stdin": "shout\n"}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stdout"], "SHOUT\n");
    let b64 = base64::engine::general_purpose::STANDARD.encode([0u8, 1, 2, 0xff]);
    let (_, v) = d.post(&format!("/sandboxes/{id}/execute"), &json!({"command": "od -An -tx1", "stdin": b64, "stdin_encoding": "base64"}));
    assert_eq!(v["stdout"].as_str().unwrap().split_whitespace().collect::<Vec<_>>(), ["00", "01", "02", "ff"]);
    // A megabyte through cat: stdin is fed while output is read.
    let big = "x".repeat(1 << 20);
    let (_, v) = d.post(&format!("/sandboxes/{id}/execute"), &json!({"command": "cat", "stdin": big}));
    assert_eq!(v["stdout"].as_str().unwrap().len(), 1 << 20);
    for (body, code) in [
        (json!({"command": "cat", "stdin": "!!", "stdin_encoding": "base64"}), "invalid_request"),
        (json!({"command": "cat", "stdin": "x", "stdin_encoding": "latin1"}), "invalid_request"),
        (json!({"command": "cat", "stdin_encoding": "base64"}), "invalid_request"),
    ] {
        let (s, v) = d.post(&format!("/sandboxes/{id}/execute"), &body);
        assert_eq!((s, v["error"].as_str().unwrap()), (400, code), "{body}");
    }
    // The SSE route takes the same field.
    let resp = ureq::post(format!("{}/sandboxes/{id}/exec/stream", d.url))
        .content_type("application/json")
        .send(json!({"command": "cat", "stdin": "via sse"}).to_string().as_bytes())
        .unwrap();
    let body = resp.into_body().read_to_string().unwrap();
    assert!(body.contains("event: stdout") && body.contains("via sse"), "{body}");
    assert!(body.contains("event: exit"), "{body}");
}

struct ExecSocket {
    ws: WebSocket<TcpStream>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl ExecSocket {
    fn open(d: &Daemon, id: &str, req: Value) -> ExecSocket {
        let stream = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let url = format!("ws://127.0.0.1:{}/sandboxes/{id}/exec/ws", d.port);
        let (mut ws, _) = tungstenite::client::client(url.as_str(), stream).expect("WebSocket handshake");
        ws.send(Message::text(req.to_string())).unwrap();
        ExecSocket { ws, stdout: Vec::new(), stderr: Vec::new() }
    }

    /// Reads frames until a text frame arrives (output is collected).
    fn next_text(&mut self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no control frame; stdout so far: {}", String::from_utf8_lossy(&self.stdout));
            match self.ws.read() {
                Ok(Message::Text(t)) => return serde_json::from_str(&t).unwrap(),
                Ok(Message::Binary(b)) => match b[0] {
                    1 => self.stdout.extend_from_slice(&b[1..]),
                    2 => self.stderr.extend_from_slice(&b[1..]),
                    t => panic!("unknown output tag {t}"),
                },
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("socket error: {e}"),
            }
        }
    }

    fn wait_stdout(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !String::from_utf8_lossy(&self.stdout).contains(needle) {
            assert!(Instant::now() < deadline, "no '{needle}' in {}", String::from_utf8_lossy(&self.stdout));
            match self.ws.read() {
                Ok(Message::Binary(b)) if b[0] == 1 => self.stdout.extend_from_slice(&b[1..]),
                Ok(Message::Binary(b)) => self.stderr.extend_from_slice(&b[1..]),
                Ok(other) => panic!("unexpected frame {other:?}"),
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("socket error: {e}"),
            }
        }
    }
}

#[test]
fn exec_websocket_is_interactive() {
    let Some(d) = Daemon::start() else { return };
    let id = sandbox(&d, "exec-ws");
    // A line-by-line conversation: each answer arrives before the next input.
    let script = "while read l; do echo \"got $l\"; echo \"err $l\" >&2; done; echo bye";
    let mut s = ExecSocket::open(&d, &id, json!({"command": "sh", "args": ["-c", script], "stdin": "first\n"}));
    let started = s.next_text();
    assert_eq!(started["type"], "started");
    s.wait_stdout("got first\n");
    s.ws.send(Message::binary(b"second\n".to_vec())).unwrap();
    s.wait_stdout("got second\n");
    s.ws.send(Message::text(json!({"type": "stdin_eof"}).to_string())).unwrap();
    let exit = s.next_text();
    assert_eq!(exit["type"], "exit", "{exit}");
    assert_eq!(exit["exit_code"], 0);
    assert_eq!(String::from_utf8_lossy(&s.stdout), "got first\ngot second\nbye\n");
    assert_eq!(String::from_utf8_lossy(&s.stderr), "err first\nerr second\n");

    // Bad first message and unknown sandbox: error frames with codes.
    let stream = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let url = format!("ws://127.0.0.1:{}/sandboxes/{id}/exec/ws", d.port);
    let (mut ws, _) = tungstenite::client::client(url.as_str(), stream).unwrap();
    ws.send(Message::text("not json")).unwrap();
    let Message::Text(t) = ws.read().unwrap() else { panic!("expected a text frame") };
    assert_eq!(serde_json::from_str::<Value>(&t).unwrap()["error"], "invalid_json");
    let mut s = ExecSocket::open(&d, "no-such-box", json!({"command": "true"}));
    assert_eq!(s.next_text()["error"], "sandbox_not_found");

    // Closing the socket kills the command.
    let mut s = ExecSocket::open(&d, &id, json!({"command": "sh", "args": ["-c", "echo $$ > /tmp/pid; exec sleep 300"]}));
    assert_eq!(s.next_text()["type"], "started");
    d.wait_until("pid file", Duration::from_secs(10), || d.sh(&id, "cat /tmp/pid")["exit_code"] == 0);
    drop(s);
    d.wait_until("sleep killed", Duration::from_secs(10), || {
        d.sh(&id, "kill -0 $(cat /tmp/pid) 2>/dev/null && echo alive || echo gone")["stdout"] == "gone\n"
    });
}

//! Interactive shells: the shell-stream WebSocket protocol (init/ready,
//! numbered output frames, resize, exit), resuming a session after a dropped
//! connection without losing or repeating output, and `heyvm sh` as a real
//! terminal program inside tmux.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::support::{Daemon, BIN};

/// Upper bound for any single wait; only there so a broken build fails
/// instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);

/// A test client speaking the shell-stream protocol.
struct ShellClient {
    ws: WebSocket<TcpStream>,
    /// `(seq, bytes)` of every output frame received, in order.
    frames: Vec<(u64, Vec<u8>)>,
    /// Control frames received (besides `ready`).
    controls: Vec<Value>,
    /// All output bytes, concatenated.
    out: Vec<u8>,
}

impl ShellClient {
    fn connect(d: &Daemon, sandbox: &str) -> ShellClient {
        let stream = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let url = format!("ws://127.0.0.1:{}/sandboxes/{sandbox}/shell-stream", d.port);
        let (ws, _) = tungstenite::client::client(url.as_str(), stream).expect("WebSocket handshake");
        ShellClient { ws, frames: Vec::new(), controls: Vec::new(), out: Vec::new() }
    }

    fn send_json(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).unwrap();
    }

    fn stdin(&mut self, s: &str) {
        let mut frame = vec![0x01];
        frame.extend_from_slice(s.as_bytes());
        self.ws.send(Message::binary(frame)).unwrap();
    }

    /// Sends `init` and returns the `ready` frame.
    fn init(&mut self, init: Value) -> Value {
        self.send_json(init);
        self.next_control()
    }

    /// Reads until a control frame arrives (output frames are collected).
    fn next_control(&mut self) -> Value {
        let deadline = Instant::now() + PATIENCE;
        let before = self.controls.len();
        while self.controls.len() == before {
            assert!(Instant::now() < deadline, "no control frame; output so far: {}", self.text());
            self.read_one();
        }
        self.controls.pop().unwrap()
    }

    /// One frame, or nothing within the socket's read timeout.
    fn read_one(&mut self) -> bool {
        match self.ws.read() {
            Ok(Message::Binary(b)) => {
                assert!(b.len() >= 9 && b[0] == 0x02, "bad output frame {b:?}");
                let seq = u64::from_be_bytes(b[1..9].try_into().unwrap());
                self.frames.push((seq, b[9..].to_vec()));
                self.out.extend_from_slice(&b[9..]);
                true
            }
            Ok(Message::Text(t)) => {
                self.controls.push(serde_json::from_str(&t).expect("control frames are JSON"));
                true
            }
            Ok(Message::Close(_)) => false,
            Ok(_) => true,
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => false,
            Err(e) => panic!("WebSocket read failed: {e}; output so far: {}", self.text()),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    fn wait_for_output(&mut self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        let mut from = 0;
        while !self.out[from..].windows(needle.len()).any(|w| w == needle.as_bytes()) {
            assert!(Instant::now() < deadline, "'{needle}' never appeared; output: {}", self.text());
            from = self.out.len().saturating_sub(needle.len());
            self.read_one();
            assert!(self.controls.iter().all(|c| c["type"] != "exit"), "shell exited early: {}", self.text());
        }
    }

    fn last_seq(&self) -> u64 {
        self.frames.last().map(|f| f.0).unwrap_or(0)
    }
}

fn running_sandbox(d: &Daemon, name: &str) -> String {
    let info = d.create(json!({"name": name, "size_class": "micro"}));
    info["id"].as_str().unwrap().to_string()
}

/// Sequence numbers start at 1 and go up by one per frame.
fn assert_contiguous(frames: &[(u64, Vec<u8>)], first: u64) {
    for (i, (seq, _)) in frames.iter().enumerate() {
        assert_eq!(*seq, first + i as u64, "output frames must be numbered contiguously");
    }
}

#[test]
fn shell_stream_protocol_output_resize_and_exit() {
    let Some(d) = Daemon::start() else { return };
    let id = running_sandbox(&d, "shproto");
    let mut c = ShellClient::connect(&d, "shproto");
    let ready = c.init(json!({"type": "init", "cols": 80, "rows": 24, "env": {"GREETING": "hi-there"}, "cwd": "/tmp"}));
    assert_eq!(ready["type"], "ready", "{ready}");
    let sid = ready["sessionId"].as_str().expect("sessionId").to_string();
    assert!(sid.starts_with("sh-"), "{sid}");

    // The echo of the typed line shows `$((6*7))`; only the shell prints 42.
    c.stdin("echo \"v=$((6*7)) $GREETING $(pwd) $TERM\"\n");
    c.wait_for_output("v=42 hi-there /tmp xterm-256color");
    c.stdin("stty size\n");
    c.wait_for_output("24 80");
    c.send_json(json!({"type": "resize", "cols": 132, "rows": 43}));
    c.stdin("stty size; tty\n");
    c.wait_for_output("43 132");
    c.wait_for_output("/dev/pts/");
    c.stdin("exit 5\n");
    let exit = c.next_control();
    assert_eq!(exit, json!({"type": "exit", "code": 5}));
    assert_contiguous(&c.frames, 1);

    // Bad frames are answered with errors, not a crash; a finished session
    // cannot be resumed.
    let mut c2 = ShellClient::connect(&d, &id);
    let err = c2.init(json!({"type": "init", "cols": 80, "rows": 24, "sessionId": sid}));
    assert_eq!((err["type"].as_str(), err["code"].as_str()), (Some("error"), Some("session_expired")), "{err}");
    let mut c3 = ShellClient::connect(&d, &id);
    let err = c3.init(json!({"type": "init", "cols": 0, "rows": 24}));
    assert_eq!(err["code"], "invalid_request", "{err}");
    let mut c4 = ShellClient::connect(&d, &id);
    let err = c4.init(json!({"type": "resize", "cols": 10, "rows": 10}));
    assert_eq!(err["code"], "invalid_frame", "{err}");
}

#[test]
fn shell_session_resumes_after_a_dropped_connection_without_loss() {
    let Some(d) = Daemon::start() else { return };
    running_sandbox(&d, "shresume");
    let mut c = ShellClient::connect(&d, "shresume");
    let ready = c.init(json!({"type": "init", "cols": 100, "rows": 30}));
    let sid = ready["sessionId"].as_str().unwrap().to_string();
    // Prints 2000 numbered lines in bursts, so the connection drops while
    // output is still being produced.
    c.stdin("for i in $(seq 1 2000); do echo line-$i; [ $((i % 100)) = 0 ] && sleep 0.05; done; echo end-$((40+2))\n");
    c.wait_for_output("line-150");
    c.send_json(json!({"type": "ack", "seq": c.last_seq()}));
    let first_part = std::mem::take(&mut c.frames);
    c.out.clear();
    drop(c); // no close frame: the TCP connection just goes away

    let mut c = ShellClient::connect(&d, "shresume");
    let last = first_part.last().unwrap().0;
    let ready = c.init(json!({"type": "init", "cols": 100, "rows": 30, "sessionId": sid, "lastSeq": last}));
    assert_eq!((ready["type"].as_str(), ready["sessionId"].as_str()), (Some("ready"), Some(sid.as_str())), "{ready}");
    c.wait_for_output("end-42");
    assert_contiguous(&c.frames, last + 1);

    let all: Vec<u8> = first_part.iter().chain(c.frames.iter()).flat_map(|f| f.1.clone()).collect();
    let text = String::from_utf8_lossy(&all);
    let numbers: Vec<u32> = text.split(['\r', '\n']).filter_map(|l| l.strip_prefix("line-").and_then(|n| n.parse().ok())).collect();
    assert_eq!(numbers, (1..=2000).collect::<Vec<_>>(), "every line exactly once, in order");

    // The client asks to close: the shell is hung up and the exit reported.
    c.send_json(json!({"type": "close"}));
    let exit = c.next_control();
    assert_eq!(exit["type"], "exit", "{exit}");
}

#[test]
fn shell_routes_reject_bad_requests_with_json_errors() {
    let Some(d) = Daemon::start() else { return };
    running_sandbox(&d, "shbad");
    let (s, v) = d.get("/sandboxes/shbad/shell-stream");
    assert!(s == 400 || s == 426, "{s} {v}");
    assert_eq!(v["error"], "websocket_required");
    let (s, v) = d.get("/sandboxes/nope/shell-stream");
    assert_eq!((s, v["error"].as_str()), (404, Some("sandbox_not_found")));
    let (s, v) = d.post("/sandboxes/shbad/shell-session", &json!({}));
    assert_eq!(s, 200, "{v}");
    let url = v["connection_url"].as_str().unwrap();
    assert!(url.starts_with("ws://") && url.ends_with("/shell-stream"), "{url}");
    d.heyvm_json(&["stop", "shbad"]);
    let (s, v) = d.post("/sandboxes/shbad/shell-session", &json!({}));
    assert_eq!((s, v["error"].as_str()), (409, Some("invalid_state")), "{v}");
    let out = d.heyvm(&["sh", "shbad"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("running"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A private tmux server, killed when the test ends.
pub(crate) struct Tmux {
    socket: String,
}

impl Tmux {
    pub(crate) fn start(cmd: &str, cols: u16, rows: u16) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false") {
                panic!("tmux is not installed");
            }
            eprintln!("SKIP: tmux is not installed");
            return None;
        }
        // One server per test: tests in this binary run in parallel.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = Tmux { socket: format!("heyvm-test-{}-{n}", std::process::id()) };
        let ok = t.run(&["new-session", "-d", "-s", "t", "-x", &cols.to_string(), "-y", &rows.to_string(), cmd]).status.success();
        assert!(ok, "tmux new-session failed");
        Some(t)
    }

    pub(crate) fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").args(["-L", &self.socket, "-f", "/dev/null"]).args(args).output().expect("run tmux")
    }

    pub(crate) fn keys(&self, text: &str) {
        assert!(self.run(&["send-keys", "-t", "t", "-l", text]).status.success());
        assert!(self.run(&["send-keys", "-t", "t", "Enter"]).status.success());
    }

    pub(crate) fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "t", "-S", "-200"]).stdout).into_owned()
    }

    pub(crate) fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.screen().contains(needle) {
            assert!(Instant::now() < deadline, "'{needle}' never appeared on screen:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn heyvm_sh_is_a_real_terminal_in_tmux() {
    let Some(d) = Daemon::start() else { return };
    running_sandbox(&d, "shtmux");
    let shell = format!(
        "env -i PATH=/usr/local/bin:/usr/bin:/bin TERM=screen HEYVM_API_URL={} MVM_DATA_DIR={} PS1='local$ ' bash --norc --noprofile",
        d.url,
        d.data.path().display()
    );
    let Some(t) = Tmux::start(&shell, 100, 30) else { return };
    t.keys(&format!("{BIN} sh shtmux; echo \"heyvm-rc=$?\""));
    t.keys("echo hello-$((1+1)); stty size");
    t.wait_for("hello-2");
    t.wait_for("30 100");
    assert!(t.run(&["resize-window", "-t", "t", "-x", "120", "-y", "40"]).status.success());
    t.keys("stty size");
    t.wait_for("40 120");
    // Raw mode: Ctrl-C reaches the sandbox's foreground job, not heyvm.
    t.keys("sleep 600");
    d.wait_until("sleep to run", PATIENCE, || d.sh("shtmux", "pgrep -x sleep || true")["stdout"] != "");
    assert!(t.run(&["send-keys", "-t", "t", "C-c"]).status.success());
    t.keys("echo after-$((3*3))");
    t.wait_for("after-9");
    t.keys("exit 3");
    t.wait_for("heyvm-rc=3");
    // Back in the local shell, with the terminal restored (echo, canonical mode).
    t.keys("stty -a | grep -o -- '-\\?icanon' | head -1; echo local-$((2*4))");
    t.wait_for("local-8");
    let screen = t.screen();
    let after = &screen[screen.rfind("heyvm-rc=3").unwrap()..];
    assert!(after.lines().any(|l| l.trim() == "icanon"), "terminal not restored:\n{screen}");
}

#[test]
fn heyvm_connect_shell_with_piped_input_reports_the_exit_code() {
    let Some(d) = Daemon::start() else { return };
    running_sandbox(&d, "shconn");
    let (s, v) = d.post("/sandboxes/shconn/shell-session", &json!({}));
    assert_eq!(s, 200, "{v}");
    let url = v["connection_url"].as_str().unwrap().to_string();
    let run = |args: &[&str], input: &str| {
        let mut child = d.cmd().args(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(&["connect", &url, "--shell"], "echo piped-$((5*5))\nexit 4\n");
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("piped-25"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = run(&["connect", &url, "--shell", "--format", "json"], "exit 6\n");
    assert_eq!(out.status.code(), Some(6));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = &stdout[stdout.rfind("\n{").map(|i| i + 1).unwrap_or(0)..];
    let v: Value = serde_json::from_str(summary).unwrap_or_else(|e| panic!("no JSON summary ({e}): {stdout}"));
    assert_eq!(v["exit_code"], 6);
    assert!(v["session_id"].as_str().unwrap().starts_with("sh-"));
    let out = d.heyvm(&["connect", &url]);
    assert_eq!(out.status.code(), Some(1), "connect without --shell is refused");
}

#[test]
fn idle_shell_sessions_expire_and_hang_up_the_shell() {
    let Some(d) = Daemon::start_with(&[("HEYVM_SHELL_IDLE_SECS", "1")]) else { return };
    running_sandbox(&d, "shidle");
    let mut c = ShellClient::connect(&d, "shidle");
    let sid = c.init(json!({"type": "init", "cols": 80, "rows": 24}))["sessionId"].as_str().unwrap().to_string();
    c.stdin("sleep 4242\n");
    d.wait_until("sleep to run", PATIENCE, || d.sh("shidle", "pgrep -f '^sleep 4242$' || true")["stdout"] != "");
    drop(c);
    // Nobody reattaches: the session expires and the terminal is hung up,
    // taking the shell and its foreground job with it.
    d.wait_until("the shell's job to end", PATIENCE, || d.sh("shidle", "pgrep -f '^sleep 4242$' || true")["stdout"] == "");
    let mut c = ShellClient::connect(&d, "shidle");
    let err = c.init(json!({"type": "init", "cols": 80, "rows": 24, "sessionId": sid}));
    assert_eq!(err["code"], "session_expired", "{err}");
}

/// Deletes a sandbox with a bearer token when dropped (the fixture's own
/// cleanup has no token).
struct AuthedSandbox<'a> {
    d: &'a Daemon,
    bearer: String,
    id: String,
}

impl AuthedSandbox<'_> {
    fn call(&self, method: &str, path: &str, bearer: Option<&str>) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let url = format!("{}{path}", self.d.url);
        let resp = match method {
            "GET" => bearer.into_iter().fold(agent.get(&url), |r, b| r.header("Authorization", b)).call(),
            "DELETE" => bearer.into_iter().fold(agent.delete(&url), |r, b| r.header("Authorization", b)).call(),
            _ => bearer
                .into_iter()
                .fold(agent.post(&url), |r, b| r.header("Authorization", b))
                .content_type("application/json")
                .send(b"{}".as_slice()),
        }
        .expect("HTTP request");
        let status = resp.status().as_u16();
        (status, serde_json::from_slice(&resp.into_body().read_to_vec().unwrap()).unwrap_or(Value::Null))
    }
}

impl Drop for AuthedSandbox<'_> {
    fn drop(&mut self) {
        let bearer = self.bearer.clone();
        self.call("DELETE", &format!("/sandboxes/{}", self.id), Some(&bearer));
    }
}

#[test]
fn with_auth_the_connection_url_carries_a_scoped_short_lived_token() {
    use heyvm_server::auth::{sign, Audience, Claims};
    const SECRET: &str = "shell-test-secret-42";
    let Some(d) = Daemon::start_with(&[("JWT_SECRET", SECRET), ("JWT_AUDIENCE", "heyvm-shell-tests")]) else { return };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = Claims {
        sub: Some("tester".into()),
        exp: now + 600,
        iat: Some(now),
        nbf: None,
        aud: Some(Audience::One("heyvm-shell-tests".into())),
    };
    let bearer = format!("Bearer {}", sign(SECRET.as_bytes(), &claims));
    let mut sb = AuthedSandbox { d: &d, bearer: bearer.clone(), id: String::new() };
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let resp = agent
        .post(format!("{}/sandboxes", d.url))
        .header("Authorization", &bearer)
        .content_type("application/json")
        .send(json!({"name": "shauth", "size_class": "micro"}).to_string().as_bytes())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    sb.id = serde_json::from_slice::<Value>(&resp.into_body().read_to_vec().unwrap()).unwrap()["id"].as_str().unwrap().to_string();

    let (s, _) = sb.call("POST", "/sandboxes/shauth/shell-session", None);
    assert_eq!(s, 401, "shell-session needs a token");
    let (s, v) = sb.call("POST", "/sandboxes/shauth/shell-session", Some(&bearer));
    assert_eq!(s, 200, "{v}");
    let url = v["connection_url"].as_str().unwrap().to_string();
    let token = url.split_once("?token=").map(|(_, t)| t.to_string()).unwrap_or_else(|| panic!("no token in {url}"));

    // The stream opens with the URL alone (no Authorization header) ...
    let out = {
        let mut child = d
            .cmd()
            .env_remove("HEYVM_TOKEN")
            .args(["connect", &url, "--shell"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"exit 2\n").unwrap();
        child.wait_with_output().unwrap()
    };
    assert_eq!(out.status.code(), Some(2));
    // ... but not without it, and the scoped token opens nothing else.
    let bare = url.split_once('?').unwrap().0;
    let stream = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    match tungstenite::client::client(bare, stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => assert_eq!(resp.status().as_u16(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    let (s, v) = sb.call("GET", "/sandboxes", Some(&format!("Bearer {token}")));
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_token")), "{v}");
    let other_sandbox_stream = format!("{}/sandboxes/sb-00000000/shell-stream?token={token}", d.url);
    let resp = agent.get(&other_sandbox_stream).call().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // `heyvm sh` with a token from the environment works end to end.
    let out = {
        let mut child = d
            .cmd()
            .env("HEYVM_TOKEN", bearer.trim_start_matches("Bearer "))
            .args(["sh", "shauth"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"exit 9\n").unwrap();
        child.wait_with_output().unwrap()
    };
    assert_eq!(out.status.code(), Some(9));
}

/// Output lines ending in `line` (the first may follow terminal escapes).
fn count_lines(frames: &[(u64, Vec<u8>)], line: &str) -> usize {
    let all: Vec<u8> = frames.iter().flat_map(|f| f.1.clone()).collect();
    String::from_utf8_lossy(&all).split("\r\n").filter(|l| l.ends_with(line)).count()
}

#[test]
fn output_is_paced_for_a_slow_client_and_bounded_while_detached() {
    let Some(d) = Daemon::start() else { return };
    running_sandbox(&d, "shbulk");

    // Attached but not reading: the shell is paused instead of output being
    // dropped, so all 11 MB arrive once the client reads.
    let mut c = ShellClient::connect(&d, "shbulk");
    c.init(json!({"type": "init", "cols": 80, "rows": 24}));
    c.stdin("yes abcdefghij | head -n 1000000; echo END-$((1+1))\n");
    std::thread::sleep(Duration::from_secs(2));
    c.wait_for_output("END-2");
    assert_eq!(count_lines(&c.frames, "abcdefghij"), 1_000_000);
    assert!(c.controls.iter().all(|v| v["code"] != "output_lost"), "{:?}", c.controls);
    assert_contiguous(&c.frames, 1);
    c.stdin("exit\n");
    c.next_control();

    // Detached: only the newest 1 MiB is kept, and the returning client is
    // told that older output was dropped.
    let mut c = ShellClient::connect(&d, "shbulk");
    let sid = c.init(json!({"type": "init", "cols": 80, "rows": 24}))["sessionId"].as_str().unwrap().to_string();
    c.stdin("rm -f /tmp/bulk-done; sleep 2; yes abcdefghij | head -n 400000; echo END-$((2+2)); touch /tmp/bulk-done\n");
    c.wait_for_output("bulk-done");
    let last = c.last_seq();
    drop(c);
    d.wait_until("the detached shell to finish printing", PATIENCE, || {
        d.sh("shbulk", "test -e /tmp/bulk-done && echo y")["stdout"] == "y\n"
    });
    let mut c = ShellClient::connect(&d, "shbulk");
    c.init(json!({"type": "init", "cols": 80, "rows": 24, "sessionId": sid, "lastSeq": last}));
    c.wait_for_output("END-4");
    let lost = c.controls.iter().find(|v| v["code"] == "output_lost").unwrap_or_else(|| panic!("no output_lost notice: {:?}", c.controls));
    assert!(lost["message"].as_str().unwrap().contains("1024 KiB"), "{lost}");
    let bytes: usize = c.frames.iter().map(|f| f.1.len()).sum();
    assert!(bytes <= (1 << 20) + (64 << 10), "replayed {bytes} bytes, more than the 1 MiB bound");
    let kept = count_lines(&c.frames, "abcdefghij");
    assert!(kept > 50_000 && kept < 400_000, "kept {kept} lines");
}

/// A TCP relay to the daemon whose open connections can be cut.
struct Relay {
    port: u16,
    conns: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Relay {
    fn start(upstream: u16) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (c, a) = (conns.clone(), accepted.clone());
        std::thread::spawn(move || {
            for down in listener.incoming().flatten() {
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                c.lock().unwrap().extend([down.try_clone().unwrap(), up.try_clone().unwrap()]);
                for (mut from, mut to) in [(down.try_clone().unwrap(), up.try_clone().unwrap()), (up, down)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, conns, accepted }
    }

    fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn heyvm_sh_reconnects_and_resumes_after_the_connection_is_cut() {
    use std::io::{Read, Write};
    let Some(d) = Daemon::start() else { return };
    let id = running_sandbox(&d, "shcut");
    let relay = Relay::start(d.port);
    let url = format!("ws://127.0.0.1:{}/sandboxes/{id}/shell-stream", relay.port);
    let mut child = d
        .cmd()
        .args(["connect", &url, "--shell"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let (mut so, out) = (child.stdout.take().unwrap(), out.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = so.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let seen = |needle: &str| String::from_utf8_lossy(&out.lock().unwrap()).matches(needle).count();
    stdin.write_all(b"echo one-$((0+1))\n").unwrap();
    d.wait_until("one-1", PATIENCE, || seen("one-1") == 1);
    relay.cut();
    stdin.write_all(b"echo two-$((1+1))\n").unwrap();
    d.wait_until("two-2 after reconnecting", PATIENCE, || seen("two-2") == 1);
    assert!(relay.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2, "the CLI reconnected");
    stdin.write_all(b"exit 3\n").unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert_eq!(status.code(), Some(3));
    assert_eq!(seen("one-1"), 1, "output before the cut is not repeated");
}

#[test]
fn stopping_the_sandbox_hangs_up_its_shells_and_tells_the_client() {
    let Some(d) = Daemon::start() else { return };
    running_sandbox(&d, "shstop");
    let mut c = ShellClient::connect(&d, "shstop");
    c.init(json!({"type": "init", "cols": 80, "rows": 24}));
    c.stdin("echo up-$((2+2))\n");
    c.wait_for_output("up-4");
    assert_eq!(d.heyvm_json(&["stop", "shstop"])["status"], "stopped");
    let end = c.next_control();
    // Hung up (128 + SIGHUP), or the connection to the stopped sandbox is gone.
    assert!(end == json!({"type": "exit", "code": 129}) || end["code"] == "shell_failed", "{end}");
}

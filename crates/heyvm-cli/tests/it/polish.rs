//! CLI polish end to end: completions and man pages, closed pipes, `sh`
//! with piped input, log times and windows, `open_ports` on create, and a
//! private deploy's health check on a server without JWT_SECRET.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{Daemon, BIN};

/// Runs `cmd` with stdout a pipe whose reader is already gone: the first
/// write hits a closed pipe. Returns (exit status, stderr).
fn run_into_closed_pipe(cmd: &mut Command) -> (std::process::ExitStatus, String) {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let out = cmd.stdout(Stdio::from(write)).stderr(Stdio::piped()).stdin(Stdio::null()).output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_closed_pipe_ends_commands_quietly() {
    let cases: &[&[&str]] = &[
        &["token", "create", "--sub", "x", "--secret", "s", "--format", "json"],
        &["token", "create", "--sub", "x", "--secret", "s"],
        &["completions", "bash"],
        &["man"],
        &["exec", "--help"],
    ];
    for args in cases {
        let (status, stderr) = run_into_closed_pipe(Command::new(BIN).args(*args));
        assert!(!stderr.contains("panicked"), "heyvm {args:?} panicked: {stderr}");
        assert!(stderr.is_empty(), "heyvm {args:?} complained: {stderr}");
        // Killed by SIGPIPE like any Unix filter, or done before noticing.
        assert!(status.signal() == Some(libc::SIGPIPE) || status.success(), "heyvm {args:?}: {status:?}");
    }
}

#[test]
fn completions_and_man_pages_cover_the_commands() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "heyvm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    for verb in ["create", "exec", "deploy", "wait-for", "completions"] {
        assert!(bash.contains(verb), "bash completion lacks {verb}");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("heyvm.bash");
    std::fs::write(&script, &bash).unwrap();
    let check = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(check.status.success(), "bash rejects the script: {}", String::from_utf8_lossy(&check.stderr));
    assert!(run(&["completions", "zsh"]).starts_with("#compdef heyvm"));
    assert!(run(&["completions", "fish"]).contains("complete -c heyvm"));
    let out = Command::new(BIN).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");

    let page = run(&["man"]);
    assert!(page.contains(".TH heyvm 1") && page.contains("deploy"), "{}", &page[..200.min(page.len())]);
    let listed = run(&["man", "--dir", dir.path().join("man1").to_str().unwrap()]);
    let files: Vec<&str> = listed.lines().collect();
    assert!(files.iter().any(|f| f.ends_with("/heyvm.1")), "{listed}");
    let exec = std::fs::read_to_string(dir.path().join("man1/heyvm-exec.1")).unwrap();
    assert!(exec.contains(".TH HEYVM-EXEC 1") && exec.contains("timeout"), "{exec}");
    assert!(!dir.path().join("man1/heyvm-__agent.1").exists());
}

/// Runs `heyvm sh` with `input` on a pipe; fails if it has not exited in 30 s.
fn sh_piped(d: &Daemon, id: &str, input: &str) -> (Option<i32>, String) {
    let mut child = d.cmd().args(["sh", id]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("heyvm sh hung after its input ended ({input:?}): {}", String::from_utf8_lossy(&out.stdout));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn sh_with_piped_input_exits_when_the_input_ends() {
    let Some(d) = Daemon::start() else { return };
    d.create(json!({"name": "piped"}));
    let (code, out) = sh_piped(&d, "piped", "echo piped-$((2*3))\n");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("piped-6"), "{out}");
    // An unterminated last line still runs, as with `sh < script`.
    let (code, out) = sh_piped(&d, "piped", "echo tail-$((3*3))");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("tail-9"), "{out}");
    // A program reading stdin sees the end too, and then so does the shell.
    let (code, out) = sh_piped(&d, "piped", "cat\n");
    assert_eq!(code, Some(0), "{out}");
    let (code, _) = sh_piped(&d, "piped", "");
    assert_eq!(code, Some(0));
}

fn is_local_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 19 && b[4] == b'-' && b[7] == b'-' && b[10] == b' ' && b[13] == b':' && b[16] == b':'
}

#[test]
fn logs_show_local_times_and_filter_by_since_and_until() {
    let Some(d) = Daemon::start() else { return };
    d.create(json!({"name": "timed", "start_command": "echo hello-from-start; sleep 600"}));
    d.wait_until("the start command's output", Duration::from_secs(20), || {
        let o = d.heyvm(&["logs", "timed"]);
        // The output line itself: the system line naming the command has the text too.
        String::from_utf8_lossy(&o.stdout).contains("[stdout] hello-from-start")
    });
    let out = d.heyvm(&["logs", "timed", "--since", "10m"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("[stdout] hello-from-start")).unwrap_or_else(|| panic!("{text}"));
    assert!(is_local_datetime(&line[..19]) && line[19..].starts_with(" [stdout] "), "{line}");

    let count = |args: &[&str]| -> usize {
        let mut a = vec!["logs", "timed"];
        a.extend_from_slice(args);
        d.heyvm_json(&a)["logs"].as_array().unwrap().len()
    };
    let all = count(&[]);
    assert!(all >= 2, "lifecycle lines plus the start command's");
    assert_eq!(count(&["--since", "1h"]), all);
    assert_eq!(count(&["--until", "2000-01-01"]), 0);
    assert_eq!(count(&["--since", "4102444800"]), 0, "from 2100 on there is nothing yet");
    assert_eq!(count(&["--since", "2000-01-01 00:00", "--until", "now"]), all);
    let (s, v) = d.get("/sandboxes/timed/logs?since=4102444800");
    assert_eq!((s, v["total"].as_u64()), (200, Some(0)));
    let (s, v) = d.get("/sandboxes/timed/logs?until=abc");
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_query")), "{v}");
    let out = d.heyvm(&["logs", "timed", "--since", "yesterday-ish"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read time"));
}

#[test]
fn open_ports_on_create_and_update_are_bound() {
    let Some(d) = Daemon::start() else { return };
    let v = d.create(json!({
        "name": "ported",
        "start_command": "mkdir -p /tmp/site && echo port-ok > /tmp/site/index.html && cd /tmp/site && python3 -m http.server 8080",
        "open_ports": [8080],
    }));
    let urls = v["urls"].as_array().unwrap();
    assert_eq!(urls.len(), 1, "{v}");
    assert_eq!((urls[0]["port"].as_u64(), urls[0]["is_public"].as_bool()), (Some(8080), Some(true)));
    let url = urls[0]["url"].as_str().unwrap().to_string();
    let ready = d.heyvm_json(&["wait-for", "ported", "8080", "--path", "/", "--timeout", "30s"]);
    assert_eq!(ready["ready"], true);
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
    let body = agent.get(&url).call().unwrap().into_body().read_to_string().unwrap();
    assert_eq!(body.trim(), "port-ok");

    // PATCH adds endpoints for new ports and keeps the existing one.
    let (s, v) = d.patch("/sandboxes/ported", &json!({"open_ports": [8080, 9090]}));
    assert_eq!(s, 200, "{v}");
    let mut ports: Vec<u64> = v["urls"].as_array().unwrap().iter().map(|u| u["port"].as_u64().unwrap()).collect();
    ports.sort();
    assert_eq!(ports, [8080, 9090]);

    // The CLI's --open-port goes the same way.
    let v = d.heyvm_json(&["create", "--name", "cli-ported", "--open-port", "3000"]);
    assert_eq!(v["urls"][0]["port"], 3000, "{v}");
    // A bad port fails the whole create: nothing is left behind.
    let (s, v) = d.post("/sandboxes", &json!({"name": "bad-port", "open_ports": [0]}));
    assert_eq!(s, 400, "{v}");
    assert_eq!(d.get("/sandboxes/bad-port").0, 404);
}

#[test]
fn private_deploy_is_health_checked_without_jwt_secret() {
    let Some(d) = Daemon::start() else { return };
    let w = tempfile::tempdir().unwrap();
    let app = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/my-app");
    let out = d
        .cmd()
        .current_dir(w.path())
        .args(["deploy", app.to_str().unwrap(), "--name", "priv", "--port", "8080", "--start-command", "python3 server.py"])
        .args(["--health-path", "/health", "--health-timeout", "60s", "--private", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "running");
    let u = &v["urls"][0];
    assert_eq!(u["is_public"], false);
    // No public endpoint was made along the way.
    let (_, info) = d.get("/sandboxes/priv");
    let public: Vec<&Value> = info["urls"].as_array().unwrap().iter().filter(|u| u["is_public"] != false).collect();
    assert!(public.is_empty(), "{info}");
    // The endpoint still refuses everyone: this server has no tokens.
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(10))).build().into();
    let s = agent.get(format!("{}/health", u["url"].as_str().unwrap())).call().unwrap().status().as_u16();
    assert_eq!(s, 401);
}

//! Streamed exec (SSE), async exec operations, log follow.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::Daemon;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// Opens an SSE exec stream; returns a reader of (event, data) pairs.
pub fn open_stream(d: &Daemon, id: &str, body: Value) -> impl Iterator<Item = (String, Value)> {
    let resp = agent()
        .post(format!("{}/sandboxes/{id}/exec/stream", d.url))
        .content_type("application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().get("content-type").unwrap().to_str().unwrap().starts_with("text/event-stream"));
    sse_events(BufReader::new(resp.into_body().into_with_config().limit(u64::MAX).reader()))
}

fn sse_events(r: impl BufRead) -> impl Iterator<Item = (String, Value)> {
    let mut lines = r.lines();
    std::iter::from_fn(move || {
        let (mut name, mut data) = (String::new(), String::new());
        for line in lines.by_ref() {
            let line = line.ok()?;
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                return Some((name, serde_json::from_str(&data).unwrap()));
            } else if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        None
    })
}

fn running(d: &Daemon, name: &str) -> String {
    d.create(json!({"name": name}))["id"].as_str().unwrap().to_string()
}

#[test]
fn sse_orders_interleaved_output_and_reports_exit() {
    let Some(d) = Daemon::start() else { return };
    let id = running(&d, "sse");
    let script = "for i in 1 2 3; do echo out$i; sleep 0.05; echo err$i >&2; sleep 0.05; done; exit 5";
    let events: Vec<(String, Value)> = open_stream(&d, &id, json!({"command": "sh", "args": ["-c", script]})).collect();
    assert_eq!(events[0].0, "exec_started");
    assert!(events[0].1["pid"].as_u64().unwrap() > 0);
    let texts: Vec<String> =
        events[1..events.len() - 1].iter().map(|(n, v)| format!("{n}:{}", v["data"].as_str().unwrap().trim())).collect();
    assert_eq!(texts, ["stdout:out1", "stderr:err1", "stdout:out2", "stderr:err2", "stdout:out3", "stderr:err3"]);
    let (name, exit) = events.last().unwrap();
    assert_eq!(name, "exit");
    assert_eq!(exit["exit_code"], 5);
    assert!(exit["duration_ms"].as_u64().unwrap() >= 250);
    // The CLI streams too, and mirrors the exit code.
    let out = d.heyvm(&["exec", "sse", "--stream", "--", "sh", "-c", "echo a; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\n");
}

#[test]
fn fifty_concurrent_streams() {
    let Some(d) = Daemon::start() else { return };
    let id = running(&d, "many");
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let url = d.url.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                let resp = agent()
                    .post(format!("{url}/sandboxes/{id}/exec/stream"))
                    .content_type("application/json")
                    .send(json!({"command": "sh", "args": ["-c", format!("echo n{i}; sleep 0.2; echo done{i}")]}).to_string().as_bytes())
                    .unwrap();
                let events: Vec<_> = sse_events(BufReader::new(resp.into_body().into_reader())).collect();
                let out: String =
                    events.iter().filter(|(n, _)| n == "stdout").map(|(_, v)| v["data"].as_str().unwrap().to_string()).collect();
                (out, events.last().unwrap().1["exit_code"].clone())
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (out, code) = h.join().unwrap();
        assert_eq!(out, format!("n{i}\ndone{i}\n"));
        assert_eq!(code, 0);
    }
}

/// `POST /execute` of a shell script from any thread.
fn post_exec(url: &str, id: &str, script: &str) -> (u16, Value) {
    let body = json!({"command": "/bin/sh", "args": ["-c", script]}).to_string();
    let mut resp = agent().post(format!("{url}/sandboxes/{id}/execute")).content_type("application/json").send(body.as_bytes()).unwrap();
    let status = resp.status().as_u16();
    (status, serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap_or(Value::Null))
}

#[test]
fn ten_concurrent_execs_finish_beside_an_endless_yes_flood() {
    let Some(d) = Daemon::start() else { return };
    let id = running(&d, "flood");
    // `yes` never ends on its own and its output crosses the agent stream
    // (on a VM: the one multiplexed virtio-serial port). The execs must all
    // finish while it floods; the flood is only stopped after they have.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood = {
        let (stop, got) = (stop.clone(), got.clone());
        let mut events = open_stream(&d, &id, json!({"command": "yes"}));
        std::thread::spawn(move || {
            let mut bad = None;
            for (name, v) in events.by_ref() {
                if name == "stdout" {
                    let data = v["data"].as_str().unwrap();
                    if bad.is_none() && !data.bytes().enumerate().all(|(i, b)| b == if i % 2 == 0 { b'y' } else { b'\n' }) {
                        bad = Some(data.chars().take(40).collect::<String>());
                    }
                    got.fetch_add(data.len(), std::sync::atomic::Ordering::SeqCst);
                }
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return bad;
                }
            }
            Some("the flood ended on its own".to_string())
        })
    };
    d.wait_until("the flood to start", Duration::from_secs(120), || got.load(std::sync::atomic::Ordering::SeqCst) > 1 << 20);
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let (url, id) = (d.url.clone(), id.clone());
            std::thread::spawn(move || post_exec(&url, &id, &format!("echo n{i}; exit {i}")))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (status, v) = h.join().unwrap();
        assert_eq!((status, v["stdout"].as_str(), v["exit_code"].as_i64()), (200, Some(format!("n{i}\n").as_str()), Some(i as i64)), "{v}");
    }
    let during = got.load(std::sync::atomic::Ordering::SeqCst);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(flood.join().unwrap(), None, "the flood's bytes were all `y\\n`");
    eprintln!("{during} bytes of `yes` streamed while the ten execs ran");
    // Hanging up the stream ended the endless command.
    d.wait_until("yes to be killed", Duration::from_secs(30), || d.sh(&id, "pgrep -x yes || true")["stdout"] == "");
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn hundred_megabytes_stream_with_bounded_daemon_memory() {
    let Some(d) = Daemon::start() else { return };
    let id = running(&d, "big");
    let before = vm_hwm_kib(d.pid().unwrap());
    let total: usize = open_stream(&d, &id, json!({"command": "sh", "args": ["-c", "head -c 100000000 /dev/zero | tr '\\\\0' a"]}))
        .filter(|(n, _)| n == "stdout")
        .map(|(_, v)| v["data"].as_str().unwrap().len())
        .sum();
    assert_eq!(total, 100_000_000);
    let after = vm_hwm_kib(d.pid().unwrap());
    eprintln!("daemon peak RSS {before} KiB before, {after} KiB after streaming 100 MB");
    assert!(after < before + 64 * 1024, "daemon peak RSS grew by {} KiB while streaming", after - before);
}

fn sleepers(d: &Daemon, id: &str, marker: &str) -> usize {
    let out = d.sh(id, &format!("ps -eo args | grep -c '^sleep {marker}$' || true"));
    out["stdout"].as_str().unwrap().trim().parse().unwrap()
}

#[test]
fn disconnect_kills_unless_background() {
    let Some(d) = Daemon::start() else { return };
    let id = running(&d, "disc");
    for (background, marker, expected) in [(false, "301", 0), (true, "302", 1)] {
        {
            let mut events = open_stream(
                &d,
                &id,
                json!({"command": "sh", "args": ["-c", format!("echo go; sleep {marker}")], "background": background}),
            );
            assert_eq!(events.next().unwrap().0, "exec_started");
            assert_eq!(events.next().unwrap().1["data"], "go\n");
            assert_eq!(sleepers(&d, &id, marker), 1);
        } // dropping the reader closes the connection
        let mut last = usize::MAX;
        for _ in 0..50 {
            last = sleepers(&d, &id, marker);
            if last == expected {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(last, expected, "background={background}");
    }
}

fn wait_op(d: &Daemon, id: &str, op: &str) -> Value {
    let mut v = Value::Null;
    d.wait_until("operation to finish", Duration::from_secs(30), || {
        let (s, r) = d.get(&format!("/sandboxes/{id}/exec-operations/{op}"));
        assert_eq!(s, 200, "{r}");
        v = r;
        matches!(v["status"].as_str(), Some("completed" | "failed"))
    });
    v
}

#[test]
fn exec_operations_are_idempotent_and_survive_restart() {
    let Some(mut d) = Daemon::start() else { return };
    let id = running(&d, "ops");
    let body = json!({"operationId": "op-1", "command": "echo hello; echo oops >&2; exit 4"});
    let (s, v) = d.post(&format!("/sandboxes/{id}/exec-operations"), &body);
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["operationId"], "op-1");
    assert_eq!(v["sandboxId"], id.as_str());
    assert!(matches!(v["status"].as_str(), Some("queued" | "running")));
    let done = wait_op(&d, &id, "op-1");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"]["stdout"], "hello\n");
    assert_eq!(done["result"]["stderr"], "oops\n");
    assert_eq!(done["result"]["exit_code"], 4);
    assert!(done["completedAt"].as_i64().is_some());
    // Replay: same id and command returns the record; another command is a conflict.
    let (s, v) = d.post(&format!("/sandboxes/{id}/exec-operations"), &body);
    assert_eq!(s, 200);
    assert_eq!(v["status"], "completed");
    let (s, v) = d.post(&format!("/sandboxes/{id}/exec-operations"), &json!({"operationId": "op-1", "command": "true"}));
    assert_eq!(s, 409, "{v}");
    let (s, v) = d.post(&format!("/sandboxes/{id}/exec-operations"), &json!({"operationId": "bad id!", "command": "true"}));
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));
    let (s, _) = d.get(&format!("/sandboxes/{id}/exec-operations/nope"));
    assert_eq!(s, 404);
    // An argv command, and one interrupted by a daemon restart.
    let (s, _) = d.post(&format!("/sandboxes/{id}/exec-operations"), &json!({"operationId": "argv", "command": ["echo", "a b"]}));
    assert_eq!(s, 202);
    assert_eq!(wait_op(&d, &id, "argv")["result"]["stdout"], "a b\n");
    let (s, _) = d.post(&format!("/sandboxes/{id}/exec-operations"), &json!({"operationId": "long", "command": "sleep 60"}));
    assert_eq!(s, 202);
    std::thread::sleep(Duration::from_millis(300));
    d.restart();
    let done = wait_op(&d, &id, "op-1");
    assert_eq!(done["result"]["stdout"], "hello\n");
    let long = wait_op(&d, &id, "long");
    assert_eq!(long["status"], "failed");
    assert!(long["error"].as_str().unwrap().contains("restarted"));
}

#[test]
fn logs_follow_streams_backlog_then_new_lines() {
    let Some(d) = Daemon::start() else { return };
    d.create(json!({"name": "tick", "start_command": "i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.2; done"}));
    // A backlog to skip: a few lines logged already (not a fixed sleep; a
    // VM's start command starts later).
    d.wait_until("three lines", Duration::from_secs(60), || {
        d.get("/sandboxes/tick/logs?source=stdout&limit=10").1["logs"].as_array().is_some_and(|l| l.len() >= 3)
    });
    let resp = agent().get(format!("{}/sandboxes/tick/logs/stream?backlog=2&source=stdout", d.url)).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut events = sse_events(BufReader::new(resp.into_body().into_reader()));
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (name, v) = events.next().unwrap();
        assert_eq!(name, "log");
        assert_eq!(v["source"], "stdout");
        seen.push(v["message"].as_str().unwrap()[4..].parse::<u32>().unwrap());
    }
    // Backlog of two, then live lines, in order and without gaps.
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
    assert!(seen[0] >= 2, "backlog should start at a recent line: {seen:?}");

    // The CLI follows too.
    let mut child =
        d.cmd().args(["logs", "tick", "-f", "-n", "1", "--source", "stdout"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains("[stdout] tick") && second.contains("[stdout] tick"), "{first} / {second}");
}

#[test]
fn logs_follow_over_websocket() {
    let Some(d) = Daemon::start() else { return };
    d.create(json!({"name": "wslog", "start_command": "i=0; while true; do i=$((i+1)); echo line$i; sleep 0.1; done"}));
    let url = format!("ws://127.0.0.1:{}/sandboxes/wslog/logs/stream?backlog=1&source=stdout", d.port);
    let (mut ws, _) = tungstenite::connect(url).expect("websocket upgrade");
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match ws.read().unwrap() {
            tungstenite::Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                seen.push(v["message"].as_str().unwrap()[4..].parse::<u32>().unwrap());
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
    // Deleting the sandbox ends the stream with a close frame.
    let (s, _) = d.delete("/sandboxes/wslog");
    assert_eq!(s, 200);
    let closed = (0..100).any(|_| matches!(ws.read(), Ok(tungstenite::Message::Close(_)) | Err(_)));
    assert!(closed);
}

//! The daemon <-> agent channel (protocol v2): nothing the sandbox plants
//! redirects it, and one flooding stream does not starve the others.

use std::time::Duration;

use serde_json::json;

use crate::streams::open_stream;
use crate::support::Daemon;

/// A sandbox plants the links that used to redirect the daemon: an
/// `agent.sock` pointing at another sandbox's agent and a `logs.jsonl`
/// pointing at a host file. Exec must still reach this sandbox (also after a
/// daemon restart), the host file must be neither read back nor written.
#[test]
fn planted_links_do_not_redirect_the_daemon() {
    let Some(mut d) = Daemon::start() else { return };
    let a = d.create(json!({"name": "plant-a", "start_command": "while true; do echo from-a; sleep 0.2; done"}));
    let b = d.create(json!({"name": "plant-b"}));
    let (a_id, b_id) = (a["id"].as_str().unwrap().to_string(), b["id"].as_str().unwrap().to_string());
    let secret = d.data.path().join("host-secret.txt");
    std::fs::write(&secret, "HOST-SECRET-9c1f\n").unwrap();
    let victim = d.data.path().join("victim.txt");
    let b_sock = d.data.path().join("sandboxes").join(&b_id).join("agent.sock");
    let plant = format!(
        "mkdir -p /run/heyvm && ln -sf {} /run/heyvm/agent.sock && ln -sf {} /run/heyvm/logs.jsonl && ln -sf {} /run/heyvm/owner.json && echo planted",
        b_sock.display(),
        secret.display(),
        victim.display()
    );
    assert_eq!(d.sh(&a_id, &plant)["stdout"], "planted\n");
    let hostname = |d: &Daemon| d.sh(&a_id, "hostname")["stdout"].as_str().unwrap().trim().to_string();
    assert_eq!(hostname(&d), "plant-a");
    d.restart();
    assert_eq!(hostname(&d), "plant-a", "after a restart, exec must still reach the sandbox it names");
    d.wait_until("start command output in the log", Duration::from_secs(10), || {
        d.get(&format!("/sandboxes/{a_id}/logs?limit=1000")).1.to_string().contains("from-a")
    });
    let logs = d.get(&format!("/sandboxes/{a_id}/logs?limit=1000")).1.to_string();
    assert!(!logs.contains("HOST-SECRET"), "the log route read a host file through a planted link");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "HOST-SECRET-9c1f\n", "a host file was written through a planted link");
    assert!(!victim.exists(), "the daemon created a file through a planted link");
    assert!(!d.get(&format!("/sandboxes/{b_id}/logs?limit=1000")).1.to_string().contains("from-a"));
}

/// A command flooding its output (`yes`) on one stream, read slowly or not
/// at all, while ten other execs run on the same sandbox: all ten finish
/// with their own output.
#[test]
fn a_flooding_stream_does_not_starve_other_execs() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "flood"}))["id"].as_str().unwrap().to_string();
    for drain in [false, true] {
        let mut flood = open_stream(&d, &id, json!({"command": "yes", "timeout_secs": 60}));
        assert_eq!(flood.next().unwrap().0, "exec_started");
        // Drains 20 MB of the flood while the execs run.
        let drainer = drain.then(|| {
            std::thread::spawn(move || {
                let mut got = 0usize;
                for (event, data) in flood.by_ref() {
                    assert_eq!(event, "stdout", "the flood ended early: {data}");
                    got += data["data"].as_str().map_or(0, str::len);
                    if got >= 20 << 20 {
                        break;
                    }
                }
                got
            })
        });
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let (url, id) = (d.url.clone(), id.clone());
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                    let body = json!({"command": "/bin/sh", "args": ["-c", format!("echo exec-{i}")]}).to_string();
                    let mut resp =
                        agent.post(format!("{url}/sandboxes/{id}/execute")).content_type("application/json").send(body.as_bytes()).unwrap();
                    (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap())
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let (status, body) = h.join().unwrap();
            assert_eq!(status, 200, "exec {i} (drain={drain}): {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["stdout"], format!("exec-{i}\n"), "drain={drain}");
        }
        if let Some(t) = drainer {
            assert!(t.join().unwrap() >= 20 << 20, "the flood itself kept flowing");
        }
    }
}

//! Seed 000's verification flow for the heyvm provider: configure an agent,
//! 409 SANDBOX_NOT_READY before bootstrap, bootstrap through from-template
//! and its SSE stream, exec as SSE, status, idle stop then resume on the
//! next exec, thread-scope sandboxes destroyed at thread end, error codes.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::Daemon;

/// POSTs and reads an SSE answer to its end: `(status, [(event, data)])`.
fn sse(d: &Daemon, method: &str, path: &str, body: Option<Value>) -> (u16, Vec<(String, Value)>) {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(120))).build().into();
    let url = format!("{}{path}", d.url);
    let resp = match body {
        Some(b) => agent.post(&url).content_type("application/json").send(b.to_string().as_bytes()),
        None if method == "GET" => agent.get(&url).call(),
        None => unreachable!(),
    }
    .unwrap();
    let status = resp.status().as_u16();
    let mut events = Vec::new();
    let (mut name, mut data) = (String::new(), String::new());
    for line in BufReader::new(resp.into_body().into_reader()).lines() {
        let line = line.unwrap();
        if line.is_empty() {
            if !data.is_empty() {
                events.push((name.clone(), serde_json::from_str(&data).unwrap_or(Value::String(data.clone()))));
            }
            name.clear();
            data.clear();
        } else if let Some(v) = line.strip_prefix("event: ") {
            name = v.to_string();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push_str(v);
        }
    }
    if !data.is_empty() {
        events.push((name, serde_json::from_str(&data).unwrap_or(Value::String(data))));
    }
    (status, events)
}

fn put(d: &Daemon, path: &str, body: Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let resp = agent.put(format!("{}{path}", d.url)).content_type("application/json").send(body.to_string().as_bytes()).unwrap();
    let s = resp.status().as_u16();
    (s, serde_json::from_slice(&resp.into_body().read_to_vec().unwrap()).unwrap_or(Value::Null))
}

#[test]
fn seed_000_verification_flow() {
    let Some(d) = Daemon::start_with(&[("HEYVM_COMPUTER_IDLE_SECS", "2")]) else { return };
    let agent = "agt_demo1";
    // Provider values; persistent needs heyvm; provider defaults to tensorlake.
    let (s, v) = put(&d, "/api/agents/agt_other/computer", json!({"enabled": true, "mode": "ephemeral", "scope": "thread"}));
    assert_eq!((s, v["provider"].as_str()), (200, Some("tensorlake")), "{v}");
    let (s, v) = put(&d, "/api/agents/agt_other/computer", json!({"mode": "persistent"}));
    assert_eq!((s, v["error"].as_str()), (400, Some("INVALID_REQUEST")), "{v}");
    let (s, v) = put(&d, "/api/agents/agt_other/computer", json!({"provider": "aws"}));
    assert_eq!(s, 400, "{v}");
    let (s, v) = sse(&d, "POST", "/api/agents/agt_other/computer/exec", Some(json!({"command": "true"})));
    assert_eq!(s, 400);
    assert!(v.is_empty());
    let (s, v) = d.post("/api/agents/agt_other/threads/t1/computer/run", &json!({"command": "true"}));
    assert_eq!((s, v["error"].as_str()), (400, Some("PROVIDER_UNAVAILABLE")));
    // The seed's PUT.
    let (s, v) = put(
        &d,
        &format!("/api/agents/{agent}/computer"),
        json!({"enabled": true, "provider": "heyvm", "mode": "persistent", "scope": "agent", "sizeClass": "micro"}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(d.get(&format!("/api/agents/{agent}/computer")).1["sizeClass"], "micro");
    // Exec before bootstrap: 409 SANDBOX_NOT_READY, and it creates nothing.
    let (s, v) = d.post(&format!("/api/agents/{agent}/computer/exec"), &json!({"command": "uname -a"}));
    assert_eq!((s, v["error"].as_str()), (409, Some("SANDBOX_NOT_READY")), "{v}");
    assert_eq!(d.get("/sandboxes").1, json!([]));
    // Bootstrap and watch it.
    let (s, v) = d.post("/api/agents/from-template", &json!({"agentId": agent}));
    assert_eq!(s, 202, "{v}");
    let (s, events) = sse(&d, "GET", &format!("/api/agents/{agent}/computer/bootstrap/stream"), None);
    assert_eq!(s, 200);
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "ready", "{events:?}");
    let sandbox = data["sandboxId"].as_str().unwrap().to_string();
    assert!(events.iter().any(|(n, _)| n == "progress"));
    // A second from-template is a no-op.
    let (s, v) = d.post("/api/agents/from-template", &json!({"agentId": agent}));
    assert_eq!((s, v["sandboxId"].as_str()), (200, Some(sandbox.as_str())));
    // The seed's verification exec: exec_started, stdout, exit.
    let (s, events) =
        sse(&d, "POST", &format!("/api/agents/{agent}/computer/exec"), Some(json!({"command": "uname -a; echo note > /workspace/n"})));
    assert_eq!(s, 200);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"exec_started"), "{events:?}");
    assert!(names.contains(&"stdout"));
    assert_eq!(names.last(), Some(&"exit"));
    assert!(events.iter().any(|(n, v)| n == "stdout" && v["data"].as_str().unwrap().contains("Linux")));
    let status = d.get(&format!("/api/agents/{agent}/computer/status")).1;
    assert_eq!((status["ready"].as_bool(), status["sandboxId"].as_str()), (Some(true), Some(sandbox.as_str())), "{status}");
    assert_eq!(status["idleTimeoutSeconds"], 2);
    // Idle stop, then the next exec resumes it with its files.
    d.wait_until("computer idle stop", Duration::from_secs(30), || d.get(&format!("/sandboxes/{sandbox}")).1["status"] == "stopped");
    assert_eq!(d.get(&format!("/sandboxes/{sandbox}")).1["stop_reason"], "idle");
    let (_, events) = sse(&d, "POST", &format!("/api/agents/{agent}/computer/exec"), Some(json!({"command": "cat /workspace/n"})));
    assert!(events.iter().any(|(n, v)| n == "stdout" && v["data"] == "note\n"), "{events:?}");
    // Thread routes with scope agent use the agent's sandbox.
    let (_, v) = d.post(&format!("/api/agents/{agent}/threads/th1/computer/run"), &json!({"command": "cat /workspace/n"}));
    assert_eq!((v["stdout"].as_str(), v["sandboxId"].as_str()), (Some("note\n"), Some(sandbox.as_str())), "{v}");
}

#[test]
fn thread_scope_sandboxes_live_and_die_with_the_thread() {
    let Some(d) = Daemon::start() else { return };
    let agent = "agt_threads";
    let (s, _) = put(
        &d,
        &format!("/api/agents/{agent}/computer"),
        json!({"provider": "heyvm", "mode": "ephemeral", "scope": "thread", "sizeClass": "micro"}),
    );
    assert_eq!(s, 200);
    let base = format!("/api/agents/{agent}/threads");
    let (s, w) = d.post(&format!("{base}/t1/computer/write-file"), &json!({"path": "/etc/heyvm-note", "content": "one"}));
    assert_eq!(s, 200, "{w}");
    let (_, r) = d.post(&format!("{base}/t1/computer/read-file"), &json!({"path": "/etc/heyvm-note"}));
    assert_eq!((r["content"].as_str(), r["size"].as_u64()), (Some("one"), Some(3)), "{r}");
    let (_, run) = d.post(&format!("{base}/t1/computer/run"), &json!({"command": "cat /etc/heyvm-note; exit 4"}));
    assert_eq!((run["stdout"].as_str(), run["exitCode"].as_i64()), (Some("one"), Some(4)), "{run}");
    // Another thread: another sandbox, without the first one's file.
    let (_, r2) = d.post(&format!("{base}/t2/computer/read-file"), &json!({"path": "/etc/heyvm-note"}));
    assert_eq!(r2["error"], "FILE_NOT_FOUND", "{r2}");
    let (_, run2) = d.post(&format!("{base}/t2/computer/run"), &json!({"command": "true"}));
    assert_ne!(run["sandboxId"], run2["sandboxId"]);
    assert_eq!(d.get("/sandboxes").1.as_array().unwrap().len(), 2);
    // Ending thread 1 destroys its sandbox only.
    let (s, v) = d.delete(&format!("/api/agents/{agent}/threads/t1"));
    assert_eq!((s, v["deletedSandboxId"].clone()), (200, run["sandboxId"].clone()), "{v}");
    assert_eq!(d.get(&format!("/sandboxes/{}", run["sandboxId"].as_str().unwrap())).0, 404);
    assert_eq!(d.get(&format!("/sandboxes/{}", run2["sandboxId"].as_str().unwrap())).0, 200);
    // A new call on thread 1 starts from a fresh sandbox.
    let (_, r) = d.post(&format!("{base}/t1/computer/read-file"), &json!({"path": "/etc/heyvm-note"}));
    assert_eq!(r["error"], "FILE_NOT_FOUND");
    // Unknown agent and bad bodies.
    let (s, v) = d.post("/api/agents/nobody/threads/t/computer/run", &json!({"command": "true"}));
    assert_eq!((s, v["error"].as_str()), (404, Some("AGENT_NOT_FOUND")));
    let (s, _) = d.post(&format!("{base}/t1/computer/run"), &json!({"cmd": "true"}));
    assert_eq!(s, 400);
}

#[test]
fn computer_routes_report_sandbox_auth_failed() {
    let Some(d) = Daemon::start_with(&[("JWT_SECRET", "computers-secret")]) else { return };
    let (s, v) = d.post("/api/agents/from-template", &json!({"agentId": "a"}));
    assert_eq!((s, v["error"].as_str()), (401, Some("SANDBOX_AUTH_FAILED")), "{v}");
}

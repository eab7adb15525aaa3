//! Idle stop and transparent resume: a sandbox unused for its
//! `idle_timeout_seconds` is stopped (`stop_reason: "idle"`); the next exec,
//! file call or proxy request starts it again with its files intact. A
//! running exec keeps it busy; a manual stop does not resume unless
//! `auto_resume`.

use std::time::Duration;

use serde_json::json;

use crate::support::Daemon;

fn status(d: &Daemon, id: &str) -> serde_json::Value {
    d.get(&format!("/sandboxes/{id}")).1
}

fn wait_idle_stop(d: &Daemon, id: &str) {
    d.wait_until("idle stop", Duration::from_secs(30), || status(d, id)["status"] == "stopped");
    assert_eq!(status(d, id)["stop_reason"], "idle");
}

#[test]
fn idle_sandbox_stops_and_resumes_on_use_with_files_intact() {
    let Some(d) = Daemon::start() else { return };
    let v = d.create(json!({"name": "sleepy", "idle_timeout_seconds": 2}));
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["idle_timeout_seconds"], 2);
    assert_eq!(d.sh(&id, "echo kept > /workspace/note; echo t > /tmp/tmpnote")["exit_code"], 0);
    assert!(status(&d, &id)["last_used_at"].as_i64().is_some());
    wait_idle_stop(&d, &id);
    // Exec resumes it transparently.
    let v = d.sh(&id, "cat /workspace/note");
    assert_eq!(v["stdout"], "kept\n", "{v}");
    let info = status(&d, &id);
    assert_eq!(info["status"], "running");
    assert_eq!(info["stop_reason"], serde_json::Value::Null);
    // A file read resumes it too (and the CLI path).
    wait_idle_stop(&d, &id);
    let (s, body) = d.get_bytes(&format!("/sandboxes/{id}/files/note"));
    assert_eq!((s, body.as_slice()), (200, &b"kept\n"[..]));
    assert_eq!(status(&d, &id)["status"], "running");
    wait_idle_stop(&d, &id);
    let out = d.heyvm(&["exec", &id, "cat", "/workspace/note"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");
    // A long exec keeps it from idling.
    let v = d.sh(&id, "sleep 4; echo done");
    assert_eq!(v["stdout"], "done\n");
    assert_eq!(status(&d, &id)["status"], "running");
}

#[test]
fn manual_stop_does_not_resume_unless_auto_resume() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "manual"}))["id"].as_str().unwrap().to_string();
    assert_eq!(status(&d, &id)["idle_timeout_seconds"], serde_json::Value::Null);
    let (s, _) = d.post(&format!("/sandboxes/{id}/stop"), &json!({}));
    assert_eq!(s, 200);
    assert_eq!(status(&d, &id)["stop_reason"], "user");
    let (s, v) = d.post(&format!("/sandboxes/{id}/execute"), &json!({"command": "true"}));
    assert_eq!((s, v["error"].as_str()), (409, Some("invalid_state")));
    // auto_resume (PATCH) extends resume to manual stops.
    let (s, v) = d.patch(&format!("/sandboxes/{id}"), &json!({"auto_resume": true}));
    assert_eq!((s, v["auto_resume"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(d.sh(&id, "echo back")["stdout"], "back\n");
    // PATCH sets an idle timeout on an existing sandbox.
    let (_, v) = d.patch(&format!("/sandboxes/{id}"), &json!({"idle_timeout_seconds": 1}));
    assert_eq!(v["idle_timeout_seconds"], 1);
    wait_idle_stop(&d, &id);
}

#[test]
fn daemon_default_idle_timeout_applies_and_zero_turns_it_off() {
    let Some(d) = Daemon::start_with(&[("HEYVM_IDLE_TIMEOUT_SECS", "2")]) else { return };
    let a = d.create(json!({"name": "default-idle"}))["id"].as_str().unwrap().to_string();
    let b = d.create(json!({"name": "never-idle", "idle_timeout_seconds": 0}))["id"].as_str().unwrap().to_string();
    assert_eq!(status(&d, &a)["idle_timeout_seconds"], 2);
    assert_eq!(status(&d, &b)["idle_timeout_seconds"], serde_json::Value::Null);
    wait_idle_stop(&d, &a);
    assert_eq!(status(&d, &b)["status"], "running");
    // CLI: --idle-timeout on create.
    let v = d.heyvm_json(&["create", "--name", "cli-idle", "--idle-timeout", "1m", "--size-class", "micro"]);
    assert_eq!(v["idle_timeout_seconds"], 60);
}

//! Per-daemon quotas through the real daemon: `HEYVM_MAX_SANDBOXES` holds
//! against concurrent creates on every route that makes sandboxes (native,
//! the cloud dialect, agent computers, fork, the CLI), and
//! `HEYVM_MAX_RUNNING_VMS` counts running VMs only (the VM pass).

use serde_json::{json, Value};

use crate::support::{on_vm, Daemon};

/// The stable refusal: 429 `quota_exceeded`, naming the variable.
fn assert_refused(what: &str, (s, v): (u16, Value), variable: &str) {
    assert_eq!((s, v["error"].as_str()), (429, Some("quota_exceeded")), "{what}: {v}");
    assert!(v["message"].as_str().is_some_and(|m| m.contains(variable)), "{what}: {v}");
}

/// Creates that would boot nothing on a VM (`no_start`), so the test costs
/// no boot on either backend.
#[test]
fn creates_past_the_sandbox_limit_are_refused_on_every_route() {
    let Some(d) = Daemon::start_with(&[("HEYVM_MAX_SANDBOXES", "3")]) else { return };
    // Six at once for three places: the check counts creates in flight.
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let d = &d;
        let runs: Vec<_> =
            (0..6).map(|i| s.spawn(move || d.post("/sandboxes", &json!({"name": format!("q{i}"), "no_start": true})))).collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let made: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 201).map(|(_, v)| v).collect();
    assert_eq!(made.len(), 3, "{answers:?}");
    for a in answers.iter().filter(|(s, _)| *s != 201) {
        assert_refused("a concurrent create", a.clone(), "HEYVM_MAX_SANDBOXES=3");
    }
    let (_, list) = d.get("/sandboxes");
    assert_eq!(list.as_array().map(Vec::len), Some(3), "refused creates left nothing behind: {list}");

    // Every other way of making a sandbox is held to it too.
    assert_refused("sandbox-deploy", d.post("/sandbox-deploy", &json!({"name": "dep"})), "HEYVM_MAX_SANDBOXES");
    let id = made[0]["id"].as_str().unwrap();
    assert_refused("fork", d.post(&format!("/sandboxes/{id}/fork"), &json!({"name": "forked"})), "HEYVM_MAX_SANDBOXES");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let config = json!({"enabled": true, "provider": "heyvm", "mode": "ephemeral", "scope": "thread", "sizeClass": "micro"});
    let resp =
        agent.put(format!("{}/api/agents/agt_q/computer", d.url)).content_type("application/json").send(config.to_string().as_bytes());
    assert_eq!(resp.unwrap().status().as_u16(), 200);
    let run = d.post("/api/agents/agt_q/threads/t1/computer/run", &json!({"command": "true"}));
    assert_refused("a thread computer", run, "HEYVM_MAX_SANDBOXES");
    let out = d.heyvm(&["create", "--name", "cli"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("HEYVM_MAX_SANDBOXES"), "CLI create: {stderr}");

    // A deleted sandbox gives its place back.
    assert_eq!(d.delete(&format!("/sandboxes/{id}")).0, 200);
    let (s, v) = d.post("/sandboxes", &json!({"name": "again", "no_start": true}));
    assert_eq!(s, 201, "{v}");
}

/// A running-VM limit of one: a second VM cannot boot, a stopped one does
/// not count, and a refused start leaves the sandbox stopped.
#[test]
fn running_vms_are_held_to_their_limit() {
    if !on_vm() {
        eprintln!("SKIP: the running-VM limit needs VMs (HEYVM_TEST_BACKEND=kvm); its unit test runs everywhere");
        return;
    }
    let Some(d) = Daemon::start_with(&[("HEYVM_MAX_RUNNING_VMS", "1")]) else { return };
    let a = d.create(json!({"name": "vm-a", "size_class": "micro"}));
    assert_eq!(a["status"], "running", "{a}");
    assert_refused("a second VM", d.post("/sandboxes", &json!({"name": "vm-b", "size_class": "micro"})), "HEYVM_MAX_RUNNING_VMS=1");
    assert_refused("sandbox-deploy", d.post("/sandbox-deploy", &json!({"name": "dep", "size_class": "micro"})), "HEYVM_MAX_RUNNING_VMS");
    let (s, list) = d.get("/sandboxes");
    assert_eq!((s, list.as_array().map(Vec::len)), (200, Some(1)), "refused creates left nothing behind: {list}");
    // Created stopped: no VM runs, so it fits; started, it does not.
    let c = d.create(json!({"name": "vm-c", "size_class": "micro", "no_start": true}));
    assert_eq!(c["status"], "stopped", "{c}");
    assert_refused("a start", d.post("/sandboxes/vm-c/start", &json!({})), "HEYVM_MAX_RUNNING_VMS");
    assert_eq!(d.get("/sandboxes/vm-c").1["status"], "stopped", "a refused start leaves it as it was");
    // A stopped VM gives its place back.
    let (s, v) = d.post("/sandboxes/vm-a/stop", &json!({}));
    assert_eq!(s, 200, "{v}");
    let (s, v) = d.post("/sandboxes/vm-c/start", &json!({}));
    assert_eq!((s, v["status"].as_str()), (200, Some("running")), "{v}");
    assert_refused("the first again", d.post("/sandboxes/vm-a/start", &json!({})), "HEYVM_MAX_RUNNING_VMS");
}

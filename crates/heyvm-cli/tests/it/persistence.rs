//! Files and running sandboxes survive stop/start and `kill -9` of the
//! daemon; sandboxes killed behind the daemon's back become `failed`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{on_vm, Daemon};

const WRITE: &str = "echo ws > /workspace/ws.txt && echo home > /root/home.txt && mkdir -p /usr/local/share/heyvm-t && echo usr > /usr/local/share/heyvm-t/usr.txt";
const READ: &str = "cat /workspace/ws.txt /root/home.txt /usr/local/share/heyvm-t/usr.txt";

fn status(d: &Daemon, id: &str) -> Value {
    let (s, v) = d.get(&format!("/sandboxes/{id}"));
    assert_eq!(s, 200, "{v}");
    v
}

/// pid (inside the sandbox) of the start command's `sleep`.
fn service_pid(d: &Daemon, id: &str) -> String {
    d.sh(id, "pgrep -x sleep")["stdout"].as_str().unwrap().trim().to_string()
}

#[test]
fn files_survive_stop_start() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "keep", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    assert_eq!(d.sh(&id, WRITE)["exit_code"], 0);
    for action in ["stop", "force-stop"] {
        let (s, v) = d.post(&format!("/sandboxes/{id}/{action}"), &json!({}));
        assert_eq!((s, v["status"].as_str()), (200, Some("stopped")), "{v}");
        // The workspace is reachable through the file API while stopped;
        // a VM's disks only through its guest (the host never mounts a
        // disk a guest wrote): a clear 409 instead.
        let (s, body) = d.get_bytes(&format!("/sandboxes/{id}/files/ws.txt"));
        if on_vm() {
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            assert_eq!((s, v["error"].as_str()), (409, Some("invalid_state")), "{v}");
        } else {
            assert_eq!((s, body.as_slice()), (200, &b"ws\n"[..]));
        }
        let (s, v) = d.post(&format!("/sandboxes/{id}/start"), &json!({}));
        assert_eq!(s, 200, "{v}");
        assert_eq!(d.sh(&id, READ)["stdout"], "ws\nhome\nusr\n", "after {action}");
    }
    let (s, _) = d.post(&format!("/sandboxes/{id}/restart"), &json!({}));
    assert_eq!(s, 200);
    assert_eq!(d.sh(&id, READ)["stdout"], "ws\nhome\nusr\n", "after restart");
}

#[test]
fn kill9_of_the_daemon_loses_nothing() {
    let Some(mut d) = Daemon::start() else { return };
    let run = d.create(json!({"name": "run", "size_class": "micro", "start_command": "sleep 100000"}))["id"].as_str().unwrap().to_string();
    let stopped = d.create(json!({"name": "parked", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    assert_eq!(d.sh(&run, WRITE)["exit_code"], 0);
    assert_eq!(d.sh(&stopped, WRITE)["exit_code"], 0);
    d.post(&format!("/sandboxes/{stopped}/stop"), &json!({}));
    let before = service_pid(&d, &run);
    assert!(!before.is_empty());

    d.restart();

    let v = status(&d, &run);
    assert_eq!(v["status"], "running", "{v}");
    assert_eq!(service_pid(&d, &run), before, "the sandbox kept running: same start-command process");
    assert_eq!(d.sh(&run, READ)["stdout"], "ws\nhome\nusr\n");
    // CLI too.
    let out = d.heyvm_json(&["exec", "run", "--", "cat", "/workspace/ws.txt"]);
    assert_eq!(out["stdout"], "ws\n");
    let v = status(&d, &stopped);
    assert_eq!(v["status"], "stopped", "{v}");
    let (_, list) = d.get("/sandboxes");
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let (s, v) = d.post(&format!("/sandboxes/{stopped}/start"), &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(d.sh(&stopped, READ)["stdout"], "ws\nhome\nusr\n");
    // Lifecycle still works on the sandbox that outlived the daemon.
    let (s, v) = d.post(&format!("/sandboxes/{run}/stop"), &json!({}));
    assert_eq!((s, v["status"].as_str()), (200, Some("stopped")), "{v}");
    let (s, _) = d.post(&format!("/sandboxes/{run}/start"), &json!({}));
    assert_eq!(s, 200);
    assert_eq!(d.sh(&run, READ)["stdout"], "ws\nhome\nusr\n");
}

/// SIGKILLs every process of a sandbox from the host, via its cgroup or,
/// without cgroups, via the owner pid the backend records; a VM's QEMU.
fn kill_sandbox_processes(d: &Daemon, id: &str) {
    if on_vm() {
        let pid_file = d.data.path().join("sandboxes").join(id).join("vm/run/qemu.pid");
        let text = std::fs::read_to_string(&pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        // SAFETY: kill(2) on the pid our own daemon recorded for this VM.
        unsafe { libc::kill(text.trim().parse().expect("QEMU pid"), libc::SIGKILL) };
        return;
    }
    let owner = d.data.path().join("sandboxes").join(id).join("owner.json");
    let text = std::fs::read_to_string(&owner).unwrap_or_else(|e| panic!("{}: {e}", owner.display()));
    let v: Value = serde_json::from_str(&text).unwrap();
    let pid = v["pid"].as_i64().expect("owner pid") as i32;
    let mut pids = vec![pid];
    // bwrap's own children (the namespace's init) die with their parent
    // only if bwrap asked for it; kill them explicitly.
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(children.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    for p in pids {
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
}

#[test]
fn sandbox_killed_behind_the_daemons_back_becomes_failed() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "victim", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    assert_eq!(d.sh(&id, WRITE)["exit_code"], 0);
    if on_vm() {
        // Killing QEMU is a power cut for the guest: what its kernel had
        // not yet written back is lost (ext4 commits every 5 s), unlike a
        // killed bubblewrap sandbox, whose writes are in the host's kernel.
        // Synced files must survive.
        assert_eq!(d.sh(&id, "sync")["exit_code"], 0);
    }
    kill_sandbox_processes(&d, &id);
    d.wait_until("the sandbox to be marked failed", Duration::from_secs(15), || status(&d, &id)["status"] == "failed");
    let v = status(&d, &id);
    assert!(v["error_message"].as_str().is_some_and(|m| !m.is_empty()), "failed needs a reason: {v}");
    let (s, e) = d.post(&format!("/sandboxes/{id}/execute"), &json!({"command": "true"}));
    assert_eq!((s, e["error"].as_str()), (409, Some("invalid_state")), "{e}");
    // A failed sandbox can be started again, with its files.
    let (s, v) = d.post(&format!("/sandboxes/{id}/start"), &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["error_message"], Value::Null, "{v}");
    assert_eq!(d.sh(&id, READ)["stdout"], "ws\nhome\nusr\n");
}

#[test]
fn sandbox_that_died_while_the_daemon_was_down_is_failed_after_restart() {
    let Some(mut d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "lost", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    d.kill9();
    kill_sandbox_processes(&d, &id);
    std::thread::sleep(Duration::from_millis(200));
    d.restart();
    let v = status(&d, &id);
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v["error_message"].as_str().unwrap_or("").contains("gone"), "{v}");
    let (s, v) = d.post(&format!("/sandboxes/{id}/start"), &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(d.sh(&id, "echo back")["stdout"], "back\n");
}

#[test]
fn daemon_killed_mid_create_leaves_no_transitional_state() {
    let Some(mut d) = Daemon::start() else { return };
    let url = d.url.clone();
    // A slow setup hook keeps the sandbox in `provisioning`.
    let creator = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let _ = agent
            .post(format!("{url}/sandboxes"))
            .content_type("application/json")
            .send(json!({"name": "midway", "size_class": "micro", "setup_hooks": ["sleep 30"]}).to_string().as_bytes());
    });
    d.wait_until("provisioning", Duration::from_secs(15), || d.get("/sandboxes/midway").1["status"] == "provisioning");
    let id = d.get("/sandboxes/midway").1["id"].as_str().unwrap().to_string();
    d.restart();
    let _ = creator.join();
    let v = status(&d, &id);
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v["error_message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    // Its processes were cleaned up: the hook's sleep is gone.
    let marker = d.data.path().join("sandboxes").join(&id).display().to_string();
    d.wait_until("the half-started sandbox's processes to go", Duration::from_secs(10), || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .all(|c| !String::from_utf8_lossy(&c).contains(&marker))
    });
    let (s, v) = d.delete(&format!("/sandboxes/{id}"));
    assert_eq!(s, 200, "{v}");
}

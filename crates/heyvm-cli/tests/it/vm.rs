//! The microVM tier (`backend_type: "kvm"`) through the real binary: QEMU
//! (TCG on these machines), the static agent as the guest's init, one
//! multiplexed stream over virtio-serial. Each test boots real VMs, so
//! they are few and each covers a lot. `HEYVM_TEST_BACKEND=kvm` runs the
//! other modules on VMs too.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::network::TestServer;
use crate::support::{vm_support, Daemon};

fn vm_daemon() -> Option<Daemon> {
    if !vm_support() {
        return None;
    }
    Daemon::start()
}

fn create_vm(d: &Daemon, name: &str, extra: Value) -> Value {
    let mut body = json!({"name": name, "backend_type": "kvm", "size_class": "micro"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let t = Instant::now();
    let v = d.create(body);
    eprintln!("vm {name} created in {:?}", t.elapsed());
    v
}

fn stdout(v: &Value) -> String {
    v["stdout"].as_str().unwrap_or_default().trim().to_string()
}

#[test]
fn vm_boots_its_own_kernel_and_runs_commands_files_and_restarts() {
    let Some(d) = vm_daemon() else { return };
    // The backend list is honest about the accelerator.
    let backends = d.heyvm_json(&["backends"]);
    let kvm = backends.as_array().unwrap().iter().find(|b| b["name"] == "kvm").expect("kvm listed");
    assert_eq!(kvm["available"], true, "{kvm}");
    assert!(matches!(kvm["accel"].as_str(), Some("kvm" | "tcg")), "{kvm}");
    assert!(kvm["aliases"].as_array().unwrap().iter().any(|a| a == "firecracker"));

    // An alias resolves to kvm.
    let sb = create_vm(&d, "vm1", json!({"backend_type": "firecracker", "disk_size_gb": 1}));
    let id = sb["id"].as_str().unwrap().to_string();
    assert_eq!(sb["backend_type"], "kvm");
    assert_eq!(sb["status"], "running");
    assert_eq!(sb["accel"], kvm["accel"]);
    // owner.json as bubblewrap sandboxes have it: QEMU's pid (it holds the
    // VM) and the guest's address.
    let dir = d.data.path().join("sandboxes").join(&id);
    let owner = || -> Option<Value> { serde_json::from_slice(&std::fs::read(dir.join("owner.json")).ok()?).ok() };
    let qemu_pid = || std::fs::read_to_string(dir.join("vm/run/qemu.pid")).unwrap().trim().parse::<i64>().unwrap();
    let o = owner().expect("owner.json of a running VM");
    assert_eq!(o["pid"].as_i64(), Some(qemu_pid()), "{o}");
    assert!(o["guest_ip"].is_string() && o["guest_ip"] == sb["guest_ip"], "{o} vs {sb}");
    // It names the image it boots (the default VM image), not the host's.
    assert_eq!(sb["image"], "debian-vm", "{sb}");
    let (_, list) = d.get("/sandboxes");
    let listed = list.as_array().unwrap().iter().find(|s| s["id"] == id.as_str()).cloned().unwrap_or_default();
    assert_eq!(listed["image"], "debian-vm", "{list}");

    // Its own kernel, not the host's.
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let guest_kernel = stdout(&d.sh(&id, "uname -r"));
    assert_ne!(guest_kernel, host_kernel.trim());
    assert_eq!(stdout(&d.sh(&id, "hostname")), "vm1");
    assert_eq!(stdout(&d.sh(&id, "python3 -c 'print(6*7)'")), "42");
    let mem_kb: u64 = stdout(&d.sh(&id, "awk '/MemTotal/{print $2}' /proc/meminfo")).parse().unwrap();
    assert!(mem_kb > 300_000 && mem_kb <= 512 * 1024, "micro is 512 MiB of guest RAM, got {mem_kb} kB");

    // Exit codes and stderr through the multiplexed stream.
    let v = d.sh(&id, "echo out; echo err >&2; exit 3");
    assert_eq!((stdout(&v).as_str(), v["stderr"].as_str().unwrap().trim(), v["exit_code"].as_i64()), ("out", "err", Some(3)));

    // Ten concurrent execs next to a `yes` flood all finish.
    let flood = {
        let (url, id) = (d.url.clone(), id.clone());
        std::thread::spawn(move || post_exec(&url, &id, "yes | head -c 20000000 | wc -c"))
    };
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let (url, id) = (d.url.clone(), id.clone());
            std::thread::spawn(move || post_exec(&url, &id, &format!("echo n{i}")))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (status, v) = h.join().unwrap();
        assert_eq!((status, stdout(&v)), (200, format!("n{i}")), "{v}");
    }
    let (status, v) = flood.join().unwrap();
    assert_eq!((status, stdout(&v).as_str()), (200, "20000000"), "{v}");

    // disk_size_gb is the guest's /workspace disk: a write past it fails
    // with ENOSPC inside, and the host reports the limit.
    assert_eq!(workspace_kib(&d, &id), 1 << 20);
    let v = d.sh(
        &id,
        "fallocate -l 900M /workspace/fill && head -c 300M /dev/zero > /workspace/more; echo rc=$?; rm -f /workspace/fill /workspace/more",
    );
    let text = format!("{}{}", v["stdout"], v["stderr"]);
    assert!(text.contains("No space left on device") && !text.contains("rc=0"), "{v}");
    let (_, info) = d.get(&format!("/sandboxes/{id}"));
    assert_eq!(info["disk_limit"].as_u64(), Some(1 << 30), "{info}");

    // Files written in the guest survive stop/start: the root overlay and
    // the /workspace disk are persistent. A resize while stopped grows the disk.
    d.sh(&id, "echo root-file > /root/keep && echo ws-file > /workspace/keep && sync");
    let (s, v) = d.post(&format!("/sandboxes/{id}/stop"), &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "stopped");
    assert!(owner().is_none(), "a stopped VM keeps no owner.json");
    let (s, v) = d.patch(&format!("/sandboxes/{id}"), &json!({"disk_size_gb": 2}));
    assert_eq!((s, v["disk_limit"].as_u64()), (200, Some(2 << 30)), "{v}");
    let (s, v) = d.post(&format!("/sandboxes/{id}/start"), &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(stdout(&d.sh(&id, "cat /root/keep /workspace/keep")), "root-file\nws-file");
    assert_eq!(owner().expect("owner.json after a start")["pid"].as_i64(), Some(qemu_pid()));
    assert_eq!(workspace_kib(&d, &id), 2 << 20);
    let (s, _) = d.delete(&format!("/sandboxes/{id}"));
    assert_eq!(s, 200);
}

#[test]
fn vm_keeps_running_across_a_daemon_kill9_and_qemu_death_fails_it() {
    let Some(mut d) = vm_daemon() else { return };
    let sb = create_vm(&d, "vm2", json!({}));
    let id = sb["id"].as_str().unwrap().to_string();
    let pid = stdout(&d.sh(&id, "sleep 1000 >/dev/null 2>&1 & echo $!"));
    d.restart(); // kill -9, then a new daemon on the same data dir
    let v = d.sh(&id, &format!("kill -0 {pid} && echo alive"));
    assert_eq!(stdout(&v), "alive", "the VM and its processes survive the daemon: {v}");

    // QEMU killed from outside: the sandbox becomes failed, with the reason.
    let qemu_pid: i32 =
        std::fs::read_to_string(d.data.path().join("sandboxes").join(&id).join("vm/run/qemu.pid")).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) on the pid our own daemon recorded for this VM.
    unsafe { libc::kill(qemu_pid, libc::SIGKILL) };
    d.wait_until("the sandbox to fail", Duration::from_secs(60), || d.get(&format!("/sandboxes/{id}")).1["status"] == "failed");
    let (_, v) = d.get(&format!("/sandboxes/{id}"));
    assert!(v["error_message"].as_str().unwrap_or_default().contains("QEMU exited"), "{v}");
}

#[test]
fn vm_checkpoint_restore_and_fork_keep_a_running_process() {
    let Some(d) = vm_daemon() else { return };
    let sb = create_vm(&d, "vm3", json!({}));
    let id = sb["id"].as_str().unwrap().to_string();
    let pid = stdout(&d.sh(&id, "sleep 1000 >/dev/null 2>&1 & echo $!"));

    let ck = d.heyvm_json(&["checkpoint", &id, "--name", "one"]);
    assert_eq!((ck["name"].as_str(), ck["memory"].as_bool()), (Some("one"), Some(true)), "{ck}");
    assert!(ck["size_bytes"].as_u64().unwrap() > 0);
    let list = d.heyvm_json(&["checkpoints", &id]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (s, v) = d.post(&format!("/sandboxes/{id}/checkpoints"), &json!({"name": "one"}));
    assert_eq!(s, 409, "a taken name: {v}");

    // After the checkpoint: a file that the restore must take away.
    d.sh(&id, "echo later > /root/after && sync");
    let r = d.heyvm_json(&["restore", &id, "one"]);
    assert_eq!(r["processes"], "kept", "{r}");
    assert_eq!(r["sandbox"]["status"], "running");
    let v = d.sh(
        &id,
        &format!("kill -0 {pid} && echo alive; test -e /root/after && echo file || echo nofile; echo $(( $(date +%s) - {} ))", now()),
    );
    let out = stdout(&v);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], ["alive", "nofile"], "{v}");
    let skew: i64 = lines[2].parse().unwrap();
    assert!(skew.abs() < 120, "the guest clock was reset after restore (skew {skew} s)");

    // A fork: a new sandbox with the same running process and its own name.
    let f = d.heyvm_json(&["fork", &id, "--from", "one", "--name", "vm3-fork"]);
    assert_eq!(f["processes"], "kept", "{f}");
    let fid = f["sandbox"]["id"].as_str().unwrap().to_string();
    assert_ne!(fid, id);
    let v = d.sh(&fid, &format!("kill -0 {pid} && echo alive; hostname"));
    assert_eq!(stdout(&v), "alive\nvm3-fork", "{v}");
    // The two diverge: a file in the fork is not in the original.
    d.sh(&fid, "echo forked > /root/mine");
    assert_eq!(stdout(&d.sh(&id, "test -e /root/mine && echo yes || echo no")), "no");

    // Resized since: the memory cannot load into another machine, so a
    // restore or fork is refused before anything boots (QEMU used to quit
    // mid-restore, leaving the sandbox failed; found by fuzz:: on kvm).
    assert_eq!(d.post(&format!("/sandboxes/{id}/stop"), &json!({})).0, 200);
    let (s, v) = d.patch(&format!("/sandboxes/{id}"), &json!({"size_class": "small"}));
    assert_eq!(s, 200, "{v}");
    let (s, v) = d.post(&format!("/sandboxes/{id}/restore"), &json!({"name": "one"}));
    assert_eq!((s, v["error"].as_str()), (409, Some("conflict")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("size class"), "{v}");
    let (s, v) = d.post(&format!("/sandboxes/{id}/fork"), &json!({"checkpoint": "one", "name": "vm3-f2"}));
    assert_eq!((s, v["error"].as_str()), (409, Some("conflict")), "{v}");
    assert_eq!(d.get("/sandboxes/vm3-f2").0, 404, "a refused fork leaves no sandbox");
    assert_eq!(d.get(&format!("/sandboxes/{id}")).1["status"], "stopped");

    let r = d.heyvm(&["checkpoint", "rm", &id, "one"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (s, v) = d.post(&format!("/sandboxes/{id}/restore"), &json!({"name": "one"}));
    assert_eq!((s, v["error"].as_str()), (404, Some("checkpoint_not_found")), "{v}");
}

#[test]
fn vm_with_a_host_mount_shares_it_over_9p_and_refuses_checkpoints() {
    let Some(d) = vm_daemon() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "from the host").unwrap();
    let m = json!([{"host_path": dir.path().to_str().unwrap(), "sandbox_path": "/data", "read_only": true}]);
    // The default image by the name VMs report: no OCI pull of it.
    let sb = create_vm(&d, "vm4", json!({"mounts": m, "image": "debian-vm"}));
    let id = sb["id"].as_str().unwrap().to_string();
    assert_eq!(sb["image"], "debian-vm", "{sb}");
    assert_eq!(stdout(&d.sh(&id, "cat /data/hello.txt")), "from the host", "virtio-9p share");
    let v = d.sh(&id, "touch /data/x 2>&1; echo $?");
    assert_ne!(stdout(&v).lines().last(), Some("0"), "read-only share: {v}");
    let (s, v) = d.post(&format!("/sandboxes/{id}/checkpoints"), &json!({}));
    assert_eq!((s, v["error"].as_str()), (409, Some("checkpoint_unsupported")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("9p"), "{v}");
}

#[test]
fn vm_boots_an_oci_image_built_for_kvm_through_a_qcow2_overlay() {
    let Some(reg) = crate::registry::Registry::shared() else { return };
    let Some(d) = vm_daemon() else { return };
    let base = reg.with_busybox().image("busybox:1");
    // Built with RUN steps on bubblewrap, then prepared for VMs: the base
    // disk is made by the build, not by the first boot.
    let ctx = tempfile::tempdir_in("/tmp").unwrap();
    let dockerfile = format!("FROM {base}\nRUN echo built > /built && rm /app/hello.txt\nENV STAGE=vm\nWORKDIR /app\n");
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    let out = d.heyvm_json(&["images", "build", "--backend-type", "kvm", "-t", "vmimg:1", ctx.path().to_str().unwrap()]);
    assert_eq!(out["prepared_for"], "kvm", "{out}");
    let before_create = std::time::SystemTime::now();

    let sb = create_vm(&d, "vmimg", json!({"image": "vmimg:1"}));
    assert_eq!((sb["status"].as_str(), sb["backend_type"].as_str()), (Some("running"), Some("kvm")), "{sb}");
    let id = sb["id"].as_str().unwrap().to_string();
    // The image's own root (busybox, no libc, no Debian) under the guest's
    // own kernel; its Env and WorkingDir are the defaults; the whiteout of
    // the RUN layer hides the base layer's file.
    let v = d.sh(&id, "cat /built; echo $STAGE $GREETING; pwd; test -e /etc/debian_version && echo DEBIAN; test -e /app/hello.txt && echo WHITEOUT-LOST; uname -r");
    let out = stdout(&v);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], ["built", "vm hello-from-config", "/app"], "{v}");
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(lines.len(), 4, "{v}");
    assert_ne!(lines[3], host_kernel.trim(), "a VM, not the host kernel");
    assert_eq!(stdout(&d.sh(&id, "echo ws > /workspace/f && cat /workspace/f")), "ws");

    // The root is a qcow2 overlay on the image's cached read-only base disk,
    // made before the create.
    let overlay = d.data.path().join("sandboxes").join(&id).join("vm/root.qcow2");
    let info = std::process::Command::new("qemu-img").args(["info", "-U", "--output=json"]).arg(&overlay).output().unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap_or(Value::Null);
    let backing = std::path::PathBuf::from(info["backing-filename"].as_str().unwrap_or_default());
    assert!(backing.to_string_lossy().contains("/images/oci/"), "{info}");
    let meta = std::fs::metadata(&backing).unwrap();
    assert!(meta.permissions().readonly(), "the base disk is read-only");
    assert!(meta.modified().unwrap() <= before_create, "the base disk was made by the build");
    assert!(std::fs::metadata(&overlay).unwrap().len() < meta.len() / 4, "a boot does not copy the root");
}

#[test]
fn vm_egress_policy_holds_against_a_root_guest() {
    let Some(d) = vm_daemon() else { return };
    let (a, b, c) = (TestServer::start(), TestServer::start(), TestServer::start());
    let sb = create_vm(&d, "vmnet", json!({"allow_out": [a.addr, b.addr], "deny_out": [b.addr]}));
    let id = sb["id"].as_str().unwrap().to_string();
    assert_eq!(guest_fetch(&d, &id, &a.url()).as_deref(), Ok(a.body.as_str()), "allowed");
    assert!(guest_fetch(&d, &id, &b.url()).is_err(), "denied although allowed");
    assert!(guest_fetch(&d, &id, &c.url()).is_err(), "not in the allow list");
    // Root in the guest owns its kernel: it takes another address, routes
    // around its gateway through the namespace's own tap address and has no
    // rules to flush. The policy lives in the host-side namespace.
    let attack = format!(
        "ip addr add 10.123.45.67/32 dev eth0 && ip route replace {b}/32 via 169.254.77.1 dev eth0 onlink src 10.123.45.67 && ip route replace {c}/32 via 169.254.77.1 dev eth0 onlink; ip route",
        b = b.addr,
        c = c.addr
    );
    let v = d.sh(&id, &attack);
    assert_eq!(v["exit_code"], 0, "{v}");
    assert!(guest_fetch(&d, &id, &b.url()).is_err(), "denied after the guest rerouted");
    assert!(guest_fetch(&d, &id, &c.url()).is_err(), "closed after the guest rerouted");
    assert_eq!(guest_fetch(&d, &id, &a.url()).as_deref(), Ok(a.body.as_str()), "still allowed");
}

/// Fetches `url` with python3 in the guest: the body, or why it failed.
fn guest_fetch(d: &Daemon, id: &str, url: &str) -> Result<String, String> {
    let py = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())";
    let v = d.sh(id, &format!("python3 -c '{py}' {url}"));
    if v["exit_code"] == 0 {
        Ok(stdout(&v))
    } else {
        Err(v.to_string())
    }
}

/// Size of the guest's /workspace file system in KiB.
fn workspace_kib(d: &Daemon, id: &str) -> u64 {
    let v = d.sh(id, "df -k /workspace | awk 'NR==2{print $2}'");
    let kib: u64 = stdout(&v).parse().unwrap_or_else(|_| panic!("{v}"));
    // df counts what ext4 can give (minus its own metadata): within 5%.
    let want = ["1", "2"].iter().map(|g| g.parse::<u64>().unwrap() << 20).min_by_key(|w| w.abs_diff(kib)).unwrap();
    assert!(kib.abs_diff(want) < want / 20, "{kib} KiB is not a whole GiB disk: {v}");
    want
}

/// `POST /execute` of a shell script from any thread.
fn post_exec(url: &str, id: &str, script: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let body = json!({"command": "/bin/sh", "args": ["-c", script]}).to_string();
    let mut resp = agent.post(format!("{url}/sandboxes/{id}/execute")).content_type("application/json").send(body.as_bytes()).unwrap();
    let status = resp.status().as_u16();
    (status, serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap_or(Value::Null))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

//! What a sandbox cannot do: see the host's processes, write outside its
//! own layers and mounts, exceed its size class (memory, pids), read host
//! secrets. And that size classes really are cgroup limits (for a VM: the
//! host cgroup its QEMU runs in, and the guest's own pids cgroup).

use std::path::PathBuf;

use serde_json::json;

use crate::support::{not_on_vm, Daemon};

#[test]
fn cannot_see_host_processes() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "pidns", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    let v = d.sh(&id, "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done");
    let cmdlines = v["stdout"].as_str().unwrap();
    assert!(!cmdlines.contains("--api"), "the daemon is visible inside: {cmdlines}");
    assert!(!cmdlines.contains("/it-"), "the test runner is visible inside: {cmdlines}");
    // A VM's own kernel threads (children of kthreadd, pid 2) aside.
    let ps = if crate::support::on_vm() { "ps --ppid 2 -p 2 --deselect --no-headers | wc -l" } else { "ps -e --no-headers | wc -l" };
    let n = d.sh(&id, ps)["stdout"].as_str().unwrap().trim().parse::<u32>().unwrap();
    assert!(n < 10, "a fresh sandbox shows only its own few processes, got {n}");
    // Signalling a host pid number goes nowhere (it does not exist in here).
    let me = std::process::id();
    let v = d.sh(&id, &format!("kill -0 {me} 2>/dev/null && echo visible || echo gone"));
    if me > 100 {
        assert_eq!(v["stdout"], "gone\n");
    }
}

/// A root daemon's default data dir is `~/.heyo`, i.e. under `/root`
/// (mode 0700), which a sandbox's mapped root cannot traverse, and a data
/// dir made by `mktemp -d` is 0700 itself: sandboxes there must still come
/// up, and nothing in the sandbox names the data dir.
#[test]
fn a_data_dir_under_a_private_directory_works() {
    let home = tempfile::Builder::new().prefix("heyvm-private-home-").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(home.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // No warm sandbox: it would have started before the chmod below.
    let Some(d) = Daemon::start_in(home.path(), &[("HEYVM_POOL_SIZE", "0")]) else { return };
    // The data dir itself private too, as `mktemp -d` makes it.
    std::fs::set_permissions(d.data.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let sb = d.create(json!({"name": "private-home", "size_class": "micro"}));
    assert_eq!(sb["status"], "running", "{sb}");
    let id = sb["id"].as_str().unwrap().to_string();
    assert_eq!(d.sh(&id, "echo ok > /workspace/f && cat /workspace/f")["stdout"], "ok\n");
    let mounts = d.sh(&id, "cat /proc/self/mountinfo")["stdout"].as_str().unwrap().to_string();
    let home_name = home.path().file_name().unwrap().to_str().unwrap();
    assert!(!mounts.contains(home_name), "the sandbox's mount table names the data dir:\n{mounts}");
}

/// A command holds only its own stdin, stdout and stderr. The agent's
/// listening socket, were it inherited, would let any command (even one
/// run as another user) accept the host's next connection and answer in
/// the agent's name; descriptors the daemon itself inherited must not
/// reach a sandbox either. Tried from a shell, which reports its own open
/// descriptors, as root and as `nobody`, and with stdin open.
#[test]
fn commands_inherit_no_descriptors_but_their_own() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "fds", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    // `ls` lists the shell's descriptors (a glob would hold one open).
    let list = "ls /proc/$$/fd";
    assert_eq!(d.sh(&id, list)["stdout"], "0\n1\n2\n", "a command inherited the agent's descriptors");
    let (s, v) = d.post(&format!("/sandboxes/{id}/execute"), &json!({"command": "/bin/sh", "args": ["-c", list], "user": "nobody"}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["stdout"], "0\n1\n2\n", "a command run as nobody inherited the agent's descriptors: {v}");
    // The listening socket is the agent's fd 3 on bubblewrap: a command
    // that tries to accept on it finds nothing there.
    let v = d.sh(&id, "python3 -c 'import socket; s = socket.socket(fileno=3); print(s)' 2>&1 | tail -1");
    assert!(v["stdout"].as_str().unwrap().contains("Bad file descriptor"), "fd 3 is open in a command: {v}");
}

/// A descriptor the daemon inherited from its parent (a shell's, a CI
/// runner's) reaches nothing the daemon starts: not the sandbox's owner,
/// bwrap or agent, not QEMU, not a command.
#[test]
fn descriptors_the_daemon_inherited_reach_no_sandbox() {
    let marker = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    let file = std::fs::File::open(marker.path()).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let Some(d) = Daemon::start_leaking(fd) else { return };
    let id = d.create(json!({"name": "leak", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    assert_eq!(d.sh(&id, "ls /proc/$$/fd")["stdout"], "0\n1\n2\n");
    let daemon = d.pid().expect("the daemon's pid");
    let mut holders = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == std::process::id() || pid == daemon {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        if fds.flatten().any(|f| std::fs::read_link(f.path()).is_ok_and(|t| t == marker.path())) {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            holders.push(format!("{pid} {}", comm.trim()));
        }
    }
    assert!(holders.is_empty(), "processes the daemon started hold its inherited descriptor: {holders:?}");
}

#[test]
fn writes_stay_inside_the_sandbox() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "cow", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    let tag = id.clone();
    let v = d.sh(&id, &format!("echo x > /usr/heyvm-{tag} && echo x > /etc/heyvm-{tag} && echo x > /heyvm-{tag} && cat /usr/heyvm-{tag}"));
    assert_eq!(v["stdout"], "x\n", "the copy-on-write layer is writable inside: {v}");
    for p in [format!("/usr/heyvm-{tag}"), format!("/etc/heyvm-{tag}"), format!("/heyvm-{tag}")] {
        assert!(!std::path::Path::new(&p).exists(), "{p} leaked to the host");
    }
    // Deleting a host file inside only hides it in the sandbox.
    let v = d.sh(&id, "rm -f /etc/os-release && test ! -e /etc/os-release && echo removed");
    assert_eq!(v["stdout"], "removed\n", "{v}");
    assert!(std::path::Path::new("/etc/os-release").exists(), "deleting inside removed the host's file");
    assert_eq!(d.sh(&id, "hostname")["stdout"], "cow\n", "hostname is the sandbox's");
    if not_on_vm("a VM's kernel interfaces and /etc/shadow are its own kernel's and image's, not the host's") {
        return;
    }
    // Kernel interfaces are not writable.
    let v = d.sh(&id, "echo 1 > /proc/sys/kernel/sysrq 2>/dev/null && echo wrote; mount -t tmpfs x /mnt 2>/dev/null && echo mounted; true");
    assert_eq!(v["stdout"], "", "{v}");
    // No shadow file.
    let v = d.sh(&id, "cat /etc/shadow 2>&1 | head -c 200");
    let out = v["stdout"].as_str().unwrap();
    assert!(!out.contains("root:"), "/etc/shadow is readable inside: {out}");
}

#[test]
fn mounts_honour_read_only() {
    let Some(d) = Daemon::start() else { return };
    let ro = tempfile::tempdir().unwrap();
    let rw = tempfile::tempdir().unwrap();
    std::fs::write(ro.path().join("given.txt"), "hello").unwrap();
    let id = d.create(json!({"name": "mnt", "size_class": "micro", "mounts": [
        {"host_path": ro.path(), "sandbox_path": "/data", "read_only": true},
        {"host_path": rw.path(), "sandbox_path": "/out", "read_only": false},
    ]}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = d.sh(&id, "cat /data/given.txt; echo; touch /data/new 2>/dev/null && echo wrote-ro; rm /data/given.txt 2>/dev/null && echo removed-ro; echo out > /out/made.txt");
    assert_eq!(v["stdout"], "hello\n", "{v}");
    assert!(!ro.path().join("new").exists());
    assert!(ro.path().join("given.txt").exists());
    assert_eq!(std::fs::read_to_string(rw.path().join("made.txt")).unwrap(), "out\n");
    // The file API honours read_only too.
    let (s, v) = d.upload_json(&id, "/data", "x.txt", b"no");
    assert_eq!((s, v["error"].as_str()), (403, Some("read_only_mount")), "{v}");
    let (s, v) = d.upload_multipart(&id, "/data", "x.txt", b"no");
    assert_eq!((s, v["error"].as_str()), (403, Some("read_only_mount")), "{v}");
    let (s, v) = d.delete(&format!("/sandboxes/{id}/files/given.txt?mount_path=/data"));
    assert_eq!((s, v["error"].as_str()), (403, Some("read_only_mount")), "{v}");
    assert!(!ro.path().join("x.txt").exists());
    let (s, body) = d.get_bytes(&format!("/sandboxes/{id}/files/given.txt?mount_path=/data"));
    assert_eq!((s, body.as_slice()), (200, &b"hello"[..]));
}

#[test]
fn micro_sandbox_allocating_1gib_is_oom_killed() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "oom", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    // dd with a 1 GiB block size fills a 1 GiB buffer from /dev/zero. A
    // VM's kernel refuses such a buffer outright (more than its 512 MiB of
    // RAM), so there memory is taken 16 MiB at a time until its OOM killer.
    let hog = if crate::support::on_vm() {
        json!({"command": "python3", "args": ["-c", "a = []\nwhile True: a.append(b'x' * (16 << 20))"], "timeout_secs": 120})
    } else {
        json!({"command": "dd", "args": ["if=/dev/zero", "of=/dev/null", "bs=1G", "count=1"], "timeout_secs": 60})
    };
    let (s, v) = d.post(&format!("/sandboxes/{id}/execute"), &hog);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["oom_killed"], true, "{v}");
    assert_ne!(v["exit_code"], 0, "{v}");
    assert!(v["output"].as_str().unwrap().contains("memory limit"), "the response says why: {v}");
    // The sandbox itself survives its command's OOM kill.
    assert_eq!(d.sh(&id, "echo alive")["stdout"], "alive\n");
    let (_, info) = d.get(&format!("/sandboxes/{id}"));
    assert_eq!(info["status"], "running");
    // A smaller allocation is fine.
    let v = d.sh(&id, "dd if=/dev/zero of=/dev/null bs=100M count=1 2>/dev/null && echo ok");
    assert_eq!((v["stdout"].as_str(), v["oom_killed"].as_bool()), (Some("ok\n"), Some(false)), "{v}");
}

/// A fork bomb stops at the size class's pids limit (micro: 256): a host
/// pids cgroup for bubblewrap; inside a VM, whose processes the host cannot
/// count, the guest's own pids cgroup that the agent puts every command in
/// (the agent stays outside it, so it can still end the bomb).
#[test]
fn fork_bomb_stops_at_the_pids_limit() {
    let Some(d) = Daemon::start() else { return };
    let vm = crate::support::on_vm();
    let id = d.create(json!({"name": "bomb", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    if vm {
        assert_eq!(d.sh(&id, "cat /sys/fs/cgroup/sandbox/pids.max")["stdout"], "256\n", "the guest's limit is micro's");
    }
    // Under TCG a micro VM (a quarter of a core, emulated) forks slowly:
    // give its bomb the time to reach the limit.
    let secs = if vm { 20 } else { 3 };
    let (s, v) = d.post(
        &format!("/sandboxes/{id}/execute"),
        &json!({"command": "/bin/sh", "args": ["-c", format!("f() {{ f | f & }}; f; sleep {secs}")], "timeout_secs": secs}),
    );
    assert_eq!(s, 200, "{v}");
    let events = if vm {
        d.sh(&id, "cat /sys/fs/cgroup/sandbox/pids.events")["stdout"].as_str().unwrap().trim().to_string()
    } else {
        Cgroup::find(&id).read("pids", "pids.events")
    };
    let max_hits: u64 = events.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(max_hits > 0, "the bomb ran into pids.max: {events}");
    if v["timed_out"] != true {
        // The exec's own shell could not fork `sleep` and exited before its
        // timeout; an exec's background processes outlive it by design, so
        // the bomb runs on, held at the limit. A forced stop ends it.
        eprintln!("the bomb's shell exited early ({v}): stopping the sandbox to end the bomb");
        assert_eq!(d.post(&format!("/sandboxes/{id}/force-stop"), &json!({})).0, 200);
        assert_eq!(d.post(&format!("/sandboxes/{id}/start"), &json!({})).0, 200);
    }
    // Everything of the bomb is gone once the exec's tree was killed, and
    // the sandbox and the daemon still work. (A VM's own kernel threads,
    // children of kthreadd, pid 2, aside.)
    let ps = if vm { "ps --ppid 2 -p 2 --deselect --no-headers | wc -l" } else { "ps -e --no-headers | wc -l" };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (s, v) = d.post(&format!("/sandboxes/{id}/execute"), &json!({"command": "/bin/sh", "args": ["-c", ps]}));
        if s == 200 && v["stdout"].as_str().unwrap_or("").trim().parse::<u32>().unwrap_or(999) < 10 {
            break;
        }
        if std::time::Instant::now() > deadline {
            // What survived, seen from the host (an exec may not fork).
            let procs = if vm { String::new() } else { Cgroup::find(&id).read("pids", "cgroup.procs") };
            let states: Vec<String> = procs
                .split_whitespace()
                .take(40)
                .map(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default().split(' ').take(5).collect::<Vec<_>>().join(" ")
                })
                .collect();
            let events = if vm { String::new() } else { Cgroup::find(&id).read("pids", "pids.events") };
            panic!("the bomb's processes did not die within 60 s: last exec {s} {v}; pids.events {events}; processes (pid comm state ppid pgid):\n{}", states.join("\n"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(d.sh(&id, "echo fine")["stdout"], "fine\n");
    assert_eq!(d.get("/health").0, 200);
    // The host can still fork.
    assert!(std::process::Command::new("true").status().unwrap().success());
}

/// A sandbox's cgroup directories on this host (v1 or v2).
pub(crate) struct Cgroup {
    v1: bool,
    id: String,
}

fn cgroup_mount(pred: impl Fn(&str, &str) -> bool) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mp = pre.split(' ').nth(4)?;
        let mut it = post.split(' ');
        let fstype = it.next()?;
        let opts = it.nth(1).unwrap_or("");
        pred(fstype, opts).then(|| PathBuf::from(mp))
    })
}

impl Cgroup {
    pub(crate) fn find(id: &str) -> Cgroup {
        let v1 = cgroup_mount(|t, o| t == "cgroup" && o.split(',').any(|x| x == "memory")).is_some();
        Cgroup { v1, id: id.into() }
    }

    pub(crate) fn dir(&self, controller: &str) -> PathBuf {
        if self.v1 {
            cgroup_mount(|t, o| t == "cgroup" && o.split(',').any(|x| x == controller)).expect("v1 controller").join("heyvm").join(&self.id)
        } else {
            cgroup_mount(|t, _| t == "cgroup2").expect("cgroup2").join("heyvm").join(&self.id)
        }
    }

    fn read(&self, controller: &str, file: &str) -> String {
        let p = self.dir(controller).join(file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string()
    }

    /// (memory bytes, cpu quota µs per 100 ms period, pids)
    fn limits(&self) -> (u64, u64, u64) {
        if self.v1 {
            assert_eq!(self.read("cpu", "cpu.cfs_period_us"), "100000");
            (
                self.read("memory", "memory.limit_in_bytes").parse().unwrap(),
                self.read("cpu", "cpu.cfs_quota_us").parse().unwrap(),
                self.read("pids", "pids.max").parse().unwrap(),
            )
        } else {
            let cpu = self.read("cpu", "cpu.max");
            let (q, p) = cpu.split_once(' ').unwrap();
            assert_eq!(p, "100000");
            (self.read("memory", "memory.max").parse().unwrap(), q.parse().unwrap(), self.read("pids", "pids.max").parse().unwrap())
        }
    }
}

/// A VM's QEMU runs in the sandbox's host cgroup: the size class's CPU
/// quota and pids, and its guest RAM plus QEMU's own overhead (256 MiB,
/// `heyvm_vm::cgroup::QEMU_OVERHEAD`) as the memory limit. Stop and
/// delete remove the cgroup; a start makes it with the class of then.
fn vm_size_class_is_a_host_cgroup(d: &Daemon) {
    const MIB: u64 = 1 << 20;
    const OVERHEAD: u64 = 256 * MIB;
    let id = d.create(json!({"name": "sized", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    let cg = Cgroup::find(&id);
    assert_eq!(cg.limits(), (512 * MIB + OVERHEAD, 25_000, 256), "micro");
    let qemu = d.qemu_pid(&id).expect("QEMU's pid file");
    for c in ["memory", "cpu", "pids"] {
        let procs = cg.read(c, "cgroup.procs");
        assert!(procs.lines().any(|p| p == qemu.to_string()), "QEMU ({qemu}) is not in the {c} cgroup: {procs}");
    }
    // Guest RAM is fixed while the VM runs; the class changes at the next start.
    assert_eq!(d.post(&format!("/sandboxes/{id}/stop"), &json!({})).0, 200);
    assert!(!cg.dir("memory").exists(), "stop removes the cgroup");
    let (s, v) = d.patch(&format!("/sandboxes/{id}"), &json!({"size_class": "mini"}));
    assert_eq!(s, 200, "{v}");
    let (s, v) = d.post(&format!("/sandboxes/{id}/start"), &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(cg.limits(), (1024 * MIB + OVERHEAD, 50_000, 512), "mini after start");
    assert_eq!(d.sh(&id, "echo still-running")["stdout"], "still-running\n");
    d.delete(&format!("/sandboxes/{id}"));
    for c in ["memory", "cpu", "pids"] {
        assert!(!cg.dir(c).exists(), "{c} cgroup left behind");
    }
}

#[test]
fn size_classes_are_cgroup_limits() {
    let Some(d) = Daemon::start() else { return };
    if crate::support::on_vm() {
        return vm_size_class_is_a_host_cgroup(&d);
    }
    let info = d.create(json!({"name": "sized", "size_class": "micro"}));
    let id = info["id"].as_str().unwrap().to_string();
    assert_eq!(info["size_class"], "micro");
    let cg = Cgroup::find(&id);
    const MIB: u64 = 1 << 20;
    assert_eq!(cg.limits(), (512 * MIB, 25_000, 256), "micro");
    // The sandbox's processes are in it.
    let procs = cg.read("pids", "cgroup.procs");
    assert!(!procs.is_empty(), "no process in the sandbox's cgroup");
    // PATCH size_class changes the limits live, in both directions.
    let classes: [(&str, u64, u64, u64); 6] = [
        ("mini", 1024 * MIB, 50_000, 512),
        ("small", 2048 * MIB, 100_000, 1024),
        ("medium", 4096 * MIB, 200_000, 2048),
        ("large", 8192 * MIB, 400_000, 4096),
        ("xlarge", 16384 * MIB, 800_000, 8192),
        ("micro", 512 * MIB, 25_000, 256),
    ];
    for (class, mem, cpu, pids) in classes {
        let (s, v) = d.patch(&format!("/sandboxes/{id}"), &json!({"size_class": class}));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["size_class"], class);
        assert_eq!(cg.limits(), (mem, cpu, pids), "{class}");
    }
    assert_eq!(d.sh(&id, "echo still-running")["stdout"], "still-running\n");
    // A stopped sandbox has no cgroup; it gets the new class at start.
    d.post(&format!("/sandboxes/{id}/stop"), &json!({}));
    assert!(!cg.dir("memory").exists(), "stop removes the cgroup");
    let (s, v) = d.patch(&format!("/sandboxes/{id}"), &json!({"size_class": "mini"}));
    assert_eq!(s, 200, "{v}");
    let (s, v) = d.post(&format!("/sandboxes/{id}/start"), &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(cg.limits(), (1024 * MIB, 50_000, 512), "mini after start");
    let (s, v) = d.patch(&format!("/sandboxes/{id}"), &json!({"size_class": "huge"}));
    assert_eq!(s, 400, "{v}");
    // Delete removes the cgroups.
    d.delete(&format!("/sandboxes/{id}"));
    for c in ["memory", "cpu", "pids"] {
        assert!(!cg.dir(c).exists(), "{c} cgroup left behind");
    }
}

/// On a VM the quota throttles QEMU, whose vCPU thread runs the loop.
#[test]
fn cpu_quota_throttles_a_busy_loop() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "busy", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    let cg = Cgroup::find(&id);
    let throttled = || -> u64 {
        cg.read("cpu", "cpu.stat").lines().find_map(|l| l.strip_prefix("nr_throttled ")).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    let before = throttled();
    // 25 ms of CPU per 100 ms period: a loop spinning for longer than that
    // must be throttled at least once.
    let v = d.sh(&id, "end=$(( $(date +%s) + 1 )); while [ $(date +%s) -le $end ]; do :; done; echo done");
    assert_eq!(v["stdout"], "done\n");
    assert!(throttled() > before, "the micro sandbox was never throttled: {}", cg.read("cpu", "cpu.stat"));
}

/// The agent runs protected from the OOM killer where the host lets it
/// (`oom_score_adj` -1000 needs CAP_SYS_RESOURCE), so a sandbox that runs
/// out of memory loses the command that used it, not the agent; every
/// command it starts gets the normal score back.
#[test]
fn commands_are_oom_killable_and_the_agent_is_not() {
    let Some(d) = Daemon::start() else { return };
    let id = d.create(json!({"name": "oom-score", "size_class": "micro"}))["id"].as_str().unwrap().to_string();
    let scores = d.sh(
        &id,
        "for p in /proc/[0-9]*; do echo \"$(cat $p/comm 2>/dev/null) $(cat $p/oom_score_adj 2>/dev/null) ${p#/proc/}\"; done; echo self $$",
    );
    let out = scores["stdout"].as_str().unwrap_or("").to_string();
    // A VM's agent is its init (pid 1, `init`).
    let agent = out
        .lines()
        .find(|l| l.starts_with("heyvm-agent ") || l.starts_with("init ") && l.ends_with(" 1"))
        .unwrap_or_else(|| panic!("no agent among the processes:\n{out}"));
    if agent.split(' ').nth(1) != Some("-1000") {
        eprintln!("SKIP: the agent is not OOM-protected here (the daemon lacks CAP_SYS_RESOURCE): {agent}");
        return;
    }
    let v = d.sh(&id, "cat /proc/self/oom_score_adj");
    assert_eq!(v["stdout"], "0\n", "a command kept the agent's protection: {v}\n{out}");
}

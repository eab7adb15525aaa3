//! Sandbox networking: `nat` and `none`, the egress policy, port isolation,
//! teardown and surviving a daemon crash.
//!
//! This machine has no internet access, so every "outbound" destination is
//! a test server this file starts itself: a network namespace of its own
//! (`hvtest-*`), joined to the host by a veth (`nt-*`) on a /30 of
//! 10.201.0.0/16, running `python3 -m http.server`. A sandbox reaches it the
//! way it would reach the internet: default route to the host, forwarding,
//! masquerade. Domain-name policies use a unique name added to /etc/hosts
//! for the test's duration (the host resolver reads /etc/hosts first).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::Daemon;

static NEXT: AtomicU32 = AtomicU32::new(0);
static HOSTS_LOCK: Mutex<()> = Mutex::new(());

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn ip_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An HTTP server in a namespace of its own, reachable from the host.
pub(crate) struct TestServer {
    ns: String,
    veth: String,
    pub(crate) addr: String,
    pub(crate) body: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub(crate) fn start() -> TestServer {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let slot = (std::process::id() * 16 + n) % 16384;
        let base = slot * 4;
        let (hi, lo) = (base / 256, base % 256);
        let host = format!("10.201.{hi}.{}", lo + 1);
        let addr = format!("10.201.{hi}.{}", lo + 2);
        let tag = format!("{:x}{n:x}", std::process::id());
        let (ns, veth) = (format!("hvtest-{tag}"), format!("nt-{tag}"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        ip(&["addr", "add", &format!("{host}/30"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/30"), "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let dir = tempfile::tempdir().unwrap();
        let body = format!("hello from {addr}");
        std::fs::write(dir.path().join("hello.txt"), &body).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-m", "http.server", "8000", "--bind", &addr])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = TestServer { ns, veth, addr, body, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&format!("{}:8000", s.addr).parse().unwrap(), Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "test server on {} did not come up", s.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}:8000/hello.txt", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip").args(["link", "del", &self.veth]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// A line in /etc/hosts for the test's duration.
struct HostsEntry {
    line: String,
}

impl HostsEntry {
    fn add(addr: &str, name: &str) -> HostsEntry {
        let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let line = format!("{addr} {name} # heyvm network test\n");
        let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap();
        hosts.push_str(&line);
        std::fs::write("/etc/hosts", hosts).unwrap();
        HostsEntry { line }
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        let _g = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
            let _ = std::fs::write("/etc/hosts", hosts.replacen(&self.line, "", 1));
        }
    }
}

/// Fetches `url` from inside the sandbox: Some(body) or None if it failed.
fn fetch(d: &Daemon, id: &str, url: &str) -> Option<String> {
    // The default VM image has python3 but no curl.
    let py = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())";
    let out = d.sh(id, &format!("if command -v curl >/dev/null; then curl -sS --max-time 5 {url}; else python3 -c '{py}' {url}; fi"));
    (out["exit_code"] == 0).then(|| out["stdout"].as_str().unwrap_or("").to_string())
}

/// Sends one UDP datagram (`from-guest`) from the sandbox, bound to
/// `source`, to port 9000 of the test server's namespace: what arrived
/// there within 5 s, if anything.
fn udp_from(d: &Daemon, id: &str, server: &TestServer, source: &str) -> Option<String> {
    use std::io::{BufRead, BufReader, Read};
    let recv = format!(
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('{}', 9000)); s.settimeout(5)\n\
         print('bound', flush=True)\n\
         try: print(s.recvfrom(100)[0].decode(), end='')\nexcept OSError: pass",
        server.addr
    );
    let mut listener =
        Command::new("ip").args(["netns", "exec", &server.ns, "python3", "-c", &recv]).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(listener.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "bound\n", "the UDP listener did not start");
    let send = format!(
        "python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('{source}', 0)); s.sendto(b'from-guest', ('{}', 9000))\"",
        server.addr
    );
    d.sh(id, &send);
    let mut got = String::new();
    out.read_to_string(&mut got).unwrap();
    let _ = listener.wait();
    Some(got).filter(|s| !s.is_empty())
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// The network objects on the host that belong to this sandbox: the
/// namespace and veth its `net.json` names (a spare network it took), else
/// the ones named after its id.
fn host_objects(d: &Daemon, sandbox_id: &str) -> Vec<String> {
    let net: Value = std::fs::read(d.data.path().join("sandboxes").join(sandbox_id).join("net.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let netns = net["netns"].as_str().map(String::from).unwrap_or_else(|| sandbox_id.to_string());
    let veth = net["veth"].as_str().map(String::from).unwrap_or_else(|| format!("hv-{}", &sandbox_id[3..]));
    let mut found: Vec<String> = ip_out(&["netns", "list"]).lines().filter(|l| l.contains(&netns)).map(String::from).collect();
    found.extend(ip_out(&["-o", "link", "show"]).lines().filter(|l| l.contains(veth.as_str())).map(String::from));
    found
}

/// The sandbox's host network namespace (`net:[inode]`): as seen from
/// inside, or for a VM, whose guest kernel has namespaces of its own (every
/// guest's first one has the same inode), the one its QEMU runs in.
fn sandbox_netns(d: &Daemon, id: &str) -> String {
    if crate::support::on_vm() {
        let qemu = d.qemu_pid(id).expect("QEMU's pid file");
        return std::fs::read_link(format!("/proc/{qemu}/ns/net")).unwrap().to_string_lossy().into_owned();
    }
    d.sh(id, "readlink /proc/self/ns/net")["stdout"].as_str().unwrap().trim().to_string()
}

/// Spare networks are made ahead of time and taken by first starts. Each
/// is brand new and never handed to a second sandbox, so what one sandbox
/// did with its network (a listening socket, an abstract unix socket, its
/// egress policy) is never in another's, neither while it runs nor after
/// it is gone; and a spare's own guard and NAT work like any network's.
#[test]
fn spare_networks_never_carry_one_sandboxs_state_into_another() {
    let Some(d) = Daemon::start() else { return };
    let server = TestServer::start();
    let listen = "python3 -c 'import socket,time\ns=socket.socket(socket.AF_UNIX); s.bind(\"\\0heyvm-leak-probe\"); s.listen()\nt=socket.socket(); t.bind((\"0.0.0.0\", 7777)); t.listen()\ntime.sleep(1000)'";
    let a = d.create(json!({"name": "spare-a", "deny_out": [format!("{}/32", server.addr)], "start_command": listen}));
    let aid = id(&a);
    d.wait_until("A's listeners", Duration::from_secs(10), || {
        d.sh(&aid, "grep -c heyvm-leak-probe /proc/net/unix; grep -ci ':1E61 ' /proc/net/tcp")["stdout"] == "1\n1\n"
    });
    assert_eq!(fetch(&d, &aid, &server.url()), None, "A's policy blocks the server");
    let a_names = host_objects(&d, &aid);
    assert_eq!(a_names.len(), 2, "{a_names:?}");

    let clean = |sid: &str| {
        let v = d.sh(sid, "grep -c heyvm-leak-probe /proc/net/unix; grep -ci ':1E61 ' /proc/net/tcp; true");
        assert_eq!(v["stdout"], "0\n0\n", "{sid} sees A's sockets: {v}");
        assert_eq!(fetch(&d, sid, &server.url()).as_deref(), Some(server.body.as_str()), "{sid} must not inherit A's policy");
    };
    let b = d.create(json!({"name": "spare-b"}));
    let bid = id(&b);
    assert_ne!(sandbox_netns(&d, &bid), sandbox_netns(&d, &aid));
    assert_ne!(b["guest_ip"], a["guest_ip"]);
    clean(&bid);
    let spares: Vec<Value> = [&aid, &bid]
        .iter()
        .filter_map(|s| std::fs::read(d.data.path().join("sandboxes").join(s).join("net.json")).ok())
        .map(|b| serde_json::from_slice::<Value>(&b).unwrap())
        .filter(|v| v["netns"].is_string())
        .collect();
    assert!(!spares.is_empty(), "first starts take spare networks (HEYVM_SPARES defaults to 4)");

    // After A is gone, its namespace is not recycled into the next sandbox.
    let (s, _) = d.delete(&format!("/sandboxes/{aid}"));
    assert_eq!(s, 200);
    assert!(host_objects(&d, &aid).is_empty() || !d.data.path().join("sandboxes").join(&aid).exists());
    for n in 0..3 {
        let c = d.create(json!({"name": format!("spare-c{n}")}));
        let cid = id(&c);
        assert!(host_objects(&d, &cid).iter().all(|o| !a_names.contains(o)), "C reuses A's network objects");
        clean(&cid);
    }
    // B (a spare or not) is unaffected by all of it.
    clean(&bid);
}

/// A pool of four /30s (`10.88.N.0/28`) no host interface has an address
/// in: a daemon that crashed in an earlier run may have left a spare in
/// any fixed one, and this test needs all four.
fn free_small_pool() -> String {
    let used = ip_out(&["-4", "-o", "addr"]);
    let start = std::process::id() % 256;
    (0..256)
        .map(|k| format!("10.88.{}.", (start + k) % 256))
        .find(|p| !used.contains(&format!(" {p}")))
        .map(|p| format!("{p}0/28"))
        .expect("a free 10.88.N.0/28")
}

/// How long a test waits for spares (and parked owners) to be made: they
/// are made at low priority, one at a time, and beside busy guests on a
/// 2-core host that takes a while.
const SPARES_PATIENCE: Duration = Duration::from_secs(90);

/// The spare network namespaces of the daemon on data dir `data`: named
/// `heyvm-s<8 hex>-<key>`, the key from its sandboxes directory (FNV-1a,
/// low 16 bits), and not yet taken. A sandbox that takes a spare keeps its
/// name and records it in its `net.json`; those are not spares any more.
fn spare_namespaces(data: &std::path::Path) -> Vec<String> {
    let dir = data.join("sandboxes");
    let key = dir.as_os_str().as_encoded_bytes().iter().fold(0x811c9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x01000193)) & 0xffff;
    let suffix = format!("-{key:04x}");
    let taken: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("net.json")).ok())
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok()?["netns"].as_str().map(String::from))
        .collect();
    ip_out(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("heyvm-s") && !n.starts_with("heyvm-sb-") && n.ends_with(&suffix))
        .filter(|n| !taken.iter().any(|t| t == n))
        .map(String::from)
        .collect()
}

/// Spare networks and parked owners a killed daemon left are removed by
/// the next daemon on the same data dir, and a stopped one leaves none.
#[test]
fn spares_are_cleaned_after_a_crash_and_at_shutdown() {
    let Some(mut d) = Daemon::start() else { return };
    let data = d.data.path().to_path_buf();
    let spares = || spare_namespaces(&data);
    d.wait_until("spares", SPARES_PATIENCE, || spares().len() == 4);
    let old = spares();
    d.restart();
    d.wait_until("the old spares to go and new ones to come", SPARES_PATIENCE, || {
        let now = spares();
        now.len() == 4 && old.iter().all(|n| !now.contains(n))
    });
    let sb = d.create(json!({"name": "after-crash"}));
    assert_eq!(d.sh(&id(&sb), "echo ok")["stdout"], "ok\n");
    let owners = parked_owners(d.pid().unwrap());
    d.terminate();
    assert_eq!(spares(), Vec::<String>::new(), "spares left after shutdown");
    let alive = |p: &&u32| std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| !s.contains(") Z"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while owners.iter().any(|p| alive(&p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<&u32> = owners.iter().filter(alive).collect();
    assert!(left.is_empty(), "parked owners left after shutdown: {left:?}");
}

/// The parked owners (cgroup v1 hosts) of a daemon: its children waiting
/// for a plan.
fn parked_owners(daemon: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let ppid = stat.rsplit_once(") ").and_then(|(_, r)| r.split(' ').nth(1)?.parse::<u32>().ok());
            ppid == Some(daemon)
                && std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("__sandbox_owner_parked"))
        })
        .collect()
}

/// Several daemons on one host (each on its own data dir; the test suite
/// runs many at once): one starting up removes only what a crashed daemon
/// of its own data dir left, never another live daemon's parked owners
/// (that once failed a start with "starting the parked sandbox owner:
/// Broken pipe").
#[test]
fn a_daemon_starting_leaves_other_daemons_parked_owners_alone() {
    let Some(a) = Daemon::start() else { return };
    let a_pid = a.pid().unwrap();
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        println!("skipping: parked owners exist on cgroup v1 hosts only");
        return;
    }
    a.wait_until("A's parked owners", SPARES_PATIENCE, || parked_owners(a_pid).len() == 4);
    let before = parked_owners(a_pid);
    let b = Daemon::start().expect("a second daemon");
    b.wait_until("B's parked owners", SPARES_PATIENCE, || parked_owners(b.pid().unwrap()).len() == 4);
    let after = parked_owners(a_pid);
    assert_eq!(after, before, "daemon B's start killed daemon A's parked owners");
    // And A's first starts still go through them.
    for n in 0..3 {
        let sb = a.create(json!({"name": format!("parked-{n}")}));
        assert_eq!(a.sh(&id(&sb), "echo ok")["stdout"], "ok\n");
    }
}

/// A stopped sandbox keeps its address: the spare networks made while it
/// is stopped never take the subnet its `net.json` recorded, even when the
/// pool has no other (a 4-subnet pool: one sandbox and three spares fill
/// it; a second sandbox takes a spare and the refill finds only the
/// stopped one's subnet free).
#[test]
fn spares_never_take_a_stopped_sandboxs_address() {
    let pool = free_small_pool();
    let Some(d) = Daemon::start_with(&[("HEYVM_NET_POOL", &pool), ("HEYVM_SPARES", "3"), ("HEYVM_POOL_SIZE", "0")]) else {
        return;
    };
    let prefix = pool.trim_end_matches("0/28");
    // Each create below waits for all three spares, so it takes one rather
    // than the pool's last free subnet (spares refill in the background, at
    // low priority).
    let spares = || spare_namespaces(d.data.path()).len();
    d.wait_until("three spares", SPARES_PATIENCE, || spares() == 3);
    let a = d.create(json!({"name": "keeps-address"}));
    let (aid, ip) = (id(&a), a["guest_ip"].as_str().expect("a nat address").to_string());
    assert!(ip.starts_with(prefix), "{ip} not in {pool}");
    d.wait_until("three spares again", SPARES_PATIENCE, || spares() == 3);
    let (s, v) = d.post(&format!("/sandboxes/{aid}/stop"), &json!({}));
    assert_eq!(s, 200, "{v}");
    let b = d.create(json!({"name": "takes-a-spare"}));
    assert_ne!(b["guest_ip"], a["guest_ip"]);
    // Give the refill its chance to (wrongly) take A's subnet.
    std::thread::sleep(Duration::from_secs(2));
    let (s, v) = d.post(&format!("/sandboxes/{aid}/start"), &json!({}));
    assert_eq!(s, 200, "{v}");
    let (_, again) = d.get(&format!("/sandboxes/{aid}"));
    assert_eq!(again["guest_ip"].as_str(), Some(ip.as_str()), "the stopped sandbox lost its address to a spare");
    assert_eq!(d.sh(&aid, "echo ok")["stdout"], "ok\n");
}

#[test]
fn nat_sandbox_reaches_a_server_and_none_sandbox_does_not() {
    let Some(d) = Daemon::start() else { return };
    let server = TestServer::start();
    let nat = d.create(json!({"name": "net-nat"}));
    assert_eq!(nat["network"], "nat");
    let guest_ip = nat["guest_ip"].as_str().expect("nat sandbox has a guest_ip").to_string();
    assert!(guest_ip.starts_with("10.89."), "{guest_ip}");
    assert_eq!(fetch(&d, &id(&nat), &server.url()).as_deref(), Some(server.body.as_str()));
    let addrs = d.sh(&id(&nat), "ip -4 -o addr show dev eth0");
    assert!(addrs["stdout"].as_str().unwrap().contains(&guest_ip), "{addrs}");
    // eth0's MTU follows the host's uplink (the interface of its default route).
    let uplink = ip_out(&["-o", "route", "show", "default"]);
    if let Some(dev) = uplink.split_whitespace().skip_while(|w| *w != "dev").nth(1) {
        let mtu = std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu")).unwrap();
        let link = d.sh(&id(&nat), "ip -o link show dev eth0");
        assert!(link["stdout"].as_str().unwrap().contains(&format!("mtu {} ", mtu.trim())), "{link} vs uplink {mtu}");
    }
    let tamper = d.sh(&id(&nat), "ip addr add 10.201.250.1/32 dev eth0");
    if crate::support::on_vm() {
        // A VM's root owns its kernel and takes the address; what must hold
        // is on the host side: only the sandbox's own address leaves.
        assert_eq!(tamper["exit_code"], 0, "{tamper}");
        assert_eq!(udp_from(&d, &id(&nat), &server, "10.201.250.1"), None, "a packet from a foreign address left the VM");
        assert_eq!(udp_from(&d, &id(&nat), &server, &guest_ip).as_deref(), Some("from-guest"), "its own address works");
    } else {
        // Root inside the sandbox cannot reconfigure its own network.
        assert_ne!(tamper["exit_code"], 0, "sandbox root changed its addresses: {tamper}");
    }

    let none = d.create(json!({"name": "net-none", "network": "none"}));
    assert_eq!(none["network"], "none");
    assert!(none["guest_ip"].is_null());
    assert_eq!(fetch(&d, &id(&none), &server.url()), None);
    let links = d.sh(&id(&none), "ls /sys/class/net 2>/dev/null || cat /proc/net/dev");
    assert!(!links["stdout"].as_str().unwrap().contains("eth0"), "{links}");
}

#[test]
fn allow_out_permits_only_listed_destinations() {
    let Some(d) = Daemon::start() else { return };
    let (a, b) = (TestServer::start(), TestServer::start());
    let sb = d.create(json!({"name": "net-allow", "allow_out": [format!("{}/30", a.addr)]}));
    assert_eq!(sb["allow_out"], json!([format!("{}/30", net30(&a.addr))]));
    assert_eq!(fetch(&d, &id(&sb), &a.url()).as_deref(), Some(a.body.as_str()));
    assert_eq!(fetch(&d, &id(&sb), &b.url()), None);
    // Loopback inside the sandbox is never subject to the policy.
    // (Polls: python's start-up alone can take over a second on a loaded
    // host; python rather than curl, which the default VM image lacks.)
    let lo = d.sh(
        &id(&sb),
        "python3 -m http.server 8001 --bind 127.0.0.1 >/dev/null 2>&1 & \
         python3 -c 'import time, urllib.request\nfor i in range(100):\n    try:\n        \
         print(urllib.request.urlopen(\"http://127.0.0.1:8001/\", timeout=5).status, end=\"\"); break\n    \
         except OSError: time.sleep(0.1)'",
    );
    assert_eq!(lo["stdout"], "200", "{lo}");
}

/// `10.201.x.y` -> the network address of its /30.
fn net30(addr: &str) -> String {
    let ip: std::net::Ipv4Addr = addr.parse().unwrap();
    std::net::Ipv4Addr::from(u32::from(ip) & !3).to_string()
}

#[test]
fn deny_out_blocks_even_when_allowed() {
    let Some(d) = Daemon::start() else { return };
    let (a, b) = (TestServer::start(), TestServer::start());
    let sb = d.create(json!({"name": "net-deny", "deny_out": [b.addr.clone()]}));
    assert_eq!(fetch(&d, &id(&sb), &a.url()).as_deref(), Some(a.body.as_str()));
    assert_eq!(fetch(&d, &id(&sb), &b.url()), None);
    let both = d.create(json!({"name": "net-deny2", "allow_out": ["10.201.0.0/16"], "deny_out": [b.addr.clone()]}));
    assert_eq!(fetch(&d, &id(&both), &a.url()).as_deref(), Some(a.body.as_str()));
    assert_eq!(fetch(&d, &id(&both), &b.url()), None);
}

#[test]
fn domain_names_in_a_policy_are_resolved_at_start() {
    let Some(d) = Daemon::start() else { return };
    let (a, b) = (TestServer::start(), TestServer::start());
    let (name_a, name_b) = (format!("a-{}.heyvm-test", std::process::id()), format!("b-{}.heyvm-test", std::process::id()));
    let _ha = HostsEntry::add(&a.addr, &name_a);
    let _hb = HostsEntry::add(&b.addr, &name_b);
    let deny = d.create(json!({"name": "net-dns-deny", "deny_out": [name_b.clone()]}));
    assert_eq!(fetch(&d, &id(&deny), &a.url()).as_deref(), Some(a.body.as_str()));
    assert_eq!(fetch(&d, &id(&deny), &b.url()), None);
    let allow = d.create(json!({"name": "net-dns-allow", "allow_out": [name_a.to_uppercase()]}));
    assert_eq!(allow["allow_out"], json!([name_a]));
    assert_eq!(fetch(&d, &id(&allow), &a.url()).as_deref(), Some(a.body.as_str()));
    assert_eq!(fetch(&d, &id(&allow), &b.url()), None);
    // A denied name that does not resolve fails the start (fail closed).
    let (s, v) = d.post("/sandboxes", &json!({"name": "net-dns-bad", "deny_out": ["no-such-host.invalid"]}));
    assert!(s >= 400, "{s} {v}");
    assert!(v["message"].as_str().unwrap_or("").contains("no-such-host.invalid"), "{v}");
}

#[test]
fn two_sandboxes_bind_the_same_port() {
    let Some(d) = Daemon::start() else { return };
    let (mut ids, mut ips) = (Vec::new(), Vec::new());
    for name in ["net-port-1", "net-port-2"] {
        let sb = d.create(
            json!({"name": name, "start_command": format!("echo {name} > /workspace/who && cd /workspace && python3 -m http.server 8080")}),
        );
        ids.push(id(&sb));
        ips.push(sb["guest_ip"].as_str().unwrap().to_string());
    }
    assert_ne!(ips[0], ips[1]);
    for (i, ip) in ips.iter().enumerate() {
        assert_eq!(host_get(&format!("http://{ip}:8080/who")).trim(), format!("net-port-{}", i + 1));
        // Each sees its own server on loopback.
        assert_eq!(fetch(&d, &ids[i], "http://127.0.0.1:8080/who").map(|s| s.trim().to_string()), Some(format!("net-port-{}", i + 1)));
    }
    // Sandboxes cannot reach each other through the host.
    assert_eq!(fetch(&d, &ids[0], &format!("http://{}:8080/who", ips[1])), None);
}

/// GETs `url` from the host, retrying while the server starts.
fn host_get(url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new("curl").args(["-s", "--max-time", "2", url]).output().unwrap();
        if out.status.success() && !out.stdout.is_empty() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(Instant::now() < deadline, "no answer from {url}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn teardown_leaves_nothing_behind_and_start_recreates() {
    let Some(d) = Daemon::start() else { return };
    let server = TestServer::start();
    let sb = d.create(json!({"name": "net-teardown", "deny_out": ["192.0.2.0/24"]}));
    let sid = id(&sb);
    assert_eq!(host_objects(&d, &sid).len(), 2, "expected a netns and a veth: {:?}", host_objects(&d, &sid));
    let first_ip = sb["guest_ip"].clone();

    d.heyvm_json(&["stop", &sid]);
    assert_eq!(host_objects(&d, &sid), Vec::<String>::new());
    assert!(d.get(&format!("/sandboxes/{sid}")).1["guest_ip"].is_null());
    let started = d.heyvm_json(&["start", &sid]);
    let info = d.get(&format!("/sandboxes/{sid}")).1;
    assert_eq!(info["guest_ip"], first_ip, "address is stable across stop/start: {started}");
    assert_eq!(fetch(&d, &sid, &server.url()).as_deref(), Some(server.body.as_str()));

    let (s, v) = d.post(&format!("/sandboxes/{sid}/force-stop"), &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(host_objects(&d, &sid), Vec::<String>::new());
    d.heyvm_json(&["start", &sid]);
    assert_eq!(host_objects(&d, &sid).len(), 2);
    let out = d.heyvm(&["rm", "-y", &sid]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(host_objects(&d, &sid), Vec::<String>::new());
}

#[test]
fn network_survives_daemon_kill_and_restart() {
    let Some(mut d) = Daemon::start() else { return };
    let server = TestServer::start();
    let sb = d.create(json!({"name": "net-survive", "start_command": "cd /workspace && echo alive > ok && python3 -m http.server 8080"}));
    let (sid, guest_ip) = (id(&sb), sb["guest_ip"].as_str().unwrap().to_string());
    d.restart();
    let info = d.get(&format!("/sandboxes/{sid}")).1;
    assert_eq!(info["status"], "running", "{info}");
    assert_eq!(info["guest_ip"], guest_ip.as_str());
    assert_eq!(fetch(&d, &sid, &server.url()).as_deref(), Some(server.body.as_str()));
    assert_eq!(host_get(&format!("http://{guest_ip}:8080/ok")).trim(), "alive");
}

#[test]
fn cli_flags_and_invalid_input() {
    let Some(d) = Daemon::start() else { return };
    let v = d.heyvm_json(&["create", "--name", "net-cli", "--network", "none", "--deny-out", "10.0.0.0/8", "--allow-out", "example.test"]);
    assert_eq!(v["network"], "none");
    assert_eq!(v["deny_out"], json!(["10.0.0.0/8"]));
    assert_eq!(v["allow_out"], json!(["example.test"]));
    let text = String::from_utf8(d.heyvm(&["get", "net-cli"]).stdout).unwrap();
    assert!(text.contains("none") && text.contains("10.0.0.0/8"), "{text}");
    for bad in [json!({"network": "bridge"}), json!({"allow_out": ["10.0.0.0/33"]}), json!({"deny_out": ["not a host"]})] {
        let (s, v) = d.post("/sandboxes", &bad);
        assert_eq!(s, 400, "{bad}: {v}");
        assert_eq!(v["error"], "invalid_request", "{v}");
    }
    let out = d.heyvm(&["create", "--network", "bridge", "--format", "json"]);
    assert!(!out.status.success());
}

/// `/dev/net/tun` opened by an unprivileged user for the test's duration
/// (Debian's udev makes it 0666; some VMs ship it 0600).
struct TunAccess {
    restore: Option<u32>,
}

impl TunAccess {
    fn grant() -> Option<TunAccess> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata("/dev/net/tun").ok()?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o006 == 0o006 {
            return Some(TunAccess { restore: None });
        }
        std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o666)).ok()?;
        Some(TunAccess { restore: Some(mode) })
    }
}

impl Drop for TunAccess {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if let Some(mode) = self.restore {
            let _ = std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(mode));
        }
    }
}

/// slirp4netns processes running as `uid`.
fn slirp_pids(uid: u32) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).starts_with("/usr/bin/slirp4netns") && e.metadata().is_ok_and(|m| m.uid() == uid) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn unprivileged_daemon_uses_slirp4netns() {
    if !crate::support::sandbox_support() {
        return;
    }
    let Some(_tun) = TunAccess::grant() else {
        eprintln!("SKIP: /dev/net/tun is missing");
        return;
    };
    const NOBODY: u32 = 65534;
    let server = TestServer::start();
    let data = tempfile::Builder::new().prefix("heyvm-test-nobody-").tempdir_in("/tmp").unwrap();
    std::os::unix::fs::chown(data.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let mut daemon = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", crate::support::BIN, "--api", "--port", "0"])
        .env("MVM_DATA_DIR", data.path())
        .env("HOME", data.path())
        .env_remove("JWT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(daemon.stdout.take().unwrap()), &mut banner).unwrap();
    let url = banner.split("http://").nth(1).and_then(|r| r.split_whitespace().next()).map(|a| format!("http://{a}")).expect("banner");
    let api = |method: &str, path: &str, body: &str| -> Value {
        let out = Command::new("curl")
            .args(["-s", "-X", method, "-H", "content-type: application/json", "-d", body, &format!("{url}{path}")])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let sb = api("POST", "/sandboxes", r#"{"name":"slirp"}"#);
        assert_eq!(sb["status"], "running", "{sb}");
        assert_eq!(sb["guest_ip"], "10.0.2.100", "{sb}");
        let run = api(
            "POST",
            "/sandboxes/slirp/execute",
            &json!({"command": "curl", "args": ["-sS", "--max-time", "5", server.url()]}).to_string(),
        );
        assert_eq!(run["stdout"], server.body.as_str(), "{run}");
        assert_eq!(slirp_pids(NOBODY).len(), 1);
        // A policy cannot be enforced without root: such a sandbox gets no network.
        let pol = api("POST", "/sandboxes", r#"{"name":"slirp-policy","deny_out":["10.0.0.0/8"]}"#);
        assert!(pol["guest_ip"].is_null(), "{pol}");
        let run = api(
            "POST",
            "/sandboxes/slirp-policy/execute",
            &json!({"command": "curl", "args": ["-sS", "--max-time", "5", server.url()]}).to_string(),
        );
        assert_ne!(run["exit_code"], 0, "{run}");
        let logs = api("GET", "/sandboxes/slirp-policy/logs", "");
        assert!(logs.to_string().contains("egress policy cannot be enforced"), "{logs}");
        api("DELETE", "/sandboxes/slirp", "");
        assert_eq!(slirp_pids(NOBODY), Vec::<u32>::new());
    }));
    for name in ["slirp", "slirp-policy"] {
        api("DELETE", &format!("/sandboxes/{name}"), "");
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

//! `nat` without root: slirp4netns (user-mode networking) attached to the
//! network namespace bwrap created. The sandbox gets `tap0` with
//! 10.0.2.100/24, a default route and outbound TCP/UDP through the
//! daemon's user; the host's loopback is not reachable. Runs in its own
//! session so it outlives a daemon crash; stopped by [`detach`].
//!
//! No egress policy here: the sandbox's root owns its namespace and could
//! undo any rule, so a sandbox with a policy gets `none` instead.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use heyvm_core::LaunchSpec;
use serde::{Deserialize, Serialize};

use super::error::{NetError, NetResult};
use crate::procs;

/// The address slirp4netns gives the sandbox with `--configure`.
pub const GUEST_IP: &str = "10.0.2.100";

#[derive(Serialize, Deserialize)]
struct SlirpFile {
    pid: i32,
}

pub(crate) fn pid_file(spec: &LaunchSpec) -> PathBuf {
    spec.paths.dir.join("slirp.json")
}

/// slirp4netns is installed and this user may open `/dev/net/tun` (often
/// root-only: then a non-root daemon's sandboxes get loopback only rather
/// than failing to start).
pub fn available() -> bool {
    // SAFETY: access(2) on a NUL-terminated path.
    let tun = unsafe { libc::access(c"/dev/net/tun".as_ptr(), libc::R_OK | libc::W_OK) } == 0;
    tun && procs::find_in_path("slirp4netns").is_some()
}

/// Waits for bwrap (`owner_pid`, which exec'd it) to create the sandbox's
/// network namespace, attaches slirp4netns and waits for the default route.
pub fn attach(spec: &LaunchSpec, owner_pid: i32) -> NetResult<()> {
    let mine = fs::read_link("/proc/self/ns/net").map_err(|e| NetError::io("reading", "/proc/self/ns/net", e))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let target = loop {
        let found = procs::children(owner_pid).into_iter().find(|c| fs::read_link(format!("/proc/{c}/ns/net")).is_ok_and(|ns| ns != mine));
        if let Some(c) = found {
            break c;
        }
        if Instant::now() > deadline {
            return Err(NetError::NamespaceTimeout("did not appear"));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // bwrap configures the namespace's loopback itself; slirp4netns brings
    // `lo` up too, and if it wins that race bwrap's own address request
    // fails and the sandbox never starts. bwrap forks the command (or, as
    // pid 1, execs it) only after that setup, so wait for either.
    while !bwrap_setup_done(target) {
        if Instant::now() > deadline {
            return Err(NetError::NamespaceTimeout("was not set up in time"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let bin = procs::find_in_path("slirp4netns").ok_or(NetError::SlirpMissing)?;
    let log_path = spec.paths.dir.join("slirp.log");
    let log = fs::File::create(&log_path).map_err(|e| NetError::io("creating", &log_path, e))?;
    let mut cmd = Command::new(bin);
    cmd.args(["--configure", "--mtu=65520", "--disable-host-loopback", &target.to_string(), "tap0"]);
    cmd.stdin(Stdio::null()).stdout(log.try_clone().map_err(|e| NetError::io("duplicating", &log_path, e))?).stderr(log);
    // SAFETY: setsid is async-signal-safe; a session of its own keeps it
    // alive when the daemon dies.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| NetError::Spawn { prog: "slirp4netns".into(), source })?;
    let pid = child.id() as i32;
    let _ = fs::write(pid_file(spec), serde_json::to_vec(&SlirpFile { pid }).unwrap_or_default());
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    while !has_default_route(target) {
        if Instant::now() > deadline || !procs::alive_with(pid, "slirp4netns") {
            let log = fs::read_to_string(&log_path).unwrap_or_default().trim().to_string();
            return Err(NetError::SlirpFailed { log });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// bwrap's process in the new namespace has finished its own network setup:
/// it forked the sandbox's command or exec'd it.
fn bwrap_setup_done(pid: i32) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.trim() != "bwrap" || !procs::children(pid).is_empty()
}

fn has_default_route(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/net/route"))
        .is_ok_and(|r| r.lines().skip(1).any(|l| l.split_whitespace().nth(1) == Some("00000000")))
}

fn running_pid(spec: &LaunchSpec) -> Option<i32> {
    let f: SlirpFile = serde_json::from_slice(&fs::read(pid_file(spec)).ok()?).ok()?;
    procs::alive_with(f.pid, "slirp4netns").then_some(f.pid)
}

/// Stops slirp4netns for this sandbox, if running. Idempotent.
pub fn detach(spec: &LaunchSpec) {
    if let Some(pid) = running_pid(spec) {
        procs::sigkill(pid);
    }
    let _ = fs::remove_file(pid_file(spec));
}

pub fn guest_ip(spec: &LaunchSpec) -> Option<String> {
    running_pid(spec).map(|_| GUEST_IP.to_string())
}

//! 20,000 idle, unauthenticated TCP connections against the daemon. Before
//! the connection cap they exhausted its descriptors, and the reaper took
//! the failed liveness checks for dead sandboxes and killed them all.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::Daemon;

const FLOOD: usize = 20_000;

/// Room for the flood in this process (root may raise the hard limit).
fn raise_nofile(n: u64) {
    let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
    // SAFETY: setrlimit with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}

/// A non-blocking connect that stays pending or completes; never waited on.
fn open_idle(port: u16) -> Option<OwnedFd> {
    // SAFETY: plain socket calls on a descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_port = port.to_be();
        sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        libc::connect(fd, (&sa as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32);
        Some(owned)
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn idle_flood_leaves_sandboxes_running() {
    let Some(d) = Daemon::start() else { return };
    raise_nofile(FLOOD as u64 + 4096);
    let ids: Vec<String> =
        (0..2).map(|i| d.create(json!({"name": format!("flood{i}"), "size_class": "micro"}))["id"].as_str().unwrap().to_string()).collect();
    let pid = d.pid().expect("daemon pid");
    let flood: Vec<OwnedFd> = (0..FLOOD).filter_map(|_| open_idle(d.port)).collect();
    assert!(flood.len() > FLOOD * 9 / 10, "could only open {} connections", flood.len());
    // Several reaper passes while the flood is held.
    let mut most = 0;
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        most = most.max(open_fds(pid));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(most < 4096 + 512, "the daemon held {most} descriptors: no connection cap");
    drop(flood);
    d.wait_until("the daemon answers again", Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", d.port)).is_ok() && d.get("/health").0 == 200
    });
    for id in &ids {
        let (_, v) = d.get(&format!("/sandboxes/{id}"));
        assert_eq!(v["status"], "running", "the flood killed {id}: {v}");
        assert_eq!(d.sh(id, "echo alive")["stdout"], "alive\n");
    }
}

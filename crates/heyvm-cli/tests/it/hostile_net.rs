//! A `nat` sandbox reaches the internet through the host, but not the host
//! itself: not its services on 0.0.0.0 (through the gateway or any host
//! address), not link-local neighbours such as 169.254.169.254. Ports named
//! in HEYVM_ALLOW_HOST_PORTS stay reachable.

use std::net::{Ipv4Addr, TcpListener};

use serde_json::json;

use crate::support::Daemon;

/// A host service on 0.0.0.0 that accepts and closes.
fn host_service() -> u16 {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    port
}

fn outside_address() -> Option<String> {
    let out = std::process::Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&out.stdout).split_whitespace().find(|a| a.parse::<Ipv4Addr>().is_ok()).map(str::to_string)
}

#[test]
fn nat_sandboxes_cannot_reach_the_host() {
    let (closed, open) = (host_service(), host_service());
    let Some(d) = Daemon::start_with(&[("HEYVM_ALLOW_HOST_PORTS", &open.to_string())]) else { return };
    let sb = d.create(json!({"name": "natguard", "size_class": "micro"}));
    let id = sb["id"].as_str().unwrap().to_string();
    let Some(guest) = sb["guest_ip"].as_str().and_then(|g| g.parse::<Ipv4Addr>().ok()) else {
        return eprintln!("SKIP: no nat network here: {sb}");
    };
    let gateway = Ipv4Addr::from(u32::from(guest) - 1);
    let probe = |ip: &str, port: u16| -> String {
        let script = format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{ip}/{port}' 2>/dev/null && echo open || echo closed");
        d.sh(&id, &script)["stdout"].as_str().unwrap().trim().to_string()
    };
    let mut targets = vec![gateway.to_string()];
    targets.extend(outside_address());
    for ip in &targets {
        assert_eq!(probe(ip, closed), "closed", "the sandbox reached a host service at {ip}:{closed}");
        assert_eq!(probe(ip, open), "open", "HEYVM_ALLOW_HOST_PORTS={open} is not reachable at {ip}");
    }
    assert_eq!(probe("169.254.169.254", 80), "closed", "the sandbox reached link-local 169.254.169.254");
    // Name resolution (the resolver path it is given) still works when the host has it.
    let host_resolves = std::process::Command::new("getent").args(["hosts", "deb.debian.org"]).output().is_ok_and(|o| o.status.success());
    if host_resolves {
        let v = d.sh(&id, "getent hosts deb.debian.org >/dev/null && echo ok");
        assert_eq!(v["stdout"], "ok\n", "DNS broke inside: {v}");
    }
}

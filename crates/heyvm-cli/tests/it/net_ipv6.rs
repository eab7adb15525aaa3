//! IPv6 in a `nat` sandbox is no way around the egress policy. Bubblewrap:
//! link-local only, no route out, and root inside cannot give itself an
//! address or a route (the namespace is the host's). A VM: its guest owns
//! its kernel and may configure any address and route, but its packets end
//! in the sandbox's namespace, which forwards no IPv6 (see the README's
//! network section).

use std::process::Command;

use serde_json::json;

use crate::support::{on_vm, Daemon};

#[test]
fn attack_ipv6_is_no_way_around_the_egress_policy() {
    let Some(d) = Daemon::start() else { return };
    let sb = d.create(json!({"name": "v6", "allow_out": ["192.0.2.1"]}));
    let id = sb["id"].as_str().unwrap().to_string();
    let script = "grep -v -e '^00000000000000000000000000000001' -e '^fe80' /proc/net/if_inet6 2>/dev/null | wc -l; \
                  ip -6 route show default | wc -l; \
                  ip -6 addr add 2001:db8::5/64 dev eth0 2>/dev/null && echo added || echo refused; \
                  ip -6 route add default dev eth0 2>/dev/null && echo routed || echo refused; \
                  python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.settimeout(3); s.connect((\"2001:db8::1\", 80)); print(\"connected\")' 2>&1 | tail -1";
    let v = d.sh(&id, script);
    let out = v["stdout"].as_str().unwrap_or_default().to_string();
    let lines: Vec<&str> = out.lines().collect();
    // A VM's root configures its own kernel; bubblewrap's root cannot touch the host's namespace.
    let expected = if on_vm() { ["0", "0", "added", "routed"] } else { ["0", "0", "refused", "refused"] };
    assert_eq!(&lines[..4], expected, "{v}");
    let err = lines[4];
    assert!(
        ["unreachable", "not available", "No route", "timed out"].iter().any(|e| err.contains(e)),
        "an IPv6 connection went somewhere: {v}"
    );
    if on_vm() {
        // Where the guest's packets end: the sandbox's namespace, which
        // neither forwards IPv6 nor has an IPv6 route out.
        // Its namespace: the one its net.json names (a spare it took), else named after it.
        let net: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.data.path().join("sandboxes").join(&id).join("net.json")).unwrap_or_default())
                .unwrap_or_default();
        let want = net["netns"].as_str().unwrap_or(&id).to_string();
        let ns = String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout)
            .lines()
            .find(|l| l.contains(&want))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no namespace {want} for {id}"))
            .to_string();
        let inside = |args: &[&str]| {
            let o = Command::new("ip").args(["netns", "exec", &ns]).args(args).output().unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        assert_eq!(inside(&["cat", "/proc/sys/net/ipv6/conf/all/forwarding"]), "0");
        assert_eq!(inside(&["ip", "-6", "route", "show", "default"]), "");
    }
}

//! IPv6 in a `nat` sandbox: link-local only, no route out, and root inside
//! cannot give itself an address or a route (the namespace is the host's),
//! so IPv6 is no way around the egress policy. See the README's network
//! section for VMs (their IPv6 ends in the namespace, which forwards none).

use serde_json::json;

use crate::support::Daemon;

#[test]
fn attack_ipv6_is_no_way_around_the_egress_policy() {
    let Some(d) = Daemon::start() else { return };
    let sb = d.create(json!({"name": "v6", "backend_type": "bubblewrap", "allow_out": ["192.0.2.1"]}));
    let id = sb["id"].as_str().unwrap().to_string();
    let script = "grep -v -e '^00000000000000000000000000000001' -e '^fe80' /proc/net/if_inet6 2>/dev/null | wc -l; \
                  ip -6 route show default | wc -l; \
                  ip -6 addr add 2001:db8::5/64 dev eth0 2>/dev/null && echo added || echo refused; \
                  ip -6 route add default dev eth0 2>/dev/null && echo routed || echo refused; \
                  python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.settimeout(3); s.connect((\"2001:db8::1\", 80))' 2>&1 | tail -1";
    let v = d.sh(&id, script);
    let out = v["stdout"].as_str().unwrap_or_default().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..4], ["0", "0", "refused", "refused"], "{v}");
    assert!(lines[4].contains("unreachable") || lines[4].contains("not available"), "an IPv6 connection went somewhere: {v}");
}

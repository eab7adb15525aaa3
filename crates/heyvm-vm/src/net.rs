//! A VM's `nat` network. The bubblewrap backend's network module makes the
//! sandbox's namespace (veth `eth0` with the sandbox's /30 address, a
//! default route via the host end, masquerade on the host); for a VM that
//! address must belong to the guest, so inside the namespace `eth0` loses
//! it and joins a bridge with a tap device QEMU opens. The guest then
//! configures the same address and route itself (`heyvm.ip`, `heyvm.gw`).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The tap device QEMU opens inside the sandbox's namespace.
pub const TAP: &str = "tap0";

/// Moves the namespace's address from `eth0` to the guest: bridge `eth0`
/// and a new tap. Idempotent enough for a restart (a fresh namespace is
/// made on every start).
pub fn bridge_tap(netns: &str) -> Result<(), String> {
    let batch = format!(
        "addr flush dev eth0\n\
         link add br0 type bridge\n\
         link set eth0 master br0\n\
         tuntap add {TAP} mode tap\n\
         link set {TAP} master br0\n\
         link set {TAP} up\n\
         link set br0 up\n"
    );
    run_ip(&["-n", netns, "-batch", "-"], &batch)
}

/// MTU of `eth0` inside the namespace (the guest must match it).
pub fn eth0_mtu(netns: &str) -> Option<u32> {
    let out = Command::new("ip").args(["-n", netns, "-j", "link", "show", "eth0"]).output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(0)?.get("mtu")?.as_u64().map(|m| m as u32)
}

fn run_ip(args: &[&str], stdin: &str) -> Result<(), String> {
    let mut child = Command::new("ip")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("ip: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| format!("ip: {e}"))?;
    if !out.status.success() {
        return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// The gateway of a sandbox /30: the host end is the address below the guest's.
pub fn gateway_for(guest: &str) -> Option<String> {
    let ip: Ipv4Addr = guest.parse().ok()?;
    Some(Ipv4Addr::from(u32::from(ip).checked_sub(1)?).to_string())
}

/// Name servers for the guest: the host's, except loopback ones (a
/// loopback resolver on the host is not reachable from the guest).
pub fn host_nameservers() -> Vec<String> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let servers: Vec<String> = conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(|s| s.trim().to_string())
        .filter(|s| s.parse::<Ipv4Addr>().map(|a| !a.is_loopback()).unwrap_or(false))
        .collect();
    servers
}

/// A stable, locally administered MAC from the sandbox id.
pub fn mac_for(id: &str) -> String {
    let h = id.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
    let b = h.to_be_bytes();
    format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_and_mac() {
        assert_eq!(gateway_for("10.89.0.6").as_deref(), Some("10.89.0.5"));
        assert_eq!(gateway_for("nope"), None);
        let m = mac_for("sb-1a2b3c4d");
        assert!(m.starts_with("52:54:") && m.len() == 17);
        assert_ne!(m, mac_for("sb-1a2b3c4e"));
    }
}

//! A VM's `nat` network. The bubblewrap backend's network module makes the
//! sandbox's namespace (veth `eth0` with the sandbox's /30 address, a
//! default route via the host end, masquerade on the host); for a VM that
//! address must belong to the guest. Inside the namespace `eth0` gives it
//! up and the namespace becomes a router between `eth0` and a tap device
//! QEMU opens: a host route to the guest's address via the tap, proxy ARP
//! on both sides (the guest's ARP for its gateway and the host's ARP for
//! the guest are answered by the namespace), forwarding on. The guest then
//! configures the same address and route itself (`heyvm.ip`, `heyvm.gw`).
//!
//! Routing rather than bridging puts every guest packet through the
//! namespace's IP `forward` hook, where the egress policy (an nftables
//! table with connection tracking, [`apply_policy`]) is enforced on the
//! host side: nothing inside the guest can reach the namespace's rules.

use std::net::Ipv4Addr;

use heyvm_backends::net::tool;

use crate::error::{VmError, VmResult};

/// The tap device QEMU opens inside the sandbox's namespace.
pub const TAP: &str = "tap0";
/// The namespace's own address on the tap: the source of the ICMP
/// "administratively prohibited" answers the guest gets for rejected
/// packets (link-local, never routed).
const TAP_ADDR: &str = "169.254.77.1";

/// Turns the namespace into the guest's router (see the module docs).
/// Idempotent enough for a restart (a fresh namespace is made on every start).
pub fn route_tap(netns: &str, guest: &str, gateway: &str) -> VmResult<()> {
    let batch = format!(
        "addr flush dev eth0\n\
         route replace {gateway}/32 dev eth0 scope link\n\
         route replace default via {gateway} dev eth0 onlink\n\
         tuntap add {TAP} mode tap\n\
         addr add {TAP_ADDR}/32 dev {TAP}\n\
         link set {TAP} up\n\
         route replace {guest}/32 dev {TAP}\n"
    );
    tool::run("ip", &["-n", netns, "-batch", "-"], Some(&batch)).map_err(VmError::Route)?;
    let sysctls = [
        "net/ipv4/ip_forward=1".to_string(),
        "net/ipv4/conf/eth0/proxy_arp=1".into(),
        format!("net/ipv4/conf/{TAP}/proxy_arp=1"),
        // The guest must not learn other routes from the namespace.
        "net/ipv4/conf/all/send_redirects=0".into(),
        format!("net/ipv4/conf/{TAP}/send_redirects=0"),
    ];
    sysctls_in(netns, &sysctls)
}

/// The namespace forwards only packets from the guest's own address: the
/// guest's root may give itself any address (it owns its kernel), but
/// packets from it would leave masqueraded like the sandbox's own, and the
/// answers to an address of another sandbox's subnet would go to that
/// sandbox. Loaded with the routes, before QEMU starts.
pub fn guard_source(netns: &str, guest: &str) -> VmResult<()> {
    let script = format!(
        "table ip heyvm_vm_source {{\n chain forward {{\n  type filter hook forward priority filter - 10; policy accept;\n  \
         iifname \"{TAP}\" ip saddr != {guest} drop\n }}\n}}\n"
    );
    apply_policy(netns, &script)
}

/// Loads the egress policy's nftables script (filtering the namespace's
/// `forward` hook) into the namespace.
pub fn apply_policy(netns: &str, script: &str) -> VmResult<()> {
    tool::run("ip", &["netns", "exec", netns, "nft", "-f", "-"], Some(script)).map(|_| ()).map_err(VmError::Policy)
}

/// Writes `/proc/sys/KEY=VALUE` settings as seen from inside the namespace
/// (one process for all of them).
fn sysctls_in(netns: &str, settings: &[String]) -> VmResult<()> {
    let script = "for kv; do echo \"${kv#*=}\" > \"/proc/sys/${kv%%=*}\" || exit 1; done";
    let mut args = vec!["netns", "exec", netns, "sh", "-c", script, "sh"];
    args.extend(settings.iter().map(String::as_str));
    tool::run("ip", &args, None).map(|_| ()).map_err(VmError::Sysctl)
}

/// MTU of `eth0` inside the namespace (the guest must match it).
pub fn eth0_mtu(netns: &str) -> Option<u32> {
    let v = tool::ip_json(&["-n", netns, "link", "show", "eth0"]).ok()?;
    v.get(0)?.get("mtu")?.as_u64().map(|m| m as u32)
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

//! Host-side plumbing, done with `ip` (iproute2) and `nft` (nftables):
//! the per-sandbox namespace and veth pair, and the host-wide NAT table.

use std::path::Path;

use super::error::{NetError, NetResult};
use super::pool::{self, Subnet};
pub use super::tool::{ip_json, run, tools_present};
use super::NetNames;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// The host-wide nftables table heyvm owns (masquerade + isolation).
pub const HOST_TABLE: &str = "heyvm";

/// Enables forwarding and (re)loads the host table atomically: sandboxes'
/// traffic is masqueraded behind the host, and sandboxes cannot reach one
/// another through the host. The content is constant, so concurrent
/// daemons loading it agree.
pub fn ensure_host_nat() -> NetResult<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| NetError::io("enabling IPv4 forwarding in", "/proc/sys/net/ipv4/ip_forward", e))?;
    let (base, prefix) = pool::pool();
    let script = format!(
        "table ip {HOST_TABLE} {{}}\n\
         delete table ip {HOST_TABLE}\n\
         table ip {HOST_TABLE} {{\n\
           chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
             ip saddr {base}/{prefix} oifname != \"hv-*\" masquerade\n\
           }}\n\
           chain forward {{ type filter hook forward priority filter; policy accept;\n\
             iifname \"hv-*\" oifname \"hv-*\" drop\n\
           }}\n\
         }}\n"
    );
    run("nft", &["-f", "-"], Some(&script)).map(|_| ())
}

/// Creates the namespace and veth pair and configures both ends.
pub fn create(names: &NetNames, s: &Subnet) -> NetResult<()> {
    let NetNames { netns, veth } = names;
    // Match the uplink so the sandbox never sends frames the host must
    // fragment or drop (this VM's uplink is 1400, not 1500).
    let mtu = uplink_mtu().map(|m| format!(" mtu {m}")).unwrap_or_default();
    let host_batch = format!(
        "netns add {netns}\n\
         link add {veth}{mtu} type veth peer name eth0{mtu} netns {netns}\n\
         addr add {}/30 dev {veth}\n\
         link set {veth} up\n",
        s.host
    );
    run("ip", &["-batch", "-"], Some(&host_batch))?;
    let ns_batch = format!(
        "link set lo up\n\
         addr add {}/30 dev eth0\n\
         link set eth0 up\n\
         route add default via {}\n",
        s.guest, s.host
    );
    run("ip", &["-n", netns, "-batch", "-"], Some(&ns_batch)).map(|_| ())
}

/// MTU of the interface carrying the host's IPv4 default route.
fn uplink_mtu() -> Option<u32> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let dev = routes
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&"00000000"))?
        .first()?
        .to_string();
    std::fs::read_to_string(Path::new("/sys/class/net").join(dev).join("mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|m| (576..=65535).contains(m))
}

/// Deletes the veth pair and the namespace, skipping what is already gone.
pub fn destroy(names: &NetNames) {
    if Path::new("/sys/class/net").join(&names.veth).exists() {
        // Its guard table lives exactly as long as the veth (a leftover
        // one is replaced when the veth is created again).
        super::hostguard::remove(&names.veth);
        if let Err(e) = run("ip", &["link", "del", &names.veth], None) {
            tracing::warn!(veth = %names.veth, error = %e, "could not delete veth");
        }
    }
    if names.netns_path().exists() {
        if let Err(e) = run("ip", &["netns", "del", &names.netns], None) {
            tracing::warn!(netns = %names.netns, error = %e, "could not delete network namespace");
        }
    }
}

/// The sandbox sees the host's /etc through an overlay, so its resolver
/// config is the host's. A symlinked host resolv.conf (systemd-resolved,
/// resolvconf) would dangle inside, so copy its content into the
/// sandbox's upper layer once, unless the sandbox already has its own.
pub fn ensure_resolv_conf(upper: &Path) {
    let host = Path::new("/etc/resolv.conf");
    let mine = upper.join("etc/resolv.conf");
    if host.is_symlink() && mine.symlink_metadata().is_err() {
        if let Ok(content) = std::fs::read(host) {
            let _ = std::fs::write(&mine, content);
        }
    }
}

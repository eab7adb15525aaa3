//! Host-side plumbing, in-process: the per-sandbox namespace and veth
//! pair over netlink ([`super::netlink`], [`super::netns`]) and the
//! host-wide NAT table through libnftables ([`super::nft`]).

use std::os::fd::AsFd;
use std::path::Path;

use super::error::{NetError, NetResult};
use super::netlink::Netlink;
pub use super::netns::NETNS_DIR;
pub use super::nft::tools_present;
use super::pool::Subnet;
pub use super::tool::run;
use super::{netns, NetNames};

/// The host-wide nftables table heyvm owns (masquerade + isolation).
pub const HOST_TABLE: &str = "heyvm";

/// Enables forwarding and returns the nftables script that (re)loads the
/// host table atomically: sandboxes' traffic is masqueraded behind the
/// host, and sandboxes cannot reach one another through the host. The
/// content is constant, so concurrent daemons loading it agree: traffic is
/// told by the interface it came in on (every sandbox's host end is an
/// `hv-*` veth), never by the daemon's address pool (a daemon with another
/// `HEYVM_NET_POOL` reloading a pool-based table took NAT away from the
/// other daemons' sandboxes). Loaded in the same transaction as the
/// sandbox's guard table ([`super::hostguard`]).
pub fn host_nat_script() -> NetResult<String> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| NetError::io("enabling IPv4 forwarding in", "/proc/sys/net/ipv4/ip_forward", e))?;
    Ok(format!(
        "table ip {HOST_TABLE} {{}}\n\
         delete table ip {HOST_TABLE}\n\
         table ip {HOST_TABLE} {{\n\
           chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
             iifname \"hv-*\" oifname != \"hv-*\" masquerade\n\
           }}\n\
           chain forward {{ type filter hook forward priority filter; policy accept;\n\
             iifname \"hv-*\" oifname \"hv-*\" drop\n\
           }}\n\
         }}\n"
    ))
}

/// Creates the namespace and veth pair and configures both ends.
pub fn create(names: &NetNames, s: &Subnet) -> NetResult<()> {
    let NetNames { netns, veth } = names;
    let nl = |what: &'static str| move |source| NetError::Netlink { what, source };
    let (ns, mut inside) = netns::create(netns).map_err(nl("creating the network namespace"))?;
    let mut outside = Netlink::open().map_err(nl("opening a netlink socket"))?;
    // Match the uplink so the sandbox never sends frames the host must
    // fragment or drop (this VM's uplink is 1400, not 1500).
    outside.add_veth(veth, "eth0", ns.as_fd(), uplink_mtu()).map_err(nl("creating the veth pair"))?;
    outside.add_addr(veth, s.host, 30).map_err(nl("addressing the host end"))?;
    outside.set_up(veth).map_err(nl("bringing the host end up"))?;
    inside.add_addr("eth0", s.guest, 30).map_err(nl("addressing the sandbox end"))?;
    inside.set_up("eth0").map_err(nl("bringing the sandbox end up"))?;
    inside.add_default_route(s.host).map_err(nl("adding the default route"))
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
    let t0 = std::time::Instant::now();
    let mut guard_us = 0;
    if Path::new("/sys/class/net").join(&names.veth).exists() {
        // Its guard table lives exactly as long as the veth (a leftover
        // one is replaced when the veth is created again).
        super::hostguard::remove(&names.veth);
        guard_us = t0.elapsed().as_micros() as u64;
        let deleted = Netlink::open().and_then(|mut n| n.del_link(&names.veth));
        if let Err(e) = deleted.or_else(|e| if e.raw_os_error() == Some(libc::ENODEV) { Ok(()) } else { Err(e) }) {
            tracing::warn!(veth = %names.veth, error = %e, "could not delete veth");
        }
    }
    let veth_us = t0.elapsed().as_micros() as u64;
    if names.netns_path().exists() {
        if let Err(e) = netns::delete(&names.netns) {
            tracing::warn!(netns = %names.netns, error = %e, "could not delete network namespace");
        }
    }
    tracing::debug!(netns = %names.netns, guard_us, veth_us, total_us = t0.elapsed().as_micros() as u64, "network destroyed (µs since start)");
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

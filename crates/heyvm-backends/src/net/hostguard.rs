//! Keeps a `nat` sandbox off the host itself. Routing to the internet goes
//! through the host, which makes every host service bound to `0.0.0.0` (or
//! to the veth's address, or another sandbox's gateway) reachable from the
//! sandbox, and the host's link-local neighbours (cloud metadata at
//! 169.254.169.254) too. Each sandbox gets a small nftables table of its own
//! (`inet heyvm-in-<veth>`), keyed by its veth, that rejects:
//!
//! * everything arriving from the sandbox for the host (the `input` hook:
//!   any host address, IPv4 or IPv6), except replies to connections the
//!   host opened, the DNS servers the sandbox is given when they live on
//!   the host, and the ports named in `HEYVM_ALLOW_HOST_PORTS`;
//! * anything it sends towards link-local addresses (the `forward` hook).
//!
//! A table per sandbox (not rules in the shared `heyvm` table) because the
//! shared one is reloaded whole by every daemon on this host, and allowed
//! ports are a per-daemon setting. It is removed with the veth.

/// The table's name for a veth.
pub fn table(veth: &str) -> String {
    format!("heyvm-in-{veth}")
}

/// `HEYVM_ALLOW_HOST_PORTS`: comma- or space-separated port numbers.
pub fn allowed_ports() -> Vec<u16> {
    heyvm_core::config::string(heyvm_core::config::ALLOW_HOST_PORTS)
        .unwrap_or_default()
        .split([',', ' '])
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// IPv4 name servers from the resolver configuration the sandbox sees.
fn name_servers() -> Vec<std::net::Ipv4Addr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    conf.lines().filter_map(|l| l.trim().strip_prefix("nameserver")).filter_map(|a| a.trim().parse().ok()).collect()
}

/// The nftables script for one sandbox's veth.
pub fn script(veth: &str, ports: &[u16], dns: &[std::net::Ipv4Addr]) -> String {
    let t = table(veth);
    let mut input = format!("iifname \"{veth}\" ct state established,related accept\n");
    if !dns.is_empty() {
        let list = dns.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
        input += &format!("iifname \"{veth}\" ip daddr {{ {list} }} meta l4proto {{ tcp, udp }} th dport 53 accept\n");
    }
    if !ports.is_empty() {
        let list = ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
        input += &format!("iifname \"{veth}\" meta l4proto {{ tcp, udp }} th dport {{ {list} }} accept\n");
    }
    // Refused at once (not dropped), so clients fail fast.
    input +=
        &format!("iifname \"{veth}\" meta l4proto tcp reject with tcp reset\niifname \"{veth}\" reject with icmpx type admin-prohibited\n");
    format!(
        "table inet {t} {{}}\n\
         delete table inet {t}\n\
         table inet {t} {{\n\
           chain input {{ type filter hook input priority filter - 1; policy accept;\n{input}}}\n\
           chain forward {{ type filter hook forward priority filter - 1; policy accept;\n\
             iifname \"{veth}\" ip daddr 169.254.0.0/16 reject with icmpx type admin-prohibited\n\
             iifname \"{veth}\" ip6 daddr fe80::/10 reject with icmpx type admin-prohibited\n\
           }}\n\
         }}\n"
    )
}

/// The script that loads (or reloads) the sandbox's table.
pub fn install_script(veth: &str) -> String {
    script(veth, &allowed_ports(), &name_servers())
}

/// Removes the sandbox's table if present.
pub fn remove(veth: &str) {
    if let Err(e) = super::nft_delete::delete_table(super::nft_delete::INET, &table(veth)) {
        tracing::warn!(veth, error = %e, "could not remove the host guard table");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_names_the_veth_ports_and_dns() {
        let s = script("hv-0123abcd0001", &[8080, 53], &["192.0.2.1".parse().unwrap()]);
        assert!(s.contains("table inet heyvm-in-hv-0123abcd0001 {"));
        assert!(s.contains("th dport { 8080, 53 } accept"));
        assert!(s.contains("ip daddr { 192.0.2.1 }"));
        assert!(s.contains("169.254.0.0/16 reject"));
        assert!(script("hv-x", &[], &[]).contains("reject with tcp reset"));
    }
}

//! The egress policy, enforced by an nftables table inside the sandbox's
//! network namespace (which the sandbox cannot modify: the namespace
//! belongs to the host's user namespace).
//!
//! Semantics, for new outbound connections and datagrams (replies to
//! connections made *into* the sandbox, and loopback traffic, always pass):
//! * `deny_out` entries are always rejected.
//! * If `allow_out` is non-empty, only its entries are reachable, everything
//!   else is rejected, DNS servers included unless listed.
//! * Domain names are resolved (host resolver: /etc/hosts, then DNS) when
//!   the sandbox starts; the addresses found are pinned until the next
//!   start. An `allow_out` name that does not resolve is skipped with a
//!   warning; a `deny_out` name that does not resolve fails the start
//!   (fail closed).
//!
//! Rejected packets get an ICMP "administratively prohibited", so
//! connections fail at once instead of timing out.

use std::net::{IpAddr, ToSocketAddrs};

use heyvm_core::backend::NetworkSpec;
use heyvm_core::egress::EgressTarget;

use super::error::{NetError, NetResult, PolicyEntryError};

/// The nftables table name inside each sandbox's namespace.
pub const TABLE: &str = "heyvm_egress";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// `addr/prefix` strings.
    pub allow: Vec<(IpAddr, u8)>,
    pub deny: Vec<(IpAddr, u8)>,
    /// Whether an allow list was given (even if none of it resolved).
    pub allow_only: bool,
}

/// Resolves the policy's names. None when there is no policy at all.
pub fn resolve(net: &NetworkSpec) -> NetResult<Option<Rules>> {
    if net.allow_out.is_empty() && net.deny_out.is_empty() {
        return Ok(None);
    }
    let mut rules = Rules { allow_only: !net.allow_out.is_empty(), ..Rules::default() };
    for e in &net.allow_out {
        match expand(e) {
            Ok(nets) => rules.allow.extend(nets),
            Err(why) => tracing::warn!(entry = %e, "allow_out entry skipped: {why}"),
        }
    }
    for e in &net.deny_out {
        rules.deny.extend(expand(e).map_err(|reason| NetError::DenyEntry { entry: e.clone(), reason })?);
    }
    rules.allow.dedup();
    rules.deny.dedup();
    Ok(Some(rules))
}

fn expand(entry: &str) -> Result<Vec<(IpAddr, u8)>, PolicyEntryError> {
    match EgressTarget::parse(entry)? {
        EgressTarget::Net(a, p) => Ok(vec![(a, p)]),
        EgressTarget::Name(n) => {
            let mut out: Vec<(IpAddr, u8)> = (n.as_str(), 0)
                .to_socket_addrs()
                .map_err(|source| PolicyEntryError::Resolve { name: n.clone(), source })?
                .map(|sa| (sa.ip(), if sa.is_ipv4() { 32 } else { 128 }))
                .collect();
            out.sort();
            out.dedup();
            if out.is_empty() {
                return Err(PolicyEntryError::NoAddresses(n));
            }
            Ok(out)
        }
    }
}

impl Rules {
    /// An nft script that (re)creates the table atomically.
    pub fn nft_script(&self) -> String {
        let reject = "reject with icmpx type admin-prohibited";
        let mut s = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n chain output {{\n");
        s.push_str("  type filter hook output priority filter; policy accept;\n");
        s.push_str("  oifname \"lo\" accept\n  ct state established,related accept\n");
        let family = |a: &IpAddr| if a.is_ipv4() { "ip" } else { "ip6" };
        for (a, p) in &self.deny {
            s.push_str(&format!("  {} daddr {a}/{p} {reject}\n", family(a)));
        }
        if self.allow_only {
            for (a, p) in &self.allow {
                s.push_str(&format!("  {} daddr {a}/{p} accept\n", family(a)));
            }
            s.push_str(&format!("  {reject}\n"));
        }
        s.push_str(" }\n}\n");
        s
    }
}

/// The same policy for the packets a namespace forwards from `from_dev`
/// (a VM's tap: the guest is behind it and the namespace routes for it):
/// the chain hooks `forward` instead of `output`, and only what comes out
/// of the guest is filtered (connections into it are not egress).
pub fn for_forwarding(output_script: &str, from_dev: &str) -> String {
    output_script.replace(" chain output {\n", " chain forward {\n").replace(
        "hook output priority filter; policy accept;\n",
        &format!("hook forward priority filter; policy accept;\n  iifname != \"{from_dev}\" accept\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(allow: &[&str], deny: &[&str]) -> NetworkSpec {
        NetworkSpec {
            mode: heyvm_types::NetworkMode::Nat,
            allow_out: allow.iter().map(|s| s.to_string()).collect(),
            deny_out: deny.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn no_policy_means_no_table() {
        assert_eq!(resolve(&spec(&[], &[])).unwrap(), None);
    }

    #[test]
    fn deny_comes_before_allow_and_allow_list_closes_the_rest() {
        let r = resolve(&spec(&["10.0.0.0/8", "localhost"], &["10.1.0.0/16"])).unwrap().unwrap();
        assert!(r.allow.contains(&("127.0.0.1".parse().unwrap(), 32)));
        let s = r.nft_script();
        let deny = s.find("ip daddr 10.1.0.0/16 reject").unwrap();
        let allow = s.find("ip daddr 10.0.0.0/8 accept").unwrap();
        assert!(deny < allow, "{s}");
        assert!(s.trim_end().ends_with("reject with icmpx type admin-prohibited\n }\n}"), "{s}");
    }

    #[test]
    fn forwarding_variant_filters_only_the_guest() {
        let r = resolve(&spec(&["10.0.0.0/8"], &["10.1.0.0/16"])).unwrap().unwrap();
        let f = for_forwarding(&r.nft_script(), "tap0");
        assert!(
            f.contains(" chain forward {\n  type filter hook forward priority filter; policy accept;\n  iifname != \"tap0\" accept\n"),
            "{f}"
        );
        assert!(!f.contains("output"), "{f}");
        assert!(f.contains("ct state established,related accept") && f.contains("ip daddr 10.1.0.0/16 reject"), "{f}");
    }

    #[test]
    fn unresolvable_deny_fails_closed() {
        assert!(resolve(&spec(&[], &["no-such-host.invalid"])).is_err());
        let r = resolve(&spec(&["no-such-host.invalid"], &[])).unwrap().unwrap();
        assert!(r.allow_only && r.allow.is_empty());
    }
}

//! The address pool: /30 subnets of `10.89.0.0/16` (override with
//! `HEYVM_NET_POOL=a.b.0.0/16`). Subnet `i` gives the host side `.1` and the
//! sandbox `.2`. The kernel is the source of truth for what is taken: a
//! subnet is in use while some interface on the host carries its host
//! address, so nothing leaks when a daemon dies or the host reboots.
//! Allocation runs under a host-wide file lock, so concurrent daemons never
//! pick the same subnet.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use super::error::{NetError, NetResult};
use super::netlink::Netlink;

const DEFAULT_POOL: &str = "10.89.0.0/16";
const LOCK_FILE: &str = "/run/heyvm-net.lock";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub host: Ipv4Addr,
    pub guest: Ipv4Addr,
}

/// The pool's base address and prefix length.
pub fn pool() -> (Ipv4Addr, u8) {
    let spec = heyvm_core::config::string(heyvm_core::config::NET_POOL);
    parse_pool(spec.as_deref().unwrap_or(DEFAULT_POOL)).unwrap_or_else(|| parse_pool(DEFAULT_POOL).expect("valid default pool"))
}

fn parse_pool(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/')?;
    let a: Ipv4Addr = a.parse().ok()?;
    let p: u8 = p.parse().ok().filter(|p| (8..=28).contains(p))?;
    Some((Ipv4Addr::from(u32::from(a) & (u32::MAX << (32 - p))), p))
}

/// How many /30 subnets the pool holds.
pub fn capacity() -> u32 {
    1 << (30 - pool().1)
}

pub fn subnet(index: u32) -> Subnet {
    let base = u32::from(pool().0) + (index % capacity()) * 4;
    Subnet { network: base.into(), host: (base + 1).into(), guest: (base + 2).into() }
}

/// Runs `f` holding the host-wide allocation lock.
pub fn with_lock<T>(f: impl FnOnce() -> NetResult<T>) -> NetResult<T> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(|e| NetError::io("opening", LOCK_FILE, e))?;
    // SAFETY: flock on a valid descriptor; released when `file` is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(NetError::io("locking", LOCK_FILE, std::io::Error::last_os_error()));
    }
    let r = f();
    drop(file);
    r
}

/// Whether a full pool may hand out a subnet a stopped sandbox recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// Never (spares: a spare must not cost a sandbox its address).
    Keep,
    /// When nothing else is free (a sandbox starting now: that stopped
    /// sandbox then gets another address at its next start).
    Lend,
}

/// Picks a free subnet, `preferred` first, else one outside `reserved`
/// (the subnets this data directory's stopped sandboxes recorded: they get
/// them back when they start again). Call under [`with_lock`] and assign
/// the host address before releasing it.
pub fn allocate(preferred: Option<u32>, reserved: impl FnOnce() -> HashSet<u32>, full: Reserved) -> NetResult<u32> {
    let used = used_host_addresses()?;
    let cap = capacity();
    let free = |i: u32| !used.contains(&subnet(i).host) && !used.contains(&subnet(i).guest);
    if let Some(p) = preferred.filter(|p| *p < cap && free(*p)) {
        return Ok(p);
    }
    let reserved = reserved();
    // Start at a random point: concurrent daemons (each knows only its own
    // reservations) rarely contend.
    let start = crate::stock::random_u32() % cap;
    let pick = |skip_reserved: bool| (0..cap).map(|k| (start + k) % cap).find(|i| free(*i) && !(skip_reserved && reserved.contains(i)));
    pick(true).or_else(|| (full == Reserved::Lend).then(|| pick(false)).flatten()).ok_or(NetError::PoolExhausted)
}

/// Every IPv4 address configured on the host's interfaces.
fn used_host_addresses() -> NetResult<HashSet<Ipv4Addr>> {
    let addrs = Netlink::open().and_then(|mut n| n.ipv4_addresses());
    Ok(addrs.map_err(|source| NetError::Netlink { what: "listing the host's addresses", source })?.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_disjoint_slash30s() {
        assert_eq!(parse_pool("10.89.7.1/16"), Some((Ipv4Addr::new(10, 89, 0, 0), 16)));
        assert_eq!(parse_pool("10.0.0.0/30"), None);
        let s = subnet(0);
        assert_eq!((s.network, s.host, s.guest), (Ipv4Addr::new(10, 89, 0, 0), Ipv4Addr::new(10, 89, 0, 1), Ipv4Addr::new(10, 89, 0, 2)));
        let s = subnet(65);
        assert_eq!((s.network, s.host, s.guest), (Ipv4Addr::new(10, 89, 1, 4), Ipv4Addr::new(10, 89, 1, 5), Ipv4Addr::new(10, 89, 1, 6)));
    }
}

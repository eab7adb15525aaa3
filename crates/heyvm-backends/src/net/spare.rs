//! Spare networks: a few namespaces made ahead of time (veth pair,
//! addresses, routes, host guard table, all as [`super::setup`] makes them)
//! so a sandbox's first start takes one instead of building it on the
//! critical path. `HEYVM_SPARES` sets how many (0 = off).
//!
//! A spare is brand new: it never hosted a sandbox, and a sandbox's network
//! is destroyed (never returned here) when it stops, so nothing one sandbox
//! did to its namespace (sockets, neighbours, conntrack entries) can reach
//! another. Its names are its own (`heyvm-s<8 hex>-<key>` and
//! `hv-<8 hex><key>`, key from the data directory); the sandbox that takes
//! one records them in its `net.json`. Spares are removed at daemon
//! shutdown, and ones a killed daemon left are removed when the next one
//! starts (those no sandbox recorded).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::error::NetResult;
use super::{host, pool, NetNames};
use crate::stock::{random_tag, Stock};

/// One ready network.
#[derive(Debug, Clone)]
pub struct Spare {
    pub names: NetNames,
    pub index: u32,
}

static STOCK: Stock<Spare> = Stock::new();

/// The data directory's sandboxes dir and its name key, once opened.
static DIR: Mutex<Option<(PathBuf, u16)>> = Mutex::new(None);

fn dir() -> Option<(PathBuf, u16)> {
    DIR.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// How many spares the daemon keeps (`HEYVM_SPARES`).
pub fn wanted() -> usize {
    heyvm_core::config::parse(heyvm_core::config::SPARES).unwrap_or(DEFAULT_SPARES)
}

/// The default count: enough for a burst of first starts on a small host.
pub const DEFAULT_SPARES: usize = 4;

/// The 16-bit key of a data directory's sandboxes dir (keeps two daemons'
/// spares, and parked owners, apart).
pub(crate) fn key_of(sandboxes: &Path) -> u16 {
    (super::fnv1a(sandboxes.as_os_str().as_encoded_bytes()) & 0xffff) as u16
}

/// A spare's names from its 8-hex tag.
fn names(tag: &str, key: u16) -> NetNames {
    NetNames { netns: format!("heyvm-s{tag}-{key:04x}"), veth: format!("hv-{tag}{key:04x}") }
}

/// The tag of a spare's namespace name of this key, if it is one.
fn tag_of(netns: &str, key: u16) -> Option<&str> {
    let tag = netns.strip_prefix("heyvm-s")?.strip_suffix(&format!("-{key:04x}"))?;
    (tag.len() == 8 && tag.bytes().all(|b| b.is_ascii_hexdigit())).then_some(tag)
}

/// At daemon start: removes spares an earlier daemon on this data dir
/// left (none of its sandboxes recorded them) and starts making `want`.
pub fn open(sandboxes: &Path, want: usize) {
    let key = key_of(sandboxes);
    let recorded: HashSet<String> = std::fs::read_dir(sandboxes)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| super::recorded_names(&e.path().join("net.json")))
        .map(|n| n.netns)
        .collect();
    let stale: Vec<NetNames> = std::fs::read_dir(host::NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !recorded.contains(n))
        .filter_map(|n| tag_of(&n, key).map(|t| names(t, key)))
        .collect();
    for n in stale {
        tracing::info!(netns = %n.netns, "removing a spare network left by an earlier daemon");
        host::destroy(&n);
    }
    *DIR.lock().unwrap_or_else(|e| e.into_inner()) = Some((sandboxes.to_path_buf(), key));
    STOCK.open(want);
    refill();
}

/// A ready network for a sandbox of `sandboxes`, if one is there.
pub fn take(sandboxes: &Path) -> Option<Spare> {
    if dir().is_none_or(|(d, _)| d != sandboxes) {
        return None;
    }
    let spare = STOCK.take();
    refill();
    // Still whole? (Nothing should touch a spare, but a host admin might.)
    spare.filter(|sp| sp.names.netns_path().exists() && Path::new("/sys/class/net").join(&sp.names.veth).exists())
}

/// Daemon shutdown: removes every spare and makes no more.
pub fn close() {
    for sp in STOCK.close() {
        host::destroy(&sp.names);
    }
}

/// How many spares are ready now.
pub fn ready() -> usize {
    STOCK.ready()
}

/// Tops the spares up on a background thread (one at a time).
fn refill() {
    let Some((dir, key)) = dir() else { return };
    STOCK.refill("a spare network", move || make(&dir, key), |sp| host::destroy(&sp.names));
}

/// Makes one spare: what [`super::setup`] does, under fresh names.
fn make(sandboxes: &Path, key: u16) -> NetResult<Spare> {
    for _ in 0..4 {
        let n = names(&random_tag(), key);
        if n.netns_path().exists() || Path::new("/sys/class/net").join(&n.veth).exists() {
            continue;
        }
        let index = super::build(&n, None, sandboxes, pool::Reserved::Keep)?;
        return Ok(Spare { names: n, index });
    }
    Err(super::NetError::PoolExhausted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_names_fit_and_are_recognised_only_for_their_key() {
        let n = names("0123abcd", 0x1f2e);
        assert_eq!(n.netns, "heyvm-s0123abcd-1f2e");
        assert_eq!(n.veth, "hv-0123abcd1f2e");
        assert!(n.veth.len() <= 15);
        assert_eq!(tag_of(&n.netns, 0x1f2e), Some("0123abcd"));
        assert_eq!(tag_of(&n.netns, 0x1f2f), None);
        assert_eq!(tag_of("heyvm-sb-0123abcd-1f2e", 0x1f2e), None);
        assert_eq!(tag_of("heyvm-sxyz-1f2e", 0x1f2e), None);
    }
}

//! Sandbox networking for the bubblewrap backend.
//!
//! * `none`: bwrap unshares the network namespace; only loopback exists.
//! * `nat` (as root): a named network namespace per sandbox
//!   (`/run/netns/heyvm-<id>-<key>`), a veth pair (host side `hv-<12 hex>`,
//!   sandbox side `eth0`) on a /30 from [`pool`], a default route via the
//!   host, and host-wide masquerading ([`host`]). The sandbox owner enters
//!   that namespace before exec'ing bwrap, so the namespace belongs to the
//!   host's user namespace and root inside the sandbox cannot change its
//!   addresses or firewall. The egress policy ([`policy`]) is an nftables
//!   table inside the namespace, loaded before any sandbox process runs.
//! * `nat` without root: slirp4netns attached to bwrap's own namespace
//!   ([`slirp`]), if installed; otherwise, or when an egress policy is set
//!   (it could not be enforced), loopback only with a logged warning.
//!
//! Nothing here depends on the daemon staying alive: the namespace and
//! veth outlive a daemon crash, and teardown is idempotent.

pub mod error;
pub mod host;
pub mod hostguard;
pub mod netlink;
pub mod netns;
pub mod nft;
mod nft_delete;
pub mod policy;
pub mod pool;
pub mod slirp;
pub mod spare;
pub mod tool;

use std::path::{Path, PathBuf};

pub use error::{NetError, NetResult, PolicyEntryError};
use heyvm_core::LaunchSpec;
use heyvm_types::NetworkMode;
pub use nft::tools_present;
use serde::{Deserialize, Serialize};

/// What the owner process must do to put the sandbox on its network.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OwnerNet {
    /// Network namespace file to enter; None = bwrap unshares its own.
    pub netns: Option<PathBuf>,
    /// Sysctls written inside the namespace (`/proc/sys/...` path, value).
    pub sysctls: Vec<(String, String)>,
    /// nftables script loaded inside the namespace before bwrap runs.
    pub nft_script: Option<String>,
}

/// Host-unique names for one sandbox's network objects. The key mixes in
/// the sandbox directory so two daemons (different data dirs) never clash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNames {
    pub netns: String,
    pub veth: String,
}

impl NetNames {
    /// The sandbox's names: those its `net.json` records (a spare network
    /// it took, see [`spare`]), else the ones derived from its id.
    pub fn for_spec(spec: &LaunchSpec) -> Self {
        recorded_names(&net_file(spec)).unwrap_or_else(|| Self::derived(spec))
    }

    /// The names derived from the sandbox's id and directory.
    pub fn derived(spec: &LaunchSpec) -> Self {
        let key = fnv1a(spec.paths.dir.as_os_str().as_encoded_bytes()) & 0xffff;
        let hex: String = spec.id.chars().filter(|c| c.is_ascii_hexdigit()).rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
        NetNames { netns: format!("heyvm-{}-{key:04x}", spec.id), veth: format!("hv-{hex:0>8}{key:04x}") }
    }

    pub fn netns_path(&self) -> PathBuf {
        Path::new(host::NETNS_DIR).join(&self.netns)
    }
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x01000193))
}

/// Persisted in the sandbox directory: the subnet it had, preferred again
/// on the next start so its address stays stable, and the names of its
/// namespace and veth when they are not the derived ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NetFile {
    index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    veth: Option<String>,
}

fn read_net_file(path: &Path) -> Option<NetFile> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The names a `net.json` records, if any.
pub(crate) fn recorded_names(path: &Path) -> Option<NetNames> {
    let f = read_net_file(path)?;
    Some(NetNames { netns: f.netns?, veth: f.veth? })
}

/// The subnet indices recorded by the sandboxes of a data directory's
/// `sandboxes` dir (running or stopped).
pub(crate) fn recorded_indices(sandboxes: &Path) -> std::collections::HashSet<u32> {
    let dirs = std::fs::read_dir(sandboxes).into_iter().flatten().flatten();
    dirs.filter_map(|e| read_net_file(&e.path().join("net.json"))).map(|f| f.index).collect()
}

fn net_file(spec: &LaunchSpec) -> PathBuf {
    spec.paths.dir.join("net.json")
}

/// How a sandbox is networked on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Loopback,
    /// Namespace + veth + masquerade (root).
    Nat,
    /// slirp4netns (no root).
    Slirp,
}

pub fn choose(spec: &LaunchSpec, root: bool) -> Choice {
    let (choice, why) = choose_why(spec, root);
    if let Some(why) = why {
        tracing::warn!(sandbox = %spec.id, "{why}");
    }
    choice
}

/// The choice, and why a `nat` sandbox is not getting what it asked for.
pub fn choose_why(spec: &LaunchSpec, root: bool) -> (Choice, Option<&'static str>) {
    if spec.network.mode != NetworkMode::Nat {
        return (Choice::Loopback, None);
    }
    if root {
        if host::tools_present() {
            return (Choice::Nat, None);
        }
        return (Choice::Loopback, Some("network 'nat' needs nftables (apt-get install nftables); this sandbox has loopback only"));
    }
    if !spec.network.allow_out.is_empty() || !spec.network.deny_out.is_empty() {
        (Choice::Loopback, Some("an egress policy cannot be enforced by a non-root daemon; this sandbox has loopback only"))
    } else if !slirp::available() {
        (
            Choice::Loopback,
            Some("network 'nat' needs a root daemon or slirp4netns with access to /dev/net/tun; this sandbox has loopback only"),
        )
    } else {
        (Choice::Slirp, None)
    }
}

/// Creates the sandbox's namespace, veth, addresses and routes, and returns
/// what the owner must apply inside. Cleans up after itself on failure.
pub fn setup(spec: &LaunchSpec) -> NetResult<OwnerNet> {
    let started = std::time::Instant::now();
    teardown(spec);
    let rules = policy::resolve(&spec.network)?;
    let preferred = read_net_file(&net_file(spec)).map(|f| f.index);
    // A first start takes a spare network (its address is then the one
    // kept); a restart rebuilds on its recorded address.
    let sandboxes = spec.paths.dir.parent().unwrap_or(Path::new("/"));
    let (names, index, spared) = match preferred.is_none().then(|| spare::take(sandboxes)).flatten() {
        Some(sp) => (sp.names, sp.index, true),
        None => {
            let names = NetNames::derived(spec);
            let index = build(&names, preferred, sandboxes, pool::Reserved::Lend)?;
            (names, index, false)
        }
    };
    let file = NetFile { index, netns: spared.then(|| names.netns.clone()), veth: spared.then(|| names.veth.clone()) };
    if let Err(e) = std::fs::write(net_file(spec), serde_json::to_vec(&file).unwrap_or_default()) {
        // Without the record the spare's names would be lost: give it up.
        host::destroy(&names);
        return Err(NetError::io("writing", net_file(spec), e));
    }
    host::ensure_resolv_conf(&crate::layout::OverlayPaths::upper(&spec.paths));
    tracing::debug!(sandbox = %spec.id, ms = started.elapsed().as_millis() as u64, spared, "sandbox network ready");
    Ok(OwnerNet {
        netns: Some(names.netns_path()),
        sysctls: vec![
            // The namespace belongs to the host's user namespace, so the
            // sandbox's CAP_NET_BIND_SERVICE does not count there.
            ("/proc/sys/net/ipv4/ip_unprivileged_port_start".into(), "0".into()),
            ("/proc/sys/net/ipv4/ping_group_range".into(), "0 2147483647".into()),
        ],
        nft_script: rules.map(|r| r.nft_script()),
    })
}

/// Makes a namespace and veth named `names` on a free subnet (`preferred`
/// first; see [`pool::allocate`] for `sandboxes` and `full`) with the host
/// side's NAT and guard tables; removes what it made when it fails.
pub(crate) fn build(names: &NetNames, preferred: Option<u32>, sandboxes: &Path, full: pool::Reserved) -> NetResult<u32> {
    let result = pool::with_lock(|| {
        let index = pool::allocate(preferred, || recorded_indices(sandboxes), full)?;
        host::create(names, &pool::subnet(index))?;
        // One nftables transaction for the host side.
        nft::run(&(host::host_nat_script()? + &hostguard::install_script(&names.veth)))?;
        Ok(index)
    });
    if result.is_err() {
        host::destroy(names);
    }
    result
}

/// Removes the sandbox's veth and namespace (or slirp4netns) if present.
/// Idempotent.
pub fn teardown(spec: &LaunchSpec) {
    let names = NetNames::for_spec(spec);
    host::destroy(&names);
    let derived = NetNames::derived(spec);
    if derived != names {
        host::destroy(&derived);
    }
    slirp::detach(spec);
}

/// Whether anything [`teardown`] removes exists (a namespace, a veth, a
/// slirp4netns process of the sandbox).
pub fn present(spec: &LaunchSpec) -> bool {
    let exists = |n: &NetNames| n.netns_path().exists() || Path::new("/sys/class/net").join(&n.veth).exists();
    exists(&NetNames::for_spec(spec)) || exists(&NetNames::derived(spec)) || slirp::pid_file(spec).exists()
}

/// The sandbox's address while its namespace exists.
pub fn guest_ip(spec: &LaunchSpec) -> Option<String> {
    if spec.network.mode != NetworkMode::Nat {
        return None;
    }
    let names = NetNames::for_spec(spec);
    if !names.netns_path().exists() {
        return slirp::guest_ip(spec);
    }
    Some(pool::subnet(read_net_file(&net_file(spec))?.index).guest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use heyvm_core::DataDir;

    fn spec(data: &str, id: &str) -> LaunchSpec {
        LaunchSpec {
            id: id.into(),
            hostname: "h".into(),
            paths: DataDir::new(data.into()).sandbox(id),
            limits: heyvm_types::SizeClass::Small.limits(),
            mounts: vec![],
            network: Default::default(),
            image_layers: vec![],
            ids: None,
        }
    }

    #[test]
    fn names_fit_ifnamsiz_and_differ_across_data_dirs() {
        let a = NetNames::for_spec(&spec("/data/a", "sb-0123abcd"));
        let b = NetNames::for_spec(&spec("/data/b", "sb-0123abcd"));
        assert!(a.veth.len() <= 15, "{}", a.veth);
        assert!(a.veth.starts_with("hv-0123abcd"), "{}", a.veth);
        assert!(a.netns.starts_with("heyvm-sb-0123abcd-"), "{}", a.netns);
        assert_ne!(a, b);
        assert_eq!(a, NetNames::for_spec(&spec("/data/a", "sb-0123abcd")));
    }
}

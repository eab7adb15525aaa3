//! Host-side plumbing, done with `ip` (iproute2) and `nft` (nftables):
//! the per-sandbox namespace and veth pair, and the host-wide NAT table.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::pool::{self, Subnet};
use super::NetNames;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// The host-wide nftables table heyvm owns (masquerade + isolation).
pub const HOST_TABLE: &str = "heyvm";

/// Runs a program with optional stdin; Err carries its stderr.
pub fn run(prog: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(locate(prog));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().map_err(|e| format!("running {prog}: {e} (is it installed?)"))?;
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(input.as_bytes()).map_err(|e| format!("writing to {prog}: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("waiting for {prog}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{prog} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `ip` and `nft` are installed.
pub fn tools_present() -> bool {
    ["ip", "nft"].iter().all(|p| locate(p).is_absolute())
}

/// System tools live in sbin, which a daemon's PATH may lack.
fn locate(prog: &str) -> std::path::PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(prog)).find(|p| p.is_file()).unwrap_or_else(|| prog.into())
}

pub fn ip_json(args: &[&str]) -> Result<serde_json::Value, String> {
    let mut a = vec!["-j"];
    a.extend_from_slice(args);
    let out = run("ip", &a, None)?;
    serde_json::from_str(&out).map_err(|e| format!("parsing ip output: {e}"))
}

/// Enables forwarding and (re)loads the host table atomically: sandboxes'
/// traffic is masqueraded behind the host, and sandboxes cannot reach one
/// another through the host. The content is constant, so concurrent
/// daemons loading it agree.
pub fn ensure_host_nat() -> Result<(), String> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| format!("enabling IPv4 forwarding: {e}"))?;
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
pub fn create(names: &NetNames, s: &Subnet) -> Result<(), String> {
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

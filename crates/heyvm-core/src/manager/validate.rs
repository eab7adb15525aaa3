//! Checks on user-supplied configuration, before anything is written.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use heyvm_types::{MountSpec, NetworkMode};

use crate::egress::{EgressTarget, MAX_ENTRIES};
use crate::error::{CoreError, Result};

/// Sandbox paths a user mount may not cover: the system layers, kernel
/// filesystems and heyvm's own control directory. `/workspace` itself may
/// be replaced by a host directory (a git worktree for `heyvm wt`); paths
/// below it may always be mounted.
const RESERVED: &[&str] =
    &["/", "/usr", "/etc", "/var", "/opt", "/proc", "/dev", "/sys", "/run/heyvm", "/run/heyvm-bin", "/bin", "/sbin", "/lib", "/lib64"];

/// An absolute, normalised sandbox path with no `..`.
pub fn sandbox_path(p: &str, what: &str) -> Result<String> {
    if !p.starts_with('/') {
        return Err(CoreError::invalid(format!("{what} '{p}' must be an absolute path")));
    }
    if p.contains('\0') || p.len() > 4096 {
        return Err(CoreError::invalid(format!("{what} is not a valid path")));
    }
    let mut out = String::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => {
                out.push('/');
                out.push_str(&n.to_string_lossy());
            }
            Component::ParentDir | Component::Prefix(_) => return Err(CoreError::invalid(format!("{what} '{p}' may not contain '..'"))),
        }
    }
    Ok(if out.is_empty() { "/".into() } else { out })
}

/// Longest TTL accepted (ten years): beyond it the deadline arithmetic
/// (and SQLite's signed integers) would overflow.
pub const MAX_TTL_SECS: u64 = 10 * 365 * 86_400;

pub fn ttl(secs: u64) -> Result<()> {
    if secs == 0 || secs > MAX_TTL_SECS {
        return Err(CoreError::invalid(format!("ttl_seconds must be between 1 and {MAX_TTL_SECS} (ten years)")));
    }
    Ok(())
}

pub fn mounts(mounts: &[MountSpec]) -> Result<Vec<MountSpec>> {
    let mut out: Vec<MountSpec> = Vec::new();
    for m in mounts {
        out.push(mount(m)?);
        let last = &out[out.len() - 1];
        if out[..out.len() - 1].iter().any(|o| o.sandbox_path == last.sandbox_path) {
            return Err(CoreError::invalid(format!("two mounts at '{}'", last.sandbox_path)));
        }
    }
    Ok(out)
}

pub fn mount(m: &MountSpec) -> Result<MountSpec> {
    let sandbox_path = sandbox_path(&m.sandbox_path, "sandbox_path")?;
    let reserved = RESERVED.iter().any(|r| sandbox_path == *r || (*r != "/" && sandbox_path.starts_with(&format!("{r}/"))));
    if reserved {
        return Err(CoreError::invalid(format!("cannot mount over '{sandbox_path}': it is reserved")));
    }
    if let Some(prefix) = &m.s3_prefix {
        if !m.host_path.is_empty() {
            return Err(CoreError::invalid("a mount has either host_path or s3_prefix, not both"));
        }
        let prefix = crate::s3::valid_prefix(prefix).map_err(CoreError::invalid)?;
        if m.s3_sync_seconds.is_some_and(|s| s == 0 || s > 86_400 * 30) {
            return Err(CoreError::invalid("s3_sync_seconds must be between 1 and 2592000"));
        }
        return Ok(MountSpec { sandbox_path, s3_prefix: Some(prefix), ..m.clone() });
    }
    if m.s3_sync_seconds.is_some() {
        return Err(CoreError::invalid("s3_sync_seconds needs s3_prefix"));
    }
    if !m.host_path.starts_with('/') {
        return Err(CoreError::invalid(format!("host_path '{}' must be an absolute path", m.host_path)));
    }
    let host = Path::new(&m.host_path);
    let meta = std::fs::metadata(host).map_err(|e| CoreError::invalid(format!("host_path '{}' is not usable: {e}", m.host_path)))?;
    // A regular file may be bound too (`heyvm wt` binds a worktree's `.git`
    // read-only over the writable worktree).
    if !meta.is_dir() && !meta.is_file() {
        return Err(CoreError::invalid(format!("host_path '{}' is not a directory or a regular file", m.host_path)));
    }
    let host_path = host.canonicalize()?.display().to_string();
    Ok(MountSpec::host(host_path, sandbox_path, m.read_only))
}

/// The backend's own say on a sandbox's mounts ([`Backend::check_mounts`]);
/// S3-backed ones are directories of the daemon's, made at start.
pub fn backend_mounts(backend: &dyn crate::backend::Backend, mounts: &[MountSpec]) -> Result<()> {
    let host: Vec<MountSpec> = mounts.iter().filter(|m| m.s3_prefix.is_none()).cloned().collect();
    backend.check_mounts(&host).map_err(CoreError::InvalidMount)
}

/// A mount must neither cover nor lie inside heyvm's data directory: a
/// sandbox that could write there could rewrite another sandbox's launch
/// plan (which its owner runs as root), and one that could read it would
/// see every sandbox's files and the API-key store.
pub fn outside_data_dir(m: &MountSpec, data: &Path) -> Result<()> {
    if m.s3_prefix.is_some() {
        // Its directory is the daemon's own, on the sandbox's disk.
        return Ok(());
    }
    let data = data.canonicalize().unwrap_or_else(|_| data.to_path_buf());
    let host = Path::new(&m.host_path);
    if data.starts_with(host) || host.starts_with(&data) {
        return Err(CoreError::invalid(format!("host_path '{}' overlaps heyvm's data directory, which sandboxes never see", m.host_path)));
    }
    Ok(())
}

pub fn env(env: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in env {
        let valid = !k.is_empty()
            && k.len() <= 255
            && !k.as_bytes()[0].is_ascii_digit()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(CoreError::invalid(format!("invalid environment variable name '{k}'")));
        }
        if v.contains('\0') {
            return Err(CoreError::invalid(format!("environment variable '{k}' contains a NUL byte")));
        }
    }
    Ok(())
}

pub fn ports(ports: &[u16]) -> Result<Vec<u16>> {
    if ports.contains(&0) {
        return Err(CoreError::invalid("port 0 is not a valid port"));
    }
    let mut p = ports.to_vec();
    p.sort_unstable();
    p.dedup();
    Ok(p)
}

pub fn sandbox_type(t: Option<&str>) -> Result<String> {
    match t.unwrap_or("shell") {
        t @ ("shell" | "python" | "node") => Ok(t.to_string()),
        other => Err(CoreError::invalid(format!("unknown sandbox_type '{other}' (expected shell, python or node)"))),
    }
}

/// `nat` when absent.
pub fn network(n: Option<&str>) -> Result<NetworkMode> {
    n.map(|s| s.parse::<NetworkMode>().map_err(CoreError::invalid)).transpose().map(|m| m.unwrap_or(NetworkMode::Nat))
}

/// Normalised egress entries (see [`crate::egress`]), duplicates removed.
pub fn egress(entries: &[String], what: &str) -> Result<Vec<String>> {
    if entries.len() > MAX_ENTRIES {
        return Err(CoreError::invalid(format!("{what} has more than {MAX_ENTRIES} entries")));
    }
    let mut out: Vec<String> = Vec::new();
    for e in entries {
        let t = EgressTarget::parse(e).map_err(|why| CoreError::invalid(format!("{what}: {why}")))?;
        let s = t.to_string();
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

pub fn command_text(c: &str, what: &str) -> Result<()> {
    if c.trim().is_empty() {
        return Err(CoreError::invalid(format!("{what} is empty")));
    }
    if c.contains('\0') {
        return Err(CoreError::invalid(format!("{what} contains a NUL byte")));
    }
    Ok(())
}

/// A sandbox user as exec and shell take it: `user`, `uid`, `user:group`
/// or `uid:gid`, names as `/etc/passwd` allows them. Whether it exists is
/// the agent's answer (it reads the sandbox's own passwd).
pub fn user(u: &str) -> Result<()> {
    let part_ok = |p: &str| {
        !p.is_empty() && p.len() <= 64 && !p.starts_with('-') && p.chars().all(|c| c.is_ascii_alphanumeric() || "._-$".contains(c))
    };
    let ok = match u.split_once(':') {
        Some((a, b)) => part_ok(a) && part_ok(b),
        None => part_ok(u),
    };
    if !ok {
        return Err(CoreError::invalid(format!("invalid user '{u}': USER, UID, USER:GROUP or UID:GID")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use heyvm_types::WORKSPACE_PATH;

    #[test]
    fn users() {
        for ok in ["root", "0", "1000:1000", "app:staff", "www-data", "a.b_c$"] {
            assert!(user(ok).is_ok(), "{ok}");
        }
        for bad in ["", ":", "a:", ":b", "a:b:c", "-rf", "a b", "../x", "a\0b", &"x".repeat(65)] {
            assert!(user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sandbox_paths() {
        assert_eq!(sandbox_path("/data//x/", "p").unwrap(), "/data/x");
        assert!(sandbox_path("data", "p").is_err());
        assert!(sandbox_path("/a/../etc", "p").is_err());
    }

    #[test]
    fn reserved_mounts_are_refused() {
        let tmp = std::env::temp_dir().display().to_string();
        for bad in ["/usr", "/usr/local", "/proc", "/", "/run/heyvm/x"] {
            let m = MountSpec::host(tmp.clone(), bad, false);
            assert!(mount(&m).is_err(), "{bad}");
        }
        for ok in ["/data", WORKSPACE_PATH, "/workspace/sub"] {
            let m = MountSpec::host(tmp.clone(), ok, true);
            assert!(mount(&m).is_ok(), "{ok}");
        }
        let missing = MountSpec::host("/nonexistent/x", "/data", true);
        assert!(mount(&missing).is_err());
        let file = tempfile::NamedTempFile::new().unwrap();
        let file = MountSpec::host(file.path().display().to_string(), "/workspace/.git", true);
        assert!(mount(&file).is_ok(), "regular files may be bound");
        let dev = MountSpec::host("/dev/null", "/data", true);
        assert!(mount(&dev).is_err(), "devices may not");
    }

    #[test]
    fn env_names() {
        assert!(env(&BTreeMap::from([("A_1".into(), "x".into())])).is_ok());
        assert!(env(&BTreeMap::from([("1A".into(), "x".into())])).is_err());
        assert!(env(&BTreeMap::from([("A=B".into(), "x".into())])).is_err());
    }
}

//! Running system tools: `nft` where libnftables cannot be loaded (see
//! [`super::nft`]), and `ip` for the VM tier's tap routing. A leaf: the
//! rest of `net` builds on it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::error::{NetError, NetResult};

/// Runs a program with optional stdin; Err carries its stderr.
pub fn run(prog: &str, args: &[&str], stdin: Option<&str>) -> NetResult<String> {
    let mut cmd = Command::new(locate(prog));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let spawn_err = |source| NetError::Spawn { prog: prog.to_string(), source };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(input.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(NetError::Tool { prog: prog.to_string(), args: args.join(" "), stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// System tools live in sbin, which a daemon's PATH may lack.
pub(super) fn locate(prog: &str) -> std::path::PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(prog)).find(|p| p.is_file()).unwrap_or_else(|| prog.into())
}

/// `ip -j ARGS` parsed (the VM tier's tap routing still runs `ip`).
pub fn ip_json(args: &[&str]) -> NetResult<serde_json::Value> {
    let mut a = vec!["-j"];
    a.extend_from_slice(args);
    let out = run("ip", &a, None)?;
    Ok(serde_json::from_str(&out)?)
}

//! Running the system's network tools (`ip`, `nft`) and reading their
//! output. A leaf: the rest of `net` builds on it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

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

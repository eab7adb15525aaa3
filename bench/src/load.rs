//! Section 9: a load test with `wrk` (an established HTTP load tool; `apt-get
//! install wrk`): 1,000 concurrent connections for 10 s on a mix of routes
//! (health, list, one sandbox, the pool, and an exec of `true` on the warm
//! sandbox), reporting wrk's errors and latency percentiles. Then the
//! connection cap: a daemon limited to 256 connections gets the same 1,000;
//! with the excess queued (not refused) wrk sees no errors there either.

use std::path::Path;
use std::process::Command;

use crate::daemon::BenchDaemon;
use crate::stats::Table;

const CONNECTIONS: usize = 1000;

fn wrk_path() -> Option<std::path::PathBuf> {
    ["/usr/bin/wrk", "/usr/local/bin/wrk"].iter().map(Path::new).find(|p| p.is_file()).map(Path::to_path_buf)
}

/// The Lua script: requests in a fixed rotation.
fn script(id: &str) -> String {
    let exec = r#"{"command":"true"}"#;
    format!(
        r#"local reqs = {{}}
local n = 0
init = function(args)
  local h = {{ ["Content-Type"] = "application/json" }}
  local gets = {{ "/health", "/health", "/health", "/sandboxes", "/sandboxes/{id}", "/sandboxes/{id}", "/system/pool", "/health", "/sandboxes/{id}" }}
  for _, p in ipairs(gets) do table.insert(reqs, wrk.format("GET", p)) end
  table.insert(reqs, wrk.format("POST", "/sandboxes/{id}/execute", h, '{exec}'))
end
request = function()
  n = n + 1
  return reqs[(n % #reqs) + 1]
end
"#
    )
}

struct WrkResult {
    requests: u64,
    errors: String,
    non_2xx: u64,
    p50: String,
    p99: String,
    rps: String,
}

fn run_wrk(wrk: &Path, url: &str, script_path: &Path) -> Result<WrkResult, String> {
    let out = Command::new(wrk)
        .args(["-t", "2", "-c", &CONNECTIONS.to_string(), "-d", "10s", "--timeout", "10s", "--latency", "-s"])
        .arg(script_path)
        .arg(url)
        .output()
        .map_err(|e| format!("running wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!("wrk failed: {} {}", text, String::from_utf8_lossy(&out.stderr)));
    }
    let find = |prefix: &str| text.lines().map(str::trim).find(|l| l.starts_with(prefix)).map(str::to_string);
    let pct = |p: &str| find(p).and_then(|l| l.split_whitespace().nth(1).map(str::to_string)).unwrap_or_else(|| "?".into());
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let non_2xx = find("Non-2xx").and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok())).unwrap_or(0);
    Ok(WrkResult {
        requests,
        errors: find("Socket errors:").unwrap_or_else(|| "Socket errors: none".into()),
        non_2xx,
        p50: pct("50%"),
        p99: pct("99%"),
        rps: find("Requests/sec:").and_then(|l| l.split_whitespace().nth(1).map(str::to_string)).unwrap_or_default(),
    })
}

/// Lets this process (and wrk, its child) hold the connections.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: get/setrlimit on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

pub fn run(url: &str, id: &str, data: &Path, table: &mut Table) {
    table.section(&format!("9. load test: wrk, {CONNECTIONS} connections, 10 s, mixed routes (health, list, get, pool, exec `true`)"));
    let Some(wrk) = wrk_path() else {
        table.line("  skipped: wrk is not installed (apt-get install wrk)");
        return;
    };
    raise_fd_limit();
    let script_path = data.join("mix.lua");
    if let Err(e) = std::fs::write(&script_path, script(id)) {
        table.line(&format!("  cannot write the wrk script: {e}"));
        return;
    }
    match run_wrk(&wrk, url, &script_path) {
        Ok(r) => {
            table.line(&format!("  {} requests ({} req/s), latency p50 {} p99 {}", r.requests, r.rps, r.p50, r.p99));
            table.line(&format!("  errors: {}; non-2xx answers: {}", r.errors, r.non_2xx));
        }
        Err(e) => table.line(&format!("  {e}")),
    }
    // The cap: excess connections wait in the accept queue.
    let capped = BenchDaemon::start_with(0, "-capped", &[("HEYVM_MAX_CONNECTIONS", "256")], |_| Ok(()));
    match capped {
        Ok(d) => {
            let health = d.data.join("health.lua");
            let _ = std::fs::write(&health, "request = function() return wrk.format(\"GET\", \"/health\") end\n");
            match run_wrk(&wrk, &d.url, &health) {
                Ok(r) => {
                    let verdict = if r.errors.ends_with("none") && r.non_2xx == 0 { "excess queued, none refused" } else { "SOME FAILED" };
                    table.line(&format!(
                        "  daemon capped at 256 connections, {CONNECTIONS} connecting: {} requests, p50 {} p99 {}, {}, non-2xx {} ({verdict})",
                        r.requests, r.p50, r.p99, r.errors, r.non_2xx
                    ))
                }
                Err(e) => table.line(&format!("  capped run: {e}")),
            }
        }
        Err(e) => table.line(&format!("  capped daemon: {e}")),
    }
    table.line("  (the default cap is HEYVM_MAX_CONNECTIONS=4096; connections beyond it wait in the listen backlog)");
}

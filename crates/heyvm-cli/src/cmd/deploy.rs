//! `heyvm deploy <dir>`: archive, upload, create with the archive at
//! /workspace (setup hooks, then the start command), expose ports, wait for
//! the health path, print the seed's JSON. A failed deploy shows the start
//! command's last log lines and deletes the sandbox unless
//! `--keep-on-failure`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use heyvm_client::{Client, ClientError};
use heyvm_types::{CreateSandboxRequest, LogEntry, SandboxStatus, SizeClass, UrlInfo, WaitForRequest};
use serde::Serialize;

use super::archive::{self, TempFile};
use super::{parse_duration, parse_env};
use crate::args::DeployArgs;
use crate::output::{self, Format};

/// What `deploy --format json` prints (seed 001).
#[derive(Serialize)]
pub struct Deployed {
    pub id: String,
    pub name: String,
    pub status: SandboxStatus,
    pub archive_id: String,
    pub urls: Vec<UrlInfo>,
}

/// A failed deploy, printed on stderr.
#[derive(Serialize)]
struct Failed<'a> {
    error: &'a str,
    message: String,
    id: Option<String>,
    kept: bool,
    logs: Vec<String>,
}

fn progress(f: Format, msg: impl AsRef<str>) {
    if f == Format::Text {
        eprintln!("==> {}", msg.as_ref());
    }
}

/// Default name: the directory's name, made valid, plus a short suffix so
/// deploying the same directory twice does not collide.
fn default_name(dir: &std::path::Path) -> String {
    let base: String = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' })
        .collect();
    let base = base.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let base = if base.is_empty() { "app" } else { &base[..base.len().min(50)] };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{base}-{:04x}", (nanos ^ std::process::id()) & 0xffff)
}

fn tail_logs(c: &Client, id: &str) -> Vec<String> {
    let q = [("tail", "true".to_string()), ("limit", "20".to_string())];
    c.logs(id, &q).map(|r| r.logs.iter().map(|l: &LogEntry| format!("[{}] {}", l.source, l.message)).collect()).unwrap_or_default()
}

pub fn run(c: &Client, f: Format, a: DeployArgs) -> anyhow::Result<ExitCode> {
    let out = match deploy(c, f, &a)? {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    match f {
        Format::Json => output::json(&out),
        Format::Text => {
            println!("Deployed {} ({}) — {}", out.name, out.id, out.status);
            for u in &out.urls {
                println!("  {} -> port {}{}", u.url, u.port, if u.is_public { "" } else { " (private: needs a Bearer token)" });
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Archives, uploads, creates, exposes the ports and waits for health.
/// `Err(exit code)` when the deploy failed; that has been reported (with
/// the sandbox's last log lines) and cleaned up already.
pub fn deploy(c: &Client, f: Format, a: &DeployArgs) -> anyhow::Result<Result<Deployed, ExitCode>> {
    if !a.dir.is_dir() {
        bail!("{} is not a directory", a.dir.display());
    }
    let health_timeout = Duration::from_secs_f64(parse_duration(&a.health_timeout)?);
    let size_class = a.size_class.as_deref().map(|s| s.parse::<SizeClass>().map_err(|e| anyhow::anyhow!(e))).transpose()?;
    let region = match a.region.as_deref().map(str::to_ascii_uppercase) {
        Some(r) if r != "US" && r != "EU" => bail!("--region must be US or EU, not '{r}'"),
        r => r,
    };
    if let Some(p) = &a.health_path {
        if !p.starts_with('/') {
            bail!("--health-path must start with '/' (e.g. /health)");
        }
        if a.ports.is_empty() {
            bail!("--health-path needs a --port to reach the app through");
        }
    }
    let env = parse_env(&a.env)?;
    let name = a.name.clone().unwrap_or_else(|| default_name(&a.dir));

    progress(f, format!("archiving {}", a.dir.display()));
    let tmp = TempFile::new(".tar.gz");
    let packed = archive::pack(&a.dir, &tmp.0)?;
    for s in &packed.skipped_symlinks {
        eprintln!("heyvm: warning: skipped symlink '{s}' (it points outside {})", a.dir.display());
    }
    let size = std::fs::metadata(&tmp.0).map(|m| m.len()).unwrap_or(0);
    progress(
        f,
        format!(
            "uploading {} files ({} unpacked, {} compressed)",
            packed.files,
            output::human_bytes(packed.bytes),
            output::human_bytes(size)
        ),
    );
    let ar = c.upload_archive(&tmp.0).context("uploading the archive")?;
    drop(tmp);

    progress(f, format!("creating sandbox {name} with archive {}", ar.archive_id));
    let req = CreateSandboxRequest {
        name: Some(name.clone()),
        size_class,
        ttl_seconds: a.ttl_seconds,
        start_command: a.start_command.clone(),
        // The server binds `open_ports` publicly; private ports are bound below.
        open_ports: (!a.ports.is_empty() && !a.private).then(|| a.ports.clone()),
        env_vars: (!env.is_empty()).then_some(env),
        setup_hooks: (!a.setup_hooks.is_empty()).then(|| a.setup_hooks.clone()),
        archive_id: Some(ar.archive_id.clone()),
        region,
        image: a.image.clone(),
        backend_type: a.backend.clone(),
        ..Default::default()
    };
    let info = match c.create(&req) {
        Ok(i) => i,
        // The sandbox exists but did not come up (e.g. a setup hook failed).
        Err(e @ ClientError::Api { .. }) if e.code() == "sandbox_failed" => {
            return fail(c, f, a, Some(name.as_str()), "deploy_failed", format!("{e}")).map(Err);
        }
        Err(e) => return Err(e.into()),
    };
    let id = info.id.clone();

    let mut urls = Vec::new();
    for &port in &a.ports {
        let bound = info.urls.iter().find(|u| u.port == port && u.is_public != a.private);
        if let Some(u) = bound {
            progress(f, format!("port {port} -> {}", u.url));
            urls.push(u.clone());
            continue;
        }
        match c.create_proxy(&id, port, !a.private) {
            Ok(ep) => {
                progress(f, format!("port {port} -> {}{}", ep.url, if ep.is_public { "" } else { " (private)" }));
                urls.push(UrlInfo { subdomain: ep.subdomain, hostname: ep.hostname, url: ep.url, port: ep.port, is_public: ep.is_public });
            }
            Err(e) => return fail(c, f, a, Some(&id), "bind_failed", format!("exposing port {port}: {e}")).map(Err),
        }
    }

    if let Some(path) = &a.health_path {
        let url = format!("{}{path}", urls[0].url.trim_end_matches('/'));
        progress(f, format!("waiting for {url} (up to {}s)", health_timeout.as_secs()));
        // A private URL refuses callers without a token, and a server without
        // JWT_SECRET has none to give: check the port through the agent.
        let through = if a.private { Probe::Agent { port: urls[0].port, path } } else { Probe::Url(&url) };
        if let Err(why) = wait_healthy(c, &id, through, health_timeout) {
            return fail(c, f, a, Some(&id), "health_check_failed", why).map(Err);
        }
    }

    let info = c.get_sandbox(&id)?;
    Ok(Ok(Deployed { id: info.id, name: info.name, status: info.status, archive_id: ar.archive_id, urls }))
}

/// How the health check reaches the app.
enum Probe<'a> {
    /// Through the public proxy URL: proves the URL works end to end.
    Url(&'a str),
    /// Through the sandbox's agent to the port (`POST …/wait-for`), for
    /// private endpoints; 2xx or 3xx counts as healthy there.
    Agent { port: u16, path: &'a str },
}

/// Polls until the app answers 2xx; gives up early if the sandbox stops running.
fn wait_healthy(c: &Client, id: &str, probe: Probe, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut polls = 0u32;
    let url = match probe {
        Probe::Url(u) => u.to_string(),
        Probe::Agent { port, path } => format!("port {port}{path}"),
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let slice = left.min(Duration::from_secs(5)).max(Duration::from_millis(100));
        let last = match probe {
            Probe::Url(u) => match c.probe(u, slice) {
                Ok(s) if (200..300).contains(&s) => return Ok(()),
                Ok(s) => format!("HTTP {s}"),
                Err(e) => e.to_string(),
            },
            Probe::Agent { port, path } => {
                let req = WaitForRequest {
                    port,
                    path: Some(path.to_string()),
                    timeout_secs: Some(slice.min(Duration::from_secs(1)).as_secs_f64()),
                };
                match c.wait_for(id, &req) {
                    Ok(r) if r.ready => return Ok(()),
                    Ok(r) => r.last_error.unwrap_or_else(|| "not ready".into()),
                    Err(e) => e.to_string(),
                }
            }
        };
        polls += 1;
        if polls.is_multiple_of(8) {
            if let Ok(info) = c.get_sandbox(id) {
                if info.status != SandboxStatus::Running {
                    return Err(format!("the sandbox is {} ({})", info.status, info.error_message.unwrap_or_default()));
                }
            }
            if let Some(why) = start_command_failed(c, id) {
                return Err(format!("{why} before {url} became healthy"));
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("{url} was not healthy within {}s (last: {last})", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Whether the start command has died with a failure: its last lifecycle
/// line (written by the agent) is a non-zero exit or a signal. An exit with
/// code 0 is not a failure: the command may have daemonised. Other system
/// lines can follow that one (a command that dies at once exits before the
/// daemon logs "sandbox running"), so it is looked for among the last few.
fn start_command_failed(c: &Client, id: &str) -> Option<String> {
    let q = [("source", "system".to_string()), ("tail", "true".to_string()), ("limit", "20".to_string())];
    let logs = c.logs(id, &q).ok()?.logs;
    let last = logs.into_iter().rev().map(|l| l.message).find(|m| m.starts_with("start command "))?;
    let failed = last.starts_with("start command killed by signal")
        || last.strip_prefix("start command exited with code ").is_some_and(|code| code.trim() != "0");
    failed.then_some(last)
}

/// Reports a failed deploy with the last log lines and cleans up.
fn fail(c: &Client, f: Format, a: &DeployArgs, id: Option<&str>, code: &str, message: String) -> anyhow::Result<ExitCode> {
    let logs = id.map(|id| tail_logs(c, id)).unwrap_or_default();
    let kept = a.keep_on_failure && id.is_some();
    let real_id = id.and_then(|id| c.get_sandbox(id).ok()).map(|i| i.id);
    if let (Some(id), false) = (&real_id, a.keep_on_failure) {
        if let Err(e) = c.delete_sandbox(id) {
            eprintln!("heyvm: warning: could not delete sandbox {id}: {e}");
        }
    }
    match f {
        Format::Json => {
            eprintln!("{}", serde_json::to_string(&Failed { error: code, message, id: real_id, kept, logs }).unwrap_or_default())
        }
        Format::Text => {
            eprintln!("heyvm: deploy failed: {message}");
            if !logs.is_empty() {
                eprintln!("--- last log lines ---");
                for l in &logs {
                    eprintln!("{l}");
                }
            }
            match (&real_id, kept) {
                (Some(id), true) => eprintln!("heyvm: kept sandbox {id} for inspection (heyvm logs {id})"),
                (Some(id), false) => eprintln!("heyvm: deleted sandbox {id}"),
                _ => {}
            }
        }
    }
    Ok(ExitCode::from(1))
}

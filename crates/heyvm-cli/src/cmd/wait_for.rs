//! `wait-for`: block until a sandbox port (through the server) or a URL
//! (from this machine) is ready. A timeout prints `{"ready": false, …}` and
//! exits 1, so scripts can branch on the exit code alone.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use heyvm_client::Client;
use heyvm_types::WaitForRequest;

use super::parse_duration;
use crate::args::WaitForArgs;
use crate::output::{self, Format};

fn finish(f: Format, ready: bool, json: serde_json::Value, text: String) -> ExitCode {
    match f {
        Format::Json => output::json(&json),
        Format::Text if ready => println!("{text}"),
        Format::Text => eprintln!("heyvm: {text}"),
    }
    if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub fn port(c: &Client, f: Format, a: WaitForArgs) -> anyhow::Result<ExitCode> {
    let (Some(id), Some(port)) = (a.id, a.port) else { anyhow::bail!("give a sandbox and a port, or --url") };
    let timeout = parse_duration(&a.timeout)?;
    let r = c.wait_for(&id, &WaitForRequest { port, path: a.path.clone(), timeout_secs: Some(timeout) })?;
    let what = match &a.path {
        Some(p) => format!("port {port} ({p})"),
        None => format!("port {port}"),
    };
    let (json, text) = if r.ready {
        (serde_json::json!({ "ready": true, "port": port }), format!("{what} of {id} is ready after {:.1}s", r.elapsed_ms as f64 / 1000.0))
    } else {
        let why = r.last_error.clone().unwrap_or_default();
        (
            serde_json::json!({ "ready": false, "port": port, "path": a.path, "elapsed_ms": r.elapsed_ms, "error": why }),
            format!("{what} of {id} not ready after {}: {why}", a.timeout),
        )
    };
    Ok(finish(f, r.ready, json, text))
}

pub fn url(f: Format, a: &WaitForArgs, token: Option<String>) -> anyhow::Result<ExitCode> {
    let url = a.url.clone().unwrap_or_default();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        anyhow::bail!("--url must start with http:// or https://, got '{url}'");
    }
    let timeout = Duration::from_secs_f64(parse_duration(&a.timeout)?);
    let token = if a.with_token { token } else { None };
    let started = Instant::now();
    let deadline = started + timeout;
    let last = loop {
        let left = deadline.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let why = match heyvm_client::probe_url(&url, token.as_deref(), left) {
            Ok(code) if (200..400).contains(&code) => break None,
            Ok(code) => format!("HTTP {code}"),
            Err(e) => e,
        };
        if Instant::now() + Duration::from_millis(200) >= deadline {
            break Some(why);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let elapsed = started.elapsed().as_secs_f64();
    Ok(match last {
        None => finish(f, true, serde_json::json!({ "ready": true, "url": url }), format!("{url} is ready after {elapsed:.1}s")),
        Some(why) => finish(
            f,
            false,
            serde_json::json!({ "ready": false, "url": url, "elapsed_ms": (elapsed * 1000.0) as u64, "error": why }),
            format!("{url} not ready after {}: {why}", a.timeout),
        ),
    })
}

//! `wait-for`: poll a sandbox port through the agent until it accepts
//! connections (and, with a path, answers an HTTP GET with 2xx/3xx).

use std::time::Duration;

use heyvm_core::{CoreError, Result, SandboxManager};
use heyvm_types::{SandboxStatus, WaitForRequest, WaitForResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const DEFAULT_TIMEOUT_SECS: f64 = 60.0;
const MAX_TIMEOUT_SECS: f64 = 3600.0;
const POLL_EVERY: Duration = Duration::from_millis(200);
/// Longest one HTTP probe may take before it counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn wait_for(mgr: &SandboxManager, key: &str, req: &WaitForRequest) -> Result<WaitForResponse> {
    if req.port == 0 {
        return Err(CoreError::invalid("port must be between 1 and 65535"));
    }
    let timeout = match req.timeout_secs {
        None => DEFAULT_TIMEOUT_SECS,
        Some(t) if t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_SECS => t,
        Some(t) => return Err(CoreError::invalid(format!("timeout_secs must be between 0 and {MAX_TIMEOUT_SECS}, got {t}"))),
    };
    if let Some(p) = &req.path {
        if !p.starts_with('/') || p.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(CoreError::invalid(format!("path must start with '/' and contain no spaces or control characters, got {p:?}")));
        }
    }
    let id = mgr.resolve(key)?.id;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(timeout);
    let last_error = loop {
        let rec = mgr.resolve(&id)?;
        let outcome = match rec.status {
            SandboxStatus::Running => probe(mgr, &id, req.port, req.path.as_deref()).await,
            SandboxStatus::Provisioning => Err("the sandbox is still starting".to_string()),
            other => {
                return Err(CoreError::InvalidState { id, status: other.to_string(), action: "wait-for", needs: "running" });
            }
        };
        match outcome {
            Ok(()) => break None,
            Err(e) if Instant::now() + POLL_EVERY >= deadline => break Some(e),
            Err(_) => tokio::time::sleep(POLL_EVERY).await,
        }
    };
    Ok(WaitForResponse {
        ready: last_error.is_none(),
        port: req.port,
        path: req.path.clone(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        last_error,
    })
}

async fn probe(mgr: &SandboxManager, id: &str, port: u16, path: Option<&str>) -> std::result::Result<(), String> {
    let mut stream = mgr.connect_port(id, port).await.map_err(|e| e.to_string())?;
    let Some(path) = path else { return Ok(()) };
    let exchange = async {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: heyvm-wait-for\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') && buf.len() < 4096 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(buf)
    };
    let buf = match tokio::time::timeout(PROBE_TIMEOUT, exchange).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(format!("GET {path}: {e}")),
        Err(_) => return Err(format!("GET {path}: no answer within {}s", PROBE_TIMEOUT.as_secs())),
    };
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or("");
    match line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()) {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(format!("GET {path} answered HTTP {code}")),
        None => Err(format!("GET {path}: not an HTTP response ({line:?})")),
    }
}

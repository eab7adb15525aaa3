//! The MCP server through a real, independent client: the official Python
//! `mcp` SDK (installed by scripts/python-deps.sh) over stdio
//! (`heyvm mcp`) and over streamable HTTP (`/mcp`): tools, file round
//! trips, exit codes, stdin, tool errors; the ephemeral computer is deleted
//! when the client exits; `--persistent NAME` is reused across sessions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::Daemon;

/// The test venv's interpreter with `mcp` importable, or None (SKIP; a
/// failure in CI).
fn python() -> Option<PathBuf> {
    let venv = std::env::var_os("HEYVM_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv"));
    let py = venv.join("bin/python");
    let ok = Command::new(&py).args(["-c", "import mcp"]).output().is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    let why = format!("{} cannot import mcp (run scripts/python-deps.sh)", py.display());
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false") {
        panic!("{why}");
    }
    eprintln!("SKIP: {why}");
    None
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/mcp_client.py")
}

/// Runs one client session; returns what it printed.
fn session(d: &Daemon, py: &PathBuf, args: &[&str]) -> Value {
    let mut c = Command::new(py);
    c.arg(script()).args(args).env("HEYVM_API_URL", &d.url).env("MVM_DATA_DIR", d.data.path());
    let out = c.output().unwrap();
    assert!(out.status.success(), "client failed: {}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").to_string();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("client printed non-JSON ({e}): {line}"))
}

fn check_session(v: &Value) {
    let tools: Vec<&str> = v["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    for t in [
        "computer_read_file",
        "computer_run",
        "computer_write_file",
        "sandbox_bind_port",
        "sandbox_create",
        "sandbox_delete",
        "sandbox_exec",
        "sandbox_get",
        "sandbox_list",
        "sandbox_start",
        "sandbox_stop",
    ] {
        assert!(tools.contains(&t), "missing tool {t}: {tools:?}");
    }
    assert_eq!(v["run_schema_has_command"], true);
    assert!(v["size_enum"].as_str().unwrap().contains("xlarge"), "size classes listed in the schema");
    assert_eq!(v["write_error"], false);
    assert_eq!(v["read"]["content"], "hi from mcp\n");
    assert_eq!(v["read"]["size"], 12);
    assert_eq!(v["bin_write_error"], false);
    // Bytes 1..3 of [0, 1, 2, 255] are not UTF-8 as a whole? [1, 2] is; check the window.
    assert_eq!(v["bin_read"]["content"], "\u{1}\u{2}");
    assert_eq!(v["bin_read"]["size"], 4);
    assert_eq!(v["run"]["exit_code"], 3);
    assert_eq!(v["run"]["stdout"], "hi from mcp\n");
    assert_eq!(v["run"]["stderr"], "oops\n");
    assert!(v["run_text"].as_str().unwrap().contains("exit code: 3"));
    assert_eq!(v["stdin"], "piped");
    assert_eq!(v["hosts"]["error"], false, "{v}");
    assert!(v["hosts"]["size"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!((v["opt_write_error"].as_bool(), v["opt_seen"].as_str()), (Some(false), Some("anywhere")), "{v}");
    assert_eq!(v["dir_read"]["error"], true, "{v}");
    assert!(v["dir_read"]["text"].as_str().unwrap().contains("directory"), "{v}");
    assert_eq!(v["missing_is_error"], true);
    assert!(v["missing_text"].as_str().unwrap().contains("no such file"));
    assert_eq!(v["get_missing_is_error"], true);
    eprintln!(
        "MCP computer_run round trip: first {:.1} ms, warm {:.1} ms",
        v["run_ms"].as_f64().unwrap(),
        v["warm_run_ms"].as_f64().unwrap()
    );
}

fn ids(d: &Daemon) -> Vec<String> {
    d.get("/sandboxes").1.as_array().cloned().unwrap_or_default().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn stdio_session_ephemeral_then_persistent() {
    let Some(d) = Daemon::start() else { return };
    let Some(py) = python() else { return };
    let bin = crate::support::BIN;
    let v = session(&d, &py, &["stdio", bin]);
    check_session(&v);
    // The session's computer existed (on this daemon) during the session and is gone after.
    let computer = v["sandboxes"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(computer.len(), 1, "{v}");
    // The hostname is the sandbox's (generated) name, which carries its id.
    let hostname = v["hostname"].as_str().unwrap_or_default();
    assert!(hostname.contains(&computer[0][3..]), "hostname {hostname} is not sandbox {}'s", computer[0]);
    d.wait_until("ephemeral computer deleted", Duration::from_secs(20), || ids(&d).is_empty());
    // --persistent NAME: created once, kept, reused.
    let a = session(&d, &py, &["stdio", bin, "--persistent", "keep-me", "--size-class", "micro"]);
    let b = session(&d, &py, &["stdio", bin, "--persistent", "keep-me"]);
    assert_eq!(a["hostname"], "keep-me");
    assert_eq!(a["sandboxes"], b["sandboxes"]);
    let (s, info) = d.get("/sandboxes/keep-me");
    assert_eq!((s, info["size_class"].as_str()), (200, Some("micro")));
    // --sandbox ID: an existing one, untouched after.
    let id = info["id"].as_str().unwrap().to_string();
    let c = session(&d, &py, &["stdio", bin, "--sandbox", &id]);
    assert_eq!(c["hostname"], "keep-me");
    assert_eq!(d.get(&format!("/sandboxes/{id}")).0, 200);
}

#[test]
fn http_session_at_mcp() {
    let Some(d) = Daemon::start() else { return };
    let Some(py) = python() else { return };
    let v = session(&d, &py, &["http", &format!("{}/mcp", d.url)]);
    check_session(&v);
    d.wait_until("HTTP session's computer deleted", Duration::from_secs(20), || ids(&d).is_empty());
}

#[test]
fn mcp_route_is_behind_auth() {
    let Some(d) = Daemon::start_with(&[("JWT_SECRET", "mcp-secret")]) else { return };
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let (s, v) = d.post_raw("/mcp", "application/json", body.as_bytes());
    assert_eq!((s, v["error"].as_str()), (401, Some("missing_token")));
}

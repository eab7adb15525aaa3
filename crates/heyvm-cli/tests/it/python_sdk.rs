//! The Python SDK (sdk/python) against a real daemon: its pytest suite runs
//! with HEYVM_API_URL pointing here. Needs scripts/python-deps.sh's venv
//! (test.sh runs it); missing, the test fails in CI and is skipped elsewhere.

use std::path::Path;
use std::process::Command;

use crate::support::Daemon;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().parent().unwrap()
}

/// The venv's python with httpx and pytest, if present.
pub fn python() -> Option<std::path::PathBuf> {
    let venv = std::env::var_os("HEYVM_PYENV").map(Into::into).unwrap_or_else(|| repo().join("target/pyenv"));
    let py = Path::new(&venv).join("bin/python");
    if py.is_file() {
        return Some(py);
    }
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false") {
        panic!("no Python test environment at {}: run scripts/python-deps.sh", py.display());
    }
    eprintln!("SKIP: no Python test environment (run scripts/python-deps.sh)");
    None
}

#[test]
fn python_sdk_suite_passes_against_the_daemon() {
    let Some(py) = python() else { return };
    let Some(d) = Daemon::start() else { return };
    let sdk = repo().join("sdk/python");
    let out = Command::new(py)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(&sdk)
        .env("PYTHONPATH", &sdk)
        .env("HEYVM_API_URL", &d.url)
        .env_remove("HEYVM_API_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "pytest failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

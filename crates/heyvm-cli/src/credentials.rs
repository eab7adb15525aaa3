//! Where the CLI finds its server and token.
//!
//! Server: `--server` / `$HEYVM_API_URL`, then `$HEYO_CLOUD_URL`, else the
//! local daemon. Token: `--token`, then `$HEYVM_API_KEY`, `$HEYO_API_KEY`
//! (deprecated: works, with a one-line warning), `$HEYO_ARCHIVE_TOKEN`,
//! `$HEYVM_TOKEN`, then `access_token` in `token.json` of the data dir
//! (written by `heyvm login`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::Context;
use heyvm_core::{config, DataDir};
use serde::{Deserialize, Serialize};

use crate::args::Cli;

/// The shape of `token.json` (the existing product's field names).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredToken {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Unix seconds, from the token's `exp` when it is a JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

fn non_empty_env(key: &str) -> Option<String> {
    heyvm_core::config::string(key)
}

pub fn token_path() -> PathBuf {
    DataDir::from_env().root().join("token.json")
}

/// An explicitly configured server, if any.
pub fn server_url(cli: &Cli) -> Option<String> {
    cli.server.clone().filter(|u| !u.is_empty()).or_else(|| non_empty_env(config::CLOUD_URL))
}

pub fn token(cli: &Cli) -> Option<String> {
    cli.token
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| non_empty_env(config::API_KEY))
        .or_else(|| {
            let key = non_empty_env(config::HEYO_API_KEY)?;
            warn_deprecated_key();
            Some(key)
        })
        .or_else(|| non_empty_env(config::ARCHIVE_TOKEN))
        .or_else(|| non_empty_env(config::TOKEN))
        .or_else(|| load().ok().flatten().map(|t| t.access_token))
}

/// Said once per process, however often the token is looked up.
fn warn_deprecated_key() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| eprintln!("heyvm: warning: HEYO_API_KEY is deprecated; rename it to HEYVM_API_KEY"));
}

pub fn load() -> anyhow::Result<Option<StoredToken>> {
    let path = token_path();
    match std::fs::read(&path) {
        Ok(bytes) => {
            let t: StoredToken = serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid token JSON", path.display()))?;
            Ok(Some(t).filter(|t| !t.access_token.is_empty()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `token.json` readable by the owner only.
pub fn save(t: &StoredToken) -> anyhow::Result<PathBuf> {
    let path = token_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(t)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Returns whether a token was stored.
pub fn remove() -> anyhow::Result<bool> {
    match std::fs::remove_file(token_path()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

//! `heyvm wt <branch> --deploy`: the branch's worktree shipped to a remote
//! heyvm server (`--server` or `$HEYO_CLOUD_URL`) through the same path as
//! `heyvm deploy` (archive honouring .gitignore, upload, create with the
//! archive at /workspace, ports exposed and health-checked).

use std::process::ExitCode;

use anyhow::bail;
use heyvm_client::{Client, ClientError};

use super::args::WtArgs;
use super::git::Repo;
use crate::args::{Cli, DeployArgs};
use crate::cmd::deploy;
use crate::output::{self, Format};

const NOT_AUTHENTICATED: &str = "Not authenticated: run heyvm login or set HEYO_ARCHIVE_TOKEN";

pub fn run(cli: &Cli, repo: &Repo, branch: &str, slug: &str, a: &WtArgs) -> anyhow::Result<ExitCode> {
    let f = cli.format;
    let explicit = cli.server.clone().filter(|s| !s.is_empty());
    let Some(server) = explicit.clone().or_else(|| heyvm_core::config::string(heyvm_core::config::CLOUD_URL)) else {
        bail!("--deploy needs a remote server: pass --server URL or set HEYO_CLOUD_URL");
    };
    let token = crate::credentials::token(cli);
    let c = Client::new(&server, token.clone());
    check_credentials(&c, token.is_some())?;
    let (worktree, note) = repo.ensure_worktree(branch, a.base.as_deref(), a.path.as_deref(), slug)?;
    if f == Format::Text {
        eprintln!("==> {note}");
        eprintln!("==> deploying {} to {server}", worktree.display());
    }
    let d = &a.deploy;
    let health_path =
        d.deploy_health_path.clone().or_else(|| (d.deploy_start_command.is_some() && !d.deploy_ports.is_empty()).then(|| "/".into()));
    let args = DeployArgs {
        dir: worktree,
        name: Some(remote_name(slug)),
        ports: d.deploy_ports.clone(),
        start_command: d.deploy_start_command.clone(),
        health_path,
        health_timeout: "120s".into(),
        size_class: a.size_class.clone(),
        region: d.deploy_region.clone(),
        image: d.deploy_image.clone(),
        backend: d.deploy_driver.clone(),
        env: Vec::new(),
        setup_hooks: Vec::new(),
        ttl_seconds: d.deploy_ttl_seconds,
        private: false,
        keep_on_failure: false,
    };
    let out = match deploy::deploy(&c, f, &args)? {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    match f {
        Format::Json => output::json(&out),
        Format::Text => {
            for u in &out.urls {
                println!("  {} -> port {}", u.url, u.port);
            }
            let srv = explicit.map(|s| format!(" --server {s}")).unwrap_or_default();
            let id = &out.id;
            println!("Use heyvm{srv} exec {id} -- <cmd> or heyvm{srv} sh {id} to interact; heyvm{srv} stop {id} tears it down.");
            println!("Deployed successfully! ID: {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks the server something that needs a token before packing anything.
fn check_credentials(c: &Client, have_token: bool) -> anyhow::Result<()> {
    match c.list(Some("running")) {
        Ok(_) => Ok(()),
        Err(ClientError::Api { status: 401, code, .. }) if have_token => {
            bail!("Not authenticated: the server refused the token ({code}); run heyvm login or set HEYO_ARCHIVE_TOKEN")
        }
        Err(ClientError::Api { status: 401, .. }) => bail!(NOT_AUTHENTICATED),
        Err(e) => Err(e.into()),
    }
}

/// `wt-<slug>-<4 hex>`: deploying the same branch twice does not collide.
fn remote_name(slug: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let short: String = slug.chars().take(54).collect();
    format!("wt-{}-{:04x}", short.trim_end_matches('-'), (nanos ^ std::process::id()) & 0xffff)
}

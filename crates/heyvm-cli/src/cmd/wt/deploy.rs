//! `heyvm wt <branch> --deploy`: the branch's worktree shipped to a remote
//! heyvm server (`--server` or `$HEYO_CLOUD_URL`) through the same path as
//! `heyvm deploy` (archive honouring .gitignore, upload, create with the
//! archive at /workspace, ports exposed and health-checked).

use std::process::ExitCode;

use std::path::Path;

use anyhow::{bail, Context as _};
use heyvm_client::Client;

use super::args::WtArgs;
use super::git::Repo;
use crate::args::{BuildArgs, Cli, DeployArgs};
use crate::cmd::{deploy, images_build, images_files, remote};
use crate::output::{self, Format};

pub fn run(cli: &Cli, repo: &Repo, branch: &str, slug: &str, a: &WtArgs) -> anyhow::Result<ExitCode> {
    let f = cli.format;
    let explicit = cli.server.clone().filter(|s| !s.is_empty());
    let (server, c, have_token) = remote::client(cli, "--deploy")?;
    remote::check_credentials(&c, have_token)?;
    let (worktree, note) = repo.ensure_worktree(branch, a.base.as_deref(), a.path.as_deref(), slug)?;
    if f == Format::Text {
        eprintln!("==> {note}");
        eprintln!("==> deploying {} to {server}", worktree.display());
    }
    let d = &a.deploy;
    let image = if d.publish_image { Some(publish(cli, &server, &c, &worktree, a)?) } else { d.deploy_image.clone() };
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
        image,
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

/// `--publish-image`: builds the Dockerfile here with the worktree as the
/// context (`heyvm images build`, no Docker), uploads the image into the
/// remote server's store (`PUT /images/:name`) and returns its name there.
fn publish(cli: &Cli, server: &str, remote: &Client, worktree: &Path, a: &WtArgs) -> anyhow::Result<String> {
    let d = &a.deploy;
    let (Some(dockerfile), Some(name)) = (d.deploy_dockerfile.clone(), d.deploy_image_name.clone()) else {
        bail!("--publish-image needs --deploy-dockerfile FILE and --deploy-image-name NAME");
    };
    let dockerfile = if dockerfile.is_file() { dockerfile } else { worktree.join(&dockerfile) };
    let dockerfile = std::fs::canonicalize(&dockerfile).with_context(|| format!("--deploy-dockerfile {}", dockerfile.display()))?;
    let local = images_files::local_source(cli, server)?;
    if cli.format == Format::Text {
        eprintln!("==> building {name} from {} (context {})", dockerfile.display(), worktree.display());
    }
    let build = BuildArgs {
        context: worktree.to_path_buf(),
        file: Some(dockerfile),
        tags: vec![name.clone()],
        build_args: Vec::new(),
        target: None,
        no_cache: false,
        size_mb: d.deploy_image_size_mb,
        backend_type: None,
    };
    let built = images_build::build_value(&local, cli.format, build)?;
    let info = images_files::upload_to(&local, remote, &name, &name, cli.format)?;
    if cli.format == Format::Text {
        eprintln!("==> published {name} ({}) to {server}", built["digest"].as_str().unwrap_or(&info.digest));
    }
    Ok(name)
}

/// `wt-<slug>-<4 hex>`: deploying the same branch twice does not collide.
fn remote_name(slug: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let short: String = slug.chars().take(54).collect();
    format!("wt-{}-{:04x}", short.trim_end_matches('-'), (nanos ^ std::process::id()) & 0xffff)
}

//! Reaching the API: `--server`/`HEYVM_API_URL`, or the local daemon on
//! 127.0.0.1:34099, started in the background when none answers. Also the
//! `--api` entry point that runs the server itself.

use std::os::unix::process::CommandExt;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use heyvm_client::Client;
use heyvm_core::manager::ManagerConfig;
use heyvm_core::{config, DataDir};

use crate::args::Cli;
use crate::output::Format;

pub fn run_api(cli: &Cli) -> anyhow::Result<ExitCode> {
    // Descriptors this process inherited (a shell's, a CI runner's) would
    // otherwise pass to every owner, bwrap and QEMU it starts.
    heyvm_agent::close_on_exec_from(3);
    init_tracing(cli.debug);
    let mut backends = heyvm_backends::available().map_err(|e| anyhow::anyhow!(e))?;
    // The microVM tier is always listed; `heyvm backends` says whether it works here.
    backends.push(std::sync::Arc::new(heyvm_vm::KvmBackend::default()));
    let config = ManagerConfig::from_env();
    let opts = heyvm_server::ServeOptions {
        host: cli.host,
        port: cli.port,
        data: DataDir::from_env(),
        config,
        jwt_secret: config::string(config::JWT_SECRET),
        jwt_audience: config::string(config::JWT_AUDIENCE),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(heyvm_server::serve(opts, backends)).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}

fn init_tracing(debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env(config::LOG).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// A client for the configured server, starting the local daemon if needed.
pub fn client(cli: &Cli) -> anyhow::Result<Client> {
    client_for(cli, crate::credentials::server_url(cli))
}

/// A client for `--server`/`$HEYVM_API_URL`, else the local daemon (started
/// if needed); `$HEYO_CLOUD_URL` is not consulted. For commands that hand
/// the server paths on this machine (`heyvm wt` mounts a worktree).
pub fn local_client(cli: &Cli) -> anyhow::Result<Client> {
    client_for(cli, cli.server.clone().filter(|u| !u.is_empty()))
}

/// The daemon on this machine's default port (started if needed),
/// whatever `--server` or `$HEYVM_API_URL` say.
pub fn default_local_client(cli: &Cli) -> anyhow::Result<Client> {
    client_for(cli, None)
}

fn client_for(cli: &Cli, server: Option<String>) -> anyhow::Result<Client> {
    let token = crate::credentials::token(cli);
    if let Some(url) = server {
        return Ok(Client::new(&url, token));
    }
    let url = format!("http://127.0.0.1:{}", heyvm_types::DEFAULT_LOCAL_PORT);
    let client = Client::new(&url, token);
    if client.health().is_ok() {
        return Ok(client);
    }
    start_local_daemon(cli.format)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if client.health().is_ok() {
            return Ok(client);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = DataDir::from_env().daemon_log();
    bail!("the local heyvm daemon did not start within 20s; see {}", log.display())
}

fn start_local_daemon(format: Format) -> anyhow::Result<()> {
    let data = DataDir::from_env();
    std::fs::create_dir_all(data.root()).with_context(|| format!("creating {}", data.root().display()))?;
    let log_path = data.daemon_log();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    if format == Format::Text {
        eprintln!("heyvm: starting the local daemon on 127.0.0.1:{} (log: {})", heyvm_types::DEFAULT_LOCAL_PORT, log_path.display());
    }
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--api", "--port", &heyvm_types::DEFAULT_LOCAL_PORT.to_string(), "--host", "127.0.0.1"]);
    cmd.env("MVM_DATA_DIR", data.root());
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // SAFETY: setsid is async-signal-safe; the daemon must not die with
    // this terminal session.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn().context("spawning the local daemon")?;
    Ok(())
}

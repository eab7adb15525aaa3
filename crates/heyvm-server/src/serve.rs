//! Running the API server: address policy, daemon lock, background reaper.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use heyvm_core::manager::ManagerConfig;
use heyvm_core::{Backend, DataDir, SandboxManager};
use tokio::signal::unix::{Signal, SignalKind};

use crate::{router, AppState};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: Option<IpAddr>,
    pub port: u16,
    pub data: DataDir,
    pub config: ManagerConfig,
    /// `JWT_SECRET`: when absent the server refuses non-loopback addresses.
    pub jwt_secret: Option<String>,
    /// `JWT_AUDIENCE`: the `aud` tokens must carry (with `jwt_secret`).
    pub jwt_audience: Option<String>,
}

/// Binds, prints where it listens, and serves until the process ends.
pub async fn serve(opts: ServeOptions, backends: Vec<Arc<dyn Backend>>) -> anyhow_like::Result<()> {
    // Handlers first: the warm pool starts filling as the manager opens,
    // and a SIGTERM before the handler existed ended the process at once,
    // leaving a warm sandbox launched mid-way.
    let (mut term, mut int) = (unix_signal(SignalKind::terminate()), unix_signal(SignalKind::interrupt()));
    std::fs::create_dir_all(opts.data.root())?;
    let _lock = lock_data_dir(&opts.data)?;
    raise_fd_limit();
    let auth_on = opts.jwt_secret.is_some();
    let host = match (opts.host, auth_on) {
        (Some(h), true) => h,
        (None, true) => IpAddr::from([0, 0, 0, 0]),
        (Some(h), false) if h.is_loopback() => h,
        (Some(h), false) => {
            return Err(format!(
                "refusing to listen on {h} without authentication: set JWT_SECRET to enable auth, or use a loopback address"
            )
            .into())
        }
        (None, false) => IpAddr::from([127, 0, 0, 1]),
    };
    let mgr = SandboxManager::open(opts.data.clone(), backends, opts.config).await?;
    mgr.spawn_reaper();
    let addr = SocketAddr::new(host, opts.port);
    // Like the lock: a killed predecessor's children can hold its listener
    // until they reach exec, so a port in use is tried again for a moment.
    let listener = {
        let deadline = std::time::Instant::now() + PREDECESSOR_GRACE;
        loop {
            match tokio::net::TcpListener::bind(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                r => break r.map_err(|e| format!("cannot listen on {addr}: {e}"))?,
            }
        }
    };
    let local = listener.local_addr()?;
    startup_warnings();
    let note = if auth_on { "JWT auth enabled" } else { "no JWT_SECRET: loopback only, unauthenticated" };
    println!("heyvm API listening on http://{local} ({note}); data dir {}", opts.data.root().display());
    tracing::info!(%local, backend = mgr.backend_name(), limits = mgr.limits_enforced(), "serving");
    let keys = Arc::new(heyvm_core::api_keys::ApiKeyStore::open(&opts.data.db_path())?);
    let auth = opts.jwt_secret.map(|s| Arc::new(crate::auth::AuthConfig::new(s, opts.jwt_audience).with_api_keys(keys.clone())));
    // API_HOSTNAME: `<subdomain>.<API_HOSTNAME>` on this listener reaches proxy endpoints.
    let api_hostname = heyvm_core::config::string(heyvm_core::config::API_HOSTNAME);
    let proxy = crate::proxy::ProxyHub::new(mgr.clone(), auth.clone(), api_hostname, local.port());
    proxy.start();
    let routed = proxy.api_hostname().is_some();
    let computers = Arc::new(crate::routes::computers::Computers::open(&opts.data.db_path())?);
    let app = router(AppState { mgr: mgr.clone(), auth, proxy: proxy.clone(), keys, computers });
    let guard = Arc::new(crate::guard::GuardConfig::from_env(auth_on)?);
    crate::guard::accept::deepen_backlog(&listener);
    let permits = Arc::new(tokio::sync::Semaphore::new(guard.max_connections));
    let serving = async {
        if routed {
            crate::proxy::accept_routed(listener, permits, proxy, app, guard).await;
        } else {
            crate::guard::accept::accept_loop(listener, permits, |stream, peer, permit| {
                let (app, guard) = (app.clone(), guard.clone());
                tokio::spawn(async move {
                    crate::guard::accept::serve_http(stream, peer, app, guard).await;
                    drop(permit);
                });
            })
            .await;
        }
        anyhow_like::Result::Ok(())
    };
    // SIGTERM / Ctrl-C: stop the hidden warm sandboxes, then exit. Running
    // sandboxes are left alone on purpose (they outlive the daemon).
    tokio::select! {
        r = serving => r?,
        _ = shutdown_signal(&mut term, &mut int) => {
            tracing::info!("shutting down");
            mgr.close_pool().await;
        }
    }
    Ok(())
}

fn unix_signal(kind: SignalKind) -> Option<Signal> {
    tokio::signal::unix::signal(kind).ok()
}

/// SIGTERM or SIGINT (Ctrl-C), through handlers installed at startup.
async fn shutdown_signal(term: &mut Option<Signal>, int: &mut Option<Signal>) {
    async fn recv(s: &mut Option<Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        _ = recv(term) => {}
        _ = recv(int) => {}
    }
}

/// Connections, sandboxes and their agents all take descriptors: use the
/// hard limit rather than the (often 1024) soft one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: get/setrlimit on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// How long a daemon waits for its data directory's lock and its port.
/// A daemon killed (-9) while it was starting a process leaves that child,
/// between fork and exec, holding a copy of every descriptor it had (the
/// lock, the listener) until the child reaches exec; on a loaded host that
/// outlasted a restart's start-up, which then exited at once.
const PREDECESSOR_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// One daemon per data directory: a second one would fight over sandboxes.
fn lock_data_dir(data: &DataDir) -> anyhow_like::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(data.daemon_lock())?;
    let deadline = std::time::Instant::now() + PREDECESSOR_GRACE;
    // SAFETY: flock on a descriptor we own.
    while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        if std::time::Instant::now() >= deadline {
            return Err(format!("another heyvm daemon is already using {}", data.root().display()).into());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(f)
}

/// Boxed errors without pulling anyhow into a library crate.
pub mod anyhow_like {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
}

/// One warning line (the log, stderr) per setting this server does not support, and for
/// S3 volumes that are asked for but cannot work, instead of silence.
fn startup_warnings() {
    let mut warnings = heyvm_core::config::unsupported_settings();
    if let Err(e) = heyvm_core::s3::S3Config::from_env() {
        warnings.push(format!("S3 volumes are off: {e}"));
    }
    for w in warnings {
        tracing::warn!("{w}");
    }
}

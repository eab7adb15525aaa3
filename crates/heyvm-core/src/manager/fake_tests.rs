//! The manager against the fake backend (the real agent in-process): the
//! lifecycle table, exec and bad input, without root or bubblewrap.

use std::sync::Arc;

use heyvm_types::{CreateSandboxRequest, ExecRequest, SandboxStatus};

use super::{ManagerConfig, SandboxManager};
use crate::fake::FakeBackend;
use crate::DataDir;

async fn manager(dir: &std::path::Path) -> Arc<SandboxManager> {
    let config = ManagerConfig { pool_size: 0, ..ManagerConfig::default() };
    SandboxManager::open(DataDir::new(dir.to_path_buf()), vec![Arc::new(FakeBackend)], config).await.unwrap()
}

fn exec(cmd: &str) -> ExecRequest {
    ExecRequest { command: cmd.into(), cwd: Some("/tmp".into()), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_and_exec_through_the_real_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mgr = manager(dir.path()).await;
    let info = mgr.create(CreateSandboxRequest { name: Some("t1".into()), ..Default::default() }).await.unwrap();
    assert_eq!(info.status, SandboxStatus::Running);
    assert_eq!(info.backend_type, "fake");
    let out = mgr.exec("t1", &exec("echo hello; echo oops >&2; exit 3")).await.unwrap();
    assert_eq!((out.stdout.as_str(), out.stderr.as_str(), out.exit_code), ("hello\n", "oops\n", 3));
    // Ten at once, each on its own stream of the one session.
    let runs: Vec<_> = (0..10)
        .map(|i| {
            let mgr = mgr.clone();
            tokio::spawn(async move { mgr.exec("t1", &exec(&format!("echo {i}"))).await.unwrap().stdout })
        })
        .collect();
    for (i, r) in runs.into_iter().enumerate() {
        assert_eq!(r.await.unwrap(), format!("{i}\n"));
    }
    mgr.stop("t1", true).await.unwrap();
    let e = mgr.exec("t1", &exec("true")).await.unwrap_err();
    assert_eq!((e.code(), e.status()), ("invalid_state", 409));
    assert_eq!(mgr.stop("t1", false).await.unwrap_err().code(), "invalid_state");
    mgr.start("t1").await.unwrap();
    assert_eq!(mgr.exec("t1", &exec("echo back")).await.unwrap().stdout, "back\n");
    mgr.delete("t1").await.unwrap();
    assert_eq!(mgr.exec("t1", &exec("true")).await.unwrap_err().code(), "sandbox_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_stable_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mgr = manager(dir.path()).await;
    let bad_name = mgr.create(CreateSandboxRequest { name: Some("no spaces!".into()), ..Default::default() }).await.unwrap_err();
    assert_eq!((bad_name.code(), bad_name.status()), ("invalid_request", 400));
    let bad_backend = mgr.create(CreateSandboxRequest { backend_type: Some("nope".into()), ..Default::default() }).await.unwrap_err();
    assert_eq!(bad_backend.code(), "backend_unavailable");
    mgr.create(CreateSandboxRequest { name: Some("t2".into()), ..Default::default() }).await.unwrap();
    let bad_timeout = mgr.exec("t2", &ExecRequest { timeout_secs: Some(-1.0), ..exec("true") }).await.unwrap_err();
    assert_eq!(bad_timeout.code(), "invalid_request");
    let nul = mgr.exec("t2", &ExecRequest { args: vec!["a\0b".into()], ..exec("echo") }).await.unwrap_err();
    assert_eq!(nul.code(), "invalid_request");
    let missing = mgr.exec("t2", &exec("/no/such/program")).await.unwrap();
    assert_eq!(missing.exit_code, 127);
}

//! The quotas against the fake backend: concurrent creates never pass a
//! limit, a refused create leaves nothing behind, stopped VMs do not count.

use std::sync::Arc;

use async_trait::async_trait;
use heyvm_types::{CreateSandboxRequest, SandboxStatus};

use super::{ManagerConfig, SandboxManager};
use crate::backend::{Backend, BackendResult, Instance, LaunchSpec};
use crate::fake::FakeBackend;
use crate::DataDir;

/// The fake backend, counted as a VM.
struct FakeVm(FakeBackend);

#[async_trait]
impl Backend for FakeVm {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn is_vm(&self) -> bool {
        true
    }
    fn limits_enforced(&self) -> bool {
        false
    }
    fn prepare(&self, spec: &LaunchSpec) -> BackendResult<()> {
        self.0.prepare(spec)
    }
    async fn launch(&self, spec: &LaunchSpec) -> BackendResult<Arc<dyn Instance>> {
        self.0.launch(spec).await
    }
    async fn attach(&self, spec: &LaunchSpec) -> BackendResult<Option<Arc<dyn Instance>>> {
        self.0.attach(spec).await
    }
    async fn cleanup(&self, spec: &LaunchSpec) -> BackendResult<()> {
        self.0.cleanup(spec).await
    }
}

async fn manager(dir: &std::path::Path, backend: Arc<dyn Backend>, max_sandboxes: usize, max_running_vms: usize) -> Arc<SandboxManager> {
    let config = ManagerConfig { pool_size: 0, max_sandboxes, max_running_vms, ..ManagerConfig::default() };
    SandboxManager::open(DataDir::new(dir.to_path_buf()), vec![backend], config).await.unwrap()
}

fn named(name: &str) -> CreateSandboxRequest {
    CreateSandboxRequest { name: Some(name.into()), ..Default::default() }
}

/// Creates `n` sandboxes at once; how many succeeded, and every error's
/// (code, status).
async fn concurrent_creates(mgr: &Arc<SandboxManager>, n: usize) -> (usize, Vec<(&'static str, u16)>) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn({
                let mgr = mgr.clone();
                async move { mgr.create(named(&format!("c{i}"))).await }
            })
        })
        .collect();
    let (mut ok, mut errors) = (0, Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => errors.push((e.code(), e.status())),
        }
    }
    (ok, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_stop_at_the_sandbox_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mgr = manager(dir.path(), Arc::new(FakeBackend), 3, 1).await;
    let (ok, errors) = concurrent_creates(&mgr, 8).await;
    assert_eq!(ok, 3, "{errors:?}");
    assert!(errors.iter().all(|e| *e == ("quota_exceeded", 429)), "{errors:?}");
    assert_eq!(mgr.list(None).unwrap().len(), 3);
    // Not a VM backend: the running-VM limit (1) does not apply.
    assert!(mgr.list(None).unwrap().iter().all(|s| s.status == SandboxStatus::Running));
    let first = mgr.list(None).unwrap()[0].id.clone();
    mgr.delete(&first).await.unwrap();
    mgr.create(named("after-delete")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_vms_stop_at_their_limit_and_stopped_ones_do_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let mgr = manager(dir.path(), Arc::new(FakeVm(FakeBackend)), 100, 2).await;
    let (ok, errors) = concurrent_creates(&mgr, 6).await;
    assert_eq!(ok, 2, "{errors:?}");
    assert!(errors.iter().all(|e| *e == ("quota_exceeded", 429)), "{errors:?}");
    // A refused create leaves no sandbox behind.
    let running: Vec<String> = mgr.list(None).unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(running.len(), 2);
    let e = mgr.create(named("third")).await.unwrap_err();
    assert!(e.to_string().contains("HEYVM_MAX_RUNNING_VMS=2"), "{e}");
    // A stopped VM is no running one: created stopped, fine; started, not.
    let stopped = mgr.create(CreateSandboxRequest { no_start: Some(true), ..named("idle") }).await.unwrap();
    assert_eq!(stopped.status, SandboxStatus::Stopped);
    let e = mgr.start("idle").await.unwrap_err();
    assert_eq!((e.code(), e.status()), ("quota_exceeded", 429));
    assert_eq!(mgr.get("idle").unwrap().status, SandboxStatus::Stopped, "a refused start leaves it as it was");
    mgr.stop(&running[0], false).await.unwrap();
    mgr.start("idle").await.unwrap();
    assert_eq!(mgr.start(&running[0]).await.unwrap_err().code(), "quota_exceeded");
    // A restart keeps its own place.
    mgr.restart("idle").await.unwrap();
}

//! A test double of a backend (feature `fake`, and in this crate's tests):
//! no isolation, but the real agent code. Each "sandbox" is the real
//! `heyvm-agent` serving in a thread of the calling process on a listening
//! socket in the sandbox's directory, so the manager, the router, auth and
//! bad-input handling can be tested end to end without root or bwrap.
//! Commands run on the host as the test's user: use it for trusted test
//! commands only.

use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use heyvm_types::Limits;

use crate::agent::AgentTransport;
use crate::backend::{Backend, BackendError, BackendResult, Instance, LaunchSpec, Liveness, Usage};

#[derive(Default)]
pub struct FakeBackend;

pub struct FakeInstance {
    spec: LaunchSpec,
    alive: AtomicBool,
}

#[async_trait]
impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn limits_enforced(&self) -> bool {
        false
    }

    fn prepare(&self, spec: &LaunchSpec) -> BackendResult<()> {
        for d in [spec.paths.workspace(), spec.paths.root()] {
            std::fs::create_dir_all(&d).map_err(|e| BackendError::io(format!("creating {}", d.display()), e))?;
        }
        Ok(())
    }

    async fn launch(&self, spec: &LaunchSpec) -> BackendResult<Arc<dyn Instance>> {
        let path = spec.paths.agent_socket();
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| BackendError::io("binding the fake agent socket", e))?;
        // The thread outlives a kill (it blocks in poll); the socket file
        // is removed, so nothing reaches it again.
        std::thread::spawn(move || heyvm_agent::run_hosted(heyvm_agent::Source::Listener(listener.into())));
        Ok(Arc::new(FakeInstance { spec: spec.clone(), alive: AtomicBool::new(true) }))
    }

    async fn attach(&self, _spec: &LaunchSpec) -> BackendResult<Option<Arc<dyn Instance>>> {
        Ok(None)
    }

    async fn cleanup(&self, spec: &LaunchSpec) -> BackendResult<()> {
        let _ = std::fs::remove_file(spec.paths.agent_socket());
        Ok(())
    }
}

#[async_trait]
impl Instance for FakeInstance {
    fn liveness(&self) -> Liveness {
        if self.alive.load(Ordering::SeqCst) {
            Liveness::Alive
        } else {
            Liveness::Dead
        }
    }

    async fn kill(&self) -> BackendResult<()> {
        self.alive.store(false, Ordering::SeqCst);
        let _ = std::fs::remove_file(self.spec.paths.agent_socket());
        Ok(())
    }

    fn usage(&self) -> Usage {
        Usage::default()
    }

    fn set_limits(&self, _limits: &Limits) -> BackendResult<()> {
        Ok(())
    }

    async fn connect_agent(&self) -> BackendResult<AgentTransport> {
        if !self.alive.load(Ordering::SeqCst) {
            return Err(BackendError::NotRunning);
        }
        let s = tokio::net::UnixStream::connect(self.spec.paths.agent_socket())
            .await
            .map_err(|e| BackendError::io("connecting to the fake agent", e))?;
        Ok(Box::new(s))
    }

    fn failure_reason(&self) -> Option<String> {
        None
    }
}

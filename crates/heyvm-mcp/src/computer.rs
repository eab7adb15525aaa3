//! The session's computer: the sandbox the `computer_*` tools act on.
//!
//! - ephemeral (default): created at the first tool call, deleted when the
//!   session ends; it carries a TTL so a killed server leaks nothing for long;
//! - persistent (`--persistent NAME`): created if missing, kept, reused by
//!   later sessions;
//! - existing (`--sandbox ID`): used as is, never deleted.

use std::sync::Arc;

use heyvm_types::{CreateSandboxRequest, SizeClass};
use tokio::sync::Mutex;

use crate::ops::{OpError, OpResult, SandboxOps};

/// Which sandbox a session's computer is.
#[derive(Debug, Clone)]
pub enum ComputerMode {
    Ephemeral,
    Persistent(String),
    Existing(String),
}

/// How to create the computer when it does not exist yet.
#[derive(Debug, Clone)]
pub struct ComputerConfig {
    pub mode: ComputerMode,
    pub size_class: Option<SizeClass>,
    pub image: Option<String>,
    pub backend: Option<String>,
    /// TTL of an ephemeral computer, in seconds of running time.
    pub ephemeral_ttl_secs: u64,
}

impl Default for ComputerConfig {
    fn default() -> Self {
        ComputerConfig { mode: ComputerMode::Ephemeral, size_class: None, image: None, backend: None, ephemeral_ttl_secs: 3600 }
    }
}

/// One session's computer. Clones share it; when the last clone goes, an
/// ephemeral computer is deleted (best effort; [`Computer::close`] is the
/// reliable way and is what `heyvm mcp` calls on exit).
#[derive(Clone)]
pub struct Computer {
    inner: Arc<Inner>,
}

struct Inner {
    ops: Arc<dyn SandboxOps>,
    config: ComputerConfig,
    id: Mutex<Option<String>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !matches!(self.config.mode, ComputerMode::Ephemeral) {
            return;
        }
        let Some(id) = self.id.get_mut().take() else { return };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let ops = self.ops.clone();
            rt.spawn(async move {
                if let Err(e) = ops.delete(&id).await {
                    tracing::warn!(sandbox = %id, error = %e, "could not delete an ephemeral MCP computer");
                }
            });
        }
    }
}

impl Computer {
    pub fn new(ops: Arc<dyn SandboxOps>, config: ComputerConfig) -> Self {
        Computer { inner: Arc::new(Inner { ops, config, id: Mutex::new(None) }) }
    }

    pub fn ops(&self) -> &Arc<dyn SandboxOps> {
        &self.inner.ops
    }

    /// The computer's sandbox id, creating (or finding) it on first use.
    pub async fn id(&self) -> OpResult<String> {
        let mut slot = self.inner.id.lock().await;
        if let Some(id) = slot.as_ref() {
            return Ok(id.clone());
        }
        let ops = &self.inner.ops;
        let c = &self.inner.config;
        let create = |name: Option<String>, ttl: Option<u64>| CreateSandboxRequest {
            name,
            size_class: c.size_class,
            image: c.image.clone(),
            backend_type: c.backend.clone(),
            ttl_seconds: ttl,
            ..Default::default()
        };
        let id = match &c.mode {
            ComputerMode::Existing(id) => ops.get(id).await?.id,
            ComputerMode::Persistent(name) => match ops.get(name).await {
                Ok(info) => info.id,
                Err(e) if e.code == "sandbox_not_found" => ops.create(create(Some(name.clone()), None)).await?.id,
                Err(e) => return Err(e),
            },
            ComputerMode::Ephemeral => ops.create(create(None, Some(c.ephemeral_ttl_secs))).await?.id,
        };
        *slot = Some(id.clone());
        Ok(id)
    }

    /// Ends the session: deletes an ephemeral computer if one was created.
    pub async fn close(&self) -> OpResult<()> {
        if !matches!(self.inner.config.mode, ComputerMode::Ephemeral) {
            return Ok(());
        }
        let id = self.inner.id.lock().await.take();
        match id {
            Some(id) => match self.inner.ops.delete(&id).await {
                Err(e) if e.code != "sandbox_not_found" => Err(e),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }
}

impl From<String> for OpError {
    fn from(message: String) -> Self {
        OpError { code: "invalid_request".into(), message }
    }
}

//! Interactive shells: opening a PTY shell in a sandbox and the registry of
//! sessions that survive dropped client connections (see [`crate::shell`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use heyvm_protocol::ShellSpec;

use super::SandboxManager;
use crate::agent::ShellEvent;
use crate::error::{CoreError, Result};
use crate::shell::{ShellSession, ShellSessions};

/// Largest accepted terminal dimension.
const MAX_DIMENSION: u16 = 4096;

/// What a client asks for when it opens a shell.
#[derive(Debug, Clone, Default)]
pub struct ShellRequest {
    pub cols: u16,
    pub rows: u16,
    pub env: Option<BTreeMap<String, String>>,
    pub cwd: Option<String>,
    /// A program instead of the login shell.
    pub argv: Option<Vec<String>>,
    /// Run as this sandbox user (default: the image's `User`, else root).
    pub user: Option<String>,
}

/// Checks a terminal size from a client.
pub fn terminal_size(cols: u64, rows: u64) -> Result<(u16, u16)> {
    let ok = |v: u64| (1..=MAX_DIMENSION as u64).contains(&v);
    if !ok(cols) || !ok(rows) {
        return Err(CoreError::invalid(format!("terminal size {cols}x{rows} is out of range (1..={MAX_DIMENSION})")));
    }
    Ok((cols as u16, rows as u16))
}

impl SandboxManager {
    pub fn shell_sessions(&self) -> &ShellSessions {
        &self.shells
    }

    /// Starts a shell in a running sandbox and registers its session.
    pub async fn open_shell(&self, key: &str, req: &ShellRequest) -> Result<Arc<ShellSession>> {
        let rec = self.require_running(key, "open a shell")?;
        let (cols, rows) = terminal_size(req.cols as u64, req.rows as u64)?;
        if self.shells.len() >= crate::shell::MAX_SESSIONS {
            return Err(CoreError::Conflict(format!("too many open shell sessions (limit {})", crate::shell::MAX_SESSIONS)));
        }
        let (env, cwd) = self.command_env_cwd(&rec, req.env.as_ref(), req.cwd.as_deref())?;
        if let Some(argv) = &req.argv {
            if argv.is_empty() || argv.iter().any(|a| a.contains('\0')) {
                return Err(CoreError::invalid("argv must be a non-empty list of strings without NUL bytes"));
            }
        }
        let user = super::exec::command_user(&rec, req.user.as_deref())?;
        let spec = ShellSpec { argv: req.argv.clone(), env, cwd, cols, rows, user };
        let unreachable = |e: std::io::Error| CoreError::AgentUnreachable(e.to_string());
        let (mut reader, writer) = self.agent(&rec).await?.shell(spec).await.map_err(unreachable)?;
        match reader.next().await {
            Ok(ShellEvent::Started { .. }) => {}
            Ok(other) => return Err(CoreError::AgentUnreachable(format!("unexpected first shell event: {other:?}"))),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => return Err(CoreError::InvalidRequest(e.to_string())),
            Err(e) => return Err(unreachable(e)),
        }
        let session = ShellSession::spawn(&rec.id, reader, writer);
        self.shells.insert(session.clone());
        tracing::info!(session = %session.id, sandbox = %rec.id, "shell session opened");
        Ok(session)
    }

    /// A live session of sandbox `key`; `Ok(None)` when it expired or
    /// belongs to another sandbox.
    pub fn find_shell(&self, key: &str, session_id: &str) -> Result<Option<Arc<ShellSession>>> {
        let rec = self.store.resolve(key)?;
        Ok(self.shells.get(session_id, &rec.id))
    }
}

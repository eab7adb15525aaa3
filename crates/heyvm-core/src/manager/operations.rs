//! Async exec operations: a command started under a client-chosen
//! `operationId`, run in the background, its record (and result) kept in
//! SQLite. Idempotent: replaying an id with the same command returns the
//! existing record; with a different command it is a conflict.

use std::sync::Arc;

use heyvm_types::{CommandLine, ExecOperation, ExecOperationRequest, ExecRequest, OperationResult, OperationStatus};

use super::SandboxManager;
use crate::error::{CoreError, Result};
use crate::record::now_secs;

fn validate_operation_id(id: &str) -> Result<()> {
    let ok = (1..=160).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(CoreError::invalid("operationId must be 1-160 characters of [A-Za-z0-9._-]"));
    }
    Ok(())
}

fn exec_request(req: &ExecOperationRequest) -> Result<ExecRequest> {
    let (command, args) = match &req.command {
        CommandLine::Shell(s) => ("/bin/sh".to_string(), vec!["-c".to_string(), s.clone()]),
        CommandLine::Argv(v) => match v.split_first() {
            Some((c, rest)) => (c.clone(), rest.to_vec()),
            None => return Err(CoreError::invalid("command is empty")),
        },
    };
    Ok(ExecRequest { command, args, cwd: req.cwd.clone(), env: req.env.clone(), timeout_secs: req.timeout_secs, ..Default::default() })
}

impl SandboxManager {
    /// Returns the record and whether it was newly created.
    pub async fn start_operation(self: &Arc<Self>, key: &str, req: ExecOperationRequest) -> Result<(ExecOperation, bool)> {
        validate_operation_id(&req.operation_id)?;
        let rec = self.store.resolve(key)?;
        if let Some(existing) = self.store.get_operation(&rec.id, &req.operation_id)? {
            if existing.command != req.command {
                return Err(CoreError::Conflict(format!("operation '{}' already exists with a different command", req.operation_id)));
            }
            return Ok((existing, false));
        }
        let exec = exec_request(&req)?;
        // Validate now so a bad request is a 4xx, not a failed operation.
        self.exec_spec(&rec, &exec)?;
        let now = now_secs();
        let op = ExecOperation {
            operation_id: req.operation_id.clone(),
            sandbox_id: rec.id.clone(),
            status: OperationStatus::Queued,
            command: req.command.clone(),
            result: None,
            error: None,
            created_at: now,
            updated_at: now,
            completed_at: None,
        };
        self.store.insert_operation(&op)?;
        let me = self.clone();
        let mut op2 = op.clone();
        tokio::spawn(async move {
            op2.status = OperationStatus::Running;
            op2.updated_at = now_secs();
            let _ = me.store.update_operation(&op2);
            match me.exec(&op2.sandbox_id, &exec).await {
                Ok(r) => {
                    op2.status = OperationStatus::Completed;
                    op2.result = Some(OperationResult {
                        output: r.output,
                        stdout: r.stdout,
                        stderr: r.stderr,
                        exit_code: r.exit_code,
                        timed_out: r.timed_out,
                    });
                }
                Err(e) => {
                    op2.status = OperationStatus::Failed;
                    op2.error = Some(e.to_string());
                }
            }
            op2.updated_at = now_secs();
            op2.completed_at = Some(op2.updated_at);
            if let Err(e) = me.store.update_operation(&op2) {
                tracing::warn!(op = %op2.operation_id, error = %e, "cannot record operation result");
            }
        });
        Ok((op, true))
    }

    pub fn get_operation(&self, key: &str, operation_id: &str) -> Result<ExecOperation> {
        let rec = self.store.resolve(key)?;
        self.store.get_operation(&rec.id, operation_id)?.ok_or_else(|| CoreError::FileNotFound(format!("operation {operation_id}")))
    }

    /// Operations interrupted by a daemon restart cannot be resumed: their
    /// agent connection (and so the command) died with the old daemon.
    pub(super) fn fail_interrupted_operations(&self) -> Result<()> {
        for mut op in self.store.unfinished_operations()? {
            op.status = OperationStatus::Failed;
            op.error = Some("the daemon restarted while the operation was running; its command was stopped".into());
            op.updated_at = now_secs();
            op.completed_at = Some(op.updated_at);
            self.store.update_operation(&op)?;
        }
        Ok(())
    }
}

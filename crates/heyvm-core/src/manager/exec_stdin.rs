//! Standard input for execs: decoding the API's `stdin` field and feeding it
//! to the agent from a task of its own.
//!
//! Feeding runs beside the output reader, never before it: a command that
//! writes while it reads (`cat`, `sort` on big input) fills its output pipe,
//! and a host that only wrote stdin until done would wait on it forever.

use std::sync::Arc;

use base64::Engine;
use heyvm_types::ExecRequest;

use super::RunningExec;
use crate::agent::AgentStdin;
use crate::error::{CoreError, Result};

/// Stdin is sent to the agent in pieces of this size, keeping each frame
/// well below the pipe buffer so the agent's write never waits long.
const STDIN_CHUNK: usize = 16 * 1024;

/// Largest `stdin` accepted in a request body (after decoding).
pub const MAX_STDIN_BYTES: usize = 64 * 1024 * 1024;

/// The bytes of `req.stdin`, decoded per `stdin_encoding`; None when absent.
pub fn decode_stdin(req: &ExecRequest) -> Result<Option<Vec<u8>>> {
    let Some(text) = &req.stdin else {
        if req.stdin_encoding.is_some() {
            return Err(CoreError::invalid("stdin_encoding given without stdin"));
        }
        return Ok(None);
    };
    let bytes = match req.stdin_encoding.as_deref().unwrap_or("utf8") {
        "utf8" | "utf-8" | "text" => text.as_bytes().to_vec(),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| CoreError::invalid(format!("stdin is not valid base64: {e}")))?,
        other => return Err(CoreError::invalid(format!("stdin_encoding must be \"utf8\" or \"base64\", got \"{other}\""))),
    };
    if bytes.len() > MAX_STDIN_BYTES {
        return Err(CoreError::PayloadTooLarge(format!("stdin is larger than {} MiB", MAX_STDIN_BYTES >> 20)));
    }
    Ok(Some(bytes))
}

/// The task feeding an exec's stdin. It keeps the stdin side open after
/// the input ends (closing it would kill the command) and is stopped when
/// the exec is dropped.
pub struct StdinFeeder(tokio::task::JoinHandle<()>);

impl Drop for StdinFeeder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl StdinFeeder {
    pub fn spawn(mut stdin: AgentStdin, data: Vec<u8>) -> Self {
        StdinFeeder(tokio::spawn(async move {
            for chunk in data.chunks(STDIN_CHUNK) {
                if stdin.send(chunk).await.is_err() {
                    return;
                }
            }
            if stdin.close().await.is_err() {
                return;
            }
            // Hold the stream open until the exec is dropped (abort).
            std::future::pending::<()>().await;
            drop(stdin);
        }))
    }
}

impl super::SandboxManager {
    /// Starts a command whose stdin the caller feeds (the exec WebSocket).
    /// The request's own `stdin`, if any, is returned decoded, to be sent
    /// first.
    pub async fn start_exec_interactive(self: &Arc<Self>, key: &str, req: &ExecRequest) -> Result<(RunningExec, AgentStdin, Vec<u8>)> {
        let first = decode_stdin(req)?.unwrap_or_default();
        let mut run = self.open_exec(key, req, true).await?;
        let stdin = run.agent.take_stdin().ok_or_else(|| CoreError::AgentUnreachable("exec has no stdin".into()))?;
        Ok((run, stdin, first))
    }
}

impl RunningExec {
    /// Starts feeding `data` (then EOF) to the command.
    pub(super) fn feed_stdin(&mut self, data: Vec<u8>) {
        if let Some(stdin) = self.agent.take_stdin() {
            self.stdin_feeder = Some(StdinFeeder::spawn(stdin, data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(stdin: Option<&str>, enc: Option<&str>) -> ExecRequest {
        ExecRequest { stdin: stdin.map(String::from), stdin_encoding: enc.map(String::from), ..Default::default() }
    }

    #[test]
    fn decodes_text_and_base64() {
        assert_eq!(decode_stdin(&req(None, None)).unwrap(), None);
        assert_eq!(decode_stdin(&req(Some("hi\n"), None)).unwrap().unwrap(), b"hi\n");
        assert_eq!(decode_stdin(&req(Some("AAEC/w=="), Some("base64"))).unwrap().unwrap(), vec![0, 1, 2, 255]);
        assert_eq!(decode_stdin(&req(Some("!!"), Some("base64"))).unwrap_err().code(), "invalid_request");
        assert_eq!(decode_stdin(&req(Some("x"), Some("rot13"))).unwrap_err().code(), "invalid_request");
        assert_eq!(decode_stdin(&req(None, Some("base64"))).unwrap_err().code(), "invalid_request");
    }
}

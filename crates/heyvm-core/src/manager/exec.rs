//! Running commands inside a sandbox through its agent.

use std::collections::BTreeMap;
use std::sync::Arc;

use heyvm_protocol::ExecSpec;
use heyvm_types::{ExecRequest, ExecResponse};

use super::{validate, SandboxManager};
use crate::agent::{AgentExec, ExecEvent};
use crate::backend::Instance;
use crate::error::{CoreError, Result};
use crate::record::SandboxRecord;

/// Longest timeout accepted: one day.
const MAX_TIMEOUT_SECS: f64 = 86_400.0;
/// Per-stream cap on what a buffered exec returns; the rest is dropped (the
/// streaming endpoint has no cap).
pub const MAX_BUFFERED_OUTPUT: usize = 64 * 1024 * 1024;

/// An exec in flight. Dropping it kills the command.
pub struct RunningExec {
    pub agent: AgentExec,
    /// Counts the sandbox busy (not idle) while the exec runs.
    _busy: super::idle::BusyGuard,
    instance: Arc<dyn Instance>,
    oom_before: u64,
    /// Feeds the request's `stdin` (see `exec_stdin.rs`).
    pub(super) stdin_feeder: Option<super::exec_stdin::StdinFeeder>,
}

impl RunningExec {
    /// The one OOM verdict: the command was SIGKILLed, not by its timeout,
    /// and the sandbox's OOM-kill counter moved since the exec started.
    pub fn oom_killed(&self, status: &heyvm_protocol::ExitStatus) -> bool {
        status.signal == Some(libc::SIGKILL) && !status.timed_out && self.instance.oom_kills() > self.oom_before
    }
}

/// Who a command or shell runs as: the request's user, else the image
/// config's `User`, else root (`None`).
pub(crate) fn command_user(rec: &SandboxRecord, requested: Option<&str>) -> Result<Option<String>> {
    if let Some(u) = requested {
        validate::user(u)?;
        return Ok(Some(u.to_string()));
    }
    Ok(rec.image_user.clone().filter(|u| !u.is_empty()))
}

impl SandboxManager {
    pub(crate) fn base_env(&self, rec: &SandboxRecord) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([
            ("PATH".to_string(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()),
            ("HOME".to_string(), "/root".to_string()),
            ("USER".to_string(), "root".to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("HOSTNAME".to_string(), rec.slug.clone()),
            ("HEYVM_SANDBOX_ID".to_string(), rec.id.clone()),
        ]);
        env.extend(rec.env_vars.clone());
        env
    }

    /// Turns an API exec request into what the agent runs. A `command` with
    /// no `args` that contains spaces or shell syntax runs under `/bin/sh -c`,
    /// so `{"command": "ls -la | wc -l"}` does what a person means.
    pub(crate) fn exec_spec(&self, rec: &SandboxRecord, req: &ExecRequest) -> Result<ExecSpec> {
        validate::command_text(&req.command, "command")?;
        if req.args.iter().any(|a| a.contains('\0')) {
            return Err(CoreError::invalid("an argument contains a NUL byte"));
        }
        let needs_shell =
            req.args.is_empty() && req.command.contains(|c: char| c.is_whitespace() || "|&;<>()$`\\\"'*?[]#~=%{}".contains(c));
        let argv = if needs_shell {
            vec!["/bin/sh".into(), "-c".into(), req.command.clone()]
        } else {
            std::iter::once(req.command.clone()).chain(req.args.iter().cloned()).collect()
        };
        let timeout_ms = match req.timeout_secs {
            None => None,
            Some(t) if t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_SECS => Some((t * 1000.0).ceil() as u64),
            Some(t) => return Err(CoreError::invalid(format!("timeout_secs must be between 0 and {MAX_TIMEOUT_SECS}, got {t}"))),
        };
        let (env, cwd) = self.command_env_cwd(rec, req.env.as_ref(), req.cwd.as_deref())?;
        let user = command_user(rec, req.user.as_deref())?;
        Ok(ExecSpec { argv, env, cwd, timeout_ms, stdin: req.stdin.is_some(), background: req.background, user })
    }

    /// The environment (sandbox defaults plus `extra`) and working
    /// directory (`cwd` or the sandbox's) for a command or shell.
    pub(crate) fn command_env_cwd(
        &self,
        rec: &SandboxRecord,
        extra: Option<&BTreeMap<String, String>>,
        cwd: Option<&str>,
    ) -> Result<(BTreeMap<String, String>, String)> {
        let mut env = self.base_env(rec);
        if let Some(extra) = extra {
            validate::env(extra)?;
            env.extend(extra.clone());
        }
        let cwd = match cwd {
            Some(c) => validate::sandbox_path(c, "cwd")?,
            None => rec.working_directory.clone(),
        };
        Ok((env, cwd))
    }

    /// Starts a command and returns its event stream; the request's
    /// `stdin`, if any, is fed to it.
    pub async fn start_exec(self: &Arc<Self>, key: &str, req: &ExecRequest) -> Result<RunningExec> {
        let input = super::exec_stdin::decode_stdin(req)?;
        let mut run = self.open_exec(key, req, input.is_some()).await?;
        if let Some(data) = input {
            run.feed_stdin(data);
        }
        Ok(run)
    }

    /// Starts a command; with `stdin` its stdin is a pipe the caller feeds
    /// through `run.agent.take_stdin()`.
    pub(super) async fn open_exec(self: &Arc<Self>, key: &str, req: &ExecRequest, stdin: bool) -> Result<RunningExec> {
        let rec = self.prepare_use(key).await?;
        super::transitions::check(&rec, super::transitions::Action::Use("exec"))?;
        let mut spec = self.exec_spec(&rec, req)?;
        spec.stdin = stdin;
        let client = self.agent(&rec).await?;
        let instance = self.instance_of(&rec).await?.instance.clone();
        let oom_before = instance.oom_kills();
        let agent = client.exec(spec).await.map_err(|e| CoreError::AgentUnreachable(e.to_string()))?;
        let _busy = self.busy_guard(&rec.id);
        Ok(RunningExec { agent, _busy, instance, oom_before, stdin_feeder: None })
    }

    /// Runs a command to completion and returns its buffered output.
    pub async fn exec(self: &Arc<Self>, key: &str, req: &ExecRequest) -> Result<ExecResponse> {
        let mut run = self.start_exec(key, req).await?;
        let (mut out, mut err, mut merged) = (Vec::new(), Vec::new(), Vec::new());
        let mut truncated = false;
        let status = loop {
            let ev = run.agent.next().await.map_err(agent_error)?;
            match ev {
                ExecEvent::Started { .. } => {}
                ExecEvent::Stdout(d) => truncated |= append_capped(&mut out, &mut merged, &d),
                ExecEvent::Stderr(d) => truncated |= append_capped(&mut err, &mut merged, &d),
                ExecEvent::Exit(s) => break s,
            }
        };
        let oom_killed = run.oom_killed(&status);
        let mut stderr = String::from_utf8_lossy(&err).into_owned();
        let mut output = String::from_utf8_lossy(&merged).into_owned();
        let mut note = |msg: String| {
            stderr.push_str(&msg);
            output.push_str(&msg);
        };
        if truncated {
            note(format!("\n[heyvm: output truncated at {} MiB per stream]\n", MAX_BUFFERED_OUTPUT >> 20));
        }
        if status.timed_out {
            note(format!("\n[heyvm: command timed out after {}s; its process group was killed]\n", req.timeout_secs.unwrap_or(0.0)));
        }
        if oom_killed {
            note("\n[heyvm: command was killed for exceeding the sandbox memory limit]\n".to_string());
        }
        Ok(ExecResponse {
            output,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr,
            exit_code: status.code,
            timed_out: status.timed_out,
            oom_killed,
            signal: status.signal,
            duration_ms: status.duration_ms,
        })
    }

    /// Runs a setup hook under `sh -c`, appending its output to the log.
    pub(super) async fn run_hook(&self, rec: &SandboxRecord, hook: &str) -> std::io::Result<i32> {
        // Setup hooks prepare the sandbox: root, whatever the image's User.
        let req =
            ExecRequest { command: "/bin/sh".into(), args: vec!["-c".into(), hook.into()], user: Some("0".into()), ..Default::default() };
        let spec = self.exec_spec(rec, &req).map_err(std::io::Error::other)?;
        let mut run = self.agent(rec).await.map_err(|e| std::io::Error::other(e.to_string()))?.exec(spec).await?;
        let mut pending = String::new();
        loop {
            match run.next().await? {
                ExecEvent::Stdout(d) | ExecEvent::Stderr(d) => {
                    pending.push_str(&String::from_utf8_lossy(&d));
                    while let Some(i) = pending.find('\n') {
                        self.append_log(rec, "setup", &pending[..i]);
                        pending.drain(..=i);
                    }
                }
                ExecEvent::Started { .. } => {}
                ExecEvent::Exit(s) => {
                    if !pending.is_empty() {
                        self.append_log(rec, "setup", &pending);
                    }
                    return Ok(s.code);
                }
            }
        }
    }
}

fn append_capped(stream: &mut Vec<u8>, merged: &mut Vec<u8>, data: &[u8]) -> bool {
    let room = MAX_BUFFERED_OUTPUT.saturating_sub(stream.len());
    let take = room.min(data.len());
    stream.extend_from_slice(&data[..take]);
    merged.extend_from_slice(&data[..take]);
    take < data.len()
}

fn agent_error(e: std::io::Error) -> CoreError {
    if e.kind() == std::io::ErrorKind::InvalidInput {
        // The agent rejected the request (e.g. missing working directory).
        CoreError::InvalidRequest(e.to_string())
    } else {
        CoreError::AgentUnreachable(e.to_string())
    }
}

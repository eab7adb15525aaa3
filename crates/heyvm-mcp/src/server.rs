//! The MCP tool server: `computer_*` on the session's computer and
//! `sandbox_*` for managing sandboxes. Failures are tool errors
//! (`isError: true` with a sentence), never protocol errors or a crash.

use base64::Engine;
use heyvm_types::{CreateSandboxRequest, ExecRequest, ExecResponse};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ProtocolVersion, ServerCapabilities, ServerConfig};
use rmcp::{tool, tool_handler, tool_router, ErrorData, ServerHandler};
use serde_json::{json, Value};

use crate::computer::Computer;
use crate::files;
use crate::params::*;

/// Default `computer_run` timeout.
const RUN_TIMEOUT_SECS: f64 = 300.0;

type ToolResult = Result<CallToolResult, ErrorData>;

#[derive(Clone)]
pub struct HeyvmMcp {
    computer: Computer,
    #[expect(dead_code, reason = "read by the code #[tool_handler] generates")]
    tool_router: ToolRouter<Self>,
}

fn tool_error(e: impl std::fmt::Display) -> ToolResult {
    Ok(CallToolResult::error(vec![ContentBlock::text(e.to_string())]))
}

/// A result with a one-line text for people and structured JSON for programs.
fn structured(text: String, value: Value) -> ToolResult {
    let mut r = CallToolResult::structured(value);
    r.content = vec![ContentBlock::text(text)];
    Ok(r)
}

fn json_result(value: Value) -> ToolResult {
    Ok(CallToolResult::structured(value))
}

fn exec_json(r: &ExecResponse) -> Value {
    json!({"stdout": r.stdout, "stderr": r.stderr, "exit_code": r.exit_code, "timed_out": r.timed_out, "oom_killed": r.oom_killed})
}

fn exec_text(r: &ExecResponse) -> String {
    let mut t = format!("exit code: {}", r.exit_code);
    if r.timed_out {
        t.push_str(" (timed out)");
    }
    t.push_str(&format!("\n--- stdout ---\n{}", r.stdout));
    if !r.stderr.is_empty() {
        t.push_str(&format!("\n--- stderr ---\n{}", r.stderr));
    }
    t
}

#[tool_router]
impl HeyvmMcp {
    pub fn new(computer: Computer) -> Self {
        HeyvmMcp { computer, tool_router: Self::tool_router() }
    }

    #[tool(
        description = "Run a shell command on your computer (a persistent Linux sandbox; /workspace keeps files). Returns stdout, stderr and the exit code. Use for installing packages, running programs and tests, git, inspecting files."
    )]
    async fn computer_run(&self, Parameters(p): Parameters<RunParams>) -> ToolResult {
        let id = match self.computer.id().await {
            Ok(id) => id,
            Err(e) => return tool_error(format!("the computer is not available: {e}")),
        };
        let req = ExecRequest {
            command: "/bin/sh".into(),
            args: vec!["-c".into(), p.command],
            cwd: p.cwd,
            env: p.env,
            timeout_secs: Some(p.timeout_secs.unwrap_or(RUN_TIMEOUT_SECS)),
            stdin: p.stdin,
            ..Default::default()
        };
        match self.computer.ops().exec(&id, req).await {
            Ok(r) => structured(exec_text(&r), exec_json(&r)),
            Err(e) => tool_error(e),
        }
    }

    #[tool(
        description = "Write a file on your computer (creates parent directories; replaces the file atomically). Paths are absolute or relative to /workspace."
    )]
    async fn computer_write_file(&self, Parameters(p): Parameters<WriteFileParams>) -> ToolResult {
        let bytes = match p.encoding.unwrap_or_default() {
            Encoding::Utf8 => p.content.into_bytes(),
            Encoding::Base64 => match base64::engine::general_purpose::STANDARD.decode(p.content.trim()) {
                Ok(b) => b,
                Err(e) => return tool_error(format!("content is not valid base64: {e}")),
            },
        };
        let size = bytes.len();
        let id = match self.computer.id().await {
            Ok(id) => id,
            Err(e) => return tool_error(format!("the computer is not available: {e}")),
        };
        match self.computer.ops().write_file(&id, &p.path, bytes).await {
            Ok(_) => structured(format!("wrote {size} bytes to {}", p.path), json!({"path": p.path, "size": size})),
            Err(e) => tool_error(format!("could not write {}: {}", p.path, e.message)),
        }
    }

    #[tool(
        description = "Read a file on your computer. Returns its text (or base64 for binary content) from byte `offset`, at most `limit` bytes, and the file's total size."
    )]
    async fn computer_read_file(&self, Parameters(p): Parameters<ReadFileParams>) -> ToolResult {
        let offset = p.offset.unwrap_or(0);
        let id = match self.computer.id().await {
            Ok(id) => id,
            Err(e) => return tool_error(format!("the computer is not available: {e}")),
        };
        let (size, bytes) = match self.computer.ops().read_file(&id, &p.path, offset, files::read_limit(p.limit)).await {
            Ok(r) => r,
            Err(e) if e.code == "file_not_found" => return tool_error(format!("could not read {}: no such file", p.path)),
            Err(e) => return tool_error(format!("could not read {}: {}", p.path, e.message)),
        };
        let bytes_read = bytes.len();
        let (content, encoding) = files::shown(bytes);
        let text = if encoding == "utf8" { content.clone() } else { format!("(binary, base64) {content}") };
        let v = json!({"path": p.path, "size": size, "offset": offset, "bytes_read": bytes_read,
            "encoding": encoding, "content": content});
        structured(text, v)
    }

    #[tool(
        description = "Create a new sandbox (an isolated Linux machine) and start it. size_class: micro (0.25 vCPU, 512 MiB), mini (0.5, 1 GiB), small (1, 2 GiB, default), medium (2, 4 GiB), large (4, 8 GiB), xlarge (8, 16 GiB). backend: bubblewrap (default). Returns its info (id, status, …)."
    )]
    async fn sandbox_create(&self, Parameters(p): Parameters<CreateParams>) -> ToolResult {
        let req = CreateSandboxRequest {
            name: p.name,
            size_class: p.size_class.map(Into::into),
            image: p.image,
            backend_type: p.backend,
            ttl_seconds: p.ttl_seconds,
            idle_timeout_seconds: p.idle_timeout_seconds,
            env_vars: p.env,
            network: p.network,
            ..Default::default()
        };
        match self.computer.ops().create(req).await {
            Ok(info) => json_result(json!(info)),
            Err(e) => tool_error(e),
        }
    }

    #[tool(description = "List all sandboxes (running and stopped) with their id, name, status, size class and URLs.")]
    async fn sandbox_list(&self) -> ToolResult {
        match self.computer.ops().list().await {
            Ok(list) => json_result(json!({ "sandboxes": list })),
            Err(e) => tool_error(e),
        }
    }

    #[tool(description = "Show one sandbox: status, resources, URLs, TTL, idle timeout, why it is stopped.")]
    async fn sandbox_get(&self, Parameters(p): Parameters<IdParams>) -> ToolResult {
        match self.computer.ops().get(&p.id).await {
            Ok(info) => json_result(json!(info)),
            Err(e) => tool_error(e),
        }
    }

    #[tool(description = "Start a stopped sandbox (its files are kept).")]
    async fn sandbox_start(&self, Parameters(p): Parameters<IdParams>) -> ToolResult {
        match self.computer.ops().action(&p.id, "start").await {
            Ok(info) => json_result(json!(info)),
            Err(e) => tool_error(e),
        }
    }

    #[tool(description = "Stop a running sandbox (its files are kept; start it again later).")]
    async fn sandbox_stop(&self, Parameters(p): Parameters<IdParams>) -> ToolResult {
        match self.computer.ops().action(&p.id, "stop").await {
            Ok(info) => json_result(json!(info)),
            Err(e) => tool_error(e),
        }
    }

    #[tool(description = "Delete a sandbox with all its files. This cannot be undone.")]
    async fn sandbox_delete(&self, Parameters(p): Parameters<IdParams>) -> ToolResult {
        match self.computer.ops().delete(&p.id).await {
            Ok(()) => json_result(json!({ "id": p.id, "deleted": true })),
            Err(e) => tool_error(e),
        }
    }

    #[tool(description = "Run a command in a given sandbox (not your computer). Returns stdout, stderr and the exit code.")]
    async fn sandbox_exec(&self, Parameters(p): Parameters<ExecParams>) -> ToolResult {
        let req = ExecRequest {
            command: p.command,
            args: p.args,
            cwd: p.cwd,
            env: p.env,
            timeout_secs: Some(p.timeout_secs.unwrap_or(RUN_TIMEOUT_SECS)),
            stdin: p.stdin,
            ..Default::default()
        };
        match self.computer.ops().exec(&p.id, req).await {
            Ok(r) => structured(exec_text(&r), exec_json(&r)),
            Err(e) => tool_error(e),
        }
    }

    #[tool(description = "Expose a port of a sandbox through the proxy and return its URL (for a web server running inside).")]
    async fn sandbox_bind_port(&self, Parameters(p): Parameters<BindParams>) -> ToolResult {
        match self.computer.ops().bind_port(&p.id, p.port, p.public.unwrap_or(true)).await {
            Ok(ep) => structured(ep.url.clone(), json!(ep)),
            Err(e) => tool_error(e),
        }
    }
}

#[tool_handler]
impl ServerHandler for HeyvmMcp {
    /// Up to 2025-11-25: the computer lives as long as the MCP session, and
    /// 2026-07-28 has no sessions (every request stands alone).
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("heyvm", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "heyvm gives you a Linux computer: computer_run runs shell commands, computer_write_file and \
                 computer_read_file move files (paths absolute or relative to /workspace). sandbox_* tools manage \
                 other sandboxes.",
            )
    }
}

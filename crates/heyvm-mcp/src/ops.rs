//! What the MCP tools need from heyvm, as a trait: the API server
//! implements it on its manager (in-process), `heyvm mcp` on the HTTP client.

use heyvm_types::{CreateSandboxRequest, ExecRequest, ExecResponse, ProxyEndpoint, SandboxInfo};

/// A failed operation: a stable code (as in the HTTP API) and a sentence.
#[derive(Debug, Clone)]
pub struct OpError {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

pub type OpResult<T> = Result<T, OpError>;

#[async_trait::async_trait]
pub trait SandboxOps: Send + Sync + 'static {
    async fn create(&self, req: CreateSandboxRequest) -> OpResult<SandboxInfo>;
    async fn list(&self) -> OpResult<Vec<SandboxInfo>>;
    async fn get(&self, id: &str) -> OpResult<SandboxInfo>;
    /// `action`: start, stop.
    async fn action(&self, id: &str, action: &str) -> OpResult<SandboxInfo>;
    async fn delete(&self, id: &str) -> OpResult<()>;
    async fn exec(&self, id: &str, req: ExecRequest) -> OpResult<ExecResponse>;
    async fn bind_port(&self, id: &str, port: u16, public: bool) -> OpResult<ProxyEndpoint>;
    /// Up to `limit` bytes from `offset` of a file anywhere in the sandbox
    /// (absolute, or relative to /workspace), through its agent; returns
    /// the file's size and the bytes.
    async fn read_file(&self, id: &str, path: &str, offset: u64, limit: u64) -> OpResult<(u64, Vec<u8>)>;
    /// Replaces (or creates, with its parents) a file anywhere in the
    /// sandbox atomically; returns its size.
    async fn write_file(&self, id: &str, path: &str, data: Vec<u8>) -> OpResult<u64>;
}

/// A computer's file path: absolute as given, otherwise under /workspace
/// (the same rule as `heyvm_core::manager::computer_path`).
pub fn computer_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", heyvm_types::WORKSPACE_PATH)
    }
}

/// [`SandboxOps`] over the blocking HTTP client (each call on a blocking thread).
pub struct ClientOps(pub heyvm_client::Client);

fn client_err(e: heyvm_client::ClientError) -> OpError {
    OpError { code: e.code().to_string(), message: e.to_string() }
}

impl ClientOps {
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&heyvm_client::Client) -> heyvm_client::Result<T> + Send + 'static,
    ) -> OpResult<T> {
        let c = self.0.clone();
        match tokio::task::spawn_blocking(move || f(&c)).await {
            Ok(r) => r.map_err(client_err),
            Err(e) => Err(OpError { code: "internal".into(), message: e.to_string() }),
        }
    }
}

#[async_trait::async_trait]
impl SandboxOps for ClientOps {
    async fn create(&self, req: CreateSandboxRequest) -> OpResult<SandboxInfo> {
        self.call(move |c| c.create(&req)).await
    }
    async fn list(&self) -> OpResult<Vec<SandboxInfo>> {
        self.call(|c| c.list(None)).await
    }
    async fn get(&self, id: &str) -> OpResult<SandboxInfo> {
        let id = id.to_string();
        self.call(move |c| c.get_sandbox(&id)).await
    }
    async fn action(&self, id: &str, action: &str) -> OpResult<SandboxInfo> {
        let (id, action) = (id.to_string(), action.to_string());
        self.call(move |c| c.action(&id, &action)).await
    }
    async fn delete(&self, id: &str) -> OpResult<()> {
        let id = id.to_string();
        self.call(move |c| c.delete_sandbox(&id).map(|_| ())).await
    }
    async fn exec(&self, id: &str, req: ExecRequest) -> OpResult<ExecResponse> {
        let id = id.to_string();
        self.call(move |c| c.execute(&id, &req)).await
    }
    async fn bind_port(&self, id: &str, port: u16, public: bool) -> OpResult<ProxyEndpoint> {
        let id = id.to_string();
        self.call(move |c| c.create_proxy(&id, port, public)).await
    }
    async fn read_file(&self, id: &str, path: &str, offset: u64, limit: u64) -> OpResult<(u64, Vec<u8>)> {
        let (id, path) = (id.to_string(), computer_path(path));
        self.call(move |c| c.read_range(&id, &path, offset, limit)).await
    }
    async fn write_file(&self, id: &str, path: &str, data: Vec<u8>) -> OpResult<u64> {
        let (id, path) = (id.to_string(), computer_path(path));
        self.call(move |c| c.upload(&id, "", &path, std::io::Cursor::new(data)).map(|r| r.size)).await
    }
}

//! `/mcp`: the MCP server over streamable HTTP (the same tools as
//! `heyvm mcp`), behind the API's auth. Each MCP session gets its own
//! ephemeral computer, deleted when the session ends (client `DELETE`, or
//! the session being dropped) and carrying a TTL meanwhile.

use std::sync::Arc;

use heyvm_core::{CoreError, SandboxManager};
use heyvm_mcp::rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use heyvm_mcp::rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use heyvm_mcp::{Computer, ComputerConfig, HeyvmMcp, OpError, OpResult, SandboxOps};
use heyvm_types::{CreateSandboxRequest, ExecRequest, ExecResponse, ProxyEndpoint, SandboxInfo};

use crate::proxy::ProxyHub;

/// [`SandboxOps`] straight on the manager, as the routes use it.
struct ManagerOps {
    mgr: Arc<SandboxManager>,
    proxy: Arc<ProxyHub>,
}

fn op_err(e: CoreError) -> OpError {
    OpError { code: e.code().to_string(), message: e.to_string() }
}

#[async_trait::async_trait]
impl SandboxOps for ManagerOps {
    async fn create(&self, req: CreateSandboxRequest) -> OpResult<SandboxInfo> {
        self.mgr.create(req).await.map_err(op_err)
    }
    async fn list(&self) -> OpResult<Vec<SandboxInfo>> {
        self.mgr.list(None).map_err(op_err)
    }
    async fn get(&self, id: &str) -> OpResult<SandboxInfo> {
        self.mgr.get(id).map_err(op_err)
    }
    async fn action(&self, id: &str, action: &str) -> OpResult<SandboxInfo> {
        match action {
            "start" => self.mgr.start(id).await,
            "stop" => self.mgr.stop(id, false).await,
            other => Err(CoreError::invalid(format!("unknown action '{other}'"))),
        }
        .map_err(op_err)
    }
    async fn delete(&self, id: &str) -> OpResult<()> {
        self.mgr.delete(id).await.map(|_| ()).map_err(op_err)
    }
    async fn exec(&self, id: &str, req: ExecRequest) -> OpResult<ExecResponse> {
        self.mgr.exec(id, &req).await.map_err(op_err)
    }
    async fn bind_port(&self, id: &str, port: u16, public: bool) -> OpResult<ProxyEndpoint> {
        self.proxy.create(id, port, public).map_err(op_err)
    }
    async fn read_file(&self, id: &str, path: &str, offset: u64, limit: u64) -> OpResult<(u64, Vec<u8>)> {
        self.mgr.read_path(id, path, offset, limit).await.map_err(op_err)
    }
    async fn write_file(&self, id: &str, path: &str, data: Vec<u8>) -> OpResult<u64> {
        self.mgr.write_path(id, path, &data).await.map_err(op_err)
    }
}

/// The tower service mounted at `/mcp`. Without auth, rmcp's check that
/// the Host is a loopback name stays on (DNS rebinding from a browser);
/// with auth, the Bearer token (which a browser cannot add) protects it.
pub fn service(mgr: Arc<SandboxManager>, proxy: Arc<ProxyHub>, auth: bool) -> StreamableHttpService<HeyvmMcp, LocalSessionManager> {
    let ops: Arc<dyn SandboxOps> = Arc::new(ManagerOps { mgr, proxy });
    let mut config = StreamableHttpServerConfig::default();
    if auth {
        config = config.disable_allowed_hosts();
    }
    StreamableHttpService::new(
        move || Ok(HeyvmMcp::new(Computer::new(ops.clone(), ComputerConfig::default()))),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

//! heyvm's MCP server (built on `rmcp`): the `computer_run`,
//! `computer_write_file` and `computer_read_file` tools act on the session's
//! computer (see [`computer`]); the `sandbox_*` tools manage sandboxes. The
//! same server runs over stdio (`heyvm mcp`, through the HTTP client) and
//! over streamable HTTP at `/mcp` on the API server (in-process).

pub mod computer;
pub mod files;
pub mod ops;
mod params;
pub mod server;

pub use computer::{Computer, ComputerConfig, ComputerMode};
pub use ops::{ClientOps, OpError, OpResult, SandboxOps};
pub use rmcp;
pub use server::HeyvmMcp;

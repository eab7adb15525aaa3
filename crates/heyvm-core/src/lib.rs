//! heyvm's engine. [`SandboxManager`] is the single seam every surface (HTTP
//! API, CLI, MCP, agent computers) goes through: it owns the lifecycle state
//! machine, the SQLite store, TTL and liveness reaping, and talks to an
//! isolation [`Backend`] plus the in-sandbox agent.
//!
//! This crate knows nothing about HTTP or the command line.

pub mod agent;
pub mod api_keys;
pub mod archive;
pub mod backend;
pub mod computers;
pub mod config;
pub mod egress;
pub mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod id_ranges;
pub mod ids;
pub mod manager;
pub mod paths;
pub mod record;
pub mod s3;
pub mod safe_fs;
pub mod sandbox_ids;
pub mod shell;
pub mod sqlite;
pub mod store;
pub mod text;

pub use backend::{Backend, BackendError, Instance, LaunchSpec, Liveness, Usage};
pub use error::{CoreError, Result};
/// The image store, re-exported for the server and CLI.
pub use heyvm_images as images;
pub use manager::SandboxManager;
pub use paths::DataDir;

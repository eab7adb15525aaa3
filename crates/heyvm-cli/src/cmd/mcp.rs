//! `heyvm mcp`: the MCP server over stdio, for agents (Claude Desktop,
//! Cursor, the Python `mcp` client, …). Tools act through the API server the
//! CLI talks to; stdout carries only the protocol.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use heyvm_client::Client;
use heyvm_mcp::rmcp::ServiceExt;
use heyvm_mcp::{ClientOps, Computer, ComputerConfig, ComputerMode, HeyvmMcp};

use crate::args::McpArgs;

pub fn run(client: Client, a: McpArgs) -> anyhow::Result<ExitCode> {
    let mode = match (a.persistent, a.sandbox) {
        (Some(name), None) => ComputerMode::Persistent(name),
        (None, Some(id)) => ComputerMode::Existing(id),
        (None, None) => ComputerMode::Ephemeral,
        (Some(_), Some(_)) => anyhow::bail!("--persistent and --sandbox exclude each other"),
    };
    let size_class = a.size_class.map(|s| s.parse().map_err(|e: String| anyhow::anyhow!(e))).transpose()?;
    let ephemeral_ttl_secs = super::parse_duration(&a.ttl)?.ceil() as u64;
    let config = ComputerConfig { mode, size_class, image: a.image, backend: a.backend, ephemeral_ttl_secs };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let computer = Computer::new(Arc::new(ClientOps(client)), config);
        let service = HeyvmMcp::new(computer.clone())
            .serve(heyvm_mcp::rmcp::transport::stdio())
            .await
            .context("starting the MCP session on stdin/stdout")?;
        let _ = service.waiting().await;
        // The client hung up: an ephemeral computer goes with the session.
        if let Err(e) = computer.close().await {
            eprintln!("heyvm mcp: could not delete the session's computer: {e}");
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

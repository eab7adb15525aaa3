//! Talking to the in-sandbox agent: the multiplexed session over the byte
//! stream a backend instance hands out, and the requests made on it.

pub mod client;
pub mod session;
#[cfg(test)]
mod tests;

pub use client::{AgentClient, AgentExec, AgentShellReader, AgentShellWriter, AgentStdin, ExecEvent, LogFeed, ShellEvent};
pub use session::{AgentSession, AgentTransport, MuxStream, Transport};

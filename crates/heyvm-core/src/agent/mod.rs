//! Talking to the in-sandbox agent: the multiplexed session over the byte
//! stream a backend instance hands out, and the requests made on it.

pub mod client;
pub mod files;
#[cfg(test)]
mod files_tests;
pub mod session;
#[cfg(test)]
mod stdin_tests;
#[cfg(test)]
mod tests;

pub use client::{AgentClient, AgentExec, AgentShellReader, AgentShellWriter, AgentStdin, ExecEvent, LogFeed, ShellEvent};
pub use files::{AgentFileReader, AgentFileWriter};
pub use session::{AgentSession, AgentTransport, MuxStream, Transport};

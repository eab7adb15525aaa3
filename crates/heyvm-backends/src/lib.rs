//! Isolation backends behind `heyvm_core::Backend`.
//!
//! * [`bubblewrap`]: Linux namespaces via bwrap, a copy-on-write root over the
//!   host's system directories, cgroup v1/v2 limits. The default on Linux.
//!
//! Each backend has a `probe()` that says why it is unavailable.

pub mod bubblewrap;
pub mod cgroups;
mod hardening;
mod mask;
pub mod net;
pub mod owner;
mod procs;
mod seccomp;

pub use bubblewrap::BubblewrapBackend;

/// Picks the backend for `name` (or the default), explaining failures.
pub fn select(name: Option<&str>) -> Result<std::sync::Arc<dyn heyvm_core::Backend>, String> {
    match name.unwrap_or("bubblewrap") {
        "bubblewrap" | "bwrap" => Ok(std::sync::Arc::new(BubblewrapBackend::probe()?)),
        other => Err(format!("unknown backend '{other}'; available: bubblewrap")),
    }
}

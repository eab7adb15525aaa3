//! Isolation backends behind `heyvm_core::Backend`.
//!
//! * [`bubblewrap`]: Linux namespaces via bwrap, a copy-on-write root over the
//!   host's system directories, cgroup v1/v2 limits. The default on Linux.
//!
//! Each backend has a `probe()` that says why it is unavailable.

pub mod bubblewrap;
pub mod cgroups;
mod data_view;
mod disk;
mod handoff;
mod hardening;
pub mod idmap;
pub mod layout;
mod mask;
pub mod net;
pub mod owner;
mod procs;
mod rootfs;
mod seccomp;
mod stock;

pub use bubblewrap::BubblewrapBackend;

/// Every backend that works on this host, the default first; an error
/// explains why none does.
pub fn available() -> Result<Vec<std::sync::Arc<dyn heyvm_core::Backend>>, bubblewrap::ProbeError> {
    let b = BubblewrapBackend::probe()?;
    Ok(vec![std::sync::Arc::new(b)])
}

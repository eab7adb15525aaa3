//! What can go wrong while wiring a sandbox's network, as one typed error
//! so callers can tell a missing tool from an exhausted pool or a bad
//! policy entry without parsing messages.

use std::io;
use std::path::PathBuf;

use heyvm_core::egress::EgressParseError;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A system tool could not be started (usually: not installed).
    #[error("running {prog}: {source} (is it installed?)")]
    Spawn { prog: String, source: io::Error },
    /// A system tool ran and failed; `stderr` is its explanation.
    #[error("{prog} {args}: {stderr}")]
    Tool { prog: String, args: String, stderr: String },
    /// `ip -j` printed something that is not JSON.
    #[error("parsing ip output: {0}")]
    IpOutput(#[from] serde_json::Error),
    /// A netlink request (links, addresses, routes, namespaces) failed.
    #[error("{what}: {source}")]
    Netlink { what: &'static str, source: io::Error },
    /// A host file the network setup reads or writes.
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error("the sandbox address pool is exhausted")]
    PoolExhausted,
    /// A `deny_out` entry that cannot be enforced; denying less than asked
    /// would be a silent hole, so the start fails.
    #[error("deny_out entry '{entry}': {reason}")]
    DenyEntry { entry: String, reason: PolicyEntryError },
    #[error("slirp4netns is not installed")]
    SlirpMissing,
    /// bwrap did not create or finish setting up the sandbox's namespace.
    #[error("the sandbox's network namespace {0}")]
    NamespaceTimeout(&'static str),
    /// slirp4netns exited or never configured the namespace; `log` is its output.
    #[error("slirp4netns did not configure the sandbox network: {log}")]
    SlirpFailed { log: String },
}

/// Why one egress policy entry yields no addresses.
#[derive(Debug, thiserror::Error)]
pub enum PolicyEntryError {
    #[error(transparent)]
    Parse(#[from] EgressParseError),
    #[error("cannot resolve '{name}': {source}")]
    Resolve { name: String, source: io::Error },
    #[error("'{0}' has no addresses")]
    NoAddresses(String),
}

impl NetError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        NetError::Io { what, path: path.into(), source }
    }
}

pub type NetResult<T> = Result<T, NetError>;

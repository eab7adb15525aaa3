//! S3-backed volumes: a mount whose files live in a bucket under a prefix
//! (`S3_ENABLED`, `S3_BUCKET`, the `AWS_*` settings).
//!
//! While the sandbox runs, the mount is an ordinary directory on the
//! sandbox's disk. Starting it restores the directory from the bucket
//! (only objects whose ETag changed since the last sync are fetched, each
//! checked against the SHA-256 it was saved with); stopping it saves the
//! directory back (only files whose size, mtime or hash changed are sent,
//! streamed, with their SHA-256 signed so the server rejects a corrupted
//! body; files deleted locally are deleted in the bucket). Optionally it is
//! also saved every `s3_sync_seconds` while running.
//!
//! One sandbox at a time may mount a prefix, across every heyvm server
//! sharing the bucket: a lease object (`.heyvm-leases/<prefix>/lease`)
//! taken with a conditional write (`If-None-Match: *`, or `If-Match` to
//! take over an expired one) names the holder and an expiry
//! (`HEYVM_S3_LEASE_SECS`), renewed while the sandbox runs. A crashed
//! server's lease lapses after that time. What a crash of the daemon or the
//! host loses: writes since the last save (the stop, or the last periodic
//! save).
//!
//! Only regular files are saved: symlinks, devices, FIFOs and empty
//! directories are not (a symlink planted by the sandbox is never followed;
//! every file is opened beneath the mount's directory).

pub mod client;
pub mod lease;
pub mod sign;
pub mod sync;
mod xml;

pub use client::{S3Config, S3};

/// What can go wrong talking to the bucket.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("S3 volumes are not enabled on this server (set S3_ENABLED=true, S3_BUCKET and the AWS_* credentials)")]
    Disabled,
    #[error("S3 prefix '{prefix}' is in use by {holder} (lease until {expires_at}, Unix time)")]
    InUse { prefix: String, holder: String, expires_at: u64 },
    #[error("S3 endpoint unreachable: {0}")]
    Unreachable(String),
    #[error("S3 request failed: {0}")]
    Protocol(String),
    #[error("S3 object '{0}' does not match its checksum")]
    Checksum(String),
}

impl S3Error {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Disabled => "s3_disabled",
            Self::InUse { .. } => "s3_prefix_in_use",
            Self::Unreachable(_) => "s3_unreachable",
            Self::Protocol(_) => "s3_error",
            Self::Checksum(_) => "s3_checksum_mismatch",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::Disabled => 400,
            Self::InUse { .. } => 409,
            Self::Unreachable(_) | Self::Protocol(_) | Self::Checksum(_) => 502,
        }
    }
}

/// Where a prefix's files are in the bucket (`<prefix>/`).
pub fn data_prefix(prefix: &str) -> String {
    format!("{prefix}/")
}

/// Checks a user's `s3_prefix`: non-empty, relative, no `.`/`..`/empty
/// segments, printable, not heyvm's lease namespace. Returns it without
/// leading/trailing slashes.
pub fn valid_prefix(prefix: &str) -> Result<String, String> {
    let p = prefix.trim_matches('/');
    if p.is_empty() || p.len() > 512 {
        return Err(format!("s3_prefix '{prefix}' must be 1 to 512 characters"));
    }
    if p.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(format!("s3_prefix '{prefix}' may not contain empty, '.' or '..' segments"));
    }
    if p.chars().any(|c| c.is_control()) {
        return Err(format!("s3_prefix '{prefix}' contains control characters"));
    }
    if p == lease::LEASES || p.starts_with(&format!("{}/", lease::LEASES)) {
        return Err(format!("s3_prefix '{prefix}' is heyvm's lease namespace"));
    }
    Ok(p.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefixes() {
        assert_eq!(super::valid_prefix("/team/proj/").unwrap(), "team/proj");
        for bad in ["", "/", "a//b", "a/../b", "./a", ".heyvm-leases/x", "a\nb"] {
            assert!(super::valid_prefix(bad).is_err(), "{bad:?}");
        }
    }
}

//! OCI images for heyvm, with no Docker engine: Docker-style references,
//! registry access (mirrors, plain-HTTP loopback registries, credentials)
//! through `oci-client`, and a content-addressed store whose unpacked
//! layers are shared read-only by every image and sandbox.
//!
//! This crate knows nothing about sandboxes, HTTP or the command line.

pub mod archive;
pub mod context;
pub mod dockerfile;
pub mod error;
pub mod layer;
pub mod oci;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod settings;
pub mod store;
pub mod unpack;

pub use error::{ImageError, Result};
pub use pull::{no_progress, ProgressFn, PullEvent};
pub use reference::ImageRef;
pub use settings::RegistrySettings;
pub use store::{ImageStore, LocalImage};

//! Wire types of the heyvm HTTP API: what the server returns and what the
//! client, CLI and agent tools send. Serde only, so every consumer can depend
//! on it without pulling in the engine. Shapes follow the existing heyvm
//! product so that its clients keep working.

mod api_keys;
mod archive;
mod backend;
mod checkpoint;
/// heyo-sdk's cloud dialect; not glob-exported (names overlap the native API).
pub mod compat;
mod error;
mod exec;
mod files;
mod images;
mod logs;
mod proxy;
mod sandbox;

pub use api_keys::*;
pub use archive::*;
pub use backend::*;
pub use checkpoint::*;
pub use error::*;
pub use exec::*;
pub use files::*;
pub use images::*;
pub use logs::*;
pub use proxy::*;
pub use sandbox::*;

/// Port of the local daemon started by the CLI (the TUI-mode port of heyvm).
pub const DEFAULT_LOCAL_PORT: u16 = 34099;
/// Port of `heyvm --api` when `--port` is not given.
pub const DEFAULT_API_PORT: u16 = 3000;
/// The mount path every sandbox has: its persistent workspace.
pub const WORKSPACE_PATH: &str = "/workspace";

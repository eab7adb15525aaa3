//! `GET /system/backends` (`heyvm backends`): every isolation backend the
//! daemon knows and whether it works on this host.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BackendInfo {
    /// The `backend_type` value.
    pub name: String,
    pub available: bool,
    /// Why it is unavailable, or a note about how it runs (e.g. TCG).
    pub reason: Option<String>,
    /// For VM backends: the accelerator, `kvm` or `tcg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// Other `backend_type` values that select this backend.
    #[serde(default)]
    pub aliases: Vec<String>,
}

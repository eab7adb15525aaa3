use serde::{Deserialize, Serialize};

/// The JSON body of every non-2xx response: a stable machine-readable
/// `error` code plus a human sentence.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// Body of `POST /api-keys`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// What the key is for (shown in listings).
    pub name: String,
    /// Lifetime in seconds; no expiry when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// What `POST /api-keys` returns: the only time `key` is shown.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiKeyCreated {
    pub id: String,
    pub name: String,
    /// The secret (`hvk_…`); the server keeps only its hash.
    pub key: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// One key in `GET /api-keys` (never the secret).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub last_used_at: Option<i64>,
}

//! Tool parameters: their JSON schemas (descriptions included) are what a
//! model reads to choose values.

use std::collections::BTreeMap;

use rmcp::schemars::{self, JsonSchema};
use serde::Deserialize;

/// Size classes, smallest first.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// 0.25 vCPU, 512 MiB memory
    Micro,
    /// 0.5 vCPU, 1 GiB
    Mini,
    /// 1 vCPU, 2 GiB (the default)
    Small,
    /// 2 vCPU, 4 GiB
    Medium,
    /// 4 vCPU, 8 GiB
    Large,
    /// 8 vCPU, 16 GiB
    Xlarge,
}

impl From<Size> for heyvm_types::SizeClass {
    fn from(s: Size) -> Self {
        use heyvm_types::SizeClass as S;
        match s {
            Size::Micro => S::Micro,
            Size::Mini => S::Mini,
            Size::Small => S::Small,
            Size::Medium => S::Medium,
            Size::Large => S::Large,
            Size::Xlarge => S::Xlarge,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The content is text, written as UTF-8.
    #[default]
    Utf8,
    /// The content is base64 (standard alphabet): for binary files.
    Base64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    /// Shell command line, run with /bin/sh -c (pipes, redirections and && work), e.g. "ls -la | head".
    pub command: String,
    /// Working directory (default /workspace, which persists).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Kill the command after this many seconds (default 300).
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// Text given to the command's standard input (then EOF).
    #[serde(default)]
    pub stdin: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFileParams {
    /// Absolute path, or relative to /workspace. Parent directories are created.
    pub path: String,
    /// The file's content (text, or base64 with encoding "base64").
    pub content: String,
    /// "utf8" (default) or "base64".
    #[serde(default)]
    pub encoding: Option<Encoding>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFileParams {
    /// Absolute path, or relative to /workspace.
    pub path: String,
    /// First byte to read (default 0).
    #[serde(default)]
    pub offset: Option<u64>,
    /// Most bytes to read (default 262144 = 256 KiB, at most 16 MiB).
    #[serde(default)]
    pub limit: Option<u64>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    /// Name (letters, digits, '.', '_', '-'); a random id is used if omitted.
    #[serde(default)]
    pub name: Option<String>,
    /// Resources: micro, mini, small (default), medium, large, xlarge.
    #[serde(default)]
    pub size_class: Option<Size>,
    /// Root filesystem image (default: the host's system, read-only, copy-on-write).
    #[serde(default)]
    pub image: Option<String>,
    /// Isolation backend: "bubblewrap" (Linux namespaces, the default, starts in milliseconds)
    /// or a microVM backend if the server has one.
    #[serde(default)]
    pub backend: Option<String>,
    /// Delete the sandbox after it has run this many seconds (default: no TTL).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Stop it after this many seconds without use; the next use starts it again.
    #[serde(default)]
    pub idle_timeout_seconds: Option<u64>,
    /// Environment variables for every command.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Network: "nat" (outbound access, default) or "none" (loopback only).
    #[serde(default)]
    pub network: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdParams {
    /// Sandbox id (sb-…), name or slug.
    pub id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecParams {
    /// Sandbox id (sb-…), name or slug.
    pub id: String,
    /// Program, or a shell command line when `args` is empty.
    pub command: String,
    /// Arguments (the program then runs without a shell).
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// Text for the command's standard input.
    #[serde(default)]
    pub stdin: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BindParams {
    /// Sandbox id (sb-…), name or slug.
    pub id: String,
    /// Port a server inside the sandbox listens on.
    pub port: u16,
    /// false makes the URL require the API's Bearer token (default true: public).
    #[serde(default)]
    pub public: Option<bool>,
}

//! Command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "heyvm",
    version,
    about = "Isolated Linux sandboxes for agents and people",
    long_about = "Isolated Linux sandboxes for agents and people.\n\n\
        Commands talk to a heyvm API server: $HEYVM_API_URL or --server if set, otherwise the local daemon on \
        127.0.0.1:34099, which is started in the background when it is not running.\n\
        State lives in $MVM_DATA_DIR (default ~/.heyo).",
    after_help = "Examples:\n  heyvm create --name demo --size-class micro\n  heyvm exec demo -- uname -a\n  heyvm exec demo --format json -- python3 -c 'print(1)'\n  heyvm list --all\n  heyvm --api --port 3000"
)]
pub struct Cli {
    /// Run the HTTP API server in the foreground.
    #[arg(long)]
    pub api: bool,
    /// API server port (with --api).
    #[arg(long, default_value_t = heyvm_types::DEFAULT_API_PORT)]
    pub port: u16,
    /// Address to listen on (with --api). Without JWT_SECRET only loopback addresses are allowed.
    #[arg(long)]
    pub host: Option<std::net::IpAddr>,
    /// Verbose logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Development mode (accepted for compatibility; no effect locally).
    #[arg(long, hide = true)]
    pub dev: bool,
    /// Output format: text for people, json for programs.
    #[arg(long, value_enum, default_value_t = Format::Text, global = true)]
    pub format: Format,
    /// API server URL (default: $HEYVM_API_URL or the local daemon).
    #[arg(long, global = true, env = "HEYVM_API_URL")]
    pub server: Option<String>,
    /// Bearer token for the API server.
    #[arg(long, global = true, env = "HEYVM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Create a sandbox and start it.
    Create(CreateArgs),
    /// List sandboxes (running ones; --all includes stopped and failed).
    #[command(alias = "ls")]
    List {
        /// Include stopped and failed sandboxes.
        #[arg(long, short)]
        all: bool,
        /// Only sandboxes in this state.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one sandbox.
    Get { id: String },
    /// Start a stopped or failed sandbox.
    Start { id: String },
    /// Stop a sandbox (SIGTERM, then SIGKILL after a grace period). Files are kept.
    Stop { id: String },
    /// Stop and start again.
    Restart { id: String },
    /// Kill every process of a sandbox at once (SIGKILL).
    ForceStop { id: String },
    /// Delete sandboxes with all their files.
    #[command(alias = "delete")]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Change a sandbox's settings.
    Update(UpdateArgs),
    /// Run a command in a sandbox; heyvm's exit code is the command's.
    Exec(ExecArgs),
    /// Show a sandbox's logs (start command output, setup hooks, lifecycle).
    Logs {
        id: String,
        /// Only this source: stdout, stderr, setup or system.
        #[arg(long)]
        source: Option<String>,
        /// Only this level: info, warn or error.
        #[arg(long)]
        level: Option<String>,
        /// How many entries (the most recent ones unless --offset is given).
        #[arg(long, short = 'n', default_value_t = 100)]
        limit: usize,
        /// Start at this entry instead of showing the most recent.
        #[arg(long)]
        offset: Option<usize>,
    },
    /// Copy a file between the host and a sandbox: `cp ./a SANDBOX:/workspace/a` or `cp SANDBOX:/workspace/a ./a`.
    Cp {
        src: String,
        dst: String,
    },
    /// List files in a sandbox directory.
    Files {
        id: String,
        /// Absolute sandbox path under a mount (default /workspace).
        #[arg(default_value = "/workspace")]
        path: String,
    },
    /// Delete a file in a sandbox (under a mount).
    RmFile {
        id: String,
        path: String,
        /// Delete directories with their contents.
        #[arg(short, long)]
        recursive: bool,
    },
    /// List, add or remove a sandbox's mounts.
    Mounts {
        id: String,
        /// Add HOST:SANDBOX[:ro] (applies at the next start).
        #[arg(long)]
        add: Option<String>,
        /// Remove the mount at this sandbox path.
        #[arg(long)]
        remove: Option<String>,
    },
    /// Run the sandbox agent (inside a sandbox; internal).
    #[command(name = "__agent", hide = true)]
    Agent(AgentArgs),
    /// Become a sandbox's bwrap process (internal).
    #[command(name = "__sandbox_owner", hide = true)]
    SandboxOwner { plan: PathBuf },
}

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    #[arg(long)]
    pub socket: PathBuf,
    #[arg(long)]
    pub log: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Sandbox name (letters, digits, '.', '_', '-').
    #[arg(long)]
    pub name: Option<String>,
    /// Image (recorded; the bubblewrap backend uses the host's system).
    #[arg(long)]
    pub image: Option<String>,
    /// Backend: bubblewrap.
    #[arg(long = "backend")]
    pub backend: Option<String>,
    /// shell, python or node.
    #[arg(long)]
    pub sandbox_type: Option<String>,
    /// Bind a host directory: HOST:SANDBOX or HOST:SANDBOX:ro (repeatable).
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Port the sandbox serves (repeatable).
    #[arg(long = "open-port")]
    pub open_ports: Vec<u16>,
    /// Delete the sandbox after it has run this many seconds.
    #[arg(long, conflicts_with = "no_ttl")]
    pub ttl_seconds: Option<u64>,
    /// No TTL (the default).
    #[arg(long)]
    pub no_ttl: bool,
    /// Long-running process started with the sandbox.
    #[arg(long)]
    pub start_command: Option<String>,
    /// Working directory for commands (default /workspace).
    #[arg(long)]
    pub workdir: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Shell command run once after the first start (repeatable).
    #[arg(long = "setup-hook")]
    pub setup_hooks: Vec<String>,
    /// micro, mini, small, medium, large or xlarge.
    #[arg(long)]
    pub size_class: Option<String>,
    /// Create without starting.
    #[arg(long)]
    pub no_start: bool,
}

#[derive(Args, Debug, Clone)]
pub struct UpdateArgs {
    pub id: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub start_command: Option<String>,
    #[arg(long)]
    pub workdir: Option<String>,
    /// KEY=VALUE, merged into the existing variables (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    #[arg(long = "open-port")]
    pub open_ports: Vec<u16>,
    #[arg(long, conflicts_with = "no_ttl")]
    pub ttl_seconds: Option<u64>,
    /// Remove the TTL.
    #[arg(long)]
    pub no_ttl: bool,
    #[arg(long)]
    pub size_class: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    pub id: String,
    /// Working directory inside the sandbox.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Kill the command's process tree after this long (e.g. 30s, 2m, 500ms).
    #[arg(long)]
    pub timeout: Option<String>,
    /// The command and its arguments (after --).
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

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
    /// API server URL (default: $HEYVM_API_URL, then $HEYO_CLOUD_URL, else the local daemon).
    #[arg(long, global = true, env = "HEYVM_API_URL")]
    pub server: Option<String>,
    /// Bearer token or API key for the API server (default: $HEYVM_API_KEY, $HEYO_API_KEY
    /// (deprecated), $HEYO_ARCHIVE_TOKEN, $HEYVM_TOKEN, then the token stored by `heyvm login` in
    /// $MVM_DATA_DIR/token.json).
    #[arg(long, global = true, hide_env_values = true)]
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
    Get {
        /// The sandbox (id, name or slug).
        id: String,
    },
    /// Start a stopped or failed sandbox.
    Start {
        /// The sandbox (id, name or slug).
        id: String,
    },
    /// Stop a sandbox (SIGTERM, then SIGKILL after a grace period). Files are kept.
    Stop {
        /// The sandbox (id, name or slug).
        id: String,
    },
    /// Stop and start again.
    Restart {
        /// The sandbox (id, name or slug).
        id: String,
    },
    /// Checkpoint a sandbox: a VM's memory and disks (processes survive a
    /// restore), or a bubblewrap sandbox's files. `checkpoint rm ID NAME`
    /// deletes one.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Checkpoint {
        /// The sandbox (id, name or slug).
        #[arg(required = true)]
        id: Option<String>,
        /// Name of the checkpoint (letters, digits, `.`, `_`, `-`); generated if omitted.
        #[arg(long)]
        name: Option<String>,
        #[command(subcommand)]
        action: Option<CheckpointAction>,
    },
    /// List a sandbox's checkpoints.
    Checkpoints {
        /// The sandbox (id, name or slug).
        id: String,
    },
    /// Put a sandbox back to a checkpoint (the latest if NAME is omitted).
    Restore {
        /// The sandbox (id, name or slug).
        id: String,
        /// The checkpoint (default: the latest).
        name: Option<String>,
    },
    /// Create a new sandbox from a checkpoint of ID (taken now if it has none).
    Fork {
        /// The sandbox to fork (id, name or slug).
        id: String,
        /// The checkpoint to fork from (default: the latest).
        #[arg(long)]
        from: Option<String>,
        /// Name of the new sandbox.
        #[arg(long)]
        name: Option<String>,
    },
    /// The isolation backends of the daemon and whether they work on this host.
    Backends,
    /// Kill every process of a sandbox at once (SIGKILL).
    ForceStop {
        /// The sandbox (id, name or slug).
        id: String,
    },
    /// Delete sandboxes with all their files.
    #[command(alias = "delete")]
    Rm {
        /// The sandboxes (ids, names or slugs).
        #[arg(required = true)]
        ids: Vec<String>,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Change a sandbox's settings.
    Update(UpdateArgs),
    /// Run a command in a sandbox; heyvm's exit code is the command's.
    #[command(after_help = "Examples:\n  heyvm exec demo uname -a\n  heyvm exec demo --format json -- python3 -c 'print(1)'\n  \
        echo hello | heyvm exec demo cat\n  heyvm exec demo --cwd /tmp --env K=V --timeout 30s -- sh -c 'echo $K'")]
    Exec(ExecArgs),
    /// Show a sandbox's logs (start command output, setup hooks, lifecycle).
    Logs {
        /// The sandbox (id, name or slug).
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
        /// Keep printing new entries as they are written (Ctrl-C to stop).
        #[arg(long, short)]
        follow: bool,
        /// Only entries from this time on: a span back from now (10m, 2h, 3d), a local
        /// date and time (2026-12-02 14:00), or a Unix timestamp.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only entries up to this time (same forms as --since).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
    },
    /// Copy a file between the host and a sandbox: `cp ./a SANDBOX:/workspace/a` or `cp SANDBOX:/workspace/a ./a`.
    Cp {
        /// Source: a host path or SANDBOX:/absolute/path.
        src: String,
        /// Destination: a host path or SANDBOX:/absolute/path.
        dst: String,
    },
    /// List files in a sandbox directory.
    Files {
        /// The sandbox (id, name or slug).
        id: String,
        /// Absolute sandbox path under a mount (default /workspace).
        #[arg(default_value = "/workspace")]
        path: String,
    },
    /// Delete a file in a sandbox (under a mount).
    RmFile {
        /// The sandbox (id, name or slug).
        id: String,
        /// Absolute sandbox path of the file or directory.
        path: String,
        /// Delete directories with their contents.
        #[arg(short, long)]
        recursive: bool,
    },
    /// List, add or remove a sandbox's mounts.
    Mounts {
        /// The sandbox (id, name or slug).
        id: String,
        /// Add HOST:SANDBOX[:ro] (applies at the next start).
        #[arg(long)]
        add: Option<String>,
        /// Remove the mount at this sandbox path.
        #[arg(long)]
        remove: Option<String>,
    },
    /// Open an interactive shell in a sandbox (a real terminal: raw mode, window resizes,
    /// reconnects after a dropped connection). heyvm's exit code is the shell's.
    #[command(after_help = "Examples:\n  heyvm sh demo\n  heyvm sh demo --cwd /tmp --env DEBUG=1")]
    Sh(ShellArgs),
    /// Attach to a shell stream URL (the connection_url from POST /sandboxes/:id/shell-session).
    #[command(after_help = "Example:\n  heyvm connect ws://127.0.0.1:34099/sandboxes/sb-1a2b3c4d/shell-stream --shell")]
    Connect {
        /// ws:// URL of a shell stream.
        url: String,
        /// Open an interactive shell (the only kind of connection so far).
        #[arg(long)]
        shell: bool,
        #[command(flatten)]
        opts: ShellOptArgs,
    },
    /// Archive a directory, run it in a new sandbox, expose its ports and wait until healthy.
    #[command(
        after_help = "Example:\n  heyvm deploy ./my-app --name web --port 8080 --start-command 'python3 server.py' \\\n    --health-path /health --ttl-seconds 3600 --format json"
    )]
    Deploy(DeployArgs),
    /// OCI images: pull, list, inspect, remove, tag, push, build (no Docker needed).
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Mint API tokens (HS256 JWTs signed with the server's JWT_SECRET).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Create, list and revoke API keys (Bearer credentials that work wherever a JWT does).
    #[command(
        name = "api-keys",
        after_help = "Examples:\n  heyvm api-keys create --name ci --ttl 30d --format json\n  heyvm api-keys list\n  heyvm api-keys revoke key-1a2b3c4d"
    )]
    ApiKeys {
        #[command(subcommand)]
        action: ApiKeyAction,
    },
    /// Serve MCP (Model Context Protocol) on stdin/stdout: computer_run, computer_write_file,
    /// computer_read_file on this session's computer, plus sandbox_* management tools.
    #[command(after_help = "The computer is ephemeral by default: created at the first tool call, deleted when the\n\
        client disconnects, and carrying a TTL (--ttl) so a killed server leaks nothing for long.\n\
        Examples:\n  heyvm mcp\n  heyvm mcp --persistent my-dev-box --size-class medium\n  heyvm mcp --sandbox sb-1a2b3c4d\n\
        Streamable HTTP: the API server serves the same tools at /mcp.")]
    Mcp(McpArgs),
    /// Store a token for this machine's CLI ($MVM_DATA_DIR/token.json, default ~/.heyo).
    #[command(after_help = "Examples:\n  heyvm login --token \"$TOKEN\"\n  heyvm token create --sub me | heyvm login -")]
    Login {
        /// The token (a JWT), instead of --token; `-` reads it from stdin.
        #[arg(value_name = "TOKEN")]
        token_arg: Option<String>,
    },
    /// Forget the token stored by `heyvm login`.
    Logout,
    /// Expose a port of a sandbox through the proxy and print its URL.
    #[command(
        after_help = "Without API_HOSTNAME on the server the URL is a 127.0.0.1 port; with it, http://<subdomain>.<API_HOSTNAME>:<api port>.\n\
        Examples:\n  heyvm bind demo 8080 --format json\n  heyvm bind demo 8080 --private   # callers need Authorization: Bearer <token>"
    )]
    Bind {
        /// The sandbox (id, name or slug).
        id: String,
        /// Port inside the sandbox.
        port: u16,
        /// Require `Authorization: Bearer <token>` (a token the server's JWT_SECRET verifies).
        #[arg(long)]
        private: bool,
    },
    /// Remove a proxy endpoint created by `bind`.
    Unbind {
        /// The sandbox (id, name or slug).
        id: String,
        /// The endpoint's subdomain, as printed by `bind`.
        subdomain: String,
    },
    /// Wait until a port inside a sandbox accepts connections (or a URL answers); exits 1 on timeout.
    #[command(after_help = "Examples:\n  heyvm wait-for demo 8080 --path /health --timeout 60s --format json\n  \
        heyvm wait-for --url http://127.0.0.1:41234/health --timeout 30s")]
    WaitFor(WaitForArgs),
    /// Pair a git worktree with a sandbox whose /workspace is that worktree (see `heyvm wt --help`).
    Wt(crate::cmd::wt::args::WtArgs),
    /// Print a shell completion script: `heyvm completions bash > /etc/bash_completion.d/heyvm`.
    #[command(after_help = "Examples:\n  heyvm completions bash > /etc/bash_completion.d/heyvm\n  \
        heyvm completions zsh > \"${fpath[1]}/_heyvm\"\n  heyvm completions fish > ~/.config/fish/completions/heyvm.fish")]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the heyvm(1) man page, or write one page per command into a directory.
    #[command(after_help = "Examples:\n  heyvm man | man -l -\n  heyvm man --dir /usr/local/share/man/man1")]
    Man {
        /// Write heyvm.1 and heyvm-COMMAND.1 here instead of printing heyvm.1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run the sandbox agent (inside a sandbox; internal).
    #[command(name = "__agent", hide = true)]
    Agent(AgentArgs),
    /// Become a sandbox's bwrap process (internal).
    #[command(name = "__sandbox_owner", hide = true)]
    SandboxOwner { plan: PathBuf },
    /// A sandbox owner parked in pre-provisioned cgroups, waiting for its
    /// plan on stdin (internal).
    #[command(name = "__sandbox_owner_parked", hide = true)]
    SandboxOwnerParked,
}

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// The agent's own arguments (`--listen-fd N` or `--port PATH`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
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
    /// Bind a host directory: HOST:SANDBOX or HOST:SANDBOX:ro; or mount an S3 prefix of the server's
    /// bucket (S3_ENABLED): s3://PREFIX:SANDBOX[:ro], restored at start, saved at stop (repeatable).
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// S3 mounts: also save them every this many seconds while the sandbox runs (default: only at stop).
    #[arg(long = "s3-sync-seconds")]
    pub s3_sync_seconds: Option<u64>,
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
    /// Disk size in GiB for the writable layer and /workspace (default: the
    /// size class's, micro 2 … xlarge 80).
    #[arg(long, value_name = "GIB")]
    pub disk_size_gb: Option<u64>,
    /// Create without starting.
    #[arg(long)]
    pub no_start: bool,
    /// Network: `nat` (default; outbound access through the host: veth +
    /// NAT with a root daemon, slirp4netns otherwise) or `none` (loopback
    /// only).
    #[arg(long, value_name = "nat|none")]
    pub network: Option<String>,
    /// Egress allow list entry (CIDR, IP or domain name; repeatable). When
    /// given, only these destinations are reachable (DNS servers too).
    /// Names are resolved when the sandbox starts.
    #[arg(long = "allow-out", value_name = "DEST")]
    pub allow_out: Vec<String>,
    /// Egress deny list entry (CIDR, IP or domain name; repeatable); always
    /// blocked, even if also allowed.
    #[arg(long = "deny-out", value_name = "DEST")]
    pub deny_out: Vec<String>,
    /// Stop the sandbox after this long without use (e.g. 30m, 2h; 0 = never;
    /// default $HEYVM_IDLE_TIMEOUT_SECS on the server). Its next exec, file
    /// call, shell or proxy request starts it again, files intact.
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Start the sandbox on its next use even after a manual stop.
    #[arg(long)]
    pub auto_resume: bool,
}

#[derive(Args, Debug, Clone)]
pub struct UpdateArgs {
    /// The sandbox (id, name or slug).
    pub id: String,
    /// New name (a running sandbox's hostname changes too).
    #[arg(long)]
    pub name: Option<String>,
    /// New start command (used from the next start).
    #[arg(long)]
    pub start_command: Option<String>,
    /// New working directory for commands.
    #[arg(long)]
    pub workdir: Option<String>,
    /// KEY=VALUE, merged into the existing variables (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Ports the sandbox serves (repeatable; replaces the list).
    #[arg(long = "open-port")]
    pub open_ports: Vec<u16>,
    /// Delete the sandbox after it has run this many seconds.
    #[arg(long, conflicts_with = "no_ttl")]
    pub ttl_seconds: Option<u64>,
    /// Remove the TTL.
    #[arg(long)]
    pub no_ttl: bool,
    /// micro, mini, small, medium, large or xlarge (limits apply at once).
    #[arg(long)]
    pub size_class: Option<String>,
    /// Grow the disk to this many GiB (at once where the host allows, else at
    /// the next start; disks never shrink).
    #[arg(long, value_name = "GIB")]
    pub disk_size_gb: Option<u64>,
    /// Stop after this long without use (e.g. 30m, 2h; 0 = never).
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Start on next use even after a manual stop (true or false).
    #[arg(long, value_name = "BOOL")]
    pub auto_resume: Option<bool>,
}

#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// The sandbox (id, name or slug).
    pub id: String,
    /// Working directory inside the sandbox.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Run as this sandbox user: USER, UID, USER:GROUP or UID:GID (default: the image's User, else root).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Kill the command's process tree after this long (e.g. 30s, 2m, 500ms).
    #[arg(long)]
    pub timeout: Option<String>,
    /// Print output as it is produced instead of when the command ends.
    #[arg(long)]
    pub stream: bool,
    /// Do not forward this process's stdin. By default stdin is sent to the
    /// command when it is a pipe or a file (`echo hi | heyvm exec box cat`).
    #[arg(long)]
    pub no_stdin: bool,
    /// The command and its arguments: `heyvm exec ID cmd args…`, or after
    /// `--` (`heyvm exec ID -- cmd --its-own-flag`). Flags after the command
    /// belong to it, except a final `--format json|text`.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    pub argv: Vec<String>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum TokenAction {
    /// Print a new token. The secret comes from --secret or $JWT_SECRET.
    #[command(after_help = "Example:\n  JWT_SECRET=... heyvm token create --sub ci-runner --ttl 1h --aud heyvm")]
    Create {
        /// Subject: who the token is for.
        #[arg(long)]
        sub: String,
        /// Lifetime (e.g. 30m, 1h, 7d).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Audience claim (must match the server's JWT_AUDIENCE when that is set).
        #[arg(long)]
        aud: Option<String>,
        /// Signing secret (default: $JWT_SECRET).
        #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct McpArgs {
    /// Use (and create if missing) the sandbox with this name; it is kept after the session.
    #[arg(long, value_name = "NAME")]
    pub persistent: Option<String>,
    /// Use this existing sandbox (id, name or slug); it is kept after the session.
    #[arg(long, value_name = "ID")]
    pub sandbox: Option<String>,
    /// Size class of a computer this session creates: micro, mini, small, medium, large or xlarge.
    #[arg(long)]
    pub size_class: Option<String>,
    /// Image of a computer this session creates.
    #[arg(long)]
    pub image: Option<String>,
    /// Backend of a computer this session creates (e.g. bubblewrap).
    #[arg(long)]
    pub backend: Option<String>,
    /// TTL of an ephemeral computer (running time; e.g. 30m, 2h).
    #[arg(long, default_value = "1h")]
    pub ttl: String,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ApiKeyAction {
    /// Create a key and print it (shown only this once; the server keeps a hash).
    Create {
        /// What the key is for.
        #[arg(long)]
        name: String,
        /// Lifetime (e.g. 1h, 30d); no expiry when omitted.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List keys (id, name, prefix, expiry; never the secret).
    #[command(alias = "ls")]
    List,
    /// Revoke a key by id: it stops working at once.
    Revoke {
        /// The key's id (`key-…`), as printed by create or list.
        id: String,
    },
}

#[derive(Args, Debug, Clone)]
pub struct DeployArgs {
    /// Directory to deploy; archived honouring .gitignore and unpacked at /workspace.
    pub dir: PathBuf,
    /// Sandbox name (default: the directory name).
    #[arg(long)]
    pub name: Option<String>,
    /// Port to expose through the proxy (repeatable).
    #[arg(long = "port")]
    pub ports: Vec<u16>,
    /// Long-running process that serves the app (run in /workspace).
    #[arg(long)]
    pub start_command: Option<String>,
    /// HTTP path polled through the first port until it answers 2xx (e.g. /health).
    #[arg(long)]
    pub health_path: Option<String>,
    /// How long to wait for the health check (e.g. 60s, 2m).
    #[arg(long, default_value = "120s")]
    pub health_timeout: String,
    /// micro, mini, small, medium, large or xlarge.
    #[arg(long)]
    pub size_class: Option<String>,
    /// US or EU (recorded on the sandbox; local servers run everything here).
    #[arg(long)]
    pub region: Option<String>,
    /// Image of the sandbox (recorded; the bubblewrap backend runs the host's system).
    #[arg(long)]
    pub image: Option<String>,
    /// Backend of the sandbox (must be one the server runs, e.g. bubblewrap).
    #[arg(long)]
    pub backend: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Shell command run in /workspace after the files are in place, before the start command (repeatable).
    #[arg(long = "setup-hook")]
    pub setup_hooks: Vec<String>,
    /// Delete the sandbox after it has run this many seconds.
    #[arg(long)]
    pub ttl_seconds: Option<u64>,
    /// Require a Bearer token on the exposed ports.
    #[arg(long)]
    pub private: bool,
    /// Keep the sandbox when the deploy fails (default: delete it).
    #[arg(long)]
    pub keep_on_failure: bool,
}

#[derive(Args, Debug, Clone)]
pub struct WaitForArgs {
    /// The sandbox (id, name or slug).
    #[arg(required_unless_present = "url", conflicts_with = "url")]
    pub id: Option<String>,
    /// Port inside the sandbox.
    #[arg(required_unless_present = "url")]
    pub port: Option<u16>,
    /// Also require an HTTP GET of this path to answer 2xx or 3xx (e.g. /health).
    #[arg(long)]
    pub path: Option<String>,
    /// Give up after this long (e.g. 60s, 2m).
    #[arg(long, default_value = "60s")]
    pub timeout: String,
    /// Instead of a sandbox port, poll this URL from here until it answers 2xx or 3xx.
    #[arg(long)]
    pub url: Option<String>,
    /// With --url: send the CLI's API token as a Bearer token (for private endpoints).
    #[arg(long, requires = "url")]
    pub with_token: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ShellArgs {
    /// Sandbox id, slug or name.
    pub id: String,
    #[command(flatten)]
    pub opts: ShellOptArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ShellOptArgs {
    /// Working directory of the shell (default: the sandbox's working directory).
    #[arg(long)]
    pub cwd: Option<String>,
    /// Environment variable KEY=VALUE for the shell (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Run the shell as this sandbox user: USER, UID, USER:GROUP or UID:GID (default: the image's User, else root).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ImagesCommand {
    /// Pull an image from its registry (mirrors in HEYVM_REGISTRY_MIRRORS are tried first).
    #[command(after_help = "Examples:\n  heyvm images pull busybox:1.36\n  heyvm images pull 127.0.0.1:5000/app:v1 --format json")]
    Pull {
        /// Image reference (`python:3.12` means docker.io/library/python:3.12; `@sha256:` pins a digest).
        reference: String,
    },
    /// List the images in the store.
    #[command(alias = "ls")]
    List,
    /// Show an image's config, layers and users.
    Inspect {
        /// Image reference or `sha256:` digest.
        reference: String,
    },
    /// Remove an image reference (refused while a sandbox uses the image).
    #[command(alias = "remove")]
    Rm {
        /// Image references or `sha256:` digests.
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Delete layers and blobs no image and no sandbox needs.
    Prune,
    /// Write an image as an OCI image archive (a tar that `images load` and `skopeo copy oci-archive:` read).
    #[command(after_help = "Example:\n  heyvm images save app:v1 -o app.tar")]
    Save {
        /// Image reference or digest.
        reference: String,
        /// The archive to write (replaced only once complete).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Load an OCI image archive (tar or tar.gz, e.g. from `images save` or skopeo) into the store.
    #[command(after_help = "Examples:\n  heyvm images load app.tar\n  heyvm images load skopeo-out.tar --name app:v1")]
    Load {
        /// The archive.
        file: PathBuf,
        /// Reference to store it as (default: the one the archive records).
        #[arg(long, short = 't', visible_alias = "tag")]
        name: Option<String>,
    },
    /// Send a local image to a remote heyvm server's image store (`--server URL` or $HEYO_CLOUD_URL, with the token
    /// remote commands use), where creates and deploys can name it.
    #[command(after_help = "Example:\n  heyvm images upload my-agent:latest --server https://cloud.example\n  \
        heyvm --server https://cloud.example create --name a --image my-agent:latest")]
    Upload {
        /// The local image (reference or digest).
        reference: String,
        /// Name on the server (default: the same reference).
        #[arg(long = "as", value_name = "REF")]
        name: Option<String>,
    },
    /// Give an image another reference.
    Tag {
        /// Existing image reference or digest.
        source: String,
        /// New reference.
        target: String,
    },
    /// Send an image to its registry (any OCI registry; loopback ones over plain HTTP).
    #[command(after_help = "Example:\n  heyvm images tag app:v1 127.0.0.1:5000/app:v1 && heyvm images push 127.0.0.1:5000/app:v1")]
    Push {
        /// Image reference naming the destination registry and repository.
        reference: String,
    },
    /// Build an image from a Dockerfile, without Docker (RUN steps run in heyvm sandboxes).
    #[command(
        after_help = "Examples:\n  heyvm images build -t app:v1 .\n  heyvm images build -f ci/Dockerfile --build-arg V=2 --target runtime -t app:v2 .\n          heyvm images build --file ./my-base.Dockerfile --name my-base"
    )]
    Build(BuildArgs),
    /// Store credentials for a registry (used by pulls, pushes and builds).
    Login {
        /// Registry host[:port] (Docker Hub: docker.io).
        registry: String,
        /// User name.
        #[arg(long, short)]
        username: String,
        /// Password or token (default: read from stdin).
        #[arg(long, short)]
        password: Option<String>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// The build context directory (COPY/ADD sources; .dockerignore applies).
    #[arg(default_value = ".")]
    pub context: PathBuf,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Reference to tag the result with (repeatable). `--name` is seed 004's spelling.
    #[arg(short = 't', long = "tag", visible_alias = "name")]
    pub tags: Vec<String>,
    /// Build argument KEY=VALUE (repeatable).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Build up to this stage (`FROM … AS STAGE`).
    #[arg(long)]
    pub target: Option<String>,
    /// Run every step, ignoring the layer cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Accepted for seed 004 compatibility; images are layered and have no fixed size.
    #[arg(long)]
    pub size_mb: Option<u64>,
    /// Also prepare the image for this backend now (`kvm`: its VM base disk
    /// is made here instead of at the first boot). RUN steps always run on
    /// a backend that builds images (bubblewrap).
    #[arg(long)]
    pub backend_type: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CheckpointAction {
    /// Delete a checkpoint.
    Rm {
        /// The sandbox (id, name or slug).
        id: String,
        /// The checkpoint.
        name: String,
    },
}

//! `heyvm wt` flags.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug, Clone)]
#[command(
    about = "Pair a git worktree with a sandbox whose /workspace is that worktree",
    long_about = "Pair a git worktree with a sandbox whose /workspace is that worktree.\n\n\
        Run inside any git repository. `heyvm wt feature/x` creates the worktree ../feature-x (the branch is \
        created from -b BASE, else HEAD, when it does not exist), starts the sandbox wt-feature-x with the worktree \
        mounted at /workspace and opens a shell there. Leaving the shell stops the sandbox; the worktree stays \
        (remove it with `git worktree remove`).",
    after_help = "Examples:\n  heyvm wt feature/my-change\n  heyvm wt feature/my-change --detach --format json\n  \
        heyvm wt feature/my-change --shell\n  heyvm wt --list\n  \
        heyvm wt feature/x --deploy --server https://cloud.example --deploy-port 8080 --deploy-start-command 'python3 app.py'\n  \
        heyvm images build -f base.Dockerfile -t my-base . && heyvm wt feature/x --image my-base\n  \
        heyvm wt feature/x --deploy --publish-image --deploy-dockerfile ./Dockerfile --deploy-image-name my-agent-image"
)]
pub struct WtArgs {
    /// The branch (created when missing). Slashes and other characters become '-' in the worktree directory and
    /// sandbox name: feature/My_Change -> ../feature-my-change, wt-feature-my-change.
    #[arg(required_unless_present = "list")]
    pub branch: Option<String>,
    /// Base for a new branch (a branch, tag or commit; default HEAD). Ignored when the branch exists.
    #[arg(short = 'b', long = "base", value_name = "BASE")]
    pub base: Option<String>,
    /// Image for the sandbox: a registry image (pulled when missing) or one built here with `heyvm images build`
    /// (default: the host system, the fastest).
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// Backend (default: kvm, the microVM tier, where KVM really works — `heyvm backends` says accel kvm — else
    /// bubblewrap; the choice is printed).
    #[arg(long, value_name = "B")]
    pub backend: Option<String>,
    /// micro, mini, small, medium, large or xlarge.
    #[arg(long, value_name = "C")]
    pub size_class: Option<String>,
    /// Worktree directory instead of ../<slug> next to the repository.
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
    /// Return once the sandbox is running instead of opening a shell; it keeps running.
    #[arg(long, conflicts_with_all = ["shell", "list", "deploy"])]
    pub detach: bool,
    /// Open a shell in the branch's existing sandbox (started if stopped); leaving it does not stop the sandbox.
    #[arg(long, conflicts_with_all = ["list", "deploy"])]
    pub shell: bool,
    /// List the wt-* sandboxes with their branch, worktree and status.
    #[arg(long, conflicts_with = "deploy")]
    pub list: bool,
    #[command(flatten)]
    pub deploy: WtDeployArgs,
}

/// `--deploy`: ship the worktree to a remote heyvm server.
#[derive(Args, Debug, Clone)]
pub struct WtDeployArgs {
    /// Deploy the worktree to the remote server (--server or $HEYO_CLOUD_URL) instead of a local sandbox.
    #[arg(long)]
    pub deploy: bool,
    /// Image of the remote sandbox.
    #[arg(long, requires = "deploy", value_name = "REF")]
    pub deploy_image: Option<String>,
    /// Region of the remote sandbox: US or EU.
    #[arg(long, requires = "deploy", value_name = "REGION")]
    pub deploy_region: Option<String>,
    /// Delete the remote sandbox after it has run this many seconds.
    #[arg(long, requires = "deploy", value_name = "SECS")]
    pub deploy_ttl_seconds: Option<u64>,
    /// Port to expose through the remote proxy (repeatable); health-checked when a start command is given.
    #[arg(long = "deploy-port", requires = "deploy", value_name = "PORT")]
    pub deploy_ports: Vec<u16>,
    /// Backend of the remote sandbox (the existing product's driver names are accepted, e.g. bubblewrap).
    #[arg(long, requires = "deploy", value_name = "DRIVER")]
    pub deploy_driver: Option<String>,
    /// Long-running command started in /workspace on the remote sandbox.
    #[arg(long, requires = "deploy", value_name = "CMD")]
    pub deploy_start_command: Option<String>,
    /// Path polled through the first --deploy-port until it answers 2xx (default / when a start command is given).
    #[arg(long, requires = "deploy", value_name = "PATH")]
    pub deploy_health_path: Option<String>,
    /// Build an image from --deploy-dockerfile here (`heyvm images build`, no Docker; the worktree is the context),
    /// upload it to the server's image store as --deploy-image-name and deploy on it; /workspace is populated too.
    #[arg(long, requires_all = ["deploy", "deploy_dockerfile", "deploy_image_name"], conflicts_with = "deploy_image")]
    pub publish_image: bool,
    /// The Dockerfile of --publish-image (relative to the current directory, else to the worktree).
    #[arg(long, requires = "publish_image", value_name = "FILE")]
    pub deploy_dockerfile: Option<PathBuf>,
    /// Name of the published image, locally and on the server (e.g. my-agent-image or my-agent-image:v2).
    #[arg(long, requires = "publish_image", value_name = "NAME")]
    pub deploy_image_name: Option<String>,
    /// Accepted for seed 004 compatibility: images are layered and have no fixed size.
    #[arg(long, requires = "publish_image", value_name = "MB")]
    pub deploy_image_size_mb: Option<u64>,
}

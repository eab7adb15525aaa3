//! The sandbox side of `heyvm wt`: `wt-<slug>` with the worktree mounted at
//! /workspace, found, reused, restarted or (re)created through the API.
//! The branch and worktree are recorded in the sandbox's environment
//! (`HEYVM_WT_BRANCH`, `HEYVM_WT_WORKTREE`), which also tells programs
//! inside which branch they work on.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use heyvm_client::{Client, ClientError};
use heyvm_types::{CreateSandboxRequest, MountSpec, SandboxInfo, SandboxStatus, SizeClass, WORKSPACE_PATH};
use serde::Serialize;

pub const BRANCH_ENV: &str = "HEYVM_WT_BRANCH";
pub const WORKTREE_ENV: &str = "HEYVM_WT_WORKTREE";

/// What every `heyvm wt` mode prints with `--format json`.
#[derive(Debug, Serialize)]
pub struct WtInfo {
    pub id: String,
    pub name: String,
    pub branch: Option<String>,
    pub worktree: Option<String>,
    pub status: SandboxStatus,
    pub backend_type: String,
    pub guest_ip: Option<String>,
    /// The shell's exit code (attached modes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell_exit_code: Option<i32>,
}

impl WtInfo {
    pub fn from_info(i: &SandboxInfo) -> WtInfo {
        WtInfo {
            id: i.id.clone(),
            name: i.name.clone(),
            branch: i.env_vars.get(BRANCH_ENV).cloned(),
            worktree: worktree_of(i),
            status: i.status,
            backend_type: i.backend_type.clone(),
            guest_ip: i.guest_ip.clone(),
            shell_exit_code: None,
        }
    }
}

/// The host directory mounted at /workspace, if any.
pub fn worktree_of(i: &SandboxInfo) -> Option<String> {
    i.mounts.iter().find(|m| m.sandbox_path == WORKSPACE_PATH).map(|m| m.host_path.clone())
}

/// What `ensure` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// It was running already (same id).
    Reused,
    /// It was stopped or failed and is running again.
    Started,
    /// It could not start (e.g. its directory was damaged): deleted and made anew.
    Recreated,
}

/// How a new sandbox is made.
pub struct Wanted<'a> {
    pub name: &'a str,
    pub branch: &'a str,
    pub worktree: &'a Path,
    pub image: Option<String>,
    pub backend: Option<String>,
    pub size_class: Option<String>,
}

pub fn find(c: &Client, name: &str) -> anyhow::Result<Option<SandboxInfo>> {
    match c.get_sandbox(name) {
        Ok(i) => Ok(Some(i)),
        Err(e) if e.code() == "sandbox_not_found" => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The running sandbox for `w`, created or started as needed.
pub fn ensure(c: &Client, w: &Wanted, progress: &dyn Fn(&str)) -> anyhow::Result<(SandboxInfo, Outcome)> {
    let Some(existing) = find(c, w.name)? else {
        return create(c, w).map(|i| (i, Outcome::Created));
    };
    let worktree = w.worktree.display().to_string();
    match worktree_of(&existing) {
        Some(p) if super::git::same_path(Path::new(&p), w.worktree) => {}
        other => bail!(
            "sandbox {} ({}) serves {} rather than the worktree {worktree}; remove it first (heyvm rm -y {})",
            existing.name,
            existing.id,
            other.map(|p| format!("the worktree {p}")).unwrap_or_else(|| "no worktree".into()),
            existing.id
        ),
    }
    let existing = settle(c, existing)?;
    match existing.status {
        SandboxStatus::Running => Ok((existing, Outcome::Reused)),
        _ => {
            progress(&format!("starting the {} sandbox {} ({})", existing.status, existing.name, existing.id));
            match c.action(&existing.id, "start") {
                Ok(i) => Ok((i, Outcome::Started)),
                Err(e) => {
                    progress(&format!("sandbox {} did not start ({e}); deleting and recreating it (the worktree is kept)", existing.id));
                    c.delete_sandbox(&existing.id)?;
                    create(c, w).map(|i| (i, Outcome::Recreated))
                }
            }
        }
    }
}

/// Waits while the sandbox is provisioning (another `heyvm wt` starting it).
fn settle(c: &Client, mut i: SandboxInfo) -> anyhow::Result<SandboxInfo> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while i.status == SandboxStatus::Provisioning && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        i = c.get_sandbox(&i.id)?;
    }
    Ok(i)
}

fn create(c: &Client, w: &Wanted) -> anyhow::Result<SandboxInfo> {
    let size_class = w.size_class.as_deref().map(|s| s.parse::<SizeClass>().map_err(|e| anyhow!(e))).transpose()?;
    let worktree = w.worktree.display().to_string();
    let req = CreateSandboxRequest {
        name: Some(w.name.to_string()),
        image: w.image.clone(),
        backend_type: w.backend.clone(),
        size_class,
        working_directory: Some(WORKSPACE_PATH.into()),
        env_vars: Some([(BRANCH_ENV.to_string(), w.branch.to_string()), (WORKTREE_ENV.to_string(), worktree.clone())].into()),
        mounts: Some(mounts(w.worktree)),
        ..Default::default()
    };
    match c.create(&req) {
        Ok(i) => Ok(i),
        // Another `heyvm wt` for the same branch won the race: use its sandbox.
        Err(e) if e.code() == "name_taken" => Ok(settle(c, c.get_sandbox(w.name)?)?),
        Err(e @ ClientError::Api { .. }) if e.code() == "sandbox_failed" => bail!("the sandbox {} did not start: {e}", w.name),
        Err(e) => Err(e.into()),
    }
}

/// The worktree at /workspace, and its `.git` (the file naming the git dir
/// of a linked worktree, or the main worktree's git dir) read-only over it.
/// Git on the host trusts what `.git` says: a sandbox that could rewrite it
/// (say to a git dir with `core.fsmonitor` set) would run its code the next
/// time the user types `git status` in the worktree.
fn mounts(worktree: &Path) -> Vec<MountSpec> {
    let ws = |p: &Path, at: &str, ro: bool| MountSpec::host(p.display().to_string(), at, ro);
    let mut v = vec![ws(worktree, WORKSPACE_PATH, false)];
    let dot_git = worktree.join(".git");
    if dot_git.symlink_metadata().is_ok_and(|m| m.is_file() || m.is_dir()) {
        v.push(ws(&dot_git, &format!("{WORKSPACE_PATH}/.git"), true));
    }
    v
}

/// Every `wt-*` sandbox, stopped ones included.
pub fn list(c: &Client) -> anyhow::Result<Vec<WtInfo>> {
    Ok(c.list(None)?.iter().filter(|i| i.name.starts_with("wt-")).map(WtInfo::from_info).collect())
}

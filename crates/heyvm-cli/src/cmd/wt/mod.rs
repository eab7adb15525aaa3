//! `heyvm wt`: a git worktree paired with a sandbox whose /workspace is
//! that worktree (seed 004).
//!
//! * [`git`]: repository, branch-name checks, the worktree at `../<slug>`.
//! * [`sandbox`]: the `wt-<slug>` sandbox: found, reused, restarted or
//!   (re)created with the worktree mounted at /workspace.
//! * [`deploy`]: `--deploy`, shipping the worktree to a remote server
//!   through `heyvm deploy`'s archive/create/health path.
//!
//! Attached mode opens a shell in /workspace and stops the sandbox when the
//! shell ends (unless it was already running before: then someone else is
//! using it). `--detach` returns once it runs; `--shell` reattaches.

pub mod args;
mod deploy;
mod git;
mod sandbox;
mod slug;

use std::process::ExitCode;

use anyhow::{bail, Context};
use heyvm_client::Client;

pub use args::WtArgs;
use sandbox::{Outcome, WtInfo};

use super::shell::{self, ShellOpts};
use crate::args::Cli;
use crate::daemon;
use crate::output::{self, Format};

pub fn run(cli: &Cli, a: WtArgs) -> anyhow::Result<ExitCode> {
    let f = cli.format;
    if a.list {
        return list(&daemon::local_client(cli)?, f);
    }
    let branch = a.branch.clone().context("a branch name is required")?;
    let progress = |msg: &str| {
        if f == Format::Text {
            eprintln!("==> {msg}");
        }
    };
    if let Some(s) = &a.size_class {
        s.parse::<heyvm_types::SizeClass>().map_err(|e| anyhow::anyhow!(e))?;
    }
    if a.shell {
        let name = slug_name(&branch)?;
        return reattach(cli, &daemon::local_client(cli)?, &name, &branch, &progress);
    }
    let repo = git::Repo::discover(&std::env::current_dir()?)?;
    repo.check_branch(&branch)?;
    let slug = slug::slugify(&branch);
    if a.deploy.deploy {
        return deploy::run(cli, &repo, &branch, &slug, &a);
    }
    let (worktree, note) = repo.ensure_worktree(&branch, a.base.as_deref(), a.path.as_deref(), &slug)?;
    progress(&note);
    let c = daemon::local_client(cli)?;
    let name = slug::sandbox_name(&slug);
    let (backend, why) = match &a.backend {
        Some(b) => (b.clone(), String::new()),
        None => default_backend(&c.backends().unwrap_or_default()),
    };
    let wanted = sandbox::Wanted {
        name: &name,
        branch: &branch,
        worktree: &worktree,
        image: a.image.clone(),
        backend: Some(backend),
        size_class: a.size_class.clone(),
    };
    let (info, outcome) = sandbox::ensure(&c, &wanted, &progress)?;
    let verb = match outcome {
        Outcome::Created => "created",
        Outcome::Reused => "reusing the running",
        Outcome::Started => "restarted",
        Outcome::Recreated => "recreated",
    };
    let why = if outcome == Outcome::Reused || why.is_empty() { String::new() } else { format!(" ({why})") };
    let on_image = if info.image == "host" { String::new() } else { format!(", image {}", info.image) };
    progress(&format!("{verb} sandbox {} ({}) on {}{why}{on_image}", info.name, info.id, info.backend_type));
    if a.detach {
        let wt = WtInfo::from_info(&info);
        match f {
            Format::Json => output::json(&wt),
            Format::Text => print_detached(&wt, &branch),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let shell = shell::run_shell(&c, crate::credentials::token(cli).as_deref(), &info.id, workspace_shell());
    // Leaving the shell stops the sandbox, unless it was already running
    // when we came (a detached session someone else may be using).
    if outcome == Outcome::Reused {
        progress(&format!("sandbox {} was running before; left running (heyvm stop {})", info.name, info.id));
    } else {
        progress(&format!("stopping sandbox {} ({}); the worktree {} stays", info.name, info.id, worktree.display()));
        c.action(&info.id, "stop").with_context(|| format!("stopping {}", info.id))?;
    }
    finish_attached(&c, f, &info.id, shell?)
}

/// `heyvm wt <branch> --shell`: a shell in the branch's existing sandbox.
fn reattach(cli: &Cli, c: &Client, name: &str, branch: &str, progress: &dyn Fn(&str)) -> anyhow::Result<ExitCode> {
    let Some(mut info) = sandbox::find(c, name)? else {
        bail!("no sandbox {name} for branch '{branch}'; create it with: heyvm wt {branch}");
    };
    if info.status != heyvm_types::SandboxStatus::Running {
        progress(&format!("starting the {} sandbox {} ({})", info.status, info.name, info.id));
        info = c.action(&info.id, "start")?;
    }
    let code = shell::run_shell(c, crate::credentials::token(cli).as_deref(), &info.id, workspace_shell())?;
    finish_attached(c, cli.format, &info.id, code)
}

fn finish_attached(c: &Client, f: Format, id: &str, code: i32) -> anyhow::Result<ExitCode> {
    if f == Format::Json {
        let mut wt = WtInfo::from_info(&c.get_sandbox(id)?);
        wt.shell_exit_code = Some(code);
        output::json(&wt);
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

fn workspace_shell() -> ShellOpts {
    ShellOpts { cwd: Some(heyvm_types::WORKSPACE_PATH.into()), ..Default::default() }
}

fn slug_name(branch: &str) -> anyhow::Result<String> {
    let slug = slug::slugify(branch);
    if slug.is_empty() {
        bail!("invalid branch name '{branch}': it needs at least one ASCII letter or digit");
    }
    Ok(slug::sandbox_name(&slug))
}

/// The backend of a new wt sandbox when none is asked for, and why: the
/// microVM tier (kvm) only where KVM really works (the daemon's probe says
/// accel kvm), else bubblewrap. A kvm backend running under TCG works but
/// emulates every instruction, too slow to be a default.
fn default_backend(backends: &[heyvm_types::BackendInfo]) -> (String, String) {
    let bwrap = "bubblewrap".to_string();
    match backends.iter().find(|b| b.name == "kvm") {
        Some(b) if b.available && b.accel.as_deref() == Some("kvm") => {
            ("kvm".into(), "the default: KVM works here, so the microVM tier".into())
        }
        Some(b) if b.available => {
            let accel = b.accel.clone().unwrap_or_else(|| "tcg".into());
            (
                bwrap,
                format!(
                    "the default: not the microVM backend, KVM does not really work here (kvm would run under {accel}, software emulation)"
                ),
            )
        }
        Some(b) => {
            let reason = b.reason.clone().unwrap_or_else(|| "unavailable".into());
            (bwrap, format!("the default: not the microVM backend, unavailable here: {reason}"))
        }
        None => (bwrap, "the default: this daemon runs no microVM backend".into()),
    }
}

fn print_detached(wt: &WtInfo, branch: &str) {
    println!("{} ({}) {} on {}", wt.name, wt.id, wt.status, wt.backend_type);
    println!("  branch    {branch}");
    println!("  worktree  {} -> /workspace", wt.worktree.as_deref().unwrap_or("-"));
    if let Some(ip) = &wt.guest_ip {
        println!("  guest ip  {ip}");
    }
    println!("Attach: heyvm wt {branch} --shell   (or heyvm sh {})", wt.id);
    println!("Stop:   heyvm stop {}", wt.id);
}

fn list(c: &Client, f: Format) -> anyhow::Result<ExitCode> {
    let items = sandbox::list(c)?;
    match f {
        Format::Json => output::json(&items),
        Format::Text if items.is_empty() => println!("No wt sandboxes."),
        Format::Text => {
            let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|w| vec![w.id.clone(), w.name.clone(), dash(&w.branch), dash(&w.worktree), w.status.to_string()])
                .collect();
            output::table(&["ID", "NAME", "BRANCH", "WORKTREE", "STATUS"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use heyvm_types::BackendInfo;

    fn kvm(available: bool, accel: Option<&str>) -> Vec<BackendInfo> {
        let b = |name: &str, available: bool, accel: Option<&str>| BackendInfo {
            name: name.into(),
            available,
            reason: (!available).then(|| "no /dev/kvm".into()),
            accel: accel.map(String::from),
            aliases: vec![],
        };
        vec![b("bubblewrap", true, None), b("kvm", available, accel)]
    }

    #[test]
    fn the_microvm_tier_is_the_default_only_with_real_kvm() {
        assert_eq!(super::default_backend(&kvm(true, Some("kvm"))).0, "kvm");
        let (b, why) = super::default_backend(&kvm(true, Some("tcg")));
        assert_eq!(b, "bubblewrap");
        assert!(why.contains("tcg"), "{why}");
        let (b, why) = super::default_backend(&kvm(false, None));
        assert_eq!(b, "bubblewrap");
        assert!(why.contains("no /dev/kvm"), "{why}");
        assert_eq!(super::default_backend(&kvm(true, Some("kvm"))[..1]).0, "bubblewrap");
    }
}

//! The git side of `heyvm wt`: finding the repository, validating the
//! branch name and creating or finding the branch's worktree. Everything
//! goes through the `git` command, so the user's git configuration and
//! ownership rules apply (worktrees belong to whoever runs `heyvm wt`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context};

/// Runs git in `dir`; stdout on success, git's first error line otherwise.
fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| anyhow!("cannot run git ({e}); is git installed?"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("git failed").to_string();
    Err(anyhow!(line.trim_start_matches("fatal: ").to_string()))
}

/// One entry of `git worktree list --porcelain`.
#[derive(Debug, Clone, PartialEq)]
pub struct Worktree {
    pub path: PathBuf,
    /// Short branch name; None when detached or bare.
    pub branch: Option<String>,
    pub prunable: bool,
}

pub fn parse_worktrees(porcelain: &str) -> Vec<Worktree> {
    let mut out = Vec::new();
    for block in porcelain.split("\n\n") {
        let mut wt: Option<Worktree> = None;
        for line in block.lines() {
            if let Some(p) = line.strip_prefix("worktree ") {
                wt = Some(Worktree { path: PathBuf::from(p), branch: None, prunable: false });
            } else if let (Some(w), Some(b)) = (wt.as_mut(), line.strip_prefix("branch ")) {
                w.branch = Some(b.strip_prefix("refs/heads/").unwrap_or(b).to_string());
            } else if let (Some(w), true) = (wt.as_mut(), line.starts_with("prunable")) {
                w.prunable = true;
            }
        }
        out.extend(wt);
    }
    out
}

/// A repository found from the current directory.
pub struct Repo {
    /// The main worktree (first entry of `git worktree list`).
    pub main: PathBuf,
}

impl Repo {
    pub fn discover(cwd: &Path) -> anyhow::Result<Repo> {
        let top = git(cwd, &["rev-parse", "--show-toplevel"]).map_err(|e| {
            if e.to_string().contains("not a git repository") {
                anyhow!("not inside a git repository ({}): run heyvm wt from a git checkout", cwd.display())
            } else {
                e
            }
        })?;
        let list = parse_worktrees(&git(Path::new(&top), &["worktree", "list", "--porcelain"])?);
        let main = list.first().map(|w| w.path.clone()).unwrap_or_else(|| PathBuf::from(&top));
        Ok(Repo { main })
    }

    /// Refuses names git would refuse (`git check-ref-format`), option-like
    /// names and names that leave nothing to name a directory after.
    pub fn check_branch(&self, branch: &str) -> anyhow::Result<()> {
        let bad = |why: &str| anyhow!("invalid branch name '{branch}': {why}");
        if branch.starts_with('-') || branch == "HEAD" || branch.contains("@{") {
            return Err(bad("git does not allow it as a branch name"));
        }
        if git(&self.main, &["check-ref-format", &format!("refs/heads/{branch}")]).is_err() {
            return Err(bad("git does not allow it as a branch name (see git check-ref-format)"));
        }
        if super::slug::slugify(branch).is_empty() {
            return Err(bad("it needs at least one ASCII letter or digit to name the worktree and sandbox"));
        }
        Ok(())
    }

    pub fn worktrees(&self) -> anyhow::Result<Vec<Worktree>> {
        Ok(parse_worktrees(&git(&self.main, &["worktree", "list", "--porcelain"])?))
    }

    fn branch_exists(&self, branch: &str) -> bool {
        git(&self.main, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")]).is_ok()
    }

    /// The branch's worktree, created at `wanted` (or `../<slug>`) when the
    /// branch has none. Returns the path and what was done.
    pub fn ensure_worktree(
        &self,
        branch: &str,
        base: Option<&str>,
        wanted: Option<&Path>,
        slug: &str,
    ) -> anyhow::Result<(PathBuf, String)> {
        let mut list = self.worktrees()?;
        if list.iter().any(|w| w.prunable) {
            // A worktree directory deleted by hand: let git forget it so the
            // branch can be checked out again.
            git(&self.main, &["worktree", "prune"])?;
            list = self.worktrees()?;
        }
        let parent = self.main.parent().unwrap_or(Path::new("/"));
        let target = match wanted {
            Some(p) => absolute(p)?,
            None => parent.join(slug),
        };
        if let Some(w) = list.iter().find(|w| w.branch.as_deref() == Some(branch)) {
            if wanted.is_some() && !same_path(&w.path, &target) {
                bail!("branch '{branch}' is already checked out at {}, not {}", w.path.display(), target.display());
            }
            let path = w.path.canonicalize().with_context(|| format!("the worktree of branch '{branch}' ({})", w.path.display()))?;
            return Ok((path, format!("using worktree {} (branch {branch})", w.path.display())));
        }
        if target.symlink_metadata().is_ok() {
            bail!("{} already exists and is not the worktree of branch '{branch}'; pass --path DIR or remove it", target.display());
        }
        let t = target.to_string_lossy().to_string();
        let note = if self.branch_exists(branch) {
            git(&self.main, &["worktree", "add", "--quiet", &t, branch])?;
            if base.is_some() {
                format!("created worktree {t} for the existing branch {branch} (-b ignored)")
            } else {
                format!("created worktree {t} for the existing branch {branch}")
            }
        } else {
            let from = base.unwrap_or("HEAD");
            git(&self.main, &["worktree", "add", "--quiet", "-b", branch, &t, from])?;
            format!("created worktree {t} with the new branch {branch} from {from}")
        };
        let path = target.canonicalize().with_context(|| format!("resolving {t}"))?;
        Ok((path, note))
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir()?.join(p) })
}

/// Compares paths after resolving symlinks (when they exist).
pub fn same_path(a: &Path, b: &Path) -> bool {
    let c = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    c(a) == c(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn porcelain_parsing() {
        let text = "worktree /r/main\nHEAD 1111\nbranch refs/heads/main\n\nworktree /r/feature-x\nHEAD 2222\nbranch refs/heads/feature/x\n\n\
                    worktree /r/detached\nHEAD 3333\ndetached\n\nworktree /r/gone\nHEAD 4444\nbranch refs/heads/gone\nprunable gitdir file points to non-existent location\n";
        let w = parse_worktrees(text);
        assert_eq!(w.len(), 4);
        assert_eq!(w[0], Worktree { path: "/r/main".into(), branch: Some("main".into()), prunable: false });
        assert_eq!(w[1].branch.as_deref(), Some("feature/x"));
        assert_eq!(w[2].branch, None);
        assert!(w[3].prunable);
    }
}

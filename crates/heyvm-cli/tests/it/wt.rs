//! `heyvm wt` end to end: temporary git repositories, the real binary and
//! daemon. Detached mode and idempotence, `--list`, `--shell`, logs, JSON
//! shapes, attached mode in tmux, a damaged sandbox directory, and every
//! error the issue names. Remote deploys and non-root users are in
//! `wt_remote.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

use crate::shell::Tmux;
use crate::support::{vm_support, Daemon, BIN};

/// A temporary directory holding `repo/` (a git repository with one
/// commit); worktrees appear beside it.
pub(crate) struct TempRepo {
    pub dir: tempfile::TempDir,
}

impl TempRepo {
    pub(crate) fn new() -> TempRepo {
        let dir = tempfile::Builder::new().prefix("heyvm-wt-").tempdir_in("/tmp").unwrap();
        let r = TempRepo { dir };
        std::fs::create_dir(r.repo()).unwrap();
        r.git(&["init", "-q", "-b", "main"]);
        std::fs::write(r.repo().join("README"), "hello from main\n").unwrap();
        r.git(&["add", "README"]);
        r.git(&["commit", "-q", "-m", "init"]);
        r
    }

    pub(crate) fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub(crate) fn git(&self, args: &[&str]) -> String {
        let out = git_cmd(&self.repo()).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

pub(crate) fn git_cmd(dir: &Path) -> Command {
    let mut c = Command::new("git");
    // Some repositories belong to another user (uid 1000).
    c.args(["-c", "safe.directory=*", "-C"]).arg(dir);
    for (k, v) in [
        ("GIT_AUTHOR_NAME", "t"),
        ("GIT_AUTHOR_EMAIL", "t@example.com"),
        ("GIT_COMMITTER_NAME", "t"),
        ("GIT_COMMITTER_EMAIL", "t@example.com"),
    ] {
        c.env(k, v);
    }
    c
}

/// `heyvm wt …` run inside `dir` against `d`.
fn wt(d: &Daemon, dir: &Path, args: &[&str]) -> Output {
    d.cmd().current_dir(dir).arg("wt").args(args).output().unwrap()
}

fn wt_json(d: &Daemon, dir: &Path, args: &[&str]) -> Value {
    let out = wt(d, dir, &[args, &["--format", "json"]].concat());
    assert!(out.status.success(), "heyvm wt {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The one-line reason of a failed command.
pub(crate) fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line expected:\n{err}");
    err
}

const KEYS: [&str; 7] = ["id", "name", "branch", "worktree", "status", "backend_type", "guest_ip"];

fn assert_shape(v: &Value) {
    for k in KEYS {
        assert!(v.get(k).is_some(), "'{k}' missing in {v}");
    }
}

#[test]
fn detach_is_idempotent_lists_and_reattaches() {
    let Some(d) = Daemon::start() else { return };
    let r = TempRepo::new();
    let v = wt_json(&d, &r.repo(), &["feature/My_Change", "--detach", "--size-class", "micro"]);
    assert_shape(&v);
    let id = v["id"].as_str().unwrap().to_string();
    let worktree = r.path("feature-my-change").canonicalize().unwrap();
    assert_eq!(v["name"], "wt-feature-my-change");
    assert_eq!(v["branch"], "feature/My_Change");
    assert_eq!(v["worktree"], worktree.display().to_string());
    assert_eq!((v["status"].as_str(), v["backend_type"].as_str()), (Some("running"), Some("bubblewrap")));
    // A real worktree on the new branch, made from HEAD.
    assert_eq!(git_cmd(&worktree).args(["branch", "--show-current"]).output().unwrap().stdout, b"feature/My_Change\n");
    assert_eq!(std::fs::read_to_string(worktree.join("README")).unwrap(), "hello from main\n");

    // /workspace is the worktree, both ways.
    let out = d.sh(&id, "pwd; cat /workspace/README; echo made-inside > /workspace/inside.txt; echo $HEYVM_WT_BRANCH");
    assert_eq!(out["stdout"], "/workspace\nhello from main\nfeature/My_Change\n", "{out}");
    assert_eq!(std::fs::read_to_string(worktree.join("inside.txt")).unwrap(), "made-inside\n");
    // The worktree's .git (which host git trusts) cannot be rewritten or replaced from inside.
    let dot_git = std::fs::read_to_string(worktree.join(".git")).unwrap();
    let out = d
        .sh(&id, "echo 'gitdir: /tmp/evil' > /workspace/.git; rm -f /workspace/.git; mv /workspace/.git /workspace/x; cat /workspace/.git");
    assert_eq!(out["stdout"], dot_git.as_str(), "{out}");
    assert_eq!(std::fs::read_to_string(worktree.join(".git")).unwrap(), dot_git);

    // The owner process and its files.
    let dir = d.data.path().join("sandboxes").join(&id);
    let owner: Value = serde_json::from_slice(&std::fs::read(dir.join("owner.json")).unwrap()).unwrap();
    let pid = owner["pid"].as_i64().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "owner {pid} alive");
    assert_eq!(owner["guest_ip"], v["guest_ip"], "owner.json records the guest IP");
    assert!(dir.join("owner.log").exists());

    // Idempotent: same id while running, restarted (same id) when stopped.
    let again = wt_json(&d, &r.repo(), &["feature/My_Change", "--detach"]);
    assert_eq!((again["id"].as_str(), again["status"].as_str()), (Some(id.as_str()), Some("running")));
    d.heyvm_json(&["stop", &id]);
    let out = wt(&d, &r.repo(), &["feature/My_Change", "--detach"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("heyvm sh {id}")), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(d.heyvm_json(&["get", &id])["status"], "running");
    // Same from inside the worktree (or any subdirectory of the repository).
    let inner = wt_json(&d, &worktree, &["feature/My_Change", "--detach"]);
    assert_eq!(inner["id"], id.as_str());

    // --list: only wt-* sandboxes, with branch, worktree and status.
    d.create(json!({"name": "not-a-worktree", "size_class": "micro"}));
    let other = wt_json(&d, &r.repo(), &["other", "--detach", "--size-class", "micro"]);
    d.heyvm_json(&["stop", other["id"].as_str().unwrap()]);
    let list = wt_json(&d, Path::new("/"), &["--list"]);
    let items = list.as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    items.iter().for_each(assert_shape);
    let other_row = items.iter().find(|i| i["name"] == "wt-other").unwrap();
    assert_eq!((other_row["branch"].as_str(), other_row["status"].as_str()), (Some("other"), Some("stopped")));
    let text = String::from_utf8_lossy(&wt(&d, Path::new("/"), &["--list"]).stdout).to_string();
    assert!(text.contains("BRANCH") && text.contains("WORKTREE") && text.contains("feature/My_Change"), "{text}");
    assert!(!text.contains("not-a-worktree"), "{text}");

    // Reattach: --shell and `heyvm sh ID` open in /workspace; leaving does not stop it.
    let out = piped(&d, &r.repo(), &["wt", "feature/My_Change", "--shell"], "pwd; exit 7\n");
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/workspace"));
    let out = piped(&d, &r.repo(), &["sh", &id, "--format", "json"], "echo via-sh-$((4*4))\nexit 0\n");
    assert!(String::from_utf8_lossy(&out.stdout).contains("via-sh-16"));
    assert_eq!(d.heyvm_json(&["get", &id])["status"], "running");
    let out = piped(&d, &r.repo(), &["wt", "feature/My_Change", "--shell", "--format", "json"], "exit 0\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout[stdout.rfind("\n{").map(|i| i + 1).unwrap_or(0)..]).unwrap();
    assert_shape(&v);
    assert_eq!(v["shell_exit_code"], 0);

    // Logs include the owner's lines.
    let logs = d.heyvm(&["logs", &id]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(logs.contains("[owner]"), "{logs}");
}

/// `heyvm wt --backend kvm`: the worktree is a 9p share at `/workspace`;
/// its `.git` (a file, which 9p cannot share by itself) is seen through
/// that share and is read-only on the host side, for QEMU, so the guest's
/// root cannot rewrite or replace it either. Git itself does not work
/// inside (on bubblewrap neither): `.git` names the main repository's git
/// directory by its host path, which no sandbox sees; commit on the host.
#[test]
fn wt_on_a_vm_shares_the_worktree_and_keeps_its_dot_git_read_only() {
    if !vm_support() {
        return;
    }
    let Some(d) = Daemon::start() else { return };
    let r = TempRepo::new();
    let v = wt_json(&d, &r.repo(), &["vm/branch", "--backend", "kvm", "--detach", "--size-class", "micro"]);
    assert_shape(&v);
    assert_eq!((v["status"].as_str(), v["backend_type"].as_str()), (Some("running"), Some("kvm")), "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let worktree = r.path("vm-branch").canonicalize().unwrap();
    let dot_git = std::fs::read_to_string(worktree.join(".git")).unwrap();
    assert!(dot_git.starts_with("gitdir: "), "a linked worktree's .git is a file: {dot_git}");
    let guard = "echo 'gitdir: /tmp/evil' > /workspace/.git; rm -f /workspace/.git; mv /workspace/.git /workspace/x; cat /workspace/.git";
    for round in ["first boot", "after stop and wt again"] {
        let out = d.sh(&id, &format!("pwd; cat /workspace/README; echo {round} > /workspace/inside.txt; echo $HEYVM_WT_BRANCH"));
        assert_eq!(out["stdout"], "/workspace\nhello from main\nvm/branch\n", "{round}: {out}");
        assert_eq!(std::fs::read_to_string(worktree.join("inside.txt")).unwrap(), format!("{round}\n"));
        let out = d.sh(&id, guard);
        assert_eq!(out["stdout"], dot_git.as_str(), "{round}: {out}");
        let err = out["stderr"].as_str().unwrap_or_default();
        assert!(err.contains("Read-only file system") && err.contains("busy"), "{round}: {out}");
        assert_eq!(std::fs::read_to_string(worktree.join(".git")).unwrap(), dot_git, "{round}");
        assert!(!worktree.join("x").exists(), "{round}");
        d.heyvm_json(&["stop", &id]);
        let again = wt_json(&d, &r.repo(), &["vm/branch", "--detach"]);
        assert_eq!((again["id"].as_str(), again["status"].as_str()), (Some(id.as_str()), Some("running")), "{again}");
    }
    // The host-side binds live in QEMU's own mount namespace only.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&worktree.join(".git").display().to_string()), "a bind leaked to the host:\n{mounts}");
    // Any other file mount has no directory share to ride on: refused, saying why.
    let file = r.path("lone-file");
    std::fs::write(&file, "x").unwrap();
    let mount = json!([{"host_path": file, "sandbox_path": "/data/lone", "read_only": true}]);
    let (s, e) = d.post("/sandboxes", &json!({"name": "lone", "backend_type": "kvm", "size_class": "micro", "mounts": mount}));
    assert!(s >= 400 && e["message"].as_str().unwrap_or_default().contains("is a file"), "{s} {e}");
}

fn piped(d: &Daemon, dir: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child =
        d.cmd().current_dir(dir).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn attached_shell_in_tmux_stops_the_sandbox_and_keeps_the_worktree() {
    let Some(d) = Daemon::start() else { return };
    let r = TempRepo::new();
    let shell = format!(
        "cd {} && env -i PATH=/usr/local/bin:/usr/bin:/bin TERM=screen HEYVM_API_URL={} MVM_DATA_DIR={} PS1='local$ ' bash --norc --noprofile",
        r.repo().display(),
        d.url,
        d.data.path().display()
    );
    let Some(t) = Tmux::start(&shell, 120, 30) else { return };
    t.keys(&format!("{BIN} wt fix/in-tmux --size-class micro; echo \"wt-rc=$?\""));
    t.wait_for("root@wt-fix-in-tmux:/workspace");
    t.keys("echo typed > note.txt; echo shell-$((20+22)) $HEYVM_WT_BRANCH");
    t.wait_for("shell-42 fix/in-tmux");
    t.keys("exit 5");
    t.wait_for("wt-rc=5");
    let info = d.heyvm_json(&["get", "wt-fix-in-tmux"]);
    assert_eq!(info["status"], "stopped", "leaving the shell stops the sandbox");
    let worktree = r.path("fix-in-tmux");
    assert_eq!(std::fs::read_to_string(worktree.join("note.txt")).unwrap(), "typed\n", "the worktree stays");
    assert!(t.screen().contains("microVM backend"), "says which backend and why:\n{}", t.screen());
}

#[test]
fn damaged_sandbox_dir_is_recreated() {
    let Some(d) = Daemon::start() else { return };
    let r = TempRepo::new();
    let first = wt_json(&d, &r.repo(), &["fragile", "--detach", "--size-class", "micro"]);
    let id = first["id"].as_str().unwrap();
    d.heyvm_json(&["stop", id]);
    // The sandbox's root is replaced by garbage: it cannot start any more.
    let root = d.storage(id).join("root");
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::write(&root, "garbage").unwrap();
    let out = wt(&d, &r.repo(), &["fragile", "--detach", "--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "running");
    assert_ne!(v["id"].as_str(), Some(id), "a new sandbox");
    assert_eq!(d.sh(v["id"].as_str().unwrap(), "cat /workspace/README")["stdout"], "hello from main\n");
    assert_eq!(d.get(&format!("/sandboxes/{id}")).0, 404, "the damaged one is gone");
}

#[test]
fn bad_input_fails_with_one_line() {
    // No daemon is needed: these fail before any sandbox is involved.
    let r = TempRepo::new();
    let no_daemon = |dir: &Path, args: &[&str]| {
        Command::new(BIN)
            .current_dir(dir)
            .env("HEYVM_API_URL", "http://127.0.0.1:9")
            .env("MVM_DATA_DIR", r.path("data"))
            .arg("wt")
            .args(args)
            .output()
            .unwrap()
    };
    let outside = tempfile::tempdir_in("/tmp").unwrap();
    assert!(one_line_error(&no_daemon(outside.path(), &["x"])).contains("not inside a git repository"));
    for bad in ["bad..name", "a b", "-x", "x~1", "ends.lock", "ÄÖ", "HEAD"] {
        let err = one_line_error(&no_daemon(&r.repo(), &["--", bad]));
        assert!(err.contains("invalid branch name"), "{bad}: {err}");
    }
    std::fs::create_dir(r.path("taken")).unwrap();
    let err = one_line_error(&no_daemon(&r.repo(), &["taken"]));
    assert!(err.contains("already exists and is not the worktree of branch 'taken'"), "{err}");
    // A worktree of another branch at the wanted path.
    r.git(&["worktree", "add", "-q", "-b", "one", r.path("one").to_str().unwrap()]);
    let err = one_line_error(&no_daemon(&r.repo(), &["two", "--path", r.path("one").to_str().unwrap()]));
    assert!(err.contains("is not the worktree of branch 'two'"), "{err}");
    let err = one_line_error(&no_daemon(&r.repo(), &["x", "--size-class", "huge"]));
    assert!(err.contains("unknown size class"), "{err}");
    let mut no_server = Command::new(BIN);
    no_server.current_dir(r.repo()).env_remove("HEYVM_API_URL").env_remove("HEYO_CLOUD_URL").args(["wt", "x", "--deploy"]);
    let err = one_line_error(&no_server.output().unwrap());
    assert!(err.contains("--deploy needs a remote server"), "{err}");
    // JSON errors for programs.
    let out = no_daemon(outside.path(), &["x", "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(v["message"].as_str().unwrap().contains("not inside a git repository"), "{v}");
    assert!(!r.path("x").exists(), "nothing created on bad input");
}

#[test]
fn shell_without_a_sandbox_and_existing_branches() {
    let Some(d) = Daemon::start() else { return };
    let r = TempRepo::new();
    let err = one_line_error(&wt(&d, &r.repo(), &["nothing-here", "--shell"]));
    assert!(err.contains("no sandbox wt-nothing-here"), "{err}");
    // An existing branch is checked out, not recreated; -b names a base.
    r.git(&["branch", "existing"]);
    r.git(&["tag", "v1"]);
    std::fs::write(r.repo().join("later"), "x").unwrap();
    r.git(&["add", "later"]);
    r.git(&["commit", "-q", "-m", "later"]);
    let v = wt_json(&d, &r.repo(), &["existing", "--detach", "--size-class", "micro"]);
    assert!(!r.path("existing/later").exists(), "existing branch keeps its commits");
    assert_eq!(v["branch"], "existing");
    let v = wt_json(
        &d,
        &r.repo(),
        &["from-tag", "-b", "v1", "--path", r.path("custom").to_str().unwrap(), "--detach", "--size-class", "micro"],
    );
    assert_eq!(v["worktree"], r.path("custom").canonicalize().unwrap().display().to_string());
    assert!(!r.path("custom/later").exists());
    // The main worktree's branch is used where it is.
    let v = wt_json(&d, &r.repo(), &["main", "--detach", "--size-class", "micro"]);
    assert_eq!(v["worktree"], r.repo().canonicalize().unwrap().display().to_string());
}

/// `--image`: a registry image, or one built here with `heyvm images build`;
/// the default backend is said, with why.
#[test]
fn wt_on_images_built_here_or_pulled() {
    let Some(reg) = crate::registry::Registry::shared() else { return };
    let reg = reg.with_busybox();
    let Some(d) = Daemon::start() else { return };
    let r = TempRepo::new();
    let ctx = r.path("img-ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {}\nRUN echo built-here > /base.txt\n", reg.image("busybox:1"))).unwrap();
    d.heyvm_json(&["images", "build", "--file", ctx.join("Dockerfile").to_str().unwrap(), "--name", "wt-base", ctx.to_str().unwrap()]);

    let out = wt(&d, &r.repo(), &["feat/img", "--image", "wt-base", "--detach"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("on bubblewrap (the default:") && said.contains("image wt-base"), "says which backend and why:\n{said}");
    let v = d.sh("wt-feat-img", "cat /base.txt; cat /workspace/README; test -e /etc/debian_version && echo HOST; true");
    assert_eq!(v["stdout"], "built-here\nhello from main\n", "the image, with the worktree at /workspace: {v}");
    let info = d.heyvm_json(&["get", "wt-feat-img"]);
    assert_eq!(info["image"], "wt-base");

    // A registry image, pulled on first use; files written inside reach the worktree.
    let image = reg.image("busybox:1");
    let v = wt_json(&d, &r.repo(), &["feat/reg", "--image", &image, "--detach"]);
    assert_eq!(v["backend_type"], "bubblewrap");
    let out = d.sh(v["id"].as_str().unwrap(), "cat /app/hello.txt && echo inside > /workspace/from-image.txt");
    assert_eq!(out["stdout"], "hello from the image\n", "{out}");
    assert_eq!(std::fs::read_to_string(r.path("feat-reg").join("from-image.txt")).unwrap(), "inside\n");
    // An image that does not exist: one line naming it, no sandbox left.
    let out = wt(&d, &r.repo(), &["feat/none", "--image", &reg.image("nope:1"), "--detach"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.trim_end().lines().last().unwrap().contains("nope:1"), "{err}");
    assert!(d.get("/sandboxes/wt-feat-none").0 == 404);
}

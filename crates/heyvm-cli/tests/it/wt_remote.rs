//! `heyvm wt` beyond one root user on one machine: `--deploy` to a second
//! daemon on loopback standing in for the cloud, and a developer who is
//! not root (uid 1000), with a daemon of their own or a root daemon.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{Daemon, BIN};
use crate::wt::{git_cmd, one_line_error, TempRepo};

const SECRET: &str = "wt-remote-secret";
const USER: u32 = 1000;

fn token() -> String {
    let out = Command::new(BIN).args(["token", "create", "--sub", "wt-test", "--ttl", "10m", "--secret", SECRET]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `heyvm` run in `dir` with no server or token from the environment.
fn clean(dir: &Path, data: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir).env("MVM_DATA_DIR", data);
    for k in ["HEYVM_API_URL", "HEYO_CLOUD_URL", "HEYO_ARCHIVE_TOKEN", "HEYVM_TOKEN"] {
        c.env_remove(k);
    }
    c
}

/// Regular files under `dir` (relative, sorted), `.git` left out.
fn files(dir: &Path) -> Vec<String> {
    let out =
        Command::new("find").arg(".").args(["-path", "./.git", "-prune", "-o", "-type", "f", "-print"]).current_dir(dir).output().unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    v.sort();
    v
}

#[test]
fn deploy_ships_the_worktree_to_a_second_daemon() {
    let Some(cloud) = Daemon::start_with(&[("JWT_SECRET", SECRET)]) else { return };
    let r = TempRepo::new();
    let data = r.path("data");
    std::fs::write(r.repo().join(".gitignore"), "*.log\nsecret/\n").unwrap();
    r.git(&["add", ".gitignore"]);
    r.git(&["commit", "-q", "-m", "ignore"]);

    // No credentials: refused before anything is created or uploaded.
    let out = clean(&r.repo(), &data).args(["wt", "feat/ship", "--deploy", "--server", &cloud.url]).output().unwrap();
    assert_eq!(one_line_error(&out), "heyvm: Not authenticated: run heyvm login or set HEYO_ARCHIVE_TOKEN");
    assert!(!r.path("feat-ship").exists());

    // The worktree, with untracked and ignored files in it.
    let wt = r.path("feat-ship");
    r.git(&["worktree", "add", "-q", "-b", "feat/ship", wt.to_str().unwrap()]);
    std::fs::write(wt.join("index.html"), "<h1>shipped</h1>\n").unwrap();
    std::fs::write(wt.join("debug.log"), "ignored\n").unwrap();
    std::fs::create_dir_all(wt.join("secret")).unwrap();
    std::fs::write(wt.join("secret/key"), "ignored\n").unwrap();
    std::fs::create_dir_all(wt.join("src")).unwrap();
    std::fs::write(wt.join("src/app.txt"), "app\n").unwrap();

    let tok = token();
    let out = clean(&r.repo(), &data)
        .env("HEYO_ARCHIVE_TOKEN", &tok)
        .args(["wt", "feat/ship", "--deploy", "--server", &cloud.url, "--deploy-port", "8080"])
        .args(["--deploy-start-command", "python3 -m http.server 8080", "--deploy-region", "EU", "--deploy-ttl-seconds", "600"])
        .args(["--deploy-driver", "bubblewrap", "--deploy-image", "host", "--size-class", "micro"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.trim_end().lines().last().unwrap();
    let id = last.strip_prefix("Deployed successfully! ID: ").unwrap_or_else(|| panic!("last line: {last}")).to_string();
    for hint in [format!("exec {id} -- <cmd>"), format!("sh {id}"), format!("stop {id} tears it down")] {
        assert!(stdout.contains(&hint), "hint '{hint}' missing:\n{stdout}");
    }

    // The cloud's /workspace holds the worktree minus ignored files.
    let cli = |args: &[&str]| {
        let out = clean(&r.repo(), &data).env("HEYO_ARCHIVE_TOKEN", &tok).arg("--server").arg(&cloud.url).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let remote: Vec<String> =
        cli(&["exec", &id, "--", "sh", "-c", "cd /workspace && find . -type f | sort"]).lines().map(String::from).collect();
    let mut local = files(&wt);
    local.retain(|f| f != "./debug.log" && !f.starts_with("./secret/"));
    assert_eq!(remote, local);
    assert_eq!(remote, ["./.gitignore", "./README", "./index.html", "./src/app.txt"]);
    let info: Value = serde_json::from_str(&cli(&["get", &id, "--format", "json"])).unwrap();
    assert_eq!((info["region"].as_str(), info["ttl_seconds"].as_u64()), (Some("EU"), Some(600)));
    // The start command needs the host's python3 (http.server): the host
    // rootfs, named as such; images are real since issue 9.
    assert_eq!((info["image"].as_str(), info["backend_type"].as_str()), (Some("host"), Some("bubblewrap")));
    assert_eq!(info["status"], "running");
    assert_eq!(info["urls"][0]["port"], 8080, "the port is bound");

    // JSON mode, the server from HEYO_CLOUD_URL: deploy's JSON.
    let out = clean(&r.repo(), &data)
        .env("HEYO_CLOUD_URL", &cloud.url)
        .env("HEYO_ARCHIVE_TOKEN", &tok)
        .args(["wt", "feat/ship", "--deploy", "--size-class", "micro", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["id", "name", "status", "archive_id", "urls"] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    assert!(v["name"].as_str().unwrap().starts_with("wt-feat-ship-"), "{v}");
    let files2 = cli(&["exec", v["id"].as_str().unwrap(), "--", "cat", "/workspace/index.html"]);
    assert_eq!(files2, "<h1>shipped</h1>\n");

    // A rejected token says so.
    let out = clean(&r.repo(), &data)
        .env("HEYO_ARCHIVE_TOKEN", "garbage")
        .args(["wt", "feat/ship", "--deploy", "--server", &cloud.url])
        .output()
        .unwrap();
    assert!(one_line_error(&out).contains("Not authenticated"));
}

/// A copy of heyvm that `USER` can execute (the build tree may not be
/// reachable for them), in a directory removed with the returned guard.
fn user_binary() -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new().prefix("heyvm-bin-").tempdir_in("/tmp").unwrap();
    let bin = dir.path().join("heyvm");
    std::fs::copy(BIN, &bin).unwrap();
    chmod(dir.path(), 0o755);
    chmod(&bin, 0o755);
    let s = bin.display().to_string();
    (dir, s)
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A repository owned by `USER`.
fn user_repo() -> TempRepo {
    let r = TempRepo::new();
    let ok = Command::new("chown").args(["-R", &format!("{USER}:{USER}")]).arg(r.dir.path()).status().unwrap().success();
    assert!(ok);
    r
}

/// `heyvm` as `USER` inside `dir`, against `d`.
fn as_user(bin: &str, d: &Daemon, dir: &Path, home: &Path) -> Command {
    let mut c = Command::new(bin);
    c.uid(USER).gid(USER).current_dir(dir).env("HOME", home).env("HEYVM_API_URL", &d.url).env("MVM_DATA_DIR", home.join(".heyo"));
    for (k, v) in [
        ("GIT_AUTHOR_NAME", "u"),
        ("GIT_AUTHOR_EMAIL", "u@example.com"),
        ("GIT_COMMITTER_NAME", "u"),
        ("GIT_COMMITTER_EMAIL", "u@example.com"),
    ] {
        c.env(k, v);
    }
    c
}

fn run_ok(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn owner_uid(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).uid()
}

/// Starts `feat/mine` as `USER`; the worktree and sandbox id.
fn user_session(bin: &str, d: &Daemon, r: &TempRepo) -> (PathBuf, String) {
    let home = r.dir.path();
    let out = run_ok(as_user(bin, d, &r.repo(), home).args(["wt", "feat/mine", "--detach", "--size-class", "micro", "--format", "json"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "running", "{v}");
    let wt = r.path("feat-mine");
    assert_eq!(owner_uid(&wt), USER, "the worktree belongs to the user");
    assert_eq!(git_cmd(&wt).args(["branch", "--show-current"]).output().unwrap().stdout, b"feat/mine\n");
    let id = v["id"].as_str().unwrap().to_string();
    let out = run_ok(as_user(bin, d, &r.repo(), home).args(["exec", &id, "--", "cat", "/workspace/README"]));
    assert_eq!(out.stdout, b"hello from main\n");
    let list = run_ok(as_user(bin, d, &r.repo(), home).args(["wt", "--list", "--format", "json"]));
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["branch"], "feat/mine");
    (wt, id)
}

/// Writes a file and a directory into /workspace from inside, as the user's CLI.
fn write_inside(bin: &str, d: &Daemon, r: &TempRepo, id: &str) {
    let script = "echo x > /workspace/made-inside && mkdir /workspace/dir-inside";
    run_ok(as_user(bin, d, &r.repo(), r.dir.path()).args(["exec", id, "--", "sh", "-c", script]));
}

#[test]
fn non_root_developer_with_their_own_daemon() {
    let (_bin_dir, bin) = user_binary();
    let Some(d) = Daemon::start_as(USER, &bin) else { return };
    let r = user_repo();
    let (wt, id) = user_session(&bin, &d, &r);
    write_inside(&bin, &d, &r, &id);
    assert_eq!(owner_uid(&wt.join("made-inside")), USER, "files written inside belong to the user");
    assert_eq!(owner_uid(&wt.join("dir-inside")), USER);
}

#[test]
fn non_root_developer_driving_a_root_daemon() {
    let (_bin_dir, bin) = user_binary();
    let Some(d) = Daemon::start_with(&[("HEYVM_ALLOW_USERS", "1000")]) else { return };
    let r = user_repo();
    // Worktree made by the user, sandbox running with it at /workspace,
    // readable inside. Writing: next test.
    user_session(&bin, &d, &r);
}

/// Files a root daemon's sandbox writes into a user's worktree belong to
/// that user: the worktree is an idmapped mount mapping its host owner to
/// the sandbox's root (issue 8).
#[test]
fn root_daemon_keeps_worktree_files_owned_by_the_user() {
    let (_bin_dir, bin) = user_binary();
    let Some(d) = Daemon::start_with(&[("HEYVM_ALLOW_USERS", "1000")]) else { return };
    let r = user_repo();
    let (wt, id) = user_session(&bin, &d, &r);
    write_inside(&bin, &d, &r, &id);
    assert_eq!(owner_uid(&wt.join("made-inside")), USER);
    assert_eq!(owner_uid(&wt.join("dir-inside")), USER);
}

/// `--publish-image`: built here with `heyvm images build` (no Docker),
/// uploaded into the second daemon's store with `PUT /images/:name`,
/// deployed on it with /workspace populated.
#[test]
fn publish_image_builds_here_uploads_and_deploys_on_it() {
    let Some(reg) = crate::registry::Registry::shared() else { return };
    let reg = reg.with_busybox();
    let Some(local) = Daemon::start() else { return };
    let Some(cloud) = Daemon::start_with(&[("JWT_SECRET", SECRET)]) else { return };
    let r = TempRepo::new();
    let data = r.path("data");
    std::fs::write(
        r.repo().join("Dockerfile.agent"),
        format!("FROM {}\nRUN echo from-the-image > /published.txt\n", reg.image("busybox:1")),
    )
    .unwrap();
    r.git(&["add", "Dockerfile.agent"]);
    r.git(&["commit", "-q", "-m", "dockerfile"]);
    let args = [
        "wt",
        "feat/pub",
        "--deploy",
        "--publish-image",
        "--deploy-dockerfile",
        "Dockerfile.agent",
        "--deploy-image-name",
        "my-agent-image",
        "--deploy-image-size-mb",
        "4096",
        "--deploy-driver",
        "bubblewrap",
        "--size-class",
        "micro",
    ];
    // No credentials: refused before anything is built.
    let out = clean(&r.repo(), &data).env("HEYVM_API_URL", &local.url).args(args).args(["--server", &cloud.url]).output().unwrap();
    assert_eq!(one_line_error(&out), "heyvm: Not authenticated: run heyvm login or set HEYO_ARCHIVE_TOKEN");
    assert!(local.heyvm_json(&["images", "list"]).as_array().unwrap().is_empty(), "nothing built");

    let tok = token();
    let out = clean(&r.repo(), &data)
        .env("HEYVM_API_URL", &local.url)
        .env("HEYO_ARCHIVE_TOKEN", &tok)
        .args(args)
        .args(["--server", &cloud.url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let id = stdout.trim_end().lines().last().unwrap().strip_prefix("Deployed successfully! ID: ").expect("last line").to_string();
    let cli = |args: &[&str]| {
        let out = clean(&r.repo(), &data).env("HEYO_ARCHIVE_TOKEN", &tok).arg("--server").arg(&cloud.url).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // The image's files and the worktree at /workspace, both.
    assert_eq!(cli(&["exec", &id, "--", "cat", "/published.txt"]), "from-the-image\n");
    let remote: Vec<String> =
        cli(&["exec", &id, "--", "sh", "-c", "cd /workspace && find . -type f | sort"]).lines().map(String::from).collect();
    assert_eq!(remote, ["./Dockerfile.agent", "./README"]);
    let info: Value = serde_json::from_str(&cli(&["get", &id, "--format", "json"])).unwrap();
    assert_eq!(info["image"], "my-agent-image");
    // In the cloud's store, built here (the cloud never saw the registry).
    let images: Value = serde_json::from_str(&cli(&["images", "list", "--format", "json"])).unwrap();
    let local_images = local.heyvm_json(&["images", "list"]);
    let built = local_images.as_array().unwrap().iter().find(|i| i["name"] == "my-agent-image:latest").expect("built locally");
    assert!(images.as_array().unwrap().iter().any(|i| i["name"] == "my-agent-image:latest" && i["digest"] == built["digest"]), "{images}");
}

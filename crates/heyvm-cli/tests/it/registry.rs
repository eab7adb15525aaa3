//! A real OCI registry on loopback for the image tests: Debian's
//! `docker-registry`, started once per test process on a free port, with
//! images made offline by `umoci` and pushed by `skopeo`:
//!
//! * `busybox:1` (and `library/busybox:latest`): a static busybox, no libc,
//!   `Env` GREETING/PATH and `WorkingDir /app` in its config;
//! * `library/ubuntu:24.04`: a Debian minbase (plus python3, which tests'
//!   start commands use) made by `mmdebstrap`, cached in
//!   the target dir between runs. Daemons started with
//!   [`crate::support::Daemon::start_with_images`] use this registry as the
//!   `docker.io` mirror, so `ubuntu:24.04` resolves offline.
//!
//! Nothing here reaches a public registry.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub storage: PathBuf,
    /// The registry runs under a shell that kills it when this pipe closes
    /// (when the test process exits).
    _guard: Mutex<Child>,
}

static REGISTRY: OnceLock<Option<Registry>> = OnceLock::new();
static BUSYBOX: OnceLock<()> = OnceLock::new();
static DEBIAN: OnceLock<bool> = OnceLock::new();

fn tool(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Whether the image tools are installed; panics in CI when missing.
pub fn image_tools() -> bool {
    let missing: Vec<&str> = ["docker-registry", "umoci", "skopeo", "busybox"].into_iter().filter(|t| !tool(t)).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false") {
        panic!("image tests need {missing:?} (scripts/setup.sh installs them)");
    }
    eprintln!("SKIP: image tests need {missing:?}");
    false
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Registry {
    /// The shared registry, started on first use; None when tools are missing.
    pub fn shared() -> Option<&'static Registry> {
        REGISTRY.get_or_init(|| image_tools().then(Registry::start)).as_ref()
    }

    /// A fresh registry of its own (e.g. one that can be stopped).
    pub fn start() -> Registry {
        let dir = tempfile::Builder::new().prefix("heyvm-registry-").tempdir_in("/tmp").unwrap().keep();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let script = format!("docker-registry serve {} >{} 2>&1 & pid=$!; read _; kill $pid", config.display(), dir.join("log").display());
        let child = Command::new("sh").args(["-c", &script]).stdin(Stdio::piped()).spawn().expect("start docker-registry");
        let reg = Registry { addr, storage: dir, _guard: Mutex::new(child) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while ureq::get(&format!("http://{}/v2/", reg.addr)).call().is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start: {:?}", std::fs::read_to_string(reg.storage.join("log")));
            std::thread::sleep(Duration::from_millis(20));
        }
        reg
    }

    /// Stops a registry started with [`Registry::start`].
    pub fn stop(&self) {
        let mut c = self._guard.lock().unwrap();
        if let Some(mut stdin) = c.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = c.wait();
    }

    /// `ADDR/repo:tag`.
    pub fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// Pushes an OCI layout's tag to this registry as `repo_tag`.
    pub fn push_layout(&self, layout: &Path, tag: &str, repo_tag: &str) {
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:{tag}", layout.display()),
            &format!("docker://{}", self.image(repo_tag)),
        ]));
    }

    /// `busybox:1` and `library/busybox:latest`, pushed once.
    pub fn with_busybox(&self) -> &Self {
        BUSYBOX.get_or_init(|| {
            let layout = busybox_layout();
            self.push_layout(&layout, "1", "busybox:1");
            self.push_layout(&layout, "1", "library/busybox:latest");
        });
        self
    }

    /// `library/ubuntu:24.04` (Debian minbase); false when it cannot be made
    /// here (no Debian mirror and no cached rootfs).
    pub fn with_debian(&self) -> bool {
        *DEBIAN.get_or_init(|| match debian_rootfs_tar() {
            Some(tar) => {
                let layout = tempfile::tempdir_in("/tmp").unwrap().keep().join("oci");
                run(Command::new("umoci").args(["init", "--layout"]).arg(&layout));
                let img = format!("{}:24.04", layout.display());
                run(Command::new("umoci").args(["new", "--image", &img]));
                run(Command::new("umoci").args(["raw", "add-layer", "--image", &img]).arg(&tar));
                run(Command::new("umoci").args([
                    "config",
                    "--image",
                    &img,
                    "--config.env",
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                ]));
                self.push_layout(&layout, "24.04", "library/ubuntu:24.04");
                true
            }
            None => false,
        })
    }
}

/// An OCI layout (tag `1`) holding a static busybox with its applets.
pub fn busybox_layout() -> PathBuf {
    let dir = tempfile::tempdir_in("/tmp").unwrap().keep();
    let root = dir.join("rootfs");
    for d in ["bin", "app", "etc", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let bb =
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join("busybox")).find(|p| p.is_file())).expect("busybox");
    std::fs::copy(&bb, root.join("bin/busybox")).unwrap();
    let list = Command::new(&bb).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| !a.is_empty() && *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("app/hello.txt"), "hello from the image\n").unwrap();
    let layout = dir.join("oci");
    let img = format!("{}:1", layout.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &img]));
    run(Command::new("umoci").args(["insert", "--image", &img]).arg(&root).arg("/"));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &img,
        "--config.env",
        "PATH=/bin",
        "--config.env",
        "GREETING=hello-from-config",
        "--config.workingdir",
        "/app",
    ]));
    layout
}

/// A Debian bookworm minbase rootfs as a tar, made by mmdebstrap once and
/// cached in the target dir.
fn debian_rootfs_tar() -> Option<PathBuf> {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("heyvm-test-images");
    let tar = cache.join("debian-bookworm-minbase-python3.tar");
    if tar.is_file() {
        return Some(tar);
    }
    if !tool("mmdebstrap") {
        eprintln!("SKIP: mmdebstrap is not installed (needed once for the Debian test image)");
        return None;
    }
    std::fs::create_dir_all(&cache).ok()?;
    let partial = cache.join("debian-partial.tar");
    let ok = Command::new("mmdebstrap")
        .args(["--quiet", "--variant=minbase", "--mode=root", "--include=python3-minimal", "bookworm"])
        .arg(&partial)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = std::fs::remove_file(&partial);
        eprintln!("SKIP: mmdebstrap could not build the Debian test image");
        return None;
    }
    std::fs::rename(&partial, &tar).ok()?;
    Some(tar)
}

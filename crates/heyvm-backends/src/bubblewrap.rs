//! The bubblewrap backend: each sandbox is a bwrap process tree with its own
//! user, pid, mount, ipc, uts and network namespaces. Its `/` is a
//! persistent per-sandbox directory; the host's system directories appear
//! through copy-on-write overlays (as root) or read-only binds (without
//! root); `/workspace` is a persistent directory of its own. Networking
//! (`nat` / `none`, egress policy) is in [`crate::net`].

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use heyvm_core::{Backend, CoreError, LaunchSpec, Result, Usage};
use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroups;
use crate::net::{self, OwnerNet};
use crate::owner::{Overlay, OwnerPlan};
use crate::procs;

/// The host's top-level system directories the sandbox sees.
const SYSTEM_DIRS: &[&str] = &["usr", "etc", "var", "opt"];
/// Host files hidden from sandboxes even though /etc is visible.
const MASKED_FILES: &[&str] = &["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-"];
/// Capabilities kept (inside the sandbox's user namespace) when running as
/// root: enough for package managers, not enough to remount or escape.
const KEPT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_AUDIT_WRITE",
    // Not CAP_SETFCAP: root inside is host root today, so a file
    // capability written on a host mount would count on the host.
    "CAP_MKNOD",
];
/// Where the heyvm binary (which doubles as the agent) appears inside.
const AGENT_BIN: &str = "/run/heyvm-bin/heyvm";

pub struct BubblewrapBackend {
    bwrap: PathBuf,
    heyvm_exe: PathBuf,
    cgroups: Option<Cgroups>,
    overlays: bool,
}

/// `owner.json`: the owner process (bwrap after its exec) and, once the
/// network is up, the sandbox's address.
#[derive(Serialize, Deserialize)]
struct OwnerFile {
    pid: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    guest_ip: Option<String>,
}

impl BubblewrapBackend {
    /// Checks that bwrap is installed and works here.
    pub fn probe() -> std::result::Result<Self, String> {
        let bwrap = procs::find_in_path("bwrap").ok_or("bubblewrap is not installed (apt-get install bubblewrap)")?;
        let heyvm_exe = std::env::current_exe().map_err(|e| format!("cannot locate the heyvm binary: {e}"))?;
        let root = procs::is_root();
        let cgroups = if root {
            match Cgroups::detect() {
                Ok(c) => Some(c),
                Err(why) => {
                    tracing::warn!("resource limits disabled: {why}");
                    None
                }
            }
        } else {
            tracing::warn!("resource limits disabled: not running as root");
            None
        };
        if root {
            crate::mask::start_rescan();
        }
        Ok(BubblewrapBackend { bwrap, heyvm_exe, cgroups, overlays: root })
    }

    fn owner_pid(&self, spec: &LaunchSpec) -> Option<i32> {
        let f: OwnerFile = serde_json::from_slice(&fs::read(spec.paths.owner_json()).ok()?).ok()?;
        Some(f.pid)
    }

    /// The bwrap command line's marker: the sandbox directory.
    fn marker(spec: &LaunchSpec) -> String {
        spec.paths.dir.display().to_string()
    }

    fn plan(&self, spec: &LaunchSpec, net: OwnerNet) -> OwnerPlan {
        let p = &spec.paths;
        let s = |p: &Path| p.display().to_string();
        let mut a: Vec<String> = vec![s(&self.bwrap)];
        let mut push = |items: &[&str]| a.extend(items.iter().map(|x| x.to_string()));
        push(&["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]);
        if net.netns.is_none() {
            push(&["--unshare-net"]);
        }
        push(&["--uid", "0", "--gid", "0", "--hostname", &spec.hostname, "--new-session"]);
        push(&["--bind", &s(&p.root()), "/"]);
        let mut overlays = Vec::new();
        let mask = if self.overlays { crate::mask::current() } else { None };
        for d in SYSTEM_DIRS {
            let host = Path::new("/").join(d);
            if !host.is_dir() || host.is_symlink() {
                continue;
            }
            if self.overlays {
                let merged = p.merged().join(d);
                // The masking layer's whiteouts sit above the host directory.
                let lower = match &mask {
                    Some(m) => PathBuf::from(format!("{}:{}", m.join(d).display(), host.display())),
                    None => host.clone(),
                };
                overlays.push(Overlay { lower, upper: p.upper().join(d), work: p.overlay_work().join(d), merged: merged.clone() });
                push(&["--bind", &s(&merged), &s(&host)]);
            } else {
                push(&["--ro-bind", &s(&host), &s(&host)]);
            }
        }
        push(&["--proc", "/proc", "--dev", "/dev"]);
        let hardening = crate::hardening::proc_args();
        push(&hardening.iter().map(String::as_str).collect::<Vec<_>>());
        push(&["--bind", &s(&p.workspace()), heyvm_types::WORKSPACE_PATH]);
        push(&["--bind", &s(&p.run_dir()), "/run/heyvm"]);
        push(&["--ro-bind", &s(&self.heyvm_exe), AGENT_BIN]);
        for m in &spec.mounts {
            push(&[if m.read_only { "--ro-bind" } else { "--bind" }, &m.host_path, &m.sandbox_path]);
        }
        for f in MASKED_FILES {
            if Path::new(f).exists() {
                push(&["--ro-bind", "/dev/null", f]);
            }
        }
        push(&["--cap-drop", "ALL"]);
        if procs::is_root() {
            for c in KEPT_CAPS {
                push(&["--cap-add", c]);
            }
        }
        push(&["--chdir", "/"]);
        push(&[AGENT_BIN, "__agent", "--socket", "/run/heyvm/agent.sock", "--log", "/run/heyvm/logs.jsonl"]);
        OwnerPlan {
            cgroup_procs: self.cgroups.as_ref().map(|c| c.procs_files(&spec.id)).unwrap_or_default(),
            overlays,
            protect_from_oom: procs::is_root(),
            bwrap: a,
            net,
            log_file: Some(p.log_file()),
            seccomp: true,
        }
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CoreError {
    CoreError::Backend(format!("{what} {}: {e}", path.display()))
}

#[async_trait]
impl Backend for BubblewrapBackend {
    fn name(&self) -> &'static str {
        "bubblewrap"
    }

    fn prepare(&self, spec: &LaunchSpec) -> Result<()> {
        let p = &spec.paths;
        let root = p.root();
        let mkdir = |d: &Path| fs::create_dir_all(d).map_err(|e| io_err("creating", d, e));
        for d in [p.workspace(), p.run_dir(), root.clone()] {
            mkdir(&d)?;
        }
        for d in SYSTEM_DIRS {
            for base in [p.upper(), p.overlay_work(), p.merged()] {
                mkdir(&base.join(d))?;
            }
        }
        for (d, mode) in [("tmp", 0o1777), ("root", 0o700), ("home", 0o755), ("mnt", 0o755), ("srv", 0o755), ("run", 0o755)] {
            let path = root.join(d);
            mkdir(&path)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(|e| io_err("chmod", &path, e))?;
        }
        // Mirror the host's top-level symlinks (merged-/usr layouts: /bin -> usr/bin).
        if let Ok(entries) = fs::read_dir("/") {
            for e in entries.flatten() {
                if let Ok(target) = fs::read_link(e.path()) {
                    let link = root.join(e.file_name());
                    if link.symlink_metadata().is_err() {
                        std::os::unix::fs::symlink(&target, &link).map_err(|er| io_err("symlinking", &link, er))?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<()> {
        let p = &spec.paths;
        if let Some(cg) = &self.cgroups {
            cg.create(&spec.id, &spec.limits).map_err(|e| CoreError::Backend(format!("setting up cgroups: {e}")))?;
        }
        let choice = net::choose(spec, procs::is_root());
        let net = if choice == net::Choice::Nat {
            let s = spec.clone();
            tokio::task::spawn_blocking(move || net::setup(&s))
                .await
                .map_err(|e| CoreError::Backend(e.to_string()))?
                .map_err(|e| CoreError::Backend(format!("setting up the sandbox network: {e}")))?
        } else {
            OwnerNet::default()
        };
        let plan = self.plan(spec, net);
        let plan_json = serde_json::to_vec_pretty(&plan).map_err(|e| CoreError::Backend(e.to_string()))?;
        fs::write(p.launch_json(), plan_json)?;
        let _ = fs::remove_file(p.agent_socket());
        let log = fs::File::create(p.owner_log())?;
        let mut cmd = std::process::Command::new(&self.heyvm_exe);
        cmd.arg("__sandbox_owner").arg(p.launch_json());
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        // SAFETY: setsid is async-signal-safe. A new session keeps terminal
        // signals aimed at the daemon away from the sandbox.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| CoreError::Backend(format!("spawning the sandbox owner: {e}")))?;
        let pid = child.id() as i32;
        fs::write(p.owner_json(), serde_json::to_vec(&OwnerFile { pid, guest_ip: None }).unwrap_or_default())?;
        // Reap it when it exits; if the daemon dies first, init does.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        if choice == net::Choice::Slirp {
            let s = spec.clone();
            tokio::task::spawn_blocking(move || net::slirp::attach(&s, pid))
                .await
                .map_err(|e| CoreError::Backend(e.to_string()))?
                .map_err(|e| CoreError::Backend(format!("setting up the sandbox network: {e}")))?;
        }
        if let Some(ip) = net::guest_ip(spec) {
            fs::write(p.owner_json(), serde_json::to_vec(&OwnerFile { pid, guest_ip: Some(ip) }).unwrap_or_default())?;
        }
        Ok(())
    }

    fn is_alive(&self, spec: &LaunchSpec) -> bool {
        self.owner_pid(spec).is_some_and(|pid| procs::alive_with(pid, &Self::marker(spec)))
    }

    fn failure_reason(&self, spec: &LaunchSpec) -> Option<String> {
        let log = fs::read_to_string(spec.paths.owner_log()).ok()?;
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        (!lines.is_empty()).then(|| lines[lines.len().saturating_sub(3)..].join("; "))
    }

    async fn kill(&self, spec: &LaunchSpec) -> Result<()> {
        let marker = Self::marker(spec);
        if let Some(pid) = self.owner_pid(spec).filter(|&p| procs::alive_with(p, &marker)) {
            // Killing the namespace's init (bwrap's child) takes down every
            // process in the sandbox's pid namespace at once.
            for c in procs::children(pid) {
                procs::sigkill(c);
            }
            procs::sigkill(pid);
        }
        let cgroups = self.cgroups.clone();
        let id = spec.id.clone();
        let owner = self.owner_pid(spec);
        let spec2 = spec.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(cg) = &cgroups {
                cg.kill_all(&id);
            }
            // Wait for the owner to be reaped so is_alive() turns false.
            for _ in 0..500 {
                if !owner.is_some_and(|p| procs::alive_with(p, &marker)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            if let Some(cg) = &cgroups {
                cg.remove(&id);
            }
            net::teardown(&spec2);
        })
        .await
        .map_err(|e| CoreError::Backend(e.to_string()))?;
        let _ = fs::remove_file(spec.paths.owner_json());
        let _ = fs::remove_file(spec.paths.agent_socket());
        Ok(())
    }

    fn set_limits(&self, spec: &LaunchSpec) -> Result<()> {
        match &self.cgroups {
            Some(cg) => cg.set_limits(&spec.id, &spec.limits).map_err(|e| CoreError::Backend(format!("updating limits: {e}"))),
            None => Ok(()),
        }
    }

    fn usage(&self, spec: &LaunchSpec) -> Usage {
        self.cgroups.as_ref().map(|c| c.usage(&spec.id)).unwrap_or_default()
    }

    fn limits_enforced(&self) -> bool {
        self.cgroups.is_some()
    }

    fn guest_ip(&self, spec: &LaunchSpec) -> Option<String> {
        net::guest_ip(spec)
    }

    /// Renaming needs root: the daemon joins the sandbox's UTS namespace.
    fn supports_rename(&self) -> bool {
        procs::is_root()
    }

    fn set_hostname(&self, spec: &LaunchSpec) -> Result<()> {
        let owner = self.owner_pid(spec).ok_or_else(|| CoreError::Backend("sandbox is not running".into()))?;
        // bwrap's child is the namespace's init; its UTS namespace is the
        // sandbox's.
        let init = procs::children(owner).first().copied().ok_or_else(|| CoreError::Backend("sandbox init not found".into()))?;
        let ns = fs::File::open(format!("/proc/{init}/ns/uts"))?;
        let name = spec.hostname.clone();
        // setns(CLONE_NEWUTS) only moves the calling thread: a short-lived
        // thread keeps the daemon's own threads in the host namespace.
        std::thread::spawn(move || -> std::io::Result<()> {
            use std::os::fd::AsRawFd;
            // SAFETY: setns/sethostname with a valid fd and buffer.
            unsafe {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUTS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::sethostname(name.as_ptr().cast(), name.len()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
        .join()
        .map_err(|_| CoreError::Backend("hostname thread panicked".into()))?
        .map_err(|e| CoreError::Backend(format!("setting the hostname: {e}")))
    }

    fn network_warning(&self, spec: &LaunchSpec) -> Option<String> {
        net::choose_why(spec, procs::is_root()).1.map(String::from)
    }

    fn pids(&self, spec: &LaunchSpec) -> Vec<u32> {
        let pids = self.cgroups.as_ref().map(|c| c.pids(&spec.id)).unwrap_or_default();
        pids.into_iter().filter_map(|p| u32::try_from(p).ok()).collect()
    }
}

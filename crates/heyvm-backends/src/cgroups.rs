//! Resource limits through cgroups, v1 (separate hierarchies per
//! controller, as on this project's CI machines) or v2 (unified). Each
//! sandbox gets `heyvm/<id>` in every hierarchy it uses.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use heyvm_core::Usage;
use heyvm_types::Limits;

const PERIOD_US: u64 = 100_000;

/// Why resource limits cannot be enforced on this host.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v1 or v2 hierarchy with memory, cpu and pids controllers")]
    NoHierarchy,
    #[error("cannot create cgroups under {}: {source}", base.display())]
    NotWritable { base: PathBuf, source: io::Error },
}

#[derive(Debug, Clone)]
pub enum Cgroups {
    V1 { memory: PathBuf, cpu: PathBuf, cpuacct: PathBuf, pids: PathBuf },
    V2 { root: PathBuf },
}

struct MountInfo {
    mount_point: PathBuf,
    fstype: String,
    super_opts: String,
}

fn mounts() -> Vec<MountInfo> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else { return vec![] };
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?.to_string();
            let _source = post.next();
            let super_opts = post.next().unwrap_or("").to_string();
            Some(MountInfo { mount_point: PathBuf::from(mount_point), fstype, super_opts })
        })
        .collect()
}

impl Cgroups {
    /// Finds usable hierarchies: v1 when its memory, cpu, cpuacct and pids
    /// controllers are mounted, else v2 with those controllers available.
    /// `Err` says why limits cannot be enforced.
    pub fn detect() -> Result<Self, CgroupError> {
        let ms = mounts();
        let v1 = |ctrl: &str| {
            ms.iter().find(|m| m.fstype == "cgroup" && m.super_opts.split(',').any(|o| o == ctrl)).map(|m| m.mount_point.clone())
        };
        if let (Some(memory), Some(cpu), Some(cpuacct), Some(pids)) = (v1("memory"), v1("cpu"), v1("cpuacct"), v1("pids")) {
            let cg = Cgroups::V1 { memory, cpu, cpuacct, pids };
            return cg.check_writable().map(|_| cg);
        }
        for m in ms.iter().filter(|m| m.fstype == "cgroup2") {
            let ctrls = fs::read_to_string(m.mount_point.join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| ctrls.split_whitespace().any(|x| x == c);
            if has("memory") && has("cpu") && has("pids") {
                let cg = Cgroups::V2 { root: m.mount_point.clone() };
                return cg.check_writable().map(|_| cg);
            }
        }
        Err(CgroupError::NoHierarchy)
    }

    fn check_writable(&self) -> Result<(), CgroupError> {
        for base in self.bases() {
            let probe = base.join("heyvm");
            fs::create_dir_all(&probe).map_err(|source| CgroupError::NotWritable { base: base.clone(), source })?;
        }
        if let Cgroups::V2 { root } = self {
            // Controllers must be enabled on every level down to the leaves.
            for dir in [root.clone(), root.join("heyvm")] {
                let _ = fs::write(dir.join("cgroup.subtree_control"), "+memory +cpu +pids");
            }
        }
        Ok(())
    }

    fn bases(&self) -> Vec<PathBuf> {
        match self {
            Cgroups::V1 { memory, cpu, cpuacct, pids } => {
                let mut v = vec![memory.clone(), cpu.clone(), cpuacct.clone(), pids.clone()];
                v.dedup();
                v
            }
            Cgroups::V2 { root } => vec![root.clone()],
        }
    }

    pub fn dirs(&self, id: &str) -> Vec<PathBuf> {
        self.bases().into_iter().map(|b| b.join("heyvm").join(id)).collect()
    }

    fn dir_of(&self, which: &str, id: &str) -> PathBuf {
        let base = match (self, which) {
            (Cgroups::V1 { memory, .. }, "memory") => memory,
            (Cgroups::V1 { cpu, .. }, "cpu") => cpu,
            (Cgroups::V1 { cpuacct, .. }, "cpuacct") => cpuacct,
            (Cgroups::V1 { pids, .. }, _) => pids,
            (Cgroups::V2 { root }, _) => root,
        };
        base.join("heyvm").join(id)
    }

    pub fn create(&self, id: &str, limits: &Limits) -> io::Result<()> {
        for d in self.dirs(id) {
            fs::create_dir_all(&d)?;
        }
        self.set_limits(id, limits)
    }

    pub fn set_limits(&self, id: &str, l: &Limits) -> io::Result<()> {
        let quota = l.millicpu as u64 * PERIOD_US / 1000;
        match self {
            Cgroups::V1 { .. } => {
                let mem = self.dir_of("memory", id);
                // memsw must stay >= the memory limit: widen it first, then
                // set both (a failure on the first write is expected when
                // shrinking).
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                let has_memsw = memsw.exists();
                if has_memsw {
                    let _ = write(&memsw, l.memory_bytes);
                }
                write(&mem.join("memory.limit_in_bytes"), l.memory_bytes)?;
                if has_memsw {
                    write(&memsw, l.memory_bytes)?;
                }
                let cpu = self.dir_of("cpu", id);
                write(&cpu.join("cpu.cfs_period_us"), PERIOD_US)?;
                write(&cpu.join("cpu.cfs_quota_us"), quota)?;
                write(&self.dir_of("pids", id).join("pids.max"), l.pids)?;
            }
            Cgroups::V2 { .. } => {
                let d = self.dir_of("", id);
                write(&d.join("memory.max"), l.memory_bytes)?;
                let _ = fs::write(d.join("memory.swap.max"), "0");
                fs::write(d.join("cpu.max"), format!("{quota} {PERIOD_US}"))?;
                write(&d.join("pids.max"), l.pids)?;
            }
        }
        Ok(())
    }

    /// Renames cgroup `from` to `to` in every hierarchy, processes and
    /// limits included (cgroup v1 only; v2 cannot rename).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        if let Cgroups::V2 { .. } = self {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "cgroup v2 cannot rename a cgroup"));
        }
        for (a, b) in self.dirs(from).into_iter().zip(self.dirs(to)) {
            // A leftover empty cgroup of the same name goes first.
            let _ = fs::remove_dir(&b);
            fs::rename(&a, &b).map_err(|e| io::Error::new(e.kind(), format!("renaming {} to {}: {e}", a.display(), b.display())))?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process writes its pid to, to join.
    pub fn procs_files(&self, id: &str) -> Vec<PathBuf> {
        self.dirs(id).into_iter().map(|d| d.join("cgroup.procs")).collect()
    }

    pub fn pids(&self, id: &str) -> Vec<i32> {
        let f = self.dir_of("pids", id).join("cgroup.procs");
        fs::read_to_string(f).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    pub fn usage(&self, id: &str) -> Usage {
        match self {
            Cgroups::V1 { .. } => Usage {
                cpu_ns: read_u64(&self.dir_of("cpuacct", id).join("cpuacct.usage")),
                memory_bytes: read_u64(&self.dir_of("memory", id).join("memory.usage_in_bytes")),
                pids: read_u64(&self.dir_of("pids", id).join("pids.current")),
                oom_kills: read_keyed(&self.dir_of("memory", id).join("memory.oom_control"), "oom_kill"),
            },
            Cgroups::V2 { .. } => {
                let d = self.dir_of("", id);
                Usage {
                    cpu_ns: read_keyed(&d.join("cpu.stat"), "usage_usec") * 1000,
                    memory_bytes: read_u64(&d.join("memory.current")),
                    pids: read_u64(&d.join("pids.current")),
                    oom_kills: read_keyed(&d.join("memory.events"), "oom_kill"),
                }
            }
        }
    }

    /// The OOM kills so far (one file read; [`Cgroups::usage`] reads four).
    pub fn oom_kills(&self, id: &str) -> u64 {
        match self {
            Cgroups::V1 { .. } => read_keyed(&self.dir_of("memory", id).join("memory.oom_control"), "oom_kill"),
            Cgroups::V2 { .. } => read_keyed(&self.dir_of("", id).join("memory.events"), "oom_kill"),
        }
    }

    /// SIGKILLs every process in the sandbox's cgroup until it is empty.
    pub fn kill_all(&self, id: &str) {
        if let Cgroups::V2 { .. } = self {
            let _ = fs::write(self.dir_of("", id).join("cgroup.kill"), "1");
        }
        for _ in 0..500 {
            let pids = self.pids(id);
            if pids.is_empty() {
                return;
            }
            for p in pids {
                crate::procs::sigkill(p);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Removes the sandbox's cgroups (they must be empty).
    pub fn remove(&self, id: &str) {
        for d in self.dirs(id) {
            for _ in 0..100 {
                if !d.exists() || fs::remove_dir(&d).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

fn write(p: &Path, v: impl ToString) -> io::Result<()> {
    fs::write(p, v.to_string()).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

fn read_u64(p: &Path) -> u64 {
    fs::read_to_string(p).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

fn read_keyed(p: &Path, key: &str) -> u64 {
    fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

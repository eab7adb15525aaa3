//! The sandbox's view of /proc, narrowed like Docker's: kernel knobs
//! read-only, kernel memory and host-wide debugging files masked. bwrap
//! mounts a fresh /proc for the sandbox's pid namespace, but /proc/sys,
//! /proc/sysrq-trigger and friends still act on the whole host (a write
//! to /proc/sys/kernel/core_pattern would make the host run a program of
//! the sandbox's choosing as root).

use std::path::Path;

/// Read-only: writes there change the host kernel.
const READ_ONLY: &[&str] = &["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"];
/// Files replaced by /dev/null: kernel memory, keys, timers, addresses.
const MASKED_FILES: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/kallsyms",
    "/proc/kmsg",
    "/proc/config.gz",
];
/// Directories replaced by an empty read-only tmpfs.
const MASKED_DIRS: &[&str] = &["/proc/acpi", "/proc/scsi", "/proc/asound", "/proc/driver"];

/// bwrap arguments that go after `--proc /proc`. Sources are the host's
/// (bwrap resolves them before switching root); only entries that exist
/// here are named, so bwrap never fails on a missing one.
pub fn proc_args() -> Vec<String> {
    let mut a = Vec::new();
    for p in READ_ONLY.iter().filter(|p| Path::new(p).exists()) {
        a.extend(["--ro-bind".to_string(), p.to_string(), p.to_string()]);
    }
    for p in MASKED_FILES.iter().filter(|p| Path::new(p).exists()) {
        a.extend(["--ro-bind".to_string(), "/dev/null".to_string(), p.to_string()]);
    }
    for p in MASKED_DIRS.iter().filter(|p| Path::new(p).is_dir()) {
        a.extend(["--tmpfs".to_string(), p.to_string(), "--remount-ro".to_string(), p.to_string()]);
    }
    a
}

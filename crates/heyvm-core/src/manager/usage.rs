//! Host-wide and per-sandbox resource usage (`GET /system/usage`): host CPU
//! and memory from `/proc`, each running sandbox's CPU, memory and pids from
//! its cgroups via the backend. Also when a sandbox last changed state,
//! which the store does not record.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heyvm_types::{SandboxInfo, SandboxStatus};

use super::SandboxManager;
use crate::error::Result;
use crate::record::SandboxRecord;

/// Host CPU and memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStats {
    /// Busy share of all CPUs since the previous sample, 0–100.
    pub cpu_percent: f64,
    pub cpu_count: u32,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub memory_available_bytes: u64,
}

/// One running sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxStats {
    pub info: SandboxInfo,
    /// Host pids of its processes.
    pub pids: Vec<u32>,
    pub memory_limit_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UsageReport {
    pub sampled_at_ms: u64,
    pub host: HostStats,
    pub sandboxes: Vec<SandboxStats>,
}

/// Busy and total jiffies at the previous host sample.
static LAST_CPU: Mutex<Option<(Instant, u64, u64)>> = Mutex::new(None);
/// A CPU rate over less than this is noise; sample again.
const MIN_INTERVAL: Duration = Duration::from_millis(200);

impl SandboxManager {
    /// Samples the host and every running sandbox. The first call waits
    /// [`MIN_INTERVAL`] to measure a CPU rate; later calls measure since the
    /// previous one.
    pub async fn system_usage(&self) -> Result<UsageReport> {
        let cpu_percent = host_cpu_percent().await?;
        let (total, available) = meminfo()?;
        let host = HostStats {
            cpu_percent,
            cpu_count: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
            memory_total_bytes: total,
            memory_used_bytes: total.saturating_sub(available),
            memory_available_bytes: available,
        };
        let sandboxes = self
            .store
            .list()?
            .into_iter()
            .filter(|r| r.status == SandboxStatus::Running)
            .map(|r| SandboxStats {
                pids: self.running(&r.id).map(|i| i.instance.pids()).unwrap_or_default(),
                memory_limit_bytes: r.limits().memory_bytes,
                info: self.info(&r),
            })
            .collect();
        let sampled_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        Ok(UsageReport { sampled_at_ms, host, sandboxes })
    }

    /// Unix time of the sandbox's last state change: the start of the
    /// current running period, else the last lifecycle event in its log
    /// (nothing else writes there while it is not running), else creation.
    pub fn status_changed_at(&self, rec: &SandboxRecord) -> i64 {
        if rec.status == SandboxStatus::Running {
            if let Some(t) = rec.running_since {
                return t;
            }
        }
        std::fs::metadata(self.data.sandbox(&rec.id).log_file())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .filter(|&t| t >= rec.created_at)
            .unwrap_or(rec.created_at)
    }
}

/// `(busy, total)` jiffies summed over all CPUs.
fn cpu_times() -> std::io::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().find(|l| l.starts_with("cpu ")).ok_or_else(|| std::io::Error::other("no cpu line in /proc/stat"))?;
    // user nice system idle iowait irq softirq steal; guest is already in user.
    let v: Vec<u64> = line.split_whitespace().skip(1).take(8).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 5 {
        return Err(std::io::Error::other("short cpu line in /proc/stat"));
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Ok((total - idle, total))
}

async fn host_cpu_percent() -> Result<f64> {
    let prev = *LAST_CPU.lock().unwrap_or_else(|e| e.into_inner());
    let (busy0, total0) = match prev {
        Some((t, b, tot)) if t.elapsed() >= MIN_INTERVAL => (b, tot),
        _ => {
            let first = cpu_times()?;
            tokio::time::sleep(MIN_INTERVAL).await;
            first
        }
    };
    let (busy, total) = cpu_times()?;
    *LAST_CPU.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), busy, total));
    let dt = total.saturating_sub(total0);
    let pct = if dt == 0 { 0.0 } else { busy.saturating_sub(busy0) as f64 / dt as f64 * 100.0 };
    Ok((pct * 10.0).round() / 10.0)
}

/// `(MemTotal, MemAvailable)` in bytes.
fn meminfo() -> std::io::Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    let total = field("MemTotal").ok_or_else(|| std::io::Error::other("no MemTotal in /proc/meminfo"))?;
    Ok((total, field("MemAvailable").unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_readers_report_plausible_numbers() {
        let (busy, total) = cpu_times().unwrap();
        assert!(total > 0 && busy <= total);
        let (mem_total, avail) = meminfo().unwrap();
        assert!(mem_total > 0 && avail <= mem_total);
    }

    #[tokio::test]
    async fn host_cpu_percent_is_a_percentage() {
        let p = host_cpu_percent().await.unwrap();
        assert!((0.0..=100.0).contains(&p), "{p}");
    }
}

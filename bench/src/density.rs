//! Section 7: density. Host memory per idle sandbox (proportional set size
//! summed over all of its processes, and what its memory cgroup is
//! charged, kernel memory included on cgroup v1), and the daemon's own
//! resident set size with 500 idle sandboxes.
//!
//! Section 8: `GET /sandboxes` latency with 1,000 sandboxes in the
//! database (stopped ones, recorded straight into a fresh daemon's store
//! before it starts), against `GET /health` on the same daemon.

use std::path::Path;
use std::time::{Duration, Instant};

use heyvm_client::Client;
use heyvm_types::CreateSandboxRequest;

use crate::daemon::BenchDaemon;
use crate::stats::{Samples, Table};

const IDLE_SAMPLE: usize = 20;
/// `HEYVM_BENCH_IDLE` overrides (the full figure takes a minute or two).
const IDLE_MANY: usize = 500;
const LISTED: usize = 1000;

/// The sandbox's processes: its cgroup's (v1 pids hierarchy or v2).
fn sandbox_pids(id: &str) -> Vec<u32> {
    ["/sys/fs/cgroup/pids/heyvm", "/sys/fs/cgroup/heyvm", "/sys/fs/cgroup/unified/heyvm"]
        .iter()
        .map(|b| Path::new(b).join(id).join("cgroup.procs"))
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn pss_bytes(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn cgroup_memory(id: &str) -> u64 {
    ["/sys/fs/cgroup/memory/heyvm/{}/memory.usage_in_bytes", "/sys/fs/cgroup/heyvm/{}/memory.current"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p.replace("{}", id)).ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Creates `n` sandboxes, `par` at a time; returns their ids and failures.
fn create_many(client: &Client, n: usize, par: usize, tag: &str) -> (Vec<String>, Vec<String>) {
    let ids = std::sync::Mutex::new(Vec::new());
    let failures = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..par {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    return;
                }
                match client.create(&CreateSandboxRequest { name: Some(format!("{tag}-{i}")), ..Default::default() }) {
                    Ok(sb) => ids.lock().unwrap().push(sb.id),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
            });
        }
    });
    (ids.into_inner().unwrap(), failures.into_inner().unwrap())
}

fn delete_many(client: &Client, ids: &[String], par: usize) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..par {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(id) = ids.get(i) else { return };
                let _ = client.delete_sandbox(id);
            });
        }
    });
}

/// Section 7 on `daemon` (pool off, so only the created sandboxes run).
pub fn density(client: &Client, daemon: &BenchDaemon, table: &mut Table) {
    table.section("7. density: idle sandboxes (default create: nat network, 10 GiB disk, small class)");
    let rss0 = daemon.rss_bytes();
    let (ids, failures) = create_many(client, IDLE_SAMPLE, 4, "idle");
    // Let start-up work settle (agents idle, log feeds quiet).
    std::thread::sleep(Duration::from_secs(2));
    let (mut pss, mut cg, mut procs) = (0u64, 0u64, 0usize);
    for id in &ids {
        let pids = sandbox_pids(id);
        procs += pids.len();
        pss += pids.iter().map(|p| pss_bytes(*p)).sum::<u64>();
        cg += cgroup_memory(id);
    }
    let n = ids.len().max(1) as u64;
    table.line(&format!("  PSS per idle sandbox, all its processes ({:.1} each)   {:>11}", procs as f64 / n as f64, mib(pss / n)));
    table.line(&format!("  memory cgroup charge per idle sandbox (incl. kernel)    {:>11}", mib(cg / n)));
    let many: usize = std::env::var("HEYVM_BENCH_IDLE").ok().and_then(|v| v.parse().ok()).unwrap_or(IDLE_MANY);
    let t0 = Instant::now();
    let (more, more_failures) = create_many(client, many.saturating_sub(ids.len()), 8, "idle-more");
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let rss = daemon.rss_bytes();
    table.line(&format!(
        "  daemon RSS: {} with no sandbox, {} with {} idle ({} per sandbox); created in {:.1} s, 8 at a time",
        mib(rss0),
        mib(rss),
        ids.len() + more.len(),
        mib(rss.saturating_sub(rss0) / (ids.len() + more.len()).max(1) as u64),
        took.as_secs_f64()
    ));
    let all_failures: Vec<&String> = failures.iter().chain(more_failures.iter()).collect();
    table.line(&format!("  failures: {} of {}", all_failures.len(), many.max(IDLE_SAMPLE)));
    for f in all_failures.iter().take(3) {
        table.line(&format!("    e.g. {f}"));
    }
    delete_many(client, &ids, 4);
    delete_many(client, &more, 8);
}

/// Section 8: a daemon whose store already holds `LISTED` sandboxes.
pub fn listing(table: &mut Table) {
    let seeded = BenchDaemon::start_with(0, "-listing", &[], |data| {
        let store = heyvm_core::store::Store::open(&heyvm_core::DataDir::new(data.to_path_buf()).db_path()).map_err(|e| e.to_string())?;
        for i in 0..LISTED {
            let rec = heyvm_core::record::SandboxRecord::with_defaults(heyvm_core::ids::new_sandbox_id(), &format!("listed-{i}"));
            store.insert(&rec).map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    let d = match seeded {
        Ok(d) => d,
        Err(e) => {
            table.section("8. GET /sandboxes with 1,000 sandboxes in the database");
            table.line(&format!("  could not start the seeded daemon: {e}"));
            return;
        }
    };
    let client = Client::new(&d.url, None);
    let n = client.list(None).map(|l| l.len()).unwrap_or(0);
    let (mut list, mut health) = (Samples::default(), Samples::default());
    let mut failures = 0;
    // Interleaved: one list, one health.
    for _ in 0..50 {
        let t = Instant::now();
        match client.list(None) {
            Ok(l) if l.len() == LISTED => list.push(t.elapsed()),
            _ => failures += 1,
        }
        let t = Instant::now();
        if client.health().is_ok() {
            health.push(t.elapsed());
        }
    }
    table.section(&format!("8. GET /sandboxes with {n} sandboxes in the database (N=50)"));
    table.row_ratio("GET /sandboxes p50", list.p50(), "GET /health p50", health.p50());
    table.row_ratio("GET /sandboxes p99", list.p99(), "GET /health p99", health.p99());
    table.line(&format!("  failures: {failures} of 50"));
}

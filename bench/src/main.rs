//! heyvm benchmarks: starts its own daemon (the release `heyvm` binary next
//! to this one) in a throwaway data dir and prints latencies next to bare
//! baselines measured in the same process, with their ratios.
//!
//! `cargo build --release && cargo run --release -p heyvm-bench [-- --out FILE]`
//! (root and bubblewrap required, like the daemon itself).

mod bursts;
mod daemon;
mod density;
mod files;
mod images;
mod load;
mod stats;
mod vm;

use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use heyvm_client::Client;
use heyvm_types::{CreateSandboxRequest, ExecRequest, SizeClass};

use stats::{Samples, Table};

const COLD_N: usize = 20;
const WARM_N: usize = 300;
const HEALTH_N: usize = 300;
const CONCURRENT: usize = 100;

fn main() {
    let out = parse_out_arg();
    let start = |pool: usize| match daemon::BenchDaemon::start(pool) {
        Ok(d) => {
            eprintln!("heyvm-bench: daemon {} at {} (data {}, warm pool {pool})", d.bin.display(), d.url, d.data.display());
            d
        }
        Err(e) => {
            eprintln!("heyvm-bench: {e}");
            std::process::exit(1);
        }
    };
    let mut table = Table::default();
    // HEYVM_BENCH_SECTION=vm runs only section 5 (the microVM tier).
    if std::env::var("HEYVM_BENCH_SECTION").is_ok_and(|v| v == "vm") {
        let daemon = start(0);
        vm::run(&Client::new(&daemon.url, None), &daemon.data, &mut table);
        return report(&table, out);
    }
    // HEYVM_BENCH_SECTION: otherwise a comma-separated subset of cold,
    // bursts, exec, concurrent, files, density, list, load, images
    // (default: all).
    let sections: Option<Vec<String>> =
        std::env::var("HEYVM_BENCH_SECTION").ok().map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let on = |name: &str| sections.as_ref().is_none_or(|s| s.iter().any(|x| x == name));
    if on("cold") || on("density") {
        // Cold: every create launches a sandbox from scratch.
        let cold = start(0);
        let client = Client::new(&cold.url, None);
        // A fresh daemon makes its spares first: measure after that.
        cold.settle(&mut table);
        if on("cold") {
            cold_start(&client, &cold, &mut table);
        }
        if on("density") {
            density::density(&client, &cold, &mut table);
        }
    }
    let warm_sections = ["bursts", "exec", "concurrent", "files", "load"];
    // Section 7 (OCI images) on a daemon of its own, warm pool off.
    let images_section = |table: &mut Table| {
        let d = start(0);
        images::run_section(&Client::new(&d.url, None), &d.bin, &d.url, table);
    };
    if !warm_sections.iter().any(|s| on(s)) {
        if on("list") {
            density::listing(&mut table);
        }
        if on("images") {
            images_section(&mut table);
        }
        return report(&table, out);
    }
    let daemon = start(1);
    let client = Client::new(&daemon.url, None);
    if on("bursts") {
        bursts::run(&client, &mut table);
    }
    // HEYVM_BENCH_SIZE picks the warm sandbox's size class (default small).
    let size_class = std::env::var("HEYVM_BENCH_SIZE")
        .ok()
        .map(|s| serde_json::from_value(serde_json::Value::String(s)).expect("HEYVM_BENCH_SIZE: a size class"));
    if on("exec") || on("concurrent") || on("files") || on("load") {
        let id = match client.create(&CreateSandboxRequest { name: Some("bench-warm".into()), size_class, ..Default::default() }) {
            Ok(sb) => sb.id,
            Err(e) => {
                println!("{}", table.render());
                eprintln!("heyvm-bench: cannot create the sandbox for the warm benchmarks: {e}");
                std::process::exit(1);
            }
        };
        // After the bursts the pool refills to the size they taught it:
        // exec figures are taken once that (and any spare refill) is over.
        daemon.settle(&mut table);
        if on("exec") {
            warm_exec(&client, &daemon, &id, &mut table);
        }
        if on("concurrent") {
            concurrent(&client, &daemon, &id, size_class.is_some(), &mut table);
        }
        if on("files") {
            files::run(&client, &id, &mut table);
        }
        if on("load") {
            load::run(&daemon.url, &id, &daemon.data, &mut table);
        }
        let _ = client.delete_sandbox(&id);
    }
    if on("list") {
        density::listing(&mut table);
    }
    if std::env::var("HEYVM_BENCH_VM").is_ok_and(|v| v == "1") {
        vm::run(&client, &daemon.data, &mut table);
    }
    if on("images") {
        drop(daemon);
        images_section(&mut table);
    }
    report(&table, out);
}

/// Prints the table and writes it to `out` if given.
fn report(table: &Table, out: Option<String>) {
    let report = table.render();
    println!("{report}");
    if let Some(path) = out {
        match std::fs::write(&path, &report) {
            Ok(()) => eprintln!("heyvm-bench: results written to {path}"),
            Err(e) => eprintln!("heyvm-bench: cannot write {path}: {e}"),
        }
    }
}

fn parse_out_arg() -> Option<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => None,
        [flag, path] if flag == "--out" => Some(path.clone()),
        _ => {
            eprintln!("usage: heyvm-bench [--out FILE]");
            std::process::exit(2);
        }
    }
}

pub(crate) fn echo_hi() -> ExecRequest {
    ExecRequest { command: "echo".into(), args: vec!["hi".into()], ..Default::default() }
}

/// 1. create -> first exec output, against a bare bwrap sandbox of `true`.
fn cold_start(client: &Client, daemon: &daemon::BenchDaemon, table: &mut Table) {
    let (mut create, mut first_exec, mut total, mut delete) =
        (Samples::default(), Samples::default(), Samples::default(), Samples::default());
    let mut failures = Vec::new();
    let mut bwrap = Samples::default();
    let mut cold_cpu = Duration::ZERO;
    // Interleaved with the bare baseline: one create, one bare bwrap.
    for i in 0..COLD_N {
        let req = CreateSandboxRequest { name: Some(format!("bench-cold-{i}")), ..Default::default() };
        let cpu0 = daemon.cpu_time();
        match cold_once(client, &req) {
            Ok((c, e, d)) => {
                create.push(c);
                first_exec.push(e);
                total.push(c + e);
                delete.push(d);
            }
            Err(e) => failures.push(e),
        }
        cold_cpu += daemon.cpu_time() - cpu0;
        bwrap.push(bare_bwrap());
    }
    let cold_cpu = cold_cpu / COLD_N as u32;
    // The same without a network namespace (the default is NAT: netns + veth).
    let mut no_net = Samples::default();
    for i in 0..COLD_N {
        let req = CreateSandboxRequest { name: Some(format!("bench-nonet-{i}")), network: Some("none".into()), ..Default::default() };
        match cold_once(client, &req) {
            Ok((c, e, _)) => no_net.push(c + e),
            Err(e) => failures.push(e),
        }
    }
    table.section(&format!("1. cold start, warm pool off: create -> first exec output (N={COLD_N}, default network nat)"));
    table.row_ratio("create + first `echo hi` p50", total.p50(), "bare bwrap `true` p50", bwrap.p50());
    table.row("  create (POST /sandboxes) p50", create.p50());
    table.row("  create min", create.pct(0.0));
    table.row("  create p90", create.pct(90.0));
    table.row("  first exec p50", first_exec.p50());
    table.row("  delete p50 (not in total)", delete.p50());
    table.row_ratio("create + first exec p99", total.p99(), "bare bwrap `true` p99", bwrap.p99());
    table.row_ratio("  same with network none, p50", no_net.p50(), "bare bwrap", bwrap.p50());
    table.row("  daemon CPU per create+exec+delete", cold_cpu);
    table.line(&format!("  failures: {} of {}", failures.len(), 2 * COLD_N));
    for f in failures.iter().take(3) {
        table.line(&format!("    e.g. {f}"));
    }
}

/// One bare bubblewrap sandbox running `true`: the cold-start baseline.
pub(crate) fn bare_bwrap() -> Duration {
    // `--ro-bind / /` remounts every host mount read-only, and fails when
    // one vanishes meanwhile (a sandbox's namespace being deleted): retry.
    for _ in 0..4 {
        let t0 = Instant::now();
        let st = Command::new("bwrap")
            .args(["--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run bwrap");
        if st.success() {
            return t0.elapsed();
        }
    }
    let t0 = Instant::now();
    let st = Command::new("bwrap")
        .args(["--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"])
        .stdout(Stdio::null())
        .status()
        .expect("run bwrap");
    assert!(st.success(), "bare bwrap failed: {st}");
    t0.elapsed()
}

/// One sandbox's create, first `echo hi` and delete times.
fn cold_once(client: &Client, req: &CreateSandboxRequest) -> Result<(Duration, Duration, Duration), String> {
    let t0 = Instant::now();
    let sb = client.create(req).map_err(|e| format!("create: {e}"))?;
    let t1 = Instant::now();
    let r = client.execute(&sb.id, &echo_hi());
    let t2 = Instant::now();
    let deleted = client.delete_sandbox(&sb.id);
    let t3 = Instant::now();
    let r = r.map_err(|e| format!("first exec: {e}"))?;
    if r.stdout.trim() != "hi" {
        return Err(format!("first exec printed {:?} (exit {})", r.stdout, r.exit_code));
    }
    deleted.map_err(|e| format!("delete: {e}"))?;
    Ok((t1 - t0, t2 - t1, t3 - t2))
}

/// 2. warm exec round trips through the API, against bare fork+exec.
fn warm_exec(client: &Client, daemon: &daemon::BenchDaemon, id: &str, table: &mut Table) {
    let req = ExecRequest { command: "true".into(), ..Default::default() };
    for _ in 0..10 {
        let _ = client.execute(id, &req);
    }
    let mut api = Samples::default();
    let mut server_side = Samples::default();
    let cpu0 = daemon.cpu_time();
    let mut failures = 0;
    for _ in 0..WARM_N {
        let t0 = Instant::now();
        match client.execute(id, &req) {
            Ok(r) if r.exit_code == 0 => {
                api.push(t0.elapsed());
                server_side.push(Duration::from_millis(r.duration_ms));
            }
            _ => failures += 1,
        }
    }
    let exec_cpu = (daemon.cpu_time() - cpu0) / WARM_N as u32;
    let mut bare = Samples::default();
    for _ in 0..WARM_N {
        let t0 = Instant::now();
        let st = Command::new("true").status().expect("fork+exec true");
        assert!(st.success());
        bare.push(t0.elapsed());
    }
    let mut health = Samples::default();
    let cpu0 = daemon.cpu_time();
    for _ in 0..HEALTH_N {
        let t0 = Instant::now();
        client.health().expect("health");
        health.push(t0.elapsed());
    }
    table.section(&format!("2. warm exec round trip of `true` (N={WARM_N})"));
    table.row_ratio("API exec p50", api.p50(), "bare fork+exec p50", bare.p50());
    table.row_ratio("API exec p99", api.p99(), "bare fork+exec p99", bare.p99());
    table.row("  GET /health round trip p50 (HTTP floor)", health.p50());
    let health_cpu = (daemon.cpu_time() - cpu0) / HEALTH_N as u32;
    table.row("  exec duration_ms reported by daemon p50", server_side.p50());
    table.row("  daemon CPU per API exec", exec_cpu);
    table.row("  daemon CPU per GET /health", health_cpu);
    table.line(&format!("  failures: {failures} of {WARM_N}"));
}

/// The size class whose vCPUs match the host's cores (the bare baseline
/// may use them all), and that count.
fn host_sized_class() -> (SizeClass, usize) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let class = SizeClass::ALL
        .into_iter()
        .filter(|c| c.limits().millicpu as usize >= 1000)
        .find(|c| c.limits().millicpu as usize >= cores * 1000)
        .unwrap_or(SizeClass::Xlarge);
    (class, cores)
}

/// Section 3, 100 execs at once on one sandbox against 100 bare
/// fork+execs at once: on the warm sandbox, then (unless HEYVM_BENCH_SIZE
/// chose one) on a sandbox with as many vCPUs as the host has cores, since
/// the bare baseline uses every core.
fn concurrent(client: &Client, daemon: &daemon::BenchDaemon, id: &str, size_chosen: bool, table: &mut Table) {
    let size = std::env::var("HEYVM_BENCH_SIZE").unwrap_or_else(|_| "small".into());
    let vcpus = |c: &str| {
        serde_json::from_value::<SizeClass>(serde_json::Value::String(c.into())).map(|c| c.limits().millicpu as f64 / 1000.0).unwrap_or(1.0)
    };
    concurrent_on(client, daemon, id, &format!("{size} ({} vCPU)", vcpus(&size)), table);
    let (class, cores) = host_sized_class();
    if size_chosen || class.as_str() == size {
        return;
    }
    let req = CreateSandboxRequest { name: Some("bench-concurrent".into()), size_class: Some(class), ..Default::default() };
    match client.create(&req) {
        Ok(sb) => {
            daemon.settle(table);
            let label = format!("{} ({} vCPU, as many as the host's {cores} cores)", class.as_str(), vcpus(class.as_str()));
            concurrent_on(client, daemon, &sb.id, &label, table);
            let _ = client.delete_sandbox(&sb.id);
        }
        Err(e) => table.line(&format!("  (no {} sandbox for the host-sized run: {e})", class.as_str())),
    }
}

/// Rounds of the concurrent burst: one burst of 100 is too short to say
/// anything on a 2-core host (the bare baseline alone ranged 29-163 ms),
/// so heyvm and bare bursts alternate and the median round is reported.
const CONCURRENT_ROUNDS: usize = 7;

fn concurrent_on(client: &Client, daemon: &daemon::BenchDaemon, id: &str, size: &str, table: &mut Table) {
    let req = echo_hi();
    let cpu0 = daemon.cpu_time();
    let (mut walls, mut bare_walls, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut failures, mut bare_failures) = (Vec::new(), 0);
    for _ in 0..CONCURRENT_ROUNDS {
        let (f, wall) = burst(CONCURRENT, |_| match client.execute(id, &req) {
            Ok(r) if r.exit_code == 0 && r.stdout.trim() == "hi" => None,
            Ok(r) => Some(format!("exit {} stdout {:?} stderr {:?}", r.exit_code, r.stdout, r.stderr)),
            Err(e) => Some(e.to_string()),
        });
        failures.extend(f);
        let (bf, bare_wall) = burst(CONCURRENT, |_| match Command::new("echo").arg("hi").stdout(Stdio::null()).status() {
            Ok(s) if s.success() => None,
            Ok(s) => Some(s.to_string()),
            Err(e) => Some(e.to_string()),
        });
        bare_failures += bf.len();
        ratios.push(wall.as_secs_f64() / bare_wall.as_secs_f64());
        walls.push(wall);
        bare_walls.push(bare_wall);
    }
    let cpu_per_round = (daemon.cpu_time() - cpu0) / CONCURRENT_ROUNDS as u32;
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (wall, bare_wall) = (median(&mut walls), median(&mut bare_walls));
    ratios.sort_by(f64::total_cmp);
    table.section(&format!("3. {CONCURRENT} concurrent `echo hi` on one sandbox of size {size}, {CONCURRENT_ROUNDS} rounds"));
    table.row_ratio("median wall time", wall, "median bare fork+exec wall", bare_wall);
    let rate = |d: Duration| CONCURRENT as f64 / d.as_secs_f64();
    let share = |r: f64| 100.0 / r;
    table.line(&format!(
        "  throughput (median round): {:.0} execs/s vs bare {:.0} execs/s = {:.0}% of bare",
        rate(wall),
        rate(bare_wall),
        100.0 * rate(wall) / rate(bare_wall)
    ));
    table.line(&format!(
        "  per-round share of bare throughput: median {:.0}%, worst {:.0}%, best {:.0}% ({})",
        share(ratios[ratios.len() / 2]),
        share(ratios[ratios.len() - 1]),
        share(ratios[0]),
        ratios.iter().map(|r| format!("{:.0}%", share(*r))).collect::<Vec<_>>().join(" ")
    ));
    table.row("  daemon CPU per burst", cpu_per_round);
    table.line(&format!("  (the sandbox's size class is {size}; the bare baseline may use every host core)"));
    table.line(&format!("  failures: {} of {} (bare: {bare_failures})", failures.len(), CONCURRENT * CONCURRENT_ROUNDS));
    for f in failures.iter().take(3) {
        table.line(&format!("    e.g. {f}"));
    }
}

/// Runs `n` copies of `f` released together; returns failure messages and wall time.
pub(crate) fn burst<F>(n: usize, f: F) -> (Vec<String>, Duration)
where
    F: Fn(usize) -> Option<String> + Sync,
{
    let barrier = Arc::new(Barrier::new(n + 1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let b = barrier.clone();
                let f = &f;
                s.spawn(move || {
                    b.wait();
                    f(i)
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        let failures: Vec<String> = handles.into_iter().filter_map(|h| h.join().unwrap_or(Some("thread panicked".into()))).collect();
        (failures, t0.elapsed())
    })
}

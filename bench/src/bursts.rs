//! Section 1b: creates at the rate agents make them, with the warm pool on
//! (its default size rule): a burst of 30 back to back (create -> first
//! exec output -> next create) and 100 creates issued 10 at a time, each
//! against bare `bwrap … true` run by this process in the same pattern
//! (interleaved: half the bare runs before, half after).
//!
//! The pool sizes itself to the recent create rate, so each shape runs
//! twice: first on a pool at its floor (what a sudden burst sees), then,
//! once the pool has refilled to the size the first run taught it, the
//! measured run.

use std::time::{Duration, Instant};

use heyvm_client::Client;
use heyvm_types::CreateSandboxRequest;

use crate::stats::{Samples, Table};
use crate::{bare_bwrap, burst};

const BURST: usize = 30;
const WAVES: usize = 10;
const WAVE: usize = 10;

/// create -> first `echo hi` output, as one duration.
fn create_and_exec(client: &Client, name: String) -> Result<(Duration, String), String> {
    let t0 = Instant::now();
    let sb = client.create(&CreateSandboxRequest { name: Some(name), ..Default::default() }).map_err(|e| format!("create: {e}"))?;
    let r = client.execute(&sb.id, &crate::echo_hi()).map_err(|e| format!("first exec: {e}"))?;
    let took = t0.elapsed();
    if r.stdout.trim() != "hi" {
        return Err(format!("first exec printed {:?} (exit {})", r.stdout, r.exit_code));
    }
    Ok((took, sb.id))
}

fn delete_all(client: &Client, ids: &[String]) {
    for id in ids {
        let _ = client.delete_sandbox(id);
    }
}

/// Waits until the pool holds its target (or a minute passes); returns
/// (warm, target).
fn wait_for_pool(client: &Client) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v: serde_json::Value = client.get_json("/system/pool").unwrap_or_default();
        let (warm, target) = (v["warm"].as_u64().unwrap_or(0), v["target"].as_u64().unwrap_or(0));
        if warm >= target || Instant::now() > deadline {
            return (warm, target);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Run {
    samples: Samples,
    failures: Vec<String>,
    ids: Vec<String>,
}

fn back_to_back(client: &Client, tag: &str) -> Run {
    let mut run = Run { samples: Samples::default(), failures: vec![], ids: vec![] };
    for i in 0..BURST {
        match create_and_exec(client, format!("burst-{tag}-{i}")) {
            Ok((d, id)) => {
                run.samples.push(d);
                run.ids.push(id);
            }
            Err(e) => run.failures.push(e),
        }
    }
    run
}

fn in_waves(client: &Client, tag: &str) -> Run {
    let mut run = Run { samples: Samples::default(), failures: vec![], ids: vec![] };
    for w in 0..WAVES {
        let results = std::sync::Mutex::new(Vec::new());
        burst(WAVE, |i| {
            let r = create_and_exec(client, format!("wave-{tag}-{w}-{i}"));
            results.lock().unwrap().push(r);
            None
        });
        for r in results.into_inner().unwrap() {
            match r {
                Ok((d, id)) => {
                    run.samples.push(d);
                    run.ids.push(id);
                }
                Err(e) => run.failures.push(e),
            }
        }
    }
    run
}

/// Bare bwrap runs: `n` sequential, or in waves of `WAVE` concurrent.
fn bare(n: usize, waves: bool, into: &mut Samples) {
    if !waves {
        for _ in 0..n {
            into.push(bare_bwrap());
        }
        return;
    }
    for _ in 0..n / WAVE {
        let times = std::sync::Mutex::new(Vec::new());
        burst(WAVE, |_| {
            let d = bare_bwrap();
            times.lock().unwrap().push(d);
            None
        });
        for d in times.into_inner().unwrap() {
            into.push(d);
        }
    }
}

fn report(table: &mut Table, label: &str, run: &Run, base: &Samples, base_label: &str) {
    table.row_ratio(&format!("{label} p50"), run.samples.p50(), &format!("{base_label} p50"), base.p50());
    table.row_ratio(&format!("{label} p99"), run.samples.p99(), &format!("{base_label} p99"), base.p99());
    table.line(&format!("    failures: {} of {}", run.failures.len(), run.samples.len() + run.failures.len()));
    for f in run.failures.iter().take(3) {
        table.line(&format!("      e.g. {f}"));
    }
}

pub fn run(client: &Client, table: &mut Table) {
    table.section("1b. create -> first exec output with the warm pool (HEYVM_POOL_SIZE=1, HEYVM_POOL_MAX default)");
    let v: serde_json::Value = client.get_json("/system/pool").unwrap_or_default();
    table.line(&format!("  pool: {v}"));

    // A burst of 30, back to back.
    let mut bare_seq = Samples::default();
    bare(BURST / 2, false, &mut bare_seq);
    let first = back_to_back(client, "a");
    delete_all(client, &first.ids);
    let (warm, target) = wait_for_pool(client);
    let second = back_to_back(client, "b");
    bare(BURST / 2, false, &mut bare_seq);
    delete_all(client, &second.ids);
    table.line(&format!("  burst of {BURST} back to back (pool refilled to {warm} of target {target} before the second):"));
    report(table, "  first burst (pool at its floor)", &first, &bare_seq, "bare bwrap");
    report(table, "  second burst (pool sized by the first)", &second, &bare_seq, "bare bwrap");

    // 100 creates, 10 at a time.
    wait_for_pool(client);
    let mut bare_waves = Samples::default();
    bare(WAVES * WAVE / 2, true, &mut bare_waves);
    let first = in_waves(client, "a");
    delete_all(client, &first.ids);
    let (warm, target) = wait_for_pool(client);
    let second = in_waves(client, "b");
    bare(WAVES * WAVE / 2, true, &mut bare_waves);
    delete_all(client, &second.ids);
    table.line(&format!(
        "  {} creates issued {WAVE} at a time (pool refilled to {warm} of target {target} before the second):",
        WAVES * WAVE
    ));
    report(table, "  first run", &first, &bare_waves, "bare bwrap 10 at a time");
    report(table, "  second run", &second, &bare_waves, "bare bwrap 10 at a time");
    table.row_ratio("  second run p50", second.samples.p50(), "sequential bare bwrap p50", bare_seq.p50());
    table.row_ratio("  second run p99", second.samples.p99(), "sequential bare bwrap p99", bare_seq.p99());
}

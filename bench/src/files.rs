//! Section 6: file transfers on one warm bubblewrap sandbox, the host route
//! (a path relative to /workspace: the daemon opens the sandbox's
//! directory itself) next to the agent route (the same file by its
//! absolute path: the in-sandbox agent streams it over the multiplexed
//! stream). The ratio says what moving bubblewrap's file routes onto the
//! agent would cost.

use std::time::{Duration, Instant};

use heyvm_client::Client;

use crate::stats::{Samples, Table};

const N: usize = 10;
const BIG: usize = 16 * 1024 * 1024;
const SMALL: usize = 4 * 1024;

fn time(n: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<Samples, String> {
    let mut s = Samples::default();
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        s.push(t.elapsed());
    }
    Ok(s)
}

fn measure(client: &Client, id: &str, size: usize) -> Result<[Samples; 4], String> {
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let e = |e: heyvm_client::ClientError| e.to_string();
    let host_up = time(N, || client.upload(id, "/workspace", "bench.bin", &data[..]).map(|_| ()).map_err(e))?;
    let agent_up = time(N, || client.upload(id, "", "/workspace/bench.bin", &data[..]).map(|_| ()).map_err(e))?;
    let host_down = time(N, || {
        let mut sink = std::io::sink();
        client.download(id, "/workspace", "bench.bin", &mut sink).map(|_| ()).map_err(e)
    })?;
    let agent_down = time(N, || {
        let (_, got) = client.read_range(id, "/workspace/bench.bin", 0, size as u64).map_err(e)?;
        (got.len() == size).then_some(()).ok_or_else(|| format!("agent download returned {} of {size} bytes", got.len()))
    })?;
    Ok([host_up, agent_up, host_down, agent_down])
}

pub fn run(client: &Client, id: &str, table: &mut Table) {
    table.section(&format!("6. file transfers, host route vs agent route (bubblewrap, N={N} each)"));
    for (label, size) in [("16 MiB", BIG), ("4 KiB", SMALL)] {
        match measure(client, id, size) {
            Ok([hu, au, hd, ad]) => {
                table.row_ratio(&format!("upload {label} via agent p50"), au.p50(), "host route", hu.p50());
                table.row_ratio(&format!("download {label} via agent p50"), ad.p50(), "host route", hd.p50());
                if size == BIG {
                    let mbps = |d: Duration| size as f64 / d.as_secs_f64().max(1e-9) / 1e6;
                    table.line(&format!(
                        "  throughput MB/s: upload host {:.0} agent {:.0}, download host {:.0} agent {:.0}",
                        mbps(hu.p50()),
                        mbps(au.p50()),
                        mbps(hd.p50()),
                        mbps(ad.p50())
                    ));
                }
            }
            Err(e) => table.line(&format!("  {label}: failed: {e}")),
        }
    }
}

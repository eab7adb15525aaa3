//! Section 5, the microVM tier (`HEYVM_BENCH_VM=1`, or alone with
//! `HEYVM_BENCH_SECTION=vm`): create -> agent ready, warm exec round trip,
//! checkpoint and restore, and host memory per idle sandbox, each next to
//! the bubblewrap figure from the same daemon. The accelerator is named: on
//! the reference machines it is TCG (software emulation), so these are not
//! KVM numbers.
//!
//! Memory is PSS (proportional set size: shared pages split between their
//! users) from `/proc/PID/smaps`. For a VM, "beyond guest RAM" is QEMU's
//! PSS minus the PSS of its guest-RAM mapping (the anonymous mapping as
//! large as the guest's memory): what the host pays for QEMU itself, its
//! device emulation and, under TCG, its translated-code buffer. For
//! bubblewrap it is the PSS of the sandbox's processes (owner, bwrap, agent).

use std::time::{Duration, Instant};

use heyvm_client::Client;
use heyvm_types::{CreateSandboxRequest, ExecRequest, SizeClass};

use crate::stats::{Samples, Table};

const EXEC_N: usize = 20;
/// Guest RAM of a micro VM, MiB.
const MICRO_MIB: u64 = 512;

fn create(client: &Client, name: &str, backend: &str) -> Result<(String, Duration), String> {
    let req = CreateSandboxRequest {
        name: Some(name.into()),
        backend_type: Some(backend.into()),
        size_class: Some(SizeClass::Micro),
        network: Some("none".into()),
        ..Default::default()
    };
    let t = Instant::now();
    let sb = client.create(&req).map_err(|e| e.to_string())?;
    Ok((sb.id, t.elapsed()))
}

fn warm_exec(client: &Client, id: &str) -> Samples {
    let mut s = Samples::default();
    let req = ExecRequest { command: "echo".into(), args: vec!["hi".into()], ..Default::default() };
    for _ in 0..EXEC_N {
        let t = Instant::now();
        if client.execute(id, &req).is_ok() {
            s.push(t.elapsed());
        }
    }
    s
}

/// PSS of a process in bytes, total and of its mappings of exactly
/// `region_kb` (the guest RAM block), from `/proc/PID/smaps`.
fn pss(pid: i32, region_kb: u64) -> Option<(u64, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let (mut total, mut region, mut size) = (0u64, 0u64, 0u64);
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("Size:") => size = f.next()?.parse().ok()?,
            Some("Pss:") => {
                let kb: u64 = f.next()?.parse().ok()?;
                total += kb;
                if size == region_kb {
                    region += kb;
                }
            }
            _ => {}
        }
    }
    Some((total * 1024, region * 1024))
}

fn qemu_pid(data: &std::path::Path, id: &str) -> Option<i32> {
    std::fs::read_to_string(data.join("sandboxes").join(id).join("vm/run/qemu.pid")).ok()?.trim().parse().ok()
}

/// The bubblewrap sandbox's owner and every process below it.
fn sandbox_pids(data: &std::path::Path, id: &str) -> Vec<i32> {
    let owner: Option<i32> = std::fs::read(data.join("sandboxes").join(id).join("owner.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["pid"].as_i64())
        .map(|p| p as i32);
    let Some(owner) = owner else { return Vec::new() };
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut out = vec![owner];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// Checkpoint then restore `id`; the two durations and the checkpoint size.
fn checkpoint_restore(client: &Client, id: &str) -> Result<(Duration, Duration, u64), String> {
    let t = Instant::now();
    let ck = client.checkpoint(id, Some("bench".into())).map_err(|e| format!("checkpoint: {e}"))?;
    let taken = t.elapsed();
    let t = Instant::now();
    client.restore(id, Some("bench".into())).map_err(|e| format!("restore: {e}"))?;
    Ok((taken, t.elapsed(), ck.size_bytes))
}

pub fn run(client: &Client, data: &std::path::Path, table: &mut Table) {
    let accel = client
        .backends()
        .ok()
        .and_then(|b| b.into_iter().find(|b| b.name == "kvm"))
        .map(|b| if b.available { b.accel.unwrap_or_default() } else { format!("unavailable: {}", b.reason.unwrap_or_default()) })
        .unwrap_or_else(|| "no kvm backend".into());
    table.section(&format!("5. microVM tier (kvm backend, accelerator: {accel}), micro size, network none"));
    let (bw, bw_create) = match create(client, "bench-vm-bwrap", "bubblewrap") {
        Ok(x) => x,
        Err(e) => return table.line(&format!("  bubblewrap create failed: {e}")),
    };
    let (vm, vm_create) = match create(client, "bench-vm", "kvm") {
        Ok(x) => x,
        Err(e) => {
            let _ = client.delete_sandbox(&bw);
            return table.line(&format!("  VM create failed: {e}"));
        }
    };
    table.row_ratio("create -> agent ready (VM boot)", vm_create, "bubblewrap create", bw_create);
    let (vm_exec, bw_exec) = (warm_exec(client, &vm), warm_exec(client, &bw));
    table.row_ratio(&format!("warm exec `echo hi` p50 (N={EXEC_N})"), vm_exec.p50(), "bubblewrap p50", bw_exec.p50());
    table.row_ratio("warm exec p99", vm_exec.p99(), "bubblewrap p99", bw_exec.p99());

    std::thread::sleep(Duration::from_secs(2)); // let the guest settle to idle
    let bw_pss: u64 = sandbox_pids(data, &bw).into_iter().filter_map(|p| pss(p, 0)).map(|(t, _)| t).sum();
    match qemu_pid(data, &vm).and_then(|p| pss(p, MICRO_MIB * 1024)) {
        Some((total, ram)) => table.line(&format!(
            "  idle memory (PSS): VM beyond guest RAM {} (QEMU {} of which guest RAM resident {} of {MICRO_MIB} MiB)   vs bubblewrap sandbox {}",
            mib(total.saturating_sub(ram)),
            mib(total),
            mib(ram),
            mib(bw_pss)
        )),
        None => table.line("  idle memory: QEMU's smaps not readable"),
    }

    match (checkpoint_restore(client, &vm), checkpoint_restore(client, &bw)) {
        (Ok((vck, vre, vsize)), Ok((bck, bre, bsize))) => {
            table.row_ratio(
                &format!("checkpoint (VM memory+disks {} MiB)", vsize >> 20),
                vck,
                &format!("bubblewrap files {} MiB", bsize >> 20),
                bck,
            );
            table.row_ratio("restore -> running (VM processes kept)", vre, "bubblewrap (restarted)", bre);
        }
        (v, b) => table.line(&format!("  checkpoint/restore failed: VM {:?}, bubblewrap {:?}", v.err(), b.err())),
    }
    let _ = client.delete_sandbox(&vm);
    let _ = client.delete_sandbox(&bw);
}

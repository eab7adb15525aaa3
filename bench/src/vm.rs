//! Section 5, the microVM tier (`HEYVM_BENCH_VM=1`): create -> agent ready, warm
//! exec round trip, checkpoint and restore, and QEMU's host memory for an
//! idle VM, each next to the bubblewrap figure from the same daemon. The
//! accelerator is named: on the reference machines it is TCG (software
//! emulation), so these are not KVM numbers.

use std::time::{Duration, Instant};

use heyvm_client::Client;
use heyvm_types::{CreateSandboxRequest, ExecRequest, SizeClass};

use crate::stats::{Samples, Table};

const EXEC_N: usize = 20;

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

fn qemu_rss_bytes(data: &std::path::Path, id: &str) -> Option<u64> {
    let pid = std::fs::read_to_string(data.join("sandboxes").join(id).join("vm/run/qemu.pid")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok()?;
    let kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
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
    table.row("  VM warm exec p99", vm_exec.p99());
    std::thread::sleep(Duration::from_secs(2)); // let the guest settle to idle
                                                // Guest pages in use (what the guest touched, roughly): MemTotal - MemFree.
    let script = "awk '/MemTotal/{t=$2}/MemFree/{f=$2}END{print (t-f)*1024}' /proc/meminfo";
    let req = ExecRequest { command: "/bin/sh".into(), args: vec!["-c".into(), script.into()], ..Default::default() };
    let touched: Option<u64> = client.execute(&vm, &req).ok().and_then(|r| r.stdout.trim().parse().ok());
    if let (Some(rss), Some(touched)) = (qemu_rss_bytes(data, &vm), touched) {
        table.line(&format!(
            "  idle VM: QEMU resident {} MiB; guest memory in use {} MiB (of 512); beyond guest RAM: ~{} MiB",
            rss >> 20,
            touched >> 20,
            rss.saturating_sub(touched) >> 20
        ));
    }
    let t = Instant::now();
    match client.checkpoint(&vm, Some("bench".into())) {
        Ok(ck) => {
            table.row(&format!("checkpoint (memory + disks, {} MiB)", ck.size_bytes >> 20), t.elapsed());
            let t = Instant::now();
            match client.restore(&vm, Some("bench".into())) {
                Ok(_) => table.row("restore (processes kept) -> running", t.elapsed()),
                Err(e) => table.line(&format!("  restore failed: {e}")),
            }
        }
        Err(e) => table.line(&format!("  checkpoint failed: {e}")),
    }
    table.line("  bubblewrap has no memory checkpoints (a VM-only figure)");
    let _ = client.delete_sandbox(&vm);
    let _ = client.delete_sandbox(&bw);
}

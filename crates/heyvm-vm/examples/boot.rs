//! Boots one microVM by hand and pings its agent over the virtio-serial
//! port: `cargo run --release -p heyvm-vm --example boot -- AGENT_BIN [microvm|q35|probe]`.
//! Prints the time to each step. Needs `scripts/vm-assets.sh` first.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use heyvm_vm::qemu::{Accel, Disk, Machine, VmSpec};

/// The shape the checkpoint section boots (1 vCPU, 512 MiB, as below).
const MACHINE: heyvm_vm::snapshot::Machine = heyvm_vm::snapshot::Machine { vcpus: 1, memory_mib: 512 };

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let agent = args.get(1).expect("usage: boot AGENT_BIN [microvm|q35|probe]");
    let machine = if args.get(2).map(String::as_str) == Some("q35") { Machine::Q35 } else { Machine::Microvm };
    let assets = heyvm_vm::assets::VmAssets::from_env();
    let t0 = Instant::now();
    let initrd = heyvm_vm::initramfs::build_cached(agent.as_ref(), &assets.modules(), &assets.dir).unwrap();
    println!("initramfs {} in {:?}", initrd.display(), t0.elapsed());
    if args.get(2).map(String::as_str) == Some("probe") {
        let t = Instant::now();
        let v = heyvm_vm::probe::decide(&assets.dir, &assets.kernel(), &initrd, &assets.kernel_version().unwrap_or_default());
        println!("probe in {:?}: {v:?}", t.elapsed());
        return;
    }
    if let Some(mode @ ("nat" | "snap")) = args.get(2).map(String::as_str) {
        return launch_nat(&assets, initrd, mode == "snap");
    }
    let dir = std::env::temp_dir().join(format!("heyvm-boot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t = Instant::now();
    heyvm_vm::disk::create_overlay(&assets.image("debian"), &dir.join("root.qcow2")).unwrap();
    heyvm_vm::disk::create_ext4(&dir.join("ws.ext4"), 1 << 30, "workspace").unwrap();
    println!("disks in {:?}", t.elapsed());
    let spec = VmSpec {
        machine,
        accel: Accel::Tcg,
        vcpus: 1,
        memory_mib: 512,
        kernel: assets.kernel(),
        initrd,
        cmdline: "heyvm.root=serial:root heyvm.ws=serial:workspace heyvm.hostname=bootvm".into(),
        disks: vec![
            Disk { path: dir.join("root.qcow2"), format: "qcow2", serial: "root".into(), read_only: false },
            Disk { path: dir.join("ws.ext4"), format: "raw", serial: "workspace".into(), read_only: false },
        ],
        shares: vec![],
        read_only_binds: vec![],
        agent_socket: dir.join("agent.sock"),
        qmp_socket: dir.join("qmp.sock"),
        console_log: dir.join("console.log"),
        tap: None,
        mac: None,
        incoming_fd: None,
        runas: None,
        seccomp: false,
    };
    let t = Instant::now();
    let mut child = std::process::Command::new("qemu-system-x86_64").args(spec.args()).spawn().unwrap();
    let mut sock = loop {
        if let Ok(s) = UnixStream::connect(&spec.agent_socket) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    println!("qemu socket up in {:?}", t.elapsed());
    sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // The port buffers the ping until the guest opens it.
    let ping = heyvm_protocol_ping();
    sock.write_all(&ping).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = sock.read(&mut buf).unwrap();
    println!("agent answered in {:?}: {:?}", t.elapsed(), String::from_utf8_lossy(&buf[..n]));
    let n = sock.read(&mut buf).unwrap_or(0);
    println!("{}", String::from_utf8_lossy(&buf[..n]));
    let _ = child.kill();
    let _ = child.wait();
    println!("console:\n{}", std::fs::read_to_string(&spec.console_log).unwrap_or_default());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A protocol control frame: kind 1, big-endian length, JSON.
fn heyvm_protocol_ping() -> Vec<u8> {
    let body = br#"{"type":"ping","version":1}"#;
    let mut f = vec![1u8];
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// The backend's own launch path with a `nat` network: the guest pings the
/// outside through its bridged tap.
fn launch_nat(assets: &heyvm_vm::assets::VmAssets, initrd: std::path::PathBuf, snap: bool) {
    use heyvm_core::backend::NetworkSpec;
    let dir = std::env::temp_dir().join(format!("heyvm-nat-{}", std::process::id()));
    let spec = heyvm_core::LaunchSpec {
        id: format!("sb-{:08x}", std::process::id()),
        hostname: "natvm".into(),
        paths: heyvm_core::paths::SandboxPaths { dir: dir.clone() },
        limits: heyvm_types::Limits { millicpu: 1000, memory_bytes: 512 << 20, pids: 256, ..heyvm_types::SizeClass::Micro.limits() },
        mounts: vec![],
        network: NetworkSpec { mode: heyvm_types::NetworkMode::Nat, ..Default::default() },
        image_layers: vec![],
        // A root caller's QEMU drops to the range's first id.
        ids: Some(heyvm_core::id_ranges::IdRange { base: 2_000_000_000, size: 65_536 }),
    };
    let host = heyvm_vm::launch::HostSetup {
        assets: assets.clone(),
        accel: Accel::Tcg,
        accel_reason: String::new(),
        initrd,
        image: "debian".into(),
        cgroups: None,
        seccomp: heyvm_vm::confine::qemu_has_seccomp("qemu-system-x86_64"),
    };
    let t = Instant::now();
    heyvm_vm::launch::prepare_disks(&spec).unwrap();
    println!("disks in {:?}", t.elapsed());
    let t = Instant::now();
    let p = heyvm_vm::launch::start(&spec, &host).unwrap();
    let layout = heyvm_vm::vmproc::VmLayout::new(&dir);
    let mut sock = loop {
        if let Ok(s) = UnixStream::connect(layout.agent_socket()) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    sock.write_all(&heyvm_protocol_ping()).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = sock.read(&mut buf).unwrap();
    println!("agent answered in {:?} (pid {}): {:?}", t.elapsed(), p.pid, String::from_utf8_lossy(&buf[..n]));
    let n = sock.read(&mut buf).unwrap_or(0);
    println!("{}", String::from_utf8_lossy(&buf[..n]));
    println!("guest ip {:?}", heyvm_backends::net::guest_ip(&spec));
    if snap {
        drop(sock);
        let t = Instant::now();
        let meta = heyvm_vm::snapshot::take(&layout, "one", MACHINE).unwrap();
        println!("checkpoint in {:?}: {meta:?}", t.elapsed());
        heyvm_vm::launch::stop(&spec, None);
        let t = Instant::now();
        heyvm_vm::snapshot::stage(&layout, "one", &layout, MACHINE).unwrap();
        heyvm_vm::launch::start(&spec, &host).unwrap();
        println!("restored (QEMU running, memory loaded) in {:?}", t.elapsed());
        let mut sock = UnixStream::connect(layout.agent_socket()).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        sock.write_all(&heyvm_protocol_ping()).unwrap();
        let n = sock.read(&mut buf).unwrap();
        println!("agent answered after restore in {:?}: {:?}", t.elapsed(), String::from_utf8_lossy(&buf[..n]));
    }
    heyvm_vm::launch::stop(&spec, None);
    println!("console:\n{}", std::fs::read_to_string(layout.console_log()).unwrap_or_default());
    let _ = std::fs::remove_dir_all(&dir);
}

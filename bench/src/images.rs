//! Section 7: OCI images (issue 9), against a `docker-registry` this
//! section starts on a loopback port, with an image it makes offline
//! (`umoci`, pushed by `skopeo`): a static busybox plus a 48 MiB file of
//! incompressible bytes, so a pull moves real data.
//!
//! * create -> first exec on that image vs on the host rootfs (same
//!   daemon, warm pool off, image already in the store);
//! * pull throughput from the registry vs `skopeo copy` of the same image
//!   to an OCI directory (heyvm also verifies and unpacks; skopeo only
//!   copies and verifies);
//! * a fully cached rebuild (`heyvm images build` of an unchanged context:
//!   every layer from the cache) next to the first, uncached build.
//!
//! `HEYVM_BENCH_SECTION=images` runs only this section.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use heyvm_client::Client;
use heyvm_types::{CreateSandboxRequest, ExecRequest};

use crate::stats::{Samples, Table};

const CREATE_N: usize = 30;
const PULL_N: usize = 3;
const BIG_BYTES: usize = 48 << 20;

struct Registry {
    addr: String,
    dir: PathBuf,
    child: Child,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

fn start_registry(dir: &Path) -> Result<Registry, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join("registry.yml");
    let data = dir.join("registry");
    std::fs::write(
        &config,
        format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n", data.display()),
    )
    .map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("registry.log")).map_err(|e| e.to_string())?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("docker-registry: {e}"))?;
    let reg = Registry { addr, dir: dir.to_path_buf(), child };
    for _ in 0..200 {
        if std::net::TcpStream::connect(&reg.addr).is_ok() {
            return Ok(reg);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err("docker-registry did not start".into())
}

/// An OCI layout (tag `1`) with busybox and a big incompressible file.
fn make_layout(dir: &Path) -> Result<PathBuf, String> {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(root.join("data")).map_err(|e| e.to_string())?;
    let bb = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("busybox")).find(|p| p.is_file()))
        .ok_or("busybox is not installed")?;
    std::fs::copy(&bb, root.join("bin/busybox")).map_err(|e| e.to_string())?;
    for applet in ["sh", "echo", "cat", "true"] {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(root.join("data/blob")).map_err(|e| e.to_string())?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..BIG_BYTES / 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        f.write_all(&x.to_le_bytes()).map_err(|e| e.to_string())?;
    }
    f.flush().map_err(|e| e.to_string())?;
    let layout = dir.join("oci");
    let img = format!("{}:1", layout.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &img]))?;
    run(Command::new("umoci").args(["insert", "--image", &img]).arg(&root).arg("/"))?;
    run(Command::new("umoci").args(["config", "--image", &img, "--config.env", "PATH=/bin"]))?;
    Ok(layout)
}

fn image_bytes(layout: &Path) -> u64 {
    let blobs = layout.join("blobs/sha256");
    std::fs::read_dir(blobs).map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

fn create_exec(client: &Client, name: String, image: Option<String>) -> Result<Duration, String> {
    let t0 = Instant::now();
    let req = CreateSandboxRequest { name: Some(name), image, network: Some("none".into()), ..Default::default() };
    let sb = client.create(&req).map_err(|e| format!("create: {e}"))?;
    let r = client.execute(&sb.id, &ExecRequest { command: "echo".into(), args: vec!["hi".into()], ..Default::default() });
    let took = t0.elapsed();
    let _ = client.delete_sandbox(&sb.id);
    let r = r.map_err(|e| format!("exec: {e}"))?;
    (r.stdout.trim() == "hi").then_some(took).ok_or_else(|| format!("exec printed {:?}", r.stdout))
}

fn build(bin: &Path, url: &str, ctx: &Path) -> Result<(Duration, serde_json::Value), String> {
    let t0 = Instant::now();
    let out = Command::new(bin)
        .args(["--server", url, "images", "build", "-t", "bench/built:1", "--format", "json"])
        .arg(ctx)
        .output()
        .map_err(|e| e.to_string())?;
    let took = t0.elapsed();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok((took, serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?))
}

pub fn run_section(client: &Client, bin: &Path, url: &str, table: &mut Table) {
    table.section("7. OCI images (loopback docker-registry, busybox + 48 MiB incompressible layer)");
    if let Err(e) = measure(client, bin, url, table) {
        table.line(&format!("  skipped: {e}"));
    }
}

fn measure(client: &Client, bin: &Path, url: &str, table: &mut Table) -> Result<(), String> {
    let dir = PathBuf::from(format!("/tmp/heyvm-bench-images-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let reg = start_registry(&dir)?;
    let layout = make_layout(&dir)?;
    let reference = format!("{}/bench/img:1", reg.addr);
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{reference}")))?;
    let bytes = image_bytes(&layout);

    // Pull throughput: heyvm (fresh store each time) vs skopeo copy.
    let (mut ours, mut theirs) = (Samples::default(), Samples::default());
    for i in 0..PULL_N {
        let _ = client.remove_image(&reference);
        client.prune_images().map_err(|e| format!("prune: {e}"))?;
        let t0 = Instant::now();
        client.pull_image(&reference).map_err(|e| format!("pull: {e}"))?;
        ours.push(t0.elapsed());
        let dest = dir.join(format!("skopeo-{i}"));
        let t0 = Instant::now();
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:1", dest.display())))?;
        theirs.push(t0.elapsed());
        let _ = std::fs::remove_dir_all(dest);
    }
    let mbps = |d: Duration| bytes as f64 / d.as_secs_f64().max(1e-9) / 1e6;
    table.row_ratio(&format!("pull {:.0} MB (verify + unpack) p50", bytes as f64 / 1e6), ours.p50(), "skopeo copy p50", theirs.p50());
    table.line(&format!("  throughput MB/s: heyvm {:.0}, skopeo {:.0} (N={PULL_N})", mbps(ours.p50()), mbps(theirs.p50())));

    // create -> first exec on the (cached) image vs the host rootfs.
    let (mut on_image, mut on_host) = (Samples::default(), Samples::default());
    for i in 0..CREATE_N {
        on_image.push(create_exec(client, format!("bench-img-{i}"), Some(reference.clone()))?);
        on_host.push(create_exec(client, format!("bench-host-{i}"), None)?);
    }
    table.row_ratio(&format!("create + first exec on the image p50 (N={CREATE_N})"), on_image.p50(), "host rootfs p50", on_host.p50());

    // A fully cached rebuild.
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(ctx.join("app")).map_err(|e| e.to_string())?;
    std::fs::write(ctx.join("app/main.txt"), "main\n").map_err(|e| e.to_string())?;
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {reference}\nRUN echo built > /built.txt\nCOPY app /app\nENV MODE=bench\nRUN cat /app/main.txt > /copy.txt\n"),
    )
    .map_err(|e| e.to_string())?;
    let (first, v) = build(bin, url, &ctx)?;
    let mut cached = Samples::default();
    for _ in 0..PULL_N {
        let (t, again) = build(bin, url, &ctx)?;
        if again["cached_steps"] != again["layer_steps"] || again["digest"] != v["digest"] {
            return Err(format!("the rebuild was not fully cached: {again}"));
        }
        cached.push(t);
    }
    table.row(&format!("fully cached rebuild (CLI, {} layer steps) p50", v["layer_steps"]), cached.p50());
    table.row("  the first, uncached build", first);
    drop(reg);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

//! The daemon under test: the release `heyvm` binary beside this one (or
//! `HEYVM_BIN`), on an ephemeral loopback port with its own data dir.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use heyvm_client::Client;

pub struct BenchDaemon {
    pub url: String,
    pub bin: PathBuf,
    pub data: PathBuf,
    child: Child,
}

impl BenchDaemon {
    pub fn start(pool_size: usize) -> Result<BenchDaemon, String> {
        Self::start_with(pool_size, "", &[], |_| Ok(()))
    }

    /// A daemon with extra environment, whose data dir `seed` fills first
    /// (`tag` keeps data dirs of daemons with the same pool size apart).
    pub fn start_with(
        pool_size: usize,
        tag: &str,
        env: &[(&str, &str)],
        seed: impl FnOnce(&std::path::Path) -> Result<(), String>,
    ) -> Result<BenchDaemon, String> {
        let bin = match std::env::var_os("HEYVM_BIN") {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("heyvm"),
        };
        if !bin.is_file() {
            return Err(format!("{} not found; run `cargo build --release` first (or set HEYVM_BIN)", bin.display()));
        }
        let data = PathBuf::from(format!("/tmp/heyvm-bench-{}-pool{pool_size}{tag}", std::process::id()));
        std::fs::create_dir_all(&data).map_err(|e| format!("creating {}: {e}", data.display()))?;
        seed(&data)?;
        let log = std::fs::File::create(data.join("bench-daemon.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new(&bin)
            .args(["--api", "--port", "0", "--host", "127.0.0.1"])
            .env("MVM_DATA_DIR", &data)
            // HEYVM_BENCH_DAEMON_LOG (e.g. `heyvm_backends=debug`) to see
            // where a launch's time goes, in bench-daemon.log.
            .env("HEYVM_LOG", std::env::var("HEYVM_BENCH_DAEMON_LOG").unwrap_or_else(|_| "warn".into()))
            .env("HEYVM_POOL_SIZE", pool_size.to_string())
            // Density sections make hundreds of sandboxes on any host.
            .env("HEYVM_MAX_SANDBOXES", "100000")
            .envs(env.iter().copied())
            .env_remove("JWT_SECRET")
            .env_remove("HEYVM_API_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        // Keep draining so a chatty daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stdout.get_mut().by_ref(), &mut std::io::sink());
        });
        let Some(addr) = line.split("http://").nth(1).and_then(|r| r.split_whitespace().next()) else {
            let _ = child.kill();
            return Err(format!("daemon did not print its address (got {line:?}); see {}/bench-daemon.log", data.display()));
        };
        Ok(BenchDaemon { url: format!("http://{addr}"), bin, data, child })
    }

    /// The daemon's resident set size, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    }

    /// Waits until the daemon is quiet (its CPU time grows by less than
    /// 5 ms in 500 ms, twice in a row: spare and pool refills are done),
    /// at most a minute, and notes the wait in `table`.
    pub fn settle(&self, table: &mut crate::stats::Table) {
        let t0 = std::time::Instant::now();
        let mut quiet = 0;
        while quiet < 2 && t0.elapsed() < Duration::from_secs(60) {
            let cpu0 = self.cpu_time();
            std::thread::sleep(Duration::from_millis(500));
            quiet = if self.cpu_time() - cpu0 < Duration::from_millis(5) { quiet + 1 } else { 0 };
        }
        table.line(&format!("  (waited {:.1} s for the daemon to settle: spares and the pool refilled)", t0.elapsed().as_secs_f64()));
    }

    /// CPU time (user + system) the daemon process has used so far, from
    /// /proc (clock-tick resolution, so only meaningful over many requests).
    pub fn cpu_time(&self) -> Duration {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) else { return Duration::ZERO };
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
        let ticks = f.iter().sum::<u64>();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_micros(ticks * 1_000_000 / hz)
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        let client = Client::new(&self.url, None);
        if let Ok(list) = client.list(None) {
            for sb in list {
                let _ = client.delete_sandbox(&sb.id);
            }
        }
        // SIGTERM: the daemon stops its warm sandboxes before exiting.
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        if std::env::var_os("HEYVM_BENCH_DAEMON_LOG").is_some() {
            let kept = self.data.with_extension("log");
            if std::fs::copy(self.data.join("bench-daemon.log"), &kept).is_ok() {
                eprintln!("daemon log kept in {}", kept.display());
            }
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

//! 20,000 idle, unauthenticated TCP connections against the daemon. Before
//! the connection cap they exhausted its descriptors, and the reaper took
//! the failed liveness checks for dead sandboxes and killed them all.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::Daemon;

const FLOOD: usize = 20_000;

/// Half of FLOOD per flooder: raising a hard descriptor limit needs
/// CAP_SYS_RESOURCE, which test machines may lack.
const PER_FLOODER: usize = FLOOD / 2;

/// Holds PER_FLOODER idle non-blocking connections in a child process (so this
/// test process, shared with the other tests, keeps its descriptors) until
/// its stdin closes. Prints how many it opened.
const FLOODER: &str = r#"
import resource, socket, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    socks.append(s)
print(len(socks), flush=True)
sys.stdin.read()
"#;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn idle_flood_leaves_sandboxes_running() {
    let Some(d) = Daemon::start() else { return };
    let ids: Vec<String> =
        (0..2).map(|i| d.create(json!({"name": format!("flood{i}"), "size_class": "micro"}))["id"].as_str().unwrap().to_string()).collect();
    let pid = d.pid().expect("daemon pid");
    let mut flooders: Vec<Child> = (0..2)
        .map(|_| {
            let mut c = Command::new("python3")
                .args(["-c", FLOODER, &PER_FLOODER.to_string(), &d.port.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3");
            let mut opened = String::new();
            BufReader::new(c.stdout.take().unwrap()).read_line(&mut opened).unwrap();
            assert_eq!(opened.trim(), PER_FLOODER.to_string(), "a flooder could not open its connections");
            c
        })
        .collect();
    // Several reaper passes while the flood is held.
    let mut most = 0;
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        most = most.max(open_fds(pid));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(most < 4096 + 512, "the daemon held {most} descriptors: no connection cap");
    for f in &mut flooders {
        drop(f.stdin.take());
        let _ = f.wait();
    }
    d.wait_until("the daemon answers again", Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", d.port)).is_ok() && d.get("/health").0 == 200
    });
    for id in &ids {
        let (_, v) = d.get(&format!("/sandboxes/{id}"));
        assert_eq!(v["status"], "running", "the flood killed {id}: {v}");
        assert_eq!(d.sh(id, "echo alive")["stdout"], "alive\n");
    }
}

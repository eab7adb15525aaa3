//! An exec whose command never reads its stdin (issue 7): the agent must
//! keep forwarding output and the exit while the host pushes input. Before
//! stdin was written without blocking, the agent's exec loop sat in
//! `write_all` once the pipe filled, and nothing came out until the
//! command ended.

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use heyvm_protocol::ExecSpec;

use super::{AgentClient, AgentSession, ExecEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_ignoring_stdin_still_streams_output_and_exits() {
    let (host, agent) = UnixStream::pair().unwrap();
    std::thread::spawn(move || heyvm_agent::run_hosted(heyvm_agent::Source::Stream(agent.into())));
    host.set_nonblocking(true).unwrap();
    let t = tokio::net::UnixStream::from_std(host).unwrap();
    let c = AgentClient::new(AgentSession::handshake(Box::new(t), Duration::from_secs(5)).await.unwrap());
    let spec = ExecSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), "sleep 0.5; echo started; sleep 3; echo done".into()],
        env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
        cwd: "/".into(),
        timeout_ms: Some(60_000),
        stdin: true,
        background: false,
        user: None,
    };
    let start = Instant::now();
    let mut run = c.exec(spec).await.unwrap();
    let mut stdin = run.take_stdin().unwrap();
    // Megabytes of input nobody reads; the sender simply waits for credit.
    let feeder = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            if stdin.send(&chunk).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    });
    let mut out = Vec::new();
    let mut started_at = None;
    let status = loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), run.next()).await.expect("the exec stalled").unwrap();
        match ev {
            ExecEvent::Stdout(d) => {
                out.extend(d);
                if started_at.is_none() && out.starts_with(b"started") {
                    started_at = Some(start.elapsed());
                }
            }
            ExecEvent::Exit(s) => break s,
            _ => {}
        }
    };
    feeder.abort();
    assert_eq!(String::from_utf8_lossy(&out), "started\ndone\n");
    assert_eq!(status.code, 0);
    // Output arrived while the command ran, not only after it ended.
    let started_at = started_at.unwrap();
    assert!(started_at < Duration::from_secs(3), "output was held back until the command ended ({started_at:?})");
}

//! The host session against the real agent multiplexer on a socketpair
//! (no sandbox, no root), and against a hostile agent written by hand.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use heyvm_agent::mux::{serve, Source};
use heyvm_protocol::mux::{self, Hello, MuxKind, INITIAL_WINDOW};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::AgentSession;

/// Handler protocol for these tests: the first byte picks a behaviour.
/// `F`: write `y` forever; `E`: echo until end of input.
fn test_handler(mut conn: UnixStream) {
    let mut op = [0u8; 1];
    if conn.read_exact(&mut op).is_err() {
        return;
    }
    match op[0] {
        b'F' => {
            let chunk = [b'y'; 64 * 1024];
            while conn.write_all(&chunk).is_ok() {}
        }
        _ => {
            let mut r = conn.try_clone().unwrap();
            let _ = std::io::copy(&mut r, &mut conn);
        }
    }
}

async fn session_with_real_agent() -> std::sync::Arc<AgentSession> {
    let (host, agent) = UnixStream::pair().unwrap();
    std::thread::spawn(move || serve(Source::Stream(agent.into()), test_handler));
    host.set_nonblocking(true).unwrap();
    let t = tokio::net::UnixStream::from_std(host).unwrap();
    AgentSession::handshake(Box::new(t), Duration::from_secs(5)).await.unwrap()
}

/// Sends `msg` through the echo handler and reads the reply at the same
/// time: every buffer on the path is bounded (that is the point of the
/// credit windows), so writing megabytes before reading would deadlock.
async fn echo(s: &AgentSession, msg: &[u8]) -> Vec<u8> {
    let st = s.open().unwrap();
    let (mut rd, mut wr) = tokio::io::split(st);
    let msg = msg.to_vec();
    let writer = tokio::spawn(async move {
        wr.write_all(b"E").await.unwrap();
        wr.write_all(&msg).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut out = Vec::new();
    rd.read_to_end(&mut out).await.unwrap();
    writer.await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_nobody_reads_does_not_block_other_streams() {
    let s = session_with_real_agent().await;
    let mut flood = s.open().unwrap();
    flood.write_all(b"F").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..10 {
        let msg = format!("hello {i}").repeat(1000);
        let got = tokio::time::timeout(Duration::from_secs(10), echo(&s, msg.as_bytes())).await.expect("echo starved");
        assert_eq!(got, msg.as_bytes());
    }
    // The flood is still intact once read.
    let mut buf = vec![0u8; 4 << 20];
    flood.read_exact(&mut buf).await.unwrap();
    assert!(buf.iter().all(|&b| b == b'y'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfers_both_ways_arrive_intact() {
    let s = session_with_real_agent().await;
    let msg: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (s, msg) = (s.clone(), msg.clone());
        tasks.push(tokio::spawn(async move { echo(&s, &msg).await == msg }));
    }
    for t in tasks {
        // A stall here is a flow-control bug; fail instead of hanging CI.
        let same = tokio::time::timeout(Duration::from_secs(60), t).await.expect("transfer stalled");
        assert!(same.unwrap());
    }
}

/// Reads one frame from the host, returning its header.
fn read_frame(agent: &mut UnixStream) -> std::io::Result<mux::Header> {
    let mut h = [0u8; mux::HEADER_LEN];
    agent.read_exact(&mut h)?;
    let header = mux::parse_header(&h)?;
    agent.read_exact(&mut vec![0u8; header.len])?;
    Ok(header)
}

/// A hand-written agent: answers the handshake, then misbehaves.
async fn session_with_fake_agent(behave: impl FnOnce(UnixStream) + Send + 'static) -> std::sync::Arc<AgentSession> {
    let (host, mut agent) = UnixStream::pair().unwrap();
    std::thread::spawn(move || {
        read_frame(&mut agent).unwrap();
        agent.write_all(&mux::hello_frame(&Hello { version: heyvm_protocol::PROTOCOL_VERSION, pid: 7, ..Hello::default() })).unwrap();
        // Misbehave only once the host has opened its stream: frames for a
        // stream the host has not opened yet are dropped, which would make
        // the test race the host's `open()`.
        let open = read_frame(&mut agent).unwrap();
        assert_eq!(open.kind, MuxKind::Open);
        behave(agent);
    });
    host.set_nonblocking(true).unwrap();
    let t = tokio::net::UnixStream::from_std(host).unwrap();
    AgentSession::handshake(Box::new(t), Duration::from_secs(5)).await.unwrap()
}

#[tokio::test]
async fn an_agent_ignoring_flow_control_gets_its_stream_reset() {
    let (reset_seen, host_reset) = tokio::sync::oneshot::channel();
    let s = session_with_fake_agent(move |mut a| {
        // Stream 1 is the one the host opened; the host reads nothing
        // until this flood is over, so no credit comes back.
        let chunk = vec![b'x'; mux::MAX_MUX_PAYLOAD];
        for _ in 0..(2 * INITIAL_WINDOW as usize / chunk.len()) {
            if a.write_all(&mux::encode_frame(1, MuxKind::Data, &chunk)).is_err() {
                return;
            }
        }
        // The defence: the host answers the overrun with a Reset.
        while let Ok(h) = read_frame(&mut a) {
            if h.kind == MuxKind::Reset && h.stream == 1 {
                let _ = reset_seen.send(());
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(5));
    })
    .await;
    let mut st = s.open().unwrap();
    tokio::time::timeout(Duration::from_secs(5), host_reset).await.expect("the host never reset the stream").unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), st.read_to_end(&mut got)).await.unwrap();
    assert!(r.is_err(), "the stream must be reset");
    assert!(got.len() <= INITIAL_WINDOW as usize, "read {} bytes past the window", got.len());
    assert!(!s.is_closed(), "one bad stream does not end the session");
}

#[tokio::test]
async fn an_oversized_frame_ends_the_session() {
    let s = session_with_fake_agent(|mut a| {
        let _ = a.write_all(&mux::encode_header(1, MuxKind::Data, 1 << 30));
        std::thread::sleep(Duration::from_secs(5));
    })
    .await;
    let mut st = s.open().unwrap();
    let mut got = Vec::new();
    assert!(st.read_to_end(&mut got).await.is_err());
    assert!(s.is_closed());
    assert!(s.open().is_err());
}

/// A serial port outlives the host that spoke on it: a new host may find
/// half a frame of the old session in front of its own Hello.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_a_serial_port_skips_an_old_hosts_half_frame() {
    let (mut host, agent) = UnixStream::pair().unwrap();
    std::thread::spawn(move || serve(Source::Stream(agent.into()), test_handler));
    host.write_all(&mux::encode_frame(4, MuxKind::Data, b"cut off by the hang-up")[..15]).unwrap();
    host.set_nonblocking(true).unwrap();
    let t = tokio::net::UnixStream::from_std(host).unwrap();
    let s = AgentSession::handshake(Box::new(t), Duration::from_secs(5)).await.expect("the agent answers the new Hello");
    assert_eq!(echo(&s, b"after the leftovers").await, b"after the leftovers");
}

#[tokio::test]
async fn the_host_skips_stale_agent_bytes_before_the_hello() {
    let (host, mut agent) = UnixStream::pair().unwrap();
    std::thread::spawn(move || {
        read_frame(&mut agent).unwrap();
        // Output of the previous session, cut mid-frame, then the answer.
        agent.write_all(&mux::encode_frame(2, MuxKind::Data, b"stale output")[..13]).unwrap();
        agent.write_all(&mux::hello_frame(&Hello { version: heyvm_protocol::PROTOCOL_VERSION, pid: 42, ..Hello::default() })).unwrap();
        std::thread::sleep(Duration::from_secs(2));
    });
    host.set_nonblocking(true).unwrap();
    let t = tokio::net::UnixStream::from_std(host).unwrap();
    let s = AgentSession::handshake(Box::new(t), Duration::from_secs(5)).await.expect("handshake past stale bytes");
    assert_eq!(s.agent_pid(), 42);
}

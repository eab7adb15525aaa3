//! File requests through the real agent (hosted on a socketpair, acting on
//! a temporary directory of the host) and against an agent too old for
//! them. Each hostile case names the defence it attacks.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use heyvm_protocol::files::{FileKind, FileRead, FileWrite};

use super::{AgentClient, AgentSession};

async fn client() -> AgentClient {
    let (host, agent) = UnixStream::pair().unwrap();
    std::thread::spawn(move || heyvm_agent::run_hosted(heyvm_agent::Source::Stream(agent.into())));
    host.set_nonblocking(true).unwrap();
    let t = tokio::net::UnixStream::from_std(host).unwrap();
    AgentClient::new(AgentSession::handshake(Box::new(t), Duration::from_secs(5)).await.unwrap())
}

fn p(dir: &Path, rel: &str) -> String {
    dir.join(rel).display().to_string()
}

fn write_req(path: String, parents: bool) -> FileWrite {
    FileWrite { path, mode: None, parents, user: None, beneath: None }
}

async fn write(c: &AgentClient, path: String, data: &[u8]) -> crate::Result<u64> {
    let mut w = c.file_write(write_req(path, true)).await?;
    w.send(data).await?;
    w.finish().await
}

async fn read_all(c: &AgentClient, path: String, limit: Option<u64>) -> crate::Result<Vec<u8>> {
    let mut r = c.file_read(FileRead { path, offset: 0, limit, user: None, beneath: None }).await?;
    let mut out = Vec::new();
    while let Some(chunk) = r.next_chunk().await? {
        out.extend(chunk);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_list_stat_remove_through_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = client().await;
    // 3 MB: many windows' worth, streamed both ways.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    assert_eq!(write(&c, p(d, "a/b/big.bin"), &data).await.unwrap(), 3_000_000);
    assert_eq!(read_all(&c, p(d, "a/b/big.bin"), None).await.unwrap(), data);
    assert_eq!(read_all(&c, p(d, "a/b/big.bin"), Some(10)).await.unwrap(), &data[..10]);
    let mut r =
        c.file_read(FileRead { path: p(d, "a/b/big.bin"), offset: 2_999_995, limit: None, user: None, beneath: None }).await.unwrap();
    assert_eq!((r.stat.size, r.next_chunk().await.unwrap().unwrap()), (3_000_000, data[2_999_995..].to_vec()));

    // Mode: given, kept on replace, else 0644.
    let mut w =
        c.file_write(FileWrite { path: p(d, "run.sh"), mode: Some(0o750), parents: false, user: None, beneath: None }).await.unwrap();
    w.send(b"#!/bin/sh\n").await.unwrap();
    w.finish().await.unwrap();
    write(&c, p(d, "run.sh"), b"#!/bin/sh\necho 2\n").await.unwrap();
    assert_eq!(std::fs::metadata(d.join("run.sh")).unwrap().permissions().mode() & 0o7777, 0o750);
    assert_eq!(c.file_stat(&p(d, "a/b/big.bin"), None, None).await.unwrap().mode, 0o644);

    let mut names: Vec<(String, FileKind)> =
        c.file_list(&p(d, ""), None, None).await.unwrap().into_iter().map(|e| (e.name, e.kind)).collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(names, vec![("a".to_string(), FileKind::Dir), ("run.sh".to_string(), FileKind::File)], "no temporary files left");

    // Errors keep the codes the host-path routes have always answered.
    let code = |e: crate::CoreError| (e.code(), e.status());
    assert_eq!(code(read_all(&c, p(d, "nope"), None).await.unwrap_err()), ("file_not_found", 404));
    assert_eq!(code(read_all(&c, p(d, "a"), None).await.unwrap_err()), ("invalid_path", 400));
    assert_eq!(code(c.file_list(&p(d, "run.sh"), None, None).await.unwrap_err()), ("invalid_path", 400));
    assert_eq!(code(c.file_stat("relative/x", None, None).await.unwrap_err()), ("invalid_path", 400));
    assert_eq!(code(c.file_stat(&format!("{}/a/../run.sh", d.display()), None, None).await.unwrap_err()), ("invalid_path", 400));
    assert_eq!(code(c.file_write(write_req(p(d, "missing/x"), false)).await.err().unwrap()), ("file_not_found", 404));
    assert_eq!(code(c.file_write(write_req(p(d, "a"), true)).await.err().unwrap()), ("invalid_path", 400));
    assert_eq!(code(c.file_remove("/", None, true, None).await.unwrap_err()), ("invalid_path", 400));
    assert_eq!(code(c.file_remove(&p(d, "a"), None, false, None).await.unwrap_err()), ("conflict", 409));
    assert_eq!(code(c.file_stat("/x", None, Some("no-such-user-heyvm")).await.unwrap_err()), ("invalid_request", 400));
    c.file_remove(&p(d, "a"), None, true, None).await.unwrap();
    c.file_remove(&p(d, "run.sh"), None, false, None).await.unwrap();
    assert_eq!(std::fs::read_dir(d).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_cannot_hang_redirect_or_flood_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = client().await;
    // A FIFO nobody writes: open(2) would block forever without O_NONBLOCK.
    let fifo = std::ffi::CString::new(p(d, "fifo")).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let t = Instant::now();
    assert_eq!(read_all(&c, p(d, "fifo"), None).await.unwrap_err().code(), "invalid_path");
    // A device that never ends: refused, not streamed.
    assert_eq!(read_all(&c, "/dev/zero".into(), None).await.unwrap_err().code(), "invalid_path");
    assert!(t.elapsed() < Duration::from_secs(5));
    // A planted symlink at the target is replaced, its target untouched.
    std::fs::write(d.join("secret"), "s").unwrap();
    std::os::unix::fs::symlink(d.join("secret"), d.join("link")).unwrap();
    write(&c, p(d, "link"), b"new").await.unwrap();
    assert_eq!(std::fs::read_to_string(d.join("secret")).unwrap(), "s");
    assert!(!std::fs::symlink_metadata(d.join("link")).unwrap().file_type().is_symlink());
    // Removing a symlink to a directory removes the link only.
    std::fs::create_dir(d.join("keep")).unwrap();
    std::fs::write(d.join("keep/f"), "k").unwrap();
    std::os::unix::fs::symlink(d.join("keep"), d.join("dirlink")).unwrap();
    c.file_remove(&p(d, "dirlink"), None, true, None).await.unwrap();
    assert!(d.join("keep/f").exists());
    // An abandoned write leaves neither the file nor its temporary.
    let mut w = c.file_write(write_req(p(d, "partial"), false)).await.unwrap();
    w.send(&[7u8; 300_000]).await.unwrap();
    drop(w);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_dir(d).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".heyvm-write")) {
        assert!(Instant::now() < deadline, "temporary file left behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!d.join("partial").exists());
    // A file that grows while read is cut at the limit the host asked for.
    let grow = d.join("grow");
    std::fs::write(&grow, vec![1u8; 100_000]).unwrap();
    let appender = std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(grow).unwrap();
        for _ in 0..200 {
            let _ = f.write_all(&[2u8; 65536]);
        }
    });
    assert_eq!(read_all(&c, p(d, "grow"), Some(100_000)).await.unwrap().len(), 100_000);
    appender.join().unwrap();
    // Acting as another user gets that user's permissions (root only).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::fs::write(d.join("private"), "p").unwrap();
        std::fs::set_permissions(d.join("private"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = c
            .file_read(FileRead { path: p(d, "private"), offset: 0, limit: None, user: Some("65534".into()), beneath: None })
            .await
            .err()
            .unwrap();
        assert_eq!((e.code(), e.status()), ("permission_denied", 403));
        assert_eq!(read_all(&c, p(d, "private"), None).await.unwrap(), b"p", "other threads keep root's identity");
    }
}

/// The symlink attack of the file routes with a `mount_path` scope (the
/// bug fixed by `beneath`): links planted in the mount that lead out of it,
/// absolutely or by `..`, are refused by every request confined beneath
/// it; the same path unconfined (files anywhere) still follows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confined_requests_never_follow_a_symlink_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mnt, outside) = (d.join("mnt"), d.join("outside"));
    std::fs::create_dir_all(mnt.join("sub")).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "s").unwrap();
    std::fs::write(mnt.join("sub/f"), "inside").unwrap();
    std::os::unix::fs::symlink(&outside, mnt.join("etc")).unwrap();
    std::os::unix::fs::symlink("../outside", mnt.join("up")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), mnt.join("leak")).unwrap();
    std::os::unix::fs::symlink("sub", mnt.join("ok")).unwrap();
    let c = client().await;
    let b = mnt.display().to_string();
    let under = |rel: &str| p(&mnt, rel);
    let bad = |e: crate::CoreError, what: &str| {
        assert_eq!((e.code(), e.status()), ("invalid_path", 400), "{what}: {e}");
    };
    let confined_read = |path: String| {
        let c = &c;
        let b = b.clone();
        async move {
            let mut r = c.file_read(FileRead { path, offset: 0, limit: None, user: None, beneath: Some(b) }).await?;
            let mut out = Vec::new();
            while let Some(chunk) = r.next_chunk().await? {
                out.extend(chunk);
            }
            crate::Result::Ok(out)
        }
    };
    let confined_write = |path: String| {
        let c = &c;
        let b = b.clone();
        async move {
            let mut w = c.file_write(FileWrite { path, mode: None, parents: true, user: None, beneath: Some(b) }).await?;
            w.send(b"pwned").await?;
            w.finish().await
        }
    };
    for rel in ["etc/secret", "up/secret", "leak", "etc/nope", "up/../up/secret"] {
        bad(confined_read(under(rel)).await.unwrap_err(), &format!("read {rel}"));
        bad(c.file_stat(&under(rel), Some(&b), None).await.unwrap_err(), &format!("stat {rel}"));
    }
    for rel in ["etc", "up"] {
        bad(c.file_list(&under(rel), Some(&b), None).await.unwrap_err(), &format!("list {rel}"));
    }
    for rel in ["etc/x", "up/x", "up/new/x", "etc/secret"] {
        bad(confined_write(under(rel)).await.unwrap_err(), &format!("write {rel}"));
    }
    for rel in ["etc/secret", "up/secret"] {
        bad(c.file_remove(&under(rel), Some(&b), false, None).await.unwrap_err(), &format!("remove {rel}"));
    }
    bad(c.file_stat(&p(d, "outside/secret"), Some(&b), None).await.unwrap_err(), "a path not under beneath");
    // Messages name paths relative to the mount, as the host route does.
    let e = c.file_list(&under("sub/f"), Some(&b), None).await.unwrap_err();
    assert!(e.to_string().contains("'sub/f' or one of its parents is not a directory"), "{e}");
    let e = c.file_stat(&under("etc/secret"), Some(&b), None).await.unwrap_err();
    assert!(e.to_string().contains("'etc/secret' resolves outside"), "{e}");
    assert_eq!(std::fs::read_to_string(outside.join("secret")).unwrap(), "s");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "nothing was created outside the mount");

    // Inside the mount everything works, links that stay inside included.
    assert_eq!(confined_read(under("ok/f")).await.unwrap(), b"inside");
    assert_eq!(c.file_list(&b, Some(&b), None).await.unwrap().len(), 5);
    assert_eq!(confined_write(under("new/dir/x")).await.unwrap(), 5);
    assert_eq!(c.file_stat(&under("new/dir/x"), Some(&b), None).await.unwrap().size, 5);
    c.file_remove(&under("new"), Some(&b), true, None).await.unwrap();
    assert!(!mnt.join("new").exists());
    // The link itself may go or be replaced; its target stays.
    assert_eq!(confined_write(under("leak")).await.unwrap(), 5);
    assert!(!std::fs::symlink_metadata(mnt.join("leak")).unwrap().file_type().is_symlink());
    c.file_remove(&under("etc"), Some(&b), true, None).await.unwrap();
    assert_eq!(std::fs::read_to_string(outside.join("secret")).unwrap(), "s");
    // Files anywhere in the sandbox (no scope) follow links as before.
    assert_eq!(read_all(&c, under("up/secret"), None).await.unwrap(), b"s");
}

/// An agent from before file operations: its hello announces no features,
/// and the host refuses clearly instead of sending what it cannot decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_agent_gets_a_clear_error() {
    use heyvm_protocol::mux::{self, Hello};
    use std::io::{Read, Write};
    let (host, mut agent) = UnixStream::pair().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let _ = agent.read(&mut buf);
        agent.write_all(&mux::hello_frame(&Hello { version: heyvm_protocol::PROTOCOL_VERSION, pid: 9, ..Hello::default() })).unwrap();
        while agent.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
    });
    host.set_nonblocking(true).unwrap();
    let t = tokio::net::UnixStream::from_std(host).unwrap();
    let c = AgentClient::new(Arc::clone(&AgentSession::handshake(Box::new(t), Duration::from_secs(5)).await.unwrap()));
    let e = c.file_stat("/etc/hosts", None, None).await.unwrap_err();
    assert_eq!((e.code(), e.status()), ("agent_outdated", 409));
    assert!(e.to_string().contains("restart the sandbox"), "{e}");
}

/// An agent with file operations but from before `beneath` would ignore
/// it and follow the links out: the host refuses to send it a confined
/// request (an unconfined one still goes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_beneath_gets_no_confined_request() {
    use heyvm_protocol::mux::{self, Hello};
    use std::io::{Read, Write};
    let (host, mut agent) = UnixStream::pair().unwrap();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<usize>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let _ = agent.read(&mut buf);
        let hello = Hello { version: heyvm_protocol::PROTOCOL_VERSION, pid: 9, features: vec!["files".into()], ..Hello::default() };
        agent.write_all(&mux::hello_frame(&hello)).unwrap();
        while let Ok(n) = agent.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = sent_tx.send(n);
        }
    });
    host.set_nonblocking(true).unwrap();
    let t = tokio::net::UnixStream::from_std(host).unwrap();
    let c = AgentClient::new(Arc::clone(&AgentSession::handshake(Box::new(t), Duration::from_secs(5)).await.unwrap()));
    let e = c.file_stat("/workspace/etc/passwd", Some("/workspace"), None).await.unwrap_err();
    assert_eq!((e.code(), e.status()), ("agent_outdated", 409));
    assert!(e.to_string().contains("inside a mount"), "{e}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sent_rx.try_recv().is_err(), "nothing was sent to the agent");
}

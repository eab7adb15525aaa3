//! Drives a heyvm daemon with the existing product's Rust client, heyo-sdk
//! 0.1.15, exactly as a program written for it would: `Sandbox::create`,
//! `Commands::run`, `Files::read/write`, `Sandbox::shell`, `bind_port`, list/get, stop/start/restart,
//! `Daemon::{create, list, list_inactive, logs, system_usage}` and kill.
//!
//! `HEYVM_API_URL` names the daemon (e.g. `http://127.0.0.1:3000`); the SDK
//! sends `HEYO_API_KEY`, when set, as its bearer token (a daemon with
//! `JWT_SECRET`). Exits non-zero on the first failed check.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use heyo_sdk::{
    CommandRunOptions, Daemon, DaemonCreateRequest, FileOptions, HeyoClient, HeyoClientOptions, HeyoError, LogsQuery, Sandbox,
    SandboxCreateOptions, SandboxSize, SandboxStatus, ShellOptions,
};
use futures_util::StreamExt;

type Res<T> = Result<T, String>;

fn check(cond: bool, what: impl AsRef<str>) -> Res<()> {
    if cond {
        Ok(())
    } else {
        Err(format!("check failed: {}", what.as_ref()))
    }
}

fn sdk<T>(r: Result<T, HeyoError>, what: &str) -> Res<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

struct Steps {
    t0: Instant,
}

impl Steps {
    fn ok(&self, what: &str) {
        println!("ok   {:>6.2}s  {what}", self.t0.elapsed().as_secs_f64());
    }
}

#[tokio::main]
async fn main() {
    let url = std::env::var("HEYVM_API_URL").unwrap_or_else(|_| {
        eprintln!("set HEYVM_API_URL to the daemon's base URL");
        std::process::exit(2)
    });
    match run(&url).await {
        Ok(()) => println!("heyo-sdk check: all passed"),
        Err(e) => {
            eprintln!("FAIL {e}");
            std::process::exit(1);
        }
    }
}

async fn run(url: &str) -> Res<()> {
    let st = Steps { t0: Instant::now() };
    // api_key None: the SDK falls back to $HEYO_API_KEY.
    let opts = HeyoClientOptions { base_url: Some(url.to_string()), api_key: None, timeout: Some(Duration::from_secs(60)) };
    let client = sdk(HeyoClient::new(opts.clone()), "client")?;
    if client.api_key().is_some() {
        // Some(""): no bearer, and no fallback to $HEYO_API_KEY either.
        let anonymous = sdk(HeyoClient::new(HeyoClientOptions { api_key: Some(String::new()), ..opts.clone() }), "anonymous client")?;
        match Daemon::new(anonymous).list().await {
            Err(HeyoError::Authentication) => st.ok("without a token: Authentication error (401)"),
            other => return Err(format!("an unauthenticated call should fail with 401, got {:?}", other.map(|l| l.len()))),
        }
    }
    let daemon = Daemon::new(client.clone());
    let suffix = std::process::id();
    let name = format!("sdk-check-{suffix}");

    // Sandbox::create sends the cloud dialect with the SDK's defaults
    // (region US, image ubuntu:24.04, size_class, open_ports) and waits for it.
    let env = HashMap::from([("GREETING".to_string(), "hello from env_vars".to_string())]);
    let sb = sdk(
        Sandbox::create(
            SandboxCreateOptions {
                name: Some(name.clone()),
                size_class: Some(SandboxSize::Micro),
                env_vars: Some(env),
                ttl_seconds: Some(3600),
                ..Default::default()
            },
            opts.clone(),
        )
        .await,
        "Sandbox::create",
    )?;
    let id = sb.sandbox_id().to_string();
    st.ok(&format!("Sandbox::create -> {id}"));

    let info = sdk(sb.info().await, "info")?;
    check(info.status == SandboxStatus::Running, format!("running after create, got {:?}", info.status))?;
    check(info.name == name, "name round-trips")?;
    check(info.size_class.as_deref() == Some("micro"), "size_class micro")?;
    check(info.ttl_seconds == Some(3600), "ttl_seconds")?;
    check(info.memory == Some(512 * 1024 * 1024), format!("memory limit bytes, got {:?}", info.memory))?;
    check(!info.status_changed_at.is_empty() && info.created_at.as_deref().is_some_and(|c| c.ends_with('Z')), "timestamps are RFC 3339")?;
    check(info.urls.is_empty(), "urls is an empty array")?;
    st.ok("info(): GET /deployed-sandboxes/:id");

    // Commands.
    let cmds = sb.commands();
    let out = sdk(cmds.run("echo \"$GREETING\"; echo to-stderr >&2; exit 3", CommandRunOptions::default()).await, "run")?;
    check(out.stdout == "hello from env_vars\n", format!("stdout {:?}", out.stdout))?;
    check(out.stderr == "to-stderr\n", format!("stderr {:?}", out.stderr))?;
    check(out.exit_code == 3, format!("exit_code {}", out.exit_code))?;
    check(out.output.contains("hello from env_vars") && out.output.contains("to-stderr"), "output merges both")?;
    st.ok("commands().run: stdout, stderr, output, exit code");

    let run_opts = CommandRunOptions {
        cwd: Some("/tmp".into()),
        env: Some(HashMap::from([("EXTRA".to_string(), "x1".to_string())])),
        timeout: Some(Duration::from_secs(30)),
    };
    let out = sdk(cmds.run("pwd; echo $EXTRA", run_opts).await, "run with cwd/env")?;
    check(out.stdout == "/tmp\nx1\n", format!("cwd/env stdout {:?}", out.stdout))?;
    let out = sdk(cmds.run("pwd", CommandRunOptions::default()).await, "run pwd")?;
    check(out.stdout.trim() == "/workspace", format!("default cwd {:?}", out.stdout))?;
    st.ok("commands().run: cwd, env, default cwd /workspace");

    // Files (default mount /workspace), text and binary.
    let files = sb.files();
    sdk(files.write("notes/hello.txt", "written by heyo-sdk\n", FileOptions::default()).await, "files.write")?;
    let text = sdk(files.read_text("notes/hello.txt", FileOptions::default()).await, "files.read_text")?;
    check(text == "written by heyo-sdk\n", format!("read back {text:?}"))?;
    let seen = sdk(cmds.run("cat /workspace/notes/hello.txt", CommandRunOptions::default()).await, "cat")?;
    check(seen.stdout == text, "the sandbox sees the written file")?;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let ws = FileOptions { mount_path: Some("/workspace".into()) };
    sdk(files.write("bin/data", bytes.clone(), ws.clone()).await, "files.write bytes")?;
    check(sdk(files.read("bin/data", ws).await, "files.read bytes")? == bytes, "binary round-trip")?;
    sdk(cmds.run("echo made-inside > /workspace/inside.txt", CommandRunOptions::default()).await, "write inside")?;
    check(sdk(files.read_text("inside.txt", FileOptions::default()).await, "read inside")? == "made-inside\n", "file made in sandbox")?;
    match files.read("missing.txt", FileOptions::default()).await {
        Err(HeyoError::NotFound(_)) => {}
        other => return Err(format!("reading a missing file should be NotFound, got {other:?}")),
    }
    match files.read("../../etc/passwd", FileOptions::default()).await {
        Err(HeyoError::InvalidArgument(_)) | Err(HeyoError::NotFound(_)) => {}
        other => return Err(format!("an escaping path must be refused, got {:?}", other.map(|b| b.len()))),
    }
    st.ok("files(): write/read text and binary, missing file, escape refused");

    // Interactive shell (WebSocket PTY): run a line, then exit with a code.
    let shell = sdk(sb.shell(ShellOptions { reconnect: None, ..Default::default() }).await, "shell")?;
    sdk(shell.write(b"echo shell-$((6*7))\n").await, "shell write")?;
    let mut output = shell.output();
    let mut seen = String::new();
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = output.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("shell-42") {
                return true;
            }
        }
        false
    })
    .await;
    check(got == Ok(true), format!("shell output has shell-42: {seen:?}"))?;
    sdk(shell.write(b"exit 5\n").await, "shell write exit")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while shell.exit_code().await.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check(shell.exit_code().await == Some(5), format!("shell exit code {:?}", shell.exit_code().await))?;
    sdk(shell.close().await, "shell close")?;
    st.ok("shell(): PTY output and exit code over the WebSocket");

    // Listing.
    let all = sdk(Sandbox::list(opts.clone()).await, "Sandbox::list")?;
    check(all.iter().any(|s| s.id == id), "Sandbox::list includes the sandbox")?;
    let found = sdk(Sandbox::find_by_name(&name, opts.clone()).await, "find_by_name")?;
    check(found.is_some_and(|s| s.id == id), "find_by_name")?;
    check(sdk(Sandbox::find_by_name("no-such-sandbox-xyz", opts.clone()).await, "find_by_name none")?.is_none(), "find_by_name none")?;
    let listed = sdk(daemon.list().await, "Daemon::list")?;
    check(listed.iter().any(|s| s.id == id && s.backend_type.is_some()), "Daemon::list with backend_type")?;
    let images = sdk(Sandbox::list_public_images(None, opts.clone()).await, "list_public_images")?;
    check(images.iter().any(|i| i.id == "host"), "list_public_images has the host image")?;
    match sb.checkpoint().await {
        Err(HeyoError::Api { status: 501, .. }) => {}
        other => return Err(format!("checkpoint should be 501 unsupported, got {other:?}")),
    }
    st.ok("Sandbox::list, find_by_name, Daemon::list, list_public_images, checkpoint refused");

    // Usage: host numbers and our sandbox's pids.
    let usage = sdk(daemon.system_usage().await, "system_usage")?;
    check(usage.available, "usage available")?;
    let snap = usage.snapshot.ok_or("usage has no snapshot")?;
    check(snap.host.cpu_count > 0 && snap.host.memory_total_bytes > 0, "host cpu count and memory")?;
    let mine = snap.sandboxes.iter().find(|s| s.sandbox_id == id).ok_or("usage lists the sandbox")?;
    check(!mine.pids.is_empty() && mine.memory_bytes > 0, format!("sandbox pids {:?} memory {}", mine.pids, mine.memory_bytes))?;
    st.ok(&format!("Daemon::system_usage: host {} cpus, sandbox pids {:?}", snap.host.cpu_count, mine.pids));

    // Stop, inactive listing, exec refused, start, files persist.
    sdk(sb.stop().await, "stop")?;
    check(sdk(sb.get().await, "get")?.status == SandboxStatus::Stopped, "stopped after stop()")?;
    sdk(sb.stop().await, "second stop")?;
    let mut inactive = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = sdk(daemon.list_inactive(1, cursor.as_deref()).await, "list_inactive")?;
        inactive.extend(page.sandboxes.into_iter().map(|s| (s.id, s.status)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    check(inactive.iter().any(|(i, s)| *i == id && *s == SandboxStatus::Stopped), "list_inactive (paged by 1) includes it")?;
    match cmds.run("true", CommandRunOptions::default()).await {
        Err(HeyoError::Api { status: 409, .. }) => {}
        other => return Err(format!("exec on a stopped sandbox should be 409, got {:?}", other.map(|o| o.exit_code))),
    }
    sdk(sb.start().await, "start")?;
    check(sdk(sb.get().await, "get")?.status == SandboxStatus::Running, "running after start()")?;
    let out = sdk(cmds.run("cat /workspace/notes/hello.txt", CommandRunOptions::default()).await, "cat after restart")?;
    check(out.stdout == "written by heyo-sdk\n", "files persist across stop/start")?;
    st.ok("stop (twice), list_inactive, exec refused while stopped, start, files persist");

    sdk(sb.restart().await, "restart")?;
    check(sdk(sb.get().await, "get")?.status == SandboxStatus::Running, "running after restart()")?;
    sdk(sb.set_ttl(7200).await, "set_ttl")?;
    check(sdk(sb.get().await, "get")?.ttl_seconds == Some(7200), "ttl updated")?;
    sdk(sb.resize(SandboxSize::Mini).await, "resize")?;
    check(sdk(sb.get().await, "get")?.size_class.as_deref() == Some("mini"), "resized")?;
    let bound = sdk(sb.bind_port(8080, None).await, "bind_port")?;
    check(bound.port == 8080 && bound.is_public && !bound.subdomain.is_empty() && !bound.url.is_empty(), format!("bind_port {bound:?}"))?;
    check(sdk(sb.get_host(8080).await, "get_host")? == Some(bound.url.clone()), "get_host finds the bound URL")?;
    let logs = sdk(daemon.logs(&id, &LogsQuery::default()).await, "Daemon::logs")?;
    check(logs.total > 0, "sandbox has log entries")?;
    st.ok("restart, set_ttl, resize, bind_port, get_host, Daemon::logs");

    // Daemon::create (the controller's create body) and Daemon::sandbox.
    let created = sdk(
        daemon
            .create(&DaemonCreateRequest { name: format!("sdk-check-d-{suffix}"), size_class: Some("micro".into()), ..Default::default() })
            .await,
        "Daemon::create",
    )?;
    let other = daemon.sandbox(&created.id);
    sdk(other.wait_for_ready(Duration::from_secs(60)).await, "wait_for_ready")?;
    let out = sdk(other.commands().run("echo second", CommandRunOptions::default()).await, "run on second")?;
    check(out.stdout == "second\n", "second sandbox runs commands")?;
    st.ok(&format!("Daemon::create -> {}", created.id));

    // Kill both; a second kill (404) is still Ok.
    sdk(other.kill().await, "kill second")?;
    sdk(sb.kill().await, "kill")?;
    match sb.get().await {
        Err(HeyoError::NotFound(_)) => {}
        other => return Err(format!("get after kill should be NotFound, got {:?}", other.map(|i| i.status))),
    }
    sdk(sb.kill().await, "second kill")?;
    let left = sdk(daemon.list().await, "Daemon::list")?;
    check(!left.iter().any(|s| s.id == id || s.id == created.id), "both gone from the listing")?;
    st.ok("kill, NotFound after kill, kill again is Ok");
    Ok(())
}

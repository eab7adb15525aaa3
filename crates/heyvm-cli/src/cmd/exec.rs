use std::io::{Read, Write};

use base64::Engine;
use std::process::ExitCode;

use heyvm_client::Client;
use heyvm_types::ExecRequest;
use serde::Serialize;

use super::{parse_duration, parse_env};
use crate::args::ExecArgs;
use crate::output::{self, Format};

/// The CLI's JSON shape for exec (the seed's `{exit_code, stdout, stderr}`
/// plus the flags that explain an abnormal end).
#[derive(Serialize)]
struct ExecJson<'a> {
    exit_code: i32,
    stdout: &'a str,
    stderr: &'a str,
    timed_out: bool,
    oom_killed: bool,
    duration_ms: u64,
}

pub fn run(c: &Client, f: Format, a: ExecArgs) -> anyhow::Result<ExitCode> {
    let mut argv = a.argv.into_iter();
    let command = argv.next().unwrap_or_default();
    let (stdin, stdin_encoding) = if a.no_stdin { (None, None) } else { piped_stdin()? };
    let req = ExecRequest {
        command,
        args: argv.collect(),
        cwd: a.cwd,
        env: Some(parse_env(&a.env)?).filter(|e| !e.is_empty()),
        timeout_secs: a.timeout.as_deref().map(parse_duration).transpose()?,
        stdin,
        stdin_encoding,
        user: a.user,
        ..Default::default()
    };
    if a.stream {
        return stream(c, f, &a.id, &req);
    }
    let r = c.execute(&a.id, &req)?;
    match f {
        Format::Json => output::json(&ExecJson {
            exit_code: r.exit_code,
            stdout: &r.stdout,
            stderr: &r.stderr,
            timed_out: r.timed_out,
            oom_killed: r.oom_killed,
            duration_ms: r.duration_ms,
        }),
        Format::Text => {
            std::io::stdout().write_all(r.stdout.as_bytes())?;
            std::io::stderr().write_all(r.stderr.as_bytes())?;
        }
    }
    Ok(ExitCode::from(r.exit_code.clamp(0, 255) as u8))
}

/// This process's stdin when it is a pipe or a regular file (never a
/// terminal: an interactive exec would wait for input nobody types), as
/// `(stdin, stdin_encoding)`: text as is, anything else as base64.
fn piped_stdin() -> anyhow::Result<(Option<String>, Option<String>)> {
    // SAFETY: fstat writes into the zeroed struct we own; fd 0 may be closed,
    // which fstat reports as an error.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(0, &mut st) } != 0 {
        return Ok((None, None));
    }
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFIFO && kind != libc::S_IFREG {
        return Ok((None, None));
    }
    let mut data = Vec::new();
    std::io::stdin().lock().read_to_end(&mut data)?;
    Ok(match String::from_utf8(data) {
        Ok(text) => (Some(text), None),
        Err(e) => (Some(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())), Some("base64".into())),
    })
}

/// Prints output as it arrives. JSON mode prints one JSON object per event
/// (`{"event": "stdout", "data": "…"}`), a stream a program can follow.
fn stream(c: &Client, f: Format, id: &str, req: &ExecRequest) -> anyhow::Result<ExitCode> {
    let mut code = 1;
    let mut failure = None;
    c.exec_stream(id, req, |name, data| {
        if f == Format::Json {
            println!("{}", serde_json::json!({ "event": name, "data": data }));
        }
        match name {
            "stdout" if f == Format::Text => {
                let _ = std::io::stdout().write_all(data["data"].as_str().unwrap_or("").as_bytes());
                let _ = std::io::stdout().flush();
            }
            "stderr" if f == Format::Text => {
                let _ = std::io::stderr().write_all(data["data"].as_str().unwrap_or("").as_bytes());
            }
            "exit" => code = data["exit_code"].as_i64().unwrap_or(1) as i32,
            "error" => failure = Some(data["message"].as_str().unwrap_or("exec failed").to_string()),
            _ => {}
        }
        true
    })?;
    if let Some(msg) = failure {
        anyhow::bail!(msg);
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

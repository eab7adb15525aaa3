use std::io::Write;
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
    let req = ExecRequest {
        command,
        args: argv.collect(),
        cwd: a.cwd,
        env: Some(parse_env(&a.env)?).filter(|e| !e.is_empty()),
        timeout_secs: a.timeout.as_deref().map(parse_duration).transpose()?,
    };
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

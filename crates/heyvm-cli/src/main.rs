//! `heyvm`: the command-line interface, the API daemon (`--api`) and the
//! hidden helper roles the same binary plays (`__agent` inside sandboxes,
//! `__sandbox_owner` between daemon and bwrap).

mod args;
mod cmd;
mod credentials;
mod daemon;
mod localtime;
mod malloc_tuning;
mod output;
mod tui;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

fn main() -> ExitCode {
    malloc_tuning::apply();
    let cli = Cli::parse_from(hoist_trailing_format(std::env::args().collect()));
    let format = cli.format;
    if !cli.api
        && matches!(&cli.command, Some(c) if !matches!(c, Command::Agent(_) | Command::SandboxOwner { .. } | Command::SandboxOwnerParked))
    {
        die_quietly_on_closed_pipe();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            output::print_error(format, &e);
            ExitCode::from(1)
        }
    }
}

/// `heyvm list | head -1` must end quietly when the reader goes away, like
/// any Unix filter. Rust ignores SIGPIPE, which turns every later print into
/// a panic ("failed printing to stdout"); the default action instead ends
/// the process at the first write to the closed pipe. Only for client
/// commands: the daemon, the TUI (which serves the API) and the helper roles
/// keep ignoring it, because for them a vanished peer is an ordinary error.
/// Sockets are unaffected either way (std sends with MSG_NOSIGNAL).
fn die_quietly_on_closed_pipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler; called before any
    // thread is spawned.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Scripts written for heyvm append `--format json` to every call, even
/// after `exec … -- argv` or `exec ID cmd args`. A trailing `--format
/// json|text` after the command is therefore taken as heyvm's own flag, not
/// the command's.
fn hoist_trailing_format(mut args: Vec<String>) -> Vec<String> {
    // Where heyvm's flag goes: before `--`, else right after `exec`.
    let insert_at = match args.iter().position(|a| a == "--") {
        Some(sep) => sep,
        None => match exec_position(&args) {
            Some(i) => i + 1,
            None => return args,
        },
    };
    let n = args.len();
    let trailing = if n >= insert_at + 3 && args[n - 2] == "--format" && matches!(args[n - 1].as_str(), "json" | "text") {
        2
    } else if n >= insert_at + 2 && matches!(args[n - 1].as_str(), "--format=json" | "--format=text") {
        1
    } else {
        return args;
    };
    let flag: Vec<String> = args.drain(n - trailing..).collect();
    args.splice(insert_at..insert_at, flag);
    args
}

/// Index of the `exec` subcommand, if that is the command: the first word
/// that is neither a flag nor the value of a global flag.
fn exec_position(args: &[String]) -> Option<usize> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_str();
        if matches!(a, "--server" | "--token" | "--format" | "--port" | "--host") {
            i += 2;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            return (a == "exec").then_some(i);
        }
    }
    None
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if cli.api {
        return daemon::run_api(&cli);
    }
    let Some(command) = cli.command.clone() else {
        return tui::run(&cli);
    };
    match command {
        Command::Agent(a) => Ok(ExitCode::from(heyvm_agent::main_with_args(&a.args).clamp(0, 255) as u8)),
        Command::SandboxOwner { plan } => {
            heyvm_backends::owner::run(&plan)?;
            unreachable!("owner::run only returns on error")
        }
        Command::SandboxOwnerParked => {
            heyvm_backends::owner::run_parked()?;
            Ok(ExitCode::SUCCESS)
        }
        other => cmd::dispatch(&cli, other),
    }
}

#[cfg(test)]
mod tests {
    use super::hoist_trailing_format;

    fn v(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn trailing_format_after_argv_is_heyvms() {
        assert_eq!(hoist_trailing_format(v("heyvm exec x -- echo hi --format json")), v("heyvm exec x --format json -- echo hi"));
        assert_eq!(hoist_trailing_format(v("heyvm exec x -- ls --format=json")), v("heyvm exec x --format=json -- ls"));
        assert_eq!(hoist_trailing_format(v("heyvm exec x -- ls --format")), v("heyvm exec x -- ls --format"));
        assert_eq!(hoist_trailing_format(v("heyvm list --format json")), v("heyvm list --format json"));
        assert_eq!(hoist_trailing_format(v("heyvm exec x uname -a --format json")), v("heyvm exec --format json x uname -a"));
        assert_eq!(hoist_trailing_format(v("heyvm --server u exec x ls --format=text")), v("heyvm --server u exec --format=text x ls"));
        assert_eq!(hoist_trailing_format(v("heyvm get exec --format json")), v("heyvm get exec --format json"));
    }
}

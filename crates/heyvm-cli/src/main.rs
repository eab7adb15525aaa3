//! `heyvm`: the command-line interface, the API daemon (`--api`) and the
//! hidden helper roles the same binary plays (`__agent` inside sandboxes,
//! `__sandbox_owner` between daemon and bwrap).

mod args;
mod cmd;
mod daemon;
mod output;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.format;
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            output::print_error(format, &e);
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if cli.api {
        return daemon::run_api(&cli);
    }
    let Some(command) = cli.command.clone() else {
        // The TUI is a later milestone; until then point at the basics.
        eprintln!("heyvm: no command given. Try `heyvm --help`, `heyvm create`, or `heyvm --api`.");
        return Ok(ExitCode::from(2));
    };
    match command {
        Command::Agent(a) => {
            heyvm_agent::run(heyvm_agent::AgentConfig { socket: a.socket, log_file: a.log })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::SandboxOwner { plan } => {
            heyvm_backends::owner::run(&plan)?;
            unreachable!("owner::run only returns on error")
        }
        other => cmd::dispatch(&cli, other),
    }
}

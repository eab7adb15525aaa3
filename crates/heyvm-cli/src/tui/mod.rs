//! `heyvm` with no arguments: a terminal UI over the API listing sandboxes
//! (status, size, uptime, CPU, memory), with keys to start, stop, restart,
//! delete, open a shell and follow logs, refreshed every second.
//!
//! The API it talks to is `--server`/`HEYVM_API_URL` if set, else the local
//! daemon on 127.0.0.1:34099, started in the background (detached, like
//! every other command does) when nothing answers there. A separate daemon
//! rather than an in-process server means sandboxes and the API outlive the
//! TUI, and a shell opened from it is an ordinary `heyvm sh` client.

mod app;
mod view;
mod worker;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::CommandFactory;
use heyvm_client::Client;
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::DefaultTerminal;

use crate::args::Cli;
use app::{App, Effect};
use worker::{Msg, Poller};

pub fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        eprintln!("heyvm: no command given, and the terminal UI needs a terminal. Try `heyvm --help`, `heyvm create`, or `heyvm --api`.");
        return Ok(ExitCode::from(2));
    }
    let client = crate::daemon::client(cli)?;
    let mut term = ratatui::init();
    let result = event_loop(&mut term, cli, &client);
    ratatui::restore();
    result.map(|()| ExitCode::SUCCESS)
}

fn event_loop(term: &mut DefaultTerminal, cli: &Cli, client: &Client) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    let poller = Poller::spawn(client.clone(), tx.clone());
    let mut app = App::new();
    loop {
        while let Ok(msg) = rx.try_recv() {
            apply(&mut app, msg);
        }
        term.draw(|f| view::draw(f, &app, client.base_url()))?;
        if !event::poll(Duration::from_millis(100))? {
            continue;
        }
        let Event::Key(key) = event::read()? else { continue };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match app.on_key(key) {
            Effect::None => {}
            Effect::Quit => return Ok(()),
            Effect::Action(action, id, label) => worker::run_action(client, &poller, &tx, action, id, label),
            Effect::Follow(id) => poller.follow(id),
            Effect::Create(name) => worker::run_create(client, &poller, &tx, name),
            Effect::Shell(id) => {
                match open_shell(term, cli, client, &id) {
                    Ok(text) => app.info(text),
                    Err(e) => app.error(format!("shell: {e:#}")),
                }
                poller.refresh_now();
            }
        }
    }
}

fn apply(app: &mut App, msg: Msg) {
    match msg {
        Msg::List(Ok(list)) => app.set_list(list),
        Msg::List(Err(e)) => app.list_error = Some(e),
        Msg::Logs { id, result } if app.logs_of.as_deref() == Some(id.as_str()) => match result {
            Ok(logs) => app.logs = logs,
            Err(e) => app.error(format!("logs: {e}")),
        },
        Msg::Logs { .. } => {}
        Msg::Created { id, text } => {
            app.selected = Some(id);
            app.info(text);
        }
        Msg::Done { text, failed: true } => app.error(text),
        Msg::Done { text, failed: false } => app.info(text),
    }
}

/// Leaves the alternate screen, runs `heyvm sh <id>` against the same API
/// on the real terminal, and comes back.
fn open_shell(term: &mut DefaultTerminal, cli: &Cli, client: &Client, id: &str) -> anyhow::Result<String> {
    if Cli::command().find_subcommand("sh").is_none() {
        anyhow::bail!("interactive shells are not available in this build; use `heyvm exec {id} -- <command>`");
    }
    let mut stdout = std::io::stdout();
    terminal::disable_raw_mode()?;
    execute!(stdout, terminal::LeaveAlternateScreen, cursor::Show)?;
    let _ = writeln!(stdout, "heyvm: shell in {id}; exit it to return to the sandbox list");
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["sh", id]).env("HEYVM_API_URL", client.base_url());
    if let Some(t) = &cli.token {
        cmd.env("HEYVM_TOKEN", t);
    }
    let status = cmd.status();
    terminal::enable_raw_mode()?;
    execute!(stdout, terminal::EnterAlternateScreen, cursor::Hide)?;
    term.clear()?;
    let status = status?;
    Ok(match status.code() {
        Some(0) => format!("shell in {id} closed"),
        Some(c) => format!("shell in {id} exited with code {c}"),
        None => format!("shell in {id} ended by a signal"),
    })
}

//! One module per group of verbs.

mod api_keys;
mod archive;
mod bind;
mod checkpoint;
mod deploy;
mod docs;
mod exec;
mod files;
mod images;
mod images_build;
mod images_files;
mod logs;
mod mcp;
mod mounts;
mod remote;
mod sandbox;
mod shell;
mod token;
mod tty;
mod wait_for;
pub mod wt;

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::bail;

use crate::args::{Cli, Command};
use crate::daemon;

pub fn dispatch(cli: &Cli, command: Command) -> anyhow::Result<ExitCode> {
    let f = cli.format;
    // Credential commands work without any server.
    match command {
        Command::Token { action } => return token::token(f, action),
        Command::Login { token_arg } => return token::login(f, cli.token.clone(), token_arg),
        Command::Logout => return token::logout(f),
        Command::Completions { shell } => return docs::completions(shell),
        Command::Man { dir } => return docs::man(dir.as_deref()),
        // A URL is probed from here; no server needed.
        Command::WaitFor(ref a) if a.url.is_some() => return wait_for::url(f, a, crate::credentials::token(cli)),
        Command::Wt(a) => return wt::run(cli, a),
        // The source is this machine's daemon, the target --server.
        Command::Images(crate::args::ImagesCommand::Upload { ref reference, ref name }) => {
            return images_files::upload(cli, reference, name.clone())
        }
        Command::Connect { ref url, shell, ref opts } => {
            if !shell {
                bail!("`heyvm connect` needs --shell (interactive shell) — the only connection kind so far");
            }
            return shell::connect(f, crate::credentials::token(cli).as_deref(), url, shell_opts(opts)?);
        }
        _ => {}
    }
    let client = daemon::client(cli)?;
    match command {
        Command::Create(a) => sandbox::create(&client, f, a),
        Command::List { all, status } => sandbox::list(&client, f, all, status),
        Command::Get { id } => sandbox::get(&client, f, &id),
        Command::Start { id } => sandbox::action(&client, f, &id, "start"),
        Command::Stop { id } => sandbox::action(&client, f, &id, "stop"),
        Command::Restart { id } => sandbox::action(&client, f, &id, "restart"),
        Command::ForceStop { id } => sandbox::action(&client, f, &id, "force-stop"),
        Command::Checkpoint { action: Some(crate::args::CheckpointAction::Rm { id, name }), .. } => {
            checkpoint::remove(&client, f, &id, &name)
        }
        Command::Checkpoint { id, name, action: None } => checkpoint::create(&client, f, id.as_deref().unwrap_or_default(), name),
        Command::Checkpoints { id } => checkpoint::list(&client, f, &id),
        Command::Restore { id, name } => checkpoint::restore(&client, f, &id, name),
        Command::Fork { id, from, name } => checkpoint::fork(&client, f, &id, from, name),
        Command::Backends => checkpoint::backends(&client, f),
        Command::Rm { ids, yes } => sandbox::remove(&client, f, &ids, yes),
        Command::Update(a) => sandbox::update(&client, f, a),
        Command::Exec(a) => exec::run(&client, f, a),
        Command::ApiKeys { action } => api_keys::run(&client, f, action),
        Command::Mcp(a) => mcp::run(client, a),
        Command::Logs { id, source, level, limit, offset, follow, since, until } => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
            let since = since.map(|t| crate::localtime::parse(&t, now)).transpose()?;
            let until = until.map(|t| crate::localtime::parse(&t, now)).transpose()?;
            let q = logs::Query { source, level, limit, offset, since, until };
            if follow {
                logs::follow(&client, f, &id, q)
            } else {
                logs::show(&client, f, &id, q)
            }
        }
        Command::Cp { src, dst } => files::cp(&client, f, &src, &dst),
        Command::Files { id, path } => files::list(&client, f, &id, &path),
        Command::RmFile { id, path, recursive } => files::remove(&client, f, &id, &path, recursive),
        Command::Mounts { id, add, remove } => mounts::run(&client, f, &id, add, remove),
        Command::Sh(a) => shell::sh(&client, f, crate::credentials::token(cli).as_deref(), &a.id, shell_opts(&a.opts)?),
        Command::Deploy(a) => deploy::run(&client, f, a),
        Command::Images(c) => images::run(&client, f, c),
        Command::Bind { id, port, private } => bind::bind(&client, f, &id, port, private),
        Command::Unbind { id, subdomain } => bind::unbind(&client, f, &id, &subdomain),
        Command::WaitFor(a) => wait_for::port(&client, f, a),
        Command::Agent(_) | Command::SandboxOwner { .. } | Command::SandboxOwnerParked => unreachable!("handled in main"),
        Command::Token { .. }
        | Command::Login { .. }
        | Command::Logout
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Connect { .. }
        | Command::Wt(_) => unreachable!("handled above"),
    }
}

fn shell_opts(a: &crate::args::ShellOptArgs) -> anyhow::Result<shell::ShellOpts> {
    Ok(shell::ShellOpts { cwd: a.cwd.clone(), env: parse_env(&a.env)?, user: a.user.clone() })
}

/// Parses repeated `KEY=VALUE` flags.
pub fn parse_env(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else { bail!("--env expects KEY=VALUE, got '{p}'") };
        env.insert(k.to_string(), v.to_string());
    }
    Ok(env)
}

/// `30`, `30s`, `500ms`, `2m`, `1h` → seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v * mult),
        _ => bail!("invalid duration '{s}' (examples: 30s, 500ms, 2m, 1h)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), 30.0);
        assert_eq!(parse_duration("500ms").unwrap(), 0.5);
        assert_eq!(parse_duration("2m").unwrap(), 120.0);
        assert_eq!(parse_duration("7").unwrap(), 7.0);
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env(&["A=b=c".into()]).unwrap()["A"], "b=c");
        assert!(parse_env(&["nope".into()]).is_err());
    }
}

//! A Dockerfile parser: continuation lines, comments, shell and JSON (exec)
//! forms, stages (`FROM … AS name`), and the flags of `COPY`/`ADD`.
//! Variables are expanded later, while building, because their values
//! depend on `ARG`/`ENV` state ([`expand`]). Every error names its line.

use std::collections::BTreeMap;

use crate::error::{ImageError, Result};

/// A command in shell form (`RUN make`) or exec form (`RUN ["make"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Shell(String),
    Exec(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    pub srcs: Vec<String>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Run(Command),
    Copy(CopySpec),
    Add(CopySpec),
    Env(Vec<(String, String)>),
    Arg(String, Option<String>),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Label(Vec<(String, String)>),
    Cmd(Command),
    Entrypoint(Command),
    Shell(Vec<String>),
    StopSignal(String),
    Volume(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// The instruction as written (continuations joined), for cache keys.
    pub text: String,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub line: usize,
    /// The `FROM` image (unexpanded), `scratch`, or an earlier stage's name.
    pub base: String,
    pub name: Option<String>,
    pub instructions: Vec<Instruction>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dockerfile {
    /// `ARG`s before the first `FROM` (usable in `FROM` lines).
    pub global_args: Vec<(String, Option<String>)>,
    pub stages: Vec<Stage>,
}

fn err(line: usize, msg: impl std::fmt::Display) -> ImageError {
    ImageError::Build(format!("Dockerfile line {line}: {msg}"))
}

/// Logical lines: (first physical line number, text).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim();
        // Comments (and parser directives) may sit between continuation lines.
        if trimmed.starts_with('#') {
            continue;
        }
        if trimmed.is_empty() && cur.is_none() {
            continue;
        }
        let (body, cont) = match raw.trim_end().strip_suffix('\\') {
            Some(b) => (b.to_string(), true),
            None => (raw.to_string(), false),
        };
        let entry = cur.get_or_insert_with(|| (n, String::new()));
        if !entry.1.is_empty() {
            entry.1.push(' ');
        }
        entry.1.push_str(body.trim());
        if !cont {
            out.push(cur.take().unwrap_or_default());
        }
    }
    if let Some(c) = cur {
        out.push(c);
    }
    out
}

/// Splits shell-style words, honouring quotes and backslashes.
pub fn words(s: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                in_word = true;
                match chars.next() {
                    Some(n) => {
                        if quote == Some('"') && !matches!(n, '"' | '\\' | '$') {
                            cur.push('\\');
                        }
                        cur.push(n)
                    }
                    None => cur.push('\\'),
                }
            }
            (_, c) => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn command(args: &str) -> Command {
    if args.trim_start().starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(args.trim()) {
            return Command::Exec(v);
        }
    }
    Command::Shell(args.to_string())
}

/// `K=V K2="v 2"` or the legacy `K V with spaces`.
fn pairs(line: usize, args: &str, what: &str) -> Result<Vec<(String, String)>> {
    let first = args.split_whitespace().next().unwrap_or_default();
    if !first.contains('=') {
        let (k, v) = args.trim().split_once(char::is_whitespace).ok_or_else(|| err(line, format!("{what} needs KEY=VALUE")))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    words(args)
        .map_err(|e| err(line, e))?
        .into_iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| err(line, format!("{what} '{w}' is not KEY=VALUE")))
        })
        .collect()
}

fn copy_spec(line: usize, args: &str) -> Result<CopySpec> {
    let mut rest = args.trim();
    let mut spec = CopySpec { srcs: vec![], dest: String::new(), chown: None, chmod: None, from: None };
    while let Some(flag) = rest.strip_prefix("--") {
        let (f, tail) = flag.split_once(char::is_whitespace).unwrap_or((flag, ""));
        let (k, v) = f.split_once('=').unwrap_or((f, ""));
        match k {
            "chown" => spec.chown = Some(v.to_string()),
            "chmod" => spec.chmod = Some(v.to_string()),
            "from" => spec.from = Some(v.to_string()),
            "link" => {}
            other => return Err(err(line, format!("unknown flag --{other}"))),
        }
        rest = tail.trim_start();
    }
    let mut parts = match command(rest) {
        Command::Exec(v) => v,
        Command::Shell(s) => words(&s).map_err(|e| err(line, e))?,
    };
    if parts.len() < 2 {
        return Err(err(line, "needs at least one source and a destination"));
    }
    spec.dest = parts.pop().unwrap_or_default();
    spec.srcs = parts;
    Ok(spec)
}

pub fn parse(text: &str) -> Result<Dockerfile> {
    let mut df = Dockerfile::default();
    for (line, logical) in logical_lines(text) {
        let (kw, args) = logical.trim().split_once(char::is_whitespace).unwrap_or((logical.trim(), ""));
        let kw = kw.to_ascii_uppercase();
        let args = args.trim();
        if args.is_empty() {
            return Err(err(line, format!("{kw} needs arguments")));
        }
        if args.starts_with("<<") {
            return Err(err(line, "heredocs are not supported"));
        }
        if kw == "FROM" {
            let w = words(args).map_err(|e| err(line, e))?;
            let w: Vec<&str> = w.iter().map(String::as_str).filter(|a| !a.starts_with("--platform")).collect();
            let (base, name) = match w.as_slice() {
                [b] => (b.to_string(), None),
                [b, as_, n] if as_.eq_ignore_ascii_case("as") => (b.to_string(), Some(n.to_ascii_lowercase())),
                _ => return Err(err(line, "expected FROM IMAGE [AS NAME]")),
            };
            df.stages.push(Stage { line, base, name, instructions: vec![] });
            continue;
        }
        let op = match kw.as_str() {
            "RUN" => Op::Run(command(args)),
            "CMD" => Op::Cmd(command(args)),
            "ENTRYPOINT" => Op::Entrypoint(command(args)),
            "SHELL" => match command(args) {
                Command::Exec(v) if !v.is_empty() => Op::Shell(v),
                _ => return Err(err(line, "SHELL needs the JSON form, e.g. [\"/bin/bash\", \"-c\"]")),
            },
            "COPY" => Op::Copy(copy_spec(line, args)?),
            "ADD" => Op::Add(copy_spec(line, args)?),
            "ENV" => Op::Env(pairs(line, args, "ENV")?),
            "LABEL" => Op::Label(pairs(line, args, "LABEL")?),
            "MAINTAINER" => Op::Label(vec![("maintainer".into(), args.to_string())]),
            "ARG" => match args.split_once('=') {
                Some((k, v)) => Op::Arg(k.trim().to_string(), Some(words(v).map_err(|e| err(line, e))?.join(" "))),
                None => Op::Arg(args.to_string(), None),
            },
            "WORKDIR" => Op::Workdir(args.to_string()),
            "USER" => Op::User(args.to_string()),
            "EXPOSE" => Op::Expose(args.split_whitespace().map(String::from).collect()),
            "STOPSIGNAL" => Op::StopSignal(args.to_string()),
            "VOLUME" => Op::Volume(match command(args) {
                Command::Exec(v) => v,
                Command::Shell(s) => s.split_whitespace().map(String::from).collect(),
            }),
            other => return Err(err(line, format!("unknown or unsupported instruction {other}"))),
        };
        match (&op, df.stages.last_mut()) {
            (_, Some(stage)) => stage.instructions.push(Instruction { line, text: logical.trim().to_string(), op }),
            (Op::Arg(k, v), None) => df.global_args.push((k.clone(), v.clone())),
            (_, None) => return Err(err(line, format!("{kw} before the first FROM"))),
        }
    }
    if df.stages.is_empty() {
        return Err(ImageError::Build("Dockerfile has no FROM instruction".into()));
    }
    Ok(df)
}

/// Expands `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alt}`; `\$` is
/// a literal dollar. Unknown variables expand to nothing, as in Docker.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> std::result::Result<String, String> {
    let mut out = String::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            '\\' if b.get(i + 1) == Some(&'$') => {
                out.push('$');
                i += 2;
            }
            '$' if b.get(i + 1) == Some(&'{') => {
                let end = b[i..].iter().position(|&c| c == '}').ok_or("unterminated ${")? + i;
                let inner: String = b[i + 2..end].iter().collect();
                let val = if let Some((k, d)) = inner.split_once(":-") {
                    vars.get(k).filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| d.to_string())
                } else if let Some((k, alt)) = inner.split_once(":+") {
                    if vars.get(k).is_some_and(|v| !v.is_empty()) {
                        alt.to_string()
                    } else {
                        String::new()
                    }
                } else {
                    vars.get(&inner).cloned().unwrap_or_default()
                };
                out.push_str(&val);
                i = end + 1;
            }
            '$' if b.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic() || *c == '_') => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == '_') {
                    j += 1;
                }
                let k: String = b[start..j].iter().collect();
                out.push_str(vars.get(&k).map(String::as_str).unwrap_or(""));
                i = j;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

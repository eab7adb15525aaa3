//! `token create`, `login`, `logout`: credentials that need no server.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use heyvm_server::auth::{sign, Audience, Claims};
use serde_json::json;

use crate::args::TokenAction;
use crate::credentials::{self, StoredToken};
use crate::output::{self, Format};

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub fn token(f: Format, action: TokenAction) -> anyhow::Result<ExitCode> {
    match action {
        TokenAction::Create { sub, ttl, aud, secret } => {
            let Some(secret) = secret.filter(|s| !s.is_empty()) else {
                bail!("no signing secret: pass --secret or set JWT_SECRET (the same value the server runs with)")
            };
            if sub.trim().is_empty() {
                bail!("--sub must not be empty");
            }
            let ttl = match ttl.trim().strip_suffix('d').map(|d| d.trim().parse::<u32>()) {
                Some(Ok(days)) => i64::from(days) * 86_400,
                Some(Err(_)) => bail!("invalid --ttl '{ttl}' (examples: 30m, 1h, 7d)"),
                None => super::parse_duration(&ttl)?.round() as i64,
            };
            if ttl < 1 {
                bail!("--ttl must be at least 1s");
            }
            let iat = now();
            let claims = Claims { sub: Some(sub), exp: iat + ttl, iat: Some(iat), nbf: None, aud: aud.map(Audience::One) };
            let token = sign(secret.as_bytes(), &claims);
            match f {
                Format::Json => output::json(&json!({"token": token, "expires_at": claims.exp, "sub": claims.sub, "aud": claims.aud})),
                Format::Text => println!("{token}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The `exp` of a JWT, read without verifying (only for display).
fn jwt_exp(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let v: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    v.get("exp")?.as_i64()
}

pub fn login(f: Format, flag: Option<String>, arg: Option<String>) -> anyhow::Result<ExitCode> {
    let mut token = match (flag, arg) {
        (Some(_), Some(_)) => bail!("give the token either as --token or as an argument, not both"),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) if !std::io::stdin().is_terminal() => "-".into(),
        (None, None) => bail!("no token given: `heyvm login --token <JWT>` (mint one with `heyvm token create`)"),
    };
    if token == "-" {
        token.clear();
        std::io::stdin().read_to_string(&mut token).context("reading the token from stdin")?;
    }
    let token = token.trim().to_string();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!("the token is empty or contains whitespace");
    }
    let expires_at = jwt_exp(&token);
    if expires_at.is_some_and(|e| e <= now()) {
        bail!("this token has already expired");
    }
    let path = credentials::save(&StoredToken { access_token: token, refresh_token: None, expires_at })?;
    match f {
        Format::Json => output::json(&json!({"logged_in": true, "path": path, "expires_at": expires_at})),
        Format::Text => eprintln!("heyvm: token stored in {}", path.display()),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logout(f: Format) -> anyhow::Result<ExitCode> {
    let removed = credentials::remove()?;
    match f {
        Format::Json => output::json(&json!({"logged_out": true, "removed": removed})),
        Format::Text if removed => eprintln!("heyvm: stored token removed"),
        Format::Text => eprintln!("heyvm: no stored token"),
    }
    Ok(ExitCode::SUCCESS)
}

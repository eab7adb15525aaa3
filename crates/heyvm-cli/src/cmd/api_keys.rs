//! `heyvm api-keys create|list|revoke`.

use std::process::ExitCode;

use anyhow::bail;
use heyvm_client::Client;
use heyvm_types::CreateApiKeyRequest;

use crate::args::ApiKeyAction;
use crate::output::{self, Format};

/// `30m`, `1h`, `7d` → whole seconds.
fn ttl_secs(ttl: &str) -> anyhow::Result<u64> {
    let secs = match ttl.trim().strip_suffix('d').map(|d| d.trim().parse::<u64>()) {
        Some(Ok(days)) => days.saturating_mul(86_400),
        Some(Err(_)) => bail!("invalid --ttl '{ttl}' (examples: 30m, 1h, 7d)"),
        None => super::parse_duration(ttl)?.round() as u64,
    };
    if secs < 1 {
        bail!("--ttl must be at least 1s");
    }
    Ok(secs)
}

fn when(t: Option<i64>) -> String {
    t.map(|t| t.to_string()).unwrap_or_else(|| "never".into())
}

pub fn run(c: &Client, f: Format, action: ApiKeyAction) -> anyhow::Result<ExitCode> {
    match action {
        ApiKeyAction::Create { name, ttl } => {
            let ttl_seconds = ttl.as_deref().map(ttl_secs).transpose()?;
            let k = c.create_api_key(&CreateApiKeyRequest { name, ttl_seconds })?;
            match f {
                Format::Json => output::json(&k),
                Format::Text => {
                    println!("{}", k.key);
                    eprintln!("API key {} ({}) created; the key above is shown only once.", k.id, k.name);
                }
            }
        }
        ApiKeyAction::List => {
            let keys = c.list_api_keys()?;
            match f {
                Format::Json => output::json(&keys),
                Format::Text => {
                    let rows: Vec<Vec<String>> = keys
                        .iter()
                        .map(|k| vec![k.id.clone(), k.name.clone(), format!("{}…", k.prefix), k.created_at.to_string(), when(k.expires_at)])
                        .collect();
                    output::table(&["ID", "NAME", "PREFIX", "CREATED", "EXPIRES"], &rows);
                }
            }
        }
        ApiKeyAction::Revoke { id } => {
            let v = c.revoke_api_key(&id)?;
            match f {
                Format::Json => output::json(&v),
                Format::Text => println!("revoked {id}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ttls() {
        assert_eq!(super::ttl_secs("30d").unwrap(), 30 * 86_400);
        assert_eq!(super::ttl_secs("1h").unwrap(), 3600);
        assert!(super::ttl_secs("xd").is_err());
    }
}

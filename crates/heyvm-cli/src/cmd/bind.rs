//! `bind` / `unbind`: proxy endpoints for sandbox ports.

use std::process::ExitCode;

use heyvm_client::Client;
use heyvm_types::ProxyEndpoint;

use crate::output::{self, Format};

/// The seed's `bind` output (the endpoint without `sandbox_id`), in its order.
#[derive(serde::Serialize)]
struct Bound<'a> {
    subdomain: &'a str,
    hostname: &'a str,
    url: &'a str,
    port: u16,
    is_public: bool,
}

fn shown(e: &ProxyEndpoint) -> Bound<'_> {
    Bound { subdomain: &e.subdomain, hostname: &e.hostname, url: &e.url, port: e.port, is_public: e.is_public }
}

pub fn bind(c: &Client, f: Format, id: &str, port: u16, private: bool) -> anyhow::Result<ExitCode> {
    if port == 0 {
        anyhow::bail!("port must be between 1 and 65535");
    }
    let e = c.create_proxy(id, port, !private)?;
    match f {
        Format::Json => output::json(&shown(&e)),
        Format::Text => {
            println!("{} -> port {} of {id}", e.url, e.port);
            if !e.is_public {
                println!("(private: requests need Authorization: Bearer <token>)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn unbind(c: &Client, f: Format, id: &str, subdomain: &str) -> anyhow::Result<ExitCode> {
    let e = c.delete_proxy(id, subdomain)?;
    match f {
        Format::Json => output::json(&serde_json::json!({ "removed": true, "subdomain": e.subdomain, "port": e.port })),
        Format::Text => println!("removed {} (port {})", e.url, e.port),
    }
    Ok(ExitCode::SUCCESS)
}

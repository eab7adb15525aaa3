//! Talking to a remote heyvm server (`--server` or `$HEYO_CLOUD_URL`) with
//! a token: credentials are checked with a cheap authenticated GET before
//! anything is packed or streamed, so a missing token is a clear message
//! instead of a connection the server cut mid-upload ("Broken pipe").

use anyhow::bail;
use heyvm_client::{Client, ClientError};

use crate::args::Cli;

pub const NOT_AUTHENTICATED: &str = "Not authenticated: run heyvm login or set HEYO_ARCHIVE_TOKEN";

/// The remote server and a client for it with the CLI's token.
pub fn client(cli: &Cli, what: &str) -> anyhow::Result<(String, Client, bool)> {
    let explicit = cli.server.clone().filter(|s| !s.is_empty());
    let Some(server) = explicit.or_else(|| heyvm_core::config::string(heyvm_core::config::CLOUD_URL)) else {
        bail!("{what} needs a remote server: pass --server URL or set HEYO_CLOUD_URL");
    };
    let token = crate::credentials::token(cli);
    let have = token.is_some();
    Ok((server.clone(), Client::new(&server, token), have))
}

/// Asks the server something that needs a token.
pub fn check_credentials(c: &Client, have_token: bool) -> anyhow::Result<()> {
    match c.list_images() {
        Ok(_) => Ok(()),
        Err(ClientError::Api { status: 401, code, .. }) if have_token => {
            bail!("Not authenticated: the server refused the token ({code}); run heyvm login or set HEYO_ARCHIVE_TOKEN")
        }
        Err(ClientError::Api { status: 401, .. }) => bail!(NOT_AUTHENTICATED),
        Err(e) => Err(e.into()),
    }
}

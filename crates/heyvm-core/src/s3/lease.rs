//! The lease that makes a prefix one sandbox's at a time, across servers:
//! an object `.heyvm-leases/<prefix>/lease` holding `{holder, expires_at}`,
//! created with `If-None-Match: *` (the write fails with 412 when it
//! exists) and replaced with `If-Match: <etag>` (renewing our own, or
//! taking over one that expired), so two servers racing cannot both win.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::client::{expect_ok, Body};
use super::{S3Error, S3};

/// The key namespace of leases (never a valid user prefix).
pub const LEASES: &str = ".heyvm-leases";

#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    holder: String,
    expires_at: u64,
}

fn key(prefix: &str) -> String {
    format!("{LEASES}/{prefix}/lease")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Takes (or renews) the lease on `prefix` for `holder`, valid `ttl_secs`.
pub async fn acquire(s3: &S3, prefix: &str, holder: &str, ttl_secs: u64) -> Result<(), S3Error> {
    let body = serde_json::to_vec(&Lease { holder: holder.into(), expires_at: now() + ttl_secs }).unwrap_or_default();
    let k = key(prefix);
    let put = |cond: (&'static str, String)| {
        let body = body.clone();
        let k = k.clone();
        async move { s3.send(Method::PUT, &k, &[], &[cond], Body::Bytes(body)).await }
    };
    let created = put(("if-none-match", "*".into())).await?;
    if created.status().is_success() {
        return Ok(());
    }
    if !matches!(created.status(), StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT) {
        return expect_ok(created, "taking the lease").await.map(|_| ());
    }
    // It exists: ours (renew), expired (take over), or someone else's.
    let resp = s3.send(Method::GET, &k, &[], &[], Body::Empty).await?;
    if resp.status() == StatusCode::NOT_FOUND {
        // Released meanwhile: try once more from scratch.
        let again = put(("if-none-match", "*".into())).await?;
        return match again.status() {
            s if s.is_success() => Ok(()),
            _ => Err(S3Error::InUse { prefix: prefix.into(), holder: "another sandbox".into(), expires_at: 0 }),
        };
    }
    let resp = expect_ok(resp, "reading the lease").await?;
    let etag = resp.headers().get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let text = resp.bytes().await.map_err(|e| S3Error::Unreachable(e.to_string()))?;
    // An unreadable lease is treated as expired (a crashed writer), never as ours.
    let current = serde_json::from_slice::<Lease>(&text).unwrap_or(Lease { holder: String::new(), expires_at: 0 });
    if current.holder != holder && current.expires_at > now() {
        return Err(S3Error::InUse { prefix: prefix.into(), holder: current.holder, expires_at: current.expires_at });
    }
    let replaced = put(("if-match", etag)).await?;
    if replaced.status().is_success() {
        return Ok(());
    }
    if matches!(replaced.status(), StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT) {
        return Err(S3Error::InUse { prefix: prefix.into(), holder: "another sandbox (it took the lease first)".into(), expires_at: 0 });
    }
    expect_ok(replaced, "renewing the lease").await.map(|_| ())
}

/// Gives the lease up if `holder` still has it.
pub async fn release(s3: &S3, prefix: &str, holder: &str) -> Result<(), S3Error> {
    let k = key(prefix);
    let resp = s3.send(Method::GET, &k, &[], &[], Body::Empty).await?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Ok(());
    }
    let resp = expect_ok(resp, "reading the lease").await?;
    let text = resp.bytes().await.map_err(|e| S3Error::Unreachable(e.to_string()))?;
    match serde_json::from_slice::<Lease>(&text) {
        Ok(l) if l.holder == holder => s3.delete(&k).await,
        _ => Ok(()),
    }
}

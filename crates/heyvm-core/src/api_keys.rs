//! API keys: long random secrets (`hvk_` + 64 hex digits) that work as
//! Bearer tokens. Only a SHA-256 of each key is stored (a key has 256 bits
//! of entropy, so a fast hash is enough: there is nothing to brute-force),
//! in the `api_keys` table of the daemon's SQLite database.

use std::path::Path;

use heyvm_types::{ApiKeyCreated, ApiKeyInfo};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};
use crate::ids::random_hex;
use crate::record::now_secs;
use crate::sqlite::Db;

/// Every key starts with this, so a Bearer value is told apart from a JWT
/// at a glance (a JWT starts with `eyJ`).
pub const KEY_PREFIX: &str = "hvk_";
/// Longest accepted key name.
const MAX_NAME_LEN: usize = 100;
/// Longest accepted TTL: ten years.
const MAX_TTL_SECS: u64 = 10 * 365 * 86_400;

/// Why a presented key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRejection {
    Unknown,
    Revoked,
    Expired,
}

pub struct ApiKeyStore {
    db: Db,
}

fn hash(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl ApiKeyStore {
    /// Opens (and if needed creates) the table in the database at `db`.
    pub fn open(db: &Path) -> Result<Self> {
        let db = Db::open(
            db,
            "CREATE TABLE IF NOT EXISTS api_keys (
                 id TEXT PRIMARY KEY,
                 name TEXT NOT NULL,
                 hash TEXT NOT NULL UNIQUE,
                 prefix TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 expires_at INTEGER,
                 revoked_at INTEGER,
                 last_used_at INTEGER
             );",
        )?;
        Ok(ApiKeyStore { db })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock()
    }

    pub fn create(&self, name: &str, ttl_seconds: Option<u64>) -> Result<ApiKeyCreated> {
        let name = name.trim();
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(CoreError::invalid(format!("name must be 1 to {MAX_NAME_LEN} printable characters")));
        }
        if let Some(t) = ttl_seconds {
            if t == 0 || t > MAX_TTL_SECS {
                return Err(CoreError::invalid(format!("ttl_seconds must be between 1 and {MAX_TTL_SECS}")));
            }
        }
        let key = format!("{KEY_PREFIX}{}", random_hex(32));
        let id = format!("key-{}", random_hex(4));
        let created_at = now_secs();
        let expires_at = ttl_seconds.map(|t| created_at + t as i64);
        self.conn().execute(
            "INSERT INTO api_keys (id, name, hash, prefix, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, name, hash(&key), &key[..KEY_PREFIX.len() + 8], created_at, expires_at],
        )?;
        Ok(ApiKeyCreated { id, name: name.to_string(), key, created_at, expires_at })
    }

    /// Keys that are not revoked, oldest first (expired ones included, so
    /// they can be seen and revoked).
    pub fn list(&self) -> Result<Vec<ApiKeyInfo>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, name, prefix, created_at, expires_at, last_used_at FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ApiKeyInfo {
                id: r.get(0)?,
                name: r.get(1)?,
                prefix: r.get(2)?,
                created_at: r.get(3)?,
                expires_at: r.get(4)?,
                last_used_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Revokes a key by id; false if there is no such live key.
    pub fn revoke(&self, id: &str) -> Result<bool> {
        let n = self.conn().execute("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![id, now_secs()])?;
        Ok(n > 0)
    }

    /// Checks a presented key; on success returns its id and expiry.
    pub fn verify(&self, key: &str) -> std::result::Result<(String, Option<i64>), KeyRejection> {
        let conn = self.conn();
        let row: Option<(String, Option<i64>, Option<i64>)> = conn
            .query_row("SELECT id, expires_at, revoked_at FROM api_keys WHERE hash = ?1", params![hash(key)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(|_| KeyRejection::Unknown)?;
        let Some((id, expires_at, revoked_at)) = row else { return Err(KeyRejection::Unknown) };
        let now = now_secs();
        if revoked_at.is_some() {
            return Err(KeyRejection::Revoked);
        }
        if expires_at.is_some_and(|e| e <= now) {
            return Err(KeyRejection::Expired);
        }
        let _ = conn.execute("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1", params![id, now]);
        Ok((id, expires_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_verify_revoke_expire() {
        let dir = tempfile::tempdir().unwrap();
        let s = ApiKeyStore::open(&dir.path().join("k.db")).unwrap();
        let k = s.create("ci", None).unwrap();
        assert!(k.key.starts_with(KEY_PREFIX) && k.key.len() == 68);
        assert_eq!(s.verify(&k.key).unwrap().0, k.id);
        assert_eq!(s.verify("hvk_nope"), Err(KeyRejection::Unknown));
        let listed = s.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(k.key.starts_with(&listed[0].prefix));
        assert!(s.revoke(&k.id).unwrap());
        assert_eq!(s.verify(&k.key), Err(KeyRejection::Revoked));
        assert!(!s.revoke(&k.id).unwrap());
        assert!(s.list().unwrap().is_empty());
        // An expired key (expiry forced into the past).
        let e = s.create("short", Some(60)).unwrap();
        s.conn().execute("UPDATE api_keys SET expires_at = 1 WHERE id = ?1", params![e.id]).unwrap();
        assert_eq!(s.verify(&e.key), Err(KeyRejection::Expired));
        assert!(s.create("", None).is_err());
        assert!(s.create("x", Some(0)).is_err());
    }
}

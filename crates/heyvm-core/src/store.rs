//! SQLite-backed state. One row per sandbox: indexed identity columns plus
//! the full record as JSON, so adding a field needs no migration.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use heyvm_types::{ExecOperation, OperationStatus};

use crate::error::{CoreError, Result};
use crate::ids::looks_like_id;
use crate::record::SandboxRecord;
use crate::sqlite::Db;

pub struct Store {
    db: Db,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        // WAL keeps readers off writers' backs. In WAL mode NORMAL sync is
        // still durable across a daemon crash or kill -9 (the kernel has the
        // pages); only a power loss can drop the last transactions. FULL cost
        // ~3 ms of fsync per lifecycle write on the create path.
        let db = Db::open(
            path,
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS sandboxes (
                 id TEXT PRIMARY KEY,
                 name TEXT NOT NULL UNIQUE,
                 slug TEXT NOT NULL UNIQUE,
                 status TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 record TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS exec_operations (
                 sandbox_id TEXT NOT NULL,
                 operation_id TEXT NOT NULL,
                 status TEXT NOT NULL,
                 record TEXT NOT NULL,
                 PRIMARY KEY (sandbox_id, operation_id)
             );
             CREATE TABLE IF NOT EXISTS proxy_endpoints (
                 subdomain TEXT PRIMARY KEY,
                 sandbox_id TEXT NOT NULL,
                 record TEXT NOT NULL
             );",
        )?;
        Store::create_id_ranges_table(&db.lock())?;
        Ok(Store { db })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock()
    }

    pub fn insert(&self, r: &SandboxRecord) -> Result<()> {
        let json = serde_json::to_string(r).map_err(|e| CoreError::Corrupt(e.to_string()))?;
        let res = self.conn().execute(
            "INSERT INTO sandboxes (id, name, slug, status, created_at, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![r.id, r.name, r.slug, r.status.as_str(), r.created_at, json],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(CoreError::NameTaken(r.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn update(&self, r: &SandboxRecord) -> Result<()> {
        let json = serde_json::to_string(r).map_err(|e| CoreError::Corrupt(e.to_string()))?;
        let res = self.conn().execute(
            "UPDATE sandboxes SET name = ?2, slug = ?3, status = ?4, record = ?5 WHERE id = ?1",
            params![r.id, r.name, r.slug, r.status.as_str(), json],
        );
        match res {
            Ok(0) => Err(CoreError::NotFound(r.id.clone())),
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(CoreError::NameTaken(r.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn delete(&self, id: &str) -> Result<()> {
        let conn = self.conn();
        conn.execute("DELETE FROM sandboxes WHERE id = ?1", params![id])?;
        conn.execute("DELETE FROM exec_operations WHERE sandbox_id = ?1", params![id])?;
        Ok(())
    }

    pub fn insert_operation(&self, op: &ExecOperation) -> Result<()> {
        self.conn().execute(
            "INSERT INTO exec_operations (sandbox_id, operation_id, status, record) VALUES (?1, ?2, ?3, ?4)",
            params![op.sandbox_id, op.operation_id, status_str(op.status), encode(op)?],
        )?;
        Ok(())
    }

    pub fn update_operation(&self, op: &ExecOperation) -> Result<()> {
        self.conn().execute(
            "UPDATE exec_operations SET status = ?3, record = ?4 WHERE sandbox_id = ?1 AND operation_id = ?2",
            params![op.sandbox_id, op.operation_id, status_str(op.status), encode(op)?],
        )?;
        Ok(())
    }

    pub fn get_operation(&self, sandbox_id: &str, operation_id: &str) -> Result<Option<ExecOperation>> {
        let json: Option<String> = self
            .conn()
            .query_row(
                "SELECT record FROM exec_operations WHERE sandbox_id = ?1 AND operation_id = ?2",
                params![sandbox_id, operation_id],
                |row| row.get(0),
            )
            .optional()?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| CoreError::Corrupt(format!("corrupt operation record: {e}")))).transpose()
    }

    pub fn unfinished_operations(&self) -> Result<Vec<ExecOperation>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT record FROM exec_operations WHERE status IN ('queued', 'running')")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        let mut out = Vec::new();
        for j in rows {
            out.push(serde_json::from_str(&j?).map_err(|e| CoreError::Corrupt(format!("corrupt operation record: {e}")))?);
        }
        Ok(out)
    }

    /// Finds a sandbox by id, then slug, then name.
    pub fn resolve(&self, key: &str) -> Result<SandboxRecord> {
        let conn = self.conn();
        let column_order: &[&str] = if looks_like_id(key) { &["id"] } else { &["slug", "name", "id"] };
        for col in column_order {
            // Every exec resolves its sandbox: a cached statement is not
            // parsed and planned again each time.
            let mut stmt = conn.prepare_cached(&format!("SELECT record FROM sandboxes WHERE {col} = ?1"))?;
            let found: Option<String> = stmt.query_row(params![key], |row| row.get(0)).optional()?;
            if let Some(json) = found {
                return decode(&json);
            }
        }
        Err(CoreError::NotFound(key.to_string()))
    }

    /// How many sandboxes there are (what the sandbox quota counts).
    pub fn count(&self) -> Result<usize> {
        let n: i64 = self.conn().query_row("SELECT COUNT(*) FROM sandboxes", [], |row| row.get(0))?;
        Ok(n.max(0) as usize)
    }

    pub fn list(&self) -> Result<Vec<SandboxRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT record FROM sandboxes ORDER BY created_at, id")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            out.push(decode(&json?)?);
        }
        Ok(out)
    }
}

/// Proxy endpoints (see `manager::proxy`), one row per subdomain.
impl Store {
    /// Fails with `Conflict` when the subdomain is taken.
    pub fn insert_endpoint(&self, e: &crate::record::Endpoint) -> Result<()> {
        let res = self.conn().execute(
            "INSERT INTO proxy_endpoints (subdomain, sandbox_id, record) VALUES (?1, ?2, ?3)",
            params![e.subdomain, e.sandbox_id, encode(e)?],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(CoreError::Conflict(format!("subdomain '{}' is taken", e.subdomain)))
            }
            Err(err) => Err(err.into()),
        }
    }

    pub fn update_endpoint(&self, e: &crate::record::Endpoint) -> Result<()> {
        self.conn().execute("UPDATE proxy_endpoints SET record = ?2 WHERE subdomain = ?1", params![e.subdomain, encode(e)?])?;
        Ok(())
    }

    /// Whether a row was removed.
    pub fn delete_endpoint(&self, subdomain: &str) -> Result<bool> {
        Ok(self.conn().execute("DELETE FROM proxy_endpoints WHERE subdomain = ?1", params![subdomain])? > 0)
    }

    pub fn delete_endpoints_of(&self, sandbox_id: &str) -> Result<()> {
        self.conn().execute("DELETE FROM proxy_endpoints WHERE sandbox_id = ?1", params![sandbox_id])?;
        Ok(())
    }

    /// Every endpoint, or one sandbox's, oldest first.
    pub fn endpoints(&self, sandbox_id: Option<&str>) -> Result<Vec<crate::record::Endpoint>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT record FROM proxy_endpoints WHERE ?1 IS NULL OR sandbox_id = ?1 ORDER BY rowid")?;
        let rows = stmt.query_map(params![sandbox_id], |row| row.get::<_, String>(0))?;
        let mut out = Vec::new();
        for j in rows {
            out.push(serde_json::from_str(&j?).map_err(|e| CoreError::Corrupt(format!("corrupt endpoint record: {e}")))?);
        }
        Ok(out)
    }
}

fn status_str(s: OperationStatus) -> &'static str {
    match s {
        OperationStatus::Queued => "queued",
        OperationStatus::Running => "running",
        OperationStatus::Completed => "completed",
        OperationStatus::Failed => "failed",
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| CoreError::Corrupt(e.to_string()))
}

fn decode(json: &str) -> Result<SandboxRecord> {
    serde_json::from_str(json).map_err(|e| CoreError::Corrupt(format!("corrupt sandbox record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use heyvm_types::SandboxStatus;

    fn rec(id: &str, name: &str) -> SandboxRecord {
        SandboxRecord::with_defaults(id.into(), name)
    }

    #[test]
    fn resolves_by_id_slug_and_name_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        {
            let s = Store::open(&db).unwrap();
            s.insert(&rec("sb-00000001", "My_App")).unwrap();
            assert!(matches!(s.insert(&rec("sb-00000002", "My_App")), Err(CoreError::NameTaken(_))));
        }
        let s = Store::open(&db).unwrap();
        assert_eq!(s.resolve("sb-00000001").unwrap().name, "My_App");
        assert_eq!(s.resolve("my-app").unwrap().id, "sb-00000001");
        assert_eq!(s.resolve("My_App").unwrap().id, "sb-00000001");
        assert!(matches!(s.resolve("nope"), Err(CoreError::NotFound(_))));
        let mut r = s.resolve("my-app").unwrap();
        r.status = SandboxStatus::Running;
        s.update(&r).unwrap();
        assert_eq!(s.list().unwrap()[0].status, SandboxStatus::Running);
        s.delete("sb-00000001").unwrap();
        assert!(s.list().unwrap().is_empty());
    }
}

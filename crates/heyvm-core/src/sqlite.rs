//! One SQLite connection shared by a store's methods: opened (with its
//! directory) and given its schema in one place, so every store waits on
//! a busy database the same way and survives a panicked holder.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use crate::error::Result;

pub struct Db(Mutex<Connection>);

impl Db {
    /// Opens (creating the directory and file if needed) the database at
    /// `path`, waits up to 5 s for other writers, and runs `schema`
    /// (pragmas and `CREATE TABLE IF NOT EXISTS` statements).
    pub fn open(path: &Path, schema: &str) -> Result<Db> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA busy_timeout=5000;")?;
        conn.execute_batch(schema)?;
        Ok(Db(Mutex::new(conn)))
    }

    /// The connection. A panic while it was held leaves SQLite consistent
    /// (each statement is atomic), so a poisoned lock is taken over.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

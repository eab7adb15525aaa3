//! Agent computers (seed 000): per-agent computer settings and the
//! sandboxes bound to an agent (`scope: agent`) or to an agent's thread
//! (`scope: thread`), in the `agent_computers` and `thread_sandboxes`
//! tables of the daemon's SQLite database.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::record::now_secs;
use crate::sqlite::Db;

/// An agent's computer settings, as `PUT /api/agents/:id/computer` takes
/// them (camelCase on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputerConfig {
    pub enabled: bool,
    /// `tensorlake` (the default when omitted), `vercel`, `heyvm` or `custom`.
    pub provider: String,
    /// `ephemeral` (default), `persistent` (heyvm only) or `custom`.
    pub mode: String,
    /// `thread` (default) or `agent`.
    pub scope: String,
    /// micro, mini, small (default), medium, large, xlarge.
    pub size_class: String,
    /// Free-form provider settings (a custom endpoint's URL, …).
    #[serde(default)]
    pub settings: serde_json::Value,
}

impl ComputerConfig {
    /// An enabled, agent-scoped, persistent heyvm computer of size small:
    /// what an agent the server has not seen gets from `from-template`.
    pub fn heyvm_persistent() -> ComputerConfig {
        ComputerConfig {
            enabled: true,
            provider: "heyvm".into(),
            mode: "persistent".into(),
            scope: "agent".into(),
            size_class: "small".into(),
            settings: serde_json::json!({}),
        }
    }
}

/// The sandbox "row" of a thread or an agent (`thread_id` empty for the
/// agent-scoped one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundSandbox {
    pub agent_id: String,
    pub thread_id: String,
    pub sandbox_id: String,
    pub created_at: i64,
}

pub struct ComputerStore {
    db: Db,
}

impl ComputerStore {
    pub fn open(db: &Path) -> Result<Self> {
        let db = Db::open(
            db,
            "CREATE TABLE IF NOT EXISTS agent_computers (
                 agent_id TEXT PRIMARY KEY,
                 config TEXT NOT NULL,
                 updated_at INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS thread_sandboxes (
                 agent_id TEXT NOT NULL,
                 thread_id TEXT NOT NULL,
                 sandbox_id TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 PRIMARY KEY (agent_id, thread_id)
             );",
        )?;
        Ok(ComputerStore { db })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock()
    }

    pub fn config(&self, agent_id: &str) -> Result<Option<ComputerConfig>> {
        let json: Option<String> =
            self.conn().query_row("SELECT config FROM agent_computers WHERE agent_id = ?1", params![agent_id], |r| r.get(0)).optional()?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| CoreError::Corrupt(format!("corrupt computer config: {e}")))).transpose()
    }

    pub fn put_config(&self, agent_id: &str, c: &ComputerConfig) -> Result<()> {
        let json = serde_json::to_string(c).map_err(|e| CoreError::Corrupt(format!("encoding a computer config: {e}")))?;
        self.conn().execute(
            "INSERT INTO agent_computers (agent_id, config, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(agent_id) DO UPDATE SET config = ?2, updated_at = ?3",
            params![agent_id, json, now_secs()],
        )?;
        Ok(())
    }

    /// The sandbox bound to `(agent, thread)`; `thread` empty = the agent's own.
    pub fn sandbox(&self, agent_id: &str, thread_id: &str) -> Result<Option<BoundSandbox>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT sandbox_id, created_at FROM thread_sandboxes WHERE agent_id = ?1 AND thread_id = ?2",
                params![agent_id, thread_id],
                |r| {
                    Ok(BoundSandbox {
                        agent_id: agent_id.to_string(),
                        thread_id: thread_id.to_string(),
                        sandbox_id: r.get(0)?,
                        created_at: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn bind(&self, agent_id: &str, thread_id: &str, sandbox_id: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO thread_sandboxes (agent_id, thread_id, sandbox_id, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![agent_id, thread_id, sandbox_id, now_secs()],
        )?;
        Ok(())
    }

    /// Whether a row was removed.
    pub fn unbind(&self, agent_id: &str, thread_id: &str) -> Result<bool> {
        Ok(self.conn().execute("DELETE FROM thread_sandboxes WHERE agent_id = ?1 AND thread_id = ?2", params![agent_id, thread_id])? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_and_bindings_persist() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.db");
        let c = ComputerConfig::heyvm_persistent();
        {
            let s = ComputerStore::open(&db).unwrap();
            assert_eq!(s.config("agt_1").unwrap(), None);
            s.put_config("agt_1", &c).unwrap();
            s.bind("agt_1", "", "sb-00000001").unwrap();
            s.bind("agt_1", "t1", "sb-00000002").unwrap();
        }
        let s = ComputerStore::open(&db).unwrap();
        assert_eq!(s.config("agt_1").unwrap(), Some(c));
        assert_eq!(s.sandbox("agt_1", "").unwrap().unwrap().sandbox_id, "sb-00000001");
        assert!(s.unbind("agt_1", "t1").unwrap());
        assert!(!s.unbind("agt_1", "t1").unwrap());
        assert_eq!(s.sandbox("agt_1", "t1").unwrap(), None);
    }
}

//! Checkpoints, restore, fork and the backend list.

use heyvm_types::{BackendInfo, CheckpointInfo, CheckpointRequest, ForkRequest, RestoreRequest, RestoreResponse};

use crate::{encode, Client, Result};

impl Client {
    pub fn checkpoint(&self, id: &str, name: Option<String>) -> Result<CheckpointInfo> {
        self.send("POST", &format!("/sandboxes/{}/checkpoints", encode(id)), &CheckpointRequest { name })
    }

    pub fn checkpoints(&self, id: &str) -> Result<Vec<CheckpointInfo>> {
        self.get(&format!("/sandboxes/{}/checkpoints", encode(id)))
    }

    pub fn delete_checkpoint(&self, id: &str, name: &str) -> Result<serde_json::Value> {
        self.delete(&format!("/sandboxes/{}/checkpoints/{}", encode(id), encode(name)))
    }

    pub fn restore(&self, id: &str, name: Option<String>) -> Result<RestoreResponse> {
        self.send("POST", &format!("/sandboxes/{}/restore", encode(id)), &RestoreRequest { name })
    }

    pub fn fork(&self, id: &str, req: &ForkRequest) -> Result<RestoreResponse> {
        self.send("POST", &format!("/sandboxes/{}/fork", encode(id)), req)
    }

    pub fn backends(&self) -> Result<Vec<BackendInfo>> {
        self.get("/system/backends")
    }
}

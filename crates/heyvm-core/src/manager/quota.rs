//! Per-daemon quotas: at most `HEYVM_MAX_SANDBOXES` sandboxes recorded (in
//! any state), and at most `HEYVM_MAX_RUNNING_VMS` microVMs running or
//! starting at once (warm ones included: each holds its guest's RAM and,
//! under TCG, most of a core while it boots). A caller past either limit
//! gets 429 `quota_exceeded` before anything is made; stopped VMs do not
//! count against the running limit.
//!
//! Counting rows or running instances alone would let concurrent creates
//! all pass the check before any of them is recorded, so the checks also
//! count reservations. A create holds a [`CreateSlot`] from its check until
//! its row is inserted, and the insert happens under the quota's lock, so a
//! sandbox is never counted twice nor missed. A VM launch holds a
//! [`VmSlot`] under its sandbox id until it is over; the running count is
//! the union of registered VM instances and reserved ids, so a launch whose
//! instance is already registered is still counted once, and a second
//! reservation of the same id (a create's, then its start's) takes no
//! second place.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::SandboxManager;
use crate::backend::Backend;
use crate::error::{CoreError, Result};
use crate::record::SandboxRecord;

/// Host memory per sandbox for the default `HEYVM_MAX_SANDBOXES`. Most
/// sandboxes idle at about a MiB (bench section 7), but a stopped one still
/// holds its disk and a running one may use its whole memory limit; the
/// limit is a guard against runaway callers, not a density target.
const SANDBOX_BUDGET: u64 = 16 << 20;
/// Host memory per running VM for the default `HEYVM_MAX_RUNNING_VMS`: the
/// default size class's guest RAM (`small`, 2 GiB), which a busy guest
/// fills and QEMU does not give back.
const VM_BUDGET: u64 = 2 << 30;
/// Running VMs per host core, at most, for the same default.
const VMS_PER_CORE: usize = 4;

/// The host's memory (`MemTotal`), 2 GiB when it cannot be read.
pub(crate) fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
        })
        .map(|kb| kb * 1024)
        .unwrap_or(2 << 30)
}

/// The default `HEYVM_MAX_SANDBOXES`: one per 16 MiB of host memory,
/// between 256 and 4096 (1472 on a 23 GiB host).
pub fn default_max_sandboxes() -> usize {
    ((host_memory() / SANDBOX_BUDGET) as usize).clamp(256, 4096)
}

/// The default `HEYVM_MAX_RUNNING_VMS`: one per 2 GiB of host memory and
/// at most four per core, at least 2 (8 on a 2-core 23 GiB host).
pub fn default_max_running_vms() -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    ((host_memory() / VM_BUDGET) as usize).min(cores * VMS_PER_CORE).max(2)
}

/// Reservations not yet visible as rows or instances.
#[derive(Default)]
pub(crate) struct State {
    /// Creates between their check and their row's insert.
    creating: usize,
    /// Ids of VMs being launched, with how many reservations hold each.
    starting_vms: HashMap<String, usize>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A create's place among the sandboxes, from its check to its insert
/// ([`SandboxManager::insert_reserved`]); dropped unused, it is given back.
#[must_use]
pub(crate) struct CreateSlot(Option<Arc<Mutex<State>>>);

impl Drop for CreateSlot {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            lock(&s).creating -= 1;
        }
    }
}

/// A VM launch's place among the running VMs until it is over (by then the
/// instance is registered and counts by itself, or it failed).
#[must_use]
pub(crate) struct VmSlot(Option<(Arc<Mutex<State>>, String)>);

impl Drop for VmSlot {
    fn drop(&mut self) {
        let Some((s, id)) = self.0.take() else { return };
        let mut st = lock(&s);
        if let Some(n) = st.starting_vms.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                st.starting_vms.remove(&id);
            }
        }
    }
}

impl SandboxManager {
    /// Room for one more sandbox, or 429 `quota_exceeded`.
    pub(crate) fn reserve_sandbox(&self) -> Result<CreateSlot> {
        let max = self.config.max_sandboxes;
        let mut st = lock(&self.quota);
        let n = self.store.count()? + st.creating;
        if n >= max {
            return Err(CoreError::QuotaExceeded(format!(
                "this daemon holds {n} sandboxes, its limit (HEYVM_MAX_SANDBOXES={max}); delete one first"
            )));
        }
        st.creating += 1;
        Ok(CreateSlot(Some(self.quota.clone())))
    }

    /// Inserts the record of the create holding `slot`; under the quota's
    /// lock, so the row replaces the reservation in one step.
    pub(crate) fn insert_reserved(&self, mut slot: CreateSlot, rec: &SandboxRecord) -> Result<()> {
        let state = slot.0.take().expect("a slot is used once");
        let mut st = lock(&state);
        st.creating -= 1;
        self.store.insert(rec)
    }

    /// Room for sandbox `id` to run on `backend`: nothing to count unless
    /// it is a VM. With `evict_warm`, warm VMs are discarded to make room
    /// (they only wait for creates the pool could serve).
    pub(crate) async fn reserve_vm(&self, backend: &dyn Backend, id: &str, evict_warm: bool) -> Result<VmSlot> {
        if !backend.is_vm() {
            return Ok(VmSlot(None));
        }
        let max = self.config.max_running_vms;
        loop {
            let refused = {
                let mut st = lock(&self.quota);
                let running = self.running_vm_ids();
                let counted = running.contains(id) || st.starting_vms.contains_key(id);
                let n = running.len() + st.starting_vms.keys().filter(|k| !running.contains(*k)).count();
                if counted || n < max {
                    *st.starting_vms.entry(id.to_string()).or_default() += 1;
                    None
                } else {
                    Some(n)
                }
            };
            let Some(n) = refused else { return Ok(VmSlot(Some((self.quota.clone(), id.to_string())))) };
            match if evict_warm { self.take_warm_vm() } else { None } {
                Some(warm) => self.discard_warm_id(warm).await,
                None => {
                    return Err(CoreError::QuotaExceeded(format!(
                        "{n} VMs are running or starting on this daemon, its limit (HEYVM_MAX_RUNNING_VMS={max}); stop one first"
                    )))
                }
            }
        }
    }

    /// Ids of the VM instances this daemon holds.
    fn running_vm_ids(&self) -> HashSet<String> {
        self.instances.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|(_, r)| r.vm).map(|(id, _)| id.clone()).collect()
    }
}

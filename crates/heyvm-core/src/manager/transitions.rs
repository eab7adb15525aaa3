//! The lifecycle transition table, in one place: which actions each state
//! allows. Lifecycle verbs check it under the sandbox's lock; everything
//! that needs a running sandbox (exec, shells, port connections, agent
//! files) goes through [`SandboxManager::require_running`].

use heyvm_types::SandboxStatus;

use super::SandboxManager;
use crate::error::{CoreError, Result};
use crate::record::SandboxRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    ForceStop,
    Restart,
    /// Work inside the sandbox (`exec`, `open a shell`, …): needs it running.
    Use(&'static str),
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::ForceStop => "force-stop",
            Action::Restart => "restart",
            Action::Use(what) => what,
        }
    }

    /// The states this action is allowed in, and how to say so.
    fn allowed(self) -> (&'static [SandboxStatus], &'static str) {
        use SandboxStatus::*;
        match self {
            Action::Start => (&[Stopped, Failed], "stopped or failed"),
            Action::Stop => (&[Running], "running"),
            Action::ForceStop => (&[Running, Provisioning, Failed], "not already stopped"),
            Action::Restart => (&[Running, Stopped, Failed], "running, stopped or failed"),
            Action::Use(_) => (&[Running], "running"),
        }
    }
}

/// Whether `action` is allowed in `rec`'s current state.
pub fn check(rec: &SandboxRecord, action: Action) -> Result<()> {
    let (states, needs) = action.allowed();
    if states.contains(&rec.status) {
        return Ok(());
    }
    Err(CoreError::InvalidState { id: rec.id.clone(), status: rec.status.to_string(), action: action.name(), needs })
}

impl SandboxManager {
    /// The sandbox `key`, if it is running; else the table's `invalid_state`.
    pub fn require_running(&self, key: &str, what: &'static str) -> Result<SandboxRecord> {
        let rec = self.store.resolve(key)?;
        check(&rec, Action::Use(what))?;
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        use SandboxStatus::*;
        let rec = |status| {
            let mut r = SandboxRecord::with_defaults("sb-00000000".into(), "t");
            r.status = status;
            r
        };
        let cases = [
            (Action::Start, [false, true, true, false]),
            (Action::Stop, [true, false, false, false]),
            (Action::ForceStop, [true, false, true, true]),
            (Action::Restart, [true, true, true, false]),
            (Action::Use("exec"), [true, false, false, false]),
        ];
        for (action, expect) in cases {
            for (status, ok) in [Running, Stopped, Failed, Provisioning].into_iter().zip(expect) {
                assert_eq!(check(&rec(status), action).is_ok(), ok, "{action:?} in {status:?}");
            }
        }
        let e = check(&rec(Stopped), Action::Use("exec")).unwrap_err();
        assert_eq!(e.to_string(), "sandbox 'sb-00000000' is stopped; exec needs it running");
    }
}

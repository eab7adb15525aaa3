//! Background threads: a poller that refreshes the sandbox list (and the
//! followed sandbox's logs) every second, and one thread per user action,
//! so a slow stop never freezes the screen.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heyvm_client::Client;
use heyvm_types::{CreateSandboxRequest, LogEntry, SandboxInfo};

/// How many log lines the logs pane asks for.
const LOG_TAIL: usize = 200;
pub const REFRESH: Duration = Duration::from_secs(1);

pub enum Msg {
    List(Result<Vec<SandboxInfo>, String>),
    Logs {
        id: String,
        result: Result<Vec<LogEntry>, String>,
    },
    /// A sandbox was created (selected once the list shows it).
    Created {
        id: String,
        text: String,
    },
    /// An action finished: the text for the status line, and whether it failed.
    Done {
        text: String,
        failed: bool,
    },
}

/// Handle to the poller: which sandbox's logs to follow, and a way to ask
/// for an immediate refresh.
#[derive(Clone)]
pub struct Poller {
    follow: Arc<Mutex<Option<String>>>,
    wake: Sender<()>,
}

impl Poller {
    pub fn spawn(client: Client, out: Sender<Msg>) -> Poller {
        let follow = Arc::new(Mutex::new(None::<String>));
        let (wake, woken) = mpsc::channel();
        let f = follow.clone();
        std::thread::spawn(move || poll_loop(client, out, f, woken));
        Poller { follow, wake }
    }

    pub fn follow(&self, id: Option<String>) {
        *self.follow.lock().unwrap_or_else(|e| e.into_inner()) = id;
        self.refresh_now();
    }

    pub fn refresh_now(&self) {
        let _ = self.wake.send(());
    }
}

fn poll_loop(client: Client, out: Sender<Msg>, follow: Arc<Mutex<Option<String>>>, woken: Receiver<()>) {
    loop {
        let list = client.list(None).map_err(|e| e.to_string());
        if out.send(Msg::List(list)).is_err() {
            return;
        }
        let followed = follow.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(id) = followed {
            let q = [("limit", LOG_TAIL.to_string()), ("tail", "true".to_string())];
            let result = client.logs(&id, &q).map(|r| r.logs).map_err(|e| e.to_string());
            if out.send(Msg::Logs { id, result }).is_err() {
                return;
            }
        }
        match woken.recv_timeout(REFRESH) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Runs `action` (start, stop, restart, delete) on a thread; reports back
/// through `out` and wakes the poller when done.
pub fn run_action(client: &Client, poller: &Poller, out: &Sender<Msg>, action: &'static str, id: String, label: String) {
    let (client, poller, out) = (client.clone(), poller.clone(), out.clone());
    std::thread::spawn(move || {
        let result = match action {
            "delete" => client.delete_sandbox(&id).map(|_| ()),
            other => client.action(&id, other).map(|_| ()),
        };
        let msg = match result {
            Ok(()) => Msg::Done { text: format!("{label}: {action} done"), failed: false },
            Err(e) => Msg::Done { text: format!("{label}: {action} failed: {e}"), failed: true },
        };
        let _ = out.send(msg);
        poller.refresh_now();
    });
}

/// Creates a sandbox (the server's defaults; `name` or a generated one) on
/// a thread; reports back through `out` and wakes the poller when done.
pub fn run_create(client: &Client, poller: &Poller, out: &Sender<Msg>, name: Option<String>) {
    let (client, poller, out) = (client.clone(), poller.clone(), out.clone());
    std::thread::spawn(move || {
        let req = CreateSandboxRequest { name, ..Default::default() };
        let msg = match client.create(&req) {
            Ok(info) => Msg::Created { text: format!("{}: created ({})", info.name, info.id), id: info.id },
            Err(e) => Msg::Done { text: format!("create failed: {e}"), failed: true },
        };
        let _ = out.send(msg);
        poller.refresh_now();
    });
}

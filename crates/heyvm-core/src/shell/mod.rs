//! Interactive shell sessions that outlive a client's connection.
//!
//! A [`ShellSession`] owns the connection to the sandbox agent's PTY and a
//! bounded buffer of numbered output chunks ([`ring::OutputRing`]). Clients
//! come and go through an [`Attachment`]: a client that reconnects names the
//! last sequence number it holds and is sent everything after it.
//!
//! Bounds: at most [`OUTPUT_BUFFER_BYTES`] of output are kept per session.
//! While a client is attached the shell is paused (back-pressure) rather
//! than letting unsent output exceed that bound, so an attached client never
//! loses output; while no client is attached the oldest output is dropped
//! once the bound is reached and the next client is told how many chunks it
//! missed. A session with no client for [`IDLE_EXPIRY`] is hung up and
//! forgotten; one whose shell has exited is forgotten once a client has been
//! told the exit code (or after the same idle expiry). At most
//! [`MAX_SESSIONS`] sessions are open at once.

pub mod ring;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Notify};

use crate::agent::{AgentShellReader, AgentShellWriter, ShellEvent};
use ring::OutputRing;

/// Output kept per session for clients that reconnect.
pub const OUTPUT_BUFFER_BYTES: usize = 1 << 20;
/// How long a session survives with no client attached.
pub const IDLE_EXPIRY: Duration = Duration::from_secs(300);
/// Open sessions per daemon, so buffers stay bounded in total (256 MiB).
pub const MAX_SESSIONS: usize = 256;
/// Longest pause between expiry checks (shorter for short expiries).
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How a session ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ShellEnd {
    /// The shell exited with this code (128 + signal when killed).
    Exited { code: i32 },
    /// The connection to the sandbox broke (e.g. the sandbox was stopped).
    Failed(String),
}

/// Client input, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Stdin(Vec<u8>),
    Resize {
        cols: u16,
        rows: u16,
    },
    /// Hang up the terminal (the client asked to close the session).
    HangUp,
}

struct State {
    ring: OutputRing,
    end: Option<ShellEnd>,
    /// Bumped by every attach; older attachments see they were superseded.
    generation: u64,
    attached: bool,
    idle_since: Instant,
    /// Highest sequence number handed to the attached client.
    sent: u64,
    /// Highest sequence number a client confirmed it holds.
    acked: u64,
}

pub struct ShellSession {
    pub id: String,
    pub sandbox_id: String,
    state: Mutex<State>,
    /// Version counter, bumped on output, end and attach.
    changed: watch::Sender<u64>,
    /// Woken when the attached client catches up (or leaves).
    space: Notify,
    input: mpsc::Sender<Input>,
}

impl ShellSession {
    /// Takes over an open agent shell connection.
    pub fn spawn(sandbox_id: &str, reader: AgentShellReader, writer: AgentShellWriter) -> Arc<Self> {
        let (input, input_rx) = mpsc::channel(256);
        let session = Arc::new(ShellSession {
            id: new_session_id(),
            sandbox_id: sandbox_id.to_string(),
            state: Mutex::new(State {
                ring: OutputRing::new(OUTPUT_BUFFER_BYTES),
                end: None,
                generation: 0,
                attached: false,
                idle_since: Instant::now(),
                sent: 0,
                acked: 0,
            }),
            changed: watch::channel(0).0,
            space: Notify::new(),
            input,
        });
        tokio::spawn(pump_output(session.clone(), reader));
        tokio::spawn(pump_input(input_rx, writer));
        session
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn last_seq(&self) -> u64 {
        self.lock().ring.last_seq()
    }

    /// Highest sequence number a client confirmed: where a client that
    /// resumes without naming its position continues.
    pub fn acked(&self) -> u64 {
        self.lock().acked
    }

    pub fn ended(&self) -> Option<ShellEnd> {
        self.lock().end.clone()
    }

    /// Makes this client the session's only one; output is replayed from
    /// after `last_seq`.
    pub fn attach(self: &Arc<Self>, last_seq: u64) -> Attachment {
        let generation = {
            let mut st = self.lock();
            st.generation += 1;
            st.attached = true;
            st.sent = last_seq.min(st.ring.last_seq());
            st.generation
        };
        let rx = self.changed.subscribe();
        self.bump();
        self.space.notify_waiters();
        Attachment { session: self.clone(), generation, rx }
    }

    /// Hangs up without waiting (used when the session expires).
    fn terminate(&self) {
        let input = self.input.clone();
        tokio::spawn(async move {
            let _ = input.send(Input::HangUp).await;
        });
    }

    /// Waits until `incoming` more bytes fit in the buffer without evicting
    /// output the attached client (if any) has not been sent yet.
    async fn wait_for_room(&self, incoming: usize) {
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.lock();
                let unsent = st.ring.bytes_after(st.sent);
                if !st.attached || unsent == 0 || unsent + incoming <= OUTPUT_BUFFER_BYTES {
                    return;
                }
            }
            notified.await;
        }
    }
}

async fn pump_output(session: Arc<ShellSession>, mut reader: AgentShellReader) {
    let end = loop {
        match reader.next().await {
            Ok(ShellEvent::Started { .. }) => {}
            Ok(ShellEvent::Output(data)) => {
                session.wait_for_room(data.len()).await;
                session.lock().ring.push(data);
                session.bump();
            }
            Ok(ShellEvent::Exit(s)) => break ShellEnd::Exited { code: s.code },
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break ShellEnd::Failed("the connection to the sandbox closed (was it stopped?)".into())
            }
            Err(e) => break ShellEnd::Failed(format!("shell connection failed: {e}")),
        }
    };
    session.lock().end = Some(end);
    session.bump();
}

async fn pump_input(mut rx: mpsc::Receiver<Input>, mut writer: AgentShellWriter) {
    while let Some(input) = rx.recv().await {
        let ok = match input {
            Input::Stdin(d) => writer.stdin(&d).await.is_ok(),
            Input::Resize { cols, rows } => writer.resize(cols, rows).await.is_ok(),
            Input::HangUp => break,
        };
        if !ok {
            return;
        }
    }
    let _ = writer.hang_up().await;
}

/// One client's view of a session. Dropping it detaches the client.
pub struct Attachment {
    pub session: Arc<ShellSession>,
    generation: u64,
    rx: watch::Receiver<u64>,
}

/// Output available to an attached client.
#[derive(Debug, Default)]
pub struct Pending {
    pub chunks: Vec<(u64, Vec<u8>)>,
    /// Chunks dropped from the buffer before this client could get them.
    pub lost: u64,
    /// More output is ready right away.
    pub more: bool,
    /// Set once all output has been read and the session is over.
    pub end: Option<ShellEnd>,
    /// Another client attached to the session.
    pub superseded: bool,
}

impl Attachment {
    /// Output after `seq` (at most about `max_bytes`). Call
    /// [`Self::changed`] afterwards to wait for more.
    pub fn pending(&mut self, seq: u64, max_bytes: usize) -> Pending {
        self.rx.borrow_and_update();
        let st = self.session.lock();
        if st.generation != self.generation {
            return Pending { superseded: true, ..Pending::default() };
        }
        let slice = st.ring.after(seq, max_bytes);
        let end = if slice.more || !slice.chunks.is_empty() { None } else { st.end.clone() };
        Pending { chunks: slice.chunks, lost: slice.lost, more: slice.more, end, superseded: false }
    }

    /// Resolves when new output, the end, or another client arrives.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Records that the client was sent everything through `seq`.
    pub fn sent(&self, seq: u64) {
        let mut st = self.session.lock();
        if st.generation == self.generation && seq > st.sent {
            st.sent = seq;
            drop(st);
            self.session.space.notify_waiters();
        }
    }

    /// The client confirmed it holds everything through `seq`: that output
    /// need not be kept for a reconnect.
    pub fn ack(&self, seq: u64) {
        let mut st = self.session.lock();
        let upto = seq.min(st.sent);
        if upto > st.acked {
            st.acked = upto;
            st.ring.discard_through(upto);
        }
    }

    /// Forwards input to the shell; false once the shell is gone.
    pub async fn input(&self, input: Input) -> bool {
        self.session.input.send(input).await.is_ok()
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut st = self.session.lock();
        if st.generation == self.generation {
            st.attached = false;
            st.idle_since = Instant::now();
            drop(st);
            self.session.space.notify_waiters();
        }
    }
}

/// Every live session of the daemon, by id.
#[derive(Clone)]
pub struct ShellSessions {
    map: Arc<Mutex<HashMap<String, Arc<ShellSession>>>>,
    sweeping: Arc<AtomicBool>,
    idle_expiry: Duration,
}

impl Default for ShellSessions {
    fn default() -> Self {
        Self::new(IDLE_EXPIRY)
    }
}

impl ShellSessions {
    pub fn new(idle_expiry: Duration) -> Self {
        ShellSessions { map: Arc::default(), sweeping: Arc::default(), idle_expiry }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ShellSession>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session; the first call starts the expiry sweeper (it
    /// needs a running tokio runtime).
    pub fn insert(&self, session: Arc<ShellSession>) {
        self.lock().insert(session.id.clone(), session);
        if !self.sweeping.swap(true, Ordering::SeqCst) {
            tokio::spawn(sweep(Arc::downgrade(&self.map), self.idle_expiry));
        }
    }

    /// The session `id` if it exists and belongs to `sandbox_id`.
    pub fn get(&self, id: &str, sandbox_id: &str) -> Option<Arc<ShellSession>> {
        self.lock().get(id).filter(|s| s.sandbox_id == sandbox_id).cloned()
    }

    /// Forgets a session, hanging up its shell if it still runs.
    pub fn remove(&self, id: &str) {
        if let Some(s) = self.lock().remove(id) {
            s.terminate();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn sweep(map: Weak<Mutex<HashMap<String, Arc<ShellSession>>>>, idle: Duration) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL.min(idle / 2).max(Duration::from_millis(100))).await;
        let Some(map) = map.upgrade() else { return };
        let mut expired = Vec::new();
        map.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, s| {
            let st = s.lock();
            let keep = st.attached || st.idle_since.elapsed() < idle;
            drop(st);
            if !keep {
                expired.push(s.clone());
            }
            keep
        });
        for s in expired {
            tracing::info!(session = %s.id, sandbox = %s.sandbox_id, "shell session expired");
            s.terminate();
        }
    }
}

fn new_session_id() -> String {
    let mut b = [0u8; 12];
    getrandom::getrandom(&mut b).expect("the OS random source is available");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("sh-{hex}")
}

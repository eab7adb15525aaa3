//! The host's side of the multiplexer (see `heyvm_protocol::mux`): one
//! [`AgentSession`] per running sandbox over the byte stream its backend
//! hands out, and a [`MuxStream`] (AsyncRead + AsyncWrite) per request.
//!
//! The agent end is hostile ground (anything in the sandbox may have taken
//! the agent's place), so the session bounds what it buffers: data beyond a
//! stream's window resets that stream, oversized or unknown frames end the
//! session.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use heyvm_protocol::mux::{self, Decoder, Hello, MuxKind, INITIAL_WINDOW, MAX_MUX_PAYLOAD};
use heyvm_protocol::PROTOCOL_VERSION;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

/// A byte stream to an agent, as a backend's instance hands it out.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}
pub type AgentTransport = Box<dyn Transport>;

/// Credit goes back to the agent in batches this large: the agent's window
/// then never drops below three quarters while we keep up.
const CREDIT_BATCH: u32 = INITIAL_WINDOW / 4;

enum Inbound {
    Data(Vec<u8>),
    Close,
    Reset,
}

/// What the reader task and a stream's owner share.
struct Slot {
    inbound: mpsc::UnboundedSender<Inbound>,
    flow: Arc<Flow>,
}

#[derive(Default)]
struct Flow {
    state: Mutex<FlowState>,
    /// Agent bytes received and not yet credited back.
    in_flight: AtomicU32,
}

#[derive(Default)]
struct FlowState {
    send_window: u32,
    waker: Option<Waker>,
    reset: bool,
}

struct Shared {
    streams: Mutex<HashMap<u32, Slot>>,
    closed: AtomicBool,
}

pub struct AgentSession {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    shared: Arc<Shared>,
    next_id: AtomicU32,
    agent_pid: u32,
    /// What the agent announced beyond the base protocol.
    features: Vec<String>,
}

impl AgentSession {
    /// Greets the agent and starts the session's reader and writer tasks.
    pub async fn handshake(mut transport: AgentTransport, timeout: Duration) -> io::Result<Arc<Self>> {
        transport.write_all(&mux::hello_frame(&Hello { version: PROTOCOL_VERSION, ..Hello::default() })).await?;
        // A VM's serial port may still hold bytes of an earlier session
        // (the daemon restarted mid-frame): skip to the agent's Hello.
        let mut decoder = Decoder::hunting();
        let mut buf = vec![0u8; 64 * 1024];
        let hello = tokio::time::timeout(timeout, async {
            loop {
                // A hunting decoder's first frame is always the control
                // stream's Hello: it skips everything before one.
                if let Some((_, payload)) = decoder.next_frame()? {
                    return mux::parse_hello(&payload);
                }
                let n = transport.read(&mut buf).await?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "agent closed the connection during the handshake"));
                }
                decoder.feed(&buf[..n]);
            }
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "agent did not answer the handshake"))??;
        if let Some(e) = hello.error {
            return Err(io::Error::other(format!("agent refused the session: {e}")));
        }
        if hello.version != PROTOCOL_VERSION {
            return Err(io::Error::other(format!("agent speaks protocol {}, host {PROTOCOL_VERSION}", hello.version)));
        }
        let (read, write) = tokio::io::split(transport);
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { streams: Mutex::default(), closed: AtomicBool::new(false) });
        tokio::spawn(write_loop(write, rx, shared.clone()));
        tokio::spawn(read_loop(read, decoder, tx.clone(), shared.clone()));
        Ok(Arc::new(AgentSession { tx, shared, next_id: AtomicU32::new(1), agent_pid: hello.pid, features: hello.features }))
    }

    pub fn agent_pid(&self) -> u32 {
        self.agent_pid
    }

    /// Whether the agent announced `feature` (an older agent announces none).
    pub fn supports(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// Whether the transport has ended (the agent died or went away).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst) || self.tx.is_closed()
    }

    /// Opens a new stream. The agent starts the handler at once; the first
    /// bytes written are the request.
    pub fn open(&self) -> io::Result<MuxStream> {
        if self.is_closed() {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "the agent session has ended"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let flow = Arc::new(Flow::default());
        flow.state.lock().unwrap_or_else(|e| e.into_inner()).send_window = INITIAL_WINDOW;
        lock(&self.shared.streams).insert(id, Slot { inbound: in_tx, flow: flow.clone() });
        self.tx
            .send(mux::encode_frame(id, MuxKind::Open, b""))
            .map_err(|_| io::Error::new(io::ErrorKind::NotConnected, "the agent session has ended"))?;
        Ok(MuxStream {
            id,
            tx: self.tx.clone(),
            shared: self.shared.clone(),
            inbound: in_rx,
            flow,
            current: Vec::new(),
            pos: 0,
            owed: 0,
            read_eof: false,
            write_closed: false,
        })
    }
}

impl Drop for AgentSession {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn write_loop(mut w: impl AsyncWrite + Unpin, mut rx: mpsc::UnboundedReceiver<Vec<u8>>, shared: Arc<Shared>) {
    let mut batch = Vec::with_capacity(128 * 1024);
    while let Some(frame) = rx.recv().await {
        batch.clear();
        batch.extend_from_slice(&frame);
        // Everything already queued goes out in one write.
        while batch.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(f) => batch.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        if shared.closed.load(Ordering::SeqCst) || w.write_all(&batch).await.is_err() {
            break;
        }
    }
    shared.closed.store(true, Ordering::SeqCst);
    let _ = w.shutdown().await;
}

async fn read_loop(mut r: impl AsyncRead + Unpin, mut decoder: Decoder, tx: mpsc::UnboundedSender<Vec<u8>>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 256 * 1024];
    'outer: loop {
        loop {
            match decoder.next_frame() {
                Ok(Some((h, payload))) => {
                    if !dispatch(h, payload, &tx, &shared) {
                        break 'outer;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "agent sent a malformed frame; ending the session");
                    break 'outer;
                }
            }
        }
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => decoder.feed(&buf[..n]),
        }
        if shared.closed.load(Ordering::SeqCst) {
            break;
        }
    }
    shared.closed.store(true, Ordering::SeqCst);
    // Every open stream ends: readers see end of stream, writers fail.
    for (_, slot) in lock(&shared.streams).drain() {
        let _ = slot.inbound.send(Inbound::Reset);
        reset_flow(&slot.flow);
    }
}

fn reset_flow(flow: &Flow) {
    let mut st = lock(&flow.state);
    st.reset = true;
    if let Some(w) = st.waker.take() {
        w.wake();
    }
}

/// Acts on one frame from the agent; false ends the session.
fn dispatch(h: mux::Header, payload: Vec<u8>, tx: &mpsc::UnboundedSender<Vec<u8>>, shared: &Shared) -> bool {
    let mut streams = lock(&shared.streams);
    match h.kind {
        MuxKind::Hello | MuxKind::Open => return false,
        MuxKind::Data => {
            let Some(slot) = streams.get(&h.stream) else { return true };
            let in_flight = slot.flow.in_flight.fetch_add(payload.len() as u32, Ordering::SeqCst) + payload.len() as u32;
            if in_flight > INITIAL_WINDOW {
                tracing::warn!(stream = h.stream, "agent ignored flow control; resetting the stream");
                if let Some(slot) = streams.remove(&h.stream) {
                    let _ = slot.inbound.send(Inbound::Reset);
                    reset_flow(&slot.flow);
                }
                let _ = tx.send(mux::encode_frame(h.stream, MuxKind::Reset, b""));
                return true;
            }
            let _ = slot.inbound.send(Inbound::Data(payload));
        }
        MuxKind::Credit => {
            let Ok(n) = mux::parse_credit(&payload) else { return false };
            if let Some(slot) = streams.get(&h.stream) {
                let mut st = lock(&slot.flow.state);
                st.send_window = st.send_window.saturating_add(n).min(2 * INITIAL_WINDOW);
                if let Some(w) = st.waker.take() {
                    w.wake();
                }
            }
        }
        MuxKind::Close => {
            if let Some(slot) = streams.get(&h.stream) {
                let _ = slot.inbound.send(Inbound::Close);
            }
        }
        MuxKind::Reset => {
            if let Some(slot) = streams.remove(&h.stream) {
                let _ = slot.inbound.send(Inbound::Reset);
                reset_flow(&slot.flow);
            }
        }
    }
    true
}

/// One request's byte stream to the agent. Dropping it aborts the stream
/// (the agent's handler sees the host gone); `shutdown()` half-closes it.
pub struct MuxStream {
    id: u32,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    shared: Arc<Shared>,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    flow: Arc<Flow>,
    current: Vec<u8>,
    pos: usize,
    /// Bytes handed to the reader and not yet credited back.
    owed: u32,
    read_eof: bool,
    write_closed: bool,
}

impl MuxStream {
    fn give_credit(&mut self, n: usize) {
        self.owed += n as u32;
        if self.owed >= CREDIT_BATCH {
            let n = std::mem::take(&mut self.owed);
            self.flow.in_flight.fetch_sub(n.min(self.flow.in_flight.load(Ordering::SeqCst)), Ordering::SeqCst);
            let _ = self.tx.send(mux::credit_frame(self.id, n));
        }
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.pos < self.current.len() {
                let n = (self.current.len() - self.pos).min(out.remaining());
                let start = self.pos;
                out.put_slice(&self.current[start..start + n]);
                self.pos += n;
                self.give_credit(n);
                return Poll::Ready(Ok(()));
            }
            if self.read_eof {
                return Poll::Ready(Ok(()));
            }
            match self.inbound.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Inbound::Data(d))) => {
                    self.current = d;
                    self.pos = 0;
                }
                Poll::Ready(Some(Inbound::Close)) => self.read_eof = true,
                Poll::Ready(Some(Inbound::Reset)) | Poll::Ready(None) => {
                    self.read_eof = true;
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the agent closed the stream")));
                }
            }
        }
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.write_closed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "stream closed for writing")));
        }
        let mut st = lock(&self.flow.state);
        if st.reset || self.shared.closed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the agent closed the stream")));
        }
        if st.send_window == 0 {
            st.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = data.len().min(st.send_window as usize).min(MAX_MUX_PAYLOAD);
        st.send_window -= n as u32;
        drop(st);
        if self.tx.send(mux::encode_frame(self.id, MuxKind::Data, &data[..n])).is_err() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the agent session has ended")));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.write_closed {
            self.write_closed = true;
            let _ = self.tx.send(mux::encode_frame(self.id, MuxKind::Close, b""));
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        let known = lock(&self.shared.streams).remove(&self.id).is_some();
        if known {
            let _ = self.tx.send(mux::encode_frame(self.id, MuxKind::Reset, b""));
        }
    }
}

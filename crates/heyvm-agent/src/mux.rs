//! The agent's side of the multiplexer (see `heyvm_protocol::mux`).
//!
//! One thread runs a poll() loop over the transport and every open stream.
//! Each stream the host opens gets a unix socketpair: one end goes to a
//! handler thread that speaks the inner protocol exactly as it would on a
//! connection of its own, the loop pumps the other end to and from mux
//! frames. Output is read from a stream's socket only while the host has
//! granted credit, so a command flooding its output blocks on its pipe
//! instead of filling memory or crowding out other streams; host data is
//! credited back only once the handler has taken it.

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use heyvm_protocol::mux::{self, Decoder, Hello, MuxKind, INITIAL_WINDOW, MAX_MUX_PAYLOAD};
use heyvm_protocol::PROTOCOL_VERSION;

/// Credit is returned in batches of at least this many bytes (or when the
/// handler has taken everything), to keep Credit frames off the hot path.
const CREDIT_BATCH: u32 = INITIAL_WINDOW / 4;

/// Where the agent's sessions come from.
pub enum Source {
    /// A listening unix socket created outside the sandbox and inherited.
    /// The newest connection wins: a restarted daemon replaces its
    /// predecessor's session even if that one was never closed.
    Listener(OwnedFd),
    /// A single byte stream, e.g. a virtio-serial port; a new `Hello` on it
    /// starts a new session.
    Stream(OwnedFd),
}

struct Stream {
    local: UnixStream,
    /// Bytes we may still send to the host.
    send_window: u32,
    /// Host bytes not yet taken by the handler.
    inbound: VecDeque<u8>,
    /// Host bytes received and not yet credited back.
    in_flight: u32,
    /// Host bytes taken by the handler, to be credited back.
    owed: u32,
    host_closed: bool,
    local_eof: bool,
}

struct Session {
    transport: OwnedFd,
    decoder: Decoder,
    streams: HashMap<u32, Stream>,
    started: bool,
}

/// Serves sessions from `source` forever (until the process exits), handing
/// each opened stream to `handle` on a thread of its own.
pub fn serve(source: Source, handle: impl Fn(UnixStream) + Send + Sync + Clone + 'static) -> io::Result<()> {
    let (listener, mut session) = match source {
        Source::Listener(l) => (Some(l), None),
        Source::Stream(s) => (None, Some(Session::new(s, Decoder::hunting())?)),
    };
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let poll = |fd: RawFd, events: i16| libc::pollfd { fd, events, revents: 0 };
        if let Some(l) = &listener {
            fds.push(poll(l.as_raw_fd(), libc::POLLIN));
        }
        let mut ids = Vec::new();
        if let Some(s) = &session {
            fds.push(poll(s.transport.as_raw_fd(), libc::POLLIN));
            for (id, st) in &s.streams {
                let mut ev = 0;
                if st.send_window > 0 && !st.local_eof {
                    ev |= libc::POLLIN;
                }
                if !st.inbound.is_empty() {
                    ev |= libc::POLLOUT;
                }
                // A stream waiting only for credit or for the host is left
                // out: poll() would report a hung-up socket forever.
                if ev != 0 {
                    fds.push(poll(st.local.as_raw_fd(), ev));
                    ids.push(*id);
                }
            }
        }
        if fds.is_empty() {
            return Ok(());
        }
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut i = 0;
        if let Some(l) = &listener {
            if fds[0].revents != 0 {
                if let Some(conn) = accept(l) {
                    // Dropping the old session closes its streams: their
                    // handlers see the host gone, as after a disconnect.
                    session = Some(Session::new(conn, Decoder::default())?);
                    continue;
                }
            }
            i = 1;
        }
        let Some(s) = session.as_mut() else { continue };
        let transport_ready = fds[i].revents != 0;
        for (k, id) in ids.iter().enumerate() {
            let rev = fds[i + 1 + k].revents;
            if rev != 0 {
                s.pump_stream(*id, rev, &mut buf);
            }
        }
        if transport_ready && !s.read_transport(&mut buf, &handle) {
            // The host went away. A listener waits for the next one; a
            // single stream (a serial port) reads on for the next Hello.
            if listener.is_some() {
                session = None;
            } else {
                // Whatever is buffered belongs to the old host (possibly a
                // frame cut in half): hunt for the next host's Hello.
                s.streams.clear();
                s.decoder.resync();
                s.started = false;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

fn accept(l: &OwnedFd) -> Option<OwnedFd> {
    // SAFETY: accept4 on a listening socket; null address pointers are allowed.
    let fd = unsafe { libc::accept4(l.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
    // SAFETY: a fresh descriptor we own.
    (fd >= 0).then(|| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

impl Session {
    fn new(transport: OwnedFd, decoder: Decoder) -> io::Result<Self> {
        set_nonblocking(transport.as_raw_fd())?;
        Ok(Session { transport, decoder, streams: HashMap::new(), started: false })
    }

    fn send(&self, frame: &[u8]) -> bool {
        write_all(self.transport.as_raw_fd(), frame).is_ok()
    }

    /// Reads what the transport has and acts on every whole frame. False
    /// when the transport is closed or broken.
    fn read_transport(&mut self, buf: &mut [u8], handle: &(impl Fn(UnixStream) + Send + Sync + Clone + 'static)) -> bool {
        let n = match read_fd(self.transport.as_raw_fd(), buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return true,
            Err(_) => return false,
        };
        self.decoder.feed(&buf[..n]);
        loop {
            match self.decoder.next_frame() {
                Ok(Some((h, payload))) => {
                    if !self.on_frame(h, payload, handle) {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(e) => {
                    eprintln!("heyvm-agent: dropping the session: {e}");
                    return false;
                }
            }
        }
    }

    fn on_frame(&mut self, h: mux::Header, payload: Vec<u8>, handle: &(impl Fn(UnixStream) + Send + Sync + Clone + 'static)) -> bool {
        if h.kind == MuxKind::Hello {
            let hello = mux::parse_hello(&payload);
            // A new Hello starts a new session on this transport.
            self.streams.clear();
            let error = match hello {
                Ok(h) if h.version == PROTOCOL_VERSION => None,
                Ok(h) => Some(format!("agent speaks protocol {PROTOCOL_VERSION}, host sent {}", h.version)),
                Err(e) => Some(e.to_string()),
            };
            self.started = error.is_none();
            let features = heyvm_protocol::FEATURES.iter().map(|f| f.to_string()).collect();
            return self.send(&mux::hello_frame(&Hello { version: PROTOCOL_VERSION, pid: std::process::id(), error, features }));
        }
        if !self.started {
            return false;
        }
        match h.kind {
            MuxKind::Hello => unreachable!("handled above"),
            MuxKind::Open => {
                if self.streams.contains_key(&h.stream) || h.stream == mux::CONTROL_STREAM {
                    return self.send(&mux::encode_frame(h.stream, MuxKind::Reset, b""));
                }
                match self.open(h.stream, handle) {
                    Ok(st) => {
                        self.streams.insert(h.stream, st);
                    }
                    Err(e) => {
                        eprintln!("heyvm-agent: cannot open stream {}: {e}", h.stream);
                        return self.send(&mux::encode_frame(h.stream, MuxKind::Reset, b""));
                    }
                }
            }
            MuxKind::Data => {
                let Some(st) = self.streams.get_mut(&h.stream) else { return true };
                st.in_flight = st.in_flight.saturating_add(payload.len() as u32);
                if st.in_flight > INITIAL_WINDOW || st.host_closed {
                    // The host ignored flow control: that stream is done.
                    self.streams.remove(&h.stream);
                    return self.send(&mux::encode_frame(h.stream, MuxKind::Reset, b""));
                }
                st.inbound.extend(payload);
                self.flush_inbound(h.stream);
            }
            MuxKind::Credit => {
                let n = match mux::parse_credit(&payload) {
                    Ok(n) => n,
                    Err(_) => return false,
                };
                if let Some(st) = self.streams.get_mut(&h.stream) {
                    st.send_window = st.send_window.saturating_add(n).min(2 * INITIAL_WINDOW);
                }
            }
            MuxKind::Close => {
                if let Some(st) = self.streams.get_mut(&h.stream) {
                    st.host_closed = true;
                    if st.inbound.is_empty() {
                        let _ = st.local.shutdown(Shutdown::Write);
                    }
                    if st.local_eof && st.inbound.is_empty() {
                        self.streams.remove(&h.stream);
                    }
                }
            }
            MuxKind::Reset => {
                self.streams.remove(&h.stream);
            }
        }
        true
    }

    fn open(&self, _id: u32, handle: &(impl Fn(UnixStream) + Send + Sync + Clone + 'static)) -> io::Result<Stream> {
        let (local, theirs) = UnixStream::pair()?;
        local.set_nonblocking(true)?;
        let handle = handle.clone();
        // At the sandbox's pids limit a thread cannot be created: refuse the
        // stream rather than panic the agent (`thread::spawn` would).
        std::thread::Builder::new().spawn(move || handle(theirs))?;
        Ok(Stream {
            local,
            send_window: INITIAL_WINDOW,
            inbound: VecDeque::new(),
            in_flight: 0,
            owed: 0,
            host_closed: false,
            local_eof: false,
        })
    }

    /// Moves host data into the handler's socket as far as it takes it, and
    /// returns credit for what it took.
    fn flush_inbound(&mut self, id: u32) {
        let Some(st) = self.streams.get_mut(&id) else { return };
        while !st.inbound.is_empty() {
            let (a, _) = st.inbound.as_slices();
            match (&st.local).write(a) {
                Ok(n) => {
                    st.inbound.drain(..n);
                    st.owed += n as u32;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The handler is gone; whatever the host sends is moot.
                    st.owed += st.inbound.len() as u32;
                    st.inbound.clear();
                }
            }
        }
        if st.inbound.is_empty() && st.host_closed {
            let _ = st.local.shutdown(Shutdown::Write);
        }
        if st.owed >= CREDIT_BATCH || (st.owed > 0 && st.inbound.is_empty()) {
            let n = std::mem::take(&mut st.owed);
            st.in_flight -= n.min(st.in_flight);
            let frame = mux::credit_frame(id, n);
            let _ = self.send(&frame);
        }
    }

    fn pump_stream(&mut self, id: u32, revents: i16, buf: &mut [u8]) {
        if revents & libc::POLLOUT != 0 {
            self.flush_inbound(id);
        }
        let Some(st) = self.streams.get_mut(&id) else { return };
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 || st.local_eof || st.send_window == 0 {
            return;
        }
        let want = (st.send_window as usize).min(MAX_MUX_PAYLOAD).min(buf.len());
        let frame = match (&st.local).read(&mut buf[..want]) {
            Ok(n) if n > 0 => {
                st.send_window -= n as u32;
                mux::encode_frame(id, MuxKind::Data, &buf[..n])
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return,
            // End of the handler's output (or a broken socket): half close.
            Ok(_) | Err(_) => {
                st.local_eof = true;
                mux::encode_frame(id, MuxKind::Close, b"")
            }
        };
        let done = st.local_eof && st.host_closed && st.inbound.is_empty();
        if done {
            self.streams.remove(&id);
        }
        self.send(&frame);
    }
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes all of `buf` to a non-blocking descriptor, waiting for room.
fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf = &buf[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            ErrorKind::Interrupted => {}
            ErrorKind::WouldBlock => {
                let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 1000) };
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

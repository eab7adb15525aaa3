//! A connect request: open a TCP connection to a port on the sandbox's own
//! loopback and splice it with the host connection, so the daemon reaches
//! sandbox ports whether or not the sandbox has a network of its own.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use heyvm_protocol::{write_json, Event};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(mut conn: UnixStream, port: u16) -> io::Result<()> {
    if port == 0 {
        return write_json(&mut conn, &Event::Error { message: "port must be between 1 and 65535".into() });
    }
    let tcp = match dial(port) {
        Ok(t) => t,
        Err(e) => {
            let message = format!("nothing accepts connections on port {port} inside the sandbox ({e})");
            return write_json(&mut conn, &Event::Error { message });
        }
    };
    let _ = tcp.set_nodelay(true);
    write_json(&mut conn, &Event::Connected)?;
    let (tcp_r, conn_w) = (tcp.try_clone()?, conn.try_clone()?);
    let back = thread::Builder::new().spawn(move || pump(tcp_r, conn_w, |s: &UnixStream, how| s.shutdown(how)))?;
    pump(conn, tcp, |s: &TcpStream, how| s.shutdown(how));
    let _ = back.join();
    Ok(())
}

/// Programs listening on "localhost" may have bound only the IPv6 loopback.
fn dial(port: u16) -> io::Result<TcpStream> {
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    match TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(t) => Ok(t),
        Err(e) => TcpStream::connect_timeout(&SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)), CONNECT_TIMEOUT).map_err(|_| e),
    }
}

/// Copies until end of stream, then half-closes the destination so the peer
/// sees EOF while the other direction keeps flowing. After an error both
/// directions of the destination close, which also ends the other pump.
fn pump<R: Read, W: Write>(mut from: R, mut to: W, close: impl Fn(&W, Shutdown) -> io::Result<()>) {
    let how = if copy(&mut from, &mut to).is_ok() { Shutdown::Write } else { Shutdown::Both };
    let _ = close(&to, how);
}

/// `io::copy` with a 64 KiB buffer instead of 8 KiB: fewer syscalls per
/// byte on bulk transfers.
fn copy(from: &mut impl Read, to: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

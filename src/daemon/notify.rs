//! systemd readiness notification (`sd_notify`), without a crate: one datagram to `NOTIFY_SOCKET`.
//!
//! The address is a filesystem path, or an abstract socket name when it starts with `@` (the `@`
//! stands for the leading NUL byte). Nothing is sent when the variable is unset (not under systemd).

use std::io;
use std::os::unix::net::UnixDatagram;

/// Send `state` (e.g. `READY=1`) to `$NOTIFY_SOCKET`. `Ok(false)` when not under a notify socket.
pub(crate) fn notify(state: &str) -> io::Result<bool> {
    match std::env::var("NOTIFY_SOCKET") {
        Ok(addr) if !addr.is_empty() => notify_to(&addr, state).map(|_| true),
        _ => Ok(false),
    }
}

/// Send `state` to the notify socket at `addr` (path, or `@name` for an abstract socket).
pub(crate) fn notify_to(addr: &str, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = addr.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &sa)?;
    } else {
        sock.send_to(state.as_bytes(), addr)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_socket_gets_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        notify_to(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn abstract_socket_gets_the_message() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("mpm-test-notify-{}", crate::events::new_id());
        let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&sa).unwrap();
        notify_to(&format!("@{name}"), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn missing_socket_is_an_error_not_a_panic() {
        assert!(notify_to("/nonexistent/mpm/notify", "READY=1").is_err());
    }
}

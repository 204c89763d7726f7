//! Blocking fd I/O helpers that ride out EINTR and fds left in non-blocking mode by someone else
//! (a terminal's file description is shared with every process using it).

use std::io;
use std::os::fd::AsRawFd;

use nix::errno::Errno;

/// Block until `fd` is ready for `events` (for fds someone left in non-blocking mode).
pub(crate) fn wait_fd(fd: i32, events: libc::c_short) {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd; infinite timeout (this is a blocking wait, not a polling loop).
    unsafe { libc::poll(&mut p, 1, -1) };
}

/// `write` everything, riding out EINTR and EAGAIN (non-blocking fds).
pub(crate) fn write_all(fd: std::os::fd::BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait_fd(fd.as_raw_fd(), libc::POLLOUT),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

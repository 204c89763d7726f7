//! The user's terminal: raw mode for the length of a session, restored on every exit path, and
//! window sizes.
//!
//! The termios saved when raw mode is entered is also kept in a process-wide slot, so the panic
//! hook ([`install_panic_hook`]) and the signal path ([`restore`]) can put the terminal back even
//! though they cannot reach the guard. Restoring is idempotent.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::{Mutex, Once};

use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};

use super::WinSize;

/// The termios to put back, and on which fd (always stdin today).
static SAVED: Mutex<Option<(i32, Termios)>> = Mutex::new(None);

fn saved() -> std::sync::MutexGuard<'static, Option<(i32, Termios)>> {
    SAVED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `fd` is a terminal.
pub(crate) fn is_tty(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}

fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 0 is open for the life of the process (or reads fail harmlessly).
    unsafe { BorrowedFd::borrow_raw(0) }
}

/// The window size of terminal `fd`, if it is one and reports a non-zero size.
pub(crate) fn window_size(fd: BorrowedFd<'_>) -> Option<WinSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` to a valid pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some(WinSize {
        cols: ws.ws_col,
        rows: ws.ws_row,
    })
}

/// The size of the user's terminal (stdin, stdout or stderr, the first that is one); else
/// `COLUMNS`/`LINES`; else 80x24.
pub(crate) fn user_size() -> WinSize {
    for fd in 0..=2 {
        // SAFETY: fds 0-2 are borrowed only for the ioctl.
        if let Some(s) = window_size(unsafe { BorrowedFd::borrow_raw(fd) }) {
            return s;
        }
    }
    size_from_env(
        std::env::var("COLUMNS").ok().as_deref(),
        std::env::var("LINES").ok().as_deref(),
    )
}

fn size_from_env(cols: Option<&str>, rows: Option<&str>) -> WinSize {
    let parse = |v: Option<&str>, d: u16| {
        v.and_then(|s| s.trim().parse::<u16>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(d)
    };
    WinSize {
        cols: parse(cols, 80),
        rows: parse(rows, 24),
    }
}

/// The termios of stdin, when it is a terminal (copied onto the agent's PTY so it sees the same
/// line settings).
pub(crate) fn stdin_termios() -> Option<Termios> {
    let fd = stdin_fd();
    if !is_tty(fd) {
        return None;
    }
    tcgetattr(fd).ok()
}

/// Raw mode on stdin for as long as the guard lives.
pub(crate) struct RawModeGuard {
    _private: (),
}

impl RawModeGuard {
    /// Put stdin into raw mode if it is a terminal; `Ok(None)` when it is not.
    pub(crate) fn enter() -> std::io::Result<Option<RawModeGuard>> {
        Self::enter_on(stdin_fd())
    }

    /// Put terminal `fd` into raw mode; `Ok(None)` when it is not a terminal. The fd must stay
    /// open while the guard lives.
    pub(crate) fn enter_on(fd: BorrowedFd<'_>) -> std::io::Result<Option<RawModeGuard>> {
        if !is_tty(fd) {
            return Ok(None);
        }
        let original = tcgetattr(fd)?;
        let mut raw = original.clone();
        cfmakeraw(&mut raw);
        *saved() = Some((fd.as_raw_fd(), original));
        if let Err(e) = tcsetattr(fd, SetArg::TCSADRAIN, &raw) {
            *saved() = None;
            return Err(e.into());
        }
        install_panic_hook();
        Ok(Some(RawModeGuard { _private: () }))
    }
}

impl Drop for RawModeGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Put the user's terminal back as it was before raw mode, if raw mode is on. Idempotent; safe
/// to call from any thread.
pub(crate) fn restore() {
    if let Some((fd, termios)) = saved().take() {
        // SAFETY: the fd was open when saved; a closed fd just makes tcsetattr fail.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        if let Err(e) = tcsetattr(fd.as_fd(), SetArg::TCSADRAIN, &termios) {
            tracing::warn!(error = %e, "cannot restore the terminal");
        }
    }
}

/// Chain a panic hook that restores the terminal before the default report is printed.
pub(crate) fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // A panic the detection pipeline contains leaves the session's terminal alone.
            if crate::detect::contain::absorb_panic(info) {
                return;
            }
            restore();
            previous(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::termios::LocalFlags;

    /// Raw mode on a PTY, then a panic: the hook restores the terminal before unwinding.
    #[test]
    fn panic_hook_restores_the_terminal() {
        let master = nix::pty::posix_openpt(nix::fcntl::OFlag::O_RDWR).unwrap();
        nix::pty::grantpt(&master).unwrap();
        nix::pty::unlockpt(&master).unwrap();
        let name = nix::pty::ptsname_r(&master).unwrap();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name)
            .unwrap();
        let before = tcgetattr(&slave).unwrap();
        assert!(before.local_flags.contains(LocalFlags::ICANON));
        let result = std::panic::catch_unwind(|| {
            let _guard = RawModeGuard::enter_on(slave.as_fd()).unwrap().unwrap();
            let raw = tcgetattr(&slave).unwrap();
            assert!(!raw.local_flags.contains(LocalFlags::ICANON));
            // The guard is leaked, as when a panic aborts or a thread that does not own it panics.
            std::mem::forget(_guard);
            panic!("boom");
        });
        assert!(result.is_err());
        let after = tcgetattr(&slave).unwrap();
        assert_eq!(
            format!("{:?} {:?}", after.local_flags, after.control_chars),
            format!("{:?} {:?}", before.local_flags, before.control_chars)
        );
    }

    #[test]
    fn env_size_falls_back_to_80x24() {
        assert_eq!(
            size_from_env(Some("120"), Some("40")),
            WinSize {
                cols: 120,
                rows: 40
            }
        );
        assert_eq!(size_from_env(None, Some("x")), WinSize::default());
        assert_eq!(size_from_env(Some("0"), None), WinSize::default());
    }
}

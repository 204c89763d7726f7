//! `mpm hook EVENT`: the command claude's hooks run.
//!
//! Reads the hook's JSON on stdin, sends it to the session named by `MPM_HOOK_SOCKET`, prints the
//! session's answer (the hook's JSON response) on stdout and exits 0. It never fails the hook: with no
//! socket in the environment, no session listening, bad input or a slow session, it prints nothing and
//! exits 0 (claude goes on as if mpm were not there). Cost: one connect and two small writes; the
//! whole call takes a few milliseconds when the session answers at once, at most
//! [`REPLY_TIMEOUT`].

use std::io::{IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

/// How long `mpm hook` waits for the session's answer at most.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest hook input read from stdin (a Stop payload carries the turn's final message).
pub(crate) const MAX_INPUT: u64 = 8 * 1024 * 1024;
/// The largest answer read from the session.
pub(crate) const MAX_REPLY: u64 = 1024 * 1024;

/// The hook's stdin as JSON (`null` when it is a terminal, empty or not JSON).
fn read_payload() -> Value {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Value::Null;
    }
    let mut buf = Vec::new();
    if stdin.lock().take(MAX_INPUT).read_to_end(&mut buf).is_err() {
        return Value::Null;
    }
    serde_json::from_slice(&buf).unwrap_or(Value::Null)
}

/// Send `event` with `payload` to the session at `socket`; the answer's stdout text, if any.
#[cfg(test)]
pub(crate) fn ask(
    socket: &std::path::Path,
    event: &str,
    payload: &Value,
) -> std::io::Result<String> {
    ask_within(socket, event, payload, REPLY_TIMEOUT)
}

/// [`ask`], waiting at most `wait` for the answer.
pub(crate) fn ask_within(
    socket: &std::path::Path,
    event: &str,
    payload: &Value,
    wait: Duration,
) -> std::io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_write_timeout(Some(REPLY_TIMEOUT))?;
    s.set_read_timeout(Some(wait.max(Duration::from_millis(100))))?;
    let mut line = serde_json::json!({"event": event, "payload": payload}).to_string();
    line.push('\n');
    s.write_all(line.as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut reply = Vec::new();
    (&mut s).take(MAX_REPLY).read_to_end(&mut reply)?;
    let v: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
    Ok(v.get("stdout")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string())
}

/// `mpm hook EVENT [--wait SECS]`. Always 0. `wait` replaces [`REPLY_TIMEOUT`] (the Stop hook
/// waits for the turn's delegations).
pub(crate) fn run(event: &str, wait: Option<Duration>) -> i32 {
    let payload = read_payload();
    let Some(socket) = std::env::var_os(super::SOCKET_ENV).filter(|s| !s.is_empty()) else {
        return 0;
    };
    let wait = wait.unwrap_or(REPLY_TIMEOUT);
    match ask_within(std::path::Path::new(&socket), event, &payload, wait) {
        Ok(out) if !out.is_empty() => {
            let mut stdout = std::io::stdout().lock();
            // A closed stdout (claude gave up) is not an error worth a panic or a status.
            let _ = stdout
                .write_all(out.as_bytes())
                .and_then(|_| stdout.write_all(b"\n"))
                .and_then(|_| stdout.flush());
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, event, "no session answered the hook"),
    }
    0
}

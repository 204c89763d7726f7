//! The relay's flow control in both hosts: a slow reader slows the agent (every byte arrives, the
//! client is never dropped), and a terminal gets exactly the agent's bytes from the first one (no
//! redraw of a screen it never saw).

use crate::common;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// The only output transform of a PTY with default line settings: ONLCR (`\n` -> `\r\n`).
fn onlcr(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 128);
    for &b in bytes {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// What the fake agent writes for `step`, as its PTY passes it on.
fn expected(step: &str) -> Vec<u8> {
    let out = std::process::Command::new(fake_agent())
        .arg(step)
        .output()
        .expect("run fake agent");
    onlcr(&out.stdout)
}

fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    got.iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .or((got.len() != want.len()).then_some(got.len().min(want.len())))
}

/// Enough output to overrun any chunk-counted backlog (the daemon once dropped a terminal client
/// 4096 chunks behind), read far slower than the agent writes it.
const SLOW_BYTES: usize = 24 << 20;
/// The slow reader: at most 16 KiB, then a pause (a terminal gives 4 KiB a read: about 4 MB/s).
const SLOW_READ: (usize, Duration) = (16 * 1024, Duration::from_millis(1));

/// A client whose stdout is a pipe read slowly gets every byte, in order, and the exit status.
fn a_slow_pipe_reader_gets_every_byte(host: HostKind) {
    let env = TestEnv::for_host(host);
    let step = format!("random:{SLOW_BYTES}:11");
    let want = expected(&step);
    let (mut pipe_r, pipe_w) = std::io::pipe().unwrap();
    let mut spawn = Spawn::new(&env, &["run", "--", &fake_agent(), &step]);
    spawn.stdout = Some(Stdio::from(pipe_w));
    let mut p = spawn.start();
    let collector = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = vec![0u8; SLOW_READ.0];
        loop {
            match pipe_r.read(&mut buf) {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
            std::thread::sleep(SLOW_READ.1);
        }
    });
    let status = p.wait_within(Duration::from_secs(240));
    let got = collector.join().unwrap();
    assert_eq!(status.code(), Some(0), "terminal:\n{}", p.text());
    assert!(!p.text().contains("fell behind"), "{}", p.text());
    assert_eq!(got.len(), want.len(), "length differs");
    assert_eq!(first_difference(&got, &want), None, "bytes differ");
}

/// A terminal read slowly gets every byte, in order: the session's own client is never dropped
/// (`too_slow`); the agent waits for it instead.
fn a_slow_terminal_gets_every_byte(host: HostKind) {
    let env = TestEnv::for_host(host);
    let step = format!("random:{SLOW_BYTES}:13");
    let want = expected(&step);
    let mut spawn = Spawn::new(&env, &["run", "--", &fake_agent(), &step]);
    spawn.slow_reader = Some(SLOW_READ);
    let mut p = spawn.start();
    let status = p.wait_within(Duration::from_secs(240));
    let _ = p.wait_output();
    assert_eq!(status.code(), Some(0), "status");
    let got = p.bytes();
    assert!(
        got.len() >= want.len(),
        "got {} of {} bytes: {:?}",
        got.len(),
        want.len(),
        String::from_utf8_lossy(&got[got.len().saturating_sub(300)..])
    );
    assert_eq!(
        first_difference(&got[..want.len()], &want),
        None,
        "bytes differ"
    );
    let rest = String::from_utf8_lossy(&got[want.len()..]).into_owned();
    assert!(!rest.contains("fell behind"), "{rest}");
}

/// A short command on a terminal shows exactly its bytes: through a daemon too, where the client
/// attaches after the agent already wrote (no clear-screen redraw in front, nothing lost).
fn a_short_command_shows_exactly_its_bytes_on_a_terminal(host: HostKind) {
    let env = TestEnv::for_host(host);
    let mut p = Spawn::new(
        &env,
        &["run", "--", &fake_agent(), "print:hello there", "print:bye"],
    )
    .start();
    let status = p.wait_within(Duration::from_secs(60));
    let _ = p.wait_output();
    assert_eq!(status.code(), Some(0), "{}", p.text());
    assert_eq!(p.text(), "hello there\r\nbye\r\n");
}

crate::both_hosts!(
    a_slow_pipe_reader_gets_every_byte,
    a_slow_terminal_gets_every_byte,
    a_short_command_shows_exactly_its_bytes_on_a_terminal,
);

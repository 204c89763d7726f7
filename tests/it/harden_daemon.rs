//! The daemon cannot be taken down or locked out by a client: requests out of bounds are
//! answered with an error (never an abort), and clients that connect and stall do not keep a live
//! client from its answers.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::daemon_support::{Env, agent_argv};
use mpm::daemon::client::{Client, ClientError};
use mpm::protocol::{ClientMsg, RunSpec, ServerMsg};

const T: Duration = Duration::from_secs(30);

fn connect(env: &Env) -> Client {
    let c = Client::connect(&env.socket()).expect("connect");
    c.set_read_timeout(Some(T)).expect("timeout");
    c
}

fn run_spec(env: &Env, cols: u16, rows: u16, argv: Vec<String>) -> RunSpec {
    serde_json::from_value(serde_json::json!({
        "argv": argv,
        "cwd": env.dir.path().display().to_string(),
        "cols": cols,
        "rows": rows,
    }))
    .expect("run spec")
}

fn assert_invalid(reply: Result<ServerMsg, ClientError>, what: &str) {
    match reply {
        Err(ClientError::Refused { code, message }) => {
            assert_eq!(code, "invalid", "{what}: {message}");
        }
        m => panic!("{what}: not refused: {m:?}"),
    }
}

fn assert_status(env: &Env) {
    let mut c = connect(env);
    assert!(
        matches!(c.request(&ClientMsg::Status), Ok(ServerMsg::Status(_))),
        "the daemon no longer answers"
    );
}

#[test]
fn out_of_bounds_requests_are_refused_and_the_daemon_lives_on() {
    let env = Env::new();
    let _daemon = env.start_daemon(None);
    let mut c = connect(&env);
    let argv = agent_argv(&["sleep:0"]);
    for (cols, rows) in [(65535, 65535), (0, 24), (80, 0), (65535, 24)] {
        let reply = c.request(&ClientMsg::Run(run_spec(&env, cols, rows, argv.clone())));
        assert_invalid(reply, &format!("{cols}x{rows}"));
    }
    let many = vec!["x".to_string(); mpm::protocol::MAX_ARGS + 1];
    let reply = c.request(&ClientMsg::Run(run_spec(&env, 80, 24, many)));
    assert_invalid(reply, "too many argv elements");
    let reply = c.request(&ClientMsg::Run(run_spec(&env, 80, 24, vec![])));
    assert_invalid(reply, "empty argv");
    let reply = c.request(&ClientMsg::Attach {
        session: "nope".into(),
        cols: Some(65535),
        rows: Some(65535),
    });
    assert_invalid(reply, "attach 65535x65535");
    // The same connection and new ones are still served.
    assert!(matches!(
        c.request(&ClientMsg::Status),
        Ok(ServerMsg::Status(_))
    ));
    assert_status(&env);
    // A frame over `daemon.max_frame_bytes` ends only its own connection.
    let mut big = connect(&env);
    let huge = vec!["x".repeat(1 << 20); 3];
    assert!(
        big.request(&ClientMsg::Run(run_spec(&env, 80, 24, huge)))
            .is_err()
    );
    assert_status(&env);
}

#[test]
fn three_hundred_stalled_clients_do_not_lock_out_a_live_one() {
    let env = Env::new();
    let _daemon = env.start_daemon(None);
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = UnixStream::connect(env.socket()).expect("connect");
        // Two bytes of a four-byte frame header, then nothing.
        s.write_all(&[0, 0]).expect("write");
        slow.push(s);
    }
    // Still connected on the client side: a live client gets its answers meanwhile.
    for _ in 0..3 {
        assert_status(&env);
    }
    drop(slow);
    assert_status(&env);
}

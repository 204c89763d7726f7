//! The `nats` backend with a `.creds` file (`executor.nats.creds`): a nats-server in operator
//! (JWT) mode, an account with JetStream, a user whose JWT and seed are in the creds file. The
//! JWTs are made here with the `nkeys` crate (what `nsc` would make). A worker with the file runs
//! a delegation; a worker without it is refused with a reason.

use std::process::Command;

use crate::common::{clear_mpm_vars, mpm_bin};
use crate::executor_support::{Harness, config, delegation_id, fake_agent, status};
use crate::nats_support::{NatsServer, Worker};

fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A JWT of `claims` (with `iss`, `sub`, `iat`, `jti` filled in), signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let header = b64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("mpm-test-{subject}"),
        "iat": 1_700_000_000u64,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = b64url(claims.to_string().as_bytes());
    let signing = format!("{header}.{body}");
    let sig = issuer.sign(signing.as_bytes()).expect("sign");
    format!("{signing}.{}", b64url(&sig))
}

#[test]
fn a_creds_file_from_the_config_authenticates_and_a_worker_without_it_is_refused() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    // JetStream needs a system account in operator mode.
    let system = nkeys::KeyPair::new_account();
    let op_jwt = jwt(
        &operator,
        &operator.public_key(),
        "mpm-test",
        serde_json::json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
    );
    let sys_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true,
        "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let acc_jwt = jwt(
        &operator,
        &account.public_key(),
        "mpm",
        serde_json::json!({"limits": unlimited, "default_permissions": {"pub": {}, "sub": {}},
                           "type": "account", "version": 2}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "mpm-worker",
        serde_json::json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                           "type": "user", "version": 2}),
    );
    let conf = format!(
        "operator: {op_jwt:?}\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{ {acc}: {acc_jwt:?}, {sys}: {sys_jwt:?} }}\n",
        acc = account.public_key(),
        sys = system.public_key()
    );
    let Some(nats) = NatsServer::start_conf(&conf, "nats") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let creds = home.path().join("mpm.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();

    let worker_cfg = serde_json::json!({
        "run": {"grace_secs": 0.3},
        "executor": {"nats": {"url": nats.url, "creds": creds}},
        "agents": {"echo": {"argv": ["sh", "-c", "echo \"authenticated $1\"", "sh", "{task}"], "timeout_secs": 30}},
    })
    .to_string();
    let _w = Worker::start(home.path(), &nats.url, "w1", &worker_cfg, "echo", 1);
    let mut cfg = config(vec![("echo", fake_agent(&["print:{task}"]))]);
    cfg.executor.backend = mpm::config::BackendKind::Nats;
    cfg.executor.nats.url = nats.url.clone();
    cfg.executor.nats.creds = Some(creds.clone());
    let mut h = Harness::start(&cfg);
    h.submit("echo", "hello");
    h.until_finished(1);
    let fin = h.finished("hello");
    assert_eq!(status(fin), "success", "{}", h.dump());
    let out =
        std::fs::read_to_string(h.out().join(format!("{}.stdout", delegation_id(fin)))).unwrap();
    assert_eq!(out, "authenticated hello\n");

    // Without the creds file: refused, and the error says why.
    let bare = home.path().join("bare.yaml");
    std::fs::write(
        &bare,
        serde_json::json!({"agents": {"echo": {"argv": ["echo", "{task}"]}}}).to_string(),
    )
    .unwrap();
    let mut cmd = Command::new(mpm_bin());
    clear_mpm_vars(&mut cmd);
    let out = cmd
        .args([
            "worker", "--nats", &nats.url, "--agents", "echo", "--name", "w2",
        ])
        .arg("--config")
        .arg(&bare)
        .arg("--state-dir")
        .arg(home.path().join("w2"))
        .env("XDG_STATE_HOME", home.path().join("xdg"))
        .output()
        .expect("mpm worker runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a worker without credentials connected: {stderr}"
    );
    assert!(
        stderr.contains("cannot connect to NATS at nats://127.0.0.1")
            && stderr.contains(": nats: "),
        "{stderr}"
    );
}

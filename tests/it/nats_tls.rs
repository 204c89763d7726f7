//! The `nats` backend over mutual TLS, configured only through `executor.nats` (`tls_ca`,
//! `tls_cert`, `tls_key`): a supervisor and a worker that present client certificates run a
//! delegation; a worker without a client certificate is refused by the server and says so.

use std::path::Path;
use std::process::Command;

use crate::common::{clear_mpm_vars, mpm_bin};
use crate::executor_support::{Harness, config, fake_agent, status};
use crate::nats_support::{NatsServer, Worker};

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with `openssl`.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // X.509 v3 certificates (rustls refuses v1): the server's names 127.0.0.1, the client's is for
    // client authentication.
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=mpm test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    for name in ["server", "client"] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN=mpm {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        let args = vec![
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

#[test]
fn mutual_tls_from_the_config_runs_a_delegation_and_a_worker_without_a_certificate_is_refused() {
    if which_openssl().is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "openssl is missing under CI"
        );
        println!("SKIPPED: openssl not installed");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let p = |f: &str| certs.path().join(f);
    let conf = format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true, timeout: 5 }}",
        p("server.pem"),
        p("server.key"),
        p("ca.pem")
    );
    let Some(nats) = NatsServer::start_conf(&conf, "tls") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let nats_cfg = serde_json::json!({
        "url": nats.url, "tls_ca": p("ca.pem"), "tls_cert": p("client.pem"), "tls_key": p("client.key"),
    });
    let worker_cfg = serde_json::json!({
        "run": {"grace_secs": 0.3},
        "executor": {"nats": nats_cfg},
        "agents": {"echo": {"argv": ["sh", "-c", "echo \"secure $1\"", "sh", "{task}"], "timeout_secs": 30}},
    })
    .to_string();
    let _w = Worker::start(home.path(), &nats.url, "w1", &worker_cfg, "echo", 1);

    let mut cfg = config(vec![("echo", fake_agent(&["print:{task}"]))]);
    cfg.executor.backend = mpm::config::BackendKind::Nats;
    cfg.executor.nats.url = nats.url.clone();
    cfg.executor.nats.tls_ca = Some(p("ca.pem"));
    cfg.executor.nats.tls_cert = Some(p("client.pem"));
    cfg.executor.nats.tls_key = Some(p("client.key"));
    let mut h = Harness::start(&cfg);
    h.submit("echo", "hello");
    h.until_finished(1);
    let fin = h.finished("hello");
    assert_eq!(status(fin), "success", "{}", h.dump());
    let id = crate::executor_support::delegation_id(fin);
    let out = std::fs::read_to_string(h.out().join(format!("{id}.stdout"))).unwrap();
    assert_eq!(out, "secure hello\n");

    // The same worker without a client certificate: the server refuses the handshake and the
    // worker exits with an error that names the server, instead of waiting forever.
    let bare = serde_json::json!({
        "executor": {"nats": {"url": nats.url, "tls_ca": p("ca.pem")}},
        "agents": {"echo": {"argv": ["echo", "{task}"]}},
    })
    .to_string();
    let cfg_file = home.path().join("bare.yaml");
    std::fs::write(&cfg_file, bare).unwrap();
    let mut cmd = Command::new(mpm_bin());
    clear_mpm_vars(&mut cmd);
    let out = cmd
        .args([
            "worker", "--nats", &nats.url, "--agents", "echo", "--name", "w2",
        ])
        .arg("--config")
        .arg(&cfg_file)
        .arg("--state-dir")
        .arg(home.path().join("w2"))
        .env("XDG_STATE_HOME", home.path().join("xdg"))
        .output()
        .expect("mpm worker runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a worker without a certificate connected: {stderr}"
    );
    assert!(
        stderr.contains("cannot connect to NATS at tls://127.0.0.1") && stderr.contains(": nats: "),
        "{stderr}"
    );
}

fn which_openssl() -> Option<()> {
    Command::new("openssl")
        .arg("version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| ())
}

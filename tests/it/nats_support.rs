//! Support for the NATS backend tests: a real `nats-server` with JetStream on a free loopback port
//! in a temp folder, and real `mpm worker` processes; both killed (whole group) on drop.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::common::{DEADLINE, clear_mpm_vars, mpm_bin, wait_until};

/// The nats-server binary, or `None` after printing SKIPPED (a failure under CI=true).
pub(crate) fn nats_server_bin() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nats-server is missing under CI (run .ci/install-nats.sh)"
        );
        println!("SKIPPED: nats-server not installed (apt-get install nats-server)");
    }
    found
}

/// A child in its own process group, killed with its group on drop.
pub(crate) struct Proc {
    pub child: Child,
}

impl Proc {
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL the process alone (not its group): a crash.
    pub(crate) fn crash(&mut self) {
        let _ = nix::sys::signal::kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A JetStream-enabled nats-server on 127.0.0.1.
pub(crate) struct NatsServer {
    pub url: String,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl NatsServer {
    /// A server started from a config file: `conf` is added after `listen` and `jetstream`
    /// (e.g. a `tls { ... }` block); the URL uses `scheme` (`nats` or `tls`).
    pub(crate) fn start_conf(conf: &str, scheme: &str) -> Option<Self> {
        let bin = nats_server_bin()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let file = dir.path().join("server.conf");
        std::fs::write(
            &file,
            format!(
                "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: {:?} }}\n{conf}\n",
                dir.path().join("js")
            ),
        )
        .unwrap();
        let log = dir.path().join("server.log");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .expect("nats-server starts");
        let mut proc = Proc { child };
        let addr = format!("127.0.0.1:{port}");
        assert!(
            wait_until(DEADLINE, || std::net::TcpStream::connect(&addr).is_ok()
                || matches!(proc.child.try_wait(), Ok(Some(_)))),
            "nats-server did not listen on {addr}"
        );
        assert!(
            matches!(proc.child.try_wait(), Ok(None)),
            "nats-server exited:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some(NatsServer {
            url: format!("{scheme}://{addr}"),
            _proc: proc,
            _dir: dir,
        })
    }

    pub(crate) fn start() -> Option<Self> {
        let bin = nats_server_bin()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("nats-server starts");
        let proc = Proc { child };
        let addr = format!("127.0.0.1:{port}");
        assert!(
            wait_until(DEADLINE, || std::net::TcpStream::connect(&addr).is_ok()),
            "nats-server did not listen on {addr}"
        );
        Some(NatsServer {
            url: format!("nats://{addr}"),
            _proc: proc,
            _dir: dir,
        })
    }
}

/// A running `mpm worker`, with its stderr lines collected.
pub(crate) struct Worker {
    pub proc: Proc,
    pub name: String,
    pub state: PathBuf,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    /// Start `mpm worker` with `config_yaml` as its `--config`, and wait until it is ready.
    pub(crate) fn start(
        home: &Path,
        url: &str,
        name: &str,
        config_yaml: &str,
        agents: &str,
        max_parallel: usize,
    ) -> Worker {
        let dir = home.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("worker.yaml");
        std::fs::write(&config, config_yaml).unwrap();
        let state = dir.join("state");
        let mut cmd = Command::new(mpm_bin());
        clear_mpm_vars(&mut cmd);
        cmd.args(["worker", "--nats", url, "--agents", agents, "--name", name])
            .args(["--max-parallel", &max_parallel.to_string()])
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .env("XDG_STATE_HOME", dir.join("xdg-state"))
            .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().expect("mpm worker starts");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let w = Worker {
            proc: Proc { child },
            name: name.to_string(),
            state,
            lines,
        };
        let ready = format!("mpm worker {name} ready");
        assert!(
            wait_until(DEADLINE, || w.text().contains(&ready)),
            "worker {name} not ready:\n{}",
            w.text()
        );
        w
    }

    pub(crate) fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// Kills leftover processes by pid on drop (sub-agents orphaned by a crashed worker).
#[derive(Default)]
pub(crate) struct PidGuard(pub Vec<i32>);

impl Drop for PidGuard {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

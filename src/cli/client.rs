//! Daemon clients: status, events, tickets, stop, attach, and the terminal relay `mpm run` uses when
//! a daemon hosts its session.
//!
//! All terminal handling lives here (raw mode, stdin/stdout relay, resize, detach on terminal
//! close); the daemon only sees frames.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::{Args, Subcommand};

use super::GlobalArgs;
use crate::daemon::client::{Client, unexpected};
use crate::protocol::{ClientMsg, EventFilter, Frame, RunSpec, ServerMsg, StatusReport, Ticket};

#[derive(Debug, Clone, Args)]
pub struct SocketArg {
    /// Daemon socket (default `$MPM_SOCKET`, then `$XDG_RUNTIME_DIR/mpm/mpm.sock`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

impl SocketArg {
    /// The socket to use: `--socket`, `MPM_SOCKET`, `daemon.socket` from the config, the default.
    pub fn path(&self, g: &GlobalArgs) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.socket {
            return Ok(p.clone());
        }
        let cfg = super::load_config(g, crate::config::Overrides::default())?.config;
        Ok(super::daemon_cmd::daemon_socket(
            None,
            cfg.daemon.socket.as_deref(),
        ))
    }

    fn connect(&self, g: &GlobalArgs) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.path(g)?)?)
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Keep printing new events as they happen.
    #[arg(long, short)]
    pub follow: bool,
    #[arg(long)]
    pub json: bool,
    /// Only this session's events.
    #[arg(long)]
    pub session: Option<String>,
    /// Only events of this kind (prefix match: `delegation` matches `delegation.finished`).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only events at or after this RFC 3339 time.
    #[arg(long, value_name = "TS")]
    pub since: Option<String>,
    /// At most this many stored events (the latest).
    #[arg(long, short = 'n')]
    pub limit: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum TicketsCommand {
    List(TicketsListArgs),
    Show(TicketArgs),
    Close(TicketArgs),
}

#[derive(Debug, Args)]
pub struct TicketsListArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    #[arg(long)]
    pub json: bool,
    /// Include closed tickets.
    #[arg(long)]
    pub all: bool,
    /// Only this project (working directory).
    #[arg(long, value_name = "DIR")]
    pub project: Option<String>,
}

#[derive(Debug, Args)]
pub struct TicketArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    pub session: String,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Ctrl-] detaches (so does closing the terminal); the session keeps running. \
                  `mpm attach SESSION` again redraws its current screen."
)]
pub struct AttachArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    pub session: String,
}

fn json_line<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

pub fn status(g: &GlobalArgs, a: StatusArgs) -> anyhow::Result<i32> {
    let mut c = a.socket.connect(g)?;
    let r: StatusReport = match c.request(&ClientMsg::Status)? {
        ServerMsg::Status(r) => *r,
        m => return Err(unexpected(m).into()),
    };
    if a.json {
        println!("{}", json_line(&r));
        return Ok(0);
    }
    println!(
        "mpm daemon {} (pid {}, up {}s, {:.1} MB) on {}",
        r.version, r.daemon_pid, r.uptime_secs, r.daemon_rss_mb, r.socket
    );
    println!(
        "governor: {}   delegations: {} queued, {} running   events stored: {}",
        r.governor_mode, r.delegations_queued, r.delegations_running, r.events_stored
    );
    if r.sessions.is_empty() {
        println!("no sessions");
    }
    for s in &r.sessions {
        let rss = s
            .rss_mb
            .map(|m| format!("{m:.1} MB"))
            .unwrap_or_else(|| "-".into());
        let state = match (s.state.as_str(), s.exit_code, s.agent_state) {
            ("ended", Some(c), _) => format!("ended ({c})"),
            ("running", _, Some(a)) => a.as_str().to_string(),
            (st, _, _) => st.to_string(),
        };
        println!(
            "{}  pid {:<7} {:<11} {:>9}  attached {}  {}  ({})",
            s.id,
            s.pid,
            state,
            rss,
            s.attached,
            s.command.join(" "),
            s.cwd
        );
    }
    Ok(0)
}

fn print_event(ev: &crate::events::Event, json: bool) {
    if json {
        println!("{}", ev.to_json_line());
        return;
    }
    let v = serde_json::to_value(ev).unwrap_or_default();
    let mut extra = Vec::new();
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            if matches!(
                k.as_str(),
                "ts" | "session" | "kind" | "trace_id" | "step_id" | "parent_step_id"
            ) || val.is_null()
            {
                continue;
            }
            let s = match val {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            extra.push(format!("{k}={s}"));
        }
    }
    println!(
        "{} {} {:<20} {}",
        ev.ts,
        short(&ev.session),
        ev.kind(),
        extra.join(" ")
    );
}

pub fn events(g: &GlobalArgs, a: EventsArgs) -> anyhow::Result<i32> {
    // Normalise to the stored format (UTC, milliseconds) so the comparison is exact.
    let since = match &a.since {
        None => None,
        Some(s) => Some(
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| super::UsageError(format!("--since {s:?}: {e} (want RFC 3339)")))?
                .with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
    };
    let mut c = a.socket.connect(g)?;
    c.send(&ClientMsg::Events {
        filter: EventFilter {
            session: a.session,
            kind: a.kind,
            since,
            limit: a.limit,
            after_seq: None,
        },
        follow: a.follow,
    })?;
    let stdout = std::io::stdout();
    loop {
        match c.recv_msg() {
            Ok(ServerMsg::Event { event, .. }) => {
                print_event(&event, a.json);
                let _ = stdout.lock().flush();
            }
            Ok(ServerMsg::EndOfEvents) if !a.follow => return Ok(0),
            Ok(ServerMsg::EndOfEvents) => {}
            Ok(m) => return Err(unexpected(m).into()),
            // The daemon went away while following: that ends the stream.
            Err(crate::daemon::client::ClientError::Frame(crate::protocol::FrameError::Closed))
                if a.follow =>
            {
                return Ok(0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn ticket_id(s: &str) -> anyhow::Result<i64> {
    s.trim_start_matches('#')
        .parse()
        .map_err(|_| super::UsageError(format!("ticket id must be a number, got {s:?}")).into())
}

fn print_ticket(t: &Ticket, json: bool, long: bool) {
    if json {
        println!("{}", json_line(t));
    } else if long {
        println!("#{} {} {} [{}]", t.id, t.ticket_type, t.title, t.status);
        if let Some(p) = &t.priority {
            println!("  priority:   {p}");
        }
        println!("  project:    {}", t.project);
        println!("  session:    {}", t.source_session);
        println!("  first seen: {}", t.first_seen);
        println!("  last seen:  {} ({} times)", t.last_seen, t.seen_count);
    } else {
        println!(
            "#{:<5} {:<8} {:<6} {}  ({})",
            t.id, t.ticket_type, t.status, t.title, t.project
        );
    }
}

pub fn tickets(g: &GlobalArgs, cmd: TicketsCommand) -> anyhow::Result<i32> {
    match cmd {
        TicketsCommand::List(a) => {
            let mut c = a.socket.connect(g)?;
            match c.request(&ClientMsg::TicketsList {
                project: a.project,
                all: a.all,
            })? {
                ServerMsg::Tickets { tickets } => {
                    if a.json {
                        println!("{}", json_line(&tickets));
                    } else if tickets.is_empty() {
                        println!("no tickets");
                    } else {
                        for t in &tickets {
                            print_ticket(t, false, false);
                        }
                    }
                    Ok(0)
                }
                m => Err(unexpected(m).into()),
            }
        }
        TicketsCommand::Show(a) => ticket_one(g, a, false),
        TicketsCommand::Close(a) => ticket_one(g, a, true),
    }
}

fn ticket_one(g: &GlobalArgs, a: TicketArgs, close: bool) -> anyhow::Result<i32> {
    let id = ticket_id(&a.id)?;
    let mut c = a.socket.connect(g)?;
    let msg = if close {
        ClientMsg::TicketClose { id }
    } else {
        ClientMsg::TicketShow { id }
    };
    match c.request(&msg)? {
        ServerMsg::Ticket { ticket } => {
            print_ticket(&ticket, a.json, !close);
            Ok(0)
        }
        m => Err(unexpected(m).into()),
    }
}

pub fn stop(g: &GlobalArgs, a: StopArgs) -> anyhow::Result<i32> {
    let mut c = a.socket.connect(g)?;
    match c.request(&ClientMsg::Stop { session: a.session })? {
        ServerMsg::Stopped { session, exit_code } => {
            match exit_code {
                Some(code) => println!("stopped {session} (exit status {code})"),
                None => println!("stopped {session}"),
            }
            Ok(0)
        }
        m => Err(unexpected(m).into()),
    }
}

pub fn attach(g: &GlobalArgs, a: AttachArgs) -> anyhow::Result<i32> {
    let c = a.socket.connect(g)?;
    match relay(c, &a.session)? {
        RelayEnd::Detached => {
            eprintln!("\r\n[mpm: detached from {}]", short(&a.session));
            Ok(0)
        }
        RelayEnd::Ended(code) => Ok(code.unwrap_or(1)),
    }
}

/// `mpm run` with a daemon: spawn `spec` in the daemon and relay this terminal to it. Returns the
/// session's exit status, or 0 after a detach (the session keeps running).
pub fn run_in_daemon(mut c: Client, mut spec: RunSpec) -> anyhow::Result<i32> {
    if let Some((cols, rows)) = terminal_size() {
        spec.cols = cols;
        spec.rows = rows;
    }
    let id = match c.request(&ClientMsg::Run(spec))? {
        ServerMsg::Spawned { session, .. } => session,
        m => return Err(unexpected(m).into()),
    };
    match relay(c, &id)? {
        RelayEnd::Detached => {
            eprintln!("\r\n[mpm: detached; the session keeps running: mpm attach {id}]");
            Ok(0)
        }
        RelayEnd::Ended(code) => Ok(code.unwrap_or(1)),
    }
}

/// How an attach ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayEnd {
    /// The user detached (or the terminal went away); the session keeps running.
    Detached,
    /// The session ended with this status.
    Ended(Option<i32>),
}

/// The detach key: Ctrl-] (as in telnet), alone in one read.
pub const DETACH_KEY: u8 = 0x1d;

/// The terminal size of stdout, when it is a terminal.
fn terminal_size() -> Option<(u16, u16)> {
    let ws = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let mut ws = ws;
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointed-to struct, which lives on our stack.
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

/// Puts stdin in raw mode while alive, when it is a terminal.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let Ok(orig) = tcgetattr(stdin.as_fd()) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &raw).is_err() {
            return RawMode(None);
        }
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSADRAIN,
                orig,
            );
        }
    }
}

fn send_on(w: &Mutex<UnixStream>, f: &Frame) -> bool {
    let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
    crate::protocol::write_frame(&mut *w, f).is_ok()
}

/// Attach to `session` and relay this terminal until detach (Ctrl-], end of stdin, SIGHUP or
/// SIGTERM) or the session's end.
pub fn relay(mut c: Client, session: &str) -> anyhow::Result<RelayEnd> {
    let size = terminal_size();
    c.send(&ClientMsg::Attach {
        session: session.to_string(),
        cols: size.map(|s| s.0),
        rows: size.map(|s| s.1),
    })?;
    match c.recv_msg()? {
        ServerMsg::Attached { .. } => {}
        ServerMsg::SessionEnded { exit_code, .. } => {
            eprintln!("mpm: session {} has ended", short(session));
            return Ok(RelayEnd::Ended(exit_code));
        }
        m => return Err(unexpected(m).into()),
    }
    let writer = Arc::new(Mutex::new(c.writer()?));
    let _raw = RawMode::enter();

    // stdin -> socket.
    let w = writer.clone();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 8192];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) if buf[..n] == [DETACH_KEY] => break,
                Ok(n) => {
                    if !send_on(&w, &Frame::Data(buf[..n].to_vec())) {
                        return;
                    }
                }
            }
        }
        send_on(&w, &Frame::json(&ClientMsg::Detach));
    });

    // Signals: resize on SIGWINCH; a closed terminal (SIGHUP) or SIGTERM detaches.
    let w = writer.clone();
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGWINCH,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGTERM,
    ]) {
        std::thread::spawn(move || {
            for sig in signals.forever() {
                if sig == signal_hook::consts::SIGWINCH {
                    if let Some((cols, rows)) = terminal_size() {
                        send_on(&w, &Frame::json(&ClientMsg::Resize { cols, rows }));
                    }
                } else {
                    send_on(&w, &Frame::json(&ClientMsg::Detach));
                }
            }
        });
    }

    // socket -> stdout.
    let mut out = std::io::stdout().lock();
    loop {
        let frame = match c.recv() {
            Ok(f) => f,
            Err(_) => return Ok(RelayEnd::Detached),
        };
        match frame {
            Frame::Data(bytes) => {
                if out.write_all(&bytes).and_then(|_| out.flush()).is_err() {
                    send_on(&writer, &Frame::json(&ClientMsg::Detach));
                }
            }
            f => match f.parse::<ServerMsg>() {
                Ok(ServerMsg::Detached) => return Ok(RelayEnd::Detached),
                Ok(ServerMsg::SessionEnded { exit_code, .. }) => {
                    return Ok(RelayEnd::Ended(exit_code));
                }
                Ok(ServerMsg::Error { code, message }) if code == "too_slow" => {
                    anyhow::bail!("{message}");
                }
                Ok(ServerMsg::Error { code, message }) => {
                    tracing::warn!(%code, %message, "daemon error while attached");
                }
                Ok(_) | Err(_) => {}
            },
        }
    }
}

//! Daemon clients: status, events, tickets, stop, attach, and the terminal relay `mpm run` uses when
//! a daemon hosts its session.
//!
//! All terminal handling lives here (raw mode, stdin/stdout relay, resize, detach on terminal
//! close); the daemon only sees frames.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::{Args, Subcommand};

use super::GlobalArgs;
use super::output::{err, errln, outln};
use crate::daemon::client::{Client, unexpected};
use crate::protocol::{
    ClientMsg, ErrorCode, EventFilter, Frame, HostedState, RunSpec, ServerMsg, StatusReport, Ticket,
};
use crate::pty::keys::{DetachKeys, DetachScanner, MODE_RESET, Scan};

#[derive(Debug, Clone, Args)]
pub(crate) struct SocketArg {
    /// Daemon socket (default `$MPM_SOCKET`, then `$XDG_RUNTIME_DIR/mpm/mpm.sock`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

impl SocketArg {
    /// The socket to use: `--socket`, `MPM_SOCKET`, `daemon.socket` from the config, the default.
    pub(crate) fn path(&self, g: &GlobalArgs) -> anyhow::Result<PathBuf> {
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

    /// The daemon, or — when none answers — the store it (and every in-process `mpm run`) writes,
    /// opened directly: reads work either way.
    fn connect_or_store(&self, g: &GlobalArgs) -> anyhow::Result<Source> {
        let path = self.path(g)?;
        match Client::connect(&path) {
            Ok(c) => Ok(Source::Daemon(c)),
            Err(crate::daemon::client::ClientError::NoDaemon(_)) => {
                let cfg = super::load_config(g, crate::config::Overrides::default())?.config;
                let dir = cfg
                    .daemon
                    .state_dir
                    .clone()
                    .unwrap_or_else(crate::config::paths::state_dir);
                tracing::debug!(state_dir = %dir.display(), "no daemon: reading the store");
                let store = crate::store::Store::open_in(&dir)?;
                Ok(Source::Store(store))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Where reads come from.
enum Source {
    Daemon(Client),
    /// No daemon answers: its store, read (and, for `tickets close`, written) directly.
    Store(crate::store::Store),
}

/// Ended sessions `status` shows without `--all` (running ones are always shown).
const RECENT_ENDED: usize = 10;

/// Running sessions and the [`RECENT_ENDED`] latest ended ones (all with `all`), newest first.
fn recent_sessions(
    mut list: Vec<crate::protocol::SessionInfo>,
    all: bool,
) -> Vec<crate::protocol::SessionInfo> {
    list.sort_by(|a, b| b.started_at.cmp(&a.started_at));
    if all {
        return list;
    }
    let mut ended = 0;
    list.retain(|s| {
        if s.state == HostedState::Running {
            return true;
        }
        ended += 1;
        ended <= RECENT_ENDED
    });
    list
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    #[arg(long)]
    pub json: bool,
    /// Every ended session, not only the latest ten.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
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
pub(crate) enum TicketsCommand {
    List(TicketsListArgs),
    Show(TicketArgs),
    Close(TicketArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TicketsListArgs {
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
pub(crate) struct TicketArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StopArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    pub session: String,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Ctrl-] (or --detach-keys, run.detach_keys) detaches, and so does closing the \
                  terminal; the session keeps running. Typed twice, the agent gets the key. \
                  `mpm attach SESSION` again redraws its current screen."
)]
pub(crate) struct AttachArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// The detach keys: `ctrl-X` or a character, comma-separated (default `run.detach_keys`,
    /// `ctrl-]`).
    #[arg(long, value_name = "KEYS")]
    pub detach_keys: Option<String>,
    pub session: String,
}

fn json_line<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

pub(super) fn status(g: &GlobalArgs, a: StatusArgs) -> anyhow::Result<i32> {
    let mut c = match a.socket.connect_or_store(g)? {
        Source::Daemon(c) => c,
        Source::Store(store) => return status_from_store(&store, &a),
    };
    let mut r: StatusReport = match c.request(&ClientMsg::Status)? {
        ServerMsg::Status(r) => *r,
        m => return Err(unexpected(m).into()),
    };
    // In-process sessions running now answer on their own sockets. Ended ones stay out: the
    // daemon lists what it hosted (its own ended records), as before.
    let live = crate::live::query_all();
    let mut list = std::mem::take(&mut r.sessions);
    merge_live(&mut list, &live);
    r.sessions = recent_sessions(list, a.all);
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["in_process"] = serde_json::to_value(&live)?;
        outln!("{}", json_line(&v))?;
        return Ok(0);
    }
    outln!(
        "mpm daemon {} (pid {}, up {}s, {:.1} MB) on {}",
        r.version,
        r.daemon_pid,
        r.uptime_secs,
        r.daemon_rss_mb,
        r.socket
    )?;
    outln!(
        "governor: {}   delegations: {} queued, {} running   events stored: {}",
        r.governor_mode,
        r.delegations_queued,
        r.delegations_running,
        r.events_stored
    )?;
    print_sessions(&r.sessions)?;
    Ok(0)
}

/// `status` when no daemon answers: the sessions the store knows (in-process runs, and a
/// daemon's before it stopped).
fn status_from_store(store: &crate::store::Store, a: &StatusArgs) -> anyhow::Result<i32> {
    let live = crate::live::query_all();
    let mut list = store_sessions(store)?;
    merge_live(&mut list, &live);
    mark_lost(&mut list, &live);
    let list = recent_sessions(list, a.all);
    if a.json {
        outln!(
            "{}",
            json_line(&serde_json::json!({
                "daemon": null,
                "store": store.path(),
                "sessions": list,
                "in_process": live,
            }))
        )?;
        return Ok(0);
    }
    outln!(
        "no mpm daemon running; live in-process sessions, and sessions from the store {}",
        store.path().display()
    )?;
    print_sessions(&list)?;
    Ok(0)
}

/// Put the live in-process sessions into `list`: each replaces the row of the same id (the
/// store's view of a running session is its start; the live one is now).
fn merge_live(list: &mut Vec<crate::protocol::SessionInfo>, live: &[crate::live::LiveSession]) {
    let pids: Vec<u32> = live.iter().map(|l| l.pid).filter(|&p| p > 0).collect();
    let rss: std::collections::HashMap<u32, Option<f64>> = pids
        .iter()
        .copied()
        .zip(crate::daemon::trees_rss_mb(&pids))
        .collect();
    for l in live {
        let info = crate::protocol::SessionInfo {
            id: l.id.clone(),
            pid: l.pid,
            command: l.command.clone(),
            cwd: l.cwd.clone(),
            started_at: l.started_at.clone(),
            state: HostedState::Running,
            exit_code: None,
            attached: 0,
            rss_mb: rss.get(&l.pid).copied().flatten(),
            agent_state: Some(l.agent_state),
        };
        match list.iter_mut().find(|s| s.id == l.id) {
            Some(s) => {
                let started = std::mem::take(&mut s.started_at);
                *s = info;
                if s.started_at.is_empty() {
                    s.started_at = started;
                }
            }
            None => list.push(info),
        }
    }
}

/// Without a daemon, a session the store still has as running that no live endpoint answered for
/// and whose agent is gone was never ended in the record: its `mpm` was SIGKILLed (the watchdog
/// stopped the agent) or its daemon died. Say so instead of listing it as running for ever. An
/// agent that is still alive keeps `running` (a session whose endpoint is not up yet, say).
fn mark_lost(list: &mut [crate::protocol::SessionInfo], live: &[crate::live::LiveSession]) {
    for s in list.iter_mut() {
        let answered = live.iter().any(|l| l.id == s.id);
        if s.state == HostedState::Running && !answered && !pid_alive(s.pid) {
            s.state = HostedState::Lost;
        }
    }
}

/// Whether `pid` names a live process, not a zombie (0: unknown, taken as gone).
fn pid_alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|p| p > 0 && crate::process::procfs::is_alive(p))
}

/// Every session the store knows, as `status` lists them.
fn store_sessions(
    store: &crate::store::Store,
) -> anyhow::Result<Vec<crate::protocol::SessionInfo>> {
    let rows = store.sessions()?;
    Ok(rows
        .into_iter()
        .map(|r| crate::protocol::SessionInfo {
            id: r.id,
            pid: r.pid.unwrap_or(0),
            command: r.command,
            cwd: r.cwd,
            started_at: r.started_at,
            state: if r.ended_at.is_some() || r.state == "ended" {
                HostedState::Ended
            } else {
                HostedState::Running
            },
            exit_code: r.exit_code,
            attached: 0,
            rss_mb: None,
            agent_state: None,
        })
        .collect())
}

fn print_sessions(sessions: &[crate::protocol::SessionInfo]) -> anyhow::Result<()> {
    if sessions.is_empty() {
        outln!("no sessions")?;
    }
    for s in sessions {
        let rss = s
            .rss_mb
            .map(|m| format!("{m:.1} MB"))
            .unwrap_or_else(|| "-".into());
        let state = match (s.state, s.exit_code, s.agent_state) {
            (HostedState::Ended, Some(c), _) => format!("ended ({c})"),
            (HostedState::Running, _, Some(a)) => a.as_str().to_string(),
            (st, _, _) => st.to_string(),
        };
        outln!(
            "{}  pid {:<7} {:<11} {:>9}  attached {}  {}  ({})",
            s.id,
            s.pid,
            state,
            rss,
            s.attached,
            s.command.join(" "),
            s.cwd
        )?;
    }
    Ok(())
}

fn print_event(ev: &crate::events::Event, json: bool) -> anyhow::Result<()> {
    if json {
        return outln!("{}", ev.to_json_line());
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
    outln!(
        "{} {} {:<20} {}",
        ev.ts,
        short(&ev.session),
        ev.kind(),
        extra.join(" ")
    )
}

pub(super) fn events(g: &GlobalArgs, a: EventsArgs) -> anyhow::Result<i32> {
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
    let filter = EventFilter {
        session: a.session,
        kind: a.kind,
        since,
        limit: a.limit,
        after_seq: None,
    };
    let mut c = match a.socket.connect_or_store(g)? {
        Source::Daemon(c) => c,
        Source::Store(store) => return events_from_store(&store, filter, a.follow, a.json),
    };
    c.send(&ClientMsg::Events {
        filter,
        follow: a.follow,
    })?;
    let stdout = std::io::stdout();
    loop {
        match c.recv_msg() {
            Ok(ServerMsg::Event { event, .. }) => {
                print_event(&event, a.json)?;
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

/// How often `events --follow` looks for new events in the store when no daemon answers.
const STORE_FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// `events` when no daemon answers: from the store; `--follow` reads new ones as they are stored
/// (by in-process sessions), by sequence number.
fn events_from_store(
    store: &crate::store::Store,
    mut filter: EventFilter,
    follow: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let stdout = std::io::stdout();
    loop {
        for (seq, ev) in store.events(&filter)? {
            print_event(&ev, json)?;
            filter.after_seq = Some(filter.after_seq.unwrap_or(0).max(seq));
        }
        let _ = stdout.lock().flush();
        if !follow {
            return Ok(0);
        }
        // Only new events from now on.
        filter.limit = None;
        std::thread::sleep(STORE_FOLLOW_EVERY);
    }
}

fn ticket_id(s: &str) -> anyhow::Result<i64> {
    s.trim_start_matches('#')
        .parse()
        .map_err(|_| super::UsageError(format!("ticket id must be a number, got {s:?}")).into())
}

fn print_ticket(t: &Ticket, json: bool, long: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", json_line(t))?;
    } else if long {
        outln!("#{} {} {} [{}]", t.id, t.ticket_type, t.title, t.status)?;
        if let Some(p) = &t.priority {
            outln!("  priority:   {p}")?;
        }
        outln!("  project:    {}", t.project)?;
        outln!("  session:    {}", t.source_session)?;
        outln!("  first seen: {}", t.first_seen)?;
        outln!("  last seen:  {} ({} times)", t.last_seen, t.seen_count)?;
    } else {
        outln!(
            "#{:<5} {:<8} {:<6} {}  ({})",
            t.id,
            t.ticket_type,
            t.status,
            t.title,
            t.project
        )?;
    }
    Ok(())
}

pub(super) fn tickets(g: &GlobalArgs, cmd: TicketsCommand) -> anyhow::Result<i32> {
    match cmd {
        TicketsCommand::List(a) => {
            let reply = match a.socket.connect_or_store(g)? {
                Source::Daemon(mut c) => c.request(&ClientMsg::TicketsList {
                    project: a.project,
                    all: a.all,
                })?,
                Source::Store(store) => ServerMsg::Tickets {
                    tickets: store.tickets(a.project.as_deref(), a.all)?,
                },
            };
            match reply {
                ServerMsg::Tickets { tickets } => {
                    if a.json {
                        outln!("{}", json_line(&tickets))?;
                    } else if tickets.is_empty() {
                        outln!("no tickets")?;
                    } else {
                        for t in &tickets {
                            print_ticket(t, false, false)?;
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
    let msg = if close {
        ClientMsg::TicketClose { id }
    } else {
        ClientMsg::TicketShow { id }
    };
    let reply = match a.socket.connect_or_store(g)? {
        Source::Daemon(mut c) => c.request(&msg)?,
        Source::Store(store) => ServerMsg::Ticket {
            ticket: if close {
                store.close_ticket(id)?
            } else {
                store.ticket(id)?
            },
        },
    };
    match reply {
        ServerMsg::Ticket { ticket } => {
            print_ticket(&ticket, a.json, !close)?;
            Ok(0)
        }
        m => Err(unexpected(m).into()),
    }
}

pub(super) fn stop(g: &GlobalArgs, a: StopArgs) -> anyhow::Result<i32> {
    let mut c = a.socket.connect(g)?;
    match c.request(&ClientMsg::Stop { session: a.session })? {
        ServerMsg::Stopped { session, exit_code } => {
            match exit_code {
                Some(code) => outln!("stopped {session} (exit status {code})")?,
                None => outln!("stopped {session}")?,
            }
            Ok(0)
        }
        m => Err(unexpected(m).into()),
    }
}

pub(super) fn attach(g: &GlobalArgs, a: AttachArgs) -> anyhow::Result<i32> {
    let c = a.socket.connect(g)?;
    let spec = match &a.detach_keys {
        Some(k) => k.clone(),
        None => {
            super::load_config(g, crate::config::Overrides::default())?
                .config
                .run
                .detach_keys
        }
    };
    let keys = detach_keys(&spec, a.detach_keys.is_some())?;
    let end = relay(c, &a.session, false, &keys)?;
    Ok(report_end(&end, &a.session, false))
}

/// Parse detach keys; the error names where they came from (`--detach-keys` or `run.detach_keys`).
pub(super) fn detach_keys(spec: &str, from_flag: bool) -> anyhow::Result<DetachKeys> {
    DetachKeys::parse(spec).map_err(|e| {
        let origin = if from_flag {
            "--detach-keys"
        } else {
            "run.detach_keys"
        };
        super::UsageError(format!("{origin}: {e}")).into()
    })
}

/// Say truthfully how the relay ended, and return the exit status. Leaving a session that goes
/// on first switches off every terminal mode its agent may have set.
fn report_end(end: &RelayEnd, id: &str, from_run: bool) -> i32 {
    if matches!(end, RelayEnd::Detached | RelayEnd::Lost)
        && crate::pty::terminal::is_tty(std::io::stdout().as_fd())
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(MODE_RESET).and_then(|_| out.flush());
    }
    match end {
        RelayEnd::Detached if from_run => {
            errln!("\r\n[mpm: detached; the session keeps running: mpm attach {id}]");
            0
        }
        RelayEnd::Detached => {
            errln!("\r\n[mpm: detached from {}; it keeps running]", short(id));
            0
        }
        RelayEnd::Ended(code) => code.unwrap_or(1),
        RelayEnd::Lost => {
            errln!(
                "\r\n[mpm: lost the connection to the daemon; see `mpm status` for session {}]",
                short(id)
            );
            1
        }
        RelayEnd::OutputGone => 128 + libc::SIGPIPE,
    }
}

/// `mpm run` with a daemon: spawn `spec` in the daemon and relay this terminal to it. Returns the
/// session's exit status, or 0 after a detach (the session keeps running).
pub(super) fn run_in_daemon(
    mut c: Client,
    mut spec: RunSpec,
    keys: &DetachKeys,
) -> anyhow::Result<i32> {
    if let Some((cols, rows)) = terminal_size() {
        spec.cols = cols;
        spec.rows = rows;
    }
    let id = match c.request(&ClientMsg::Run(spec)) {
        Ok(ServerMsg::Spawned { session, .. }) => session,
        Ok(m) => return Err(unexpected(m).into()),
        // Not found / not executable: the shell's statuses, as in-process.
        Err(crate::daemon::client::ClientError::Refused { code, message })
            if matches!(code, ErrorCode::CommandNotFound | ErrorCode::NotExecutable) =>
        {
            errln!("mpm: {message}");
            return Ok(if code == ErrorCode::CommandNotFound {
                127
            } else {
                126
            });
        }
        Err(e) => return Err(e.into()),
    };
    let end = relay(c, &id, true, keys)?;
    Ok(report_end(&end, &id, true))
}

/// How an attach ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RelayEnd {
    /// The user detached (or the terminal went away); the session keeps running.
    Detached,
    /// The session ended with this status.
    Ended(Option<i32>),
    /// The connection to the daemon broke: whether the session runs is unknown here.
    Lost,
    /// Our stdout (not a terminal) went away: the session ends as a writer into a closed pipe.
    OutputGone,
}

/// After the detach keys, how long a second press may take to send them to the agent instead.
const DETACH_SECOND_PRESS: std::time::Duration = std::time::Duration::from_millis(500);

/// True when stdin has input (or its end) within `timeout`.
fn input_within(timeout: std::time::Duration) -> bool {
    let mut fds = [libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        if rc < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        }
        return rc != 0;
    }
}

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
/// SIGTERM) or the session's end. `own_session`: this is `mpm run`'s own session, so stdin that is
/// not a terminal is the agent's input to its end (no detach key; its end is the agent's EOF), and
/// SIGTERM/SIGHUP/SIGINT/SIGQUIT end the session (status 128+N) instead of detaching.
pub(super) fn relay(
    mut c: Client,
    session: &str,
    own_session: bool,
    keys: &DetachKeys,
) -> anyhow::Result<RelayEnd> {
    let size = terminal_size();
    c.send(&ClientMsg::Attach {
        session: session.to_string(),
        cols: size.map(|s| s.0),
        rows: size.map(|s| s.1),
    })?;
    match c.recv_msg()? {
        ServerMsg::Attached { .. } => {}
        ServerMsg::SessionEnded {
            exit_code, summary, ..
        } => {
            // `mpm run`'s own session that ended before the attach (`mpm run -- true`): its end
            // is the result, as in-process; only an attach to another session says it is over.
            if own_session {
                if let Some(text) = summary {
                    err!("{text}");
                }
            } else {
                errln!("mpm: session {} has ended", short(session));
            }
            return Ok(RelayEnd::Ended(exit_code));
        }
        m => return Err(unexpected(m).into()),
    }
    let writer = Arc::new(Mutex::new(c.writer()?));
    let pipe_input = own_session && !crate::pty::terminal::is_tty(std::io::stdin().as_fd());
    let stdout_tty = crate::pty::terminal::is_tty(std::io::stdout().as_fd());
    let mut raw = Some(RawMode::enter());

    // stdin -> socket. A terminal: the detach keys or a hang-up detach. Not a terminal (`mpm run`'s
    // own session): the end of input is the terminal's EOF for the agent, and the session goes on
    // to its end.
    let w = writer.clone();
    let mut scanner = DetachScanner::new(keys);
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut armed = false;
        loop {
            if armed && !input_within(DETACH_SECOND_PRESS) {
                if scanner.timeout() {
                    break;
                }
                armed = false;
            }
            // SAFETY: fd 0 stays open for the life of the process.
            let stdin = unsafe { std::os::fd::BorrowedFd::borrow_raw(0) };
            let n = match nix::unistd::read(stdin, &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            };
            let (bytes, detach) = if pipe_input {
                (buf[..n].to_vec(), false)
            } else {
                match scanner.feed(&buf[..n]) {
                    Scan::Forward(b) => (b, false),
                    Scan::Armed(b) => {
                        armed = true;
                        (b, false)
                    }
                    Scan::Detach(b) => (b, true),
                }
            };
            if !bytes.is_empty() && !send_on(&w, &Frame::Data(bytes)) {
                return;
            }
            if detach {
                break;
            }
        }
        if pipe_input {
            send_on(&w, &Frame::json(&ClientMsg::Eof));
        } else {
            send_on(&w, &Frame::json(&ClientMsg::Detach));
        }
    });

    // Signals: resize on SIGWINCH. A terminal client detaches on SIGHUP (its terminal closed) or
    // SIGTERM: the session keeps running for a later `mpm attach`, as with tmux. `mpm run` whose
    // stdin is not a terminal (a script, a pipeline, `&`) is the session's only owner: SIGTERM,
    // SIGHUP, SIGINT and SIGQUIT stop the session as they would in-process, and mpm exits 128+N.
    let w = writer.clone();
    let mut wanted = vec![
        signal_hook::consts::SIGWINCH,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGTERM,
    ];
    if pipe_input {
        wanted.extend([signal_hook::consts::SIGINT, signal_hook::consts::SIGQUIT]);
    }
    if let Ok(mut signals) = signal_hook::iterator::Signals::new(wanted) {
        std::thread::spawn(move || {
            for sig in signals.forever() {
                let msg = if sig == signal_hook::consts::SIGWINCH {
                    match terminal_size() {
                        Some((cols, rows)) => ClientMsg::Resize { cols, rows },
                        None => continue,
                    }
                } else if pipe_input {
                    ClientMsg::Signal { signal: sig }
                } else {
                    ClientMsg::Detach
                };
                send_on(&w, &Frame::json(&msg));
            }
        });
    }

    // socket -> stdout: straight to fd 1, one `write` per chunk (std's line-buffered stdout
    // would split a chunk at its last newline into two writes, and copy the rest).
    // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop never closes it.
    let mut out = std::mem::ManuallyDrop::new(unsafe {
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(libc::STDOUT_FILENO)
    });
    loop {
        let frame = match c.recv() {
            Ok(f) => f,
            Err(_) => return Ok(RelayEnd::Lost),
        };
        match frame {
            Frame::Data(bytes) => {
                if out.write_all(&bytes).is_err() {
                    send_on(&writer, &Frame::json(&ClientMsg::Detach));
                    if own_session && !stdout_tty {
                        return Ok(RelayEnd::OutputGone);
                    }
                }
            }
            f => match f.parse::<ServerMsg>() {
                Ok(ServerMsg::Detached) => return Ok(RelayEnd::Detached),
                Ok(ServerMsg::Suspended) => {
                    // Job control, as in-process: the user's terminal back, stop; on `fg`, raw
                    // mode, the size, and the agent continued.
                    // Without a terminal there is no job control: nobody could `fg` us.
                    if !nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
                        send_on(&writer, &Frame::json(&ClientMsg::Resume));
                        continue;
                    }
                    drop(raw.take());
                    let _ = out.flush();
                    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
                    raw = Some(RawMode::enter());
                    if let Some((cols, rows)) = terminal_size() {
                        send_on(&writer, &Frame::json(&ClientMsg::Resize { cols, rows }));
                    }
                    send_on(&writer, &Frame::json(&ClientMsg::Resume));
                }
                Ok(ServerMsg::SessionEnded {
                    exit_code, summary, ..
                }) => {
                    drop(raw.take());
                    if let Some(text) = summary {
                        err!("{text}");
                    }
                    return Ok(RelayEnd::Ended(exit_code));
                }
                Ok(ServerMsg::Error {
                    code: ErrorCode::TooSlow,
                    message,
                }) => {
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

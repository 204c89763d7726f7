//! `mpm delegations list|show|logs`: the delegations of live and past sessions.
//!
//! Events come from the daemon when one answers on its socket, else straight from the store
//! (`$XDG_STATE_HOME/mpm/mpm.db`, which in-process `mpm run` sessions write too), and are folded
//! into one record per delegation by [`crate::feedback::ledger`]. `logs` prints the sub-agent's
//! stdout (stream-json rendered as text; `--raw` as written) and, with `--follow`, keeps printing
//! until the delegation has ended.

use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use super::client::SocketArg;
use super::{GlobalArgs, UsageError};
use crate::config::Config;
use crate::events::Event;
use crate::feedback::ledger::{DelegationRecord, Ledger};
use crate::protocol::{ClientMsg, EventFilter, ServerMsg};

#[derive(Debug, Subcommand)]
pub(crate) enum DelegationsCommand {
    /// One line per delegation: id, session, agent, status, duration, feedback, task.
    List(ListArgs),
    /// Everything known about one delegation, and the start of its result.
    Show(IdArgs),
    /// The sub-agent's output.
    Logs(LogsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Only this session (full id or a unique prefix).
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Delegation id (or a unique prefix of at least 4 characters).
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Delegation id (or a unique prefix of at least 4 characters).
    pub id: String,
    /// Keep printing until the delegation has ended.
    #[arg(long, short)]
    pub follow: bool,
    /// Print stdout exactly as the sub-agent wrote it (no stream-json rendering).
    #[arg(long)]
    pub raw: bool,
}

pub(super) fn delegations(g: &GlobalArgs, cmd: DelegationsCommand) -> anyhow::Result<i32> {
    let cfg = super::load_config(g, crate::config::Overrides::default())?.config;
    match cmd {
        DelegationsCommand::List(a) => {
            let ledger = load_ledger(g, &cfg, &a.socket, a.session.as_deref())?;
            let records = ledger.records();
            if a.json {
                for r in &records {
                    println!("{}", serde_json::to_string(r)?);
                }
            } else if records.is_empty() {
                println!("no delegations");
            } else {
                let width = records.iter().map(|r| r.agent.len()).max().unwrap_or(5);
                for r in records {
                    println!(
                        "{:<8}  {:<8}  {:<width$}  {:<9}  {:>7}  {:<20}  {}",
                        short(&r.delegation_id),
                        short(&r.session),
                        r.agent,
                        r.status,
                        r.duration_ms
                            .map(|d| format!("{:.1}s", d as f64 / 1000.0))
                            .unwrap_or_else(|| "-".into()),
                        r.feedback_label(),
                        one_line(&r.task, 80),
                    );
                }
            }
            Ok(0)
        }
        DelegationsCommand::Show(a) => {
            let ledger = load_ledger(g, &cfg, &a.socket, None)?;
            let r = ledger.find(&a.id).map_err(UsageError)?;
            if a.json {
                println!("{}", serde_json::to_string(r)?);
                return Ok(0);
            }
            print_record(r);
            Ok(0)
        }
        DelegationsCommand::Logs(a) => logs(g, &cfg, a),
    }
}

fn print_record(r: &DelegationRecord) {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!("delegation  {}", r.delegation_id);
    println!("session     {}", r.session);
    println!("agent       {}", r.agent);
    println!("task        {}", r.task);
    println!("status      {}", r.status);
    if let Some(p) = r.pid {
        println!("pid         {p}");
    }
    println!("queued      {}", opt(&r.queued_at));
    println!("started     {}", opt(&r.started_at));
    println!("finished    {}", opt(&r.finished_at));
    if let Some(d) = r.duration_ms {
        println!("duration    {:.1}s", d as f64 / 1000.0);
    }
    if let Some(c) = r.exit_code {
        println!("exit code   {c}");
    }
    if let Some(t) = r.tokens {
        println!("tokens      {t}");
    }
    if let Some(why) = &r.reason {
        println!("reason      {why}");
    }
    println!("feedback    {}", r.feedback_label());
    println!("output      {}", opt(&r.output_path));
    println!("result      {}", opt(&r.result_path));
    if let Some(p) = &r.result_path
        && let Ok(text) = std::fs::read_to_string(p)
    {
        let body = crate::executor::result_file::body_of(&text);
        println!();
        for line in body.lines().take(20) {
            println!("  {line}");
        }
    }
}

/// The first 8 characters of an id.
fn short(id: &str) -> &str {
    crate::executor::result_file::cut(id, 8)
}

/// Whitespace collapsed, cut to `max` characters with an ellipsis.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut s: String = flat.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// The state folder holding the store and session output.
pub(crate) fn state_dir(cfg: &Config) -> PathBuf {
    cfg.daemon
        .state_dir
        .clone()
        .unwrap_or_else(crate::config::paths::state_dir)
}

/// `delegation.*` events (optionally of one session): from the daemon when it answers, else from
/// the store. A missing store is no events.
pub(crate) fn load_events(
    g: &GlobalArgs,
    cfg: &Config,
    socket: &SocketArg,
    kind: Option<&str>,
    session: Option<&str>,
) -> anyhow::Result<Vec<Event>> {
    let filter = EventFilter {
        session: session.map(str::to_string),
        kind: kind.map(str::to_string),
        ..EventFilter::default()
    };
    let path = socket.path(g)?;
    if let Ok(mut c) = crate::daemon::client::Client::connect(&path) {
        c.send(&ClientMsg::Events {
            filter,
            follow: false,
        })?;
        let mut out = Vec::new();
        loop {
            match c.recv_msg()? {
                ServerMsg::Event { event, .. } => out.push(*event),
                ServerMsg::EndOfEvents => return Ok(out),
                m => return Err(crate::daemon::client::unexpected(m).into()),
            }
        }
    }
    let db = state_dir(cfg).join("mpm.db");
    if !db.exists() {
        return Ok(Vec::new());
    }
    let store = crate::store::Store::open(&db)?;
    Ok(store.events(&filter)?.into_iter().map(|(_, e)| e).collect())
}

fn load_ledger(
    g: &GlobalArgs,
    cfg: &Config,
    socket: &SocketArg,
    session: Option<&str>,
) -> anyhow::Result<Ledger> {
    let mut ledger = Ledger::new();
    // Each session's feedback mode first: with `feedback: off` nothing is "pending".
    for ev in load_events(g, cfg, socket, Some("session.started"), None)? {
        ledger.apply(&ev);
    }
    let events = load_events(g, cfg, socket, Some("delegation"), None)?;
    let session = match session {
        None => None,
        Some(s) => Some(resolve_session(&events, s)?),
    };
    for ev in &events {
        if session.as_ref().is_none_or(|s| *s == ev.session) {
            ledger.apply(ev);
        }
    }
    Ok(ledger)
}

/// A full session id from a unique prefix among the events' sessions (a full id always passes).
fn resolve_session(events: &[Event], s: &str) -> anyhow::Result<String> {
    let mut hits: Vec<&str> = events
        .iter()
        .map(|e| e.session.as_str())
        .filter(|id| id.starts_with(s))
        .collect();
    hits.sort_unstable();
    hits.dedup();
    match hits.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Ok(s.to_string()),
        _ => Err(UsageError(format!("session id {s:?} is ambiguous")).into()),
    }
}

/// Where a delegation's `<id>.stdout` is: next to its result or output file when known, else in
/// the session's output folder.
fn stdout_file(cfg: &Config, r: &DelegationRecord) -> PathBuf {
    let name = format!("{}.stdout", r.delegation_id);
    let known = r
        .result_path
        .as_deref()
        .or(r.output_path.as_deref())
        .and_then(|p| Path::new(p).parent().map(|d| d.join(&name)));
    if let Some(p) = known {
        return p;
    }
    let sessions = cfg
        .executor
        .output_dir
        .clone()
        .unwrap_or_else(|| state_dir(cfg).join("sessions"));
    let candidates = [
        sessions.join(&r.session).join(&name),
        state_dir(cfg).join("sessions").join(&r.session).join(&name),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}

fn logs(g: &GlobalArgs, cfg: &Config, a: LogsArgs) -> anyhow::Result<i32> {
    let mut record = load_ledger(g, cfg, &a.socket, None)?
        .find(&a.id)
        .map_err(UsageError)?
        .clone();
    let path = stdout_file(cfg, &record);
    let mut printer = LogPrinter {
        raw: a.raw,
        partial: Vec::new(),
    };
    let mut offset = 0u64;
    let stdout = std::io::stdout();
    loop {
        // Read what is there (the file appears with the sub-agent's first byte).
        if let Ok(mut f) = std::fs::File::open(&path) {
            f.seek(std::io::SeekFrom::Start(offset))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            offset += buf.len() as u64;
            let mut out = stdout.lock();
            if printer.feed(&buf, &mut out).is_err() {
                return Ok(0); // stdout closed: done
            }
            let _ = out.flush();
        }
        if !a.follow || record.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        let ledger = load_ledger(g, cfg, &a.socket, Some(&record.session))?;
        if let Ok(r) = ledger.find(&record.delegation_id) {
            record = r.clone();
        }
    }
    let mut out = stdout.lock();
    let _ = printer.finish(&mut out);
    if offset == 0 && !path.exists() {
        eprintln!(
            "mpm: delegation {} ({}) wrote no output",
            short(&record.delegation_id),
            record.status
        );
    }
    Ok(0)
}

/// Renders a sub-agent's stdout: stream-json as readable text (assistant text, tool calls, the
/// result), anything else as written.
struct LogPrinter {
    raw: bool,
    partial: Vec<u8>,
}

impl LogPrinter {
    fn feed(&mut self, bytes: &[u8], out: &mut impl std::io::Write) -> std::io::Result<()> {
        if self.raw {
            return out.write_all(bytes);
        }
        self.partial.extend_from_slice(bytes);
        while let Some(nl) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            render_line(&line[..line.len() - 1], out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            render_line(&line, out)?;
        }
        Ok(())
    }
}

fn render_line(line: &[u8], out: &mut impl std::io::Write) -> std::io::Result<()> {
    let trimmed = line.trim_ascii();
    if trimmed.starts_with(b"{")
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(trimmed)
        && let Some(kind) = v.get("type").and_then(|t| t.as_str())
    {
        match kind {
            "assistant" => {
                let blocks = v
                    .pointer("/message/content")
                    .and_then(|c| c.as_array())
                    .cloned()
                    .unwrap_or_default();
                for b in blocks {
                    match b.get("type").and_then(|t| t.as_str()) {
                        Some("text") => {
                            if let Some(t) = b.get("text").and_then(|t| t.as_str()) {
                                writeln!(out, "{t}")?;
                            }
                        }
                        Some("tool_use") => {
                            let name = b.get("name").and_then(|t| t.as_str()).unwrap_or("?");
                            writeln!(out, "[tool: {name}]")?;
                        }
                        _ => {}
                    }
                }
            }
            "result" => {
                if let Some(t) = v.get("result").and_then(|t| t.as_str()) {
                    writeln!(out, "[result]\n{t}")?;
                }
            }
            _ => {}
        }
        return Ok(());
    }
    out.write_all(line)?;
    out.write_all(b"\n")
}

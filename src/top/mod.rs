//! `mpm top`: a live terminal dashboard of sessions (state, agent, CPU, memory), running and queued
//! delegations with progress, recent tickets and errors, and resource warnings.
//!
//! It reads the store (`mpm.db`, which the daemon and in-process `mpm run` sessions both write), so
//! it works with a daemon and, for an in-process session, from a second terminal: events are read
//! incrementally (by sequence number) once a second, and each live session's process tree is
//! sampled from `/proc` for CPU and memory. Keys: ↑/↓ select a delegation, Tab switches to
//! sessions; `a` attaches to the selected session (daemon), `s` stops it (the daemon's `stop`, else
//! SIGTERM to the hosting `mpm run`), `c` cancels the selected delegation (SIGTERM to its process
//! group), `o` opens its result in `$PAGER`, `q` quits.

pub(crate) mod model;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};

use crate::events::DelegationPhase;
use crate::protocol::EventFilter;
use crate::store::Store;
use model::Model;

/// Where `top` reads and how it acts.
pub(crate) struct TopOptions {
    pub db: PathBuf,
    /// The daemon socket (attach and stop go through it when a daemon answers).
    pub socket: PathBuf,
    /// The `mpm` executable (for `attach`).
    pub exe: PathBuf,
    pub refresh: Duration,
}

#[derive(Clone, Copy, PartialEq)]
enum Focus {
    Delegations,
    Sessions,
}

struct App {
    model: Model,
    store: Option<Store>,
    after: Option<i64>,
    focus: Focus,
    sessions: TableState,
    delegations: TableState,
    status: String,
    last_sample: Instant,
}

impl App {
    fn refresh(&mut self, db: &std::path::Path) {
        if self.store.is_none() && db.exists() {
            self.store = Store::open(db).ok();
        }
        let Some(store) = &self.store else {
            self.status = format!("no store yet at {}", db.display());
            return;
        };
        let filter = EventFilter {
            after_seq: self.after,
            limit: if self.after.is_none() {
                Some(20_000)
            } else {
                None
            },
            ..EventFilter::default()
        };
        match store.events(&filter) {
            Ok(evs) => {
                for (seq, ev) in evs {
                    self.after = Some(seq);
                    self.model.apply(&ev);
                }
            }
            Err(e) => self.status = format!("store: {e}"),
        }
        if let Ok(rows) = store.sessions() {
            for r in rows.iter().filter(|r| r.state != "running") {
                self.model.mark_ended(&r.id);
            }
        }
        let secs = self.last_sample.elapsed().as_secs_f64();
        self.last_sample = Instant::now();
        self.model.sample(secs);
    }

    fn selected_session(&self) -> Option<String> {
        let rows = self.model.session_rows();
        let i = self.sessions.selected().unwrap_or(0);
        rows.get(i).map(|s| s.id.clone())
    }

    fn selected_delegation(&self) -> Option<crate::feedback::ledger::DelegationRecord> {
        let rows = self.model.delegation_rows();
        let i = self.delegations.selected().unwrap_or(0);
        rows.get(i).map(|r| (*r).clone())
    }
}

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    v.map(|x| format!("{x:.0}{unit}"))
        .unwrap_or_else(|| "-".into())
}

fn draw(f: &mut ratatui::Frame, app: &mut App) {
    let [head, sessions, delegations, lower, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Percentage(25),
        Constraint::Percentage(40),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let live = app.model.sessions.values().filter(|s| !s.ended).count();
    let running = app
        .model
        .ledger
        .records()
        .iter()
        .filter(|r| r.status == DelegationPhase::Running)
        .count();
    f.render_widget(
        Paragraph::new(format!(
            "mpm top — {live} live sessions, {running} delegations running  {}",
            app.status
        ))
        .style(Style::default().add_modifier(Modifier::BOLD)),
        head,
    );
    let bold = Style::default().add_modifier(Modifier::REVERSED);
    let srows: Vec<Row> = app
        .model
        .session_rows()
        .iter()
        .map(|s| {
            Row::new(vec![
                Cell::from(crate::executor::result_file::cut(&s.id, 8).to_string()),
                Cell::from(s.state.clone()),
                Cell::from(s.agent()),
                Cell::from(fmt_opt(s.cpu_percent, "%")),
                Cell::from(fmt_opt(s.rss_mb, " MB")),
                Cell::from(s.started_at.clone()),
            ])
        })
        .collect();
    let stable = Table::new(
        srows,
        [
            Constraint::Length(8),
            Constraint::Length(11),
            Constraint::Length(16),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Fill(1),
        ],
    )
    .header(Row::new([
        "session", "state", "agent", "cpu", "memory", "started",
    ]))
    .block(Block::default().borders(Borders::ALL).title("Sessions"))
    .row_highlight_style(if app.focus == Focus::Sessions {
        bold
    } else {
        Style::default()
    });
    f.render_stateful_widget(stable, sessions, &mut app.sessions);
    let drows: Vec<Row> = app
        .model
        .delegation_rows()
        .iter()
        .map(|r| {
            let progress = match r.status {
                DelegationPhase::Running => format!(
                    "{}{}{}",
                    r.tokens.map(|t| format!("{t} tok ")).unwrap_or_default(),
                    r.last_tool
                        .clone()
                        .map(|t| format!("[{t}]"))
                        .unwrap_or_default(),
                    if r.stalled { " STALLED" } else { "" }
                ),
                _ => r
                    .duration_ms
                    .map(|d| format!("{:.1}s {}", d as f64 / 1000.0, r.feedback_label()))
                    .unwrap_or_default(),
            };
            Row::new(vec![
                Cell::from(crate::executor::result_file::cut(&r.delegation_id, 8).to_string()),
                Cell::from(r.agent.clone()),
                Cell::from(r.status.as_str()),
                Cell::from(progress),
                Cell::from(crate::feedback::summary::fit(&r.task, 200)),
            ])
        })
        .collect();
    let dtable = Table::new(
        drows,
        [
            Constraint::Length(8),
            Constraint::Length(12),
            Constraint::Length(9),
            Constraint::Length(22),
            Constraint::Fill(1),
        ],
    )
    .header(Row::new(["id", "agent", "status", "progress", "task"]))
    .block(Block::default().borders(Borders::ALL).title("Delegations"))
    .row_highlight_style(if app.focus == Focus::Delegations {
        bold
    } else {
        Style::default()
    });
    f.render_stateful_widget(dtable, delegations, &mut app.delegations);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(lower);
    let recent: Vec<String> = app
        .model
        .tickets
        .iter()
        .rev()
        .map(|(_, t, title)| format!("{t}: {title}"))
        .chain(
            app.model
                .errors
                .iter()
                .rev()
                .map(|(_, e)| format!("ERROR {e}")),
        )
        .collect();
    f.render_widget(
        Paragraph::new(recent.join("\n")).block(
            Block::default()
                .borders(Borders::ALL)
                .title("Tickets and errors"),
        ),
        left,
    );
    let warnings: Vec<String> = app.model.warnings.iter().rev().cloned().collect();
    f.render_widget(
        Paragraph::new(warnings.join("\n")).block(
            Block::default()
                .borders(Borders::ALL)
                .title("Resource warnings"),
        ),
        right,
    );
    f.render_widget(
        Paragraph::new(
            "q quit  ↑↓ select  Tab sessions/delegations  a attach  s stop session  c cancel delegation  o open result",
        ),
        foot,
    );
}

/// What a key asks for that needs the terminal back (a child program in the foreground).
enum Handoff {
    Attach(String),
    Open(String),
}

/// Run the dashboard until `q`. The terminal is restored on every path (ratatui's panic hook too).
pub(crate) fn run(o: TopOptions) -> std::io::Result<()> {
    let mut app = App {
        model: Model::default(),
        store: None,
        after: None,
        focus: Focus::Delegations,
        sessions: TableState::default().with_selected(Some(0)),
        delegations: TableState::default().with_selected(Some(0)),
        status: String::new(),
        last_sample: Instant::now(),
    };
    let mut terminal = ratatui::init();
    let result = (|| -> std::io::Result<()> {
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                app.refresh(&o.db);
                next = Instant::now() + o.refresh;
            }
            terminal.draw(|f| draw(f, &mut app))?;
            let wait = next.saturating_duration_since(Instant::now());
            if !event::poll(wait)? {
                continue;
            }
            let TermEvent::Key(k) = event::read()? else {
                continue;
            };
            if k.kind != KeyEventKind::Press {
                continue;
            }
            let handoff = match k.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Tab => {
                    app.focus = if app.focus == Focus::Delegations {
                        Focus::Sessions
                    } else {
                        Focus::Delegations
                    };
                    None
                }
                KeyCode::Down | KeyCode::Char('j') => {
                    match app.focus {
                        Focus::Delegations => app.delegations.select_next(),
                        Focus::Sessions => app.sessions.select_next(),
                    }
                    None
                }
                KeyCode::Up | KeyCode::Char('k') => {
                    match app.focus {
                        Focus::Delegations => app.delegations.select_previous(),
                        Focus::Sessions => app.sessions.select_previous(),
                    }
                    None
                }
                KeyCode::Char('a') => app.selected_session().map(Handoff::Attach),
                KeyCode::Char('s') => {
                    if let Some(id) = app.selected_session() {
                        app.status = stop_session(&o, app.store.as_ref(), &id);
                    }
                    None
                }
                KeyCode::Char('c') => {
                    if let Some(r) = app.selected_delegation() {
                        app.status = cancel_delegation(&r);
                    }
                    None
                }
                KeyCode::Char('o') => match app.selected_delegation().and_then(|r| r.result_path) {
                    Some(p) => Some(Handoff::Open(p)),
                    None => {
                        app.status = "no result file yet".into();
                        None
                    }
                },
                _ => None,
            };
            if let Some(h) = handoff {
                ratatui::restore();
                let status = match &h {
                    Handoff::Attach(id) => std::process::Command::new(&o.exe)
                        .args(["attach", id])
                        .arg("--socket")
                        .arg(&o.socket)
                        .status(),
                    Handoff::Open(p) => {
                        let pager = std::env::var("PAGER").unwrap_or_else(|_| "less".into());
                        std::process::Command::new(pager).arg(p).status()
                    }
                };
                terminal = ratatui::init();
                terminal.clear()?;
                app.status = match status {
                    Ok(s) if s.success() => String::new(),
                    Ok(s) => format!("exited with {s}"),
                    Err(e) => format!("cannot run it: {e}"),
                };
            }
        }
    })();
    ratatui::restore();
    result
}

/// The daemon's `stop`, else SIGTERM to the `mpm run` that hosts the session in-process.
fn stop_session(o: &TopOptions, store: Option<&Store>, id: &str) -> String {
    if let Ok(mut c) = crate::daemon::client::Client::connect(&o.socket) {
        return match c.request(&crate::protocol::ClientMsg::Stop {
            session: id.to_string(),
        }) {
            Ok(_) => format!("stopped {}", crate::executor::result_file::cut(id, 8)),
            Err(e) => format!("stop failed: {e}"),
        };
    }
    let host = store.and_then(|s| s.session_host(id).ok().flatten());
    match host {
        Some(pid) => match nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        ) {
            Ok(()) => format!("asked mpm (pid {pid}) to stop the session"),
            Err(e) => format!("cannot signal pid {pid}: {e}"),
        },
        None => "no daemon, and the session's host is unknown".into(),
    }
}

/// A user cancel: the cancel marker (so the executor records the delegation `cancelled`, see
/// [`crate::executor::cancel`]), then SIGTERM to its process group.
fn cancel_delegation(r: &crate::feedback::ledger::DelegationRecord) -> String {
    match (r.status, r.pid) {
        (DelegationPhase::Running, Some(pid)) => {
            match crate::executor::cancel::request(&r.delegation_id)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGTERM,
                    )
                    .map_err(|e| e.to_string())
                }) {
                Ok(()) => format!(
                    "cancelled delegation {}",
                    crate::executor::result_file::cut(&r.delegation_id, 8)
                ),
                Err(e) => format!("cannot cancel {pid}: {e}"),
            }
        }
        _ => "only a running delegation can be cancelled".into(),
    }
}

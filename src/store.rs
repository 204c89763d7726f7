//! The durable store: SQLite (WAL) holding sessions, events, delegations and tickets.
//!
//! [`Store`] is an [`events::Sink`](crate::events::Sink): every event of every session goes in as it
//! is emitted, and the side tables (sessions, delegations, tickets) are kept up to date from the same
//! events in the same transaction. WAL with `synchronous=NORMAL` means a transaction that returned is
//! in the log file before the call returns: it survives the process being killed (kill -9); only a
//! power loss may drop the last transactions, never corrupt the file.
//!
//! Tickets are de-duplicated per project (the session's working directory) by ticket type and
//! normalised title (the session identity of [`crate::detect::identity`]: markdown, width,
//! whitespace and case folded, trailing punctuation dropped).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::events::{Event, EventBody, Sink};
use crate::protocol::{EventFilter, Ticket};

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's folder cannot be created.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database cannot be opened or migrated.
    #[error("database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// No ticket with this id.
    #[error("no ticket {0}")]
    NoTicket(i64),
}

/// What startup recovery found from a previous run that did not shut down cleanly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Sessions that were still marked running: now ended (`end_reason = daemon-restart`).
    pub sessions_ended: usize,
    /// Delegations that were queued or running: now `interrupted`, never started by themselves.
    pub delegations_interrupted: usize,
    /// The ended sessions' process identities (pid, start time in clock ticks since boot) where
    /// recorded, so the caller can stop trees the crashed host left behind.
    pub orphans: Vec<(u32, u64)>,
    /// The pids of the dead hosts (daemon or `mpm run`) of those sessions: processes tagged with
    /// their trees (`process::registry`) are what they left behind.
    pub hosts: Vec<u32>,
    /// The same roots as `orphans`, with the session each belongs to: (session, pid, start time).
    pub roots: Vec<(String, u32, u64)>,
}

/// A stored session row.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// The session id.
    pub id: String,
    /// The agent's pid, while known.
    pub pid: Option<u32>,
    /// The agent's argv.
    pub command: Vec<String>,
    /// Its working directory.
    pub cwd: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended, if it did.
    pub ended_at: Option<String>,
    /// The agent's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// `running` or `ended`.
    pub state: String,
    /// Why it ended (exit, signal, stopped by the daemon, lost), when known.
    pub end_reason: Option<String>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    pid INTEGER,
    command TEXT NOT NULL DEFAULT '[]',
    cwd TEXT NOT NULL DEFAULT '',
    started_at TEXT NOT NULL,
    ended_at TEXT,
    exit_code INTEGER,
    state TEXT NOT NULL DEFAULT 'running',
    end_reason TEXT,
    governor_mode TEXT,
    host_pid INTEGER,
    pid_start INTEGER
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    session TEXT NOT NULL,
    kind TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_session ON events(session, seq);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE TABLE IF NOT EXISTS delegations (
    id TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    agent TEXT NOT NULL,
    task TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    exit_code INTEGER,
    queued_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    output_path TEXT
);
CREATE INDEX IF NOT EXISTS delegations_status ON delegations(status);
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    ticket_type TEXT NOT NULL,
    norm_title TEXT NOT NULL,
    title TEXT NOT NULL,
    priority TEXT,
    source_session TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    seen_count INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL DEFAULT 'open',
    UNIQUE(project, ticket_type, norm_title)
);
"#;

/// The SQLite store. One connection behind a mutex: writes are small and serialised anyway.
pub struct Store {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
}

/// The ticket de-duplication key: the session's one identity of a text
/// ([`crate::detect::identity::normalize`]: markdown, width, whitespace and case folded, trailing
/// punctuation dropped), so a ticket seen on screen and in the transcript is one row.
pub fn normalise_title(title: &str) -> String {
    crate::detect::identity::normalize(title)
}

impl Store {
    /// Open (creating) the database `mpm.db` in `state_dir`, with WAL and the schema.
    pub fn open_in(state_dir: &Path) -> Result<Store, StoreError> {
        crate::config::paths::create_private_dir(state_dir).map_err(|source| StoreError::Dir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let db = state_dir.join("mpm.db");
        // Created 0600 before SQLite opens it: its -wal and -shm files copy the database's mode.
        let _ = crate::config::paths::private_file()
            .create(true)
            .append(true)
            .open(&db);
        for suffix in ["", "-wal", "-shm"] {
            let mut p = db.clone().into_os_string();
            p.push(suffix);
            let _ = crate::config::paths::make_private(std::path::Path::new(&p));
        }
        Store::open(&db)
    }

    /// Open (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        // A 512 KiB page cache (SQLite's default is 2 MiB): the daemon appends at the tail and
        // the OS caches the file anyway; the default let the daemon's RSS grow with the database
        // up to 2 MiB over its first thousand sessions.
        conn.pragma_update(None, "cache_size", -512)
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        Ok(Store {
            path: path.to_path_buf(),
            conn: Mutex::new(Some(conn)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(c) => f(c),
            None => Err(StoreError::Sql(rusqlite::Error::InvalidQuery)),
        }
    }

    /// Mark what a crashed run left behind: sessions still marked running whose hosting process
    /// (daemon or in-process `mpm run`) is gone become ended, and their queued/running delegations
    /// become `interrupted` (so nothing starts by itself after a restart). Sessions of a live
    /// in-process `mpm run` sharing the database are left alone.
    pub fn recover(&self) -> Result<Recovery, StoreError> {
        let now = crate::events::now_ts();
        let me = std::process::id();
        self.with(|c| {
            let tx = c.transaction()?;
            type Row = (String, Option<u32>, Option<u32>, Option<i64>);
            let orphans: Vec<Row> = {
                let mut st = tx.prepare(
                    "SELECT id, host_pid, pid, pid_start FROM sessions WHERE state='running'",
                )?;
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<Result<Vec<Row>, _>>()?
                    .into_iter()
                    .filter(|(_, host, _, _)| host.is_none_or(|h| h == me || !process_alive(h)))
                    .collect()
            };
            let mut recovery = Recovery::default();
            for (id, host, pid, start) in &orphans {
                if let Some(h) = host
                    && *h != me
                    && !recovery.hosts.contains(h)
                {
                    recovery.hosts.push(*h);
                }
                if let (Some(pid), Some(start)) = (pid, start) {
                    recovery.orphans.push((*pid, *start as u64));
                    recovery.roots.push((id.clone(), *pid, *start as u64));
                }
                recovery.sessions_ended += tx.execute(
                    "UPDATE sessions SET state='ended', ended_at=?2, end_reason='daemon-restart' WHERE id=?1",
                    params![id, now],
                )?;
                recovery.delegations_interrupted += tx.execute(
                    "UPDATE delegations SET status='interrupted', updated_at=?2 WHERE session=?1 AND status IN ('queued','running')",
                    params![id, now],
                )?;
            }
            tx.commit()?;
            Ok(recovery)
        })
    }

    /// Record a session before its first event (so tickets know its project).
    pub fn register_session(
        &self,
        id: &str,
        command: &[String],
        cwd: &str,
        pid: Option<u32>,
    ) -> Result<(), StoreError> {
        let cmd = serde_json::to_string(command).unwrap_or_else(|_| "[]".into());
        let now = crate::events::now_ts();
        self.with(|c| {
            c.execute(
                "INSERT INTO sessions(id, pid, command, cwd, started_at, state, host_pid) VALUES(?1,?2,?3,?4,?5,'running',?6)
                 ON CONFLICT(id) DO UPDATE SET pid=COALESCE(excluded.pid, pid), command=excluded.command, cwd=excluded.cwd,
                   host_pid=excluded.host_pid",
                params![id, pid, cmd, cwd, now, std::process::id()],
            )?;
            Ok(())
        })
    }

    /// Record `bus`'s session (command, working directory) and add this store as a sink of it, on
    /// its own writer thread (SQLite is never on an emitting thread's path): what an in-process
    /// `mpm run` does so its session lands in the same database as the daemon's.
    pub fn add_to_bus(
        self: &std::sync::Arc<Self>,
        bus: &crate::events::Bus,
        command: &[String],
        cwd: &str,
    ) -> Result<(), StoreError> {
        self.register_session(&bus.context().session, command, cwd, None)?;
        bus.add_writer("mpm-store", self.clone());
        Ok(())
    }

    /// Record the session's process identity (pid and its start time), so a daemon restarting
    /// after a crash can tell the session's tree from an unrelated process that reused the pid.
    pub fn set_session_process(&self, id: &str, pid: u32, start: u64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE sessions SET pid=?2, pid_start=?3 WHERE id=?1",
                params![id, pid, start as i64],
            )?;
            Ok(())
        })
    }

    /// Mark a session ended (idempotent; keeps the first exit code recorded).
    pub fn end_session(
        &self,
        id: &str,
        exit_code: Option<i32>,
        reason: &str,
    ) -> Result<(), StoreError> {
        let now = crate::events::now_ts();
        self.with(|c| {
            c.execute(
                "UPDATE sessions SET state='ended', ended_at=COALESCE(ended_at, ?2),
                 exit_code=COALESCE(exit_code, ?3), end_reason=COALESCE(end_reason, ?4) WHERE id=?1",
                params![id, now, exit_code, reason],
            )?;
            Ok(())
        })
    }

    /// The pid of the process hosting a session (the daemon or an in-process `mpm run`).
    pub fn session_host(&self, id: &str) -> Result<Option<u32>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT host_pid FROM sessions WHERE id=?1",
                params![id],
                |r| r.get::<_, Option<u32>>(0),
            )
            .optional()?
            .flatten())
        })
    }

    /// Every stored session, newest first.
    pub fn sessions(&self) -> Result<Vec<SessionRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, pid, command, cwd, started_at, ended_at, exit_code, state, end_reason
                 FROM sessions ORDER BY started_at DESC",
            )?;
            let rows = st
                .query_map([], |r| {
                    let cmd: String = r.get(2)?;
                    Ok(SessionRow {
                        id: r.get(0)?,
                        pid: r.get(1)?,
                        command: serde_json::from_str(&cmd).unwrap_or_default(),
                        cwd: r.get(3)?,
                        started_at: r.get(4)?,
                        ended_at: r.get(5)?,
                        exit_code: r.get(6)?,
                        state: r.get(7)?,
                        end_reason: r.get(8)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Insert one event (and update the side tables); returns its sequence number.
    pub fn append(&self, ev: &Event) -> Result<i64, StoreError> {
        let json = ev.to_json_line();
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO events(ts, session, kind, json) VALUES(?1,?2,?3,?4)",
                params![ev.ts, ev.session, ev.kind(), json],
            )?;
            let seq = tx.last_insert_rowid();
            apply_side_tables(&tx, ev)?;
            tx.commit()?;
            Ok(seq)
        })
    }

    /// Stored events matching `filter`, oldest first (the latest `limit` when a limit is set).
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<(i64, Event)>, StoreError> {
        let kind_like = filter.kind.as_ref().map(|k| {
            format!(
                "{}%",
                k.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            )
        });
        let limit = filter.limit.map(i64::from).unwrap_or(-1);
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT seq, json FROM (
                   SELECT seq, json FROM events
                   WHERE (?1 IS NULL OR session = ?1)
                     AND (?2 IS NULL OR kind LIKE ?2 ESCAPE '\\')
                     AND (?3 IS NULL OR seq > ?3)
                     AND (?4 IS NULL OR ts >= ?4)
                   ORDER BY seq DESC LIMIT ?5
                 ) ORDER BY seq ASC",
            )?;
            let rows = st.query_map(
                params![
                    filter.session,
                    kind_like,
                    filter.after_seq,
                    filter.since,
                    limit
                ],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, json) = row?;
                match serde_json::from_str::<Event>(&json) {
                    Ok(ev) => out.push((seq, ev)),
                    Err(e) => tracing::warn!(seq, error = %e, "unreadable stored event"),
                }
            }
            Ok(out)
        })
    }

    /// How many events are stored.
    pub fn event_count(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            Ok(c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))? as u64)
        })
    }

    /// Delegations by status: (queued, running).
    pub fn delegation_counts(&self) -> Result<(u64, u64), StoreError> {
        self.with(|c| {
            let count = |s: &str| -> Result<u64, rusqlite::Error> {
                c.query_row(
                    "SELECT COUNT(*) FROM delegations WHERE status=?1",
                    params![s],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n as u64)
            };
            Ok((count("queued")?, count("running")?))
        })
    }

    /// The status of one delegation, if stored.
    pub fn delegation_status(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT status FROM delegations WHERE id=?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?)
        })
    }
    /// Tickets, newest first; open ones only unless `all`; one project when given.
    pub fn tickets(&self, project: Option<&str>, all: bool) -> Result<Vec<Ticket>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "{TICKET_COLS} WHERE (?1 IS NULL OR project=?1) AND (?2 OR status='open') ORDER BY last_seen DESC, id DESC"
            ))?;
            let rows = st
                .query_map(params![project, all], ticket_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// One ticket by id.
    pub fn ticket(&self, id: i64) -> Result<Ticket, StoreError> {
        self.with(|c| {
            c.query_row(
                &format!("{TICKET_COLS} WHERE id=?1"),
                params![id],
                ticket_row,
            )
            .optional()?
            .ok_or(StoreError::NoTicket(id))
        })
    }

    /// Close a ticket; returns it. A closed ticket seen again reopens.
    pub fn close_ticket(&self, id: i64) -> Result<Ticket, StoreError> {
        let n = self.with(|c| {
            Ok(c.execute(
                "UPDATE tickets SET status='closed' WHERE id=?1",
                params![id],
            )?)
        })?;
        if n == 0 {
            return Err(StoreError::NoTicket(id));
        }
        self.ticket(id)
    }

    /// Delete events older than `days` days; returns how many went.
    pub fn prune(&self, days: u32) -> Result<usize, StoreError> {
        let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
        let cutoff = cutoff.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.with(|c| Ok(c.execute("DELETE FROM events WHERE ts < ?1", params![cutoff])?))
    }

    /// Checkpoint the WAL and close the connection; later calls fail.
    pub fn shutdown(&self) {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = guard.take() {
            if let Err(e) = c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
                tracing::warn!(error = %e, "wal checkpoint failed");
            }
            if let Err((_, e)) = c.close() {
                tracing::warn!(error = %e, "closing the store failed");
            }
        }
    }
}

/// Whether a process with this pid exists (signal 0).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

const TICKET_COLS: &str = "SELECT id, project, ticket_type, title, priority, source_session, first_seen, last_seen, seen_count, status FROM tickets";

fn ticket_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Ticket> {
    Ok(Ticket {
        id: r.get(0)?,
        project: r.get(1)?,
        ticket_type: r.get(2)?,
        title: r.get(3)?,
        priority: r.get(4)?,
        source_session: r.get(5)?,
        first_seen: r.get(6)?,
        last_seen: r.get(7)?,
        seen_count: r.get(8)?,
        status: r.get(9)?,
    })
}

/// Keep sessions, delegations and tickets in step with one event.
fn apply_side_tables(tx: &rusqlite::Transaction<'_>, ev: &Event) -> rusqlite::Result<()> {
    match &ev.body {
        EventBody::SessionStarted {
            command,
            pid,
            governor_mode,
            ..
        } => {
            let cmd = serde_json::to_string(command).unwrap_or_else(|_| "[]".into());
            tx.execute(
                "INSERT INTO sessions(id, pid, command, started_at, state, governor_mode, host_pid) VALUES(?1,?2,?3,?4,'running',?5,?6)
                 ON CONFLICT(id) DO UPDATE SET pid=excluded.pid, command=excluded.command,
                   governor_mode=COALESCE(excluded.governor_mode, governor_mode)",
                params![ev.session, pid, cmd, ev.ts, governor_mode, std::process::id()],
            )?;
        }
        EventBody::SessionExited { exit_code, .. } => {
            tx.execute(
                "UPDATE sessions SET state='ended', ended_at=COALESCE(ended_at, ?2), exit_code=COALESCE(exit_code, ?3),
                 end_reason=COALESCE(end_reason, 'exited') WHERE id=?1",
                params![ev.session, ev.ts, exit_code],
            )?;
        }
        EventBody::DelegationQueued(d) => {
            tx.execute(
                "INSERT INTO delegations(id, session, agent, task, status, queued_at, updated_at) VALUES(?1,?2,?3,?4,'queued',?5,?5)
                 ON CONFLICT(id) DO NOTHING",
                params![d.delegation_id, ev.session, d.agent, d.task, ev.ts],
            )?;
        }
        EventBody::DelegationStarted { delegation: d, pid } => {
            tx.execute(
                "INSERT INTO delegations(id, session, agent, task, status, pid, queued_at, updated_at) VALUES(?1,?2,?3,?4,'running',?5,?6,?6)
                 ON CONFLICT(id) DO UPDATE SET status='running', pid=excluded.pid, updated_at=excluded.updated_at",
                params![d.delegation_id, ev.session, d.agent, d.task, pid, ev.ts],
            )?;
        }
        EventBody::DelegationFinished {
            delegation: d,
            status,
            exit_code,
            output_path,
            ..
        } => {
            tx.execute(
                "INSERT INTO delegations(id, session, agent, task, status, exit_code, output_path, queued_at, updated_at)
                 VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?8)
                 ON CONFLICT(id) DO UPDATE SET status=excluded.status, exit_code=excluded.exit_code,
                   output_path=excluded.output_path, updated_at=excluded.updated_at",
                params![d.delegation_id, ev.session, d.agent, d.task, status.as_str(), exit_code, output_path, ev.ts],
            )?;
        }
        // A provisional ticket may still grow: only its final version is a ticket.
        EventBody::Detection(det) if det.category == "ticket" && det.is_final => {
            let ticket_type = det
                .ticket_type
                .clone()
                .unwrap_or_else(|| "TODO".into())
                .to_uppercase();
            let title = det.title.clone().unwrap_or_else(|| det.text.clone());
            let norm = normalise_title(&title);
            let project: String = tx
                .query_row(
                    "SELECT cwd FROM sessions WHERE id=?1",
                    params![ev.session],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or_default();
            tx.execute(
                "INSERT INTO tickets(project, ticket_type, norm_title, title, priority, source_session, first_seen, last_seen)
                 VALUES(?1,?2,?3,?4,?5,?6,?7,?7)
                 ON CONFLICT(project, ticket_type, norm_title) DO UPDATE SET last_seen=excluded.last_seen,
                   seen_count=seen_count+1, status='open', priority=COALESCE(excluded.priority, priority)",
                params![project, ticket_type, norm, title, det.priority, ev.session, ev.ts],
            )?;
        }
        _ => {}
    }
    Ok(())
}

impl Sink for Store {
    fn write(&self, event: &Event) {
        if let Err(e) = self.append(event) {
            tracing::warn!(error = %e, kind = event.kind(), "cannot store event");
        }
    }

    fn close(&self) {
        // The store outlives one session's bus in the daemon; closing is the owner's call.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Bus, Context, Delegation, DelegationStatus, Detection, TextSource};
    use std::sync::Arc;

    fn ticket(title: &str) -> EventBody {
        EventBody::Detection(Detection {
            category: "ticket".into(),
            pattern: "todo".into(),
            text: format!("TODO: {title}"),
            source: TextSource::Screen,
            agent: None,
            task: None,
            ticket_type: Some("TODO".into()),
            title: Some(title.into()),
            priority: None,
            handled_by_agent: false,
            is_final: true,
        })
    }

    fn bus(store: &Arc<Store>, session: &str) -> Bus {
        let bus = Bus::new(Context::with_session(session));
        bus.add_sink(store.clone());
        bus
    }

    /// SQLite is never on the emitting thread's path: with the database held by someone else
    /// (a slow disk, a long query), emitting still returns; the writer stores it once free.
    #[test]
    fn emitting_never_waits_on_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_in(dir.path()).unwrap());
        let bus = Bus::new(Context::with_session("busy"));
        store.add_to_bus(&bus, &["claude".into()], "/proj").unwrap();
        let held = store.conn.lock().unwrap();
        for i in 0..3 {
            bus.emit(ticket(&format!("while the store is busy {i}")));
        }
        drop(held);
        bus.flush();
        assert_eq!(store.tickets(Some("/proj"), false).unwrap().len(), 3);
    }

    #[test]
    fn in_process_session_via_add_to_bus() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_in(dir.path()).unwrap());
        let bus = Bus::new(Context::with_session("inproc"));
        store.add_to_bus(&bus, &["claude".into()], "/proj").unwrap();
        bus.emit(ticket("from run"));
        // The store writes on its own thread: wait for it.
        bus.flush();
        let t = store.tickets(Some("/proj"), false).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].source_session, "inproc");
        assert_eq!(store.event_count().unwrap(), 1);
    }

    #[test]
    fn tickets_dedup_per_project_by_type_and_normalised_title() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_in(dir.path()).unwrap());
        store
            .register_session("a", &["x".into()], "/p1", None)
            .unwrap();
        store
            .register_session("b", &["x".into()], "/p1", None)
            .unwrap();
        store
            .register_session("c", &["x".into()], "/p2", None)
            .unwrap();
        bus(&store, "a").emit(ticket("Fix the  Parser."));
        bus(&store, "b").emit(ticket("fix the parser"));
        bus(&store, "c").emit(ticket("fix the parser"));
        // A provisional (cut) ticket is not stored; markdown does not make another ticket.
        let mut cut = ticket("fix the");
        if let EventBody::Detection(d) = &mut cut {
            d.is_final = false;
        }
        bus(&store, "a").emit(cut);
        bus(&store, "a").emit(ticket("Fix **the** `parser`"));
        let p1 = store.tickets(Some("/p1"), false).unwrap();
        assert_eq!(p1.len(), 1);
        assert_eq!(p1[0].seen_count, 3);
        assert_eq!(p1[0].source_session, "a");
        assert!(p1[0].first_seen <= p1[0].last_seen);
        assert_eq!(store.tickets(None, false).unwrap().len(), 2);
        let closed = store.close_ticket(p1[0].id).unwrap();
        assert_eq!(closed.status, "closed");
        assert_eq!(store.tickets(Some("/p1"), false).unwrap().len(), 0);
        assert_eq!(store.tickets(Some("/p1"), true).unwrap().len(), 1);
        assert!(matches!(store.ticket(999), Err(StoreError::NoTicket(999))));
    }

    #[test]
    fn recovery_ends_running_sessions_and_interrupts_queued_delegations() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_in(dir.path()).unwrap());
        store
            .register_session("s", &["x".into()], "/p", Some(1))
            .unwrap();
        let d = Delegation {
            delegation_id: "d1".into(),
            agent: "qa".into(),
            task: "t".into(),
        };
        let b = bus(&store, "s");
        b.emit(EventBody::DelegationQueued(d.clone()));
        b.emit(EventBody::DelegationQueued(Delegation {
            delegation_id: "d2".into(),
            ..d.clone()
        }));
        b.emit(EventBody::DelegationFinished {
            delegation: Delegation {
                delegation_id: "d2".into(),
                ..d.clone()
            },
            status: DelegationStatus::Success,
            exit_code: Some(0),
            duration_ms: 1,
            output_path: None,
            reason: None,
            worker: None,
            result_path: None,
        });
        assert_eq!(store.delegation_counts().unwrap(), (1, 0));
        // Hosted by a dead process (the crashed daemon) vs. a live one (an in-process `mpm run`).
        let dead = {
            let mut c = std::process::Command::new("true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            pid
        };
        store
            .with(|c| {
                Ok(c.execute(
                    "UPDATE sessions SET host_pid=?1 WHERE id='s'",
                    params![dead],
                )?)
            })
            .unwrap();
        let live_host = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        store
            .register_session("live", &["x".into()], "/p", None)
            .unwrap();
        store
            .with(|c| {
                Ok(c.execute(
                    "UPDATE sessions SET host_pid=?1 WHERE id='live'",
                    params![live_host.id()],
                )?)
            })
            .unwrap();
        struct KillOnDrop(std::process::Child);
        impl Drop for KillOnDrop {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _live_host = KillOnDrop(live_host);
        drop(store);
        let store = Store::open_in(dir.path()).unwrap();
        store.set_session_process("s", 4242, 99).unwrap();
        let r = store.recover().unwrap();
        assert_eq!(r.orphans, vec![(4242, 99)]);
        assert_eq!(r.sessions_ended, 1);
        assert_eq!(r.delegations_interrupted, 1);
        assert_eq!(
            store.delegation_status("d1").unwrap().as_deref(),
            Some("interrupted")
        );
        assert_eq!(
            store.delegation_status("d2").unwrap().as_deref(),
            Some("success")
        );
        let states: std::collections::HashMap<String, String> = store
            .sessions()
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.state))
            .collect();
        assert_eq!(states["s"], "ended");
        assert_eq!(
            states["live"], "running",
            "a live host's session is left alone"
        );
    }

    #[test]
    fn event_filters_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_in(dir.path()).unwrap());
        let b = bus(&store, "s1");
        b.emit(ticket("a"));
        b.emit(EventBody::SessionExited {
            exit_code: Some(0),
            signal: None,
            duration_ms: 1,
            tap_overrun_bytes: 0,
        });
        bus(&store, "s2").emit(ticket("b"));
        let f = |session: Option<&str>, kind: Option<&str>| EventFilter {
            session: session.map(Into::into),
            kind: kind.map(Into::into),
            ..Default::default()
        };
        assert_eq!(store.events(&f(None, None)).unwrap().len(), 3);
        assert_eq!(store.events(&f(Some("s1"), None)).unwrap().len(), 2);
        assert_eq!(store.events(&f(None, Some("session"))).unwrap().len(), 1);
        assert_eq!(
            store.events(&f(None, Some("sess_on"))).unwrap().len(),
            0,
            "_ is literal"
        );
        let limited = store
            .events(&EventFilter {
                limit: Some(1),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(limited.len(), 1);
        assert_eq!(limited[0].1.session, "s2", "latest one");
        // Retention: make one event old, prune.
        store
            .with(|c| {
                Ok(c.execute(
                    "UPDATE events SET ts='2000-01-01T00:00:00.000Z' WHERE seq=1",
                    [],
                )?)
            })
            .unwrap();
        assert_eq!(store.prune(30).unwrap(), 1);
        assert_eq!(store.event_count().unwrap(), 2);
    }

    #[test]
    fn normalise() {
        assert_eq!(normalise_title("  Fix   THE bug!! "), "fix the bug");
        assert_eq!(normalise_title("Fix `parse()` **now**"), "fix parse() now");
    }
}

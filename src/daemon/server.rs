//! One client connection: uid check, handshake, then requests until the client goes away.
//!
//! Any malformed, oversized or unknown request gets an `Error` reply; only a frame that cannot be
//! skipped (oversized: its body is never read) or a broken stream ends the connection. Nothing a
//! client sends can take the daemon down: every failure stays inside this connection's thread.
//!
//! Bounds: a request's window size, argv and environment are checked ([`ClientMsg::validate`])
//! and refused with an `invalid` error; frames are capped (`daemon.max_frame_bytes`). A client has
//! [`HANDSHAKE_TIMEOUT`] to say hello, and at most [`MAX_PENDING`] connections may be in their
//! handshake at once: a new one drops the oldest stalled one, so connections that send two bytes
//! and hold ("slowloris") cannot take the [`MAX_CONNECTIONS`] slots from a live client. Only the
//! daemon's own uid may connect at all, so the per-uid budget is the whole budget.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crossbeam_channel::select;

use super::{Hosted, Shared, socket};
use crate::events::{Bus, Context};
use crate::protocol::{
    ClientMsg, ErrorCode, EventFilter, Frame, FrameError, HostedState, PROTOCOL_VERSION, RunSpec,
    ServerMsg, SessionInfo, StatusReport, read_frame, write_frame,
};

/// How long one write to a client may block before the client is dropped.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connections served at once; more are refused with `busy` (a runaway script must not make the
/// daemon spawn threads without bound).
const MAX_CONNECTIONS: usize = 256;

/// Connections that have not finished their handshake, at most; the oldest is dropped to make
/// room for a new one, so clients that connect and stall cannot lock a live client out.
const MAX_PENDING: usize = 32;

/// How long a client has to send its `hello` after connecting.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The connections still in their handshake, oldest first (the daemon's admission gate).
#[derive(Default)]
pub(crate) struct Gate {
    pending: Mutex<std::collections::VecDeque<(u64, UnixStream)>>,
}

impl Gate {
    /// Admit connection `id`: drop the oldest pending connections beyond [`MAX_PENDING`] (and one
    /// more when `full`, the connection cap being reached). Returns how many were dropped.
    fn admit(&self, id: u64, stream: &UnixStream, full: bool) -> usize {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let keep = if full {
            MAX_PENDING.min(pending.len()).saturating_sub(1)
        } else {
            MAX_PENDING - 1
        };
        let mut dropped = 0;
        while pending.len() > keep {
            if let Some((_, old)) = pending.pop_front() {
                // Its thread's read fails at once and the thread ends.
                let _ = old.shutdown(std::net::Shutdown::Both);
                dropped += 1;
            }
        }
        if let Ok(c) = stream.try_clone() {
            pending.push_back((id, c));
        }
        dropped
    }

    /// Connection `id` finished its handshake (or ended).
    fn done(&self, id: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(i, _)| *i != id);
    }

    fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Refuse `stream` with one error frame. The frame is tiny and the socket buffer fresh, so this
/// cannot block the accept loop.
fn refuse(stream: &UnixStream, code: ErrorCode, message: String) {
    let _ = stream.set_write_timeout(Some(std::time::Duration::from_millis(100)));
    let _ = write_frame(
        &mut &*stream,
        &Frame::json(&ServerMsg::error(code, message)),
    );
}

/// Check the peer (uid, connection cap) on the accept loop, then serve `stream` on its own thread,
/// registered so shutdown can close it. Refused peers never get a thread.
pub(crate) fn spawn_connection(shared: &Arc<Shared>, stream: UnixStream) {
    match socket::peer_uid(&stream) {
        Ok(uid) if uid == shared.opts.allowed_uid => {}
        Ok(uid) => {
            tracing::warn!(uid, "refused a connection from another user");
            return refuse(
                &stream,
                ErrorCode::Forbidden,
                format!("uid {uid} may not use this daemon"),
            );
        }
        Err(e) => {
            return refuse(
                &stream,
                ErrorCode::Forbidden,
                format!("cannot check peer credentials: {e}"),
            );
        }
    }
    let full = shared.conns.lock().unwrap_or_else(|e| e.into_inner()).len() >= MAX_CONNECTIONS;
    if full && shared.gate.pending() == 0 {
        tracing::warn!("connection limit reached; refusing a client");
        return refuse(
            &stream,
            ErrorCode::Busy,
            format!("more than {MAX_CONNECTIONS} clients connected"),
        );
    }
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    // A client must say hello in time, and stalled ones make room for new ones.
    if let Err(e) = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)) {
        tracing::debug!(error = %e, "cannot set a read timeout");
    }
    let dropped = shared.gate.admit(id, &stream, full);
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "dropped clients that did not finish their handshake"
        );
    }
    // A client that stops reading must not pin a thread forever: its writes time out.
    if let Err(e) = stream.set_write_timeout(Some(WRITE_TIMEOUT)) {
        tracing::debug!(error = %e, "cannot set a write timeout");
    }
    if let Ok(c) = stream.try_clone() {
        shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, c);
    }
    let shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("mpm-conn-{id}"))
        .spawn(move || {
            if let Err(e) = serve(&shared, stream, id) {
                tracing::debug!(conn = id, error = %e, "connection ended");
            }
            shared.gate.done(id);
            shared
                .conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start connection thread");
    }
}

fn send(w: &Mutex<UnixStream>, msg: &ServerMsg) -> std::io::Result<()> {
    let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
    write_frame(&mut *w, &Frame::json(msg))
}

fn send_data(w: &Mutex<UnixStream>, bytes: &[u8]) -> std::io::Result<()> {
    let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
    crate::protocol::write_data(&mut *w, bytes)
}

fn serve(shared: &Arc<Shared>, stream: UnixStream, id: u64) -> Result<(), FrameError> {
    let max = shared.opts.max_frame_bytes;
    let writer = Arc::new(Mutex::new(stream.try_clone()?));
    let mut reader = BufReader::new(stream);

    // Handshake.
    let hello = read_frame(&mut reader, max).and_then(|f| f.parse::<ClientMsg>());
    match hello {
        Ok(ClientMsg::Hello { protocol, .. }) if protocol == PROTOCOL_VERSION => {
            // Handshake done: from now on the client may be idle (follow, attach, a REPL).
            shared.gate.done(id);
            reader.get_ref().set_read_timeout(None)?;
            send(
                &writer,
                &ServerMsg::Hello {
                    protocol: PROTOCOL_VERSION,
                    daemon_pid: std::process::id(),
                    version: env!("CARGO_PKG_VERSION").into(),
                },
            )?;
        }
        Ok(ClientMsg::Hello { protocol, .. }) => {
            send(
                &writer,
                &ServerMsg::error(
                    ErrorCode::Version,
                    format!(
                        "protocol {protocol} not supported; this daemon speaks {PROTOCOL_VERSION}"
                    ),
                ),
            )?;
            return Ok(());
        }
        Ok(_) => {
            send(
                &writer,
                &ServerMsg::error(ErrorCode::Unexpected, "the first message must be hello"),
            )?;
            return Ok(());
        }
        Err(e) => {
            let _ = send(&writer, &error_reply(&e));
            return Ok(());
        }
    }

    // The session this connection started (`Run`): its attach is the owner's.
    let mut owned: Option<String> = None;
    loop {
        let frame = match read_frame(&mut reader, max) {
            Ok(f) => f,
            Err(FrameError::Closed) => return Ok(()),
            Err(e @ (FrameError::TooLarge { .. } | FrameError::Io(_))) => {
                // The body was not read: the stream cannot be resynchronised.
                let _ = send(&writer, &error_reply(&e));
                return Err(e);
            }
            Err(e) => {
                send(&writer, &error_reply(&e))?;
                continue;
            }
        };
        let msg = match frame.parse::<ClientMsg>() {
            Ok(m) => m,
            Err(e) => {
                send(&writer, &error_reply(&e))?;
                continue;
            }
        };
        if let Err(why) = msg.validate() {
            send(&writer, &ServerMsg::error(ErrorCode::Invalid, why))?;
            continue;
        }
        match msg {
            ClientMsg::Events {
                filter,
                follow: false,
            } => backlog(shared, &writer, &filter).map(|_| ())?,
            ClientMsg::Events {
                filter,
                follow: true,
            } => {
                return follow(shared, &writer, reader.into_inner(), filter);
            }
            ClientMsg::Attach {
                session,
                cols,
                rows,
            } => {
                let owner = owned.as_deref() == Some(session.as_str());
                return attach(shared, &writer, reader, &session, cols, rows, owner);
            }
            other => {
                let reply = handle(shared, other);
                if let ServerMsg::Spawned { session, .. } = &reply {
                    // This connection started it: its attach is the owner's.
                    owned = Some(session.clone());
                }
                send(&writer, &reply)?;
            }
        }
    }
}

fn error_reply(e: &FrameError) -> ServerMsg {
    match e {
        FrameError::TooLarge { .. } => ServerMsg::error(ErrorCode::TooLarge, e.to_string()),
        FrameError::Malformed(m) if m.contains("unknown variant") => {
            ServerMsg::error(ErrorCode::UnknownRequest, e.to_string())
        }
        _ => ServerMsg::error(ErrorCode::Malformed, e.to_string()),
    }
}

/// One request, one reply.
fn handle(shared: &Arc<Shared>, msg: ClientMsg) -> ServerMsg {
    match msg {
        ClientMsg::Hello { .. } => ServerMsg::error(ErrorCode::Unexpected, "already said hello"),
        ClientMsg::Status => ServerMsg::Status(Box::new(status(shared))),
        ClientMsg::TicketsList { project, all } => {
            match shared.store().tickets(project.as_deref(), all) {
                Ok(tickets) => ServerMsg::Tickets { tickets },
                Err(e) => ServerMsg::error(ErrorCode::Internal, e.to_string()),
            }
        }
        ClientMsg::TicketShow { id } => match shared.store().ticket(id) {
            Ok(ticket) => ServerMsg::Ticket { ticket },
            Err(e @ crate::store::StoreError::NoTicket(_)) => {
                ServerMsg::error(ErrorCode::NotFound, e.to_string())
            }
            Err(e) => ServerMsg::error(ErrorCode::Internal, e.to_string()),
        },
        ClientMsg::TicketClose { id } => match shared.store().close_ticket(id) {
            Ok(ticket) => ServerMsg::Ticket { ticket },
            Err(e @ crate::store::StoreError::NoTicket(_)) => {
                ServerMsg::error(ErrorCode::NotFound, e.to_string())
            }
            Err(e) => ServerMsg::error(ErrorCode::Internal, e.to_string()),
        },
        ClientMsg::Stop { session } => {
            let Some(h) = find(shared, &session) else {
                return ServerMsg::error(ErrorCode::NotFound, format!("no session {session}"));
            };
            h.session.stop(shared.opts.stop_grace);
            ServerMsg::Stopped {
                session: h.session.id().to_string(),
                exit_code: h.session.wait(),
            }
        }
        ClientMsg::Run(spec) => run(shared, spec),
        ClientMsg::Publish { event } => match shared.fanout.record(&event) {
            Ok(_) => ServerMsg::Ok,
            Err(e) => ServerMsg::error(ErrorCode::Internal, e.to_string()),
        },
        ClientMsg::Resize { .. }
        | ClientMsg::Detach
        | ClientMsg::Eof
        | ClientMsg::Resume
        | ClientMsg::Signal { .. } => ServerMsg::error(ErrorCode::Unexpected, "not attached"),
        ClientMsg::Events { .. } | ClientMsg::Attach { .. } => ServerMsg::error(
            ErrorCode::Internal,
            "stream requests are handled by the connection",
        ),
    }
}

/// A session by full id or unique prefix.
fn find(shared: &Shared, id: &str) -> Option<Arc<Hosted>> {
    let sessions = shared.sessions.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = sessions.get(id) {
        return Some(h.clone());
    }
    let mut matches = sessions
        .iter()
        .filter(|(k, _)| !id.is_empty() && k.starts_with(id));
    match (matches.next(), matches.next()) {
        (Some((_, h)), None) => Some(h.clone()),
        _ => None,
    }
}

fn status(shared: &Shared) -> StatusReport {
    let hosted = shared.hosted();
    let exits: Vec<Option<Option<i32>>> = hosted.iter().map(|h| h.session.try_wait()).collect();
    let running_pids: Vec<u32> = hosted
        .iter()
        .zip(&exits)
        .filter(|(_, e)| e.is_none())
        .map(|(h, _)| h.session.pid())
        .collect();
    let rss: std::collections::HashMap<u32, Option<f64>> = running_pids
        .iter()
        .copied()
        .zip(super::trees_rss_mb(&running_pids))
        .collect();
    let mut list: Vec<SessionInfo> = hosted
        .iter()
        .zip(exits)
        .map(|(h, exit)| SessionInfo {
            id: h.session.id().to_string(),
            pid: h.session.pid(),
            command: h.command.clone(),
            cwd: h.cwd.clone(),
            started_at: h.started_at.clone(),
            state: if exit.is_some() {
                HostedState::Ended
            } else {
                HostedState::Running
            },
            exit_code: exit.flatten(),
            attached: h.attached.load(Ordering::Relaxed),
            agent_state: h.session.agent_state(),
            rss_mb: if exit.is_none() {
                rss.get(&h.session.pid()).copied().flatten()
            } else {
                None
            },
        })
        .collect();
    list.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    let (queued, running, governor_mode) = {
        let live = shared.fanout.live.lock().unwrap_or_else(|e| e.into_inner());
        let (q, r) = live.delegation_counts();
        (q, r, live.governor_mode())
    };
    let store = shared.store();
    StatusReport {
        daemon_pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        socket: shared.opts.socket.display().to_string(),
        uptime_secs: shared.started.elapsed().as_secs(),
        sessions: list,
        delegations_queued: queued,
        delegations_running: running,
        governor_mode: governor_mode.unwrap_or_else(|| "none".into()),
        daemon_rss_mb: super::own_rss_mb(),
        events_stored: store.event_count().unwrap_or(0),
    }
}

fn run(shared: &Arc<Shared>, spec: RunSpec) -> ServerMsg {
    if shared.stopping.load(Ordering::SeqCst) {
        return ServerMsg::error(ErrorCode::SpawnFailed, "the daemon is shutting down");
    }
    let id = crate::events::new_id();
    let bus = Bus::new(Context::with_session(id.clone()));
    bus.add_sink(shared.fanout_writer.clone());
    if let Err(e) = shared
        .store()
        .register_session(&id, &spec.argv, &spec.cwd, None)
    {
        return ServerMsg::error(ErrorCode::Internal, e.to_string());
    }
    if let Some(path) = &spec.flags.events_file {
        match crate::events::EventsFile::open(std::path::Path::new(path)) {
            Ok(f) => bus.add_writer("mpm-events-file", Arc::new(f)),
            Err(e) => {
                let _ = shared.store().end_session(&id, None, "spawn-failed");
                return ServerMsg::error(
                    ErrorCode::SpawnFailed,
                    format!("events file {path}: {e}"),
                );
            }
        }
    }
    let req = super::SpawnRequest {
        id: id.clone(),
        argv: spec.argv.clone(),
        cwd: spec.cwd.clone().into(),
        env: spec.env.clone(),
        cols: spec.cols,
        rows: spec.rows,
        flags: spec.flags.clone(),
        client: spec.client.clone(),
        events: bus.clone(),
    };
    let session = match shared.opts.backend.spawn(req) {
        Ok(s) => s,
        Err(e) => {
            let _ = shared.store().end_session(&id, None, "spawn-failed");
            return ServerMsg::error(e.code(), e.to_string());
        }
    };
    let pid = session.pid();
    if let Some(start) = crate::process::start_time(pid as i32)
        && let Err(e) = shared.store().set_session_process(&id, pid, start)
    {
        tracing::warn!(error = %e, "cannot record the session's process");
    }
    let hosted = Arc::new(Hosted {
        session,
        command: spec.argv,
        cwd: spec.cwd,
        started_at: crate::events::now_ts(),
        attached: Default::default(),
        bus,
    });
    shared
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), hosted.clone());
    // Waiter: record the end in the store whatever way the session ends.
    let waiter_shared = shared.clone();
    let _ = std::thread::Builder::new()
        .name("mpm-session-wait".into())
        .spawn(move || {
            let code = hosted.session.wait();
            let _ = waiter_shared
                .store()
                .end_session(hosted.session.id(), code, "exited");
            hosted.bus.close();
            // Keep only the ended session's record (see `EndedSession`): the live session is
            // freed as soon as the last attach stream lets go of it.
            let id = hosted.session.id().to_string();
            let ended = Arc::new(Hosted {
                session: Arc::new(super::backend::EndedSession::of(&*hosted.session)),
                command: hosted.command.clone(),
                cwd: hosted.cwd.clone(),
                started_at: hosted.started_at.clone(),
                attached: Default::default(),
                bus: {
                    let bus = Bus::new(Context::with_session(id.clone()));
                    bus.close();
                    bus
                },
            });
            drop(hosted);
            if let Some(slot) = waiter_shared
                .sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&id)
            {
                *slot = ended;
            }
        });
    ServerMsg::Spawned { session: id, pid }
}

/// Stored events matching `filter`, then `EndOfEvents`; returns the last sequence number sent.
fn backlog(
    shared: &Arc<Shared>,
    writer: &Mutex<UnixStream>,
    filter: &EventFilter,
) -> Result<i64, FrameError> {
    let mut last = filter.after_seq.unwrap_or(0);
    match shared.store().events(filter) {
        Ok(events) => {
            for (seq, event) in events {
                last = last.max(seq);
                send(
                    writer,
                    &ServerMsg::Event {
                        seq,
                        event: Box::new(event),
                    },
                )?;
            }
            send(writer, &ServerMsg::EndOfEvents)?;
        }
        Err(e) => send(
            writer,
            &ServerMsg::error(ErrorCode::Internal, e.to_string()),
        )?,
    }
    Ok(last)
}

/// Backlog, then live events until the client goes away. Subscribe first, read the backlog, then
/// skip live events the backlog already had (by sequence number): nothing lost, nothing twice.
fn follow(
    shared: &Arc<Shared>,
    writer: &Mutex<UnixStream>,
    stream: UnixStream,
    filter: EventFilter,
) -> Result<(), FrameError> {
    let (tx, live) = crossbeam_channel::unbounded();
    shared
        .fanout
        .followers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(tx);
    let last = backlog(shared, writer, &filter)?;
    let closed = watch_close(stream);
    loop {
        select! {
            recv(live) -> m => match m {
                Ok((seq, ev)) => {
                    if seq > last && filter.matches(&ev) {
                        send(writer, &ServerMsg::Event { seq, event: Box::new((*ev).clone()) })?;
                    }
                }
                Err(_) => return Ok(()),
            },
            recv(closed) -> _ => return Ok(()),
        }
    }
}

/// A channel that disconnects when the client closes its end (anything it sends is ignored).
fn watch_close(stream: UnixStream) -> crossbeam_channel::Receiver<()> {
    let (tx, rx) = crossbeam_channel::bounded::<()>(0);
    let _ = std::thread::Builder::new()
        .name("mpm-conn-watch".into())
        .spawn(move || {
            let mut r = BufReader::new(stream);
            while read_frame(&mut r, 64 * 1024).is_ok() {}
            drop(tx);
        });
    rx
}

/// The attach stream: redraw, then output out and input in until detach, session end or close.
fn attach(
    shared: &Arc<Shared>,
    writer: &Arc<Mutex<UnixStream>>,
    mut reader: BufReader<UnixStream>,
    id: &str,
    cols: Option<u16>,
    rows: Option<u16>,
    owner: bool,
) -> Result<(), FrameError> {
    let Some(h) = find(shared, id) else {
        send(
            writer,
            &ServerMsg::error(ErrorCode::NotFound, format!("no session {id}")),
        )?;
        return Ok(());
    };
    if let Some(code) = h.session.try_wait() {
        send(
            writer,
            &ServerMsg::SessionEnded {
                session: h.session.id().into(),
                exit_code: code,
                summary: h.session.summary(),
            },
        )?;
        return Ok(());
    }
    if let (Some(c), Some(r)) = (cols, rows) {
        h.session.resize(c, r);
    }
    let attached = ServerMsg::Attached {
        session: h.session.id().into(),
    };
    let att = if owner {
        // The owner: `Attached` first, then the backend writes its output (from the first byte).
        send(writer, &attached)?;
        let att = h.session.attach_owner(writer);
        if !att.snapshot.is_empty() {
            send_data(writer, &att.snapshot)?;
        }
        att
    } else {
        let att = h.session.attach();
        send(writer, &attached)?;
        send_data(writer, &att.snapshot)?;
        att
    };
    struct Owned<'a>(&'a Arc<Hosted>, bool);
    impl Drop for Owned<'_> {
        fn drop(&mut self) {
            if self.1 {
                self.0.session.detach_owner();
            }
        }
    }
    h.attached.fetch_add(1, Ordering::Relaxed);
    struct Count(Arc<Hosted>);
    impl Drop for Count {
        fn drop(&mut self) {
            self.0.attached.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _count = Count(h.clone());

    // Output pump on its own thread; it owns the end-of-session message.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let out_writer = writer.clone();
    let out_h = h.clone();
    let pump = std::thread::Builder::new()
        .name("mpm-attach-out".into())
        .spawn(move || {
            // A pipe client has no job control: its suspend channel is disconnected from the
            // start (and a terminal client's once the session closes). A disconnected channel is
            // always ready, so it is swapped for one that never is: selecting on it spun this
            // thread at 100% of a core and starved the relay (1 MiB took 10 s to a pipe).
            let mut suspended = att.suspended.clone();
            loop {
                select! {
                    recv(suspended) -> s => match s {
                        Ok(()) => {
                            if send(&out_writer, &ServerMsg::Suspended).is_err() {
                                return;
                            }
                        }
                        Err(_) => suspended = crossbeam_channel::never(),
                    },
                    recv(att.output) -> chunk => match chunk {
                        Ok(c) => {
                            if send_data(&out_writer, &c).is_err() {
                                return;
                            }
                        }
                        Err(_) => {
                            // Output ended: the session is gone, or this client fell behind.
                            let msg = match out_h.session.try_wait() {
                                Some(code) => ServerMsg::SessionEnded {
                                    session: out_h.session.id().into(),
                                    exit_code: code,
                                    summary: out_h.session.summary(),
                                },
                                None => ServerMsg::error(
                                    ErrorCode::TooSlow,
                                    "this client fell behind the session's output; attach again",
                                ),
                            };
                            let _ = send(&out_writer, &msg);
                            if let Ok(w) = out_writer.lock() {
                                let _ = w.shutdown(std::net::Shutdown::Both);
                            }
                            return;
                        }
                    },
                    recv(stop_rx) -> _ => {
                        let _ = send(&out_writer, &ServerMsg::Detached);
                        return;
                    }
                }
            }
        })?;

    let owned = Owned(&h, owner);
    let max = shared.opts.max_frame_bytes;
    loop {
        match read_frame(&mut reader, max) {
            Ok(Frame::Data(bytes)) => h.session.write_input(&bytes),
            Ok(f) => match f.parse::<ClientMsg>() {
                Ok(ClientMsg::Resize { cols, rows }) if crate::protocol::window_ok(cols, rows) => {
                    h.session.resize(cols, rows)
                }
                Ok(m @ ClientMsg::Resize { .. }) => {
                    let why = m.validate().err().unwrap_or_default();
                    let _ = send(writer, &ServerMsg::error(ErrorCode::Invalid, why));
                }
                Ok(ClientMsg::Detach) => break,
                Ok(ClientMsg::Eof) => h.session.eof(),
                Ok(ClientMsg::Resume) => h.session.resume(),
                Ok(ClientMsg::Signal { signal })
                    if [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT]
                        .contains(&signal) =>
                {
                    h.session.signalled(signal)
                }
                Ok(_) => {
                    let _ = send(
                        writer,
                        &ServerMsg::error(
                            ErrorCode::Unexpected,
                            "only input, resize and detach while attached",
                        ),
                    );
                }
                Err(e) => {
                    let _ = send(writer, &error_reply(&e));
                }
            },
            Err(FrameError::Closed) | Err(FrameError::Io(_)) => break,
            Err(e) => {
                let _ = send(writer, &error_reply(&e));
                if matches!(e, FrameError::TooLarge { .. }) {
                    break;
                }
            }
        }
    }
    // No owner output after this point (a write in progress finishes first), then `Detached`.
    drop(owned);
    let _ = stop_tx.try_send(());
    let _ = pump.join();
    Ok(())
}

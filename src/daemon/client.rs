//! The client side of the socket protocol: connect, handshake, request/reply, streams.
//!
//! Used by `mpm status|events|tickets|stop|attach`, and by `mpm run` when a daemon is running.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::protocol::{
    ClientMsg, DEFAULT_MAX_FRAME, Frame, FrameError, PROTOCOL_VERSION, ServerMsg, read_frame,
    write_frame,
};

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the socket.
    #[error(
        "no mpm daemon at {}; start one with `mpm daemon` or `systemctl --user start mpm`",
        .0.display()
    )]
    NoDaemon(PathBuf),
    /// The daemon answered with an error.
    #[error("daemon refused: {message} ({code})")]
    Refused {
        /// The error code.
        code: crate::protocol::ErrorCode,
        /// The daemon's message.
        message: String,
    },
    /// A reply that does not fit the request.
    #[error("unexpected reply from the daemon: {0}")]
    Unexpected(String),
    /// A frame could not be read.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Any other I/O failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A connected, greeted client.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The daemon's pid from its hello.
    pub daemon_pid: u32,
}

impl Client {
    /// Connect to the daemon at `path` and do the handshake.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NoDaemon(path.to_path_buf())
            }
            _ => ClientError::Io(e),
        })?;
        let writer = stream.try_clone()?;
        let mut c = Client {
            reader: BufReader::new(stream),
            writer,
            daemon_pid: 0,
        };
        // A daemon that refuses us (another uid, too many connections) may answer and close
        // before our hello is written: the write fails (EPIPE) but its answer is waiting, and
        // is the better error.
        let sent = c.send(&ClientMsg::Hello {
            protocol: PROTOCOL_VERSION,
            client: format!("mpm {}", env!("CARGO_PKG_VERSION")),
        });
        match (c.recv_msg(), sent) {
            (Ok(ServerMsg::Hello { daemon_pid, .. }), Ok(())) => {
                c.daemon_pid = daemon_pid;
                Ok(c)
            }
            (Err(e @ ClientError::Refused { .. }), _) => Err(e),
            (_, Err(e)) => Err(e),
            (Ok(other), Ok(())) => Err(unexpected(other)),
            (Err(e), Ok(())) => Err(e),
        }
    }

    /// Send one message.
    pub fn send(&mut self, msg: &ClientMsg) -> Result<(), ClientError> {
        Ok(write_frame(&mut self.writer, &Frame::json(msg))?)
    }

    /// Send one frame (a message or terminal data).
    pub fn send_frame(&mut self, f: &Frame) -> Result<(), ClientError> {
        Ok(write_frame(&mut self.writer, f)?)
    }

    /// Read the next frame.
    pub fn recv(&mut self) -> Result<Frame, ClientError> {
        Ok(read_frame(
            &mut self.reader,
            DEFAULT_MAX_FRAME.max(16 << 20),
        )?)
    }

    /// The next message; an `Error` reply becomes [`ClientError::Refused`].
    pub fn recv_msg(&mut self) -> Result<ServerMsg, ClientError> {
        match self.recv()?.parse::<ServerMsg>()? {
            ServerMsg::Error { code, message } => Err(ClientError::Refused { code, message }),
            m => Ok(m),
        }
    }

    /// Send a request and read its one reply.
    pub fn request(&mut self, msg: &ClientMsg) -> Result<ServerMsg, ClientError> {
        self.send(msg)?;
        self.recv_msg()
    }

    /// A second handle on the socket for writing (the attach relay writes from another thread).
    pub fn writer(&self) -> std::io::Result<UnixStream> {
        self.writer.try_clone()
    }

    /// Bound every later read (None: block forever).
    pub fn set_read_timeout(&self, t: Option<std::time::Duration>) -> std::io::Result<()> {
        self.reader.get_ref().set_read_timeout(t)
    }

    /// Close the sending half (the daemon sees end of stream).
    pub fn shutdown_write(&self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Write);
    }
}

/// An unexpected message as an error.
pub fn unexpected(m: ServerMsg) -> ClientError {
    match m {
        ServerMsg::Error { code, message } => ClientError::Refused { code, message },
        other => ClientError::Unexpected(format!("{other:?}").chars().take(200).collect()),
    }
}

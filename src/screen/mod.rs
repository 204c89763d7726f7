//! The screen source: a VT screen model of the session's PTY output and the rules that turn its rows
//! into logical lines (see [`lines`] for when rows are read and how wrapped rows are joined).

pub mod lines;
pub mod vt;

pub use lines::{LineReader, ReadKind};
pub use vt::{Hook, Row, Screen};

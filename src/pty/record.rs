//! Asciicast v2 recording (`--record PATH`), the format `asciinema play` reads: a JSON header line
//! (`version`, `width`, `height`, `timestamp`, `env`), then one `[time, "o", data]` line per output
//! chunk, `[time, "r", "COLSxROWS"]` per resize (`mpm scan --input cast` replays the output at the
//! recorded sizes), and only when asked (`--record-input`) `[time, "i", data]` per chunk of input
//! written to the agent: what the user types can hold secrets (a password typed at a prompt the
//! agent ran), so a recording holds the output alone by default. `data` must be a JSON string, so
//! the bytes are decoded as UTF-8 with an incomplete sequence at the end of a chunk carried over to
//! the next one and truly invalid bytes replaced by U+FFFD.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use super::WinSize;

/// An open asciicast v2 file being written.
pub struct Recorder {
    out: BufWriter<File>,
    start: Instant,
    /// The bytes of a UTF-8 sequence split across reads (at most 3).
    carry: Vec<u8>,
    /// The same for input.
    carry_in: Vec<u8>,
    /// Record input (`"i"` events); off by default, input can hold secrets.
    with_input: bool,
}

impl Recorder {
    /// Create (truncate) `path` and write the header; `with_input` records input too.
    pub fn create(path: &Path, size: WinSize, with_input: bool) -> std::io::Result<Recorder> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = BufWriter::new(File::create(path)?);
        let env_var = |k: &str| std::env::var(k).ok();
        let header = serde_json::json!({
            "version": 2,
            "width": size.cols,
            "height": size.rows,
            "timestamp": chrono::Utc::now().timestamp(),
            "env": {"TERM": env_var("TERM"), "SHELL": env_var("SHELL")},
        });
        writeln!(out, "{header}")?;
        out.flush()?;
        Ok(Recorder {
            out,
            start: Instant::now(),
            carry: Vec::new(),
            carry_in: Vec::new(),
            with_input,
        })
    }

    fn event(&mut self, code: &str, data: &str) -> std::io::Result<()> {
        let t = self.start.elapsed().as_secs_f64();
        let data = serde_json::to_string(data).unwrap_or_else(|_| "\"\"".into());
        writeln!(self.out, "[{t:.6}, \"{code}\", {data}]")?;
        // Flushed per event so a recording survives mpm being killed.
        self.out.flush()
    }

    /// Record an output chunk.
    pub fn output(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(bytes);
        let text = decode_utf8(&buf, &mut self.carry);
        if text.is_empty() {
            return Ok(());
        }
        self.event("o", &text)
    }

    /// Record a chunk of input written to the agent (`"i"`), if the recorder records input.
    pub fn input(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if !self.with_input {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.carry_in);
        buf.extend_from_slice(bytes);
        let text = decode_utf8(&buf, &mut self.carry_in);
        if text.is_empty() {
            return Ok(());
        }
        self.event("i", &text)
    }

    /// Record a resize.
    pub fn resize(&mut self, size: WinSize) -> std::io::Result<()> {
        self.event("r", &format!("{}x{}", size.cols, size.rows))
    }

    /// Write out a dangling partial sequence (as U+FFFD) and flush.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if !self.carry.is_empty() {
            self.carry.clear();
            self.event("o", "\u{FFFD}")?;
        }
        self.out.flush()
    }
}

/// Decode `buf` as UTF-8: invalid bytes become U+FFFD; an incomplete sequence at the very end is
/// moved into `carry` instead of being decoded.
pub(crate) fn decode_utf8(buf: &[u8], carry: &mut Vec<u8>) -> String {
    let mut out = String::with_capacity(buf.len());
    let mut rest = buf;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                // SAFETY-free: `good` was just validated.
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        rest = &bad[n..];
                    }
                    None => {
                        carry.extend_from_slice(bad);
                        return out;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_chunks_is_carried() {
        let euro = "€".as_bytes(); // 3 bytes
        let mut carry = Vec::new();
        let a = decode_utf8(&[b'x', euro[0], euro[1]], &mut carry);
        assert_eq!(a, "x");
        assert_eq!(carry, &euro[..2]);
        let mut buf = std::mem::take(&mut carry);
        buf.extend_from_slice(&[euro[2], b'y']);
        assert_eq!(decode_utf8(&buf, &mut carry), "€y");
        assert!(carry.is_empty());
    }

    #[test]
    fn invalid_bytes_are_replaced() {
        let mut carry = Vec::new();
        assert_eq!(
            decode_utf8(b"a\xffb\xc3(", &mut carry),
            "a\u{FFFD}b\u{FFFD}("
        );
        assert!(carry.is_empty());
    }

    #[test]
    fn writes_header_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.cast");
        let mut r = Recorder::create(&path, WinSize { cols: 90, rows: 20 }, true).unwrap();
        r.output("h\u{e9}".as_bytes()).unwrap();
        r.resize(WinSize { cols: 50, rows: 10 }).unwrap();
        r.input(b"y\r").unwrap();
        r.output(&[0xe2, 0x82]).unwrap();
        r.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["width"], 90);
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "h\u{e9}");
        assert_eq!(lines[2][1], "r");
        assert_eq!(lines[2][2], "50x10");
        assert_eq!(lines[3][1], "i");
        assert_eq!(lines[3][2], "y\r");
        assert_eq!(lines[4][2], "\u{FFFD}");
    }

    /// Without `with_input`, typed input leaves no trace in the recording.
    #[test]
    fn input_is_not_recorded_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.cast");
        let mut r = Recorder::create(&path, WinSize { cols: 90, rows: 20 }, false).unwrap();
        r.input(b"hunter2\r").unwrap();
        r.output(b"ok").unwrap();
        r.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        let codes: Vec<String> = text
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[1].to_string())
            .collect();
        assert_eq!(codes, ["\"o\""]);
    }
}

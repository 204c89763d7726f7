//! What a daemon client does with its terminal around a session: the detach key sequence
//! (`--detach-keys`, `run.detach_keys`) and the reset of every terminal mode an agent may have
//! set, written when the client leaves a session it did not see end.

/// Everything an agent may have switched on, switched off: SGR attributes, the alternate screen,
/// mouse reporting (all encodings), bracketed paste, focus events, application cursor keys and
/// keypad, the kitty keyboard protocol (its whole stack popped), and the cursor shown again.
pub const MODE_RESET: &[u8] = b"\x1b[0m\x1b[?1049l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1005l\
\x1b[?1006l\x1b[?1015l\x1b[?2004l\x1b[?1004l\x1b[?1l\x1b>\x1b[<99u\x1b[?25h";

/// The default detach sequence: Ctrl-] (as telnet's escape).
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-]";

/// A detach sequence: one or more keys, `ctrl-X` or a single character, comma-separated
/// (`ctrl-]`, `ctrl-p,ctrl-q`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachKeys(Vec<u8>);

impl DetachKeys {
    /// Parse `spec`; the error says what is wrong with which key.
    pub fn parse(spec: &str) -> Result<DetachKeys, String> {
        let mut out = Vec::new();
        for key in spec.split(',') {
            let key = key.trim();
            let lower = key.to_ascii_lowercase();
            let byte = if let Some(c) = lower.strip_prefix("ctrl-") {
                match c.as_bytes() {
                    [b @ (b'@' | b'a'..=b'z' | b'[' | b'\\' | b']' | b'^' | b'_')] => {
                        b.to_ascii_uppercase() & 0x1f
                    }
                    _ => {
                        return Err(format!(
                            "{key:?}: after ctrl- comes one of a-z @ [ \\ ] ^ _"
                        ));
                    }
                }
            } else {
                match key.as_bytes() {
                    [b] if b.is_ascii_graphic() => *b,
                    _ => {
                        return Err(format!(
                            "{key:?}: a key is ctrl-X or one printable character"
                        ));
                    }
                }
            };
            out.push(byte);
        }
        Ok(DetachKeys(out))
    }

    /// The key sequence's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// What [`DetachScanner::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Pass these bytes to the agent; nothing pending.
    Forward(Vec<u8>),
    /// Pass these bytes; the sequence was typed once: detach unless it is typed again right away
    /// (the caller waits a moment for more input, then calls [`DetachScanner::timeout`]).
    Armed(Vec<u8>),
    /// Pass these bytes, then detach.
    Detach(Vec<u8>),
}

/// Finds the detach sequence in terminal input. Typed once, it detaches; typed twice in a row, the
/// agent gets it once (so an agent that uses the key still can).
pub struct DetachScanner {
    keys: Vec<u8>,
    /// How much of the sequence the latest bytes matched (held back until decided).
    matched: usize,
    /// The whole sequence was typed once.
    armed: bool,
}

impl DetachScanner {
    /// A scanner for `keys`.
    pub fn new(keys: &DetachKeys) -> DetachScanner {
        DetachScanner {
            keys: keys.0.clone(),
            matched: 0,
            armed: false,
        }
    }

    /// Scan one read of input.
    pub fn feed(&mut self, input: &[u8]) -> Scan {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.armed {
                if b == self.keys[self.matched] {
                    self.matched += 1;
                    if self.matched == self.keys.len() {
                        out.extend_from_slice(&self.keys);
                        self.armed = false;
                        self.matched = 0;
                    }
                    continue;
                }
                self.armed = false;
                self.matched = 0;
                return Scan::Detach(out);
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.armed = true;
                    self.matched = 0;
                }
                continue;
            }
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    self.armed = true;
                    self.matched = 0;
                }
            } else {
                out.push(b);
            }
        }
        if self.armed {
            Scan::Armed(out)
        } else {
            Scan::Forward(out)
        }
    }

    /// No more input came while armed: detach.
    pub fn timeout(&mut self) -> bool {
        let armed = self.armed;
        self.armed = false;
        self.matched = 0;
        armed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_says_what_is_wrong() {
        assert_eq!(DetachKeys::parse("ctrl-]").unwrap().bytes(), [0x1d]);
        assert_eq!(
            DetachKeys::parse("ctrl-P, ctrl-q").unwrap().bytes(),
            [0x10, 0x11]
        );
        assert_eq!(DetachKeys::parse("ctrl-a,d").unwrap().bytes(), [0x01, b'd']);
        let e = DetachKeys::parse("ctrl-1").unwrap_err();
        assert!(e.contains("ctrl-1"), "{e}");
        assert!(DetachKeys::parse("").is_err());
        assert!(DetachKeys::parse("ab").is_err());
    }

    #[test]
    fn once_detaches_twice_sends_it_to_the_agent() {
        let keys = DetachKeys::parse("ctrl-]").unwrap();
        let mut s = DetachScanner::new(&keys);
        assert_eq!(s.feed(b"ab"), Scan::Forward(b"ab".to_vec()));
        assert_eq!(s.feed(b"x\x1d"), Scan::Armed(b"x".to_vec()));
        assert_eq!(s.feed(b"\x1d"), Scan::Forward(vec![0x1d]));
        assert_eq!(s.feed(b"\x1d\x1dz"), Scan::Forward(vec![0x1d, b'z']));
        assert_eq!(s.feed(b"\x1d"), Scan::Armed(vec![]));
        assert!(s.timeout());
        assert_eq!(s.feed(b"\x1dq"), Scan::Detach(vec![]));
    }

    #[test]
    fn a_partial_sequence_is_passed_on() {
        let keys = DetachKeys::parse("ctrl-p,ctrl-q").unwrap();
        let mut s = DetachScanner::new(&keys);
        assert_eq!(s.feed(b"\x10a"), Scan::Forward(vec![0x10, b'a']));
        assert_eq!(s.feed(b"\x10"), Scan::Forward(vec![]));
        assert_eq!(s.feed(b"\x11"), Scan::Armed(vec![]));
        assert_eq!(s.feed(b"\x10\x11"), Scan::Forward(vec![0x10, 0x11]));
    }
}

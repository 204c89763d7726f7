//! Bounded line splitting for text and JSONL input: a line longer than the cap keeps only its first
//! `cap` bytes, so a 50 MB line costs `cap` bytes of memory.

/// Splits a byte stream, fed in chunks, into lines (`\n`, with a trailing `\r` removed).
#[derive(Debug)]
pub struct LineSplitter {
    cap: usize,
    partial: Vec<u8>,
    truncated: bool,
}

impl LineSplitter {
    /// Lines are cut to at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        LineSplitter {
            cap,
            partial: Vec::new(),
            truncated: false,
        }
    }

    /// Feed a chunk; `on_line` gets each complete line (invalid UTF-8 replaced by U+FFFD).
    pub fn push(&mut self, mut chunk: &[u8], on_line: &mut dyn FnMut(&str)) {
        while let Some(nl) = memchr::memchr(b'\n', chunk) {
            self.take(&chunk[..nl]);
            self.emit(on_line);
            chunk = &chunk[nl + 1..];
        }
        self.take(chunk);
    }

    /// The last line, if the input did not end with a newline.
    pub fn finish(&mut self, on_line: &mut dyn FnMut(&str)) {
        if !self.partial.is_empty() || self.truncated {
            self.emit(on_line);
        }
    }

    fn take(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit(&mut self, on_line: &mut dyn FnMut(&str)) {
        let mut l: &[u8] = &self.partial;
        if let Some(s) = l.strip_suffix(b"\r") {
            l = s;
        }
        on_line(&String::from_utf8_lossy(l));
        self.partial.clear();
        self.truncated = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_caps() {
        let mut s = LineSplitter::new(4);
        let mut out = Vec::new();
        let mut f = |l: &str| out.push(l.to_string());
        s.push(b"ab\r\ncdefgh", &mut f);
        s.push(b"ij\nk", &mut f);
        s.finish(&mut f);
        assert_eq!(out, ["ab", "cdef", "k"]);
    }
}

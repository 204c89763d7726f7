//! Markdown code fences: lines inside ```` ``` ```` / `~~~` blocks are code, not tickets or
//! delegations. For markdown sources (transcript, `-p`, text); the TUI removes fences on screen.

/// Tracks whether the lines fed so far leave us inside a fenced code block.
#[derive(Debug, Clone, Default)]
pub struct CodeFence {
    /// The open fence: its character and length (a closing fence must be at least as long).
    open: Option<(u8, usize)>,
}

impl CodeFence {
    /// Outside any fence.
    pub fn new() -> Self {
        CodeFence::default()
    }

    /// Feed the next line; true when the line is code (inside a block, or a fence line itself), so
    /// the caller should not run the engine on it.
    pub fn is_code(&mut self, line: &str) -> bool {
        let t = super::normalize_line(line);
        let fence = fence_of(t);
        match (self.open, fence) {
            (None, Some(f)) => {
                self.open = Some(f);
                true
            }
            (None, None) => false,
            (Some((c, n)), Some((fc, fnn)))
                if c == fc && fnn >= n && t[fnn..].trim().is_empty() =>
            {
                self.open = None;
                true
            }
            (Some(_), _) => true,
        }
    }

    /// Forget any open block (a new message starts).
    pub fn reset(&mut self) {
        self.open = None;
    }
}

/// A fence line: three or more backticks or tildes.
fn fence_of(t: &str) -> Option<(u8, usize)> {
    let c = *t.as_bytes().first()?;
    if c != b'`' && c != b'~' {
        return None;
    }
    let n = t.bytes().take_while(|&b| b == c).count();
    (n >= 3).then_some((c, n))
}

#[cfg(test)]
mod tests {
    use super::CodeFence;

    #[test]
    fn tracks_blocks() {
        let lines = [
            ("TODO: real", false),
            ("```python", true),
            ("TODO: inside", true),
            ("~~~", true),
            ("```", true),
            ("BUG: after", false),
            ("  ~~~~", true),
            ("```", true),
            ("~~~~~", true),
            ("x", false),
        ];
        let mut f = CodeFence::new();
        for (line, code) in lines {
            assert_eq!(f.is_code(line), code, "{line:?}");
        }
        f.is_code("```");
        f.reset();
        assert!(!f.is_code("TODO: x"));
    }
}

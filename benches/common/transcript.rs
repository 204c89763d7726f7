//! The generated agent transcript shared by the engine and pipeline benches: text lines
//! ([`transcript`]) and the same lines as a TUI draws them on a terminal ([`render_tui`]).

use std::time::Duration;

/// A tiny deterministic PRNG (xorshift64*), so the transcript is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const WORDS: &[&str] = &[
    "the",
    "function",
    "returns",
    "value",
    "we",
    "should",
    "test",
    "agent",
    "implementation",
    "fibonacci",
    "iteratively",
    "memoization",
    "cache",
    "module",
    "error",
    "handling",
    "input",
    "negative",
    "raise",
    "type",
    "hints",
    "review",
    "changes",
    "branch",
    "commit",
    "deploy",
    "task",
    "result",
    "check",
    "edge",
    "cases",
    "performance",
    "large",
    "n",
    "benchmark",
    "documentation",
    "update",
    "README",
    "tests",
    "pass",
    "failing",
    "build",
    "release",
    "config",
    "file",
    "path",
    "now",
    "then",
    "and",
    "or",
    "with",
    "without",
    "for",
    "in",
    "of",
    "to",
    "a",
    "an",
    "is",
    "it",
];

const CODE: &[&str] = &[
    "    def fib(n: int) -> int:",
    "        if n < 0:",
    "            raise ValueError(\"n must be >= 0\")",
    "        a, b = 0, 1",
    "        for _ in range(n):",
    "            a, b = b, a + b",
    "        return a",
    "    let mut cache = HashMap::new();",
    "    // TODO: this is a code comment, not a ticket",
    "    # FIXME: a python comment",
    "+    assert_eq!(fib(10), 55);",
    "-    assert_eq!(fib(10), 56);",
    "  ⎿  Read 42 lines (ctrl+o to expand)",
    "  ⎿  $ cargo test --lib",
];

const HITS: &[&str] = &[
    "**Engineer Agent**: Create a Python function that computes the nth Fibonacci number iteratively.",
    "  Engineer Agent: add type hints to fib and raise ValueError on negative input",
    "Task(Engineer: implement fibonacci function)",
    "Delegating to QA Agent: test the implementation",
    "1. **QA Agent**: a delegation inside a numbered list item",
    "> Delegating to Documentation Agent: document the fibonacci API",
    "● Agent(Engineer: implement fibonacci function)",
    "TODO: add a memoization benchmark for large n",
    "- TODO: a ticket inside a bullet list item",
    "BUG: fib(-1) recurses forever instead of raising ValueError",
    "TICKET: ENG-42 document the fibonacci API",
    "TODO (High Priority): [QA] write tests for negative input",
    "Error: ModuleNotFoundError: No module named 'fibonacci'",
    "● API Error: 400 fake server: scripted invalid_request_error",
    "thread 'main' panicked at src/main.rs:2:5:",
    "FAILED tests/test_fib.py::test_negative - ValueError",
    "REVIEW16: double-check the overflow handling",
];

const NEAR_MISSES: &[&str] = &[
    "**Context**: the user wants a fibonacci function",
    "**Summary**: all delegated work is done",
    "Inline forms: `Task(Engineer: implement fibonacci function)` and *Delegating to Ops Agent: deploy*.",
    "The QA agent will run the suite after the engineer agent finishes.",
    "debug: value of n is 10",
    "I'll coordinate this by delegating to the specialist agents.",
];

pub(crate) fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A realistic mix: mostly prose and code, 10% blank lines, 1% hits (delegations, tickets, errors)
/// and 1% near misses by default (`MPM_BENCH_HITS_PERMILLE`, `MPM_BENCH_NEAR_PERMILLE`).
pub(crate) fn transcript(bytes: usize) -> String {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = String::with_capacity(bytes + 256);
    // Per mille: hits and near misses (lines that pass a prefilter but are not detections).
    let hits: usize = env_usize("MPM_BENCH_HITS_PERMILLE", 10);
    let near: usize = env_usize("MPM_BENCH_NEAR_PERMILLE", 10);
    while out.len() < bytes {
        let roll = rng.below(1000);
        match roll {
            r if r < hits => out.push_str(rng.pick(HITS)),
            r if r < hits + near => out.push_str(rng.pick(NEAR_MISSES)),
            r if r < 100 + hits + near => {}
            r if r < 280 + hits + near => out.push_str(rng.pick(CODE)),
            _ => {
                let prefix = rng.pick(&["", "", "", "  ", "● ", "- ", "1. ", "  "]);
                out.push_str(prefix);
                let n = 6 + rng.below(22);
                for i in 0..n {
                    if i > 0 {
                        out.push(' ');
                    }
                    let w = rng.pick(WORDS);
                    if i == 0 {
                        let mut c = w.chars();
                        if let Some(f) = c.next() {
                            out.extend(f.to_uppercase());
                            out.push_str(c.as_str());
                        }
                    } else {
                        out.push_str(w);
                    }
                }
                out.push('.');
            }
        }
        out.push('\n');
    }
    out
}

/// CPU time of this thread: the machine is shared, so wall time would mostly measure the neighbours.
pub(crate) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The transcript as claude's classic renderer draws it, at 100 columns: the two-column margin,
/// a blank row after each paragraph or list item (code and tool output rows are consecutive),
/// reply bullets in colour,
/// `**bold**` as SGR bold without the asterisks, a third of the rows with their spaces drawn as
/// cursor jumps (CHA), coloured code tokens, paragraphs hard-wrapped at 98 columns with a
/// two-column continuation indent, a status line redrawn (erase + cursor up) every 16 rows, a
/// synchronized frame every 64 rows and a window title (OSC) every 128.
pub(crate) fn render_tui(text: &str) -> Vec<u8> {
    const WIDTH: usize = 98;
    let mut out = Vec::with_capacity(text.len() * 2);
    for (n, line) in text.lines().enumerate() {
        if n % 128 == 0 {
            out.extend_from_slice("\x1b]0;\u{2733} Claude Code\x07".as_bytes());
        }
        let sync = n % 64 == 0;
        if sync {
            out.extend_from_slice(b"\x1b[?2026h");
        }
        if n % 16 == 0 {
            out.extend_from_slice(
                "\x1b[38;5;174m\u{2722}\x1b[39m Composing\u{2026} (esc to interrupt)\x1b[K\r\n\x1b[1A\x1b[2K\x1b[G"
                    .as_bytes(),
            );
        }
        // The two-column margin (a reply's bullet sits in it).
        let margined;
        let line = if line.is_empty() || line.starts_with("\u{25cf} ") || line.starts_with("  ") {
            line
        } else {
            margined = format!("  {line}");
            &margined
        };
        // Hard wrap at word boundaries, as claude does; continuation rows get the text indent.
        let indent = " ".repeat(text_indent(line));
        let mut rows: Vec<String> = Vec::new();
        let mut row = String::new();
        for (k, word) in line.split(' ').enumerate() {
            let cells = row.chars().count();
            if k > 0 && cells + 1 + word.chars().count() > WIDTH && !row.trim().is_empty() {
                rows.push(std::mem::replace(&mut row, indent.clone()));
            } else if k > 0 {
                row.push(' ');
            }
            row.push_str(word);
        }
        rows.push(row);
        let jumps = n % 3 == 0;
        for r in rows {
            draw_row(&r, jumps, &mut out);
            out.extend_from_slice(b"\r\n");
        }
        // Markdown blocks (paragraphs, list items) are separated by a blank row; code and tool
        // output rows follow each other.
        let code = ["      ", "  +", "  -    ", "  \u{23bf}"]
            .iter()
            .any(|p| line.starts_with(p));
        if !line.is_empty() && !code {
            out.extend_from_slice(b"\r\n");
        }
        if sync {
            out.extend_from_slice(b"\x1b[?2026l");
        }
    }
    out
}

/// The column where a line's text starts (indent, then a bullet or list marker): where its
/// continuation rows start.
fn text_indent(line: &str) -> usize {
    let rest = line.trim_start_matches(' ');
    let indent = line.len() - rest.len();
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if rest.starts_with("\u{25cf} ") || rest.starts_with("- ") {
        indent + 2
    } else if digits > 0 && rest[digits..].starts_with(". ") {
        indent + digits + 2
    } else {
        indent
    }
}

/// One screen row: bullets coloured, `**x**` as bold, code keywords coloured, and (with `jumps`)
/// every run of spaces after the first word drawn as a CHA jump to the next word's column.
fn draw_row(row: &str, jumps: bool, out: &mut Vec<u8>) {
    let mut col = 1;
    let mut bold = false;
    let mut rest = row;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("**") {
            out.extend_from_slice(if bold { b"\x1b[22m" } else { b"\x1b[1m" });
            bold = !bold;
            rest = r;
            continue;
        }
        if let Some(r) = rest.strip_prefix("\u{25cf}") {
            out.extend_from_slice("\x1b[38;5;231m\u{25cf}\x1b[39m".as_bytes());
            col += 1;
            rest = r;
            continue;
        }
        for kw in ["def ", "let ", "return ", "for "] {
            if let Some(r) = rest.strip_prefix(kw) {
                out.extend_from_slice(b"\x1b[94m");
                out.extend_from_slice(kw.trim_end().as_bytes());
                out.extend_from_slice(b"\x1b[39m ");
                col += kw.len();
                rest = r;
            }
        }
        let Some(c) = rest.chars().next() else { break };
        if c == ' ' && jumps && col > 3 {
            let spaces = rest.len() - rest.trim_start_matches(' ').len();
            col += spaces;
            out.extend_from_slice(format!("\x1b[{col}G").as_bytes());
            rest = &rest[spaces..];
            continue;
        }
        let mut buf = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        col += 1;
        rest = &rest[c.len_utf8()..];
    }
    if bold {
        out.extend_from_slice(b"\x1b[22m");
    }
}

/// `n` extra patterns as a pattern file: 70% line-anchored custom ticket keywords, 30% floating
/// component alarms with `literals:`.
pub(crate) fn extra_patterns(n: usize) -> String {
    use std::fmt::Write as _;
    const KW: &[&str] = &[
        "REVIEW", "SECURITY", "PERF", "DEPLOY", "DOCS", "CHORE", "REFACTOR", "SPIKE",
    ];
    if n == 0 {
        return "version: 1\npatterns: []\n".to_string();
    }
    let mut y = String::from("version: 1\npatterns:\n");
    for i in 0..n {
        if i % 10 < 7 {
            let kw = format!("{}{}", KW[i % KW.len()], i);
            let _ = write!(
                y,
                "  - id: extra-{i}\n    category: ticket\n    regex: '^(?P<ticket_type>{kw})(?:\\s*\\((?P<priority>[^)]*)\\))?:\\s*(?P<title>\\S.*)'\n"
            );
        } else {
            let _ = write!(
                y,
                "  - id: extra-{i}\n    category: alarm\n    regex: '\\b(?P<component>svc{i}-[a-z]+)\\b.*\\b(?:crashed|OOM killed)\\b'\n    literals: ['svc{i}-']\n"
            );
        }
    }
    y
}

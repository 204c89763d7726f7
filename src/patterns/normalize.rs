//! Line normalisation: strip what a renderer or markdown puts in front of the content, so that
//! line-anchored patterns (`^TODO:`, `^\*\*X Agent\*\*:`) see the content itself.
//!
//! Stripped, repeatedly and in any order (at most [`MAX_STRIP_STEPS`] markers): leading whitespace
//! (ASCII and U+00A0) and control characters, claude's TUI decorations `●` `⏺` `⎿` `▎` `❯` `│`, markdown blockquote `>`,
//! list markers `-` `*` `+` `1.` `1)` and task boxes `[ ]` `[x]` (each only when followed by a
//! space or the end of the line). Trailing whitespace (incl. `\r`) is stripped too.
//!
//! Not stripped, on purpose: `//`, `#` (code comments are not tickets) and `+`/`-` glued to the text
//! (a diff line `+TODO` is code).

/// How many leading markers are stripped at most; keeps the cost bounded on junk like `- - - - …`.
pub const MAX_STRIP_STEPS: usize = 8;

/// TUI decorations claude draws in front of rows (`●` reply bullet, `⏺` older bullet, `⎿` tool
/// output, `▎` blockquote bar, `❯` prompt, `│` box side).
const DECORATIONS: [char; 6] = ['●', '⏺', '⎿', '▎', '❯', '│'];

/// The content of one line without leading decoration, indent, list or quote markers, and without
/// trailing whitespace. Borrowed from `line`; O(prefix length), no allocation.
pub fn normalize_line(line: &str) -> &str {
    let mut s = trim_start_ws(line);
    for _ in 0..MAX_STRIP_STEPS {
        match strip_marker(s) {
            Some(rest) => s = trim_start_ws(rest),
            None => break,
        }
    }
    s.trim_end_matches(|c: char| c.is_whitespace())
}

fn is_ws(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\u{a0}' || c == '\r'
}

/// Leading whitespace and C0 control characters (a BEL or other control left over by a naive
/// escape stripper is not content).
fn trim_start_ws(s: &str) -> &str {
    s.trim_start_matches(|c: char| is_ws(c) || c.is_ascii_control())
}

/// `rest` when `s` is `marker` followed by whitespace or nothing.
fn followed_by_space(rest: &str) -> Option<&str> {
    match rest.chars().next() {
        None => Some(rest),
        Some(c) if is_ws(c) => Some(rest),
        _ => None,
    }
}

/// Strip one leading marker, or `None` when `s` starts with content.
fn strip_marker(s: &str) -> Option<&str> {
    let first = s.chars().next()?;
    if DECORATIONS.contains(&first) {
        // Decorations are stripped even when glued to text (`●API Error`): they never start content.
        return Some(&s[first.len_utf8()..]);
    }
    match first {
        '>' => {
            // Nested quotes `>>` count as one marker each.
            let rest = &s[1..];
            if rest.starts_with('>') {
                Some(rest)
            } else {
                followed_by_space(rest)
            }
        }
        '-' | '*' | '+' => followed_by_space(&s[1..]),
        '[' => {
            let b = s.as_bytes();
            if b.len() >= 3 && matches!(b[1], b' ' | b'x' | b'X') && b[2] == b']' {
                followed_by_space(&s[3..])
            } else {
                None
            }
        }
        '0'..='9' => {
            let digits = s.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 3 {
                return None;
            }
            let rest = &s[digits..];
            let rest = rest.strip_prefix('.').or_else(|| rest.strip_prefix(')'))?;
            // `1.` alone or `1. text`; but not `1.5` or `3.14`.
            match rest.chars().next() {
                None => Some(rest),
                Some(c) if is_ws(c) => Some(rest),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_line;

    #[test]
    fn strips_decorations_and_markers() {
        let cases: &[(&str, &str)] = &[
            ("**Engineer Agent**: x", "**Engineer Agent**: x"),
            ("  Engineer Agent: x  ", "Engineer Agent: x"),
            ("● API Error: 400 fake", "API Error: 400 fake"),
            ("  ⎿ \u{a0}TODO: run the QA suite", "TODO: run the QA suite"),
            (
                "▎ Delegating to Documentation Agent: x",
                "Delegating to Documentation Agent: x",
            ),
            (
                "> Delegating to Documentation Agent: x",
                "Delegating to Documentation Agent: x",
            ),
            (">> nested", "nested"),
            ("❯ please delegate", "please delegate"),
            ("- TODO: a ticket", "TODO: a ticket"),
            ("  - [ ] TODO: boxed", "TODO: boxed"),
            ("1. **QA Agent**: y", "**QA Agent**: y"),
            ("  1. QA Agent: y", "QA Agent: y"),
            ("12) FIXME: z", "FIXME: z"),
            ("3.14 is pi", "3.14 is pi"),
            ("+    // TODO: x", "// TODO: x"),
            ("+TODO: diff", "+TODO: diff"),
            (
                "*Delegating to Ops Agent: deploy*",
                "*Delegating to Ops Agent: deploy*",
            ),
            ("# TODO: comment", "# TODO: comment"),
            ("", ""),
            ("   ", ""),
            ("-", ""),
            ("1234. x", "1234. x"),
            ("TODO: x\r", "TODO: x"),
            ("\u{7}error: API Error: 400", "error: API Error: 400"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_line(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn bounded_on_marker_floods() {
        let junk = "- ".repeat(10_000) + "TODO: x";
        // Stops after MAX_STRIP_STEPS markers: the ticket is not reachable, and nothing explodes.
        assert!(normalize_line(&junk).starts_with("- "));
    }
}

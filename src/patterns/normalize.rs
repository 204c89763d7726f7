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
    // Fast paths (every line pays for this function): content that starts with a byte no strip
    // rule looks at, and ends with a byte that is not whitespace.
    let s = match line.as_bytes().first() {
        Some(&b) if starts_content(b) => line,
        _ => strip_start(line),
    };
    match s.as_bytes().last() {
        Some(&b) if b.is_ascii() && !is_ascii_space(b) => s,
        _ => s.trim_end_matches(|c: char| c.is_whitespace()),
    }
}

/// An ASCII byte that no leading strip rule applies to (not whitespace or a control character,
/// not a quote, list or task-box marker, not a digit); bytes of non-ASCII characters go the slow
/// way (decorations are non-ASCII).
fn starts_content(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'>' | b'-' | b'*' | b'+' | b'[' | b'0'..=b'9')
}

/// ASCII whitespace as [`char::is_whitespace`] has it (incl. vertical tab).
fn is_ascii_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn strip_start(line: &str) -> &str {
    let mut s = trim_start_ws(line);
    for _ in 0..MAX_STRIP_STEPS {
        match strip_marker(s) {
            Some(rest) => s = trim_start_ws(rest),
            None => break,
        }
    }
    s
}

/// Append `s` lower-cased to `out` (ASCII in place, without a temporary).
pub fn push_lowercase(s: &str, out: &mut String) {
    let at = out.len();
    if s.is_ascii() {
        out.push_str(s);
        out[at..].make_ascii_lowercase();
    } else {
        out.push_str(&s.to_lowercase());
    }
}

/// Append the words of `s` to `out`, lower-cased and one space apart (leading, trailing and repeated
/// whitespace dropped): the folding that agent names and dedup keys share.
pub fn push_lower_words(s: &str, out: &mut String) {
    let base = out.len();
    for word in s.split_whitespace() {
        if out.len() > base {
            out.push(' ');
        }
        push_lowercase(word, out);
    }
}

fn is_ws(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\u{a0}' || c == '\r'
}

/// Leading whitespace and C0 control characters (a BEL or other control left over by a naive
/// escape stripper is not content).
fn trim_start_ws(s: &str) -> &str {
    // ASCII first, byte-wise (controls, space, DEL); the only non-ASCII one is U+00A0.
    let n = s.bytes().take_while(|&b| b <= b' ' || b == 0x7f).count();
    let s = &s[n..];
    match s.as_bytes().first() {
        Some(&b) if b >= 0x80 => s.trim_start_matches(|c: char| is_ws(c) || c.is_ascii_control()),
        _ => s,
    }
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
    let &b0 = s.as_bytes().first()?;
    if b0 >= 0x80 {
        let first = s.chars().next()?;
        // Decorations are stripped even when glued to text (`●API Error`): they never start content.
        return DECORATIONS.contains(&first).then(|| &s[first.len_utf8()..]);
    }
    match char::from(b0) {
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

    /// The fast paths agree with the general rule on every one- and two-byte ASCII start and end.
    #[test]
    fn fast_paths_agree_with_the_slow_rule() {
        fn slow(l: &str) -> &str {
            super::strip_start(l).trim_end_matches(|c: char| c.is_whitespace())
        }
        for a in 0u8..128 {
            for b in [b' ', b'x', b'1', b'.', b'\t', b'\x0b'] {
                for line in [
                    format!("{}{}TODO: x{}", a as char, b as char, a as char),
                    format!("{}", a as char),
                    format!("x{}", a as char),
                ] {
                    assert_eq!(normalize_line(&line), slow(&line), "line {line:?}");
                }
            }
        }
        for line in ["TODO: x\u{3000}", "x\u{a0}", "\u{a0}x", "●x", "é TODO"] {
            assert_eq!(normalize_line(line), slow(line), "line {line:?}");
        }
    }

    #[test]
    fn bounded_on_marker_floods() {
        let junk = "- ".repeat(10_000) + "TODO: x";
        // Stops after MAX_STRIP_STEPS markers: the ticket is not reachable, and nothing explodes.
        assert!(normalize_line(&junk).starts_with("- "));
    }
}

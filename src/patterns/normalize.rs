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
    strip_start(line).trim_end_matches(|c: char| c.is_whitespace())
}

fn strip_start(line: &str) -> &str {
    let b = line.as_bytes();
    let mut i = skip_blanks(b, 0);
    for _ in 0..MAX_STRIP_STEPS {
        match marker_len(b, i) {
            Some(n) => i = skip_blanks(b, i + n),
            None => break,
        }
    }
    // Every step moves over whole characters (ASCII bytes, U+00A0, decorations).
    &line[i..]
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

/// [`DECORATIONS`] in UTF-8 (each three bytes).
const DECORATION_BYTES: [[u8; 3]; 6] = {
    let mut out = [[0; 3]; 6];
    let mut k = 0;
    while k < DECORATIONS.len() {
        let mut buf = [0; 4];
        assert!(
            DECORATIONS[k].len_utf8() == 3,
            "decorations are three bytes long"
        );
        DECORATIONS[k].encode_utf8(&mut buf);
        out[k] = [buf[0], buf[1], buf[2]];
        k += 1;
    }
    out
};

/// The index after the blanks at `i`: ASCII whitespace and control characters (a BEL or other
/// control left over by a naive escape stripper is not content), DEL, and U+00A0.
fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        match c {
            0..=0x20 | 0x7f => i += 1,
            0xc2 if b.get(i + 1) == Some(&0xa0) => i += 2,
            _ => break,
        }
    }
    i
}

/// A marker ends at `i`: the line ends or a blank (space, tab, `\r`, U+00A0) follows.
fn blank_or_end(b: &[u8], i: usize) -> bool {
    match b.get(i) {
        None | Some(b' ' | b'\t' | b'\r') => true,
        Some(0xc2) => b.get(i + 1) == Some(&0xa0),
        Some(_) => false,
    }
}

/// The length of the marker at `i`, or `None` when content starts there.
fn marker_len(b: &[u8], i: usize) -> Option<usize> {
    let rest = b.get(i..)?;
    match *rest.first()? {
        // Decorations are stripped even when glued to text (`●API Error`): they never start content.
        0x80.. => DECORATION_BYTES
            .iter()
            .any(|d| rest.starts_with(d))
            .then_some(3),
        // Nested quotes `>>` count as one marker each.
        b'>' => (rest.get(1) == Some(&b'>') || blank_or_end(b, i + 1)).then_some(1),
        b'-' | b'*' | b'+' => blank_or_end(b, i + 1).then_some(1),
        b'[' => (matches!(rest.get(1), Some(b' ' | b'x' | b'X'))
            && rest.get(2) == Some(&b']')
            && blank_or_end(b, i + 3))
        .then_some(3),
        b'0'..=b'9' => {
            // `1.` or `12)` alone or before a blank; but not `1.5`, `3.14` or `1234.`.
            let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
            (digits <= 3
                && matches!(rest.get(digits), Some(b'.' | b')'))
                && blank_or_end(b, i + digits + 1))
            .then_some(digits + 1)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_line;

    /// The rule as first written, a character at a time: the reference for the byte-level code.
    mod reference {
        use super::super::{DECORATIONS, MAX_STRIP_STEPS};

        pub(super) fn strip_start(line: &str) -> &str {
            let mut s = trim_start_ws(line);
            for _ in 0..MAX_STRIP_STEPS {
                match strip_marker(s) {
                    Some(rest) => s = trim_start_ws(rest),
                    None => break,
                }
            }
            s
        }

        pub(super) fn normalize(line: &str) -> &str {
            strip_start(line).trim_end_matches(|c: char| c.is_whitespace())
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
                Some(&b) if b >= 0x80 => {
                    s.trim_start_matches(|c: char| is_ws(c) || c.is_ascii_control())
                }
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
    }

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

    /// The byte-level rule agrees with the rule as first written on every one- and two-byte ASCII
    /// start and end.
    #[test]
    fn fast_paths_agree_with_the_slow_rule() {
        fn slow(l: &str) -> &str {
            reference::normalize(l)
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

    proptest::proptest! {
        /// Any mix of blanks, markers, decorations and text: the byte-level rule gives the reference.
        #[test]
        fn fast_paths_agree_on_any_start(line in r"(?: |\t|\r|\x07|\x7f|\u{a0}|\u{2003}|- |-|\* |\+|> |>|>>|1\. |1\.5|12\) |1234\. |1\.|\[ \] |\[x\]|\[X\] |\[y\] |● |●|⏺|⎿|▎|❯ |│|é|x|TODO: y|!|\.){0,12}") {
            let slow = reference::normalize(&line);
            proptest::prop_assert_eq!(normalize_line(&line), slow);
        }
    }

    #[test]
    fn bounded_on_marker_floods() {
        let junk = "- ".repeat(10_000) + "TODO: x";
        // Stops after MAX_STRIP_STEPS markers: the ticket is not reachable, and nothing explodes.
        assert!(normalize_line(&junk).starts_with("- "));
    }
}

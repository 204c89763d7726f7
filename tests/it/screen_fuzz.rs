//! The screen model and the line reader never panic, whatever the agent writes and whatever the
//! terminal size: a proptest over VT grammar (CSI/ESC/OSC/DCS with random parameters, wide and
//! combining characters, broken UTF-8, scroll regions, modes, resizes, tiny and huge sizes) with a
//! fixed budget, and a table of inputs that once panicked.

use std::sync::Arc;

use mpm::detect::Pipeline;
use mpm::patterns::Engine;
use mpm::screen::Screen;
use proptest::prelude::*;

/// One step of a session: output bytes (fed in chunks) or a resize.
#[derive(Debug, Clone)]
enum Step {
    Feed(Vec<u8>),
    Resize(u16, u16),
}

fn param() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (0u32..10).prop_map(|n| n.to_string()),
        (0u32..300).prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "999",
            "65535",
            "65536",
            "4294967296",
            "99999999999999999999"
        ])
        .prop_map(str::to_string),
    ]
}

fn csi() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec!["", "", "", "?", ">", "<", "="]),
        prop::collection::vec(param(), 0..5),
        prop::sample::select(vec!["", "", "", "", " ", "$", "!", "\""]),
        prop_oneof![
            // The finals the model implements, often; any final byte sometimes.
            prop::sample::select(b"ABCDEFGHJKLMPSTXde`afhlrsu@mnq".to_vec()),
            0x40u8..0x7f,
        ],
    )
        .prop_map(|(private, params, inter, fin)| {
            let mut s = format!("\x1b[{private}{}{inter}", params.join(";")).into_bytes();
            s.push(fin);
            s
        })
}

fn dec_mode() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![7u16, 25, 47, 1047, 1049, 2026, 2004, 1]),
        any::<bool>(),
    )
        .prop_map(|(m, on)| format!("\x1b[?{m}{}", if on { 'h' } else { 'l' }).into_bytes())
}

fn text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~]{0,40}".prop_map(String::into_bytes),
        // Wide (CJK, emoji), combining, zero-width and ambiguous characters.
        prop::collection::vec(
            prop::sample::select(vec![
                "中",
                "文",
                "字",
                "😀",
                "👍🏽",
                "e\u{301}",
                "\u{200b}",
                "\u{fe0f}",
                "●",
                "⎿",
                "─",
                "é",
                "\u{ff21}",
                " ",
                "x",
                "**",
                "Engineer Agent: ",
                "TODO: ",
            ]),
            0..20
        )
        .prop_map(|v| v.concat().into_bytes()),
        // Broken UTF-8: lone continuation bytes, truncated sequences, invalid leads.
        prop::collection::vec(
            prop::sample::select(vec![
                0x80u8, 0xbf, 0xc3, 0xe4, 0xb8, 0xf0, 0x9f, 0xff, 0xfe, 0xc0
            ]),
            0..8
        ),
    ]
}

fn esc() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "\x1b7", "\x1b8", "\x1bD", "\x1bE", "\x1bM", "\x1bc", "\x1b=", "\x1b>", "\x1b(B",
            "\x1b(0", "\x1b#8", "\x1b", "\x1b[", "\x1b\\",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        (
            prop::sample::select(vec![
                "\x1b]0;",
                "\x1b]8;;",
                "\x1b]133;A",
                "\x1bP",
                "\x1b_",
                "\x1b^",
                "\x1bX"
            ]),
            "[ -~]{0,20}",
            prop::sample::select(vec!["\x07", "\x1b\\", "", "\x18", "\x1b["]),
        )
            .prop_map(|(a, b, c)| format!("{a}{b}{c}").into_bytes()),
    ]
}

fn control() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        b"\r\n".to_vec(),
        b"\n".to_vec(),
        b"\r".to_vec(),
        vec![0x08],
        vec![0x09],
        vec![0x0b],
        vec![0x0c],
        vec![0x07],
        vec![0x0e],
        vec![0x0f],
        vec![0x00],
        vec![0x7f],
        vec![0x9b],
    ])
}

fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => text(),
        3 => csi(),
        2 => control(),
        1 => dec_mode(),
        1 => esc(),
    ]
}

fn size() -> impl Strategy<Value = (u16, u16)> {
    prop_oneof![
        (1u16..6, 1u16..6),
        (1u16..140, 1u16..50),
        prop::sample::select(vec![
            (65535u16, 65535u16),
            (65535, 1),
            (1, 65535),
            (4000, 3)
        ]),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            8 => prop::collection::vec(token(), 1..24).prop_map(|t| Step::Feed(t.concat())),
            1 => size().prop_map(|(c, r)| Step::Resize(c, r)),
        ],
        1..24,
    )
}

fn engine() -> Arc<Engine> {
    static ENGINE: std::sync::OnceLock<Arc<Engine>> = std::sync::OnceLock::new();
    ENGINE
        .get_or_init(|| {
            Arc::new(
                Engine::builder()
                    .build()
                    .unwrap_or_else(|e| panic!("engine: {e}")),
            )
        })
        .clone()
}

/// Run `steps` through the whole screen pipeline (model, line reader, engine) and through a bare
/// screen whose every hook reads all rows; the cursor stays on the screen throughout.
fn run(size: (u16, u16), steps: &[Step], chunk: usize) {
    let mut p = Pipeline::new(engine(), size.0, size.1);
    let mut s = Screen::new(size.0, size.1);
    for step in steps {
        match step {
            Step::Feed(bytes) => {
                for c in bytes.chunks(chunk.max(1)) {
                    let _ = p.feed(c);
                    s.feed(c, &mut |s, _| {
                        let _ = s.contents();
                        s.history_mut().clear();
                    });
                    assert!(s.cursor_row() < s.rows() && s.cursor_col() < s.cols());
                }
            }
            Step::Resize(c, r) => {
                let _ = p.resize(*c, *r);
                s.resize(*c, *r);
                assert!(s.cursor_row() < s.rows() && s.cursor_col() < s.cols());
            }
        }
    }
    let _ = p.finish();
    let _ = s.contents();
}

proptest! {
    // A fixed budget in the suite: 300 sessions of up to 24 steps (seconds). A longer hunt:
    // `MPM_FUZZ_CASES=100000 cargo test --release --test it vt_grammar`.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("MPM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn vt_grammar_never_panics(size in size(), steps in steps(), chunk in 1usize..64) {
        run(size, &steps, chunk);
    }
}

/// Inputs that once panicked the model (size, bytes); each must now go through quietly.
const FOUND: &[((u16, u16), &[u8])] = &[
    // Issue 12: autowrap off, cursor at the last column, a wide character.
    ((100, 30), b"\x1b[?7l\x1b[999G\xe4\xb8\xad\r\n"),
    ((1, 1), b"\x1b[?7l\xe4\xb8\xad"),
    ((2, 1), b"\x1b[?7l\x1b[2G\xe4\xb8\xad\xe4\xb8\xad"),
];

#[test]
fn found_inputs_do_not_panic() {
    for (size, bytes) in FOUND {
        run(*size, &[Step::Feed(bytes.to_vec())], bytes.len());
        run(*size, &[Step::Feed(bytes.to_vec())], 1);
    }
}

#[test]
fn issue_12_reproduction_through_mpm_scan() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mpm"))
        .args(["scan", "--input", "raw", "-"])
        .env("XDG_CONFIG_HOME", "/nonexistent-mpm-test")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            if let Some(mut i) = c.stdin.take() {
                i.write_all(b"\x1b[?7l\x1b[999G\xe4\xb8\xad\r\n")?;
            }
            c.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("mpm scan: {e}"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

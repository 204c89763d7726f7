//! Pattern compile limits through the real binary: pathological pattern sets are refused with the
//! file and pattern named (exit 2), and the process's peak memory stays bounded.

use std::path::Path;
use std::process::{Command, Stdio};

/// `mpm ARGS` with a private config home and empty stdin: (exit code, stderr, peak RSS in KB).
/// (The peak as [`crate::common::mpm_with_peak_rss`] measures it.)
fn mpm_rss(home: &Path, args: &[&str]) -> (Option<i32>, String, i64) {
    let (out, rss) = crate::common::mpm_with_peak_rss(|c| {
        c.args(args)
            .current_dir(home)
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_STATE_HOME", home.join("state"))
            .env_remove("MPM_CONFIG");
    });
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err, rss)
}

fn write_patterns(path: &Path, n: usize, entry: impl Fn(usize) -> String) {
    let mut text = String::from("patterns:\n");
    for i in 0..n {
        text.push_str(&entry(i));
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
}

/// The first reproduction: 100 patterns like `^(?:\w+\s+){0,20}W<i>(?P<title>.+)` took
/// 2.8 GB (200 aborted). Now the set is refused once it passes the total limit, at the pattern
/// that passes it, and the whole check stays within a few hundred MB.
#[test]
fn repeated_unicode_classes_are_refused_within_bounded_memory() {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = home.path().join("rep.yaml");
    write_patterns(&file, 100, |i| {
        format!(
            "  - id: w{i}\n    category: x\n    regex: '^(?:\\w+\\s+){{0,20}}W{i}(?P<title>.+)'\n"
        )
    });
    let f = file.display().to_string();
    let (code, err, rss_kb) = mpm_rss(home.path(), &["patterns", "check", &f]);
    assert_eq!(code, Some(2), "{err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("{f}:"))
            && first.contains(": pattern w")
            && first.contains("the patterns exceed 96 MiB together (the limit)"),
        "{err}"
    );
    assert!(rss_kb < 512 * 1024, "peak RSS {rss_kb} KB");
}

/// A few of the same patterns fit: they compile and detect, in bounded memory.
#[test]
fn repeated_unicode_classes_within_the_limit_compile_and_detect() {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = home.path().join("rep.yaml");
    write_patterns(&file, 8, |i| {
        format!(
            "  - id: w{i}\n    category: x{i}\n    regex: '^(?:\\w+\\s+){{0,20}}W{i}(?P<title>.+)'\n"
        )
    });
    let input = home.path().join("in.txt");
    std::fs::write(&input, "alpha beta gamma W7 the title\nnothing here\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_mpm"))
        .args(["scan", "--input", "text", "--patterns"])
        .arg(&file)
        .arg(&input)
        .current_dir(home.path())
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env_remove("MPM_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(found.len(), 1, "{stdout}");
    assert_eq!(found[0]["pattern"], "w7");
    assert_eq!(found[0]["title"], "the title");
}

/// The second reproduction: 13,000 trivial patterns aborted allocating 60 GB. Refused at
/// the first pattern beyond the cap, through `mpm scan --patterns`, in bounded memory.
#[test]
fn thirteen_thousand_patterns_are_refused_within_bounded_memory() {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = home.path().join("many.yaml");
    write_patterns(&file, 13_000, |i| {
        format!("  - id: t{i}\n    category: x\n    regex: 'tok{i}x'\n")
    });
    let f = file.display().to_string();
    let (code, err, rss_kb) = mpm_rss(home.path(), &["scan", "--patterns", &f, "-"]);
    assert_eq!(code, Some(2), "{err}");
    // 26 built-in patterns come first: the 2001st pattern is the file's t1974.
    let builtin = mpm::patterns::builtin_packs()
        .map(|(_, t)| t.matches("\n  - id:").count())
        .sum::<usize>();
    let beyond = mpm::patterns::MAX_PATTERNS - builtin;
    let line = 2 + 3 * beyond;
    assert!(
        err.contains(&format!(
            "{f}:{line}:9: pattern t{beyond}: more than 2000 patterns (the limit)"
        )),
        "{err}"
    );
    assert!(rss_kb < 256 * 1024, "peak RSS {rss_kb} KB");
}

/// One pattern too big on its own: named by `mpm patterns check` and by `mpm scan --patterns`.
#[test]
fn a_pattern_too_big_alone_is_named_by_check_and_scan() {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = home.path().join("huge.yaml");
    std::fs::write(
        &file,
        "patterns:\n  - id: fine\n    category: x\n    regex: '^FINE: (?P<title>.+)'\n  - id: huge\n    category: x\n    regex: '(?:\\w+\\s+){0,300}X'\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let f = file.display().to_string();
    for args in [
        vec!["patterns", "check", f.as_str()],
        vec!["scan", "--patterns", f.as_str(), "-"],
    ] {
        let (code, err, _) = mpm_rss(home.path(), &args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("{f}:5:9: pattern huge: the regex compiles to more than 4 MiB (the per-pattern limit)")),
            "{args:?}: {err}"
        );
        assert!(!err.contains("error building NFA"), "{err}");
    }
}

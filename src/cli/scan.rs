//! `mpm scan`: the text pipeline offline, over recorded input; one JSON detection per line.

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use super::GlobalArgs;
use crate::detect::{LineSplitter, Pipeline};
use crate::events::{Detection, TextSource};
use crate::patterns::{Engine, configured_sources};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum InputKind {
    /// Bytes a program wrote to a PTY, replayed through the screen model.
    Raw,
    /// Plain text lines.
    Text,
    /// claude's session transcript (JSONL).
    ClaudeJsonl,
    /// `claude -p --output-format stream-json` output.
    StreamJson,
    /// An asciicast v2 recording (`mpm run --record`): its output replayed through the screen model
    /// at the recorded size, with its resize events.
    Cast,
}

#[derive(Debug, Args)]
pub(crate) struct ScanArgs {
    /// Screen columns for `--input raw`.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub cols: u16,
    /// Screen rows for `--input raw`.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..))]
    pub rows: u16,
    #[arg(long, value_enum, default_value_t = InputKind::Raw)]
    pub input: InputKind,
    /// Read the screen as this agent CLI draws it (`codex`, `gemini`, `opencode`, `aider`: reply
    /// markers, chrome, error displays, turn ends; `claude` or none: claude's screen).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Input files; `-` reads stdin.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Read size for raw input: about one PTY read burst.
const CHUNK: usize = 64 * 1024;
/// Plain text lines are cut here (the engine looks at no more than its first 64 KiB either).
const TEXT_LINE_CAP: usize = crate::patterns::MAX_LINE_BYTES;
/// JSONL lines are cut here; a longer (cut) line is not valid JSON and gives nothing.
const JSON_LINE_CAP: usize = 16 * 1024 * 1024;

pub(super) fn scan(g: &GlobalArgs, a: ScanArgs) -> anyhow::Result<i32> {
    let config = super::load_config(g, Default::default())?;
    let engine = Engine::builder()
        .agents(&config.config.agents)
        .files(configured_sources(&g.patterns))
        .build()?;
    // All files form one session: one dedup memory, a fresh screen per file.
    let engine = Arc::new(engine);
    let dedup = crate::detect::Dedup::new();
    let cli = match a.profile.as_deref() {
        None | Some("claude") => None,
        Some(p) => Some(crate::detect::CliScreen::builtin(p).ok_or_else(|| {
            anyhow::anyhow!("unknown screen profile '{p}' (claude, codex, gemini, opencode, aider)")
        })?),
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for path in &a.files {
        let mut input: Box<dyn Read> = if path.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(
                std::fs::File::open(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            )
        };
        if a.input == InputKind::Cast {
            let mk = |cols, rows| {
                Pipeline::new(engine.clone(), cols, rows)
                    .with_dedup(dedup.clone())
                    .with_cli(cli.clone())
            };
            scan_cast(mk, &mut *input, &mut out, &path.display().to_string())?;
            continue;
        }
        let mut p = Pipeline::new(engine.clone(), a.cols, a.rows)
            .with_dedup(dedup.clone())
            .with_cli(cli.clone());
        scan_one(&mut p, a.input, &mut *input, &mut out)
            .with_context(|| format!("scanning {}", path.display()))?;
    }
    out.flush().map_err(super::output::stdout_error)?;
    Ok(0)
}

fn scan_one(
    p: &mut Pipeline,
    kind: InputKind,
    input: &mut dyn Read,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut found: Vec<Detection> = Vec::new();
    let (cap, source) = match kind {
        InputKind::Raw | InputKind::Cast => (0, TextSource::Screen),
        InputKind::Text => (TEXT_LINE_CAP, TextSource::Text),
        InputKind::ClaudeJsonl => (JSON_LINE_CAP, TextSource::Transcript),
        InputKind::StreamJson => (JSON_LINE_CAP, TextSource::Stream),
    };
    let mut splitter = LineSplitter::new(cap);
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let chunk = &buf[..n];
        match kind {
            InputKind::Raw | InputKind::Cast => found.extend(p.feed(chunk)),
            InputKind::Text => splitter.push(chunk, &mut |l| found.extend(p.feed_line(l, source))),
            InputKind::ClaudeJsonl | InputKind::StreamJson => {
                splitter.push(chunk, &mut |l| found.extend(p.feed_json_line(l, source)))
            }
        }
        write_all(out, &mut found)?;
    }
    match kind {
        InputKind::Raw | InputKind::Cast => found.extend(p.finish()),
        InputKind::Text => splitter.finish(&mut |l| found.extend(p.feed_line(l, source))),
        InputKind::ClaudeJsonl | InputKind::StreamJson => {
            splitter.finish(&mut |l| found.extend(p.feed_json_line(l, source)))
        }
    }
    write_all(out, &mut found)
}

/// Replay an asciicast v2 recording: the header's size, `"o"` events through the screen, `"r"`
/// events as resizes (input `"i"` and markers are skipped). A malformed line is an error naming
/// `name:line`.
fn scan_cast(
    mk: impl Fn(u16, u16) -> Pipeline,
    input: &mut dyn Read,
    out: &mut dyn Write,
    name: &str,
) -> anyhow::Result<()> {
    let mut splitter = LineSplitter::new(JSON_LINE_CAP);
    let mut buf = vec![0u8; CHUNK];
    let mut p: Option<Pipeline> = None;
    let mut lineno = 0usize;
    let mut err: Option<anyhow::Error> = None;
    let mut found: Vec<Detection> = Vec::new();
    let mut on_line = |l: &str, p: &mut Option<Pipeline>, found: &mut Vec<Detection>| {
        lineno += 1;
        if err.is_some() || l.trim().is_empty() {
            return;
        }
        if let Err(e) = cast_line(l, p, &mk, found) {
            err = Some(anyhow::anyhow!("{name}:{lineno}: {e}"));
        }
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(anyhow::Error::from(e).context(format!("cannot read {name}"))),
        };
        splitter.push(&buf[..n], &mut |l| on_line(l, &mut p, &mut found));
        write_all(out, &mut found)?;
    }
    splitter.finish(&mut |l| on_line(l, &mut p, &mut found));
    if let Some(e) = err {
        return Err(e);
    }
    match p.as_mut() {
        Some(p) => found.extend(p.finish()),
        None => anyhow::bail!("{name}: not an asciicast v2 recording (no header line)"),
    }
    write_all(out, &mut found)
}

/// One line of an asciicast file: the header (first) or an event.
fn cast_line(
    l: &str,
    p: &mut Option<Pipeline>,
    mk: &impl Fn(u16, u16) -> Pipeline,
    found: &mut Vec<Detection>,
) -> anyhow::Result<()> {
    let v: serde_json::Value = serde_json::from_str(l)?;
    let Some(p) = p else {
        let size = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| anyhow::anyhow!("the header has no valid `{k}`"))
        };
        if v.get("version").and_then(serde_json::Value::as_u64) != Some(2) {
            anyhow::bail!("not an asciicast v2 header (`version` must be 2)");
        }
        *p = Some(mk(size("width")?, size("height")?));
        return Ok(());
    };
    let ev = v
        .as_array()
        .filter(|a| a.len() >= 3)
        .ok_or_else(|| anyhow::anyhow!("an event must be [time, code, data]"))?;
    let data = ev[2]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("an event's data must be a string"))?;
    match ev[1].as_str() {
        Some("o") => found.extend(p.feed(data.as_bytes())),
        Some("r") => {
            let (c, r) = data
                .split_once('x')
                .and_then(|(c, r)| Some((c.parse::<u16>().ok()?, r.parse::<u16>().ok()?)))
                .filter(|&(c, r)| c > 0 && r > 0)
                .ok_or_else(|| anyhow::anyhow!("a resize must be \"COLSxROWS\", got {data:?}"))?;
            found.extend(p.resize(c, r));
        }
        _ => {}
    }
    Ok(())
}

fn write_all(out: &mut dyn Write, found: &mut Vec<Detection>) -> anyhow::Result<()> {
    for d in found.drain(..) {
        let line = serde_json::to_string(&d)?;
        writeln!(out, "{line}").map_err(super::output::stdout_error)?;
    }
    Ok(())
}

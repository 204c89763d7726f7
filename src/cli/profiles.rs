//! `mpm profiles list|show NAME [--json]`: the agent CLI profiles (built-in and configured), what
//! each does, and whether its CLI is installed.
//!
//! "Installed" is the profile's program resolved the way `mpm run` resolves it (on the profile's
//! `PATH` when its `env` sets one, else this process's). `show` also runs `PROGRAM --version`
//! (stdin closed, killed after [`VERSION_TIMEOUT`]) and prints its first line; `list` does not,
//! so listing stays instant (a node or Python CLI takes a second or two to say its version).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::Serialize;

use super::{GlobalArgs, UsageError, load_config};
use crate::config::{Config, HeadlessOutput, Overrides, Profile};

/// How long `PROGRAM --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Subcommand)]
pub(crate) enum ProfilesCommand {
    /// Every profile: command, headless form, whether its CLI is installed.
    List(ListArgs),
    /// One profile in full, with its CLI's version.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// One JSON array of profiles.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The profile's name.
    pub name: String,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One profile as `mpm profiles` reports it.
#[derive(Debug, Serialize)]
struct ProfileView<'a> {
    name: &'a str,
    /// The profile `mpm run` uses (`profile` / `--profile`).
    active: bool,
    /// The profile sub-agents use when their agent names none (`executor.default_profile`).
    default_for_subagents: bool,
    /// Agents whose delegations run with this profile.
    agents: Vec<String>,
    #[serde(flatten)]
    profile: &'a Profile,
    /// What `mpm run` starts (command with the flags mpm adds).
    session_command: Vec<String>,
    /// Where the program was found; `null` when it was not.
    installed: Option<String>,
    /// Why it was not found, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    not_installed: Option<String>,
    /// The first line of `PROGRAM --version` (`show` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
}

fn view<'a>(cfg: &'a Config, name: &'a str, p: &'a Profile, version: bool) -> ProfileView<'a> {
    let path_var: Option<OsString> = p
        .env
        .get("PATH")
        .map(OsString::from)
        .or_else(|| std::env::var_os("PATH"));
    let found = match p.command.first() {
        None => Err("no command".to_string()),
        Some(prog) => {
            crate::pty::spawn::resolve_command(prog, path_var.as_deref()).map_err(|e| e.to_string())
        }
    };
    let version = match (&found, version) {
        (Ok(path), true) => program_version(path, &p.env),
        _ => None,
    };
    let agents = crate::executor::AgentRegistry::from_config(cfg)
        .agents()
        .filter(|a| a.profile == name)
        .map(|a| a.name.clone())
        .collect();
    ProfileView {
        name,
        active: cfg.profile == name,
        default_for_subagents: cfg.executor.default_profile == name,
        agents,
        profile: p,
        session_command: p.session_command(),
        installed: found.as_ref().ok().map(|p| p.display().to_string()),
        not_installed: found.err(),
        version,
    }
}

/// `PROGRAM --version`'s first non-empty line, or `None` when it fails or takes too long.
fn program_version(
    path: &std::path::Path,
    env: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    let mut child = Command::new(path)
        .arg("--version")
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    child.stdout.take()?.read_to_string(&mut out).ok()?;
    out.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

fn headless_text(p: &Profile) -> String {
    if p.headless.is_empty() {
        "(none: cannot run sub-agents)".into()
    } else {
        serde_json::to_string(&p.headless).unwrap_or_default()
    }
}

fn role_text(p: &Profile) -> &'static str {
    if p.headless.is_empty() {
        "-"
    } else if p
        .headless
        .iter()
        .any(|e| e.contains("{role}") || e.contains("{role_toml}"))
    {
        "by a flag ({role} in the headless form)"
    } else {
        "before the task (the CLI has no system-prompt flag)"
    }
}

fn write_text(out: &mut String, v: &ProfileView<'_>, full: bool) {
    let mut marks = Vec::new();
    if v.active {
        marks.push("active for `mpm run`");
    }
    if v.default_for_subagents {
        marks.push("default for sub-agents");
    }
    let marks = if marks.is_empty() {
        String::new()
    } else {
        format!("  ({})", marks.join(", "))
    };
    let _ = writeln!(out, "{}{marks}", v.name);
    if !v.profile.description.is_empty() {
        let _ = writeln!(out, "  description:  {}", v.profile.description);
    }
    let _ = writeln!(
        out,
        "  command:      {}",
        serde_json::to_string(&v.session_command).unwrap_or_default()
    );
    let installed = match (&v.installed, &v.not_installed) {
        (Some(p), _) => format!("yes ({p})"),
        (None, Some(why)) => format!("no: {why}"),
        (None, None) => "no".into(),
    };
    let _ = writeln!(out, "  installed:    {installed}");
    if let Some(ver) = &v.version {
        let _ = writeln!(out, "  version:      {ver}");
    }
    let _ = writeln!(out, "  headless:     {}", headless_text(v.profile));
    if full {
        let output = match v.profile.headless_output {
            HeadlessOutput::Text => "text (stdout as it is; no usage)",
            f => f.as_str(),
        };
        let _ = writeln!(out, "  output:       {output}");
        let _ = writeln!(out, "  role prompt:  {}", role_text(v.profile));
        let _ = writeln!(
            out,
            "  transcript:   {}   screen: {}   feedback: {}",
            v.profile.transcript,
            v.profile.screen,
            serde_json::to_value(v.profile.feedback)
                .ok()
                .and_then(|x| x.as_str().map(str::to_string))
                .unwrap_or_default()
        );
        let source = crate::detect::cli_screen::profile_of_command(&v.profile.command)
            .and_then(crate::detect::cli_transcript::exact_source);
        let _ = writeln!(
            out,
            "  exact source: {}",
            source.unwrap_or("none (the screen only)")
        );
        if !v.profile.env.is_empty() {
            let keys: Vec<_> = v.profile.env.keys().cloned().collect();
            let _ = writeln!(out, "  env:          {}", keys.join(", "));
        }
    }
    if !v.agents.is_empty() {
        let _ = writeln!(out, "  agents:       {}", v.agents.join(", "));
    }
}

pub(super) fn profiles(g: &GlobalArgs, c: ProfilesCommand) -> anyhow::Result<i32> {
    let layered = load_config(g, Overrides::default())?;
    let cfg = &layered.config;
    let mut out = String::new();
    match c {
        ProfilesCommand::List(a) => {
            let views: Vec<_> = cfg
                .profiles
                .iter()
                .map(|(n, p)| view(cfg, n, p, false))
                .collect();
            if a.json {
                out = serde_json::to_string_pretty(&views)?;
                out.push('\n');
            } else {
                for v in &views {
                    write_text(&mut out, v, false);
                }
            }
        }
        ProfilesCommand::Show(a) => {
            let Some((name, p)) = cfg.profiles.get_key_value(&a.name) else {
                return Err(UsageError(format!(
                    "unknown profile {:?} (known: {})",
                    a.name,
                    cfg.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
                .into());
            };
            let v = view(cfg, name, p, true);
            if a.json {
                out = serde_json::to_string_pretty(&v)?;
                out.push('\n');
            } else {
                write_text(&mut out, &v, true);
            }
        }
    }
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .map_err(super::output::stdout_error)?;
    Ok(0)
}

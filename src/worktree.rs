//! Isolated delegations: one `git worktree` per delegation (agents with `isolation: worktree`).
//!
//! Life of a worktree:
//! 1. [`prepare`]: `git worktree add -b mpm/<agent>-<short id> <dir>/<agent>-<short id> <base>`,
//!    where `base` is the session checkout's HEAD (or, on a worker, the job's base commit in the
//!    worker's mirror). The files listed in `worktree.include` and in the repository's
//!    `.worktreeinclude` (ignored files such as `.env` that a fresh checkout lacks) are copied in,
//!    then each `worktree.setup` argv runs in it. A folder that is not in a git repository is an
//!    error: the delegation is rejected, never run in place.
//! 2. The sub-agent runs with the worktree as its working directory.
//! 3. [`finish`]: each `worktree.teardown` argv runs, changes the sub-agent left uncommitted are
//!    committed (`mpm: <agent> delegation <short id>`), and the branch's commits and diff stat
//!    against the base are recorded. A branch without commits is deleted with its worktree at once;
//!    otherwise the branch is kept and the worktree is removed after `worktree.retention_secs`
//!    (by [`sweep`], which runs before every new worktree and at executor start).
//!
//! Every git and setup/teardown command is an argv run directly (never a shell), in its own
//! process group, with stdin from /dev/null and a bounded wait (its group is killed past it).
//! Cost: a worktree add is a checkout of the tree (tens of ms for a small repository, more for a
//! large one); `git` is spawned about eight times per delegation.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::WorktreeConfig;

/// Bound on each git command (a hung credential prompt or lock must not hang the delegation).
const GIT_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on each setup/teardown command.
const HOOK_TIMEOUT: Duration = Duration::from_secs(600);
/// Suffix of the marker written next to a finished worktree (its removal is due later).
const DONE_SUFFIX: &str = ".mpm-done";

/// Why a worktree could not be prepared or finished.
#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    /// The session's folder is not in a git repository (the delegation is rejected, not run).
    #[error("isolation: worktree needs a git repository, and {} is not in one", dir.display())]
    NotARepo {
        /// The folder.
        dir: PathBuf,
    },
    /// A git command failed.
    #[error("git {args}: {message}")]
    Git {
        /// Its arguments.
        args: String,
        /// Its error output.
        message: String,
    },
    /// A setup or teardown command failed.
    #[error("worktree {what} command {argv:?}: {message}")]
    Hook {
        /// `setup` or `teardown`.
        what: &'static str,
        /// The command.
        argv: Vec<String>,
        /// How it failed.
        message: String,
    },
    /// A file operation failed.
    #[error("worktree: {0}")]
    Io(String),
}

/// A worktree made for one delegation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Worktree {
    /// The repository the worktree belongs to (a checkout or a bare mirror).
    pub repo: PathBuf,
    /// The worktree's folder.
    pub path: PathBuf,
    /// The branch it is on (`mpm/<agent>-<short id>`).
    pub branch: String,
    /// The commit the branch starts from.
    pub base: String,
}

/// What an isolated delegation produced, for its result file and events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The branch; `None` when it had no commits and was deleted.
    pub branch: Option<String>,
    /// The commit the branch started from.
    pub base: String,
    /// Commits on the branch beyond the base.
    pub commits: u32,
    /// `git diff --stat base branch`.
    pub diff_stat: String,
    /// Where the branch was pushed, or the bundle written, when a worker sent it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<String>,
}

impl Outcome {
    /// The section appended to the delegation's result file.
    pub fn markdown(&self) -> String {
        let mut s = String::from("\n\n## Worktree\n\n");
        match &self.branch {
            Some(b) => s.push_str(&format!(
                "branch: `{b}` ({} commit{} on {})\n",
                self.commits,
                if self.commits == 1 { "" } else { "s" },
                short(&self.base)
            )),
            None => s.push_str("no changes (branch deleted)\n"),
        }
        if let Some(d) = &self.delivered {
            s.push_str(&format!("delivered: {d}\n"));
        }
        if !self.diff_stat.trim().is_empty() {
            s.push_str("\n```\n");
            s.push_str(self.diff_stat.trim_end());
            s.push_str("\n```\n");
        }
        s
    }
}

/// The first 8 characters of an id or commit.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The branch of one delegation: `mpm/<agent>-<short id>`.
pub fn branch_name(agent: &str, delegation_id: &str) -> String {
    let agent: String = agent
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("mpm/{agent}-{}", short(delegation_id))
}

/// The root of the repository containing `dir` (`git rev-parse --show-toplevel`).
pub fn toplevel(dir: &Path) -> Result<PathBuf, WorktreeError> {
    git(dir, &["rev-parse", "--show-toplevel"])
        .map(|s| PathBuf::from(s.trim()))
        .map_err(|_| WorktreeError::NotARepo {
            dir: dir.to_path_buf(),
        })
}

/// What [`prepare`] starts from.
#[derive(Debug, Clone)]
pub struct Source {
    /// A checkout (or bare mirror) the worktree is added to.
    pub repo: PathBuf,
    /// The base commit; `None` = the repository's HEAD.
    pub base: Option<String>,
    /// A checkout to copy `include` files from (the session's; none on a worker).
    pub include_from: Option<PathBuf>,
}

/// Make the worktree of one delegation under `root` (see the module docs).
pub fn prepare(
    src: &Source,
    root: &Path,
    agent: &str,
    delegation_id: &str,
    cfg: &WorktreeConfig,
) -> Result<Worktree, WorktreeError> {
    // A bare mirror has no toplevel; a checkout must be one.
    let repo = if src.include_from.is_some() || src.base.is_none() {
        toplevel(&src.repo)?
    } else {
        src.repo.clone()
    };
    let base = match &src.base {
        Some(b) => b.clone(),
        None => git(&repo, &["rev-parse", "HEAD"])?.trim().to_string(),
    };
    sweep(root, Duration::from_secs(cfg.retention_secs));
    std::fs::create_dir_all(root)
        .map_err(|e| WorktreeError::Io(format!("cannot create {}: {e}", root.display())))?;
    let branch = branch_name(agent, delegation_id);
    let path = root.join(branch.trim_start_matches("mpm/"));
    let path_s = path.display().to_string();
    git(
        &repo,
        &["worktree", "add", "--quiet", "-b", &branch, &path_s, &base],
    )?;
    let wt = Worktree {
        repo: repo.clone(),
        path,
        branch,
        base,
    };
    let setup = (|| {
        if let Some(from) = &src.include_from {
            copy_includes(&repo, from, &wt.path, &cfg.include)?;
        }
        for argv in &cfg.setup {
            run_hook("setup", argv, &wt.path)?;
        }
        Ok(())
    })();
    if let Err(e) = setup {
        remove(&wt, true);
        return Err(e);
    }
    Ok(wt)
}

/// Copy `include` paths plus the lines of `<repo>/.worktreeinclude` from `from` into `to`.
/// Missing files are skipped; paths leaving the repository (`..`, absolute) are refused.
fn copy_includes(
    repo: &Path,
    from: &Path,
    to: &Path,
    include: &[String],
) -> Result<(), WorktreeError> {
    let mut list: Vec<String> = include.to_vec();
    if let Ok(text) = std::fs::read_to_string(repo.join(".worktreeinclude")) {
        list.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    for rel in list {
        let p = Path::new(&rel);
        if p.is_absolute()
            || p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(WorktreeError::Io(format!(
                "include path {rel:?} must be relative and inside the repository"
            )));
        }
        let src = from.join(p);
        if !src.is_file() {
            continue;
        }
        let dst = to.join(p);
        if let Some(parent) = dst.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::copy(&src, &dst)
            .map_err(|e| WorktreeError::Io(format!("cannot copy {rel} into the worktree: {e}")))?;
    }
    Ok(())
}

/// After the sub-agent: teardown, commit leftovers, record the outcome, remove or schedule removal.
pub fn finish(
    wt: &Worktree,
    agent: &str,
    delegation_id: &str,
    cfg: &WorktreeConfig,
) -> Result<Outcome, WorktreeError> {
    let mut teardown_err = None;
    for argv in &cfg.teardown {
        if let Err(e) = run_hook("teardown", argv, &wt.path) {
            tracing::warn!(error = %e, "worktree teardown failed");
            teardown_err.get_or_insert(e);
        }
    }
    let dirty = !git(&wt.path, &["status", "--porcelain"])?.trim().is_empty();
    if dirty {
        git(&wt.path, &["add", "-A"])?;
        let msg = format!("mpm: {agent} delegation {}", short(delegation_id));
        let mut args = vec!["commit", "--quiet", "--no-verify", "-m", &msg];
        let has_identity = git(&wt.path, &["config", "user.email"]).is_ok();
        let ident = ["-c", "user.name=mpm", "-c", "user.email=mpm@localhost"];
        if !has_identity {
            args.splice(0..0, ident);
        }
        git(&wt.path, &args)?;
    }
    let range = format!("{}..{}", wt.base, wt.branch);
    let commits: u32 = git(&wt.repo, &["rev-list", "--count", &range])?
        .trim()
        .parse()
        .unwrap_or(0);
    let diff_stat = if commits > 0 {
        git(&wt.repo, &["diff", "--stat", &wt.base, &wt.branch])?
    } else {
        String::new()
    };
    let outcome = Outcome {
        branch: (commits > 0).then(|| wt.branch.clone()),
        base: wt.base.clone(),
        commits,
        diff_stat,
        delivered: None,
    };
    if commits == 0 || cfg.retention_secs == 0 {
        remove(wt, commits == 0);
    } else {
        let marker = done_marker(&wt.path);
        let body = serde_json::to_vec(wt).unwrap_or_default();
        if let Err(e) = std::fs::write(&marker, body) {
            tracing::warn!(error = %e, "cannot mark the worktree for later removal; removing it now");
            remove(wt, false);
        }
    }
    match teardown_err {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}

fn done_marker(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(DONE_SUFFIX);
    PathBuf::from(s)
}

/// Remove the worktree (and its branch when `delete_branch`); failures are logged.
pub fn remove(wt: &Worktree, delete_branch: bool) {
    let path = wt.path.display().to_string();
    if let Err(e) = git(&wt.repo, &["worktree", "remove", "--force", &path]) {
        tracing::warn!(error = %e, "cannot remove worktree");
        let _ = std::fs::remove_dir_all(&wt.path);
        let _ = git(&wt.repo, &["worktree", "prune"]);
    }
    if delete_branch && let Err(e) = git(&wt.repo, &["branch", "-D", &wt.branch]) {
        tracing::warn!(error = %e, "cannot delete empty branch");
    }
    let _ = std::fs::remove_file(done_marker(&wt.path));
}

/// Remove finished worktrees under `root` whose retention has passed. Branches stay.
pub fn sweep(root: &Path, retention: Duration) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let p = entry.path();
        if !p.to_string_lossy().ends_with(DONE_SUFFIX) {
            continue;
        }
        let due = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age >= retention);
        if !due {
            continue;
        }
        match std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Worktree>(&b).ok())
        {
            Some(wt) => remove(&wt, false),
            None => {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

/// Run `git -C dir ARGS`; stdout on success, stderr's last line as the error.
pub fn git(dir: &Path, args: &[&str]) -> Result<String, WorktreeError> {
    let mut argv = vec!["git".to_string(), "-C".into(), dir.display().to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let (ok, out, err) =
        run_bounded(&argv, None, GIT_TIMEOUT).map_err(|message| WorktreeError::Git {
            args: args.join(" "),
            message,
        })?;
    if ok {
        Ok(out)
    } else {
        Err(WorktreeError::Git {
            args: args.join(" "),
            message: last_line(&err),
        })
    }
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed")
        .trim()
        .to_string()
}

fn run_hook(what: &'static str, argv: &[String], cwd: &Path) -> Result<(), WorktreeError> {
    let fail = |message: String| WorktreeError::Hook {
        what,
        argv: argv.to_vec(),
        message,
    };
    let (ok, _, err) = run_bounded(argv, Some(cwd), HOOK_TIMEOUT).map_err(fail)?;
    if ok {
        Ok(())
    } else {
        Err(WorktreeError::Hook {
            what,
            argv: argv.to_vec(),
            message: last_line(&err),
        })
    }
}

/// Run an argv (no shell) in its own process group with stdin from /dev/null; wait at most
/// `timeout` (then SIGKILL the group). Returns (success, stdout, stderr).
pub fn run_bounded(
    argv: &[String],
    cwd: Option<&Path>,
    timeout: Duration,
) -> Result<(bool, String, String), String> {
    let (program, args) = argv.split_first().ok_or("empty argv")?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("GIT_TERMINAL_PROMPT", "0")
        .process_group(0);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    // Read both pipes on their own threads so a chatty command never blocks on a full pipe.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("wait failed: {e}")),
        }
    };
    let out = out_t.join().unwrap_or_default();
    let err = err_t.join().unwrap_or_default();
    match status {
        Some(s) => Ok((s.success(), out, err)),
        None => Err(format!("timed out after {}s", timeout.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_are_safe_refs() {
        assert_eq!(
            branch_name("qa engineer", "0123456789abcdef"),
            "mpm/qa-engineer-01234567"
        );
        assert_eq!(branch_name("e", "ab"), "mpm/e-ab");
    }

    #[test]
    fn not_a_repo_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = toplevel(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not in one"), "{err}");
    }

    #[test]
    fn outcome_markdown_names_branch_and_stat() {
        let o = Outcome {
            branch: Some("mpm/qa-01234567".into()),
            base: "abcdef0123".into(),
            commits: 2,
            diff_stat: " a.txt | 1 +\n 1 file changed\n".into(),
            delivered: None,
        };
        let md = o.markdown();
        assert!(
            md.contains("`mpm/qa-01234567` (2 commits on abcdef01)"),
            "{md}"
        );
        assert!(md.contains("1 file changed"));
    }
}

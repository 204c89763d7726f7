//! cgroup v2: detection of a writable delegated cgroup, one child cgroup per supervised tree with
//! `memory.max`/`cpu.max` from the hard limits, accounting from `memory.current` and `cpu.stat`,
//! and `cgroup.kill`.
//!
//! The cgroupfs root is a parameter ([`CgroupProbe`]) so the same code runs against a fake folder
//! in tests. Under systemd `Delegate=yes` the service's cgroup holds mpm itself, and the "no
//! internal processes" rule forbids enabling controllers for children while it does; [`prepare`]
//! then moves mpm's processes into a `mpm-supervisor` leaf first.

use std::io;
use std::path::{Path, PathBuf};

/// Where to look for cgroup v2: the cgroupfs mount and this process's `/proc/self/cgroup` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupProbe {
    /// Where cgroup2 is mounted (`/sys/fs/cgroup`).
    pub fs_root: PathBuf,
    /// The text of `/proc/self/cgroup`.
    pub self_cgroup: String,
}

impl CgroupProbe {
    /// The real system: `/sys/fs/cgroup` and `/proc/self/cgroup`.
    pub fn system() -> Self {
        CgroupProbe {
            fs_root: PathBuf::from("/sys/fs/cgroup"),
            self_cgroup: std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
        }
    }
}

fn read_words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.split_ascii_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn has_word(path: &Path, word: &str) -> bool {
    read_words(path).iter().any(|w| w == word)
}

/// The unified-hierarchy path of this process (`0::/some/path` line), relative to the mount.
pub fn own_path(self_cgroup: &str) -> Option<&str> {
    self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().trim_start_matches('/'))
}

/// The cgroup directory mpm may create tree cgroups under, when cgroup v2 is mounted at
/// `fs_root`, this process's cgroup offers the memory controller, and the directory is writable.
pub fn detect(probe: &CgroupProbe) -> Option<PathBuf> {
    if !probe.fs_root.join("cgroup.controllers").is_file() {
        return None; // not a cgroup v2 mount (v1 or hybrid)
    }
    let dir = probe.fs_root.join(own_path(&probe.self_cgroup)?);
    usable(&dir).then_some(dir)
}

/// `dir` offers the memory controller and we may write into it.
pub fn usable(dir: &Path) -> bool {
    has_word(&dir.join("cgroup.controllers"), "memory")
        && nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
        && nix::unistd::access(
            &dir.join("cgroup.subtree_control"),
            nix::unistd::AccessFlags::W_OK,
        )
        .is_ok()
}

/// Make `parent` able to host child cgroups with the memory (and cpu, when offered) controller:
/// enable them in `cgroup.subtree_control`, first moving the processes living in `parent` into a
/// `mpm-supervisor` leaf. Returns whether the cpu controller is enabled for children.
pub fn prepare(parent: &Path) -> io::Result<bool> {
    let cpu_offered = has_word(&parent.join("cgroup.controllers"), "cpu");
    let control = parent.join("cgroup.subtree_control");
    let enabled = read_words(&control);
    let has = |c: &str| enabled.iter().any(|w| w == c);
    if has("memory") && (has("cpu") || !cpu_offered) {
        return Ok(has("cpu"));
    }
    let procs = read_words(&parent.join("cgroup.procs"));
    if !procs.is_empty() {
        let leaf = parent.join("mpm-supervisor");
        mkdir(&leaf)?;
        for pid in &procs {
            // A process may have exited since the read; ignore those.
            if let Err(e) = std::fs::write(leaf.join("cgroup.procs"), pid)
                && e.raw_os_error() != Some(libc::ESRCH)
            {
                return Err(e);
            }
        }
    }
    let want = if cpu_offered {
        "+memory +cpu"
    } else {
        "+memory"
    };
    std::fs::write(&control, want)?;
    Ok(cpu_offered)
}

fn mkdir(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// `memory.max` text for a hard limit in MB (`max` = none).
pub fn memory_max_value(hard_mb: Option<u64>) -> String {
    hard_mb.map_or_else(|| "max".to_string(), |mb| (mb * 1024 * 1024).to_string())
}

/// `cpu.max` text for a hard limit in percent of one core over a 100 ms period (`max` = none).
pub fn cpu_max_value(hard_percent: Option<f64>) -> String {
    match hard_percent {
        Some(p) if p > 0.0 => format!("{} 100000", ((p * 1000.0).round() as u64).max(1000)),
        _ => "max 100000".to_string(),
    }
}

/// The child cgroup of one supervised tree.
#[derive(Debug)]
pub struct TreeCgroup {
    dir: PathBuf,
}

impl TreeCgroup {
    /// Create `parent/name` with the given limits (cpu.max only when the cpu controller is on).
    pub fn create(
        parent: &Path,
        name: &str,
        hard_mb: Option<u64>,
        cpu_hard_percent: Option<f64>,
        cpu_enabled: bool,
    ) -> io::Result<Self> {
        let dir = parent.join(name);
        mkdir(&dir)?;
        let cg = TreeCgroup { dir };
        std::fs::write(cg.dir.join("memory.max"), memory_max_value(hard_mb))?;
        if cpu_enabled {
            std::fs::write(cg.dir.join("cpu.max"), cpu_max_value(cpu_hard_percent))?;
        }
        Ok(cg)
    }

    /// The tree's cgroup folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Move `pid` into this cgroup (its later children are born inside).
    pub fn add(&self, pid: i32) -> io::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// The pids listed in `cgroup.procs`.
    pub fn procs(&self) -> Vec<i32> {
        read_words(&self.dir.join("cgroup.procs"))
            .iter()
            .filter_map(|w| w.parse().ok())
            .collect()
    }

    /// `memory.current`, bytes (page cache included, unlike RSS).
    pub fn memory_current(&self) -> Option<u64> {
        std::fs::read_to_string(self.dir.join("memory.current"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `usage_usec` from `cpu.stat`: CPU time of everything that ever ran in the cgroup.
    pub fn cpu_usage_usec(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))?
            .trim()
            .parse()
            .ok()
    }

    /// The `oom_kill` count from `memory.events` (the kernel enforcing `memory.max`).
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// SIGKILL everything in the cgroup at once (`cgroup.kill`, Linux 5.14+).
    pub fn kill(&self) -> io::Result<()> {
        std::fs::write(self.dir.join("cgroup.kill"), "1")
    }

    /// Remove the cgroup directory (rmdir: fails while processes remain; on a fake cgroupfs the
    /// plain control files keep it, which tests use to inspect it afterwards).
    pub fn remove(&self) -> io::Result<()> {
        std::fs::remove_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_path_reads_the_unified_line() {
        let text =
            "4:memory:/x\n0::/user.slice/user-1000.slice/user@1000.service/app.slice/mpm.service\n";
        assert_eq!(
            own_path(text),
            Some("user.slice/user-1000.slice/user@1000.service/app.slice/mpm.service")
        );
        assert_eq!(own_path("4:memory:/x\n"), None);
    }

    #[test]
    fn limit_values() {
        assert_eq!(memory_max_value(Some(2)), "2097152");
        assert_eq!(memory_max_value(None), "max");
        assert_eq!(cpu_max_value(Some(150.0)), "150000 100000");
        assert_eq!(cpu_max_value(None), "max 100000");
    }

    #[test]
    fn hybrid_or_v1_mount_is_not_detected() {
        let dir = tempfile::tempdir().unwrap();
        let probe = CgroupProbe {
            fs_root: dir.path().to_path_buf(),
            self_cgroup: "0::/\n".into(),
        };
        assert_eq!(detect(&probe), None);
    }

    #[test]
    fn detects_a_delegated_cgroup_with_memory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("cgroup.controllers"), "cpu memory pids").unwrap();
        let svc = root.join("app.slice/mpm.service");
        std::fs::create_dir_all(&svc).unwrap();
        std::fs::write(svc.join("cgroup.controllers"), "cpu pids").unwrap();
        std::fs::write(svc.join("cgroup.subtree_control"), "").unwrap();
        let probe = CgroupProbe {
            fs_root: root.to_path_buf(),
            self_cgroup: "0::/app.slice/mpm.service\n".into(),
        };
        assert_eq!(detect(&probe), None, "no memory controller offered");
        std::fs::write(svc.join("cgroup.controllers"), "cpu memory pids").unwrap();
        assert_eq!(detect(&probe), Some(svc.clone()));

        // mpm lives in the service cgroup: prepare moves it to a leaf, then enables controllers.
        std::fs::write(svc.join("cgroup.procs"), "4242\n").unwrap();
        assert!(prepare(&svc).unwrap());
        assert_eq!(
            std::fs::read_to_string(svc.join("mpm-supervisor/cgroup.procs")).unwrap(),
            "4242"
        );
        assert_eq!(
            std::fs::read_to_string(svc.join("cgroup.subtree_control")).unwrap(),
            "+memory +cpu"
        );
    }
}

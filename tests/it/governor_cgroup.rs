//! The cgroup v2 mode against a FAKE cgroupfs folder (this machine has no usable cgroup v2 memory
//! controller): detection, per-tree child cgroups with memory.max/cpu.max, pids moved in through
//! cgroup.procs, accounting from memory.current, cgroup.kill, and the kernel OOM kill.

use crate::governor_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use governor_support::*;
use mpm::events::{Bus, Context, ResourceAction};
use mpm::governor::{CgroupProbe, Governor, GovernorMode, WatchEnd};

const WAIT: Duration = Duration::from_secs(30);
const MB: u64 = 1024 * 1024;

/// A fake cgroupfs: a v2 mount whose `app.slice/mpm.service` is delegated (memory + cpu).
fn fake_cgroupfs(root: &Path) -> (CgroupProbe, PathBuf) {
    std::fs::write(
        root.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    let svc = root.join("app.slice/mpm.service");
    std::fs::create_dir_all(&svc).unwrap();
    std::fs::write(svc.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
    std::fs::write(svc.join("cgroup.subtree_control"), "cpu memory\n").unwrap();
    std::fs::write(svc.join("cgroup.procs"), "").unwrap();
    let probe = CgroupProbe {
        fs_root: root.to_path_buf(),
        self_cgroup: "1:name=systemd:/x\n0::/app.slice/mpm.service\n".into(),
    };
    (probe, svc)
}

/// Replace a fake control file atomically (the sampler may read it at any moment).
fn put(p: &Path, text: impl AsRef<str>) {
    let tmp = p.with_extension("tmp-write");
    std::fs::write(&tmp, text.as_ref()).unwrap();
    std::fs::rename(&tmp, p).unwrap();
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn auto_detects_the_delegated_cgroup_and_governs_a_tree_through_it() {
    let fs = tempfile::tempdir().unwrap();
    let (probe, svc) = fake_cgroupfs(fs.path());
    let mut cfg = fast_config();
    cfg.cgroup = "auto".into();
    let gov = Governor::start_with(&cfg, Duration::from_millis(300), &probe).unwrap();
    assert_eq!(gov.mode(), GovernorMode::Cgroup { path: svc.clone() });
    assert_eq!(gov.mode().as_str(), "cgroup");

    let bus = Bus::new(Context::new());
    let rx = bus.subscribe();
    let tree = Tree::fake(&["sleep:0"]);
    // An unrelated process that "escaped" the session but is still in the tree's cgroup.
    let escaped = Tree::fake(&["sleep:0"]);
    let mut limits = small_limits();
    limits.cpu.hard_percent = Some(150.0);
    let handle = gov.watch(tree.pid(), limits, bus.clone(), None);
    let cg = handle.cgroup().expect("tree cgroup").to_path_buf();
    assert!(cg.starts_with(&svc));
    assert_eq!(read(&cg.join("memory.max")), (180 * MB).to_string());
    assert_eq!(read(&cg.join("cpu.max")), "150000 100000");
    assert_eq!(read(&cg.join("cgroup.procs")), tree.pid().to_string());

    // Accounting comes from memory.current (not from the tiny real process).
    put(
        &cg.join("cgroup.procs"),
        format!("{}\n{}\n", tree.pid(), escaped.pid()),
    );
    put(&cg.join("memory.current"), (70 * MB).to_string());
    let events = collect_until(&rx, WAIT, |_| true);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind(), "resource.warning");
    let r = resource(&events[0]).unwrap();
    assert_eq!((r.rss_mb, r.threshold), (70.0, 60.0));

    put(&cg.join("memory.current"), (200 * MB).to_string());
    let events = collect_until(&rx, WAIT, |e| e.kind() == "resource.limit");
    let kinds: Vec<_> = events.iter().map(|e| e.kind()).collect();
    assert_eq!(kinds, ["resource.critical", "resource.limit"]);
    let limit = resource(events.last().unwrap()).unwrap();
    assert_eq!(limit.rss_mb, 200.0);
    // The session tree went on SIGTERM, but a live process remained in the cgroup: cgroup.kill.
    assert_eq!(read(&cg.join("cgroup.kill")), "1");
    assert_eq!(limit.action, ResourceAction::Kill);
    assert!(mpm::process::tree_members(tree.pid() as i32).is_empty());
    assert!(handle.limit_reached());
    assert_eq!(
        handle.wait_ended(WAIT),
        Some(WatchEnd::Limited(ResourceAction::Kill))
    );
}

#[test]
fn a_kernel_oom_kill_in_the_tree_cgroup_is_reported_as_a_limit() {
    let fs = tempfile::tempdir().unwrap();
    let (probe, svc) = fake_cgroupfs(fs.path());
    let mut cfg = fast_config();
    cfg.cgroup = svc.display().to_string(); // an explicit path works too
    let gov = Governor::start_with(&cfg, Duration::from_millis(300), &probe).unwrap();
    assert_eq!(gov.mode(), GovernorMode::Cgroup { path: svc });
    let bus = Bus::new(Context::new());
    let rx = bus.subscribe();
    let tree = Tree::fake(&["sleep:0"]);
    let handle = gov.watch(tree.pid(), small_limits(), bus.clone(), Some("d1".into()));
    let cg = handle.cgroup().unwrap().to_path_buf();
    put(&cg.join("memory.current"), (10 * MB).to_string());
    put(
        &cg.join("memory.events"),
        "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
    );
    let events = collect_until(&rx, WAIT, |e| e.kind() == "resource.limit");
    let kinds: Vec<_> = events.iter().map(|e| e.kind()).collect();
    assert_eq!(kinds, ["resource.limit"]);
    let r = resource(&events[0]).unwrap();
    assert_eq!(r.action, ResourceAction::Kill);
    assert_eq!(r.threshold, 180.0);
    assert_eq!(r.delegation_id.as_deref(), Some("d1"));
    assert!(mpm::process::tree_members(tree.pid() as i32).is_empty());
}

#[test]
fn a_cgroup_without_memory_controller_falls_back_to_polling() {
    let fs = tempfile::tempdir().unwrap();
    let (probe, svc) = fake_cgroupfs(fs.path());
    std::fs::write(svc.join("cgroup.controllers"), "cpu pids\n").unwrap();
    let mut cfg = fast_config();
    cfg.cgroup = "auto".into();
    let gov = Governor::start_with(&cfg, Duration::from_millis(300), &probe).unwrap();
    assert_eq!(gov.mode(), GovernorMode::Polling);
    // Named explicitly, the same cgroup is an error.
    cfg.cgroup = svc.display().to_string();
    assert!(Governor::start_with(&cfg, Duration::from_millis(300), &probe).is_err());
}

#[test]
fn the_real_system_on_this_machine_polls() {
    // No writable cgroup v2 memory controller here (hybrid v1/v2): auto must pick polling.
    let mut cfg = fast_config();
    cfg.cgroup = "auto".into();
    let probe = CgroupProbe::system();
    if mpm::governor::cgroup::detect(&probe).is_none() {
        let gov = Governor::start(&cfg, Duration::from_millis(300)).unwrap();
        assert_eq!(gov.mode(), GovernorMode::Polling);
    }
}

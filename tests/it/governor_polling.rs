//! The polling governor against real process trees of the fake agent.

use crate::governor_support;

use std::time::Duration;

use governor_support::*;
use mpm::config::{CpuLimits, MemoryLimits};
use mpm::events::{Bus, Context, EventBody, ResourceAction};
use mpm::governor::{Governor, GovernorMode, WatchEnd, resolve_limits};

const WAIT: Duration = Duration::from_secs(30);

fn kinds(events: &[std::sync::Arc<mpm::events::Event>]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind()).collect()
}

#[test]
fn memory_steps_give_warning_critical_limit_in_order_then_the_tree_is_gone() {
    let gov = Governor::start(&fast_config(), Duration::from_millis(500)).unwrap();
    assert_eq!(gov.mode(), GovernorMode::Polling);
    let bus = Bus::new(Context::new());
    let rx = bus.subscribe();
    // ~10 MB of interpreter, then +30 MB every 200 ms up to ~310 MB.
    let tree = Tree::fake(&["alloc-steps:30:10:200", "sleep:0"]);
    let root = tree.pid();
    let handle = gov.watch(root, small_limits(), bus.clone(), None);

    let events = collect_until(&rx, WAIT, |e| e.kind() == "resource.limit");
    assert_eq!(
        kinds(&events),
        ["resource.warning", "resource.critical", "resource.limit"],
        "{events:?}"
    );
    let figures: Vec<_> = events.iter().filter_map(|e| resource(e)).collect();
    for (r, threshold) in figures.iter().zip([60.0, 120.0, 180.0]) {
        assert_eq!(r.pid, root);
        assert_eq!(r.threshold, threshold);
        assert_eq!(r.resource.as_deref(), Some("memory"));
        assert!(r.rss_mb >= threshold, "{r:?}");
        assert_eq!(r.delegation_id, None);
    }
    assert_eq!(figures[0].action, ResourceAction::None);
    assert_eq!(figures[1].action, ResourceAction::None);
    // Python dies of SIGTERM: no SIGKILL needed.
    assert_eq!(figures[2].action, ResourceAction::Terminate);
    // The event is emitted after the stop: the tree is already gone.
    assert!(mpm::process::tree_members(root as i32).is_empty());
    assert!(handle.limit_reached());
    assert_eq!(
        handle.wait_ended(WAIT),
        Some(WatchEnd::Limited(ResourceAction::Terminate))
    );
}

#[test]
fn a_term_ignoring_member_is_killed_and_the_limit_says_kill() {
    let gov = Governor::start(&fast_config(), Duration::from_millis(300)).unwrap();
    let bus = Bus::new(Context::new());
    let rx = bus.subscribe();
    let dir = tempfile::tempdir().unwrap();
    let gc = dir.path().join("gc");
    let gc_arg = format!("grandchild:{}:hup", gc.display());
    let tree = Tree::fake(&[&gc_arg, "alloc:200", "sleep:0"]);
    let gc_pid = read_pid_file(&gc, WAIT).expect("grandchild pid");
    let handle = gov.watch(tree.pid(), small_limits(), bus.clone(), Some("d-7".into()));

    let events = collect_until(&rx, WAIT, |e| e.kind() == "resource.limit");
    let last = events
        .last()
        .and_then(|e| resource(e))
        .expect("limit event");
    assert!(matches!(
        events.last().unwrap().body,
        EventBody::ResourceLimit(_)
    ));
    assert_eq!(last.action, ResourceAction::Kill);
    assert_eq!(last.delegation_id.as_deref(), Some("d-7"));
    assert!(
        mpm::process::read_stat(gc_pid).is_none_or(|s| s.state == 'Z'),
        "grandchild {gc_pid} survived"
    );
    assert!(handle.limit_reached());
    assert_eq!(
        handle.wait_ended(WAIT),
        Some(WatchEnd::Limited(ResourceAction::Kill))
    );
}

#[test]
fn memory_of_a_grandchild_counts_for_the_tree() {
    let gov = Governor::start(&fast_config(), Duration::from_millis(300)).unwrap();
    let bus = Bus::new(Context::new());
    let rx = bus.subscribe();
    let dir = tempfile::tempdir().unwrap();
    let hog = dir.path().join("hog");
    // root: sh; child: python; grandchild: the 150 MB hog. `; exit` keeps sh from exec'ing.
    let script = format!(
        "'{}' '{}' child-alloc:150:'{}' sleep:0; exit $?",
        python(),
        fake_agent().display(),
        hog.display()
    );
    let tree = Tree::spawn_argv(&["sh".into(), "-c".into(), script], None);
    let root = tree.pid() as i32;
    let hog_pid = read_pid_file(&hog, WAIT).expect("hog pid");
    let stat = mpm::process::read_stat(hog_pid).unwrap();
    assert_ne!(stat.ppid, root, "the hog is a grandchild, not a child");
    let mut limits = small_limits();
    limits.memory.hard = None;
    let _handle = gov.watch(root as u32, limits, bus.clone(), None);

    let events = collect_until(&rx, WAIT, |e| e.kind() == "resource.critical");
    assert_eq!(kinds(&events), ["resource.warning", "resource.critical"]);
    let crit = resource(events.last().unwrap()).unwrap();
    assert!(crit.rss_mb >= 120.0, "{crit:?}");
    let root_alone = own_rss_mb(root).expect("root alive");
    assert!(root_alone < 60.0, "root itself holds {root_alone} MB");
}

#[test]
fn a_cpu_burner_gives_the_cpu_warning() {
    let gov = Governor::start(&fast_config(), Duration::from_millis(300)).unwrap();
    let bus = Bus::new(Context::new());
    let rx = bus.subscribe();
    let tree = Tree::burners(4);
    let mut limits = small_limits();
    limits.memory = MemoryLimits {
        warning: None,
        critical: None,
        hard: None,
    };
    // A low bar: the machine is shared, the burners may not get a whole core.
    limits.cpu = CpuLimits {
        warning_percent: Some(25.0),
        window_secs: 1,
        hard_percent: None,
    };
    let _handle = gov.watch(tree.pid(), limits, bus.clone(), None);
    // The warning is awaited (python start-up on a busy machine can take seconds).
    let events = collect_until(&rx, WAIT * 2, |_| true);
    assert_eq!(kinds(&events), ["resource.warning"]);
    let r = resource(&events[0]).unwrap();
    assert_eq!(r.resource.as_deref(), Some("cpu"));
    assert_eq!(r.threshold, 25.0);
    assert!(r.cpu_percent >= 25.0, "{r:?}");
    assert_eq!(r.action, ResourceAction::None);
}

#[test]
fn per_agent_limits_from_config_apply_to_delegations() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "limits:\n  interval_ms: 100\n  cgroup: \"off\"\n\
         agents:\n  engineer:\n    limits:\n      memory_mb: {warning: 70, critical: null, hard: null}\n",
    )
    .unwrap();
    let cfg = mpm::config::load_from(&[file], Vec::new(), &Default::default())
        .unwrap()
        .config;
    let engineer = resolve_limits(
        &cfg.limits,
        cfg.agents.get("engineer").and_then(|a| a.limits.as_ref()),
    );
    let global = resolve_limits(&cfg.limits, None);
    assert_eq!(engineer.memory.warning, Some(70));
    assert_eq!(global.memory.warning, Some(512));

    let gov = Governor::start(&cfg.limits, Duration::from_millis(300)).unwrap();
    let bus = Bus::new(Context::new());
    let rx = bus.subscribe();
    let tree = Tree::fake(&["alloc:100", "sleep:0"]);
    let _handle = gov.watch(tree.pid(), engineer, bus.clone(), Some("del-1".into()));
    let events = collect_until(&rx, WAIT, |_| true);
    assert_eq!(kinds(&events), ["resource.warning"]);
    let r = resource(&events[0]).unwrap();
    assert_eq!(
        r.threshold, 70.0,
        "the engineer's threshold, not the global 512"
    );
    assert_eq!(r.delegation_id.as_deref(), Some("del-1"));
}

#[test]
fn a_tree_that_exits_ends_its_watch() {
    let gov = Governor::start(&fast_config(), Duration::from_millis(300)).unwrap();
    let bus = Bus::new(Context::new());
    let mut tree = Tree::fake(&["exit:0"]);
    let handle = gov.watch(tree.pid(), small_limits(), bus, None);
    tree.child.wait().unwrap();
    assert_eq!(handle.wait_ended(WAIT), Some(WatchEnd::Exited));
    assert!(!handle.limit_reached());
    assert!(wait_for(WAIT, || gov.stats().watched == 0));
    assert!(gov.stats().ticks > 0);
}

#[test]
fn the_hard_cpu_limit_when_enabled_stops_a_burner() {
    let gov = Governor::start(&fast_config(), Duration::from_millis(300)).unwrap();
    let bus = Bus::new(Context::new());
    let rx = bus.subscribe();
    let tree = Tree::burners(4);
    let mut limits = small_limits();
    limits.memory.hard = None;
    limits.cpu = CpuLimits {
        warning_percent: None,
        window_secs: 1,
        hard_percent: Some(20.0),
    };
    let handle = gov.watch(tree.pid(), limits, bus.clone(), None);
    let events = collect_until(&rx, WAIT * 2, |e| e.kind() == "resource.limit");
    assert_eq!(kinds(&events), ["resource.limit"]);
    let r = resource(&events[0]).unwrap();
    assert_eq!(r.resource.as_deref(), Some("cpu"));
    assert_eq!(r.threshold, 20.0);
    assert_eq!(r.action, ResourceAction::Terminate);
    assert!(mpm::process::tree_members(tree.pid() as i32).is_empty());
    assert!(handle.limit_reached());
}

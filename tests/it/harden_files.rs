//! Loose files: state is private (files 0600 in folders 0700) and delegation output is capped per
//! stream with the truncation recorded in the file.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::executor_support::{Harness, config, fake_agent, status};
use mpm::events::EventBody;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn delegation_output_is_capped_private_and_says_what_it_dropped() {
    let mut cfg = config(vec![("big", fake_agent(&["{task}"]))]);
    cfg.executor.max_output_bytes = 10_000;
    let mut h = Harness::start(&cfg);
    h.submit("big", "random:100000:1");
    h.until_finished(1);
    let fin = h.finished("random:100000:1");
    assert_eq!(status(fin), "success", "{}", h.dump());
    let EventBody::DelegationFinished { output_path, .. } = &fin.body else {
        unreachable!()
    };
    let path = output_path.clone().expect("output path");
    let got = std::fs::read(&path).expect("output");
    let note = b"\n[mpm: output truncated: kept 10000 bytes, dropped 90000]\n";
    assert_eq!(got.len(), 10_000 + note.len());
    assert!(got.ends_with(note), "no truncation note");
    assert_eq!(mode(Path::new(&path)), 0o600);
    assert_eq!(mode(&h.out()), 0o700);
}

#[test]
fn the_store_and_its_folder_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("a/b/state");
    let store = mpm::store::Store::open_in(&state).expect("store");
    store
        .register_session("s", &["x".into()], "/", None)
        .expect("write");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    for f in ["mpm.db", "mpm.db-wal", "mpm.db-shm"] {
        let p = state.join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
    assert!(state.join("mpm.db").exists());
}

#[test]
fn a_loose_state_folder_from_an_older_version_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(state.join("mpm.db"), b"").unwrap();
    std::fs::set_permissions(state.join("mpm.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = mpm::store::Store::open_in(&state).expect("store");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("mpm.db")), 0o600);
}

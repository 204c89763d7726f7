//! Property: splitting the screen's bytes anywhere, and delaying the exact sources (transcript,
//! Stop hook) to any point among the chunks, never changes what is dispatched: each delegation once,
//! whole. Drives the library's screen pipeline and the dispatch decision
//! (`mpm::detect::dispatch::DispatchCore`) the way the session's dispatcher thread does.

use std::collections::BTreeSet;
use std::sync::Arc;

use mpm::detect::dispatch::{Action, DispatchCore};
use mpm::detect::{Dedup, Fingerprint, Pipeline};
use mpm::events::{Detection, TextSource};
use proptest::prelude::*;

/// What claude draws at 60 columns (bold names, inline code without backticks, a paragraph
/// wrapped at a word) ...
const SCREEN: &[u8] = b"\x1b[1mEngineer Agent\x1b[22m: implement fib(n) in fib.py and keep it\r\niterative with type hints\r\n\r\n  QA Agent: test the fib module and report\r\n\r\nDone.\r\n";
/// ... and what the transcript and the Stop hook carry for the same turn.
const MARKDOWN: &str = "**Engineer Agent**: implement `fib(n)` in fib.py and keep it iterative with type hints\n\nQA Agent: test the `fib` module and report\n\nDone.";

fn engine() -> Arc<mpm::patterns::Engine> {
    Arc::new(
        mpm::patterns::Engine::builder()
            .build()
            .expect("built-in packs"),
    )
}

/// The supervisor's routing of an exact source's detection.
fn route_exact(core: &mut DispatchCore, shared: &Dedup, d: Detection, out: &mut Vec<Action>) {
    if shared.admit(&d) {
        out.extend(core.detection(d));
    } else if d.category == "delegation" && !d.handled_by_agent {
        out.extend(core.confirm(&d));
    }
}

/// Run the turn with the screen split at `cuts` and the exact sources arriving after chunk
/// `exact_at` (None: no exact source, screen only). Returns the dispatched fingerprints, in order.
fn dispatched(cuts: &[usize], exact_at: Option<usize>, cols: u16) -> Vec<Fingerprint> {
    dispatched_with_quiet(cuts, exact_at, &[], cols)
}

/// [`dispatched`], with the output going quiet (a delayed chunk: [`Pipeline::quiet`], what the tap
/// calls after `pty::QUIET` without a byte) after each chunk whose index is in `quiet_after`.
fn dispatched_with_quiet(
    cuts: &[usize],
    exact_at: Option<usize>,
    quiet_after: &[usize],
    cols: u16,
) -> Vec<Fingerprint> {
    submitted(cuts, exact_at, quiet_after, cols)
        .iter()
        .map(Fingerprint::of)
        .collect()
}

/// The detections [`dispatched_with_quiet`] submits to the executor, in order.
fn submitted(
    cuts: &[usize],
    exact_at: Option<usize>,
    quiet_after: &[usize],
    cols: u16,
) -> Vec<Detection> {
    let engine = engine();
    let shared = Dedup::new();
    let exact_dedup = Dedup::new();
    let mut screen = Pipeline::new(engine.clone(), cols, 24).with_dedup(shared.clone());
    let mut exact = Pipeline::new(engine, 1, 1).with_dedup(exact_dedup);
    let mut core = DispatchCore::new();
    if exact_at.is_some() {
        core.exact_live();
    }
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (SCREEN.len() + 1)).collect();
    bounds.push(0);
    bounds.push(SCREEN.len());
    bounds.sort_unstable();
    bounds.dedup();
    let mut out = Vec::new();
    let mut exact_done = false;
    for (i, w) in bounds.windows(2).enumerate() {
        for d in screen.feed(&SCREEN[w[0]..w[1]]) {
            out.extend(core.detection(d));
        }
        if quiet_after.iter().any(|q| q % bounds.len() == i) {
            for d in screen.quiet() {
                out.extend(core.detection(d));
            }
        }
        if exact_at.is_some_and(|k| k % bounds.len() == i) && !exact_done {
            exact_done = true;
            core.exact_text(MARKDOWN);
            for d in exact.feed_markdown(MARKDOWN, TextSource::Transcript) {
                route_exact(&mut core, &shared, d, &mut out);
            }
            out.extend(core.turn_ended());
        }
    }
    for d in screen.finish() {
        out.extend(core.detection(d));
    }
    if exact_at.is_some() && !exact_done {
        core.exact_text(MARKDOWN);
        for d in exact.feed_markdown(MARKDOWN, TextSource::Transcript) {
            route_exact(&mut core, &shared, d, &mut out);
        }
        out.extend(core.turn_ended());
    }
    out.extend(core.close());
    out.into_iter()
        .filter_map(|a| match a {
            Action::Dispatch(d) | Action::Submit(d) => Some(d),
            Action::Publish(_) => None,
        })
        .collect()
}

fn expected() -> BTreeSet<Fingerprint> {
    BTreeSet::from([
        Fingerprint::delegation(
            "engineer",
            "implement fib(n) in fib.py and keep it iterative with type hints",
        ),
        Fingerprint::delegation("qa", "test the fib module and report"),
    ])
}

#[test]
fn whole_input_dispatches_each_delegation_once() {
    for exact in [None, Some(0)] {
        let got = dispatched(&[], exact, 60);
        assert_eq!(got.len(), 2, "{exact:?}: {got:?}");
        assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn splitting_and_delaying_never_change_what_is_dispatched(
        cuts in proptest::collection::vec(0usize..4096, 0..12),
        exact_at in proptest::option::of(0usize..16),
    ) {
        let got = dispatched(&cuts, exact_at, 60);
        prop_assert_eq!(got.len(), 2, "{:?}", got);
        prop_assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected());
    }

    /// A delay anywhere (the quiet signal between any two chunks, as often as it likes) with the
    /// exact sources live: the screen's quiet-time finals wait for the turn's end, and a cut one is
    /// never dispatched next to the transcript's whole one.
    #[test]
    fn delaying_any_chunk_never_changes_what_is_dispatched(
        cuts in proptest::collection::vec(0usize..4096, 0..12),
        exact_at in 0usize..16,
        quiet_after in proptest::collection::vec(0usize..16, 0..6),
    ) {
        let got = dispatched_with_quiet(&cuts, Some(exact_at), &quiet_after, 60);
        prop_assert_eq!(got.len(), 2, "{:?}", got);
        prop_assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected());
    }

    /// With the exact sources live, the task that runs is the exact source's text (markdown and
    /// all), whether the screen's copy or the exact one arrived first: what runs never depends on
    /// the load.
    #[test]
    fn the_exact_copy_runs_whichever_source_comes_first(
        cuts in proptest::collection::vec(0usize..4096, 0..12),
        exact_at in 0usize..16,
        quiet_after in proptest::collection::vec(0usize..16, 0..6),
    ) {
        let mut tasks: Vec<String> = submitted(&cuts, Some(exact_at), &quiet_after, 60)
            .into_iter()
            .filter_map(|d| d.task)
            .collect();
        tasks.sort();
        prop_assert_eq!(
            tasks,
            [
                "implement `fib(n)` in fib.py and keep it iterative with type hints",
                "test the `fib` module and report",
            ]
        );
    }

    /// Screen only (no hooks, no transcript): a delay between lines (the quiet signal after any
    /// chunk that ends a row) never changes what is dispatched. A delay in the middle of a
    /// paragraph is a known limit of the screen alone: the quiet spell is the turn end of CLIs
    /// without a turn signal, so a model that stalls for `pty::QUIET` mid-sentence is read as done.
    #[test]
    fn screen_only_delays_between_lines_never_change_what_is_dispatched(
        cuts in proptest::collection::vec(0usize..4096, 0..12),
        quiet_after in proptest::collection::vec(0usize..16, 0..6),
    ) {
        // Cut only at the end of a paragraph (after a blank line), so each chunk holds whole
        // paragraphs: the delays fall between blocks.
        let ends: Vec<usize> = SCREEN
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"\r\n\r\n")
            .map(|(i, _)| i + 4)
            .collect();
        let cuts: Vec<usize> = cuts.iter().map(|c| ends[c % ends.len()]).collect();
        let got = dispatched_with_quiet(&cuts, None, &quiet_after, 60);
        prop_assert_eq!(got.len(), 2, "{:?}", got);
        prop_assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected());
    }
}

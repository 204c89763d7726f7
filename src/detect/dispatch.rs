//! The dispatch decision: which detections start a sub-agent, and when.
//!
//! Pure (no clock, no I/O): the session's dispatcher thread feeds it the detections of every source
//! and the turn signals, in arrival order, and does what the returned [`Action`]s say. Because nothing
//! here reads a clock, how the input was chunked or delayed cannot change what is dispatched; only
//! the order of the signals matters, and the rules below make that order irrelevant too.
//!
//! Rules:
//! * Every detection is published (a `detection` event, with its `final` flag).
//! * Only a **final** delegation that mpm runs (`!handled_by_agent`) is dispatched, once per
//!   [`Fingerprint`]: a final whose fingerprint was dispatched, or is a whole-word cut of one that
//!   was, is not dispatched again.
//! * A **provisional** delegation is held (never dispatched); a later, longer version replaces it; a
//!   final version (equal or longer) retires it. Provisional ones still held at the end are not
//!   dispatched: nothing cut is ever dispatched.
//! * **Exact sources first.** Once an exact source is live ([`DispatchCore::exact_live`]: claude's
//!   hooks report turns, so the transcript is the source of truth), a final delegation read off the
//!   screen waits for the end of its turn ([`DispatchCore::turn_ended`]); by then the transcript has
//!   carried the turn (the Stop hook fires after claude wrote it, and the supervisor drains the
//!   transcript before it signals the end of the turn), so the screen's copy only dispatches what the
//!   transcript lacked. Before an exact source is live (other CLIs, or claude with no hooks), the
//!   screen's finals dispatch at once.

use std::collections::{BTreeSet, HashMap};

use crate::detect::identity::Fingerprint;

/// `short` is `long` cut anywhere (same group, a strict prefix, even mid-word): what a screen final
/// read at a quiet spell in the middle of a streamed word looks like. For finals only: such a cut of
/// a delegation that was (or is about to be) dispatched whole is never dispatched itself.
fn truncates(short: &Fingerprint, long: &Fingerprint) -> bool {
    short.group == long.group
        && !short.text.is_empty()
        && long.text.len() > short.text.len()
        && long.text.starts_with(&short.text)
}
use crate::events::{Detection, TextSource};

/// What the dispatcher thread must do with a detection.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Emit it as a `detection` event only.
    Publish(Detection),
    /// Emit it as a `detection` event and submit it to the executor.
    Dispatch(Detection),
    /// Submit it to the executor only (its `detection` event was emitted when it arrived).
    Submit(Detection),
}

/// The dispatch state of one session.
#[derive(Debug, Default)]
pub struct DispatchCore {
    exact: bool,
    /// Dispatched fingerprint texts per group.
    dispatched: HashMap<String, BTreeSet<String>>,
    /// Provisional delegations (never dispatched themselves).
    provisional: Vec<Fingerprint>,
    /// Final screen delegations waiting for the end of their turn (exact mode).
    waiting: Vec<(Fingerprint, Detection)>,
    /// The exact sources' text of the current turn, normalised (see [`DispatchCore::exact_text`]).
    turn_text: String,
}

impl DispatchCore {
    /// A dispatcher at the start of a session.
    pub fn new() -> DispatchCore {
        DispatchCore::default()
    }

    /// An exact source (claude's hooks) is live: from now on screen delegations wait for the end of
    /// their turn.
    pub fn exact_live(&mut self) {
        self.exact = true;
    }

    /// True once an exact source is live.
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// Was `f` (or a longer version of it) dispatched?
    fn was_dispatched(&self, f: &Fingerprint) -> bool {
        let Some(set) = self.dispatched.get(&f.group) else {
            return false;
        };
        if set.contains(&f.text) {
            return true;
        }
        let mut probe = f.text.clone();
        probe.push(' ');
        set.range::<str, _>((
            std::ops::Bound::Included(f.text.as_str()),
            std::ops::Bound::Unbounded,
        ))
        .take_while(|s| s.starts_with(&f.text))
        .any(|s| s.len() > f.text.len())
    }

    fn dispatch(&mut self, f: Fingerprint, d: Detection, out: &mut Vec<Action>) {
        if self.was_dispatched(&f) {
            out.push(Action::Publish(d));
            return;
        }
        self.provisional.retain(|p| !(p == &f || p.is_cut_of(&f)));
        self.waiting.retain(|(w, _)| !(w == &f || truncates(w, &f)));
        self.dispatched.entry(f.group).or_default().insert(f.text);
        out.push(Action::Dispatch(d));
    }

    /// One detection from any source.
    pub fn detection(&mut self, d: Detection) -> Vec<Action> {
        let mut out = Vec::new();
        if d.category != "delegation" || d.handled_by_agent {
            out.push(Action::Publish(d));
            return out;
        }
        let f = Fingerprint::of(&d);
        if !d.is_final {
            // A longer provisional version replaces a held cut; a cut of a held one adds nothing.
            if !self.was_dispatched(&f)
                && !self.provisional.iter().any(|p| p == &f || f.is_cut_of(p))
            {
                self.provisional.retain(|p| !p.is_cut_of(&f));
                self.provisional.push(f);
            }
            out.push(Action::Publish(d));
            return out;
        }
        if self.exact && d.source == TextSource::Screen {
            if self.was_dispatched(&f)
                || self
                    .waiting
                    .iter()
                    .any(|(w, _)| w == &f || truncates(&f, w))
            {
                out.push(Action::Publish(d));
                return out;
            }
            self.provisional.retain(|p| !(p == &f || p.is_cut_of(&f)));
            self.waiting.retain(|(w, _)| !truncates(w, &f));
            self.waiting.push((f, d.clone()));
            out.push(Action::Publish(d));
            return out;
        }
        self.dispatch(f, d, &mut out);
        out
    }

    /// An exact source carried a delegation the screen already reported (the session's dedup kept
    /// only the screen's detection event): the screen's waiting copy is confirmed, and the exact
    /// copy is submitted now. The exact copy, always: the task that runs is the one the agent wrote
    /// (markdown and all), whichever source the load let arrive first.
    pub fn confirm(&mut self, d: &Detection) -> Vec<Action> {
        let f = Fingerprint::of(d);
        let mut out = Vec::new();
        if let Some(i) = self
            .waiting
            .iter()
            .position(|(w, _)| w == &f || truncates(w, &f))
        {
            let (w, _) = self.waiting.remove(i);
            if w != f {
                // The screen's copy is a cut of the exact one: the whole task runs.
                self.dispatch(f, d.clone(), &mut out);
            } else if !self.was_dispatched(&w) {
                // Its detection event is the screen's (published when it arrived); the submit
                // carries the exact text.
                self.dispatched.entry(w.group).or_default().insert(w.text);
                out.push(Action::Submit(d.clone()));
            }
        }
        out
    }

    /// Markdown an exact source carried in this turn (assistant text of the transcript, the Stop
    /// hook's final message). A screen delegation whose words are in it was seen by the exact source,
    /// which decided: it dispatched it, or the words were not a delegation there (a line in a fenced
    /// code block, prose), so the screen's copy is not dispatched at the turn's end.
    pub fn exact_text(&mut self, markdown: &str) {
        // Bounded: a turn's text beyond this only weakens the check to "dispatch what is lacking".
        if self.turn_text.len() < 4 * 1024 * 1024 {
            crate::detect::identity::push_normalized(markdown, &mut self.turn_text);
            self.turn_text.push('\n');
        }
    }

    /// The turn ended and the exact sources were drained: screen delegations they lacked dispatch
    /// now, in the order they were seen.
    pub fn turn_ended(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        let turn_text = std::mem::take(&mut self.turn_text);
        for (f, d) in std::mem::take(&mut self.waiting) {
            if self.was_dispatched(&f) || (!f.text.is_empty() && turn_text.contains(&f.text)) {
                continue;
            }
            // Already published when it arrived: only the submit is left.
            self.dispatched.entry(f.group).or_default().insert(f.text);
            out.push(Action::Submit(d));
        }
        out
    }

    /// The session ended (every source drained): the end of the last turn. Provisional detections
    /// still held are dropped.
    pub fn close(&mut self) -> Vec<Action> {
        self.provisional.clear();
        self.turn_ended()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deleg(agent: &str, task: &str, source: TextSource, is_final: bool) -> Detection {
        Detection {
            category: "delegation".into(),
            pattern: "p".into(),
            text: format!("{agent} Agent: {task}"),
            source,
            agent: Some(agent.into()),
            task: Some(task.into()),
            ticket_type: None,
            title: None,
            priority: None,
            handled_by_agent: false,
            is_final,
        }
    }

    fn dispatched(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Dispatch(d) | Action::Submit(d) => d.task.clone(),
                Action::Publish(_) => None,
            })
            .collect()
    }

    /// Each step: a detection, or the end of a turn; the tasks dispatched after all steps.
    enum Step {
        D(&'static str, &'static str, TextSource, bool),
        Exact,
        Text(&'static str),
        TurnEnd,
    }
    use Step::*;
    const SCREEN: TextSource = TextSource::Screen;
    const TRANSCRIPT: TextSource = TextSource::Transcript;

    fn run(steps: &[Step]) -> Vec<String> {
        let mut core = DispatchCore::new();
        let mut all = Vec::new();
        for s in steps {
            match s {
                D(a, t, src, fin) => all.extend(core.detection(deleg(a, t, *src, *fin))),
                Exact => core.exact_live(),
                Text(t) => core.exact_text(t),
                TurnEnd => all.extend(core.turn_ended()),
            }
        }
        all.extend(core.close());
        dispatched(&all)
    }

    #[test]
    fn table() {
        let cases: Vec<(&str, Vec<Step>, Vec<&str>)> = vec![
            (
                "a final dispatches once",
                vec![
                    D("qa", "test it", SCREEN, true),
                    D("qa", "test it", SCREEN, true),
                ],
                vec!["test it"],
            ),
            (
                "provisional never dispatches",
                vec![D("qa", "test the", SCREEN, false)],
                vec![],
            ),
            (
                "a longer provisional replaces, the final dispatches whole",
                vec![
                    D("qa", "test the", SCREEN, false),
                    D("qa", "test the api", SCREEN, false),
                    D("qa", "test the api and cli", SCREEN, true),
                ],
                vec!["test the api and cli"],
            ),
            (
                "a cut final after the whole one is not dispatched",
                vec![
                    D("qa", "test the api and cli", SCREEN, true),
                    D("qa", "test the api", SCREEN, true),
                ],
                vec!["test the api and cli"],
            ),
            (
                "screen and transcript forms are one",
                vec![
                    D("engineer", "implement fib(n)", SCREEN, true),
                    D("engineer", "implement `fib(n)`.", TRANSCRIPT, true),
                ],
                vec!["implement fib(n)"],
            ),
            (
                "exact mode: the transcript's copy wins over the screen's",
                vec![
                    Exact,
                    D("engineer", "implement fib(n)", SCREEN, true),
                    D("engineer", "implement `fib(n)`", TRANSCRIPT, true),
                    TurnEnd,
                ],
                vec!["implement `fib(n)`"],
            ),
            (
                "exact mode: the screen fills what the transcript lacked, at the turn's end",
                vec![
                    Exact,
                    D("qa", "check the docs", SCREEN, true),
                    D("engineer", "build it", TRANSCRIPT, true),
                    TurnEnd,
                ],
                vec!["build it", "check the docs"],
            ),
            (
                "exact mode: a cut screen final is replaced by the longer transcript one",
                vec![
                    Exact,
                    D("qa", "check the", SCREEN, true),
                    D("qa", "check the docs", TRANSCRIPT, true),
                    TurnEnd,
                ],
                vec!["check the docs"],
            ),
            (
                "exact mode: a screen line the exact text has in a code block is not dispatched",
                vec![
                    Exact,
                    D("engineer", "never run this", SCREEN, true),
                    D("qa", "test it", SCREEN, true),
                    Text(
                        "Some code:\n```text\nEngineer Agent: never run `this`\n```\nQA Agent: test it",
                    ),
                    D("qa", "test it", TRANSCRIPT, true),
                    TurnEnd,
                ],
                vec!["test it"],
            ),
            (
                "exact mode: the exact text of one turn does not cover the next",
                vec![
                    Exact,
                    Text("Engineer Agent: build it"),
                    TurnEnd,
                    D("engineer", "build it", SCREEN, true),
                    TurnEnd,
                ],
                vec!["build it"],
            ),
            (
                "exact mode: a screen final cut mid-word after the turn is not dispatched",
                vec![
                    Exact,
                    D("qa", "test the fib module", TRANSCRIPT, true),
                    TurnEnd,
                    D("qa", "test the f", SCREEN, true),
                    TurnEnd,
                ],
                vec!["test the fib module"],
            ),
            (
                "exact mode: a screen final cut mid-word before the whole one waits and is dropped",
                vec![
                    Exact,
                    D("qa", "t", SCREEN, true),
                    D("qa", "test the fib module", SCREEN, true),
                    TurnEnd,
                ],
                vec!["test the fib module"],
            ),
            (
                "different agents stay apart",
                vec![D("qa", "x", SCREEN, true), D("engineer", "x", SCREEN, true)],
                vec!["x", "x"],
            ),
        ];
        for (name, steps, want) in cases {
            assert_eq!(run(&steps), want, "{name}");
        }
    }

    #[test]
    fn a_waiting_screen_delegation_is_published_once_and_submitted_at_the_turns_end() {
        let mut core = DispatchCore::new();
        core.exact_live();
        let d = deleg("qa", "check the docs", SCREEN, true);
        assert_eq!(core.detection(d.clone()), vec![Action::Publish(d.clone())]);
        assert_eq!(core.turn_ended(), vec![Action::Submit(d)]);
        assert!(core.turn_ended().is_empty());
    }

    #[test]
    fn a_confirmed_screen_delegation_is_submitted_before_the_turns_end() {
        let mut core = DispatchCore::new();
        core.exact_live();
        let d = deleg("engineer", "implement fib(n)", SCREEN, true);
        core.detection(d.clone());
        let exact = deleg("engineer", "implement `fib(n)`", TRANSCRIPT, true);
        // The exact copy runs (the same task the exact source would have dispatched first).
        assert_eq!(core.confirm(&exact), vec![Action::Submit(exact.clone())]);
        core.exact_text("Engineer Agent: implement `fib(n)`");
        assert!(core.turn_ended().is_empty());
        assert!(core.confirm(&exact).is_empty());
    }

    #[test]
    fn handled_by_agent_and_other_categories_are_published_only() {
        let mut core = DispatchCore::new();
        let mut d = deleg("explore", "look", TRANSCRIPT, true);
        d.handled_by_agent = true;
        assert_eq!(core.detection(d.clone()), vec![Action::Publish(d)]);
        let mut t = deleg("qa", "x", SCREEN, true);
        t.category = "ticket".into();
        assert_eq!(core.detection(t.clone()), vec![Action::Publish(t)]);
    }
}

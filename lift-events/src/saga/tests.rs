//! Unit and property tests of the transition function.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn three_steps(pivot: bool) -> Saga {
    let step = |name: &str, comp: bool| {
        Step::new(
            name,
            remote("p", &format!("Do{name}")),
            comp.then(|| remote("p", &format!("Undo{name}"))),
        )
        .timeout(Duration::from_secs(10))
        .retry(RetryPolicy::new(3, Duration::from_secs(1), Duration::from_secs(4)).unwrap())
        .compensation_retry(
            RetryPolicy::new(2, Duration::from_secs(1), Duration::from_secs(4)).unwrap(),
        )
    };
    let b = Saga::named("s", 1)
        .step(step("a", true))
        .step(step("b", true));
    let b = if pivot {
        b.pivot(step("c", false))
    } else {
        b.step(step("c", true))
    };
    b.build().unwrap()
}

/// `a` (undone by `UndoA`), the pivot `b`, and `c` after it: the policies of
/// [`three_steps`].
fn pivot_in_the_middle() -> Saga {
    let step = |name: &str| {
        Step::new(name, remote("p", &format!("Do{name}")), None)
            .timeout(Duration::from_secs(10))
            .retry(RetryPolicy::new(3, Duration::from_secs(1), Duration::from_secs(4)).unwrap())
    };
    Saga::named("s", 1)
        .step(
            Step::new("a", remote("p", "Doa"), Some(remote("p", "Undoa")))
                .timeout(Duration::from_secs(10))
                .retry(RetryPolicy::new(3, Duration::from_secs(1), Duration::from_secs(4)).unwrap())
                .compensation_retry(
                    RetryPolicy::new(2, Duration::from_secs(1), Duration::from_secs(4)).unwrap(),
                ),
        )
        .pivot(step("b"))
        .step(step("c"))
        .build()
        .unwrap()
}

/// `a` (undone by `UndoA`), the pivot `b`, tried once, and `c` after it.
fn pivot_tried_once() -> Saga {
    Saga::named("s", 2)
        .step(Step::new("a", remote("p", "A"), Some(remote("p", "UndoA"))))
        .pivot(
            Step::new("b", remote("p", "B"), None)
                .retry(RetryPolicy::new(1, Duration::ZERO, Duration::ZERO).unwrap()),
        )
        .step(Step::new("c", remote("p", "C"), None))
        .build()
        .unwrap()
}

fn applied(outcome: Outcome) -> Transition {
    match outcome {
        Outcome::Applied(t) => t,
        other => panic!("expected a transition, got {other:?}"),
    }
}

fn command(t: &Transition) -> Command {
    t.outbox()
        .iter()
        .find_map(|m| match m {
            Message::Command(c) => Some(c.clone()),
            _ => None,
        })
        .expect("a command")
}

fn ok(c: &Command) -> SagaInput {
    SagaInput::Reply(Reply::to(c, Ok(json!({"step": c.step}))))
}

fn err(c: &Command, e: StepError) -> SagaInput {
    SagaInput::Reply(Reply::to(c, Err(e)))
}

fn begin(saga: &Saga) -> Transition {
    start(
        saga,
        "s-1",
        json!({"order": 7}),
        StartMeta::default(),
        1_000,
    )
}

#[test]
fn completes_in_order_with_one_version_per_transition() {
    let saga = three_steps(false);
    let mut t = begin(&saga);
    assert_eq!(t.state().version(), 1);
    for step in 0..3 {
        let c = command(&t);
        assert_eq!((c.step, c.phase, c.attempt), (step, Phase::Action, 1));
        t = applied(transition(&saga, t.state(), &ok(&c), 2_000));
    }
    let s = t.state();
    assert_eq!(s.status(), SagaStatus::Completed);
    assert_eq!(s.version(), 4);
    assert_eq!(s.outputs().len(), 3);
    assert!(matches!(t.outbox(), [Message::Finished(f)] if f.status == SagaStatus::Completed));
    let versions: Vec<u64> = s.history().iter().map(|h| h.version).collect();
    assert!(
        versions
            .windows(2)
            .all(|w| w[1] == w[0] || w[1] == w[0] + 1)
    );
    assert_eq!(versions.last(), Some(&4));
}

/// A participant's reason is kept bounded: a 150 KB refusal (stored four times) would not
/// fit a saga item, and the saga would be stuck instead of compensated.
#[test]
fn a_long_refusal_reason_is_kept_bounded() {
    let saga = three_steps(false);
    let t = begin(&saga);
    let c = command(&t);
    let long = "é".repeat(75_000);
    let t = applied(transition(
        &saga,
        t.state(),
        &err(&c, StepError::Rejected(long)),
        2_000,
    ));
    let reason = t.state().reason().unwrap();
    assert!(reason.len() <= 2 * MAX_REASON_BYTES, "{}", reason.len());
    assert!(reason.ends_with('…'));
    let bytes = serde_json::to_string(t.state()).unwrap().len();
    assert!(bytes < 20 * MAX_REASON_BYTES, "{bytes}");
}

#[test]
fn a_refused_step_compensates_the_completed_ones_in_reverse() {
    let saga = three_steps(false);
    let mut t = begin(&saga);
    for _ in 0..2 {
        let c = command(&t);
        t = applied(transition(&saga, t.state(), &ok(&c), 2_000));
    }
    let c = command(&t);
    t = applied(transition(
        &saga,
        t.state(),
        &err(&c, StepError::Rejected("no".into())),
        3_000,
    ));
    assert_eq!(t.state().status(), SagaStatus::Compensating);
    let mut compensated = Vec::new();
    while !t.state().status().is_final() {
        let c = command(&t);
        assert_eq!(c.phase, Phase::Compensation);
        compensated.push(c.step);
        t = applied(transition(&saga, t.state(), &ok(&c), 4_000));
    }
    assert_eq!(
        compensated,
        [1, 0],
        "reverse order, the refused step is not undone"
    );
    assert_eq!(t.state().status(), SagaStatus::Compensated);
    assert_eq!(
        t.state().steps(),
        [
            StepStatus::Compensated,
            StepStatus::Compensated,
            StepStatus::Rejected
        ]
    );
    assert!(t.state().reason().unwrap().contains("no"));
    let timeline = t.state().timeline(&saga);
    let lines: Vec<&str> = timeline.lines().collect();
    assert_eq!(lines.len(), t.state().history().len());
    assert!(lines[0].starts_with("v1") && lines[0].ends_with("started (definition 1)"));
    assert!(
        lines[1].ends_with("sent a (action, attempt 1)"),
        "{timeline}"
    );
    assert!(
        timeline.contains("c action failed (attempt 1): refused: no")
            || timeline.contains("c action failed (attempt 1): no"),
        "{timeline}"
    );
    assert!(
        lines.last().unwrap().contains("ended compensated"),
        "{timeline}"
    );
}

#[test]
fn duplicate_late_and_early_replies_are_ignored() {
    let saga = three_steps(false);
    let t0 = begin(&saga);
    let c0 = command(&t0);
    let t1 = applied(transition(&saga, t0.state(), &ok(&c0), 2_000));
    // The same reply again.
    assert_eq!(
        transition(&saga, t1.state(), &ok(&c0), 2_100),
        Outcome::Ignored(Ignored::Stale)
    );
    // A reply for a step not sent yet.
    let mut future = command(&t1);
    future.step = 2;
    future.command_id = command_id("s-1", 2, Phase::Action);
    assert_eq!(
        transition(&saga, t1.state(), &ok(&future), 2_100),
        Outcome::Ignored(Ignored::Stale)
    );
    // An attempt never sent.
    let mut c1 = command(&t1);
    c1.attempt = 2;
    assert_eq!(
        transition(&saga, t1.state(), &ok(&c1), 2_100),
        Outcome::Ignored(Ignored::Unknown)
    );
    // Another saga's reply.
    let mut other = command(&t1);
    other.saga_id = "s-2".into();
    assert_eq!(
        transition(&saga, t1.state(), &ok(&other), 2_100),
        Outcome::Ignored(Ignored::Unknown)
    );
}

/// `transition` is public and pure: a state that does not fit the definition it is given
/// (a saga redefined under the same name and version) is an input it cannot apply, never an
/// index out of bounds.
#[test]
fn a_state_that_does_not_fit_its_definition_is_not_applied() {
    let saga = three_steps(false);
    let t0 = begin(&saga);
    let a = command(&t0);
    let t1 = applied(transition(&saga, t0.state(), &ok(&a), 2_000));
    let t2 = applied(transition(&saga, t1.state(), &ok(&command(&t1)), 3_000));
    let c = command(&t2);
    assert_eq!(c.step, 2);
    let redefined = Saga::named("s", 1)
        .step(Step::new("a", remote("p", "Doa"), None))
        .step(Step::new("b", remote("p", "Dob"), None))
        .build()
        .unwrap();
    let timeout = Timer {
        saga_id: "s-1".into(),
        kind: TimerKind::Timeout,
        step: 2,
        phase: Phase::Action,
        attempt: 1,
        due_ms: 13_000,
    };
    for input in [SagaInput::Timer(timeout), ok(&c)] {
        assert_eq!(
            transition(&redefined, t2.state(), &input, 20_000),
            Outcome::Ignored(Ignored::Unknown)
        );
    }
}

#[test]
fn a_timeout_retries_and_a_late_success_of_the_first_attempt_counts() {
    let saga = three_steps(false);
    let t0 = begin(&saga);
    let c0 = command(&t0);
    let timeout = Timer {
        saga_id: "s-1".into(),
        kind: TimerKind::Timeout,
        step: 0,
        phase: Phase::Action,
        attempt: 1,
        due_ms: 11_000,
    };
    // Early: re-armed, no write.
    assert!(matches!(
        transition(&saga, t0.state(), &SagaInput::Timer(timeout.clone()), 5_000),
        Outcome::Rearm(t) if t.due_ms == 11_000
    ));
    let t1 = applied(transition(
        &saga,
        t0.state(),
        &SagaInput::Timer(timeout.clone()),
        11_000,
    ));
    let cursor = t1.state().cursor().unwrap();
    assert_eq!(cursor.attempt, 2);
    assert_eq!(cursor.waiting, Waiting::Retry { due_ms: 12_000 });
    // The timeout again: the saga now waits for its retry, whose timer the transition
    // sent; this copy is dropped, no write.
    assert_eq!(
        transition(
            &saga,
            t1.state(),
            &SagaInput::Timer(timeout.clone()),
            11_500
        ),
        Outcome::Ignored(Ignored::Stale)
    );
    assert!(t1.outbox().iter().any(
        |m| matches!(m, Message::Timer(t) if t.due_ms == 12_000 && t.kind == TimerKind::Retry)
    ));
    // A technical failure of attempt 1 arriving now: stale.
    assert_eq!(
        transition(
            &saga,
            t1.state(),
            &err(&c0, StepError::Failed("x".into())),
            11_500
        ),
        Outcome::Ignored(Ignored::Stale)
    );
    // But its success counts: the participant did it once.
    let t2 = applied(transition(&saga, t1.state(), &ok(&c0), 11_600));
    assert_eq!(t2.state().steps()[0], StepStatus::Done);
    assert_eq!(command(&t2).step, 1);
}

#[test]
fn a_saga_answered_in_time_sends_one_timer_in_all() {
    let saga = three_steps(false);
    let mut t = begin(&saga);
    let mut timers = 0;
    let mut now = 1_000;
    loop {
        timers += t
            .outbox()
            .iter()
            .filter(|m| matches!(m, Message::Timer(_)))
            .count();
        if t.state().status().is_final() {
            break;
        }
        now += 100;
        t = applied(transition(&saga, t.state(), &ok(&command(&t)), now));
    }
    assert_eq!(t.state().status(), SagaStatus::Completed);
    assert_eq!(timers, 1, "the first step's timer serves the later ones");
    // The one timer, when it comes, finds the saga ended.
    let first_due = 1_000 + 10_000;
    let timer = Timer {
        saga_id: "s-1".into(),
        kind: TimerKind::Timeout,
        step: 0,
        phase: Phase::Action,
        attempt: 1,
        due_ms: first_due,
    };
    assert_eq!(
        transition(
            &saga,
            t.state(),
            &SagaInput::Timer(timer.clone()),
            first_due
        ),
        Outcome::Ignored(Ignored::Finished)
    );
}

#[test]
fn a_timer_for_a_saga_that_moved_on_waits_for_its_new_deadline() {
    let saga = three_steps(false);
    let t0 = begin(&saga);
    // The first step answers at once; the second's deadline is later than the timer.
    let t1 = applied(transition(&saga, t0.state(), &ok(&command(&t0)), 5_000));
    assert!(
        !t1.outbox().iter().any(|m| matches!(m, Message::Timer(_))),
        "the pending timer is due first: no new one"
    );
    let Waiting::Reply { deadline_ms } = t1.state().cursor().unwrap().waiting else {
        panic!("waits for a reply")
    };
    let timer = Timer {
        saga_id: "s-1".into(),
        kind: TimerKind::Timeout,
        step: 0,
        phase: Phase::Action,
        attempt: 1,
        due_ms: 11_000,
    };
    assert!(matches!(
        transition(&saga, t1.state(), &SagaInput::Timer(timer.clone()), 11_000),
        Outcome::Rearm(t) if t.due_ms == deadline_ms && t.step == 1
    ));
    // At the new deadline the step times out.
    let t2 = applied(transition(
        &saga,
        t1.state(),
        &SagaInput::Timer(Timer {
            due_ms: deadline_ms,
            ..timer
        }),
        deadline_ms,
    ));
    assert_eq!(t2.state().cursor().unwrap().attempt, 2);
}

/// A timer that comes due while the saga waits for a later time that a transition already
/// sent a timer for is dropped, not sent again: replies that each come just before their
/// step's timeout would otherwise keep one more copy alive at every step.
#[test]
fn a_timer_another_one_follows_is_not_sent_again() {
    let saga = three_steps(false);
    let timer = |due_ms| {
        SagaInput::Timer(Timer {
            saga_id: "s-1".into(),
            kind: TimerKind::Timeout,
            step: 0,
            phase: Phase::Action,
            attempt: 1,
            due_ms,
        })
    };
    let timers = |t: &Transition| -> Vec<u64> {
        t.outbox()
            .iter()
            .filter_map(|m| match m {
                Message::Timer(t) => Some(t.due_ms),
                _ => None,
            })
            .collect()
    };
    // Started at 1 s: a timer for 11 s (10 s timeouts). Step a answers at 10 s: step b's
    // deadline is 20 s, the timer for 11 s still to come.
    let t0 = begin(&saga);
    assert_eq!(timers(&t0), [11_000]);
    let t1 = applied(transition(&saga, t0.state(), &ok(&command(&t0)), 10_000));
    assert!(timers(&t1).is_empty());
    // At 11 s the timer finds the saga waiting for 20 s, and no other timer coming: sent
    // again for then.
    assert!(matches!(
        transition(&saga, t1.state(), &timer(11_000), 11_000),
        Outcome::Rearm(t) if t.due_ms == 20_000
    ));
    // Step b answers at 19 s: step c's deadline is 29 s, and a transition sends a timer for
    // it (the one for 20 s is the re-sent copy, which it does not know of).
    let t2 = applied(transition(&saga, t1.state(), &ok(&command(&t1)), 19_000));
    assert_eq!(timers(&t2), [29_000]);
    // At 20 s the copy comes: the timer for 29 s follows, so it is dropped.
    assert_eq!(
        transition(&saga, t2.state(), &timer(20_000), 20_000),
        Outcome::Ignored(Ignored::Stale)
    );
    // The timer for 29 s itself times step c out.
    let t3 = applied(transition(&saga, t2.state(), &timer(29_000), 29_000));
    assert_eq!(t3.state().cursor().unwrap().attempt, 2);
}

#[test]
fn running_out_of_attempts_compensates_the_uncertain_step_too() {
    let saga = three_steps(false);
    let t0 = begin(&saga);
    let mut t = applied(transition(&saga, t0.state(), &ok(&command(&t0)), 2_000));
    let mut now = 2_000;
    for attempt in 1..=3 {
        let c = command(&t);
        assert_eq!(c.attempt, attempt);
        now += 10;
        t = applied(transition(
            &saga,
            t.state(),
            &err(&c, StepError::Failed("down".into())),
            now,
        ));
        if attempt < 3 {
            let due = match t.state().cursor().unwrap().waiting {
                Waiting::Retry { due_ms } => due_ms,
                w => panic!("{w:?}"),
            };
            now = due;
            let retry = Timer {
                saga_id: "s-1".into(),
                kind: TimerKind::Retry,
                step: 1,
                phase: Phase::Action,
                attempt: attempt + 1,
                due_ms: due,
            };
            t = applied(transition(&saga, t.state(), &SagaInput::Timer(retry), now));
        }
    }
    assert_eq!(t.state().status(), SagaStatus::Compensating);
    assert_eq!(t.state().steps()[1], StepStatus::Compensating);
    assert!(
        t.state()
            .history()
            .iter()
            .any(|h| h.event == HistoryEvent::StepUncertain { step: 1 })
    );
    let c = command(&t);
    assert_eq!((c.step, c.phase), (1, Phase::Compensation));
}

#[test]
fn a_compensation_that_keeps_failing_needs_attention_with_the_reason() {
    let saga = three_steps(false);
    let t0 = begin(&saga);
    let t1 = applied(transition(&saga, t0.state(), &ok(&command(&t0)), 2_000));
    let c1 = command(&t1);
    let mut t = applied(transition(
        &saga,
        t1.state(),
        &err(&c1, StepError::Rejected("no".into())),
        3_000,
    ));
    let c = command(&t);
    t = applied(transition(
        &saga,
        t.state(),
        &err(&c, StepError::Failed("db".into())),
        3_100,
    ));
    let retry = Timer {
        saga_id: "s-1".into(),
        kind: TimerKind::Retry,
        step: 0,
        phase: Phase::Compensation,
        attempt: 2,
        due_ms: 4_100,
    };
    t = applied(transition(
        &saga,
        t.state(),
        &SagaInput::Timer(retry),
        4_100,
    ));
    let c = command(&t);
    t = applied(transition(
        &saga,
        t.state(),
        &err(&c, StepError::Failed("db".into())),
        4_200,
    ));
    let s = t.state();
    assert_eq!(s.status(), SagaStatus::NeedsAttention);
    let reason = s.reason().unwrap();
    assert!(
        reason.contains("compensation") && reason.contains("db"),
        "{reason}"
    );
    assert_eq!(
        transition(&saga, s, &ok(&c), 5_000),
        Outcome::Ignored(Ignored::Finished)
    );
}

#[test]
fn after_the_pivot_a_failure_needs_attention_and_before_it_compensates() {
    let saga = three_steps(true);
    let t0 = begin(&saga);
    let t1 = applied(transition(&saga, t0.state(), &ok(&command(&t0)), 2_000));
    let t2 = applied(transition(&saga, t1.state(), &ok(&command(&t1)), 2_000));
    // The pivot refused: compensate the two before it.
    let refused = applied(transition(
        &saga,
        t2.state(),
        &err(&command(&t2), StepError::Rejected("no".into())),
        3_000,
    ));
    assert_eq!(command(&refused).step, 1);
    assert_eq!(refused.state().status(), SagaStatus::Compensating);
    // A pivot that ran out of attempts may have taken effect: a person decides.
    let saga2 = pivot_tried_once();
    let t0 = begin(&saga2);
    let t1 = applied(transition(&saga2, t0.state(), &ok(&command(&t0)), 2_000));
    let t2 = applied(transition(
        &saga2,
        t1.state(),
        &err(&command(&t1), StepError::Failed("?".into())),
        2_000,
    ));
    assert_eq!(t2.state().status(), SagaStatus::NeedsAttention);
    assert!(t2.state().reason().unwrap().contains("pivot"));
}

#[test]
fn definitions_are_checked_and_versions_kept_apart() {
    let e = Saga::named("x", 1).build().unwrap_err();
    assert!(e.to_string().contains("steps"));
    let e = Saga::named("x", 1)
        .pivot(Step::new("a", remote("p", "A"), Some(remote("p", "B"))))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("pivot"));
    let e = Saga::named("x", 1)
        .step(Step::new("a", remote("p", "A"), None))
        .step(Step::new("a", remote("p", "A"), None))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("unique"));
    assert!(RetryPolicy::new(0, Duration::ZERO, Duration::ZERO).is_err());
    assert!(RetryPolicy::new(MAX_ATTEMPTS, Duration::ZERO, Duration::ZERO).is_ok());
    let e = RetryPolicy::new(MAX_ATTEMPTS + 1, Duration::ZERO, Duration::ZERO).unwrap_err();
    assert!(e.to_string().contains("max_attempts"), "{e}");
    let registry = Registry::new().with(three_steps(false)).with(
        Saga::named("s", 2)
            .step(Step::new("only", remote("p", "X"), None))
            .build()
            .unwrap(),
    );
    assert_eq!(registry.latest("s").unwrap().version(), 2);
    assert_eq!(registry.get("s", 1).unwrap().steps().len(), 3);
    assert!(registry.latest("t").is_none());
}

/// Every attempt of a phase carries one command id, which a participant remembers for its
/// duplicate window: a remote step whose attempts can outlast it (a late attempt would act
/// again) is refused, unless the window is made longer; local steps have no such limit.
#[test]
fn a_remote_step_must_end_its_attempts_within_the_duplicate_window() {
    let long = |action: Action| {
        Saga::named("x", 1)
            .step(Step::new("a", action, None).timeout(Duration::from_secs(13 * 3600)))
    };
    let e = long(remote("p", "A")).build().unwrap_err();
    assert!(e.to_string().contains("duplicate window"), "{e}");
    assert!(
        long(remote("p", "A"))
            .duplicate_window(Duration::from_secs(48 * 3600))
            .build()
            .is_ok()
    );
    assert!(long(local(|_| async { Ok(json!(null)) })).build().is_ok());
    // A compensation counts with its own policy: 10 attempts of 3 hours.
    let e = Saga::named("x", 1)
        .step(
            Step::new("a", remote("p", "A"), Some(remote("p", "UndoA")))
                .timeout(Duration::from_secs(3 * 3600)),
        )
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("duplicate window"), "{e}");
    let p = RetryPolicy::new(3, Duration::from_secs(1), Duration::from_secs(4)).unwrap();
    assert_eq!(
        p.horizon(Duration::from_secs(10)),
        Duration::from_secs(30 + 1 + 2)
    );
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let p = RetryPolicy::new(10, Duration::from_secs(1), Duration::from_secs(5)).unwrap();
    let waits: Vec<u64> = (2..=6).map(|a| p.backoff(a).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 5, 5]);
}

/// One input the property test feeds: an answer to what is in flight, or noise.
#[derive(Debug, Clone)]
enum Move {
    /// Answer the command in flight, from attempt `attempt_back` before the current one.
    Answer { outcome: u8, attempt_back: u32 },
    /// Fire the timer in flight, `early` ms before it is due (0: on time).
    Fire { early: u64 },
    /// Deliver again an input applied earlier (index modulo their number).
    Replay(usize),
    /// A reply to a random step and phase.
    Noise {
        step: u32,
        compensation: bool,
        outcome: u8,
    },
    /// Redrive a saga that needs attention (at an earlier version when `stale`).
    Redrive { stale: bool },
}

fn moves() -> impl Strategy<Value = Vec<Move>> {
    let one = prop_oneof![
        4 => (0u8..4, 0u32..2).prop_map(|(outcome, attempt_back)| Move::Answer { outcome, attempt_back }),
        2 => prop_oneof![Just(0u64), 1u64..5_000].prop_map(|early| Move::Fire { early }),
        2 => any::<usize>().prop_map(Move::Replay),
        1 => any::<bool>().prop_map(|stale| Move::Redrive { stale }),
        1 => (0u32..4, any::<bool>(), 0u8..4).prop_map(|(step, compensation, outcome)| Move::Noise { step, compensation, outcome }),
    ];
    proptest::collection::vec(one, 1..120)
}

fn outcome_of(n: u8) -> Result<Value, StepError> {
    match n {
        0 | 1 => Ok(json!(n)),
        2 => Err(StepError::Rejected("refused".into())),
        _ => Err(StepError::Failed("broken".into())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever arrives, in whatever order and however often: each transition adds one
    /// version and its history, decides at most one command, applies nothing twice, and
    /// compensates only completed (or uncertain) steps, in reverse order; final states are
    /// consistent.
    #[test]
    fn transitions_keep_the_saga_invariants(pivot in 0u8..3, script in moves()) {
        // No pivot, the pivot last, or the pivot in the middle (a step after it to fail).
        let saga = match pivot {
            0 => three_steps(false),
            1 => three_steps(true),
            _ => pivot_in_the_middle(),
        };
        let first = begin(&saga);
        let mut state = first.state().clone();
        let mut now = 1_000u64;
        let mut applied_inputs: Vec<SagaInput> = Vec::new();
        let mut last_compensated: Option<u32> = None;
        for m in script {
            now += 7;
            if state.status().is_final() {
                let Move::Redrive { stale } = m else { continue };
                let halted = state.halted().cloned();
                let input = SagaInput::Redrive(Redrive {
                    saga_id: state.id().to_owned(),
                    version: state.version() - u64::from(stale),
                    reason: "again".into(),
                });
                match transition(&saga, &state, &input, now) {
                    Outcome::Applied(t) => {
                        let halted = halted.expect("a redrive applies to a saga that kept its command");
                        prop_assert!(!stale && state.status() == SagaStatus::NeedsAttention);
                        let next = t.state();
                        prop_assert_eq!(next.version(), state.version() + 1);
                        prop_assert_eq!(&next.history()[..state.history().len()], state.history());
                        prop_assert_eq!(t.outbox().iter().filter(|m| matches!(m, Message::Command(_))).count(), 1);
                        let c = command(&t);
                        prop_assert_eq!((c.step, c.phase, c.attempt), (halted.step, halted.phase, 1));
                        // The same id only for what may have acted, a new one for a refusal.
                        prop_assert_eq!(c.command_id == halted.command_id, halted.resend());
                        prop_assert!(!matches!(transition(&saga, t.state(), &input, now), Outcome::Applied(_)));
                        if halted.phase == Phase::Action {
                            last_compensated = None;
                        }
                        applied_inputs.push(input);
                        state = t.into_state();
                    }
                    Outcome::Ignored(_) => prop_assert!(stale || state.status() != SagaStatus::NeedsAttention || halted.is_none()),
                    Outcome::Rearm(_) => prop_assert!(false, "a redrive re-armed a timer"),
                }
                continue;
            }
            let cursor = state.cursor().cloned().expect("a running saga has a cursor");
            let input = match m {
                Move::Redrive { stale } => SagaInput::Redrive(Redrive {
                    saga_id: state.id().to_owned(),
                    version: state.version() - u64::from(stale),
                    reason: "early".into(),
                }),
                Move::Answer { outcome, attempt_back } => SagaInput::Reply(Reply {
                    saga_id: state.id().to_owned(),
                    command_id: cursor.command_id.clone(),
                    step: cursor.step,
                    phase: cursor.phase,
                    attempt: cursor.attempt.saturating_sub(attempt_back).max(1),
                    outcome: outcome_of(outcome),
                    snapshot: None,
                }),
                Move::Fire { early } => {
                    let (kind, due) = match cursor.waiting {
                        Waiting::Reply { deadline_ms } => (TimerKind::Timeout, deadline_ms),
                        Waiting::Retry { due_ms } => (TimerKind::Retry, due_ms),
                    };
                    now = now.max(due.saturating_sub(early));
                    SagaInput::Timer(Timer { saga_id: state.id().to_owned(), kind, step: cursor.step, phase: cursor.phase, attempt: cursor.attempt, due_ms: due })
                }
                Move::Replay(i) if !applied_inputs.is_empty() => applied_inputs[i % applied_inputs.len()].clone(),
                Move::Replay(_) => continue,
                Move::Noise { step, compensation, outcome } => {
                    let phase = if compensation { Phase::Compensation } else { Phase::Action };
                    SagaInput::Reply(Reply { saga_id: state.id().to_owned(), command_id: command_id(state.id(), step, phase), step, phase, attempt: 1, outcome: outcome_of(outcome), snapshot: None })
                }
            };
            let outcome = transition(&saga, &state, &input, now);
            // Pure: the same arguments, the same answer.
            prop_assert_eq!(&outcome, &transition(&saga, &state, &input, now));
            match outcome {
                Outcome::Applied(t) => {
                    let next = t.state();
                    prop_assert_eq!(next.version(), state.version() + 1);
                    prop_assert!(!t.history().is_empty());
                    prop_assert!(t.history().iter().all(|h| h.version == next.version()));
                    prop_assert_eq!(&next.history()[..state.history().len()], state.history());
                    let commands: Vec<&Command> = t.outbox().iter().filter_map(|m| match m { Message::Command(c) => Some(c), _ => None }).collect();
                    prop_assert!(commands.len() <= 1);
                    for c in commands {
                        if c.phase == Phase::Compensation && c.attempt == 1 {
                            let before = state.steps()[c.step as usize];
                            prop_assert!(matches!(before, StepStatus::Done | StepStatus::Uncertain | StepStatus::Running), "compensating a step in {before:?}");
                            if let Some(last) = last_compensated {
                                prop_assert!(c.step < last, "compensation order");
                            }
                            last_compensated = Some(c.step);
                        }
                    }
                    // Applied once: the same input again changes nothing.
                    prop_assert!(!matches!(transition(&saga, next, &input, now), Outcome::Applied(_)));
                    applied_inputs.push(input);
                    state = t.into_state();
                }
                Outcome::Ignored(_) | Outcome::Rearm(_) => {}
            }
        }
        match state.status() {
            SagaStatus::Completed => prop_assert!(state.steps().iter().all(|s| *s == StepStatus::Done)),
            SagaStatus::Compensated => {
                prop_assert!(state.reason().is_some());
                for (i, s) in state.steps().iter().enumerate() {
                    let undoable = saga.steps()[i].compensation.is_some();
                    prop_assert!(!(undoable && matches!(s, StepStatus::Done | StepStatus::Uncertain)), "step {i} left {s:?}");
                }
            }
            SagaStatus::NeedsAttention => prop_assert!(state.reason().is_some()),
            SagaStatus::Running | SagaStatus::Compensating => prop_assert!(state.cursor().is_some()),
        }
    }

    /// A saga whose commands are always answered ends, whatever the answers.
    #[test]
    fn answered_sagas_always_end(pivot in any::<bool>(), answers in proptest::collection::vec(0u8..4, 64)) {
        let saga = three_steps(pivot);
        let mut state = begin(&saga).into_state();
        let mut now = 1_000;
        for a in answers {
            if state.status().is_final() { break; }
            let cursor = state.cursor().cloned().unwrap();
            now += 60_000;
            let input = match cursor.waiting {
                Waiting::Retry { due_ms } => SagaInput::Timer(Timer { saga_id: "s-1".into(), kind: TimerKind::Retry, step: cursor.step, phase: cursor.phase, attempt: cursor.attempt, due_ms }),
                Waiting::Reply { .. } => SagaInput::Reply(Reply { saga_id: "s-1".into(), command_id: cursor.command_id, step: cursor.step, phase: cursor.phase, attempt: cursor.attempt, outcome: outcome_of(a), snapshot: None }),
            };
            state = applied(transition(&saga, &state, &input, now)).into_state();
        }
        prop_assert!(state.status().is_final(), "still {:?} after 64 answers", state.status());
    }
}

fn cancel(reason: &str) -> SagaInput {
    SagaInput::Cancel(Cancel {
        saga_id: "s-1".into(),
        reason: reason.into(),
    })
}

/// A cancel while step `b`'s action is in flight: `b` may have taken effect, so it is
/// compensated (a participant's tombstone refuses the late action), then `a`; the saga
/// ends compensated with the cancel's reason, and the late reply to `b` changes nothing.
#[test]
fn a_cancel_compensates_from_the_step_in_flight() {
    let saga = three_steps(false);
    let t = begin(&saga);
    let a = command(&t);
    let t = applied(transition(&saga, t.state(), &ok(&a), 2_000));
    let b = command(&t);
    let t = applied(transition(
        &saga,
        t.state(),
        &cancel("customer asked"),
        3_000,
    ));
    let s = t.state();
    assert_eq!(s.status(), SagaStatus::Compensating);
    assert_eq!(s.reason(), Some("cancelled: customer asked"));
    assert_eq!(
        s.steps(),
        [
            StepStatus::Done,
            StepStatus::Compensating,
            StepStatus::Pending
        ]
    );
    assert!(s.history().iter().any(|h| h.event
        == HistoryEvent::Cancelled {
            reason: "customer asked".into()
        }));
    let undo_b = command(&t);
    assert_eq!((undo_b.step, undo_b.phase), (1, Phase::Compensation));
    // The action's reply comes late: the saga is past it.
    assert_eq!(
        transition(&saga, t.state(), &ok(&b), 3_500),
        Outcome::Ignored(Ignored::Stale)
    );
    let t = applied(transition(&saga, t.state(), &ok(&undo_b), 4_000));
    let undo_a = command(&t);
    assert_eq!((undo_a.step, undo_a.phase), (0, Phase::Compensation));
    let t = applied(transition(&saga, t.state(), &ok(&undo_a), 5_000));
    assert_eq!(t.state().status(), SagaStatus::Compensated);
    assert!(matches!(t.outbox(), [Message::Finished(f)]
        if f.status == SagaStatus::Compensated && f.reason.as_deref() == Some("cancelled: customer asked")));
}

/// A step waiting to be tried again may have taken effect on an earlier attempt (one that
/// timed out): a cancel then compensates it too.
#[test]
fn a_cancel_while_a_step_waits_for_its_retry_compensates_it() {
    let saga = three_steps(false);
    let t = begin(&saga);
    let a = command(&t);
    let t = applied(transition(
        &saga,
        t.state(),
        &err(&a, StepError::Failed("down".into())),
        2_000,
    ));
    assert!(matches!(
        t.state().cursor().map(|c| &c.waiting),
        Some(Waiting::Retry { .. })
    ));
    let t = applied(transition(&saga, t.state(), &cancel("stop"), 2_100));
    let undo_a = command(&t);
    assert_eq!((undo_a.step, undo_a.phase), (0, Phase::Compensation));
}

/// What a cancel leaves alone: a saga already compensating goes on as it is, an ended one
/// stays ended, and a step at or after the pivot cannot be undone.
#[test]
fn a_cancel_leaves_compensating_ended_and_past_pivot_sagas_alone() {
    let saga = three_steps(false);
    let t = begin(&saga);
    let a = command(&t);
    let compensating = applied(transition(
        &saga,
        t.state(),
        &err(&a, StepError::Rejected("no".into())),
        2_000,
    ));
    // Step `a` refused: nothing to undo, the saga ended at once.
    assert_eq!(
        transition(&saga, compensating.state(), &cancel("x"), 3_000),
        Outcome::Ignored(Ignored::Finished)
    );
    let t = applied(transition(&saga, t.state(), &ok(&a), 2_000));
    let b = command(&t);
    let t = applied(transition(
        &saga,
        t.state(),
        &err(&b, StepError::Rejected("no".into())),
        3_000,
    ));
    assert_eq!(t.state().status(), SagaStatus::Compensating);
    assert_eq!(
        transition(&saga, t.state(), &cancel("x"), 3_100),
        Outcome::Ignored(Ignored::Stale)
    );

    let pivoted = three_steps(true);
    let mut t = begin(&pivoted);
    for _ in 0..2 {
        let c = command(&t);
        t = applied(transition(&pivoted, t.state(), &ok(&c), 2_000));
    }
    assert_eq!(command(&t).step, 2, "the pivot is in flight");
    assert_eq!(
        transition(&pivoted, t.state(), &cancel("x"), 3_000),
        Outcome::Ignored(Ignored::PastPivot)
    );
}

/// A cancel with nothing to undo (the first step has no compensation) ends the saga in
/// the same transition.
#[test]
fn a_cancel_with_nothing_to_undo_ends_the_saga_at_once() {
    let saga = Saga::named("one", 1)
        .step(Step::new("only", remote("p", "Do"), None))
        .build()
        .unwrap();
    let t = start(&saga, "s-1", json!({}), StartMeta::default(), 1_000);
    let t = applied(transition(&saga, t.state(), &cancel("never mind"), 1_500));
    assert_eq!(t.state().status(), SagaStatus::Compensated);
    assert_eq!(t.state().steps(), [StepStatus::Uncertain]);
    assert!(matches!(t.outbox(), [Message::Finished(_)]));
}

fn redrive(state: &SagaState, reason: &str) -> SagaInput {
    SagaInput::Redrive(Redrive {
        saga_id: state.id().to_owned(),
        version: state.version(),
        reason: reason.into(),
    })
}

/// `a` done, `b` refused, then `a`'s compensation refused: the saga needs attention,
/// stopped on that compensation.
fn compensation_refused(saga: &Saga) -> (Transition, Command) {
    let t = begin(saga);
    let t = applied(transition(saga, t.state(), &ok(&command(&t)), 2_000));
    let t = applied(transition(
        saga,
        t.state(),
        &err(&command(&t), StepError::Rejected("out of stock".into())),
        3_000,
    ));
    let undo_a = command(&t);
    let t = applied(transition(
        saga,
        t.state(),
        &err(&undo_a, StepError::Rejected("refunds closed".into())),
        4_000,
    ));
    (t, undo_a)
}

/// A refused compensation, redriven: sent again from its first attempt under a new id (the
/// participant recorded its refusal under the old one), the saga compensating for the
/// reason it had; the old command's late answer changes nothing, the new one's ends the
/// saga compensated, and the same redrive again changes nothing.
#[test]
fn a_refused_compensation_is_redriven_under_a_new_id() {
    let saga = three_steps(false);
    let (t, undo_a) = compensation_refused(&saga);
    let stuck = t.state();
    assert_eq!(stuck.status(), SagaStatus::NeedsAttention);
    assert_eq!(
        stuck.halted(),
        Some(&Halted {
            step: 0,
            phase: Phase::Compensation,
            command_id: "s-1:0:c".into(),
            refused: true,
        })
    );
    let input = redrive(stuck, "refunds open again");
    let r = applied(transition(&saga, stuck, &input, 5_000));
    let s = r.state();
    assert_eq!(s.status(), SagaStatus::Compensating);
    assert!(
        s.reason().is_some_and(|r| r.contains("out of stock")),
        "{:?}",
        s.reason()
    );
    assert_eq!(s.halted(), None);
    assert_eq!(s.redrives(), 1);
    assert!(r.history().iter().any(|h| h.event
        == HistoryEvent::Redriven {
            step: 0,
            phase: Phase::Compensation,
            reason: "refunds open again".into()
        }));
    let again = command(&r);
    assert_eq!(
        (
            again.step,
            again.phase,
            again.attempt,
            again.command_id.as_str()
        ),
        (0, Phase::Compensation, 1, "s-1:0:c:r1")
    );
    assert_eq!(
        again.command_id,
        redriven_command_id("s-1", 0, Phase::Compensation, 1)
    );
    assert!(
        r.outbox().iter().any(|m| matches!(m, Message::Timer(_))),
        "a timeout for the redriven attempt"
    );
    // The refusal under the old id, delivered again, answers another command.
    assert_eq!(
        transition(
            &saga,
            s,
            &err(&undo_a, StepError::Rejected("refunds closed".into())),
            5_100
        ),
        Outcome::Ignored(Ignored::Unknown)
    );
    assert_eq!(
        transition(&saga, s, &input, 5_100),
        Outcome::Ignored(Ignored::Stale)
    );
    let done = applied(transition(&saga, s, &ok(&again), 6_000));
    assert_eq!(done.state().status(), SagaStatus::Compensated);
    assert!(matches!(done.outbox(), [Message::Finished(f)]
        if f.status == SagaStatus::Compensated && f.reason.as_deref().is_some_and(|r| r.contains("out of stock"))));
    assert_eq!(
        transition(&saga, done.state(), &input, 6_100),
        Outcome::Ignored(Ignored::Finished)
    );
}

/// A redriven command refused again needs attention again, and the next redrive sends it
/// under yet another id; its retries keep the id they were sent with.
#[test]
fn each_redrive_of_a_refusal_takes_a_new_id_and_its_retries_keep_it() {
    let saga = three_steps(false);
    let (t, _) = compensation_refused(&saga);
    let r1 = applied(transition(
        &saga,
        t.state(),
        &redrive(t.state(), "1"),
        5_000,
    ));
    let c1 = command(&r1);
    let failed = applied(transition(
        &saga,
        r1.state(),
        &err(&c1, StepError::Failed("db".into())),
        5_100,
    ));
    let retry = match failed.state().cursor().map(|c| c.waiting) {
        Some(Waiting::Retry { due_ms }) => due_ms,
        other => panic!("{other:?}"),
    };
    let retried = applied(transition(
        &saga,
        failed.state(),
        &SagaInput::Timer(Timer {
            saga_id: "s-1".into(),
            kind: TimerKind::Retry,
            step: 0,
            phase: Phase::Compensation,
            attempt: 2,
            due_ms: retry,
        }),
        retry,
    ));
    let c2 = command(&retried);
    assert_eq!((c2.attempt, c2.command_id.as_str()), (2, "s-1:0:c:r1"));
    let refused = applied(transition(
        &saga,
        retried.state(),
        &err(&c2, StepError::Rejected("still closed".into())),
        retry + 10,
    ));
    assert_eq!(refused.state().status(), SagaStatus::NeedsAttention);
    let r2 = applied(transition(
        &saga,
        refused.state(),
        &redrive(refused.state(), "2"),
        retry + 20,
    ));
    assert_eq!(command(&r2).command_id, "s-1:0:c:r2");
    assert_eq!(r2.state().redrives(), 2);
}

/// A compensation whose attempts ran out may have taken effect: redriven, it keeps its id,
/// so a participant idempotent by command id answers it without undoing twice.
#[test]
fn a_compensation_out_of_attempts_is_redriven_under_its_own_id() {
    let saga = three_steps(false);
    let t = begin(&saga);
    let t = applied(transition(&saga, t.state(), &ok(&command(&t)), 2_000));
    let mut t = applied(transition(
        &saga,
        t.state(),
        &err(&command(&t), StepError::Rejected("no".into())),
        3_000,
    ));
    // Two attempts of `a`'s compensation, each failing.
    for attempt in 1..=2 {
        let c = command(&t);
        assert_eq!(c.attempt, attempt);
        t = applied(transition(
            &saga,
            t.state(),
            &err(&c, StepError::Failed("db".into())),
            3_100,
        ));
        if let Some(Waiting::Retry { due_ms }) = t.state().cursor().map(|c| c.waiting) {
            let timer = Timer {
                saga_id: "s-1".into(),
                kind: TimerKind::Retry,
                step: 0,
                phase: Phase::Compensation,
                attempt: 2,
                due_ms,
            };
            t = applied(transition(
                &saga,
                t.state(),
                &SagaInput::Timer(timer),
                due_ms,
            ));
        }
    }
    let stuck = t.state();
    assert_eq!(stuck.status(), SagaStatus::NeedsAttention);
    assert_eq!(stuck.halted().map(Halted::resend), Some(true));
    let r = applied(transition(&saga, stuck, &redrive(stuck, "db back"), 9_000));
    let c = command(&r);
    assert_eq!(
        (c.phase, c.attempt, c.command_id.as_str()),
        (Phase::Compensation, 1, "s-1:0:c")
    );
}

/// After the pivot a saga only goes forward: a step after it that was refused is redriven
/// under a new id and the saga completes; a pivot whose attempts ran out is sent again
/// under its own id, and refused then, the saga compensates the steps before it.
#[test]
fn a_step_after_the_pivot_is_redriven_forward() {
    let saga = pivot_tried_once();
    let t = begin(&saga);
    let t = applied(transition(&saga, t.state(), &ok(&command(&t)), 2_000));
    let b = applied(transition(&saga, t.state(), &ok(&command(&t)), 2_100));
    let refused = applied(transition(
        &saga,
        b.state(),
        &err(&command(&b), StepError::Rejected("no address".into())),
        2_200,
    ));
    assert_eq!(refused.state().status(), SagaStatus::NeedsAttention);
    let r = applied(transition(
        &saga,
        refused.state(),
        &redrive(refused.state(), "address fixed"),
        3_000,
    ));
    assert_eq!(r.state().status(), SagaStatus::Running);
    assert_eq!(r.state().reason(), None);
    let c = command(&r);
    assert_eq!(
        (c.step, c.phase, c.command_id.as_str()),
        (2, Phase::Action, "s-1:2:a:r1")
    );
    let done = applied(transition(&saga, r.state(), &ok(&c), 3_100));
    assert_eq!(done.state().status(), SagaStatus::Completed);

    // The pivot out of attempts.
    let uncertain = applied(transition(
        &saga,
        t.state(),
        &err(&command(&t), StepError::Failed("?".into())),
        2_100,
    ));
    assert_eq!(uncertain.state().status(), SagaStatus::NeedsAttention);
    let r = applied(transition(
        &saga,
        uncertain.state(),
        &redrive(uncertain.state(), "look again"),
        3_000,
    ));
    let pivot = command(&r);
    assert_eq!((pivot.step, pivot.command_id.as_str()), (1, "s-1:1:a"));
    let compensating = applied(transition(
        &saga,
        r.state(),
        &err(&pivot, StepError::Rejected("never got it".into())),
        3_100,
    ));
    assert_eq!(compensating.state().status(), SagaStatus::Compensating);
    assert_eq!(command(&compensating).step, 0);
}

/// What a redrive leaves alone: a running saga, an ended one, a saga needing attention at
/// another version than the redrive names, and one stopped by an input too large to store
/// (the participant would answer the same again).
#[test]
fn a_redrive_leaves_other_sagas_and_versions_alone() {
    let saga = three_steps(false);
    let t = begin(&saga);
    assert_eq!(
        transition(&saga, t.state(), &redrive(t.state(), "x"), 1_500),
        Outcome::Ignored(Ignored::Stale)
    );
    let (stuck, _) = compensation_refused(&saga);
    let stale = SagaInput::Redrive(Redrive {
        saga_id: "s-1".into(),
        version: stuck.state().version() - 1,
        reason: "x".into(),
    });
    assert_eq!(
        transition(&saga, stuck.state(), &stale, 5_000),
        Outcome::Ignored(Ignored::Stale)
    );
    let other = SagaInput::Redrive(Redrive {
        saga_id: "s-2".into(),
        version: stuck.state().version(),
        reason: "x".into(),
    });
    assert_eq!(
        transition(&saga, stuck.state(), &other, 5_000),
        Outcome::Ignored(Ignored::Unknown)
    );
    let parked = super::transition::park(&saga, t.state(), "too large".into(), 2_000);
    assert_eq!(parked.state().status(), SagaStatus::NeedsAttention);
    assert_eq!(parked.state().halted(), None);
    assert_eq!(
        transition(&saga, parked.state(), &redrive(parked.state(), "x"), 3_000),
        Outcome::Ignored(Ignored::NotRedrivable)
    );
}

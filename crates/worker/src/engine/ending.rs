//! How a message ends: a pure function of what the parser said, how the reconciles of its keys
//! ended, its receive count, its waiting attributes and the time. The consumer only carries the
//! ending out (delete, hide for a while, send a delayed copy, dead-letter).

use std::time::Duration;

use registrar_core::backoff::Backoff;
use registrar_core::{ErrorClass, PortError};

use super::KeyOutcome;

/// What the parser made of the message.
#[derive(Debug, Clone, Copy)]
pub enum Parsed<'a> {
    /// Unusable (malformed, not CloudTrail, no identifier...): its reason code and text.
    Rejected { code: &'static str, reason: &'a str },
    /// Not for us (a failed or read-only call, an event name we do not handle).
    Ignored,
    /// Every key it names was reconciled to a settled end by a run that began after it was
    /// queued: nothing to do.
    Superseded,
    /// Its keys were reconciled; how each ended.
    Reconciled(&'a [KeyOutcome]),
}

/// Where a waiting message stands: since when its resource has been waited for (Unix ms; the
/// time of the first check) and how many checks it has had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waited {
    pub since_ms: u64,
    pub checks: u32,
}

/// The settings endings depend on.
#[derive(Debug, Clone, Copy)]
pub struct EndingPolicy {
    /// Backoff of transient failures, by the message's receive count (kept by SQS).
    pub retry: Backoff,
    /// Backoff of re-checks of a resource that is not READY yet, by checks so far.
    pub wait: Backoff,
    /// After this long waiting, the message is dead-lettered.
    pub max_wait: Duration,
}

/// How a message ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// Done (converged, ignored or superseded): deleted.
    Delete,
    /// A transient failure: hidden for `after`, then received again.
    Retry { after: Duration, error: PortError },
    /// Not READY yet: a copy is sent with `delay` (the receive count is not burned) carrying
    /// where the waiting stands, and the original deleted.
    Recheck {
        delay: Duration,
        waited: Waited,
        status: String,
    },
    /// Given up on: moved to the dead-letter queue with a reason code and text.
    DeadLetter { code: &'static str, reason: String },
}

/// The ending of a message. `waited` is what its attributes say (`None` the first time it
/// waits), `now_ms` the time now and `jitter` in `0.0..1.0`. Waiting is counted from the first
/// check that found the resource not ready, not from when the message was queued: a message
/// that sat in a backlog longer than `max_wait` still gets its checks.
pub fn ending(
    parsed: Parsed<'_>,
    receive_count: u32,
    waited: Option<Waited>,
    now_ms: u64,
    jitter: f64,
    policy: EndingPolicy,
) -> Ending {
    let outcomes = match parsed {
        Parsed::Rejected { code, reason } => {
            return Ending::DeadLetter {
                code,
                reason: reason.to_owned(),
            };
        }
        Parsed::Ignored | Parsed::Superseded => return Ending::Delete,
        Parsed::Reconciled(outcomes) => outcomes,
    };
    let failed = |class: ErrorClass| {
        outcomes.iter().find_map(|o| match o {
            KeyOutcome::Failed(e) if e.class == class => Some(e.clone()),
            _ => None,
        })
    };
    // A terminal error (or a conflict the worker cannot resolve) will not go away by retrying.
    if let Some(e) = failed(ErrorClass::Terminal).or_else(|| failed(ErrorClass::Conflict)) {
        return Ending::DeadLetter {
            code: "terminal",
            reason: e.to_string(),
        };
    }
    if let Some(error) = failed(ErrorClass::Transient) {
        return Ending::Retry {
            after: policy.retry.delay(receive_count.max(1), jitter),
            error,
        };
    }
    let Some(status) = outcomes.iter().find_map(|o| match o {
        KeyOutcome::Waiting(s) => Some(s.clone()),
        _ => None,
    }) else {
        return Ending::Delete;
    };
    let waited = Waited {
        since_ms: waited.map_or(now_ms, |w| w.since_ms),
        checks: waited.map_or(0, |w| w.checks) + 1,
    };
    if Duration::from_millis(now_ms.saturating_sub(waited.since_ms)) > policy.max_wait {
        return Ending::DeadLetter {
            code: "gave-up-waiting",
            reason: format!(
                "gave up waiting: resource still {status} after {} checks",
                waited.checks
            ),
        };
    }
    Ending::Recheck {
        delay: policy.wait.delay(waited.checks, jitter),
        waited,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn policy() -> EndingPolicy {
        EndingPolicy {
            retry: Backoff {
                base: 5 * S,
                cap: 300 * S,
            },
            wait: Backoff {
                base: 10 * S,
                cap: 300 * S,
            },
            max_wait: 3600 * S,
        }
    }

    fn failed(class: ErrorClass) -> KeyOutcome {
        KeyOutcome::Failed(PortError::new("registry", "register", class, "it failed"))
    }

    fn end(
        outcomes: &[KeyOutcome],
        receive_count: u32,
        waited: Option<Waited>,
        now_ms: u64,
    ) -> Ending {
        ending(
            Parsed::Reconciled(outcomes),
            receive_count,
            waited,
            now_ms,
            0.0,
            policy(),
        )
    }

    #[test]
    fn unusable_messages_are_dead_lettered_at_once_with_their_reason() {
        let e = ending(
            Parsed::Rejected {
                code: "malformed",
                reason: "not JSON",
            },
            1,
            None,
            0,
            0.5,
            policy(),
        );
        assert_eq!(
            e,
            Ending::DeadLetter {
                code: "malformed",
                reason: "not JSON".into()
            }
        );
    }

    #[test]
    fn ignored_superseded_and_converged_messages_are_deleted() {
        for parsed in [
            Parsed::Ignored,
            Parsed::Superseded,
            Parsed::Reconciled(&[KeyOutcome::Done(Vec::new())]),
        ] {
            assert_eq!(ending(parsed, 3, None, 0, 0.5, policy()), Ending::Delete);
        }
    }

    #[test]
    fn transient_failures_back_off_by_the_receive_count_up_to_the_cap() {
        let after = |n| match end(&[failed(ErrorClass::Transient)], n, None, 0) {
            Ending::Retry { after, .. } => after,
            other => panic!("{other:?}"),
        };
        assert!(
            after(1) < after(2) && after(2) < after(3),
            "{:?} {:?} {:?}",
            after(1),
            after(2),
            after(3)
        );
        assert_eq!(after(1), policy().retry.delay(1, 0.0));
        assert!(after(30) <= 300 * S);
        assert_eq!(
            after(0),
            after(1),
            "a count SQS did not give counts as the first"
        );
    }

    #[test]
    fn a_terminal_error_or_conflict_wins_over_transient_ones() {
        let terminal = end(
            &[failed(ErrorClass::Transient), failed(ErrorClass::Terminal)],
            1,
            None,
            0,
        );
        assert!(
            matches!(
                terminal,
                Ending::DeadLetter {
                    code: "terminal",
                    ..
                }
            ),
            "{terminal:?}"
        );
        let conflict = end(&[failed(ErrorClass::Conflict)], 1, None, 0);
        assert!(
            matches!(
                conflict,
                Ending::DeadLetter {
                    code: "terminal",
                    ..
                }
            ),
            "{conflict:?}"
        );
    }

    #[test]
    fn a_transient_failure_wins_over_waiting() {
        let e = end(
            &[
                KeyOutcome::Waiting("CREATING".into()),
                failed(ErrorClass::Transient),
            ],
            1,
            None,
            0,
        );
        assert!(matches!(e, Ending::Retry { .. }), "{e:?}");
    }

    #[test]
    fn waiting_rechecks_with_a_growing_delay_from_the_first_check() {
        let waiting = [
            KeyOutcome::Waiting("CREATING".into()),
            KeyOutcome::Done(Vec::new()),
        ];
        let Ending::Recheck {
            delay: first,
            waited,
            status,
        } = end(&waiting, 1, None, 5_000)
        else {
            panic!("a recheck");
        };
        assert_eq!(status, "CREATING");
        assert_eq!(
            waited,
            Waited {
                since_ms: 5_000,
                checks: 1
            },
            "since the first check (the message may have sat in a backlog)"
        );
        let Ending::Recheck {
            delay: second,
            waited: again,
            ..
        } = end(&waiting, 1, Some(waited), 60_000)
        else {
            panic!("a recheck");
        };
        assert_eq!(
            again,
            Waited {
                since_ms: 5_000,
                checks: 2
            },
            "the start is kept"
        );
        assert!(second > first, "{first:?} then {second:?}");
    }

    #[test]
    fn a_message_from_an_old_backlog_is_checked_before_waiting_can_run_out() {
        // Queued two hours ago (past the one-hour limit), first found waiting now.
        let waiting = [KeyOutcome::Waiting("lease held by another worker".into())];
        let e = end(&waiting, 1, None, 2 * 3_600_000);
        assert!(matches!(e, Ending::Recheck { .. }), "{e:?}");
    }

    #[test]
    fn waiting_past_the_limit_gives_up_naming_the_status_and_the_checks() {
        let waiting = [KeyOutcome::Waiting("UPDATING".into())];
        let at_limit = 1_000 + 3_600_000;
        assert!(matches!(
            end(
                &waiting,
                1,
                Some(Waited {
                    since_ms: 1_000,
                    checks: 7
                }),
                at_limit
            ),
            Ending::Recheck { .. }
        ));
        let e = end(
            &waiting,
            1,
            Some(Waited {
                since_ms: 1_000,
                checks: 7,
            }),
            at_limit + 1,
        );
        assert_eq!(
            e,
            Ending::DeadLetter {
                code: "gave-up-waiting",
                reason: "gave up waiting: resource still UPDATING after 8 checks".into(),
            }
        );
    }
}

//! The decisions of the fallback chain, as pure functions of the chain's state and an outcome:
//! after a failed attempt, retry the target (another instance now, or the same one after a
//! backoff), move down to the next target, or stop; and when every remaining target is
//! blocked, wait (until when) or give up (with which error).
//!
//! Nothing here sleeps, calls a provider or records anything: [`super::walk`] and
//! [`super::acquire`] do that with the answers. So each rule is a table test below, without
//! tokio, HTTP or the mock.
//!
//! The rules, by error class:
//! - bad request, the caller's deadline, cancellation, a routing or config error, an internal
//!   error: stop. A content filter stops too, unless the group falls back on it.
//! - context window: only instances with a larger window from now on (on this target if it has
//!   one, else further down).
//! - 429, exhausted quota, rejected key, unknown model: another instance of the target now;
//!   after the last one, move down at once (the instance itself cools down or is marked failed
//!   by its lease). On the last target a 429 is tried again once the pause is over: a backoff
//!   without Retry-After, the Retry-After itself when it is within `max_delay`.
//! - 5xx, overload, timeout, connection, bad body, cut stream: another instance now; after the
//!   last one, the same target again after a backoff of at most `max_delay`. A Retry-After
//!   above `max_delay` moves down at once instead (the instance cools down for it).
//! - moving down waits `retry_delay` only if the group set one.
//!
//! Every try counts against the target's `max_tries`; no pause may reach past the deadline.

use std::time::{Duration, Instant};

use crate::config::RetryConfig;
use crate::engine::chain::backoff::backoff_ceiling;
use crate::engine::selector::{Blocked, Filter};
use crate::error::{ErrorKind, TimeoutKind};

/// What the policy may read about the targets of a plan.
pub trait ChainView {
    /// Number of targets.
    fn targets(&self) -> usize;
    /// Tries allowed on a target (first try plus retries).
    fn max_tries(&self, target: usize) -> u32;
    /// Instances of a target.
    fn instances(&self, target: usize) -> usize;
    /// Context window of an instance of a target.
    fn context_window(&self, target: usize, index: usize) -> u32;
}

/// The chain-wide rules of a plan.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rules {
    /// Pause before moving to the next target.
    pub retry_delay: Duration,
    /// Route around `ContentFiltered` instead of surfacing it.
    pub content_filter_fallback: bool,
    /// After a failure on a provider, prefer instances of other providers.
    pub provider_failover: bool,
}

/// A failed attempt, as the policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct Failure<'a> {
    /// The error class.
    pub kind: ErrorKind,
    /// Which timeout, if it was one.
    pub timeout: Option<TimeoutKind>,
    /// The provider's Retry-After, if any.
    pub retry_after: Option<Duration>,
    /// Index of the instance within the current target.
    pub index: usize,
    /// Its provider.
    pub provider: &'a str,
    /// Its retry settings.
    pub retry: RetryConfig,
    /// Time left before the call's deadline (`None`: no deadline).
    pub remaining: Option<Duration>,
    /// A uniform sample in `[0, 1]` for the backoff's jitter.
    pub jitter: f64,
}

/// What the chain does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Try the current target again after `pause` (zero: another instance at once).
    Retry {
        /// How long to wait first.
        pause: Duration,
    },
    /// The chain moved to the next target; start it after `pause`.
    Next {
        /// How long to wait first.
        pause: Duration,
    },
    /// Give up: the call ends with the last error.
    Stop,
}

/// The state of one call's walk down its chain.
#[derive(Clone, Debug, Default)]
pub struct ChainState {
    /// The current target.
    pub pos: usize,
    /// Attempts made on the current target.
    pub tries: u32,
    /// Instances of the current target that failed this call.
    pub tried: Vec<usize>,
    /// Providers that failed this call (for provider failover).
    pub failed_providers: Vec<String>,
    /// Only instances with a larger context window from now on.
    pub min_context: Option<u32>,
}

impl ChainState {
    /// A walk at the first target.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `target` has an instance the chain's rules admit.
    pub fn eligible(&self, view: &impl ChainView, target: usize) -> bool {
        let n = view.instances(target);
        n > 0 && self.min_context.is_none_or(|min| (0..n).any(|i| view.context_window(target, i) > min))
    }

    /// The selection filter for `target` (preferences only apply on the current target, except
    /// the providers to avoid, which apply everywhere).
    pub fn filter(&self, target: usize) -> Filter<'_> {
        Filter { min_context: self.min_context, avoid: if target == self.pos { &self.tried } else { &[] }, avoid_providers: &self.failed_providers }
    }

    /// The call was served by a later target (the ones before it were blocked): continue
    /// from there.
    pub fn moved_to(&mut self, target: usize) {
        if target != self.pos {
            self.pos = target;
            self.tries = 0;
            self.tried.clear();
        }
    }

    /// An attempt starts on the current target.
    pub fn started_attempt(&mut self) {
        self.tries += 1;
    }

    fn has_untried(&self, view: &impl ChainView) -> bool {
        let n = view.instances(self.pos);
        (0..n).any(|i| !self.tried.contains(&i) && self.min_context.is_none_or(|m| view.context_window(self.pos, i) > m))
    }

    fn tries_left(&self, view: &impl ChainView) -> bool {
        self.tries < view.max_tries(self.pos).max(1)
    }

    /// The next target with an instance the chain's rules admit.
    fn later_target(&self, view: &impl ChainView) -> Option<usize> {
        (self.pos + 1..view.targets()).find(|&t| self.eligible(view, t))
    }

    /// Move to the next eligible target, waiting `rules.retry_delay` if set and it fits.
    fn next(&mut self, view: &impl ChainView, rules: &Rules, remaining: Option<Duration>) -> Step {
        let Some(t) = self.later_target(view) else {
            return Step::Stop;
        };
        let pause = rules.retry_delay;
        if !pause.is_zero() && remaining.is_some_and(|r| pause >= r) {
            return Step::Stop;
        }
        self.pos = t;
        self.tries = 0;
        self.tried.clear();
        Step::Next { pause }
    }

    /// Another instance of this target now if one is left and tries remain, else `fallback`.
    fn other_instance_or(&mut self, view: &impl ChainView, fallback: impl FnOnce(&mut Self) -> Step) -> Step {
        if self.has_untried(view) && self.tries_left(view) {
            Step::Retry { pause: Duration::ZERO }
        } else {
            fallback(self)
        }
    }

    /// Same target again after `pause`, if tries remain and the pause leaves time for the
    /// attempt; else the next target.
    fn again_after(&mut self, view: &impl ChainView, rules: &Rules, pause: Duration, remaining: Option<Duration>) -> Step {
        if self.tries_left(view) && remaining.is_none_or(|r| pause < r) {
            Step::Retry { pause }
        } else {
            self.next(view, rules, remaining)
        }
    }

    /// What to do after a failed attempt on the current target.
    pub fn after_failure(&mut self, view: &impl ChainView, rules: &Rules, f: &Failure<'_>) -> Step {
        if f.timeout == Some(TimeoutKind::Deadline) {
            return Step::Stop;
        }
        if !self.tried.contains(&f.index) {
            self.tried.push(f.index);
        }
        let backoff = |tries: u32| {
            let ceiling = backoff_ceiling(tries.saturating_sub(1), f.retry.base_delay, f.retry.max_delay);
            ceiling.mul_f64(f.jitter.clamp(0.0, 1.0))
        };
        match f.kind {
            ErrorKind::BadRequest | ErrorKind::Cancelled | ErrorKind::Routing | ErrorKind::Config | ErrorKind::Internal => Step::Stop,
            ErrorKind::ContentFiltered if !rules.content_filter_fallback => Step::Stop,
            ErrorKind::ContentFiltered => self.next(view, rules, f.remaining),
            ErrorKind::ContextWindowExceeded => {
                // The window of the instance that refused (every instance of the target
                // with a window this size or smaller would refuse too).
                let n = view.context_window(self.pos, f.index);
                self.min_context = Some(self.min_context.map_or(n, |m| m.max(n)));
                self.other_instance_or(view, |s| s.next(view, rules, f.remaining))
            }
            ErrorKind::RateLimited => self.other_instance_or(view, |s| {
                // The instance now cools down (Retry-After, or the model's 429 cooldown):
                // another target serves sooner if there is one. On the last target, try again
                // once the pause is over: after a backoff without Retry-After; with one, the
                // cooldown itself holds the next try back (unless it is longer than
                // `max_delay`, then give up).
                if s.later_target(view).is_some() {
                    return s.next(view, rules, f.remaining);
                }
                match f.retry_after {
                    None => {
                        let pause = backoff(s.tries);
                        s.again_after(view, rules, pause, f.remaining)
                    }
                    Some(ra) if ra <= f.retry.max_delay => s.again_after(view, rules, Duration::ZERO, f.remaining.map(|r| r.saturating_sub(ra))),
                    Some(_) => Step::Stop,
                }
            }),
            ErrorKind::QuotaExceeded | ErrorKind::AuthError | ErrorKind::ModelNotFound => self.other_instance_or(view, |s| s.next(view, rules, f.remaining)),
            ErrorKind::ServerError
            | ErrorKind::Overloaded
            | ErrorKind::Timeout
            | ErrorKind::ConnectionError
            | ErrorKind::InvalidResponse
            | ErrorKind::StreamInterrupted => {
                if rules.provider_failover && !self.failed_providers.iter().any(|p| p == f.provider) {
                    self.failed_providers.push(f.provider.to_string());
                }
                self.other_instance_or(view, |s| match f.retry_after {
                    Some(ra) if ra > f.retry.max_delay => s.next(view, rules, f.remaining),
                    ra => {
                        let pause = backoff(s.tries).max(ra.unwrap_or_default());
                        s.again_after(view, rules, pause, f.remaining)
                    }
                })
            }
            ErrorKind::PoolExhausted | ErrorKind::QueueTimeout | ErrorKind::CircuitOpen | ErrorKind::AllTargetsFailed => self.next(view, rules, f.remaining),
        }
    }
}

/// When every remaining target is blocked: wait (until the instant given, or for a wake-up
/// from a limit's queue), or give up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Sleep until a limit wakes the caller, or until this instant (the earliest a time-based
    /// block lifts, a breaker admits probes, or the deadline), whichever comes first.
    Until(Option<Instant>),
    /// Nothing could serve within the deadline.
    GiveUp(GiveUp),
}

/// Why a blocked call gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// Every admitted instance has its breaker open.
    CircuitOpen,
    /// Rate limits or cooldowns lift only after the deadline; `retry_after` says when.
    RateLimited {
        /// Time until the earliest lifts.
        retry_after: Duration,
    },
    /// No instance the call may use exists (filtered out, or the targets are empty).
    NoInstance,
}

/// Decide what a call does when every target it may still use is blocked (`blocked`, one per
/// remaining target).
pub fn when_blocked(blocked: &[Blocked], now: Instant, deadline: Option<Instant>) -> Wait {
    let earliest = |f: fn(&Blocked) -> Option<Instant>| blocked.iter().filter_map(f).min();
    let timed = [earliest(|b| b.rate_until), earliest(|b| b.cool_until)].into_iter().flatten().min();
    let recheck = earliest(|b| b.down_until).filter(|t| deadline.is_none_or(|d| *t < d));
    let busy = blocked.iter().any(|b| b.busy > 0);
    let soonest = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    if busy {
        return Wait::Until(soonest(soonest(timed, recheck), deadline));
    }
    if let Some(t) = timed {
        if deadline.is_none_or(|d| t < d) {
            return Wait::Until(soonest(Some(t), recheck));
        }
        return Wait::GiveUp(GiveUp::RateLimited { retry_after: t.saturating_duration_since(now) });
    }
    if let Some(t) = earliest(|b| b.cool_beyond) {
        return Wait::GiveUp(GiveUp::RateLimited { retry_after: t.saturating_duration_since(now) });
    }
    let admitted: u32 = blocked.iter().map(|b| b.admitted).sum();
    if admitted > 0 && blocked.iter().all(|b| b.down == b.admitted) {
        return Wait::GiveUp(GiveUp::CircuitOpen);
    }
    Wait::GiveUp(GiveUp::NoInstance)
}

#[cfg(all(test, not(echelon_loom)))]
mod tests {
    use super::*;

    /// Targets as lists of context windows; `tries` per target.
    struct View(Vec<(Vec<u32>, u32)>);

    impl ChainView for View {
        fn targets(&self) -> usize {
            self.0.len()
        }
        fn max_tries(&self, t: usize) -> u32 {
            self.0[t].1
        }
        fn instances(&self, t: usize) -> usize {
            self.0[t].0.len()
        }
        fn context_window(&self, t: usize, i: usize) -> u32 {
            self.0[t].0[i]
        }
    }

    const MS: Duration = Duration::from_millis(1);

    fn retry_cfg() -> RetryConfig {
        RetryConfig { max_retries: 2, base_delay: 100 * MS, max_delay: Duration::from_secs(2) }
    }

    fn failure(kind: ErrorKind, index: usize) -> Failure<'static> {
        Failure { kind, timeout: None, retry_after: None, index, provider: "p", retry: retry_cfg(), remaining: None, jitter: 1.0 }
    }

    fn run(view: &View, rules: &Rules, state: &mut ChainState, f: Failure<'_>) -> Step {
        state.started_attempt();
        state.after_failure(view, rules, &f)
    }

    #[test]
    fn request_faults_stop_the_chain() {
        let view = View(vec![(vec![1000, 1000], 3), (vec![1000], 1)]);
        for kind in [ErrorKind::BadRequest, ErrorKind::Cancelled, ErrorKind::Routing, ErrorKind::Config, ErrorKind::Internal, ErrorKind::ContentFiltered] {
            let mut s = ChainState::new();
            assert_eq!(run(&view, &Rules::default(), &mut s, failure(kind, 0)), Step::Stop, "{kind}");
        }
        let mut s = ChainState::new();
        let mut f = failure(ErrorKind::Timeout, 0);
        f.timeout = Some(TimeoutKind::Deadline);
        assert_eq!(run(&view, &Rules::default(), &mut s, f), Step::Stop, "the caller's deadline stops");
        let rules = Rules { content_filter_fallback: true, ..Rules::default() };
        let mut s = ChainState::new();
        assert_eq!(run(&view, &rules, &mut s, failure(ErrorKind::ContentFiltered, 0)), Step::Next { pause: Duration::ZERO });
        assert_eq!(s.pos, 1);
    }

    #[test]
    fn server_errors_try_another_instance_then_back_off_within_max_delay_then_move_down() {
        let view = View(vec![(vec![1000, 1000], 3), (vec![1000], 1)]);
        let rules = Rules::default();
        let mut s = ChainState::new();
        assert_eq!(run(&view, &rules, &mut s, failure(ErrorKind::ServerError, 0)), Step::Retry { pause: Duration::ZERO });
        assert_eq!(s.filter(0).avoid, &[0]);
        // Both tried: back off (jitter 1.0 = the full ceiling for the 2nd try: 200 ms).
        assert_eq!(run(&view, &rules, &mut s, failure(ErrorKind::ServerError, 1)), Step::Retry { pause: 200 * MS });
        // Third try used up the target.
        assert_eq!(run(&view, &rules, &mut s, failure(ErrorKind::ServerError, 0)), Step::Next { pause: Duration::ZERO });
        assert_eq!((s.pos, s.tries, s.tried.len()), (1, 0, 0));
        assert_eq!(run(&view, &rules, &mut s, failure(ErrorKind::ServerError, 0)), Step::Stop, "end of the chain");
    }

    #[test]
    fn a_retry_after_above_max_delay_moves_down_at_once_and_one_below_is_a_floor() {
        let view = View(vec![(vec![1000], 3), (vec![1000], 1)]);
        let rules = Rules::default();
        let mut s = ChainState::new();
        let mut f = failure(ErrorKind::ServerError, 0);
        f.retry_after = Some(Duration::from_secs(600));
        assert_eq!(run(&view, &rules, &mut s, f), Step::Next { pause: Duration::ZERO }, "never sleeps 600 s on one instance");
        let mut s = ChainState::new();
        let mut f = failure(ErrorKind::ServerError, 0);
        f.retry_after = Some(Duration::from_millis(1500));
        f.jitter = 0.0;
        assert_eq!(run(&view, &rules, &mut s, f), Step::Retry { pause: 1500 * MS });
    }

    #[test]
    fn no_pause_reaches_past_the_deadline() {
        let view = View(vec![(vec![1000], 3), (vec![1000], 1)]);
        let mut s = ChainState::new();
        let mut f = failure(ErrorKind::ServerError, 0);
        f.remaining = Some(50 * MS);
        assert_eq!(run(&view, &Rules::default(), &mut s, f), Step::Next { pause: Duration::ZERO }, "a 100 ms backoff does not fit 50 ms: move on");
        let rules = Rules { retry_delay: Duration::from_secs(1), ..Rules::default() };
        let mut s = ChainState::new();
        let mut f = failure(ErrorKind::QuotaExceeded, 0);
        f.remaining = Some(500 * MS);
        assert_eq!(run(&view, &rules, &mut s, f), Step::Stop, "the configured retry_delay does not fit either");
    }

    #[test]
    fn moving_down_pauses_only_when_retry_delay_is_configured() {
        let view = View(vec![(vec![1000], 1), (vec![1000], 1)]);
        let mut s = ChainState::new();
        assert_eq!(run(&view, &Rules::default(), &mut s, failure(ErrorKind::Overloaded, 0)), Step::Next { pause: Duration::ZERO });
        let rules = Rules { retry_delay: 250 * MS, ..Rules::default() };
        let mut s = ChainState::new();
        assert_eq!(run(&view, &rules, &mut s, failure(ErrorKind::Overloaded, 0)), Step::Next { pause: 250 * MS });
    }

    #[test]
    fn rate_limits_rotate_instances_then_move_down() {
        let view = View(vec![(vec![1000, 1000], 3), (vec![1000], 1)]);
        let rules = Rules::default();
        let mut s = ChainState::new();
        assert_eq!(run(&view, &rules, &mut s, failure(ErrorKind::RateLimited, 0)), Step::Retry { pause: Duration::ZERO });
        assert_eq!(
            run(&view, &rules, &mut s, failure(ErrorKind::RateLimited, 1)),
            Step::Next { pause: Duration::ZERO },
            "the cooling target is not waited for while the next one can serve"
        );
        let mut s = ChainState::new();
        let mut f = failure(ErrorKind::RateLimited, 0);
        f.retry_after = Some(Duration::from_secs(30));
        s.tried = vec![1];
        s.started_attempt();
        assert_eq!(s.after_failure(&view, &rules, &f), Step::Next { pause: Duration::ZERO });
    }

    #[test]
    fn on_the_last_target_a_429_is_retried_once_its_pause_is_over() {
        let view = View(vec![(vec![1000], 3)]);
        let rules = Rules::default();
        let mut s = ChainState::new();
        assert_eq!(run(&view, &rules, &mut s, failure(ErrorKind::RateLimited, 0)), Step::Retry { pause: 100 * MS }, "backoff without Retry-After");
        let mut s = ChainState::new();
        let mut f = failure(ErrorKind::RateLimited, 0);
        f.retry_after = Some(Duration::from_secs(1));
        assert_eq!(run(&view, &rules, &mut s, f), Step::Retry { pause: Duration::ZERO }, "the cooldown holds the next try back");
        let mut s = ChainState::new();
        f.retry_after = Some(Duration::from_secs(1));
        f.remaining = Some(Duration::from_millis(900));
        assert_eq!(run(&view, &rules, &mut s, f), Step::Stop, "its Retry-After ends after the deadline");
        let mut s = ChainState::new();
        f.retry_after = Some(Duration::from_secs(600));
        f.remaining = None;
        assert_eq!(run(&view, &rules, &mut s, f), Step::Stop, "longer than max_delay");
    }

    #[test]
    fn quota_auth_and_unknown_models_never_retry_the_same_instance() {
        let view = View(vec![(vec![1000, 1000], 5), (vec![1000], 1)]);
        for kind in [ErrorKind::QuotaExceeded, ErrorKind::AuthError, ErrorKind::ModelNotFound] {
            let mut s = ChainState::new();
            assert_eq!(run(&view, &Rules::default(), &mut s, failure(kind, 0)), Step::Retry { pause: Duration::ZERO }, "{kind}");
            assert_eq!(run(&view, &Rules::default(), &mut s, failure(kind, 1)), Step::Next { pause: Duration::ZERO }, "{kind}");
        }
    }

    #[test]
    fn context_window_errors_go_to_larger_models_only() {
        let view = View(vec![(vec![1000, 1000, 8000], 3), (vec![4000], 1), (vec![100_000], 1)]);
        let rules = Rules::default();
        let mut s = ChainState::new();
        assert_eq!(run(&view, &rules, &mut s, failure(ErrorKind::ContextWindowExceeded, 0)), Step::Retry { pause: Duration::ZERO });
        assert_eq!(s.filter(0).min_context, Some(1000));
        assert_eq!(run(&view, &rules, &mut s, failure(ErrorKind::ContextWindowExceeded, 2)), Step::Next { pause: Duration::ZERO });
        assert_eq!(s.pos, 2, "the 4000-token target is skipped: it is smaller than 8000");
        assert!(!s.eligible(&view, 1));
    }

    #[test]
    fn tries_are_bounded_per_target() {
        let view = View(vec![(vec![1000, 1000, 1000], 2), (vec![1000], 1)]);
        let mut s = ChainState::new();
        assert_eq!(run(&view, &Rules::default(), &mut s, failure(ErrorKind::ConnectionError, 0)), Step::Retry { pause: Duration::ZERO });
        assert_eq!(
            run(&view, &Rules::default(), &mut s, failure(ErrorKind::ConnectionError, 1)),
            Step::Next { pause: Duration::ZERO },
            "2 tries, though a third instance is untried"
        );
    }

    #[test]
    fn provider_failover_remembers_failed_providers_as_a_preference() {
        let view = View(vec![(vec![1000, 1000], 3)]);
        let rules = Rules { provider_failover: true, ..Rules::default() };
        let mut s = ChainState::new();
        let f = Failure { provider: "openai", ..failure(ErrorKind::ServerError, 0) };
        run(&view, &rules, &mut s, f);
        assert_eq!(s.filter(0).avoid_providers, &["openai".to_string()]);
        assert_eq!(s.filter(5).avoid, &[] as &[usize], "instances to avoid are per target");
    }

    #[test]
    fn moved_to_a_later_target_starts_fresh() {
        let mut s = ChainState { pos: 0, tries: 2, tried: vec![0, 1], ..Default::default() };
        s.moved_to(0);
        assert_eq!(s.tries, 2);
        s.moved_to(2);
        assert_eq!((s.pos, s.tries, s.tried.len()), (2, 0, 0));
    }

    fn blocked(busy: u32, down: u32, admitted: u32) -> Blocked {
        Blocked { admitted, busy, down, ..Default::default() }
    }

    #[test]
    fn a_busy_target_is_waited_for_with_the_earliest_timer() {
        let now = Instant::now();
        let dl = now + Duration::from_secs(10);
        let mut a = blocked(0, 1, 1);
        a.down_until = Some(now + Duration::from_secs(2));
        let b = blocked(2, 0, 2);
        assert_eq!(when_blocked(&[a, b], now, Some(dl)), Wait::Until(Some(now + Duration::from_secs(2))), "look again when the open breaker admits probes");
        a.down_until = Some(now + Duration::from_secs(60));
        assert_eq!(when_blocked(&[a, b], now, Some(dl)), Wait::Until(Some(dl)));
        assert_eq!(when_blocked(&[b], now, None), Wait::Until(None), "no deadline: wait for a release");
    }

    #[test]
    fn cooldowns_are_waited_for_only_if_they_end_before_the_deadline() {
        let now = Instant::now();
        let mut a = blocked(0, 0, 1);
        a.cool_until = Some(now + Duration::from_secs(1));
        assert_eq!(when_blocked(&[a], now, Some(now + Duration::from_secs(3))), Wait::Until(Some(now + Duration::from_secs(1))));
        a.cool_until = Some(now + Duration::from_secs(30));
        assert_eq!(when_blocked(&[a], now, Some(now + Duration::from_secs(3))), Wait::GiveUp(GiveUp::RateLimited { retry_after: Duration::from_secs(30) }));
        let mut r = blocked(0, 0, 1);
        r.rate_until = Some(now + Duration::from_millis(300));
        assert_eq!(when_blocked(&[a, r], now, Some(now + Duration::from_secs(3))), Wait::Until(Some(now + Duration::from_millis(300))));
    }

    #[test]
    fn a_cooldown_longer_than_max_delay_is_never_waited_for() {
        let now = Instant::now();
        let mut a = blocked(0, 0, 1);
        a.cool_beyond = Some(now + Duration::from_secs(30));
        assert_eq!(when_blocked(&[a], now, None), Wait::GiveUp(GiveUp::RateLimited { retry_after: Duration::from_secs(30) }), "even without a deadline");
        let mut b = blocked(1, 0, 1);
        b.rate_until = None;
        assert_eq!(when_blocked(&[a, b], now, None), Wait::Until(None), "a busy target is still waited for");
    }

    #[test]
    fn open_breakers_everywhere_fail_fast() {
        let now = Instant::now();
        let mut a = blocked(0, 2, 2);
        a.down_until = Some(now + Duration::from_secs(1));
        assert_eq!(when_blocked(&[a, blocked(0, 1, 1)], now, None), Wait::GiveUp(GiveUp::CircuitOpen));
        assert_eq!(when_blocked(&[blocked(0, 0, 0)], now, None), Wait::GiveUp(GiveUp::NoInstance));
        assert_eq!(when_blocked(&[], now, None), Wait::GiveUp(GiveUp::NoInstance));
    }
}

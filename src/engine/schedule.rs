//! Instance selection strategies (round robin, LRU, weighted, least busy, latency/P2C).
//!
//! Selection runs on every request, so it never locks and never allocates for pools of up to
//! [`STACK_CANDIDATES`] instances: the eligibility predicate is evaluated once per candidate into
//! a stack buffer, and randomness comes from a per-thread `SmallRng` (no shared RNG state).

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::RotationStrategy;

/// Pools up to this size are selected from without any heap allocation.
pub const STACK_CANDIDATES: usize = 64;

/// Scores above this are clamped so a weighted draw stays well-defined (an infinite weight would
/// make the running sum NaN).
const MAX_SCORE: f64 = 1e12;

/// What a strategy may read about a candidate instance. Implemented by `instance::Instance`.
pub trait Candidate {
    /// Requests in flight now.
    fn in_flight(&self) -> u32;
    /// In-flight cap (0 = unlimited).
    fn max_concurrency(&self) -> u32;
    /// When the instance was last *selected* (stamped at selection time), if ever.
    fn last_used(&self) -> Option<Instant>;
    /// Static weight from config.
    fn weight(&self) -> f64;
    /// Mean latency of successful calls in seconds (0.0 = none measured yet).
    fn avg_latency(&self) -> f64;
    /// Exponentially weighted moving average of latency in seconds, `None` until measured.
    fn ewma_latency(&self) -> Option<f64>;
    /// Successful calls so far (reliability term of the weighted score).
    fn success_count(&self) -> u64;
    /// Failed calls so far (reliability term of the weighted score).
    fn failure_count(&self) -> u64;
    /// The weighted score's terms other than the load. An implementation that keeps them up
    /// to date as calls finish (as instances do) makes a weighted pick read two numbers per
    /// candidate instead of recomputing them.
    fn weighted_terms(&self) -> WeightedTerms {
        WeightedTerms::new(self.weight(), self.avg_latency(), self.success_count(), self.failure_count())
    }
}

/// The load-independent terms of a candidate's weighted score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightedTerms {
    /// `weight × successes / (successes + failures)` (reliability 1 before any call).
    pub base: f64,
    /// `1 / mean latency` in 1/s, `None` until a latency was measured.
    pub perf: Option<f64>,
}

impl WeightedTerms {
    /// The terms from raw statistics (`avg_latency` 0 = not measured).
    pub fn new(weight: f64, avg_latency: f64, successes: u64, failures: u64) -> Self {
        let total = successes + failures;
        let reliability = if total > 0 { successes as f64 / total as f64 } else { 1.0 };
        Self { base: weight * reliability, perf: (avg_latency > 0.0).then(|| 1.0 / avg_latency) }
    }
}

/// Picks one instance among candidates. One per pool / echelon; cheap to call (sub-µs at 64
/// candidates); holds only the strategy's own cursor/RNG state.
///
/// `select` receives every instance of the pool in stable order plus a predicate telling which
/// can take a request now. Strategy rules:
/// - `RoundRobin`: a cursor over the *full* list; returns the first eligible at or after the
///   cursor and moves the cursor past it, so a change in availability never skips or repeats.
///   Precisely: each pick is the first eligible index cyclically after the previous pick, so
///   an instance that stays eligible is reached within one turn of the list, and no instance is
///   picked twice in a turn while another eligible one is waiting.
/// - `LeastRecentlyUsed`: oldest `last_used` (never used first); ties broken randomly. The
///   caller stamps `last_used` at selection, so concurrent requests spread.
/// - `Weighted`: the original formula `max(0.1, weight × perf × reliability × load)` with
///   `perf = 1/avg_latency`, `reliability = s/(s+f)` (1.0 if none),
///   `load = 1 − in_flight/max_concurrency` (1.0 if unlimited); weighted random draw. An
///   unmeasured candidate gets the mean `perf` of the measured ones (1.0 if none is): the
///   original's fixed 1.0 is a hundred times below any sub-second instance's `1/avg`, so a
///   new or recovered instance was practically never tried.
/// - `LeastBusy`: fewest in flight, ties broken randomly.
/// - `Latency`: unmeasured candidates first (random among them); else power of two choices
///   on `ewma_latency`.
pub struct Scheduler {
    strategy: RotationStrategy,
    /// Round robin: the index the next scan starts at.
    cursor: AtomicUsize,
}

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// Uniform in `0..n` (`n > 0`) from this thread's RNG.
fn rand_below(n: usize) -> usize {
    RNG.with(|r| r.borrow_mut().random_range(0..n))
}

/// Uniform in `[0, 1)` from this thread's RNG.
fn rand_unit() -> f64 {
    RNG.with(|r| r.borrow_mut().random::<f64>())
}

/// A scratch slice of `n` elements: on the stack up to [`STACK_CANDIDATES`], else on the heap.
macro_rules! scratch {
    ($name:ident, $heap:ident, $t:ty, $zero:expr, $n:expr) => {
        let mut stack_buf = [$zero; STACK_CANDIDATES];
        let mut $heap: Vec<$t>;
        let $name: &mut [$t] = if $n <= STACK_CANDIDATES {
            &mut stack_buf[..$n]
        } else {
            $heap = vec![$zero; $n];
            &mut $heap[..]
        };
    };
}

impl Scheduler {
    /// A scheduler for `strategy` with its cursor at the start of the list.
    pub fn new(strategy: RotationStrategy) -> Self {
        Self { strategy, cursor: AtomicUsize::new(0) }
    }
    /// The strategy it was built with.
    pub fn strategy(&self) -> RotationStrategy {
        self.strategy
    }
    /// Index into `candidates` of the chosen one, or `None` if none is eligible.
    pub fn select<C: Candidate>(&self, candidates: &[C], eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let n = candidates.len();
        if n == 0 {
            return None;
        }
        if self.strategy == RotationStrategy::RoundRobin {
            return self.round_robin(n, &eligible);
        }
        // Evaluate the predicate exactly once per candidate: it may read breakers and limits
        // that change concurrently, and two passes could disagree.
        scratch!(idx, heap, u32, 0u32, n);
        let mut m = 0;
        for i in 0..n {
            if eligible(i) {
                idx[m] = i as u32;
                m += 1;
            }
        }
        let idx = &mut idx[..m];
        if idx.is_empty() {
            return None;
        }
        let pick = match self.strategy {
            RotationStrategy::RoundRobin => unreachable!("handled above"),
            RotationStrategy::LeastRecentlyUsed => pick_min_random_tie(idx, |i| candidates[i].last_used()),
            RotationStrategy::LeastBusy => pick_min_random_tie(idx, |i| candidates[i].in_flight()),
            RotationStrategy::Weighted => weighted_pick(candidates, idx),
            RotationStrategy::Latency => latency_pick(candidates, idx),
        };
        Some(pick)
    }

    fn round_robin(&self, n: usize, eligible: &impl Fn(usize) -> bool) -> Option<usize> {
        loop {
            let cur = self.cursor.load(Ordering::Acquire);
            let start = cur % n;
            let found = (0..n).map(|k| (start + k) % n).find(|&i| eligible(i))?;
            // CAS so two concurrent callers never both take `found`: the loser rescans from the
            // winner's new cursor. Someone always wins, so this is lock-free.
            if self.cursor.compare_exchange(cur, (found + 1) % n, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return Some(found);
            }
        }
    }
}

/// The candidate with the smallest key, uniformly among ties. Compacts the tied indices to the
/// front of `idx` in one pass, then draws once.
fn pick_min_random_tie<K: Ord>(idx: &mut [u32], key: impl Fn(usize) -> K) -> usize {
    let mut best = key(idx[0] as usize);
    let mut ties = 1;
    for r in 1..idx.len() {
        let i = idx[r];
        let k = key(i as usize);
        match k.cmp(&best) {
            std::cmp::Ordering::Less => {
                best = k;
                idx[0] = i;
                ties = 1;
            }
            std::cmp::Ordering::Equal => {
                idx[ties] = i;
                ties += 1;
            }
            std::cmp::Ordering::Greater => {}
        }
    }
    let k = if ties == 1 { 0 } else { rand_below(ties) };
    idx[k] as usize
}

fn weighted_pick<C: Candidate>(candidates: &[C], idx: &[u32]) -> usize {
    scratch!(scores, heap, f64, 0.0f64, idx.len());
    scratch!(unmeasured, heap2, bool, false, idx.len());
    let mut any_unmeasured = false;
    for ((s, u), &i) in scores.iter_mut().zip(unmeasured.iter_mut()).zip(idx) {
        let c = &candidates[i as usize];
        let t = c.weighted_terms();
        let partial = t.base * load_factor(c);
        match t.perf {
            Some(perf) => *s = floored_score(partial, perf),
            None => {
                *s = partial;
                *u = true;
                any_unmeasured = true;
            }
        }
    }
    if any_unmeasured {
        // Rare (until every instance has answered once), so the mean is gathered only here.
        let (mut sum, mut n) = (0.0, 0u32);
        for &i in idx.iter() {
            if let Some(p) = candidates[i as usize].weighted_terms().perf {
                sum += p;
                n += 1;
            }
        }
        let prior = if n > 0 { sum / f64::from(n) } else { 1.0 };
        for (s, _) in scores.iter_mut().zip(unmeasured.iter()).filter(|(_, u)| **u) {
            *s = floored_score(*s, prior);
        }
    }
    // Sums are kept off one long dependency chain (four accumulators, then blocks of eight):
    // a serial float sum over 64 candidates costs more than computing their scores.
    let mut acc = [0.0f64; 4];
    let quads = scores.chunks_exact(4);
    let rest: f64 = quads.remainder().iter().sum();
    for q in quads {
        for (a, v) in acc.iter_mut().zip(q) {
            *a += v;
        }
    }
    let total = (acc[0] + acc[1]) + (acc[2] + acc[3]) + rest;
    let r = rand_unit() * total;
    let mut run = 0.0;
    let mut start = 0;
    for block in scores.chunks(8) {
        let sum: f64 = block.iter().sum();
        if run + sum > r {
            for (k, &v) in block.iter().enumerate() {
                run += v;
                if run > r {
                    return idx[start + k] as usize;
                }
            }
            // Rounding left the running sum a hair under `r`: the block's last one is the answer.
            return idx[start + block.len() - 1] as usize;
        }
        run += sum;
        start += block.len();
    }
    // Float rounding can leave `run` a hair under `r`; the last one is the right answer then.
    idx[idx.len() - 1] as usize
}

fn latency_pick<C: Candidate>(candidates: &[C], idx: &mut [u32]) -> usize {
    // Compact unmeasured candidates to the front: they must be tried before any comparison.
    let mut unmeasured = 0;
    for r in 0..idx.len() {
        if candidates[idx[r] as usize].ewma_latency().is_none() {
            idx.swap(unmeasured, r);
            unmeasured += 1;
        }
    }
    if unmeasured > 0 {
        return idx[rand_below(unmeasured)] as usize;
    }
    let m = idx.len();
    if m == 1 {
        return idx[0] as usize;
    }
    // Two distinct random candidates; the faster wins (the first drawn on a tie).
    let a = rand_below(m);
    let mut b = rand_below(m - 1);
    if b >= a {
        b += 1;
    }
    let (ia, ib) = (idx[a] as usize, idx[b] as usize);
    let la = candidates[ia].ewma_latency().unwrap_or(f64::INFINITY);
    let lb = candidates[ib].ewma_latency().unwrap_or(f64::INFINITY);
    if lb < la {
        ib
    } else {
        ia
    }
}

/// `1 − in_flight / max_concurrency` (1 when unlimited).
fn load_factor<C: Candidate>(c: &C) -> f64 {
    let max = c.max_concurrency();
    if max > 0 {
        1.0 - f64::from(c.in_flight()) / f64::from(max)
    } else {
        1.0
    }
}

/// The original `WeightedScheduler.calculate_weight` formula (floor 0.1), with
/// `unmeasured_perf` standing in for `1/avg latency` until the candidate has one.
pub fn weighted_score<C: Candidate>(c: &C, unmeasured_perf: f64) -> f64 {
    let t = c.weighted_terms();
    floored_score(t.base * load_factor(c), t.perf.unwrap_or(unmeasured_perf))
}

/// `weight × reliability × load` times `perf`, floored at 0.1 and capped at `MAX_SCORE`.
// `max(0.1).min(MAX)` rather than `clamp`: `clamp` passes a NaN through, `f64::max` floors it,
// so a NaN weight also lands on the floor.
#[allow(clippy::manual_clamp)]
fn floored_score(partial: f64, perf: f64) -> f64 {
    (partial * perf).max(0.1).min(MAX_SCORE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Cand {
        in_flight: u32,
        max: u32,
        last_used: Cell<Option<Instant>>,
        weight: f64,
        avg: f64,
        ewma: Option<f64>,
        ok: u64,
        bad: u64,
    }

    impl Candidate for Cand {
        fn in_flight(&self) -> u32 {
            self.in_flight
        }
        fn max_concurrency(&self) -> u32 {
            self.max
        }
        fn last_used(&self) -> Option<Instant> {
            self.last_used.get()
        }
        fn weight(&self) -> f64 {
            self.weight
        }
        fn avg_latency(&self) -> f64 {
            self.avg
        }
        fn ewma_latency(&self) -> Option<f64> {
            self.ewma
        }
        fn success_count(&self) -> u64 {
            self.ok
        }
        fn failure_count(&self) -> u64 {
            self.bad
        }
    }

    fn plain(n: usize) -> Vec<Cand> {
        (0..n).map(|_| Cand { weight: 1.0, ..Default::default() }).collect()
    }

    fn counts(s: &Scheduler, c: &[Cand], rounds: usize, eligible: impl Fn(usize) -> bool) -> Vec<usize> {
        let mut n = vec![0; c.len()];
        for _ in 0..rounds {
            n[s.select(c, &eligible).expect("some eligible")] += 1;
        }
        n
    }

    #[test]
    fn empty_or_nothing_eligible_is_none() {
        for st in [
            RotationStrategy::RoundRobin,
            RotationStrategy::LeastRecentlyUsed,
            RotationStrategy::Weighted,
            RotationStrategy::LeastBusy,
            RotationStrategy::Latency,
        ] {
            let s = Scheduler::new(st);
            assert_eq!(s.select::<Cand>(&[], |_| true), None);
            assert_eq!(s.select(&plain(5), |_| false), None);
            assert_eq!(s.select(&plain(5), |i| i == 3), Some(3), "{st:?}");
            // Above the stack size the heap path is used; same answers.
            assert_eq!(s.select(&plain(100), |i| i == 77), Some(77), "{st:?}");
        }
    }

    #[test]
    fn round_robin_is_exactly_fair() {
        let s = Scheduler::new(RotationStrategy::RoundRobin);
        let c = plain(7);
        assert_eq!(counts(&s, &c, 7 * 1000, |_| true), vec![1000; 7]);
        let picks: Vec<_> = (0..9).map(|_| s.select(&c, |_| true).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 3, 4, 5, 6, 0, 1]);
    }

    #[test]
    fn round_robin_never_skips_or_repeats_when_availability_changes() {
        let s = Scheduler::new(RotationStrategy::RoundRobin);
        let c = plain(4);
        let seq = |e: &dyn Fn(usize) -> bool| s.select(&c, e).unwrap();
        assert_eq!(seq(&|_| true), 0);
        assert_eq!(seq(&|i| i != 2), 1);
        assert_eq!(seq(&|i| i != 2), 3, "2 is unavailable: the next eligible after 1");
        assert_eq!(seq(&|_| true), 0);
        assert_eq!(seq(&|_| true), 1, "2 coming back does not make 1 repeat or 0 skip");
        assert_eq!(seq(&|_| true), 2);

        // Randomized: every pick is the first eligible index cyclically after the previous pick
        // (the original scheduler indexed the *filtered* list and broke this).
        let s = Scheduler::new(RotationStrategy::RoundRobin);
        let c = plain(9);
        let mut prev: Option<usize> = None;
        for _ in 0..5000 {
            let mask: u32 = rand_below(1 << 9) as u32;
            let got = s.select(&c, |i| mask & (1 << i) != 0);
            if mask == 0 {
                assert_eq!(got, None);
                continue;
            }
            let start = prev.map_or(0, |p| p + 1);
            let want = (0..9).map(|k| (start + k) % 9).find(|&i| mask & (1 << i) != 0);
            assert_eq!(got, want);
            prev = got;
        }
    }

    #[test]
    fn round_robin_concurrent_callers_share_fairly() {
        use std::sync::Arc;
        let s = Arc::new(Scheduler::new(RotationStrategy::RoundRobin));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let c = plain(8);
                    let mut n = [0usize; 8];
                    for _ in 0..2000 {
                        n[s.select(&c, |_| true).unwrap()] += 1;
                    }
                    n
                })
            })
            .collect();
        let mut total = [0usize; 8];
        for h in handles {
            for (t, x) in total.iter_mut().zip(h.join().unwrap()) {
                *t += x;
            }
        }
        assert_eq!(total, [1000; 8], "8000 picks over 8 instances with no pick lost or doubled");
    }

    #[test]
    fn weighted_is_proportional() {
        let s = Scheduler::new(RotationStrategy::Weighted);
        let mut c = plain(3);
        c[0].weight = 1.0;
        c[1].weight = 2.0;
        c[2].weight = 7.0;
        let n = counts(&s, &c, 10_000, |_| true);
        // Expected 1000/2000/7000; binomial sd ≤ 46, so ±300 is > 6 sd and cannot flake.
        for (got, want) in n.iter().zip([1000, 2000, 7000]) {
            assert!(got.abs_diff(want) <= 300, "{n:?}");
        }
        // Ineligible ones get nothing, and the rest keep their ratio.
        let n = counts(&s, &c, 10_000, |i| i != 2);
        assert_eq!(n[2], 0);
        assert!(n[0].abs_diff(3333) <= 300, "{n:?}");
    }

    #[test]
    fn weighted_score_is_the_original_formula() {
        let c = Cand { weight: 2.0, avg: 0.5, ok: 3, bad: 1, in_flight: 2, max: 8, ..Default::default() };
        // 2 × (1/0.5) × 0.75 × (1 − 2/8)
        assert!((weighted_score(&c, 1.0) - 2.25).abs() < 1e-12);
        let fresh = Cand { weight: 1.5, ..Default::default() };
        assert_eq!(weighted_score(&fresh, 1.0), 1.5);
        assert_eq!(weighted_score(&fresh, 40.0), 60.0);
        let saturated = Cand { weight: 5.0, in_flight: 10, max: 10, ..Default::default() };
        assert_eq!(weighted_score(&saturated, 1.0), 0.1);
        let nan = Cand { weight: f64::NAN, ..Default::default() };
        assert_eq!(weighted_score(&nan, 1.0), 0.1);
    }

    #[test]
    fn weighted_gives_an_unmeasured_candidate_the_mean_performance() {
        let s = Scheduler::new(RotationStrategy::Weighted);
        let mut c = plain(3);
        c[0].avg = 0.01; // 100/s
        c[1].avg = 0.04; // 25/s
                         // c[2] has no latency yet: it is scored at the mean, 62.5/s, not at 1/s.
        let n = counts(&s, &c, 10_000, |_| true);
        // Expected 100 : 25 : 62.5 of 187.5 → 5333 / 1333 / 3333 (binomial sd ≤ 50).
        for (got, want) in n.iter().zip([5333, 1333, 3333]) {
            assert!(got.abs_diff(want) <= 300, "{n:?}");
        }
    }

    #[test]
    fn least_busy_picks_min_and_spreads_ties() {
        let s = Scheduler::new(RotationStrategy::LeastBusy);
        let mut c = plain(6);
        for (x, f) in c.iter_mut().zip([3, 1, 4, 1, 5, 1]) {
            x.in_flight = f;
        }
        let n = counts(&s, &c, 10_000, |_| true);
        assert_eq!(n[0] + n[2] + n[4], 0, "{n:?}");
        // Three-way tie: expected 3333 each, sd ≈ 47.
        for i in [1, 3, 5] {
            assert!(n[i].abs_diff(3333) <= 300, "{n:?}");
        }
        // The minimum among the eligible only.
        assert_eq!(s.select(&c, |i| i % 2 == 0), Some(0));
    }

    #[test]
    fn lru_prefers_never_used_then_oldest_and_spreads_when_stamped() {
        let s = Scheduler::new(RotationStrategy::LeastRecentlyUsed);
        let t = Instant::now();
        let c = plain(4);
        c[0].last_used.set(Some(t + Duration::from_secs(2)));
        c[1].last_used.set(Some(t + Duration::from_secs(1)));
        c[3].last_used.set(Some(t + Duration::from_secs(3)));
        assert_eq!(s.select(&c, |_| true), Some(2), "never used first");
        assert_eq!(s.select(&c, |i| i != 2), Some(1), "then the oldest stamp");

        // Stamping at selection (as the pool does) spreads 10k picks evenly over 8 instances.
        let c = plain(8);
        let mut n = [0usize; 8];
        for k in 0..10_000u64 {
            let i = s.select(&c, |_| true).unwrap();
            c[i].last_used.set(Some(t + Duration::from_nanos(k + 1)));
            n[i] += 1;
        }
        assert!(n.iter().all(|&x| x == 1250), "{n:?}");

        // All tied (never used): random among all of them, not always the first.
        let c = plain(4);
        let n = counts(&s, &c, 10_000, |_| true);
        assert!(n.iter().all(|&x| x.abs_diff(2500) <= 300), "{n:?}");
    }

    #[test]
    fn latency_probes_unmeasured_first_then_prefers_faster() {
        let s = Scheduler::new(RotationStrategy::Latency);
        let mut c = plain(3);
        c[0].ewma = Some(0.010);
        c[2].ewma = Some(0.001);
        assert_eq!(counts(&s, &c, 1000, |_| true), vec![0, 1000, 0], "unmeasured is tried first");
        // Two measured: P2C always compares both, so the faster always wins.
        c[1].ewma = Some(0.5);
        let n = counts(&s, &c, 10_000, |i| i != 1);
        assert_eq!(n, vec![0, 0, 10_000]);
        // Three measured: the slowest never wins a pair; the fastest wins every pair it is in
        // (2 of 3 pairs), the middle one wins the remaining third.
        let n = counts(&s, &c, 10_000, |_| true);
        assert_eq!(n[1], 0, "{n:?}");
        assert!(n[2].abs_diff(6667) <= 300 && n[0].abs_diff(3333) <= 300, "{n:?}");
    }
}

//! criterion micro-benchmarks of the hot paths (selection, limiter checks, breaker transitions).
//!
//! Run: `cargo bench --no-default-features --bench hot_paths`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use _core::config::{BreakerConfig, RotationStrategy};
use _core::engine::schedule::{Candidate, Scheduler, WeightedTerms};
use _core::state::breaker::Breaker;
use _core::state::limit::{ConcurrencyLimit, RateLimiter, SlidingWindow, TokenBucket};
use _core::state::wait::WaitCtx;

/// A candidate with plain fields, so the benchmark measures the strategy and not an
/// instance's atomics.
struct Cand {
    in_flight: u32,
    last_used: Option<Instant>,
    weight: f64,
    avg: f64,
    ewma: Option<f64>,
    ok: u64,
    bad: u64,
    /// Kept up to date as calls finish, as an instance does.
    terms: WeightedTerms,
}

impl Candidate for Cand {
    fn in_flight(&self) -> u32 {
        self.in_flight
    }
    fn max_concurrency(&self) -> u32 {
        16
    }
    fn last_used(&self) -> Option<Instant> {
        self.last_used
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
    fn weighted_terms(&self) -> WeightedTerms {
        self.terms
    }
}

fn candidates(n: usize) -> Vec<Cand> {
    let t = Instant::now();
    (0..n)
        .map(|i| {
            let (weight, avg, ok, bad) = (1.0 + (i % 3) as f64, 0.1 + (i % 5) as f64 * 0.05, 100 + i as u64, (i % 10) as u64);
            Cand {
                in_flight: (i % 4) as u32, // a quarter of the pool ties on the minimum
                last_used: Some(t + Duration::from_millis((i % 8) as u64)),
                weight,
                avg,
                ewma: Some(0.1 + (i % 7) as f64 * 0.01),
                ok,
                bad,
                terms: WeightedTerms::new(weight, avg, ok, bad),
            }
        })
        .collect()
}

fn selection(c: &mut Criterion) {
    let pool = candidates(64);
    let mut g = c.benchmark_group("select_64");
    for strategy in
        [RotationStrategy::RoundRobin, RotationStrategy::LeastRecentlyUsed, RotationStrategy::Weighted, RotationStrategy::LeastBusy, RotationStrategy::Latency]
    {
        let s = Scheduler::new(strategy);
        // One instance in 16 is unavailable, as when a breaker is open.
        g.bench_function(strategy.as_str(), |b| b.iter(|| s.select(black_box(&pool), |i| i % 16 != 5)));
    }
    g.finish();
}

fn breaker(c: &mut Criterion) {
    let b = Breaker::new(BreakerConfig::default());
    let now = Instant::now();
    c.bench_function("breaker_try_admit_on_success", |bn| {
        bn.iter(|| {
            let a = b.try_admit(black_box(now)).expect("closed");
            b.on_success(a, now);
        })
    });
    let ratio = Breaker::new(BreakerConfig { failure_ratio: Some(0.5), ..Default::default() });
    c.bench_function("breaker_ratio_mode_try_admit_on_success", |bn| {
        bn.iter(|| {
            let a = ratio.try_admit(black_box(now)).expect("closed");
            ratio.on_success(a, now);
        })
    });
}

fn limits(c: &mut Criterion) {
    let cl = std::sync::Arc::new(ConcurrencyLimit::new(1000));
    c.bench_function("concurrency_acquire_release", |b| {
        b.iter(|| {
            assert!(cl.try_acquire(&mut WaitCtx::new()));
            cl.release();
        })
    });

    // Time advances 1 µs per call with a limit that is never reached: the steady state of an
    // RPM limiter (push one entry, prune one expired entry).
    let sw = SlidingWindow::new(u64::MAX / 2, Duration::from_millis(1));
    let mut now = Instant::now();
    c.bench_function("sliding_window_try_acquire", |b| {
        b.iter(|| {
            now += Duration::from_micros(1);
            black_box(sw.try_acquire(1, now)).expect("under limit");
        })
    });

    let tb = TokenBucket::new(1000, 1e9);
    let mut now = Instant::now();
    c.bench_function("token_bucket_try_acquire", |b| {
        b.iter(|| {
            now += Duration::from_micros(1);
            black_box(tb.try_acquire(1, now)).expect("refilled");
        })
    });
}

criterion_group!(benches, selection, breaker, limits);
criterion_main!(benches);

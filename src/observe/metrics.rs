//! Prometheus text exposition (format 0.0.4) of a router's counters and gauges: the one
//! renderer behind `Router.metrics()` in Python and the gateway's `GET /metrics`.
//!
//! Series (every one labelled by `pool` or `instance`):
//! `echelon_pool_requests_total`, `echelon_pool_failures_total`, `echelon_pool_in_flight`,
//! `echelon_pool_queue_length`; `echelon_instance_state` (1 for the current health state, 0
//! for the others, label `state`), `echelon_instance_requests_total`,
//! `echelon_instance_failures_total`, `echelon_instance_in_flight`,
//! `echelon_instance_breaker_open`, `echelon_instance_latency_ewma_seconds`, and
//! `echelon_instance_latency_seconds` (label `quantile`: 0.5 and 0.99 of the last 256
//! successful calls). An instance shared by several groups' views appears once.

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::engine::instance::InstanceSnapshot;
use crate::engine::router::RouterStatus;
use crate::state::breaker::BreakerState;

/// Escape a label value (backslash, double quote, newline).
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: integers without a fraction, floats in Rust's shortest round-trip form.
pub trait SampleValue {
    /// Append the value.
    fn write(&self, out: &mut String);
}

impl SampleValue for u64 {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl SampleValue for f64 {
    fn write(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// Append one metric family: its `# HELP` and `# TYPE` lines and one line per sample.
pub fn family<V: SampleValue>(out: &mut String, name: &str, kind: &str, help: &str, samples: impl IntoIterator<Item = (Vec<(&'static str, String)>, V)>) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{k}=\"{}\"", escape(v));
            }
            out.push('}');
        }
        out.push(' ');
        value.write(out);
        out.push('\n');
    }
}

const STATES: [&str; 5] = ["healthy", "degraded", "unhealthy", "failed", "recovering"];

/// The exposition of `status`.
pub fn render(status: &RouterStatus) -> String {
    let mut out = String::with_capacity(4096);
    let pools = &status.pools;
    let pool = |p: &crate::engine::pool::PoolStatus| vec![("pool", p.name.clone())];
    family(&mut out, "echelon_pool_requests_total", "counter", "Calls routed through the pool.", pools.iter().map(|p| (pool(p), p.stats.total_requests)));
    family(&mut out, "echelon_pool_failures_total", "counter", "Calls through the pool that failed.", pools.iter().map(|p| (pool(p), p.stats.failed_requests)));
    family(&mut out, "echelon_pool_in_flight", "gauge", "Requests in flight on the pool's instances.", pools.iter().map(|p| (pool(p), u64::from(p.in_flight))));
    family(&mut out, "echelon_pool_queue_length", "gauge", "Requests waiting for a slot.", pools.iter().map(|p| (pool(p), u64::from(p.queue_length))));

    let mut seen = HashSet::new();
    let insts: Vec<&InstanceSnapshot> =
        status.groups.iter().flat_map(|g| g.echelons.iter().flat_map(|e| e.instances.iter())).filter(|i| seen.insert(i.instance_id.as_str())).collect();
    let inst = |i: &InstanceSnapshot| vec![("instance", i.instance_id.clone())];
    family(
        &mut out,
        "echelon_instance_state",
        "gauge",
        "1 for the instance's current health state.",
        insts.iter().flat_map(|i| {
            STATES.iter().map(move |s| (vec![("instance", i.instance_id.clone()), ("state", s.to_string())], u64::from(i.status.as_str() == *s)))
        }),
    );
    family(&mut out, "echelon_instance_requests_total", "counter", "Attempts sent to the instance.", insts.iter().map(|i| (inst(i), i.stats.requests)));
    family(&mut out, "echelon_instance_failures_total", "counter", "Attempts on the instance that failed.", insts.iter().map(|i| (inst(i), i.stats.failures)));
    family(&mut out, "echelon_instance_in_flight", "gauge", "Requests in flight on the instance.", insts.iter().map(|i| (inst(i), u64::from(i.in_flight))));
    family(
        &mut out,
        "echelon_instance_breaker_open",
        "gauge",
        "1 when the instance's breaker is open.",
        insts.iter().map(|i| (inst(i), u64::from(i.breaker.state == BreakerState::Open))),
    );
    family(
        &mut out,
        "echelon_instance_latency_ewma_seconds",
        "gauge",
        "EWMA of successful latency.",
        insts.iter().filter_map(|i| i.stats.ewma_latency.map(|v| (inst(i), v))),
    );
    family(
        &mut out,
        "echelon_instance_latency_seconds",
        "gauge",
        "Latency quantiles of the instance's last 256 successful calls.",
        insts.iter().flat_map(|i| {
            [("0.5", i.stats.p50_latency), ("0.99", i.stats.p99_latency)]
                .into_iter()
                .filter_map(move |(q, v)| v.map(|v| (vec![("instance", i.instance_id.clone()), ("quantile", q.to_string())], v)))
        }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_labels_are_well_formed() {
        let mut out = String::new();
        family(&mut out, "x_total", "counter", "X.", vec![(vec![("pool", "a\"b\\c\nd".to_string())], 3u64)]);
        family(&mut out, "y", "gauge", "Y.", vec![(vec![], 0.25f64), (vec![("k", "v".into())], f64::NAN)]);
        assert_eq!(
            out,
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{pool=\"a\\\"b\\\\c\\nd\"} 3\n# HELP y Y.\n# TYPE y gauge\ny 0.25\ny{k=\"v\"} NaN\n"
        );
    }
}

//! Task groups: echelons tried by priority, and the fallback plan a reference expands to.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

use crate::config::{EchelonConfig, FallbackStrategy, GroupConfig};
use crate::engine::selector::Selector;
use crate::error::{Attempt, Error};
use crate::state::breaker::BreakerSnapshot;

/// One echelon of a group: its config and the selector over its instances.
pub struct Echelon {
    /// The group it belongs to.
    pub group: String,
    /// Its configuration.
    pub config: EchelonConfig,
    /// Selection among its instances.
    pub selector: Arc<Selector>,
    /// Model references that resolved nowhere (reported at call time).
    pub unresolved: Vec<String>,
}

impl Echelon {
    /// `"group.echelon"`.
    pub fn reference(&self) -> String {
        format!("{}.{}", self.group, self.config.name)
    }
}

/// One entry of a group's fallback history.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryEntry {
    /// The reference the call named (`group`, `group.echelon`).
    pub target: String,
    /// Whether it succeeded.
    pub success: bool,
    /// `"kind: message"` of its error, if it failed.
    pub error: Option<String>,
    /// When it ended.
    pub timestamp: SystemTime,
    /// Attempts the call took.
    pub attempts: usize,
    /// Whether the call was served by a target other than its first.
    pub fell_back: bool,
}

const HISTORY_CAP: usize = 100;

/// A task group.
pub struct Group {
    /// Its name.
    pub name: String,
    /// Its configuration.
    pub config: GroupConfig,
    /// Echelons in trial order (ascending priority, ties in file order).
    pub echelons: Vec<Arc<Echelon>>,
    history: Mutex<VecDeque<HistoryEntry>>,
}

/// Breaker status of one instance of a group (the original keys).
#[derive(Clone, Debug, Serialize)]
pub struct BreakerStatus {
    /// The instance id.
    pub instance: String,
    /// Its echelon.
    pub echelon: String,
    /// Its breaker's state and counters.
    #[serde(flatten)]
    pub breaker: BreakerSnapshot,
}

impl Group {
    /// A group over `echelons` (in trial order).
    pub fn new(config: GroupConfig, echelons: Vec<Arc<Echelon>>) -> Self {
        Self { name: config.name.clone(), config, echelons, history: Mutex::new(VecDeque::new()) }
    }

    /// The echelon named `name`.
    pub fn echelon(&self, name: &str) -> Option<&Arc<Echelon>> {
        self.echelons.iter().find(|e| e.config.name == name)
    }

    /// The echelons a reference to this group starts with, in trial order: from the named
    /// echelon downwards (or all of them), or just the first for `task_group_switch`.
    pub fn own_chain(&self, echelon: Option<&str>) -> Result<Vec<Arc<Echelon>>, Error> {
        let strategy = self.config.effective_fallback().strategy;
        let start = match echelon {
            Some(name) => self.echelons.iter().position(|e| e.config.name == name).ok_or_else(|| {
                let known: Vec<&str> = self.echelons.iter().map(|e| e.config.name.as_str()).collect();
                Error::routing(format!("group '{}' has no echelon '{}' (it has: {})", self.name, name, known.join(", ")))
            })?,
            None => 0,
        };
        Ok(match strategy {
            FallbackStrategy::TaskGroupSwitch => self.echelons[start..].iter().take(1).cloned().collect(),
            _ => self.echelons[start..].to_vec(),
        })
    }

    /// Record a finished call in the fallback history (last 100 kept).
    pub fn record(&self, target: &str, attempts: &[Attempt], error: Option<&Error>) {
        let first = attempts.first().map(|a| a.target.as_str());
        let last = attempts.last().map(|a| a.target.as_str());
        let mut h = self.history.lock();
        if h.len() == HISTORY_CAP {
            h.pop_front();
        }
        h.push_back(HistoryEntry {
            target: target.to_string(),
            success: error.is_none(),
            error: error.map(|e| format!("{}: {}", e.kind, e.message)),
            timestamp: SystemTime::now(),
            attempts: attempts.len(),
            fell_back: first != last,
        });
    }

    /// The most recent `limit` history entries, oldest first.
    pub fn history(&self, limit: usize) -> Vec<HistoryEntry> {
        let h = self.history.lock();
        h.iter().skip(h.len().saturating_sub(limit)).cloned().collect()
    }

    /// Breaker status of every instance of the group.
    pub fn breaker_status(&self) -> Vec<BreakerStatus> {
        let now = std::time::Instant::now();
        self.echelons
            .iter()
            .flat_map(|e| {
                e.selector.instances.iter().map(move |i| BreakerStatus {
                    instance: i.id.clone(),
                    echelon: e.config.name.clone(),
                    breaker: i.breaker.snapshot(now),
                })
            })
            .collect()
    }

    /// Reset every breaker of the group (or of one instance).
    pub fn reset_breakers(&self, instance: Option<&str>) -> usize {
        let mut n = 0;
        for e in &self.echelons {
            for i in &e.selector.instances {
                if instance.is_none_or(|id| id == i.id) {
                    i.breaker.reset();
                    n += 1;
                }
            }
        }
        n
    }

    /// The group's retry delay between targets.
    pub fn retry_delay(&self) -> Duration {
        self.config.effective_fallback().retry_delay
    }
}

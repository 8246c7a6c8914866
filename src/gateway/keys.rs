//! Who may call: the key a request carries (`Authorization: Bearer …` or `x-api-key`), matched
//! in constant time against the configured digests, and each key's RPM/TPM budgets.
//!
//! Budgets come from the router's [`StateStore`], so with a shared (Redis) store every gateway
//! replica spends the same budget. They are kept by the gateway across reloads (a reload that
//! keeps a key's budget settings keeps what it has spent). A key over budget gets 429 at once
//! with the time until its budget fits; the gateway never queues a caller for its own key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::HeaderMap;
use parking_lot::Mutex;

use super::errors::Failure;
use crate::config::{key_digest, GatewayConfig, GatewayKey};
use crate::state::limit::RateGate;
use crate::state::store::{RateSpec, StateStore};

/// The key a request presented, if any.
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(k) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Some(k.trim());
        }
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Equality of two digests in time independent of where they differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= a[i] ^ b[i];
    }
    std::hint::black_box(diff) == 0
}

/// The configured key `presented` is, comparing against every key (no early exit, so the time
/// taken says nothing about which key or how much of it matched).
pub fn authenticate<'a>(cfg: &'a GatewayConfig, presented: Option<&str>) -> Result<Option<&'a GatewayKey>, Failure> {
    if cfg.keys.is_empty() {
        return Ok(None);
    }
    let Some(p) = presented.filter(|p| !p.is_empty()) else {
        return Err(Failure::new(401, "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`").code("invalid_api_key").should_retry(false));
    };
    let d = key_digest(p);
    let mut found = None;
    for k in &cfg.keys {
        if let Some(kd) = k.secret.digest() {
            if ct_eq(&d, kd) && found.is_none() {
                found = Some(k);
            }
        }
    }
    found.map(Some).ok_or_else(|| Failure::new(401, "invalid API key").code("invalid_api_key").should_retry(false))
}

struct Gates {
    rpm: Option<(u32, Arc<RateGate>)>,
    tpm: Option<(u32, Arc<RateGate>)>,
}

/// The budgets of every key seen so far, by key name.
#[derive(Default)]
pub struct Budgets {
    gates: Mutex<HashMap<String, Gates>>,
}

const MINUTE: Duration = Duration::from_secs(60);

fn gate(store: &Arc<dyn StateStore>, have: Option<(u32, Arc<RateGate>)>, name: &str, what: &str, limit: u32) -> Option<(u32, Arc<RateGate>)> {
    if limit == 0 {
        return None;
    }
    match have {
        Some((l, g)) if l == limit => Some((l, g)),
        _ => Some((limit, store.rate(&format!("gateway:key:{name}:{what}"), RateSpec::Window { limit: limit as u64, window: MINUTE }))),
    }
}

impl Budgets {
    /// Take one request and `tokens` (an estimate) from `key`'s budgets, all or nothing.
    pub fn admit(&self, store: &Arc<dyn StateStore>, key: &GatewayKey, tokens: u64) -> Result<KeyLease, Failure> {
        if key.rpm == 0 && key.tpm == 0 {
            return Ok(KeyLease::none());
        }
        let (rpm, tpm) = {
            let mut map = self.gates.lock();
            let old = map.remove(&key.name);
            let (old_rpm, old_tpm) = old.map_or((None, None), |g| (g.rpm, g.tpm));
            let g = Gates { rpm: gate(store, old_rpm, &key.name, "rpm", key.rpm), tpm: gate(store, old_tpm, &key.name, "tpm", key.tpm) };
            let out = (g.rpm.as_ref().map(|x| x.1.clone()), g.tpm.as_ref().map(|x| x.1.clone()));
            map.insert(key.name.clone(), g);
            out
        };
        let now = Instant::now();
        let over = |what: &str, limit: u32, wait: Duration| {
            Failure::new(429, format!("key `{}` is over its {what} budget ({limit} per minute)", key.name)).code("rate_limit_exceeded").retry_after(Some(wait))
        };
        if let Some(g) = &rpm {
            g.limiter().try_acquire(1, now).map_err(|wait| over("requests", key.rpm, wait))?;
        }
        if let Some(g) = &tpm {
            if let Err(wait) = g.limiter().try_acquire(tokens, now) {
                if let Some(r) = &rpm {
                    r.give_back(1, now);
                }
                return Err(over("tokens", key.tpm, wait));
            }
        }
        Ok(KeyLease { tpm, estimate: tokens, settled: false })
    }

    /// Forget keys no longer configured.
    pub fn retain(&self, keys: &[GatewayKey]) {
        self.gates.lock().retain(|name, _| keys.iter().any(|k| &k.name == name));
    }
}

/// A key's TPM estimate for one request: corrected to the real usage when it is known, given
/// back when the request used nothing (failed, abandoned).
pub struct KeyLease {
    tpm: Option<Arc<RateGate>>,
    estimate: u64,
    settled: bool,
}

impl KeyLease {
    /// A lease for a request without a key (or a key without budgets): nothing to settle.
    pub fn none() -> KeyLease {
        KeyLease { tpm: None, estimate: 0, settled: true }
    }

    /// The request finished with `used` tokens.
    pub fn used(mut self, used: u64) {
        if let Some(g) = &self.tpm {
            g.correct(used as i64 - self.estimate as i64, Instant::now());
        }
        self.settled = true;
    }
}

impl Drop for KeyLease {
    fn drop(&mut self) {
        if !self.settled {
            if let Some(g) = &self.tpm {
                g.give_back(self.estimate, Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeySecret;
    use crate::state::store::MemoryStore;

    fn key(name: &str, secret: &str, rpm: u32, tpm: u32) -> GatewayKey {
        GatewayKey { name: name.into(), secret: KeySecret::Sha256(key_digest(secret)), routes: vec![], rpm, tpm, at: String::new() }
    }

    #[test]
    fn keys_match_by_digest_from_either_header() {
        let cfg = GatewayConfig { keys: vec![key("a", "sk-a", 0, 0), key("b", "sk-b", 0, 0)], ..Default::default() };
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer sk-b".parse().unwrap());
        assert_eq!(authenticate(&cfg, presented(&h)).unwrap().map(|k| k.name.as_str()), Some("b"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "sk-a".parse().unwrap());
        assert_eq!(authenticate(&cfg, presented(&h)).unwrap().map(|k| k.name.as_str()), Some("a"));
        assert_eq!(authenticate(&cfg, Some("sk-c")).unwrap_err().status, 401);
        assert_eq!(authenticate(&cfg, None).unwrap_err().status, 401);
        assert!(authenticate(&GatewayConfig::default(), None).unwrap().is_none());
    }

    #[test]
    fn budgets_refuse_with_a_wait_and_refund_what_was_not_used() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let b = Budgets::default();
        let k = key("a", "sk", 2, 100);
        let first = b.admit(&store, &k, 60).expect("fits");
        // 60 of 100 tokens are taken: 60 more do not fit, and the request slot is given back.
        let f = b.admit(&store, &k, 60).err().expect("over tpm");
        assert_eq!(f.status, 429);
        assert!(f.retry_after.is_some_and(|d| d > Duration::ZERO && d <= MINUTE));
        first.used(10);
        let second = b.admit(&store, &k, 60).expect("fits after the correction");
        drop(second);
        let f = b.admit(&store, &k, 1).err().expect("over rpm");
        assert!(f.message.contains("requests budget"), "{}", f.message);
    }
}

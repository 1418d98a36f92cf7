//! The host, as the core sees it: small traits the shell implements with
//! proxy-wasm hostcalls and the tests implement with fakes.

use std::cell::RefCell;
use std::collections::HashMap;

/// Why a shared-store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The compare-and-swap token did not match: someone else wrote first.
    CasMismatch,
    /// Any other host failure.
    Unavailable,
}

/// Proxy-wasm shared data: a key/value store shared by every worker's VM,
/// with compare-and-swap tokens.
///
/// Host semantics (proxy-wasm-cpp-host): `set` on a missing key always
/// succeeds, whatever the token; on an existing key a non-zero token must
/// match. So keys are created once, before traffic, and every write on the
/// request path is a CAS on an existing key.
pub trait SharedStore {
    /// The value and its CAS token, `None` if the key does not exist.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Writes `value`; with `Some(cas)` only if the key still has that token.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// Wall-clock time.
pub trait Clock {
    fn now_ms(&self) -> u64;
}

/// Envoy stats: counters, histograms and gauges by full stat name
/// (`llmgate.<metric>.<label>.<value>…`).
pub trait MetricsSink {
    fn incr(&self, name: &str, by: u64);
    fn histogram(&self, name: &str, value: u64);
    fn gauge(&self, name: &str, value: u64);
}

/// A [`MetricsSink`] that records everything, for tests.
#[derive(Default)]
pub struct FakeMetrics {
    pub counters: RefCell<HashMap<String, u64>>,
    pub histograms: RefCell<Vec<(String, u64)>>,
    pub gauges: RefCell<HashMap<String, u64>>,
}

impl FakeMetrics {
    /// The value of a counter (0 if never incremented).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.borrow().get(name).copied().unwrap_or(0)
    }

    /// Counter names containing `part`.
    pub fn names_with(&self, part: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .counters
            .borrow()
            .keys()
            .filter(|k| k.contains(part))
            .cloned()
            .collect();
        v.sort();
        v
    }
}

impl MetricsSink for FakeMetrics {
    fn incr(&self, name: &str, by: u64) {
        let mut c = self.counters.borrow_mut();
        let slot = c.entry(name.to_string()).or_insert(0);
        *slot = slot.saturating_add(by);
    }
    fn histogram(&self, name: &str, value: u64) {
        self.histograms.borrow_mut().push((name.to_string(), value));
    }
    fn gauge(&self, name: &str, value: u64) {
        self.gauges.borrow_mut().insert(name.to_string(), value);
    }
}

/// An in-memory [`SharedStore`] with the host's semantics, for tests. It can
/// inject CAS conflicts and failures.
#[derive(Default)]
pub struct FakeStore {
    inner: RefCell<FakeStoreInner>,
}

#[derive(Default)]
struct FakeStoreInner {
    map: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    /// Number of upcoming CAS writes that fail with `CasMismatch`.
    pub conflicts: u32,
    /// Number of upcoming operations that fail with `Unavailable`.
    pub failures: u32,
}

impl FakeStore {
    pub fn new() -> Self {
        Self::default()
    }
    /// The next `n` CAS writes fail with a mismatch (as if another worker won).
    pub fn inject_conflicts(&self, n: u32) {
        self.inner.borrow_mut().conflicts = n;
    }
    /// The next `n` operations fail with `Unavailable`.
    pub fn inject_failures(&self, n: u32) {
        self.inner.borrow_mut().failures = n;
    }
    pub fn raw(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.borrow().map.get(key).map(|(v, _)| v.clone())
    }
    pub fn len(&self) -> usize {
        self.inner.borrow().map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SharedStore for FakeStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        let mut inner = self.inner.borrow_mut();
        if inner.failures > 0 {
            inner.failures -= 1;
            return Err(StoreError::Unavailable);
        }
        Ok(inner.map.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut inner = self.inner.borrow_mut();
        if inner.failures > 0 {
            inner.failures -= 1;
            return Err(StoreError::Unavailable);
        }
        let cas = cas.unwrap_or(0);
        if cas != 0 && inner.conflicts > 0 {
            inner.conflicts -= 1;
            return Err(StoreError::CasMismatch);
        }
        inner.next_cas = inner.next_cas.wrapping_add(1).max(1);
        let next = inner.next_cas;
        match inner.map.get_mut(key) {
            Some(entry) => {
                if cas != 0 && cas != entry.1 {
                    return Err(StoreError::CasMismatch);
                }
                *entry = (value.to_vec(), next);
            }
            None => {
                inner.map.insert(key.to_string(), (value.to_vec(), next));
            }
        }
        Ok(())
    }
}

/// A settable clock for tests.
#[derive(Default)]
pub struct FakeClock {
    pub now: std::cell::Cell<u64>,
}

impl FakeClock {
    pub fn at(ms: u64) -> Self {
        Self {
            now: std::cell::Cell::new(ms),
        }
    }
    pub fn advance(&self, ms: u64) {
        self.now.set(self.now.get().saturating_add(ms));
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
}

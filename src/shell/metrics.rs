//! Envoy stats defined on first use and cached by name.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::cell::RefCell;
use std::collections::HashMap;

/// Counter increments are summed in the VM and flushed to Envoy by the root
/// context's tick (every [`super::root::TICK`]): one hostcall per counter
/// and tick instead of one per increment on the request path. Histogram
/// samples are queued and recorded on the same tick (bounded queue), so the
/// request path makes no metric hostcall at all.
#[derive(Default)]
pub struct Metrics {
    ids: RefCell<HashMap<String, u32>>,
    pending: RefCell<HashMap<u32, u64>>,
    samples: RefCell<Vec<(u32, u64)>>,
}

/// Histogram samples queued between two ticks, at most (beyond: recorded at
/// once, as before).
const MAX_QUEUED_SAMPLES: usize = 4096;

impl Metrics {
    fn id(&self, kind: MetricType, name: &str) -> Option<u32> {
        if let Some(id) = self.ids.borrow().get(name) {
            return Some(*id);
        }
        let id = hostcalls::define_metric(kind, name).ok()?;
        self.ids.borrow_mut().insert(name.to_string(), id);
        Some(id)
    }

    fn add(&self, name: &str, by: u64) {
        if by == 0 {
            return;
        }
        if let Some(id) = self.id(MetricType::Counter, name) {
            let mut p = self.pending.borrow_mut();
            let slot = p.entry(id).or_insert(0);
            *slot = slot.saturating_add(by);
        }
    }

    /// Sends the summed counter increments to Envoy.
    pub fn flush(&self) {
        let pending: Vec<(u32, u64)> = self.pending.borrow_mut().drain().collect();
        for (id, by) in pending {
            let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
        let samples: Vec<(u32, u64)> = self.samples.borrow_mut().drain(..).collect();
        for (id, v) in samples {
            let _ = hostcalls::record_metric(id, v);
        }
    }

    fn set_gauge(&self, name: &str, value: u64) {
        if let Some(id) = self.id(MetricType::Gauge, name) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    fn record(&self, name: &str, value: u64) {
        if let Some(id) = self.id(MetricType::Histogram, name) {
            let mut q = self.samples.borrow_mut();
            if q.len() < MAX_QUEUED_SAMPLES {
                q.push((id, value));
            } else {
                let _ = hostcalls::record_metric(id, value);
            }
        }
    }
}

impl crate::core::host::MetricsSink for Metrics {
    fn incr(&self, name: &str, by: u64) {
        self.add(name, by);
    }
    fn histogram(&self, name: &str, value: u64) {
        self.record(name, value);
    }
    fn gauge(&self, name: &str, value: u64) {
        self.set_gauge(name, value);
    }
}

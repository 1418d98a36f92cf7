//! Implementations of the core's host traits with proxy-wasm hostcalls.

use crate::core::host::{Clock, SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;
use std::time::UNIX_EPOCH;

pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(v), Some(cas))) => Ok(Some((v, cas))),
            Ok((Some(v), None)) => Ok(Some((v, 0))),
            Ok((None, _)) => Ok(None),
            Err(Status::NotFound) => Ok(None),
            Err(_) => Err(StoreError::Unavailable),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Unavailable),
        }
    }
}

pub struct HostClock;

impl Clock for HostClock {
    fn now_ms(&self) -> u64 {
        host_now_ms()
    }
}

fn host_now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The host clock read once per host event: every decision of one callback
/// sees the same millisecond, and the request path pays one hostcall per
/// event instead of one per reading. [`EventClock::tick`] at the start of
/// each callback.
#[derive(Default)]
pub struct EventClock {
    now: std::cell::Cell<Option<u64>>,
}

impl EventClock {
    /// A new host event: the next reading asks the host again.
    pub fn tick(&self) {
        self.now.set(None);
    }
}

impl Clock for EventClock {
    fn now_ms(&self) -> u64 {
        match self.now.get() {
            Some(t) => t,
            None => {
                let t = host_now_ms();
                self.now.set(Some(t));
                t
            }
        }
    }
}

/// The status (`None` on timeout or reset: no headers) and body of the HTTP
/// callout whose response is being delivered.
pub fn call_response(num_headers: usize, body_size: usize) -> (Option<u32>, Option<Vec<u8>>) {
    let status = if num_headers == 0 {
        None
    } else {
        hostcalls::get_map_value(
            proxy_wasm::types::MapType::HttpCallResponseHeaders,
            ":status",
        )
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u32>().ok())
    };
    let body = if body_size > 0 {
        hostcalls::get_buffer(
            proxy_wasm::types::BufferType::HttpCallResponseBody,
            0,
            body_size,
        )
        .ok()
        .flatten()
    } else {
        None
    };
    (status, body)
}

/// Dispatches a fleet lease callout (from a request or the root context:
/// its answer comes back to the dispatching context).
pub fn dispatch_lease(c: &crate::core::fleet::LeaseCallout) -> Result<u32, Status> {
    hostcalls::dispatch_http_call(
        &c.cluster,
        c.request.headers(&c.authority),
        (!c.request.body.is_empty()).then_some(c.request.body.as_slice()),
        vec![],
        std::time::Duration::from_millis(c.timeout_ms),
    )
}

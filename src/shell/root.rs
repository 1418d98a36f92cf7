//! The root context: configuration at plugin start, shared state for the
//! per-request contexts.

use super::host::{HostClock, HostStore};
use crate::core::audit::label;
use crate::core::breaker::Breaker;
use crate::core::cache;
use crate::core::host::Clock;
use crate::core::host::MetricsSink;
use std::time::Duration;

const MAX_STORES_IN_FLIGHT: usize = 64;
use super::http::Http;
use super::metrics::Metrics;
use crate::core::config::Config;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::rc::Rc;

use crate::core::exchange::{PendingStore, VmState};

/// How often the root context sends queued cache stores and flushes the
/// summed counters.
pub const TICK: Duration = Duration::from_millis(10);

#[derive(Default)]
pub struct Root {
    config: Option<Rc<Config>>,
    metrics: Rc<Metrics>,
    /// State shared by this VM's exchanges (L1 cache, queued stores, label
    /// bounds).
    vm: Rc<VmState>,
    /// Store callouts in flight.
    in_flight: usize,
    /// This root context's id (to restore after acting for a follower).
    context_id: u32,
    /// Fleet callouts the root dispatched, by token.
    fleet_tokens: Vec<(u32, crate::core::fleet::Ticket)>,
    /// Semantic-tier stores in flight, by token (answered in RESP).
    semantic_tokens: Vec<u32>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        _token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let (status, body) = super::host::call_response(num_headers, body_size);
        if let Some(i) = self.fleet_tokens.iter().position(|(t, _)| *t == _token_id) {
            let (_, ticket) = self.fleet_tokens.swap_remove(i);
            if let Some(fleet) = self.config.as_ref().and_then(|c| c.fleet.as_ref()) {
                let r = fleet.on_response(&HostStore, &HostClock, &ticket, status, body.as_deref());
                crate::core::exchange::count_fleet_answer(&*self.metrics, &r);
            }
            return;
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(i) = self.semantic_tokens.iter().position(|t| *t == _token_id) {
            self.semantic_tokens.swap_remove(i);
            match crate::core::semantic::interpret_store(status, body.as_deref()) {
                Ok(()) => self
                    .metrics
                    .incr("llmgate.semantic_cache_total.outcome.store", 1),
                Err(reason) => {
                    self.metrics
                        .incr("llmgate.dependency_failures_total.dependency.vectors", 1);
                    self.metrics.incr(
                        &format!(
                            "llmgate.semantic_cache_total.outcome.error.reason.{}",
                            label(reason)
                        ),
                        1,
                    );
                }
            }
            return;
        }
        match cache::interpret_store(status, body.as_deref()) {
            Ok(()) => self.metrics.incr("llmgate.cache_total.outcome.store", 1),
            Err(reason) => {
                self.metrics
                    .incr("llmgate.dependency_failures_total.dependency.webdis", 1);
                self.metrics.incr(
                    &format!("llmgate.cache_total.outcome.error.reason.{}", label(reason)),
                    1,
                );
            }
        }
    }
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            ..Self::default()
        }
    }

    /// Answers (or releases) the requests of this VM waiting behind a
    /// coalescing leader, acting in each follower's context. A follower
    /// whose client went away has left the list in its own `on_log`, so no
    /// dead context is touched.
    fn serve_followers(&mut self, config: &Config) {
        use crate::core::cache;
        use crate::core::coalesce::Poll;
        use crate::core::exchange::{coalesced_reply, Coalesced};
        use proxy_wasm::hostcalls;
        let now = HostClock.now_ms();
        let waiting = std::mem::take(&mut *self.vm.followers.borrow_mut());
        let mut keep = Vec::new();
        // One poll per (slot, key): the entry (decoded once) or a failure.
        type Polled = ((u32, String), Option<Rc<cache::Entry>>, bool);
        let mut polled: Vec<Polled> = Vec::new();
        for f in waiting {
            let id = (f.slot, f.key.clone());
            let (entry, failed) = match polled.iter().find(|(k, _, _)| *k == id) {
                Some((_, e, failed)) => (e.clone(), *failed),
                None => {
                    let p = config
                        .cache
                        .coalesce
                        .poll(&HostStore, &HostClock, f.slot, &f.key);
                    let (e, failed) = match p {
                        Poll::Ready(bytes) => match cache::decode(&bytes) {
                            Ok(e) => (Some(Rc::new(e)), false),
                            Err(_) => (None, true),
                        },
                        Poll::Pending => (None, false),
                        Poll::Failed => (None, true),
                    };
                    polled.push((id, e.clone(), failed));
                    (e, failed)
                }
            };
            match entry {
                Some(e) if e.answers(f.api, f.stream) => {
                    let reply = coalesced_reply(&e, &f.request_id);
                    if hostcalls::set_effective_context(f.context_id).is_ok() {
                        let headers: Vec<(&str, &str)> = reply
                            .headers
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect();
                        let _ =
                            hostcalls::send_http_response(reply.status, headers, Some(&reply.body));
                        self.vm
                            .coalesced
                            .borrow_mut()
                            .insert(f.context_id, Coalesced::Served(e));
                    }
                }
                Some(_) => self.release(f.context_id),
                None if failed || now >= f.deadline_ms => self.release(f.context_id),
                None => keep.push(f),
            }
        }
        self.vm.followers.borrow_mut().extend(keep);
        let _ = hostcalls::set_effective_context(self.context_id);
    }

    /// Fleet mode on the tick: lease renewals and give-backs (callouts from
    /// the root context; their answers come back to it).
    fn fleet_tick(&mut self, fleet: &crate::core::fleet::Fleet, config: &Config) {
        let report = fleet.tick(&HostStore, &HostClock, &config.fleet_scopes);
        let mut callouts = report.callouts;
        callouts.extend(self.vm.fleet_pending.borrow_mut().drain(..));
        for c in callouts {
            match super::host::dispatch_lease(&c) {
                Ok(t) => self.fleet_tokens.push((t, c.ticket)),
                Err(_) => {
                    let _ = fleet.on_answer(
                        &HostStore,
                        &HostClock,
                        &c.ticket,
                        Err(crate::core::fleet::CalloutFailure::Dispatch),
                    );
                }
            }
        }
    }

    /// Lets a follower go upstream on its own.
    fn release(&self, context_id: u32) {
        use proxy_wasm::hostcalls;
        if hostcalls::set_effective_context(context_id).is_ok() {
            let _ = hostcalls::resume_http_request();
            self.vm
                .coalesced
                .borrow_mut()
                .insert(context_id, crate::core::exchange::Coalesced::Released);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match Config::from_json(&bytes) {
            Ok(config) => {
                if config.budgets_enabled {
                    // Create the shared-data buckets before any request, so
                    // every request-path write is a CAS on an existing key.
                    if let Err(e) = config.budgets.init(&HostStore) {
                        log::warn!("llmgate: budget store init: {e:?}");
                    }
                }
                if let Some(fleet) = &config.fleet {
                    let candidate = format!("envoy-{}-{}", HostClock.now_ms(), self.context_id);
                    if let Err(e) = fleet.init(&HostStore, &config.fleet_scopes, &candidate) {
                        log::warn!("llmgate: fleet init: {e:?}");
                    }
                }
                if let Err(e) = config.cache.coalesce.init(&HostStore) {
                    log::warn!("llmgate: coalescing slots init: {e:?}");
                }
                if let Some(b) = &config.breaker {
                    let _ = b;
                    let names: Vec<&str> =
                        config.upstreams.iter().map(|u| u.name.as_str()).collect();
                    if let Err(e) = Breaker::init(&HostStore, names) {
                        log::warn!("llmgate: breaker store init: {e:?}");
                    }
                }
                self.set_tick_period(TICK);
                self.vm = Rc::new(VmState::new(config.cache.l1_bytes));
                log::info!("llmgate: configuration loaded");
                self.config = Some(Rc::new(config));
                true
            }
            Err(e) => {
                // Returning false makes Envoy refuse the plugin.
                log::error!("llmgate: invalid configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(Http::new(
            context_id,
            config,
            self.metrics.clone(),
            self.vm.clone(),
        )))
    }

    fn on_tick(&mut self) {
        self.metrics.flush();
        let Some(config) = self.config.clone() else {
            return;
        };
        if config.cache.coalesce.enabled && !self.vm.followers.borrow().is_empty() {
            self.serve_followers(&config);
        }
        if let Some(fleet) = &config.fleet {
            self.fleet_tick(fleet, &config);
        }
        let pending: Vec<PendingStore> = self.vm.stores.borrow_mut().drain(..).collect();
        for p in pending {
            // Bound the work in flight: drop stores when webdis is slow.
            if self.in_flight >= MAX_STORES_IN_FLIGHT {
                self.metrics
                    .incr("llmgate.cache_total.outcome.error.reason.backlog", 1);
                continue;
            }
            let headers = vec![
                (":method", "PUT"),
                (":path", p.path.as_str()),
                (":authority", "webdis"),
                ("content-type", "application/octet-stream"),
            ];
            let (cluster, timeout) = if p.semantic {
                let s = &config.cache.semantic;
                (&s.cluster, Duration::from_millis(s.timeout_ms.max(500)))
            } else {
                (
                    &config.cache.cluster,
                    config.cache.timeout().max(Duration::from_millis(500)),
                )
            };
            match self.dispatch_http_call(cluster, headers, Some(&p.body), vec![], timeout) {
                Ok(token) => {
                    self.in_flight = self.in_flight.saturating_add(1);
                    if p.semantic {
                        self.semantic_tokens.push(token);
                    }
                }
                Err(_) if p.semantic => {
                    self.metrics
                        .incr("llmgate.dependency_failures_total.dependency.vectors", 1);
                    self.metrics.incr(
                        "llmgate.semantic_cache_total.outcome.error.reason.dispatch",
                        1,
                    );
                }
                Err(_) => {
                    self.metrics
                        .incr("llmgate.dependency_failures_total.dependency.webdis", 1);
                    self.metrics
                        .incr("llmgate.cache_total.outcome.error.reason.dispatch", 1);
                }
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

//! The per-request context: turns proxy-wasm events into calls on the core's
//! [`Exchange`] and applies the effects that come back with hostcalls. Every
//! decision lives in the core (`src/core/exchange.rs`).

use super::host::{EventClock, HostStore};
use super::metrics::Metrics;
use crate::core::config::Config;
use crate::core::exchange::{BodyRead, Exchange, Flow, VmState};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

pub struct Http {
    config: Rc<Config>,
    ex: Exchange,
    /// Read once per callback (reset at each one).
    clock: Rc<EventClock>,
    /// Size of the body buffered at the current body event (the range the
    /// core's body edits replace).
    req_body_size: usize,
    resp_body_size: usize,
    /// Lease callouts this request dispatched, by callout token.
    fleet_tokens: Vec<(u32, crate::core::fleet::Ticket)>,
    /// Wake-up callouts in flight (fleet waits).
    fleet_polls: Vec<u32>,
    /// Effects being applied come from a callout answer (the request is
    /// paused), not from a stream event.
    in_callback: bool,
}

impl Http {
    pub fn new(context_id: u32, config: Rc<Config>, metrics: Rc<Metrics>, vm: Rc<VmState>) -> Self {
        let clock = Rc::new(EventClock::default());
        Self {
            ex: Exchange::new(
                context_id,
                config.clone(),
                metrics,
                Rc::new(HostStore),
                clock.clone(),
                vm,
            ),
            clock,
            config,
            req_body_size: 0,
            resp_body_size: 0,
            fleet_tokens: Vec::new(),
            fleet_polls: Vec::new(),
            in_callback: false,
        }
    }

    /// Applies the core's effects in a fixed order; a callout that cannot
    /// be dispatched is reported back to the core (which then continues).
    fn apply(&mut self, mut flow: Flow) -> Action {
        loop {
            let fx = self.ex.take_effects();
            if let Some(h) = &fx.request_headers {
                self.set_http_request_headers(pairs(h));
            }
            if let Some(b) = &fx.request_body {
                self.set_http_request_body(0, self.req_body_size, b);
            }
            if let Some(h) = &fx.response_headers {
                self.set_http_response_headers(pairs(h));
            }
            if let Some(b) = &fx.response_body {
                self.set_http_response_body(0, self.resp_body_size, b);
            }
            if let Some(r) = &fx.reply {
                self.send_http_response(r.status, pairs(&r.headers), Some(&r.body));
            }
            if let Some(a) = &fx.audit {
                self.set_property(vec!["llmgate_audit"], Some(a));
            }
            if let Some(path) = &fx.cache_lookup {
                let headers = vec![
                    (":method", "GET"),
                    (":path", path.as_str()),
                    (":authority", "webdis"),
                ];
                let cache = &self.config.cache;
                if self
                    .dispatch_http_call(&cache.cluster, headers, None, vec![], cache.timeout())
                    .is_err()
                {
                    flow = self.ex.on_cache_dispatch_failed();
                    continue;
                }
            }
            if let Some(c) = &fx.callout {
                let headers: Vec<(&str, &str)> = pairs(&c.headers);
                if self
                    .dispatch_http_call(
                        &c.cluster,
                        headers,
                        Some(&c.body),
                        vec![],
                        std::time::Duration::from_millis(c.timeout_ms),
                    )
                    .is_err()
                {
                    let f = self.ex.on_semantic_dispatch_failed(self.in_callback);
                    if !self.in_callback {
                        flow = f;
                    }
                    continue;
                }
            }
            for c in &fx.fleet_callouts {
                match super::host::dispatch_lease(c) {
                    Ok(token) => self.fleet_tokens.push((token, c.ticket.clone())),
                    Err(_) => self.ex.on_fleet_dispatch_failed(&c.ticket),
                }
            }
            if fx.fleet_poll {
                if let Some(fleet) = &self.config.fleet {
                    let authority = fleet.cfg.authority.clone();
                    match self.dispatch_http_call(
                        &fleet.cfg.cluster,
                        vec![
                            (":method", "GET"),
                            (":path", "/PING"),
                            (":authority", &authority),
                        ],
                        None,
                        vec![],
                        std::time::Duration::from_millis(fleet.cfg.timeout_ms.max(1)),
                    ) {
                        Ok(t) => self.fleet_polls.push(t),
                        Err(_) => {
                            self.ex.on_fleet_wake();
                            continue;
                        }
                    }
                }
            }
            if fx.resume {
                self.resume_http_request();
            }
            break;
        }
        match flow {
            Flow::Continue => Action::Continue,
            Flow::Pause => Action::Pause,
        }
    }

    /// Applies the effects of a callout answer.
    fn apply_in_callback(&mut self) {
        self.in_callback = true;
        self.apply(Flow::Continue);
        self.in_callback = false;
    }

    /// Envoy's response flags say the downstream went away (connection
    /// termination or a stream reset by the client).
    fn downstream_gone(&self) -> bool {
        const DOWNSTREAM_CONNECTION_TERMINATION: u64 = 0x4000;
        const DOWNSTREAM_REMOTE_RESET: u64 = 0x1000_0000;
        let flags = self
            .get_property(vec!["response", "flags"])
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0);
        if flags & (DOWNSTREAM_CONNECTION_TERMINATION | DOWNSTREAM_REMOTE_RESET) != 0 {
            return true;
        }
        self.get_property(vec!["response", "code_details"])
            .is_some_and(|d| d.windows(10).any(|w| w == b"downstream"))
    }
}

fn pairs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.clock.tick();
        if let Some(i) = self.fleet_tokens.iter().position(|(t, _)| *t == token_id) {
            let (_, ticket) = self.fleet_tokens.swap_remove(i);
            let (status, body) = super::host::call_response(num_headers, body_size);
            self.ex.on_fleet_answer(&ticket, status, body.as_deref());
            self.apply(Flow::Continue);
            return;
        }
        if self.ex.waiting_cache() {
            let (status, body) = super::host::call_response(num_headers, body_size);
            self.ex.on_cache_answer(status, body.as_deref());
            self.apply_in_callback();
            return;
        }
        if self.ex.waiting_semantic() {
            let (status, body) = super::host::call_response(num_headers, body_size);
            self.ex.on_semantic_answer(status, body.as_deref());
            self.apply_in_callback();
            return;
        }
        if let Some(i) = self.fleet_polls.iter().position(|t| *t == token_id) {
            self.fleet_polls.swap_remove(i);
            self.ex.on_fleet_wake();
            self.apply(Flow::Continue);
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        #[cfg(feature = "ablation")]
        if option_env!("LLMGATE_EXP") == Some("1") {
            return Action::Continue;
        }
        self.clock.tick();
        let headers = self.get_http_request_headers();
        let flow = self.ex.on_request_headers(headers, end_of_stream);
        self.apply(flow)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.clock.tick();
        match self.ex.request_body_event(body_size, end_of_stream) {
            Err(flow) => self.apply(flow),
            Ok(()) => {
                self.req_body_size = body_size;
                let body = self.get_http_request_body(0, body_size).unwrap_or_default();
                let flow = self.ex.on_request_body(&body);
                self.apply(flow)
            }
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.clock.tick();
        let flow = self.ex.on_request_trailers();
        self.apply(flow)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        #[cfg(feature = "ablation")]
        if option_env!("LLMGATE_EXP") == Some("2") {
            return Action::Continue;
        }
        self.clock.tick();
        if !self.ex.wants_response_headers() {
            return Action::Continue;
        }
        let headers = self.get_http_response_headers();
        let flow = self.ex.on_response_headers(headers, end_of_stream);
        self.apply(flow)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.clock.tick();
        let bytes = match self.ex.response_body_read(body_size, end_of_stream) {
            BodyRead::Bytes if body_size > 0 => self
                .get_http_response_body(0, body_size)
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        self.resp_body_size = body_size;
        let flow = self.ex.on_response_body(bytes, body_size, end_of_stream);
        self.apply(flow)
    }

    fn on_log(&mut self) {
        self.clock.tick();
        let gone = self.ex.needs_abort_check() && self.downstream_gone();
        self.ex.on_log(gone);
        self.apply(Flow::Continue);
    }
}

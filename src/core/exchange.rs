//! One LLM exchange, from the request headers to the audit record, as a
//! state machine over plain values (issue 15). The shell turns each host
//! event into a call here and applies the [`Effects`] that come back with
//! hostcalls; nothing in this module talks to the host except through the
//! core's traits ([`SharedStore`], [`Clock`], [`MetricsSink`]).
//!
//! Event order (as Envoy delivers them): [`Exchange::on_request_headers`],
//! [`Exchange::on_request_body`] (whole body, once), optionally
//! [`Exchange::on_request_trailers`], [`Exchange::on_cache_answer`] or
//! [`Exchange::on_cache_dispatch_failed`] after a lookup, then
//! [`Exchange::on_response_headers`], [`Exchange::on_response_body`] (per
//! chunk) and [`Exchange::on_log`] at the end, whatever happened.

use crate::core::api::{self, Api, ApiError, RouteKind};
use crate::core::audit::{label, rfc3339_ms, AuditRecord};
use crate::core::breaker::{Admission, BreakerState, Outcome};
use crate::core::budget::{
    Actual, CompiledLimits, DenialReason, Estimate, RateLimitInfo, Reservation, ScopeId,
};
use crate::core::cache::{
    self, ClientCache, Entry, Lookup, Plan, StreamRecorder, HEADER_BYPASS, HEADER_HIT, HEADER_MISS,
    L1,
};
use crate::core::config::{AuthMode, Config, EncodedBody, OtherPaths};
use crate::core::cost::format_usd;
use crate::core::host::{Clock, MetricsSink, SharedStore};
use crate::core::labels::LabelCap;
use crate::core::pipeline::{self, Head, Identity};
use crate::core::prompts::{self, Selection};
use crate::core::respfilter::{self, Findings, StreamFilter};
use crate::core::routing::{self, RequestFacts};
use crate::core::semantic;
use crate::core::sse::SseParser;
use crate::core::translate::{self, RequestOptions, ResponseOptions, StreamTranslator};
use crate::core::usage::{self, IncludeUsage, StreamTracker, Usage, Verdict};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

/// Whether the host should let the stream go on or hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// A local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the shell must do after an event, in this order: request headers,
/// request body, response headers, response body, local reply, audit
/// property, cache lookup callout, resume.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Replace every request header with these.
    pub request_headers: Option<Vec<(String, String)>>,
    /// Replace the (whole, buffered) request body.
    pub request_body: Option<Vec<u8>>,
    /// Replace every response header with these.
    pub response_headers: Option<Vec<(String, String)>>,
    /// Replace the current response body chunk (or the buffered body).
    pub response_body: Option<Vec<u8>>,
    pub reply: Option<Reply>,
    /// The audit line (filter state `llmgate_audit`).
    pub audit: Option<Vec<u8>>,
    /// GET this path on the cache cluster; on a dispatch failure call
    /// [`Exchange::on_cache_dispatch_failed`].
    pub cache_lookup: Option<String>,
    /// An HTTP callout for this request (semantic cache: embeddings, vector
    /// search); its answer goes to [`Exchange::on_semantic_answer`], a
    /// dispatch failure to [`Exchange::on_semantic_dispatch_failed`].
    pub callout: Option<Callout>,
    /// Resume the paused request.
    pub resume: bool,
    /// Fleet lease callouts to dispatch from this context; their answers go
    /// to [`Exchange::on_fleet_answer`].
    pub fleet_callouts: Vec<crate::core::fleet::LeaseCallout>,
    /// Waiting for a lease another request or worker is fetching: send a
    /// cheap callout (`GET /PING` to the fleet cluster) whose answer wakes
    /// this request to try again ([`Exchange::on_fleet_wake`]). A request
    /// can only be woken by an event of its own.
    pub fleet_poll: bool,
}

/// An HTTP callout to dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// A cache store waiting to be sent by the root context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingStore {
    pub path: String,
    pub body: Vec<u8>,
    /// A semantic-tier store (to `cache.semantic.cluster`, answered in
    /// RESP) rather than an exact one (to `cache.cluster`).
    pub semantic: bool,
}

/// State shared by the exchanges of one VM (one worker).
#[derive(Default)]
pub struct VmState {
    /// This VM's in-memory cache in front of Redis.
    pub l1: RefCell<L1>,
    /// Stores queued for the root context's tick.
    pub stores: RefCell<Vec<PendingStore>>,
    /// Distinct values used per request-derived label family (capped).
    pub labels: RefCell<LabelCap>,
    /// Requests of this VM paused behind a coalescing leader; the root
    /// context's tick answers or releases them.
    pub followers: RefCell<Vec<Follower>>,
    /// What the root did for a follower (by context id), for its exchange
    /// to account for.
    pub coalesced: RefCell<std::collections::HashMap<u32, Coalesced>>,
    /// Fleet callouts from settlements, sent by the root context (they
    /// outlive the request).
    pub fleet_pending: RefCell<Vec<crate::core::fleet::LeaseCallout>>,
}

/// A request waiting for a coalescing leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    pub context_id: u32,
    pub slot: u32,
    pub key: String,
    pub api: Api,
    pub stream: bool,
    pub request_id: String,
    pub deadline_ms: u64,
}

/// The root context's action for a follower.
#[derive(Debug, Clone)]
pub enum Coalesced {
    /// Answered with the leader's entry.
    Served(Rc<Entry>),
    /// Resumed: it goes upstream on its own.
    Released,
}

/// The local reply a follower gets from its leader's entry.
pub fn coalesced_reply(entry: &Entry, request_id: &str) -> Reply {
    let mut headers = vec![
        ("content-type".to_string(), entry.content_type.clone()),
        ("x-llmgate-request-id".to_string(), request_id.to_string()),
        ("x-llmgate-cache".to_string(), HEADER_COALESCED.to_string()),
        ("x-llmgate-upstream".to_string(), "cache".to_string()),
    ];
    if let Some(m) = &entry.model {
        headers.push(("x-llmgate-model".to_string(), m.clone()));
    }
    Reply {
        status: 200,
        headers,
        body: entry.body.clone(),
    }
}

/// Metrics of a fleet lease callout's answer (request or root context).
pub fn count_fleet_answer(metrics: &dyn MetricsSink, report: &crate::core::fleet::AnswerReport) {
    match &report.failure {
        Some(f) => {
            metrics.incr("llmgate.dependency_failures_total.dependency.fleet", 1);
            metrics.incr(
                &format!("llmgate.fleet_callouts_total.outcome.{}", f.reason()),
                1,
            );
        }
        None => metrics.incr("llmgate.fleet_callouts_total.outcome.ok", 1),
    }
    if !report.store_failures.is_empty() {
        metrics.incr(
            "llmgate.dependency_failures_total.dependency.shared_data",
            report.store_failures.len() as u64,
        );
    }
}

/// `x-llmgate-cache` of a follower answered from its leader.
pub const HEADER_COALESCED: &str = "coalesced";
/// `x-llmgate-cache` (and audit `cache`) of an answer from the semantic tier.
pub const HEADER_SEMANTIC_HIT: &str = "semantic-hit";
/// Audit `cache` of a request the semantic tier looked up and missed.
pub const AUDIT_SEMANTIC_MISS: &str = "semantic-miss";

/// A `PUT` to webdis (semantic search).
fn webdis_put(cluster: &str, path: String, body: Vec<u8>, timeout_ms: u64) -> Callout {
    Callout {
        cluster: cluster.to_string(),
        headers: vec![
            (":method".to_string(), "PUT".to_string()),
            (":path".to_string(), path),
            (":authority".to_string(), "webdis".to_string()),
            (
                "content-type".to_string(),
                "application/octet-stream".to_string(),
            ),
        ],
        body,
        timeout_ms,
    }
}

impl VmState {
    pub fn new(l1_bytes: usize) -> Self {
        Self {
            l1: RefCell::new(L1::new(l1_bytes)),
            ..Self::default()
        }
    }
}

/// How much of the response body the shell must read at this event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRead {
    /// Nothing (not looked at, or not yet: buffering until the end).
    Nothing,
    /// The bytes of this event (the chunk, or the whole buffered body).
    Bytes,
}

/// The request header the shipped Envoy routes match to pick a cluster.
pub const ROUTE_HEADER: &str = "x-llmgate-route";

/// Largest non-streamed response body copied for accounting (bigger ones
/// pass uncounted: no usage, not cached).
const MAX_OBSERVED_BYTES: u64 = 16 * 1024 * 1024;

/// The request as the body step left it when it had to wait for a fleet
/// lease.
struct Parked {
    req: api::ParsedRequest,
    model: String,
    modified: bool,
}

/// How a finished exchange's reservations are closed.
#[derive(Debug, Clone, Copy)]
enum Charge {
    /// Settled to the reported usage (or the estimate without one).
    Usage,
    /// A stream cut short (client gone, upstream reset): what was delivered.
    Delivered { tokens: u64, micro_usd: u64 },
    /// Failed or refused: released (the request stays counted).
    Release,
}

/// How the response body is handled.
enum Body {
    /// Not looked at (not an LLM request, or a local reply).
    Ignore,
    /// JSON (or anything not SSE): buffered whole, headers held, because
    /// the response filter or the token/cost headers need the whole body
    /// before the client sees anything.
    Buffer,
    /// JSON (or anything not SSE) that nothing needs to hold: the headers
    /// go at once, the body is copied as it passes (usage, cache store).
    Observe(Vec<u8>),
    /// SSE: parsed event by event as it flows.
    Stream {
        parser: Box<SseParser>,
        tracker: Box<StreamTracker>,
        filter: Option<Box<StreamFilter>>,
        /// Cross-provider: the upstream's events, parsed and translated
        /// into the client's API before everything else sees them.
        translator: Option<Box<(SseParser, StreamTranslator)>>,
    },
}

pub struct Exchange {
    context_id: u32,
    config: Rc<Config>,
    metrics: Rc<dyn MetricsSink>,
    store: Rc<dyn SharedStore>,
    clock: Rc<dyn Clock>,
    vm: Rc<VmState>,
    /// Effects of the current event, taken by the shell.
    fx: Effects,
    /// `Some` once the request is recognised as an LLM call.
    api: Option<Api>,
    request_id: String,
    /// A local reply was sent; ignore further callbacks.
    replied: bool,
    identity: Option<Identity>,
    start_ms: u64,
    first_byte_ms: Option<u64>,
    first_token_ms: Option<u64>,
    model: Option<String>,
    stream: bool,
    include_usage: IncludeUsage,
    upstream: String,
    body: Body,
    usage: Option<Usage>,
    served_model: Option<String>,
    status: u32,
    completed: bool,
    reason: Option<String>,
    cache_status: &'static str,
    logged: bool,
    reservation: Option<Reservation>,
    /// Headers added to whatever response the client gets (rate limits).
    extra_headers: Vec<(&'static str, String)>,
    upstream_index: usize,
    probe: bool,
    sent_model: Option<String>,
    cache_plan: Plan,
    cache_key: Option<String>,
    waiting_cache: bool,
    cache_hit: bool,
    recorder: Option<StreamRecorder>,
    content_type: String,
    prompt: Option<Selection>,
    /// Request guard results, for metrics and the audit line.
    flagged: Vec<&'static str>,
    redacted: Vec<(&'static str, u32)>,
    response_findings: Findings,
    /// A content-encoded body forwarded unparsed (`encoded_body: pass`).
    passthrough: bool,
    /// Request headers, read once; edits applied in one hostcall.
    req_headers: Vec<(String, String)>,
    req_headers_dirty: bool,
    /// Response headers held while the body is buffered.
    resp_headers: Vec<(String, String)>,
    /// The client's `x-llmgate-*` headers, removed from the request.
    client_headers: Vec<(String, String)>,
    /// An authenticated request on another path (`other_paths:
    /// authenticated`): its reservation is released at the end.
    other_path: bool,
    /// The request body was complete and handled.
    body_done: bool,
    /// Estimated input tokens (for settling an interrupted stream).
    estimated_input: u64,
    /// The client went away before the response ended.
    client_aborted: bool,
    /// The API of the upstream that serves the request (the client's
    /// unless the upstream declares another: then llmgate translates).
    upstream_api: Option<Api>,
    /// The upstream's own status (before translation to the client's).
    upstream_status: u32,
    /// Coalescing: the slot this request leads, the entry it publishes, and
    /// whether it waits as a follower.
    coalesce_leader: Option<u32>,
    coalesce_entry: Option<Vec<u8>>,
    waiting_coalesce: bool,
    /// Fleet mode: the parked request, what it reserved in leases, when its
    /// wait for a lease ends, and its estimate.
    parked: Option<Parked>,
    fleet_res: Option<crate::core::fleet::FleetReservation>,
    fleet_wait_until: Option<u64>,
    fleet_estimate: Estimate,
    /// The semantic cache tier of this request.
    sem: Sem,
}

/// Where a request is in the semantic tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum SemStep {
    /// Not started (or not used).
    #[default]
    Idle,
    Embedding,
    Searching,
    Done,
}

/// The semantic tier's per-request state.
#[derive(Default)]
struct Sem {
    lookup: Option<crate::core::semantic::Lookup>,
    step: SemStep,
    started_ms: u64,
    /// The question's embedding (little-endian f32), kept for the store.
    vector: Option<Vec<u8>>,
    /// `semantic-hit` / `semantic-miss` for the audit line.
    audit: Option<&'static str>,
    /// Embedding tokens and cost (charged to the key).
    tokens: u64,
    micro_usd: u64,
}

impl Exchange {
    pub fn new(
        context_id: u32,
        config: Rc<Config>,
        metrics: Rc<dyn MetricsSink>,
        store: Rc<dyn SharedStore>,
        clock: Rc<dyn Clock>,
        vm: Rc<VmState>,
    ) -> Self {
        Self {
            context_id,
            config,
            metrics,
            store,
            clock,
            vm,
            fx: Effects::default(),
            api: None,
            request_id: String::new(),
            replied: false,
            identity: None,
            start_ms: 0,
            first_byte_ms: None,
            first_token_ms: None,
            model: None,
            stream: false,
            include_usage: IncludeUsage::NotStreaming,
            upstream: "primary".to_string(),
            body: Body::Ignore,
            usage: None,
            served_model: None,
            status: 0,
            completed: false,
            reason: None,
            cache_status: "bypass",
            logged: false,
            reservation: None,
            extra_headers: Vec::new(),
            upstream_index: 0,
            probe: false,
            sent_model: None,
            cache_plan: Plan::Disabled,
            cache_key: None,
            waiting_cache: false,
            cache_hit: false,
            recorder: None,
            content_type: String::new(),
            prompt: None,
            flagged: Vec::new(),
            redacted: Vec::new(),
            response_findings: Findings::default(),
            passthrough: false,
            req_headers: Vec::new(),
            req_headers_dirty: false,
            resp_headers: Vec::new(),
            client_headers: Vec::new(),
            other_path: false,
            body_done: false,
            estimated_input: 0,
            client_aborted: false,
            upstream_api: None,
            upstream_status: 0,
            coalesce_leader: None,
            coalesce_entry: None,
            waiting_coalesce: false,
            parked: None,
            fleet_res: None,
            fleet_wait_until: None,
            fleet_estimate: Estimate::default(),
            sem: Sem::default(),
        }
    }

    fn reply_error(&mut self, api: Api, err: &ApiError) -> Flow {
        let body = err.body(api);
        let retry_after = err.retry_after_s.map(|s| s.to_string());
        let mut headers: Vec<(&str, &str)> = vec![
            ("content-type", "application/json"),
            ("x-llmgate-request-id", self.request_id.as_str()),
        ];
        if let Some(r) = retry_after.as_deref() {
            headers.push(("retry-after", r));
        }
        let extra = self.extra_headers.clone();
        for (k, v) in &extra {
            headers.push((k, v.as_str()));
        }
        self.fx.reply = Some(Reply {
            status: err.status,
            headers: owned(&headers),
            body,
        });
        self.replied = true;
        self.status = err.status;
        self.completed = true;
        self.reason = Some(err.code.to_string());
        self.metrics.incr(
            &format!(
                "llmgate.rejected_total.api.{}.code.{}",
                api.as_str(),
                err.code
            ),
            1,
        );
        self.finish();
        Flow::Pause
    }

    /// Accounts for the request: metrics and the audit line. Runs once, at
    /// the end of the response, a local reply, or when the stream is torn
    /// down (`on_log`) with whatever was known.
    fn finish(&mut self) {
        #[cfg(feature = "ablation")]
        if option_env!("LLMGATE_EXP") == Some("3") {
            return;
        }
        if self.logged {
            return;
        }
        let Some(api) = self.api else {
            return;
        };
        self.logged = true;
        if let (Some(slot), Some(key)) = (self.coalesce_leader.take(), self.cache_key.as_deref()) {
            // The leader's answer (or its failure) for its followers.
            let entry = self.coalesce_entry.take();
            self.config.cache.coalesce.publish(
                &*self.store,
                &*self.clock,
                slot,
                key,
                entry.as_deref(),
            );
        }
        let now = self.clock.now_ms();
        let latency = now.saturating_sub(self.start_ms);
        let model = self
            .served_model
            .clone()
            .or_else(|| self.model.clone())
            .unwrap_or_default();
        let model_label = self.model_label(&model);
        let outcome = if self.cache_hit {
            "cache_hit"
        } else if self.replied {
            "blocked"
        } else if !self.completed {
            "incomplete"
        } else if self.status >= 500 {
            "upstream_error"
        } else if self.status >= 400 {
            "client_error"
        } else {
            "ok"
        };
        let m = &self.metrics;
        m.incr(
            &format!(
                "llmgate.requests_total.api.{}.model.{model_label}.outcome.{outcome}",
                api.as_str()
            ),
            1,
        );
        let cost = self.usage.as_ref().and_then(|u| {
            self.config.prices.cost_micro_usd(&model, u).or_else(|| {
                // An unparsed (encoded) request for an unpriced model is
                // charged at the highest prices, never $0.
                self.passthrough
                    .then(|| self.config.prices.max_price().cost_micro_usd(u))
            })
        });
        let key_label = self
            .identity
            .as_ref()
            .map(|i| label(&i.key_id))
            .unwrap_or_else(|| "none".to_string());
        if let Some(u) = &self.usage {
            m.incr(
                &format!("llmgate.tokens_total.model.{model_label}.direction.in"),
                u.input_tokens,
            );
            m.incr(
                &format!("llmgate.tokens_total.model.{model_label}.direction.out"),
                u.output_tokens,
            );
            match cost {
                Some(c) => m.incr(
                    &format!("llmgate.cost_micro_usd_total.model.{model_label}.key.{key_label}"),
                    c,
                ),
                None => m.incr(
                    &format!("llmgate.cost_unknown_total.model.{model_label}"),
                    1,
                ),
            }
        }
        if !self.replied {
            m.histogram(
                &format!("llmgate.request_duration_ms.model.{model_label}"),
                latency,
            );
            if let Some(t) = self.first_token_ms.or(self.first_byte_ms) {
                m.histogram(
                    &format!("llmgate.ttft_ms.model.{model_label}"),
                    t.saturating_sub(self.start_ms),
                );
            }
            if let (Some(u), Some(first)) =
                (&self.usage, self.first_token_ms.or(self.first_byte_ms))
            {
                let gen_ms = now.saturating_sub(first).max(1);
                let tps = u.output_tokens.saturating_mul(1000) / gen_ms;
                m.histogram(
                    &format!("llmgate.output_tokens_per_second.model.{model_label}"),
                    tps,
                );
            }
            if self.upstream_failed() {
                m.incr(
                    &format!(
                        "llmgate.upstream_failures_total.cluster.{}",
                        label(&self.upstream)
                    ),
                    1,
                );
            }
        }
        if let Some(breaker) = &self.config.breaker {
            if !self.replied {
                let outcome = if self.upstream_failed() || self.status == 429 {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                let rec = breaker.record(
                    &*self.store,
                    &*self.clock,
                    &self.upstream,
                    outcome,
                    self.probe,
                );
                if rec.store_failure.is_some() {
                    m.incr(
                        "llmgate.dependency_failures_total.dependency.shared_data",
                        1,
                    );
                }
                if let Some(t) = rec.transition {
                    self.breaker_transition(&self.upstream, t.to);
                }
            }
        }
        // One decision for local and fleet reservations: settle to the usage,
        // settle to what a cut-short stream delivered, or release.
        let charge = self.charge(&model);
        // The semantic tier's embedding is usage too, whatever the outcome.
        let (sem_tokens, sem_usd) = (self.sem.tokens, self.sem.micro_usd);
        let actual = |fallback_tokens: u64| -> Option<Actual> {
            match charge {
                Charge::Usage => Some(Actual {
                    tokens: self
                        .usage
                        .as_ref()
                        .map_or(fallback_tokens, |u| u.total_tokens())
                        .saturating_add(sem_tokens),
                    micro_usd: cost.map(|c| c.saturating_add(sem_usd)),
                }),
                Charge::Delivered { tokens, micro_usd } => Some(Actual {
                    tokens: tokens.saturating_add(sem_tokens),
                    micro_usd: Some(micro_usd.saturating_add(sem_usd)),
                }),
                Charge::Release if sem_tokens > 0 => Some(Actual {
                    tokens: sem_tokens,
                    micro_usd: Some(sem_usd),
                }),
                Charge::Release => None,
            }
        };
        if sem_tokens > 0 {
            let embed_model = &self.config.cache.semantic.embed_model;
            let embed_label = self.model_label(embed_model);
            m.incr(
                &format!("llmgate.tokens_total.model.{embed_label}.direction.in"),
                sem_tokens,
            );
            m.incr(
                &format!("llmgate.cost_micro_usd_total.model.{embed_label}.key.{key_label}"),
                sem_usd,
            );
        }
        let mut store_failures = 0usize;
        if let Some(r) = self.reservation.take() {
            let report = match actual(r.estimate.tokens) {
                Some(a) => self
                    .config
                    .budgets
                    .settle(&*self.store, &*self.clock, &r, a),
                None => self.config.budgets.release(&*self.store, &*self.clock, &r),
            };
            store_failures = store_failures.saturating_add(report.store_failures.len());
        }
        if let (Some(res), Some(fleet)) = (self.fleet_res.take(), &self.config.fleet) {
            let failures = match actual(self.fleet_estimate.tokens) {
                Some(a) => fleet.settle(&*self.store, &*self.clock, &res, a),
                None => fleet.release(&*self.store, &*self.clock, &res),
            };
            store_failures = store_failures.saturating_add(failures.len());
        }
        if store_failures > 0 {
            m.incr(
                "llmgate.dependency_failures_total.dependency.shared_data",
                store_failures as u64,
            );
        }
        let record = AuditRecord {
            time: rfc3339_ms(self.start_ms),
            request_id: self.request_id.clone(),
            key_id: self.identity.as_ref().map(|i| i.key_id.clone()),
            tenant: self.identity.as_ref().map(|i| i.tenant.clone()),
            user: self.identity.as_ref().and_then(|i| i.user.clone()),
            api: api.as_str(),
            model: self.model.clone(),
            served_model: self
                .served_model
                .clone()
                .or_else(|| self.sent_model.clone()),
            upstream: (!self.replied || self.cache_hit).then(|| self.upstream.clone()),
            upstream_api: self
                .upstream_api
                .filter(|u| Some(*u) != self.api && !self.cache_hit)
                .map(Api::as_str),
            cache: self
                .sem
                .audit
                .filter(|_| !self.cache_hit)
                .unwrap_or(self.cache_status),
            stream: self.stream,
            status: self.status,
            decision: if self.cache_hit {
                "allowed"
            } else if self.replied {
                "blocked"
            } else if !self.completed || self.status >= 500 {
                "failed"
            } else {
                "allowed"
            },
            reason: self.reason.clone(),
            tokens_in: self.usage.as_ref().map(|u| u.input_tokens),
            tokens_out: self.usage.as_ref().map(|u| u.output_tokens),
            cost_usd: match (cost, sem_tokens > 0) {
                (Some(c), _) => Some(c.saturating_add(sem_usd) as f64 / 1_000_000.0),
                (None, true) if self.usage.is_none() => Some(sem_usd as f64 / 1_000_000.0),
                (None, _) => None,
            },
            embedding_tokens: (sem_tokens > 0).then_some(sem_tokens),
            latency_ms: latency,
            ttft_ms: self
                .first_token_ms
                .or(self.first_byte_ms)
                .map(|t| t.saturating_sub(self.start_ms)),
            completed: self.completed,
            prompt_id: self.prompt.as_ref().map(|p| p.id.clone()),
            prompt_version: self.prompt.as_ref().map(|p| p.version.clone()),
            prompt_variant: self.prompt.as_ref().map(|p| p.variant.to_string()),
            flagged: self.flagged.iter().map(|f| (*f).to_string()).collect(),
            redacted: self
                .redacted
                .iter()
                .map(|(e, _)| (*e).to_string())
                .collect(),
            response_redacted: respfilter::entity_names(&self.response_findings),
            ..Default::default()
        };
        let action = if self.response_findings.blocked.is_some() {
            "block"
        } else {
            "redact"
        };
        for (e, n) in &self.response_findings.counts {
            m.incr(
                &format!("llmgate.response_filter_total.entity.{e}.action.{action}"),
                u64::from(*n),
            );
        }
        if let Some(p) = &self.prompt {
            let tag = {
                let labels = &self.config.labels;
                let max = labels.max_values;
                let mut cap = self.vm.labels.borrow_mut();
                let id = cap.admit("prompt", labels.prompt(&p.id), max);
                let version = cap.admit("version", labels.prompt(&p.version), max);
                format!("prompt.{id}.version.{version}")
            };
            m.incr(
                &format!("llmgate.prompt_requests_total.{tag}.outcome.{outcome}"),
                1,
            );
            if let Some(u) = &self.usage {
                m.incr(
                    &format!("llmgate.prompt_tokens_total.{tag}.direction.in"),
                    u.input_tokens,
                );
                m.incr(
                    &format!("llmgate.prompt_tokens_total.{tag}.direction.out"),
                    u.output_tokens,
                );
            }
            if let Some(c) = cost {
                m.incr(&format!("llmgate.prompt_cost_micro_usd_total.{tag}"), c);
            }
            if !self.replied {
                m.histogram(
                    &format!("llmgate.prompt_request_duration_ms.{tag}"),
                    latency,
                );
            }
        }
        let record = AuditRecord {
            otel: Some(crate::core::otel::emit(
                &crate::core::otel::Facts {
                    provider: Some(self.upstream_api.unwrap_or(api)),
                    request_model: self.model.as_deref(),
                    response_model: self.served_model.as_deref().or(self.sent_model.as_deref()),
                    stream: self.stream,
                    status: self.status,
                    completed: self.completed,
                    replied: self.replied,
                    cache_hit: self.cache_hit,
                    client_aborted: self.client_aborted,
                    reason: self.reason.as_deref(),
                    usage: self.usage.as_ref(),
                    start_ms: self.start_ms,
                    first_token_ms: self.first_token_ms,
                    first_byte_ms: self.first_byte_ms,
                    end_ms: now,
                },
                &|name: &str| self.model_label(name),
                &*self.metrics,
            )),
            ..record
        };
        self.fx.audit = Some(record.to_json());
    }

    fn on_request_body_complete(&mut self, api: Api, body: &[u8]) -> Flow {
        let cfg = self.config.clone();
        let mut req = match api::parse_request(api, body) {
            Ok(r) => r,
            Err(e) => return self.reply_error(api, &e),
        };
        self.model = Some(req.model.clone());
        self.stream = req.stream;
        if let Some(who) = &self.identity {
            if let Err(e) = pipeline::check_model(&cfg, who, &req.model) {
                return self.reply_error(api, &e);
            }
        }
        let mut modified = false;
        let mut model = req.model.clone();

        // Server-side prompt template.
        if let Some(h) = self.rh("x-llmgate-prompt") {
            let subject = self
                .identity
                .as_ref()
                .map(|i| i.user.clone().unwrap_or_else(|| i.key_id.clone()))
                .unwrap_or_default();
            let sel = match cfg.prompts.select(&h, &subject) {
                Ok(s) => s,
                Err(e) => return self.reply_error(api, &e),
            };
            let mut vars = match prompts::parse_vars(self.rh("x-llmgate-prompt-vars").as_deref()) {
                Ok(v) => v,
                Err(e) => return self.reply_error(api, &e),
            };
            // Variables are client input rendered into the system prompt:
            // guarded like a user message.
            match pipeline::guard_prompt_vars(&cfg.guard, &mut vars) {
                Ok(outcome) => {
                    self.count_guard(&outcome);
                    self.flagged.extend(outcome.flagged.iter().copied());
                    self.redacted.extend(outcome.redacted.iter().copied());
                }
                Err(e) => {
                    self.prompt = Some(sel);
                    self.metrics
                        .incr("llmgate.guard_total.category.prompt_vars.action.block", 1);
                    return self.reply_error(api, &e);
                }
            }
            if let Err(e) = cfg.prompts.apply(&sel, &vars, api, &mut req.body) {
                self.prompt = Some(sel);
                return self.reply_error(api, &e);
            }
            self.set_rh("x-llmgate-prompt", None);
            self.set_rh("x-llmgate-prompt-vars", None);
            self.prompt = Some(sel);
            modified = true;
        }

        // Request guard: limits, injection, PII and secrets.
        if cfg.guard.enabled {
            let mut v = Value::Object(std::mem::take(&mut req.body));
            let outcome = cfg.guard.inspect_request(api, &mut v);
            if let Value::Object(m) = v {
                req.body = m;
            }
            self.count_guard(&outcome);
            self.flagged.extend(outcome.flagged.iter().copied());
            self.redacted.extend(outcome.redacted.iter().copied());
            if let Some(b) = outcome.block {
                let what = if b.code == "pii_detected" || b.code == "secret_detected" {
                    "entity"
                } else {
                    "category"
                };
                self.metrics.incr(
                    &format!("llmgate.guard_total.{what}.{}.action.block", b.category),
                    1,
                );
                return self.reply_error(api, &ApiError::new(400, b.code, b.message));
            }
            modified |= outcome.modified;
        }

        // Cheap-model routing: first matching rule rewrites the model.
        if !cfg.model_rules.is_empty() {
            let facts = RequestFacts::of(api, &req.body, cfg.rules_need_text);
            let header = |n: &str| self.rh(n);
            if let Some(rule) = routing::choose_model(&cfg.model_rules, &model, &facts, &header) {
                model = rule.model.clone();
                req.body
                    .insert("model".to_string(), Value::String(model.clone()));
                modified = true;
                self.reason = Some(format!("model_routing:{}", rule.name));
            }
        }

        // Budgets: reserve the estimate before admitting. A model without a
        // price would count $0 against a dollar limit: refused instead.
        if cfg.budgets_enabled {
            if let Some(who) = &self.identity {
                if !cfg.prices.priced(&model)
                    && cfg.dollar_limits_apply(&who.key_id, &who.tenant, who.user.is_some())
                {
                    return self.reply_error(
                        api,
                        &ApiError::new(
                            403,
                            "model_not_priced",
                            format!("model {model} has no price and a dollar limit applies; set pricing.models or pricing.unknown_model"),
                        ),
                    );
                }
            }
            let est = self.estimate(api, &req.body, &model);
            if let Err(e) = self.reserve(est) {
                return self.reply_error(api, &e);
            }
            self.fleet_estimate = est;
        }
        self.parked = Some(Parked {
            req,
            model,
            modified,
        });
        // Fleet-scoped limits: a lease in shared data, refilled from Redis.
        if !self.fleet_scopes().is_empty() {
            return self.fleet_admit(api);
        }
        self.after_admission(api)
    }

    /// The rest of the body step, once every budget admitted the request.
    fn after_admission(&mut self, api: Api) -> Flow {
        let cfg = self.config.clone();
        let Some(Parked {
            mut req,
            mut model,
            mut modified,
        }) = self.parked.take()
        else {
            return Flow::Continue;
        };

        // Upstream: the first one whose breaker admits the request.
        let (index, probe) = match self.select_upstream() {
            Ok(x) => x,
            Err(e) => return self.reply_error(api, &e),
        };
        self.upstream_index = index;
        self.probe = probe;
        let up_api = cfg.upstreams.get(index).and_then(|u| u.api).unwrap_or(api);
        self.upstream_api = Some(up_api);
        let mut mapped = false;
        if let Some(up) = cfg.upstreams.get(index) {
            self.upstream = up.name.clone();
            if index > 0 {
                self.set_rh(ROUTE_HEADER, Some(&up.name));
            }
            if let Some(m) = up.map_model(&model) {
                model = m.to_string();
                req.body
                    .insert("model".to_string(), Value::String(model.clone()));
                modified = true;
                mapped = true;
            }
        }
        self.sent_model = Some(model.clone());

        // Cache plan and key, on the body as it will be answered (before
        // llmgate's own include_usage edit). A probe always goes upstream;
        // an answer from a remapped model is not stored under this key.
        let client_cache = ClientCache::from_header(self.rh("x-llmgate-cache").as_deref());
        let mut plan = cfg.cache.plan(client_cache, &req.body);
        if mapped && plan != Plan::Disabled {
            plan = Plan::Bypass;
        } else if probe && plan == Plan::LookupAndStore {
            plan = Plan::StoreOnly;
        }
        self.cache_plan = plan;
        self.cache_status = match plan {
            Plan::Disabled | Plan::Bypass | Plan::StoreOnly => HEADER_BYPASS,
            Plan::LookupAndStore => HEADER_MISS,
        };
        if plan.lookup() || plan.store() {
            let tenant = self
                .identity
                .as_ref()
                .map(|i| i.tenant.clone())
                .unwrap_or_default();
            let pv = self
                .prompt
                .as_ref()
                .map(|p| format!("{}@{}", p.id, p.version));
            let key = cfg.cache.key(&tenant, api, &req.body, pv.as_deref());
            let sem = &cfg.cache.semantic;
            if plan.lookup()
                && sem.enabled
                && !semantic::opted_out(self.rh("x-llmgate-cache").as_deref())
            {
                match sem.lookup(&cfg.cache, &tenant, api, &req.body, pv.as_deref(), &key) {
                    Ok(l) => self.sem.lookup = Some(l),
                    Err(skip) => self.metrics.incr(
                        &format!(
                            "llmgate.semantic_cache_total.outcome.skip.reason.{}",
                            skip.reason()
                        ),
                        1,
                    ),
                }
            }
            self.cache_key = Some(key);
        }

        if api == Api::OpenAi && req.stream {
            let mut v = Value::Object(std::mem::take(&mut req.body));
            self.include_usage = usage::ensure_include_usage(&mut v);
            if let Value::Object(m) = v {
                req.body = m;
            }
            modified |= self.include_usage == IncludeUsage::Added;
        }
        if up_api != api {
            // Cross-provider: the body goes out in the upstream's API, to its
            // path; everything above (guard, budgets, cache key) saw the
            // client's own request.
            let opts = RequestOptions {
                default_max_tokens: cfg.default_max_tokens.max(1),
            };
            match translate::translate_request(api, up_api, &req.body, &opts) {
                Ok(t) => {
                    req.body = t.body;
                    modified = true;
                    self.set_rh(":path", Some(up_api.path()));
                    self.metrics.incr(
                        &format!(
                            "llmgate.translated_total.from.{}.to.{}",
                            api.as_str(),
                            up_api.as_str()
                        ),
                        1,
                    );
                }
                Err(e) => return self.reply_error(api, &e),
            }
        }
        for (name, value) in pipeline::upstream_credentials(&cfg, up_api) {
            self.set_rh(name, value.as_deref());
        }
        if modified {
            let bytes = serde_json::to_vec(&req.body).unwrap_or_default();
            self.fx.request_body = Some(bytes.clone());
            self.set_rh("content-length", Some(&bytes.len().to_string()));
        }
        self.flush_rh();
        if plan.lookup() {
            let l1_hit = self
                .cache_key
                .as_ref()
                .and_then(|k| self.vm.l1.borrow_mut().get(k, self.clock.now_ms()));
            if let Some(entry) = l1_hit.filter(|e| e.answers(api, self.stream)) {
                self.metrics.incr("llmgate.cache_l1_hits_total", 1);
                self.reply_hit(&entry);
                return Flow::Pause;
            }
            if let Some(key) = &self.cache_key {
                let path = cache::lookup_path(key);
                self.fx.cache_lookup = Some(path);
                self.waiting_cache = true;
                return Flow::Pause;
            }
        }
        Flow::Continue
    }

    /// The first upstream whose breaker admits the request: (index, probe).
    fn select_upstream(&mut self) -> Result<(usize, bool), ApiError> {
        let cfg = self.config.clone();
        let Some(breaker) = &cfg.breaker else {
            return Ok((0, false));
        };
        let mut retry_after: Option<u64> = None;
        for (i, up) in cfg.upstreams.iter().enumerate() {
            let check = breaker.check(&*self.store, &*self.clock, &up.name);
            if check.store_failure.is_some() {
                self.metrics.incr(
                    "llmgate.dependency_failures_total.dependency.shared_data",
                    1,
                );
            }
            if let Some(t) = check.transition {
                self.breaker_transition(&up.name, t.to);
            }
            match check.admission {
                Admission::Allow => return Ok((i, false)),
                Admission::Probe => return Ok((i, true)),
                Admission::Open { retry_after_s } => {
                    retry_after = Some(retry_after.map_or(retry_after_s, |r| r.min(retry_after_s)));
                }
            }
        }
        Err(ApiError::new(
            503,
            "no_healthy_upstream",
            "every upstream is unavailable (circuit breaker open)",
        )
        .with_retry_after(retry_after.unwrap_or(1)))
    }

    fn breaker_transition(&self, cluster: &str, to: BreakerState) {
        let c = label(cluster);
        self.metrics
            .gauge(&format!("llmgate.breaker_state.cluster.{c}"), to.gauge());
        self.metrics.incr(
            &format!(
                "llmgate.breaker_transitions_total.cluster.{c}.state.{}",
                to.as_str()
            ),
            1,
        );
    }

    fn cache_failure(&self, reason: &str) {
        self.metrics
            .incr("llmgate.dependency_failures_total.dependency.webdis", 1);
        self.metrics.incr(
            &format!("llmgate.cache_total.outcome.error.reason.{}", label(reason)),
            1,
        );
    }

    /// Answers from a cache entry.
    fn reply_hit(&mut self, entry: &Entry) {
        self.metrics.incr("llmgate.cache_total.outcome.hit", 1);
        self.reply_hit_as(entry, HEADER_HIT, None);
    }

    /// Answers from a cache entry of a tier (`x-llmgate-cache: status`).
    fn reply_hit_as(&mut self, entry: &Entry, status: &'static str, similarity: Option<f64>) {
        let age = cache::age_s(entry, self.clock.now_ms()).to_string();
        let mut headers: Vec<(&str, String)> = vec![
            ("content-type", entry.content_type.clone()),
            ("x-llmgate-request-id", self.request_id.clone()),
            ("x-llmgate-cache", status.to_string()),
            ("x-llmgate-upstream", "cache".to_string()),
            ("age", age),
        ];
        if let Some(sim) = similarity {
            headers.push(("x-llmgate-cache-similarity", format!("{sim:.4}")));
        }
        if let Some(m) = &entry.model {
            headers.push(("x-llmgate-model", m.clone()));
        }
        if !entry.stream {
            if let Some(u) = &entry.usage {
                headers.push(("x-llmgate-tokens-in", u.input_tokens.to_string()));
                headers.push(("x-llmgate-tokens-out", u.output_tokens.to_string()));
                headers.push(("x-llmgate-cost-usd", format_usd(self.sem.micro_usd)));
            }
        }
        for (k, v) in &self.extra_headers {
            headers.push((k, v.clone()));
        }
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.fx.reply = Some(Reply {
            status: 200,
            headers: owned(&refs),
            body: entry.body.clone(),
        });
        self.replied = true;
        self.cache_hit = true;
        self.cache_status = status;
        self.status = 200;
        self.completed = true;
        self.served_model = entry.model.clone();
        self.upstream = "cache".to_string();
        self.finish();
    }

    /// Queues the store of a complete response; the root context sends it, so
    /// it never delays the client and outlives this stream.
    fn store(&mut self, entry: Entry) {
        let Some(key) = &self.cache_key else {
            return;
        };
        let path = self.config.cache.store_path(key);
        let encoded = cache::encode(&entry);
        if self.coalesce_leader.is_some() {
            self.coalesce_entry = Some(encoded.clone());
        }
        if let (Some(l), Some(v)) = (&self.sem.lookup, &self.sem.vector) {
            let (path, body) = semantic::store_request(
                &self.config.cache.semantic,
                &self.config.cache,
                l,
                v,
                &encoded,
                entry.created_ms,
            );
            self.vm.stores.borrow_mut().push(PendingStore {
                path,
                body,
                semantic: true,
            });
        }
        self.vm.stores.borrow_mut().push(PendingStore {
            path,
            body: encoded,
            semantic: false,
        });
        self.remember(entry);
    }

    /// Keeps an entry in this VM's L1 until it expires in Redis too.
    fn remember(&self, entry: Entry) {
        let Some(key) = &self.cache_key else {
            return;
        };
        let expires = entry
            .created_ms
            .saturating_add(self.config.cache.ttl_s.saturating_mul(1000));
        self.vm.l1.borrow_mut().put(key, Rc::new(entry), expires);
    }
}

impl Exchange {
    /// A request header from the local copy (names are lowercase in Envoy),
    /// including the client's `x-llmgate-*` headers removed from the request.
    fn rh(&self, name: &str) -> Option<String> {
        self.req_headers
            .iter()
            .chain(self.client_headers.iter())
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// Moves every `x-llmgate-*` request header out of the request (the
    /// client's route header is dropped outright: only llmgate routes). With
    /// `forward_user_header`, `x-llmgate-user` stays.
    fn strip_client_headers(&mut self) {
        let keep_user = self.config.forward_user_header;
        let mut kept = Vec::with_capacity(self.req_headers.len());
        for (k, v) in std::mem::take(&mut self.req_headers) {
            let lower = k.to_ascii_lowercase();
            if !lower.starts_with("x-llmgate-") || (keep_user && lower == "x-llmgate-user") {
                kept.push((k, v));
                continue;
            }
            self.req_headers_dirty = true;
            if lower != ROUTE_HEADER {
                self.client_headers.push((lower, v));
            }
        }
        self.req_headers = kept;
    }

    fn request_id_from_headers(&self) -> String {
        self.rh("x-request-id")
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .unwrap_or_else(|| format!("llmgate-{}", self.context_id))
    }

    /// A path llmgate does not process: the `other_paths` policy.
    fn on_other_path(&mut self) -> Flow {
        let policy = self.config.other_paths;
        self.metrics.incr(
            &format!(
                "llmgate.other_paths_total.policy.{}",
                match policy {
                    OtherPaths::Deny => "deny",
                    OtherPaths::Authenticated => "authenticated",
                    OtherPaths::Pass => "pass",
                }
            ),
            1,
        );
        match policy {
            OtherPaths::Pass => {
                self.flush_rh();
                Flow::Continue
            }
            OtherPaths::Deny => {
                let err = ApiError::new(
                    404,
                    "not_found",
                    "this path is not served here: llmgate accepts POST /v1/chat/completions and POST /v1/messages",
                );
                self.local_reply_plain(Api::OpenAi, &err)
            }
            OtherPaths::Authenticated => {
                // Anthropic-style callers get the Anthropic credential.
                let api = if self.rh("anthropic-version").is_some()
                    || (self.rh("x-api-key").is_some() && self.rh("authorization").is_none())
                {
                    Api::Anthropic
                } else {
                    Api::OpenAi
                };
                let who = match self.authenticate(false) {
                    Ok(who) => who,
                    Err(e) => return self.local_reply_plain(api, &e),
                };
                self.identity = Some(who);
                // Counts against the key's request limits (no tokens).
                if self.config.budgets_enabled {
                    if let Err(e) = self.reserve(Estimate::default()) {
                        return self.local_reply_plain(api, &e);
                    }
                }
                self.other_path = true;
                for (name, value) in pipeline::upstream_credentials(&self.config, api) {
                    self.set_rh(name, value.as_deref());
                }
                self.flush_rh();
                Flow::Continue
            }
        }
    }

    /// A local reply outside the LLM routes (no audit line).
    fn local_reply_plain(&mut self, api: Api, err: &ApiError) -> Flow {
        let body = err.body(api);
        let retry_after = err.retry_after_s.map(|s| s.to_string());
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if let Some(r) = retry_after.as_deref() {
            headers.push(("retry-after", r));
        }
        self.fx.reply = Some(Reply {
            status: err.status,
            headers: owned(&headers),
            body,
        });
        self.replied = true;
        self.metrics.incr(
            &format!("llmgate.rejected_total.api.other.code.{}", err.code),
            1,
        );
        Flow::Pause
    }

    /// Edits the local copy; [`Http::flush_rh`] applies every edit at once.
    fn set_rh(&mut self, name: &str, value: Option<&str>) {
        let before = self.req_headers.len();
        self.req_headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        let removed = self.req_headers.len() != before;
        if let Some(v) = value {
            self.req_headers.push((name.to_string(), v.to_string()));
        }
        self.req_headers_dirty |= removed || value.is_some();
    }

    fn flush_rh(&mut self) {
        if !self.req_headers_dirty {
            return;
        }
        self.req_headers_dirty = false;
        let pairs: Vec<(&str, &str)> = self
            .req_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.fx.request_headers = Some(owned(&pairs));
    }

    /// Applies the response header edits in one call.
    fn flush_response_headers(
        &mut self,
        mut headers: Vec<(String, String)>,
        edits: &[(&str, Option<String>)],
    ) {
        for (name, value) in edits {
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            if let Some(v) = value {
                headers.push(((*name).to_string(), v.clone()));
            }
        }
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.fx.response_headers = Some(owned(&pairs));
    }

    /// llmgate's own response headers.
    fn our_response_headers(&self) -> Vec<(&'static str, Option<String>)> {
        let mut edits: Vec<(&'static str, Option<String>)> = vec![
            ("x-llmgate-request-id", Some(self.request_id.clone())),
            ("x-llmgate-upstream", Some(self.upstream.clone())),
            ("x-llmgate-cache", Some(self.cache_status.to_string())),
        ];
        if let Some(m) = &self.sent_model {
            edits.push(("x-llmgate-model", Some(m.clone())));
        }
        if let Some(p) = &self.prompt {
            edits.push((
                "x-llmgate-prompt-version",
                Some(format!("{}@{}", p.id, p.version)),
            ));
        }
        if !self.flagged.is_empty() {
            edits.push(("x-llmgate-flagged", Some(self.flagged.join(","))));
        }
        for (k, v) in &self.extra_headers {
            edits.push((k, Some(v.clone())));
        }
        edits
    }

    /// The bounded metric label of a model name.
    fn model_label(&self, model: &str) -> String {
        let labels = &self.config.labels;
        let value = labels.model(&self.config.prices, model);
        self.vm
            .labels
            .borrow_mut()
            .admit("model", value, labels.max_values)
    }

    /// Whether the upstream failed (5xx, no answer, a reset): never a client
    /// that went away, so impatient clients cannot open the breaker.
    fn upstream_failed(&self) -> bool {
        if self.client_aborted {
            return false;
        }
        !self.completed || self.status >= 500 || self.status == 0
    }

    /// The end of a non-streamed response: complete, stored if cacheable,
    /// accounted.
    fn complete_json(&mut self, api: Api, body: Vec<u8>) {
        self.completed = true;
        if self.cache_plan.store()
            && self
                .config
                .cache
                .should_store(self.status, Some(&self.content_type), body.len())
        {
            let entry = Entry {
                api,
                stream: false,
                content_type: self.content_type.clone(),
                created_ms: self.clock.now_ms(),
                model: self.served_model.clone(),
                usage: self.usage,
                body,
            };
            self.store(entry);
        }
        self.finish();
    }

    /// How the reservations of this exchange are closed.
    fn charge(&self, model: &str) -> Charge {
        if self.completed && !self.replied && self.status > 0 && self.status < 400 {
            return Charge::Usage;
        }
        match self.partial_usage(model) {
            Some((tokens, micro_usd)) => Charge::Delivered { tokens, micro_usd },
            None => Charge::Release,
        }
    }

    /// Tokens and micro-USD to charge for a streamed response that did not
    /// complete but delivered content: input (from usage if seen, else the
    /// estimate) plus the output counted from the deltas seen.
    fn partial_usage(&self, model: &str) -> Option<(u64, u64)> {
        if self.replied || self.status != 200 {
            return None;
        }
        let Body::Stream { tracker, .. } = &self.body else {
            return None;
        };
        let delivered = tracker.delivered_output_tokens();
        let seen = self.usage.unwrap_or_default();
        let output = seen.output_tokens.max(delivered);
        if output == 0 && self.usage.is_none() {
            return None;
        }
        let usage = Usage {
            input_tokens: if self.usage.is_some() {
                seen.input_tokens
            } else {
                self.estimated_input
            },
            output_tokens: output,
            ..seen
        };
        let cost = self
            .config
            .prices
            .cost_micro_usd(model, &usage)
            .unwrap_or(0);
        Some((usage.total_tokens(), cost))
    }

    fn count_guard(&self, outcome: &crate::core::guard::GuardOutcome) {
        for f in &outcome.flagged {
            self.metrics
                .incr(&format!("llmgate.guard_total.category.{f}.action.flag"), 1);
        }
        for (e, n) in &outcome.redacted {
            self.metrics.incr(
                &format!("llmgate.guard_total.entity.{e}.action.redact"),
                u64::from(*n),
            );
        }
    }

    /// Tokens and dollars to reserve: estimated input plus the requested
    /// maximum output (or `budgets.default_max_tokens`).
    fn estimate(
        &mut self,
        api: Api,
        body: &serde_json::Map<String, Value>,
        model: &str,
    ) -> Estimate {
        let input = usage::estimate_input_tokens_map(api, body);
        self.estimated_input = input;
        let output = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|f| body.get(*f).and_then(Value::as_u64))
            .unwrap_or(self.config.default_max_tokens);
        let micro_usd = self
            .config
            .prices
            .cost_micro_usd(
                model,
                &Usage {
                    input_tokens: input,
                    output_tokens: output,
                    ..Usage::default()
                },
            )
            .unwrap_or(0);
        // A request that may embed its question for the semantic tier
        // reserves those tokens too (settled at their real count).
        let sem = &self.config.cache.semantic;
        let header = self.rh("x-llmgate-cache");
        let embed = if sem.enabled
            && !semantic::opted_out(header.as_deref())
            && self
                .config
                .cache
                .plan(ClientCache::from_header(header.as_deref()), body)
                .lookup()
        {
            sem.embedding_estimate(body).unwrap_or(0)
        } else {
            0
        };
        let embed_usd = if embed > 0 {
            self.config
                .prices
                .cost_micro_usd(
                    &sem.embed_model,
                    &Usage {
                        input_tokens: embed,
                        ..Usage::default()
                    },
                )
                .unwrap_or(0)
        } else {
            0
        };
        Estimate {
            tokens: input.saturating_add(output).saturating_add(embed),
            micro_usd: micro_usd.saturating_add(embed_usd),
        }
    }

    /// Reserves the estimate against every applicable scope, or says why not.
    fn reserve(&mut self, est: Estimate) -> Result<(), ApiError> {
        let cfg = self.config.clone();
        let Some(who) = self.identity.clone() else {
            return Ok(());
        };
        let mut scopes: Vec<(ScopeId, &CompiledLimits)> = Vec::new();
        if let Some(key) = cfg.keys.by_id(&who.key_id) {
            if key.limits.local() {
                scopes.push((ScopeId::Key(key.id.clone()), &key.limits));
            }
            if let Some(user) = &who.user {
                if !key.user_limits.is_empty() {
                    scopes.push((
                        ScopeId::User {
                            key: key.id.clone(),
                            user: user.clone(),
                        },
                        &key.user_limits,
                    ));
                }
            }
        }
        if let Some(l) = cfg.tenant_limits.get(&who.tenant) {
            if l.local() {
                scopes.push((ScopeId::Tenant(who.tenant.clone()), l));
            }
        }
        if scopes.is_empty() {
            return Ok(());
        }
        match cfg
            .budgets
            .reserve(&*self.store, &*self.clock, &scopes, est)
        {
            Ok(r) => {
                if !r.store_failures.is_empty() {
                    self.metrics.incr(
                        "llmgate.dependency_failures_total.dependency.shared_data",
                        r.store_failures.len() as u64,
                    );
                }
                if let Some(rl) = &r.rate_limit {
                    self.set_rate_limit_headers(rl);
                }
                self.reservation = Some(r);
                Ok(())
            }
            Err(d) => {
                if !d.store_failures.is_empty() {
                    self.metrics.incr(
                        "llmgate.dependency_failures_total.dependency.shared_data",
                        d.store_failures.len() as u64,
                    );
                }
                if let Some(rl) = &d.rate_limit {
                    self.set_rate_limit_headers(rl);
                }
                let retry = d.retry_after_s();
                Err(match &d.reason {
                    DenialReason::Limit(l) => ApiError::new(
                        429,
                        "rate_limit_exceeded",
                        format!(
                            "{} limit {} exceeded for {}; retry after {} s",
                            l.limit.as_str(),
                            l.limit_value,
                            l.scope,
                            l.retry_after_s
                        ),
                    )
                    .with_retry_after(retry),
                    DenialReason::StoreUnavailable => {
                        ApiError::new(503, "budget_store_unavailable", "budget state unavailable")
                            .with_retry_after(retry)
                    }
                    DenialReason::TooManyUsers => ApiError::new(
                        429,
                        "too_many_users",
                        "this key already tracks its maximum number of end users (budgets.max_users_per_key); retry later",
                    )
                    .with_retry_after(retry),
                    DenialReason::Contention => {
                        self.metrics.incr("llmgate.budget_contention_total", 1);
                        ApiError::new(
                            429,
                            "budget_contention",
                            "budget state is busy; retry in a second",
                        )
                        .with_retry_after(retry)
                    }
                })
            }
        }
    }

    fn set_rate_limit_headers(&mut self, rl: &RateLimitInfo) {
        let pairs = [
            ("x-ratelimit-limit-requests", rl.limit_requests),
            ("x-ratelimit-remaining-requests", rl.remaining_requests),
            ("x-ratelimit-limit-tokens", rl.limit_tokens),
            ("x-ratelimit-remaining-tokens", rl.remaining_tokens),
        ];
        self.extra_headers
            .retain(|(k, _)| !k.starts_with("x-ratelimit-"));
        for (k, v) in pairs {
            if let Some(v) = v {
                self.extra_headers.push((k, v.to_string()));
            }
        }
    }
}

impl Exchange {
    /// Authenticates the request's headers (the trusted identity header,
    /// when that mode is on, is taken off the request; `x-llmgate-user`
    /// is read when `with_user`).
    fn authenticate(&mut self, with_user: bool) -> Result<pipeline::Identity, ApiError> {
        let authorization = self.rh("authorization");
        let x_api_key = self.rh("x-api-key");
        let user = if with_user {
            self.rh("x-llmgate-user")
        } else {
            None
        };
        let identity = if self.config.auth_mode == AuthMode::TrustedHeader {
            let name = self.config.identity_header.clone();
            let h = self.rh(&name);
            self.set_rh(&name, None);
            h
        } else {
            None
        };
        let head = Head {
            authorization: authorization.as_deref(),
            x_api_key: x_api_key.as_deref(),
            identity: identity.as_deref(),
            user: user.as_deref(),
        };
        pipeline::authenticate(&self.config, &head)
    }

    /// The effects of the last event (the shell applies them).
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.fx)
    }

    /// The answer of the cache lookup callout: `status` `None` on a timeout
    /// or reset. A hit answers here; anything else is a miss and the
    /// request resumes (fail open).
    pub fn on_cache_answer(&mut self, status: Option<u32>, body: Option<&[u8]>) {
        if !self.waiting_cache {
            return;
        }
        self.waiting_cache = false;
        let Some(api) = self.api else {
            self.fx.resume = true;
            return;
        };
        match cache::interpret_lookup_for(status, body, api, self.stream) {
            Lookup::Hit(entry) => {
                self.reply_hit(&entry);
                self.remember(entry);
                return;
            }
            Lookup::Miss => {
                self.metrics.incr("llmgate.cache_total.outcome.miss", 1);
            }
            Lookup::Error(reason) => {
                // Fail open: a broken cache is a miss.
                self.cache_failure(reason);
                self.metrics.incr("llmgate.cache_total.outcome.miss", 1);
            }
        }
        self.cache_status = HEADER_MISS;
        if self.start_semantic() {
            return;
        }
        self.after_miss(api);
    }

    /// After a miss of every cache tier: lead, follow or go alone
    /// (coalescing), resuming the paused request unless it now follows.
    fn after_miss(&mut self, api: Api) {
        if self.join_coalescing(api) {
            // A follower: stays paused until the root context answers or
            // releases it.
            return;
        }
        self.fx.resume = true;
    }

    /// On an exact miss of a request that qualifies for the semantic tier:
    /// the embeddings callout. False when there is nothing to do.
    fn start_semantic(&mut self) -> bool {
        if self.sem.step != SemStep::Idle {
            return false;
        }
        let Some(l) = &self.sem.lookup else {
            return false;
        };
        let s = &self.config.cache.semantic;
        let mut headers = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), s.embed_path.clone()),
            (":authority".to_string(), s.embed_authority.clone()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        for (name, value) in pipeline::upstream_credentials(&self.config, Api::OpenAi) {
            if let Some(v) = value {
                headers.push((name.to_string(), v));
            }
        }
        self.fx.callout = Some(Callout {
            cluster: s.embed_cluster.clone(),
            headers,
            body: semantic::embed_body(s, &l.question),
            timeout_ms: s.embed_timeout_ms,
        });
        self.sem.step = SemStep::Embedding;
        self.sem.started_ms = self.clock.now_ms();
        true
    }

    /// Whether the request is paused on a semantic-tier callout.
    pub fn waiting_semantic(&self) -> bool {
        matches!(self.sem.step, SemStep::Embedding | SemStep::Searching)
    }

    /// The answer of a semantic-tier callout (`status` `None`: timeout or
    /// reset): the embedding starts the vector search; the search answers
    /// the request or lets it go on. Every failure is a miss.
    pub fn on_semantic_answer(&mut self, status: Option<u32>, body: Option<&[u8]>) {
        let Some(api) = self.api else {
            self.fx.resume = true;
            return;
        };
        match self.sem.step {
            SemStep::Embedding => {
                self.metrics.histogram(
                    "llmgate.semantic_embedding_duration_ms",
                    self.clock.now_ms().saturating_sub(self.sem.started_ms),
                );
                match semantic::parse_embedding(status, body) {
                    Ok(e) => {
                        let s = &self.config.cache.semantic;
                        let Some(l) = &self.sem.lookup else {
                            return self.semantic_done(api, None);
                        };
                        let tokens = e
                            .tokens
                            .unwrap_or_else(|| l.question.split_whitespace().count() as u64);
                        self.sem.tokens = tokens;
                        self.sem.micro_usd = self
                            .config
                            .prices
                            .cost_micro_usd(
                                &s.embed_model,
                                &Usage {
                                    input_tokens: tokens,
                                    ..Usage::default()
                                },
                            )
                            .unwrap_or(0);
                        let (path, body) = semantic::search_request(s, l, &e.fp32);
                        self.fx.callout = Some(webdis_put(&s.cluster, path, body, s.timeout_ms));
                        self.sem.vector = Some(e.fp32);
                        self.sem.step = SemStep::Searching;
                        self.sem.started_ms = self.clock.now_ms();
                    }
                    Err(reason) => self.semantic_done(api, Some(("embeddings", reason))),
                }
            }
            SemStep::Searching => {
                self.metrics.histogram(
                    "llmgate.semantic_search_duration_ms",
                    self.clock.now_ms().saturating_sub(self.sem.started_ms),
                );
                match semantic::interpret_search(status, body) {
                    semantic::Search::Hit {
                        similarity,
                        entry,
                        dangling,
                    } => {
                        self.count_dangling(dangling);
                        if !entry.answers(api, self.stream) {
                            return self.semantic_done(api, Some(("vectors", "entry_mismatch")));
                        }
                        self.similarity_histogram(similarity);
                        self.sem.step = SemStep::Done;
                        self.metrics
                            .incr("llmgate.semantic_cache_total.outcome.hit", 1);
                        self.reply_hit_as(&entry, HEADER_SEMANTIC_HIT, Some(similarity));
                    }
                    semantic::Search::Miss { best, dangling } => {
                        self.count_dangling(dangling);
                        if let Some(b) = best {
                            self.similarity_histogram(b);
                        }
                        self.semantic_done(api, None);
                    }
                    semantic::Search::Error(reason) => {
                        self.semantic_done(api, Some(("vectors", reason)))
                    }
                }
            }
            SemStep::Idle | SemStep::Done => {}
        }
    }

    /// A semantic miss (with the failed dependency and reason, if any): the
    /// paused request goes on.
    fn semantic_done(&mut self, api: Api, failure: Option<(&str, &str)>) {
        self.semantic_miss(failure);
        self.after_miss(api);
    }

    /// Records a semantic miss (and the failure behind it, if any).
    fn semantic_miss(&mut self, failure: Option<(&str, &str)>) {
        if let Some((dependency, reason)) = failure {
            self.semantic_failure(dependency, reason);
        }
        self.sem.step = SemStep::Done;
        self.sem.audit = Some(AUDIT_SEMANTIC_MISS);
        self.metrics
            .incr("llmgate.semantic_cache_total.outcome.miss", 1);
    }

    fn semantic_failure(&self, dependency: &str, reason: &str) {
        self.metrics.incr(
            &format!("llmgate.dependency_failures_total.dependency.{dependency}"),
            1,
        );
        self.metrics.incr(
            &format!(
                "llmgate.semantic_cache_total.outcome.error.reason.{}",
                label(reason)
            ),
            1,
        );
    }

    fn count_dangling(&self, n: u64) {
        if n > 0 {
            self.metrics
                .incr("llmgate.semantic_cache_dangling_total", n);
        }
    }

    /// Similarity in thousandths (Envoy histograms hold integers).
    fn similarity_histogram(&self, cosine: f64) {
        let permille = (cosine.clamp(0.0, 1.0) * 1000.0).round() as u64;
        self.metrics
            .histogram("llmgate.semantic_similarity_permille", permille);
    }

    /// A semantic-tier callout could not be dispatched: a miss. From a
    /// callout answer (`in_callback`) the paused request is resumed (or
    /// follows); from the body event, the returned flow goes on.
    pub fn on_semantic_dispatch_failed(&mut self, in_callback: bool) -> Flow {
        let dependency = if self.sem.step == SemStep::Embedding {
            "embeddings"
        } else {
            "vectors"
        };
        let Some(api) = self.api else {
            return Flow::Continue;
        };
        self.semantic_miss(Some((dependency, "dispatch")));
        if in_callback {
            self.after_miss(api);
            return Flow::Pause;
        }
        Flow::Continue
    }

    /// On a cache miss: lead, follow or go alone (`cache.coalesce`). True
    /// when this request now waits as a follower.
    fn join_coalescing(&mut self, api: Api) -> bool {
        let c = &self.config.cache.coalesce;
        if !c.enabled || !self.cache_plan.lookup() {
            return false;
        }
        let Some(key) = self.cache_key.clone() else {
            return false;
        };
        match c.join(&*self.store, &*self.clock, &key) {
            crate::core::coalesce::Role::Leader { slot } => {
                self.coalesce_leader = Some(slot);
                self.metrics.incr("llmgate.coalesce_total.role.leader", 1);
                false
            }
            crate::core::coalesce::Role::Follower { slot } => {
                let deadline_ms = self.clock.now_ms().saturating_add(c.max_wait_ms);
                self.vm.followers.borrow_mut().push(Follower {
                    context_id: self.context_id,
                    slot,
                    key,
                    api,
                    stream: self.stream,
                    request_id: self.request_id.clone(),
                    deadline_ms,
                });
                self.waiting_coalesce = true;
                true
            }
            crate::core::coalesce::Role::Alone => false,
        }
    }

    /// A follower learns what the root context did for it (answered from
    /// the leader, or released upstream); a follower whose client went away
    /// leaves the waiting list.
    fn absorb_coalescing(&mut self) {
        if !self.waiting_coalesce {
            return;
        }
        self.waiting_coalesce = false;
        let outcome = self.vm.coalesced.borrow_mut().remove(&self.context_id);
        match outcome {
            Some(Coalesced::Served(entry)) => {
                self.replied = true;
                self.cache_hit = true;
                self.cache_status = HEADER_COALESCED;
                self.status = 200;
                self.completed = true;
                self.served_model = entry.model.clone();
                self.upstream = "cache".to_string();
                self.metrics
                    .incr("llmgate.cache_total.outcome.coalesced", 1);
                self.metrics.incr("llmgate.coalesce_total.role.follower", 1);
                self.finish();
            }
            Some(Coalesced::Released) => {
                self.metrics.incr("llmgate.coalesce_total.role.released", 1);
            }
            None => {
                let id = self.context_id;
                self.vm
                    .followers
                    .borrow_mut()
                    .retain(|f| f.context_id != id);
            }
        }
    }

    /// The lookup callout could not be dispatched: a miss, and the request
    /// goes on at once (return this flow from the body event).
    pub fn on_cache_dispatch_failed(&mut self) -> Flow {
        self.waiting_cache = false;
        self.cache_failure("dispatch");
        self.cache_status = HEADER_MISS;
        if self.start_semantic() {
            return Flow::Pause;
        }
        Flow::Continue
    }

    /// Whether [`Exchange::on_log`] needs to know if the client went away
    /// (the response did not complete).
    pub fn needs_abort_check(&self) -> bool {
        self.api.is_some() && !self.completed && !self.replied && !self.logged
    }

    /// Whether the request is paused on a cache lookup.
    pub fn waiting_cache(&self) -> bool {
        self.waiting_cache
    }

    /// Whether the request is paused for a fleet lease.
    pub fn waiting_fleet(&self) -> bool {
        self.fleet_wait_until.is_some() && self.parked.is_some()
    }

    /// The answer of a lease callout this request dispatched (`status`
    /// `None`: timeout or reset); then admission is tried again.
    pub fn on_fleet_answer(
        &mut self,
        ticket: &crate::core::fleet::Ticket,
        status: Option<u32>,
        body: Option<&[u8]>,
    ) {
        let cfg = self.config.clone();
        if let Some(fleet) = &cfg.fleet {
            let report = fleet.on_response(&*self.store, &*self.clock, ticket, status, body);
            self.count_fleet_answer(&report);
        }
        self.on_fleet_wake();
    }

    /// A lease callout could not be dispatched.
    pub fn on_fleet_dispatch_failed(&mut self, ticket: &crate::core::fleet::Ticket) {
        let cfg = self.config.clone();
        if let Some(fleet) = &cfg.fleet {
            let report = fleet.on_answer(
                &*self.store,
                &*self.clock,
                ticket,
                Err(crate::core::fleet::CalloutFailure::Dispatch),
            );
            self.count_fleet_answer(&report);
        }
        // No answer will come: look again now (the failure is recorded, so
        // the failure mode decides).
        self.on_fleet_wake();
    }

    /// Woken (a callout answered, or the root context's tick): try the
    /// fleet admission again.
    pub fn on_fleet_wake(&mut self) {
        if !self.waiting_fleet() {
            return;
        }
        let Some(api) = self.api else {
            return;
        };
        if self.fleet_admit_at(api, true) == Flow::Continue {
            self.fx.resume = true;
        }
    }

    /// `x-ratelimit-*` for a fleet-scoped key: this Envoy's lease plus the
    /// fleet's remaining as of its last lease exchange.
    fn fleet_rate_limit_headers(
        &mut self,
        fleet: &crate::core::fleet::Fleet,
        scopes: &[crate::core::fleet::FleetScope],
    ) {
        let Some(who) = &self.identity else {
            return;
        };
        let key = ScopeId::Key(who.key_id.clone()).storage_name();
        let Some(scope) = scopes.iter().find(|s| s.name == key) else {
            return;
        };
        let Ok(all) = fleet.peek(&*self.store, &*self.clock, scope) else {
            return;
        };
        let mut rl = RateLimitInfo::default();
        for r in all {
            match r.limit {
                crate::core::budget::LimitKind::RequestsPerMinute => {
                    rl.limit_requests = Some(r.limit_value);
                    rl.remaining_requests = r.remaining;
                }
                crate::core::budget::LimitKind::TokensPerMinute => {
                    rl.limit_tokens = Some(r.limit_value);
                    rl.remaining_tokens = r.remaining;
                }
                _ => {}
            }
        }
        if rl.limit_requests.is_some() || rl.limit_tokens.is_some() {
            self.set_rate_limit_headers(&rl);
        }
    }

    fn count_fleet_answer(&self, report: &crate::core::fleet::AnswerReport) {
        count_fleet_answer(&*self.metrics, report);
    }

    /// The fleet scopes of this request's identity (key, tenant).
    fn fleet_scopes(&self) -> Vec<crate::core::fleet::FleetScope> {
        let Some(who) = &self.identity else {
            return Vec::new();
        };
        if self.config.fleet.is_none() {
            return Vec::new();
        }
        let key = ScopeId::Key(who.key_id.clone()).storage_name();
        let tenant = ScopeId::Tenant(who.tenant.clone()).storage_name();
        self.config
            .fleet_scopes
            .iter()
            .filter(|s| s.name == key || s.name == tenant)
            .cloned()
            .collect()
    }

    fn fleet_admit(&mut self, api: Api) -> Flow {
        self.fleet_admit_at(api, false)
    }

    /// Fleet admission; `woken`: the request is paused (a later event), so
    /// going on means resuming it.
    fn fleet_admit_at(&mut self, api: Api, woken: bool) -> Flow {
        let cfg = self.config.clone();
        let Some(fleet) = &cfg.fleet else {
            return self.after_admission(api);
        };
        let scopes = self.fleet_scopes();
        let adm = fleet.reserve(&*self.store, &*self.clock, &scopes, self.fleet_estimate);
        if !adm.store_failures.is_empty() {
            self.metrics.incr(
                "llmgate.dependency_failures_total.dependency.shared_data",
                adm.store_failures.len() as u64,
            );
        }
        let dispatched = !adm.callouts.is_empty();
        self.fx.fleet_callouts.extend(adm.callouts);
        match adm.outcome {
            crate::core::fleet::Outcome::Admitted(res) => {
                if res.degraded() {
                    self.metrics.incr("llmgate.fleet_degraded_total", 1);
                }
                self.fleet_rate_limit_headers(fleet, &scopes);
                self.fleet_res = Some(res);
                self.fleet_wait_until = None;
                let flow = self.after_admission(api);
                if woken && flow == Flow::Pause && self.fx.reply.is_none() && !self.waiting_cache {
                    return Flow::Pause;
                }
                flow
            }
            crate::core::fleet::Outcome::Wait { until_ms } => {
                let now = self.clock.now_ms();
                // A bounded wait: the first `until_ms` plus one more second.
                let deadline = *self
                    .fleet_wait_until
                    .get_or_insert(until_ms.max(now).saturating_add(1000));
                if now > deadline {
                    self.fleet_wait_until = None;
                    self.parked = None;
                    return self.reply_error(
                        api,
                        &ApiError::new(
                            429,
                            "fleet_lease_unavailable",
                            "the fleet budget could not be leased in time; retry in a second",
                        )
                        .with_retry_after(1),
                    );
                }
                if !dispatched {
                    // Another request or worker is fetching the lease: a
                    // cheap callout of its own wakes this one to look again.
                    self.fx.fleet_poll = true;
                }
                Flow::Pause
            }
            crate::core::fleet::Outcome::Denied(d) => {
                self.fleet_wait_until = None;
                self.parked = None;
                let (status, code) = match d.reason {
                    crate::core::fleet::FleetDenyReason::Unavailable => {
                        (503, "budget_store_unavailable")
                    }
                    crate::core::fleet::FleetDenyReason::Contention => (429, "budget_contention"),
                    _ => (429, "rate_limit_exceeded"),
                };
                let what = d.limit.map_or("fleet", |l| l.as_str());
                self.reply_error(
                    api,
                    &ApiError::new(
                        status,
                        code,
                        format!(
                            "fleet {what} limit {} reached for {}; retry after {} s",
                            d.limit_value, d.scope, d.retry_after_s
                        ),
                    )
                    .with_retry_after(d.retry_after_s),
                )
            }
        }
    }
}

impl Exchange {
    /// The request headers (all of them, as the host lists them).
    pub fn on_request_headers(
        &mut self,
        headers: Vec<(String, String)>,
        end_of_stream: bool,
    ) -> Flow {
        self.req_headers = headers;
        // Every `x-llmgate-*` header the client sent is llmgate's input, never
        // the upstream's: kept aside here and removed from the request.
        self.strip_client_headers();
        let method = self.rh(":method").unwrap_or_default();
        let path = self.rh(":path").unwrap_or_default();
        let api = match api::classify(&method, &path) {
            RouteKind::Llm(api) => {
                // A lenient spelling of the route goes upstream canonical.
                let canonical = match api {
                    Api::OpenAi => api::OPENAI_PATH,
                    Api::Anthropic => api::ANTHROPIC_PATH,
                };
                let bare = path.split(['?', '#']).next().unwrap_or(&path);
                if bare != canonical {
                    let query = path.find('?').and_then(|i| path.get(i..)).unwrap_or("");
                    self.set_rh(":path", Some(&format!("{canonical}{query}")));
                }
                api
            }
            RouteKind::WrongMethod(api) => {
                self.api = Some(api);
                self.start_ms = self.clock.now_ms();
                self.request_id = self.request_id_from_headers();
                return self.reply_error(
                    api,
                    &ApiError::new(
                        405,
                        "method_not_allowed",
                        format!("{} accepts POST only", api.path()),
                    ),
                );
            }
            RouteKind::Other => return self.on_other_path(),
        };
        self.api = Some(api);
        self.start_ms = self.clock.now_ms();
        self.request_id = self.request_id_from_headers();
        match self.authenticate(true) {
            Ok(who) => self.identity = Some(who),
            Err(e) => return self.reply_error(api, &e),
        }
        if end_of_stream {
            return self.reply_error(
                api,
                &ApiError::new(400, "missing_body", "request body is required"),
            );
        }
        if let Some(len) = self
            .rh("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            if len > self.config.max_body_bytes {
                return self.reply_error(api, &too_large(self.config.max_body_bytes));
            }
        }
        if let Some(enc) = self.rh("content-encoding") {
            if !enc.trim().eq_ignore_ascii_case("identity") && !enc.trim().is_empty() {
                if self.config.encoded_body == EncodedBody::Reject {
                    return self.reply_error(
                        api,
                        &ApiError::new(
                            400,
                            "encoded_body_not_supported",
                            "content-encoded request bodies are not accepted; send plain JSON",
                        ),
                    );
                }
                self.passthrough = true;
                self.reason = Some("encoded_body_passthrough".to_string());
                // Not parsed, still budgeted: the estimate comes from the
                // body size (a compressed byte counted as a token) plus the
                // default output, priced at the table's highest prices; the
                // response's usage settles it.
                if self.config.budgets_enabled {
                    let bytes = self
                        .rh("content-length")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(self.config.max_body_bytes);
                    self.estimated_input = bytes;
                    let output = self.config.default_max_tokens;
                    let micro_usd = self.config.prices.max_price().cost_micro_usd(&Usage {
                        input_tokens: bytes,
                        output_tokens: output,
                        ..Usage::default()
                    });
                    let est = Estimate {
                        tokens: bytes.saturating_add(output),
                        micro_usd,
                    };
                    if let Err(e) = self.reserve(est) {
                        return self.reply_error(api, &e);
                    }
                }
                for (name, value) in pipeline::upstream_credentials(&self.config, api) {
                    self.set_rh(name, value.as_deref());
                }
                self.flush_rh();
                return Flow::Continue;
            }
        }
        // Hold the headers until the whole body is here (needs
        // `allow_on_headers_stop_iteration: true` in the Envoy filter config).
        Flow::Pause
    }

    /// A request body event: whether the shell must read the (whole,
    /// buffered) body now and pass it to [`Exchange::on_request_body`]; or
    /// the flow to return at once.
    pub fn request_body_event(
        &mut self,
        body_size: usize,
        end_of_stream: bool,
    ) -> Result<(), Flow> {
        let Some(api) = self.api else {
            return Err(Flow::Continue);
        };
        if self.replied {
            return Err(Flow::Pause);
        }
        if self.passthrough || self.body_done {
            return Err(Flow::Continue);
        }
        let size = u64::try_from(body_size).unwrap_or(u64::MAX);
        if size > self.config.max_body_bytes {
            return Err(self.reply_error(api, &too_large(self.config.max_body_bytes)));
        }
        if !end_of_stream {
            return Err(Flow::Pause);
        }
        Ok(())
    }

    /// The whole request body (after [`Exchange::request_body_event`] said
    /// to read it).
    pub fn on_request_body(&mut self, body: &[u8]) -> Flow {
        let Some(api) = self.api else {
            return Flow::Continue;
        };
        if self.replied || self.body_done {
            return Flow::Continue;
        }
        self.body_done = true;
        self.on_request_body_complete(api, body)
    }

    /// Whether the response headers matter (read them for
    /// [`Exchange::on_response_headers`]).
    pub fn wants_response_headers(&self) -> bool {
        self.api.is_some() && (!self.replied || self.waiting_coalesce) && !self.other_path
    }

    /// The response headers.
    pub fn on_response_headers(
        &mut self,
        headers: Vec<(String, String)>,
        end_of_stream: bool,
    ) -> Flow {
        let Some(api) = self.api else {
            return Flow::Continue;
        };
        self.absorb_coalescing();
        if self.replied || self.other_path {
            // Local replies carry llmgate's headers already.
            return Flow::Continue;
        }
        let find = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        self.status = find(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        self.content_type = find("content-type").unwrap_or_default();
        let mut edits = self.our_response_headers();
        let up_api = self.upstream_api.unwrap_or(api);
        let translated = up_api != api;
        if translated {
            // The client sees its own API's status codes.
            self.upstream_status = self.status;
            let client = translate::client_status(api, up_api, self.status);
            if client != self.status {
                self.status = client;
                edits.push((":status", Some(client.to_string())));
            }
        }
        if end_of_stream {
            self.flush_response_headers(headers, &edits);
            self.completed = true;
            self.finish();
            return Flow::Continue;
        }
        if self.content_type.starts_with("text/event-stream") {
            if self.cache_plan.store() && self.status == 200 {
                self.recorder = Some(self.config.cache.stream_recorder());
            }
            edits.push(("content-length", None));
            self.flush_response_headers(headers, &edits);
            let translator = translated.then(|| {
                let opts = ResponseOptions {
                    created: self.clock.now_ms() / 1000,
                    model: None,
                    include_usage: true,
                };
                Box::new((SseParser::new(), StreamTranslator::new(api, up_api, opts)))
            });
            self.body = Body::Stream {
                parser: Box::new(SseParser::new()),
                tracker: Box::new(StreamTracker::new(
                    api,
                    self.include_usage == IncludeUsage::Added,
                )),
                filter: (self.config.response_filter.enabled && self.status == 200)
                    .then(|| Box::new(StreamFilter::new(&self.config.response_filter, api))),
                translator,
            };
            Flow::Continue
        } else if translated
            || self.config.usage_headers
            || (self.config.response_filter.enabled && self.status == 200)
        {
            // Hold the headers: token and cost headers or the filter need
            // the body; all edits are applied in one call at its end.
            self.resp_headers = headers;
            self.body = Body::Buffer;
            Flow::Pause
        } else {
            // Nothing to hold: the headers go now, the body is observed.
            self.flush_response_headers(headers, &edits);
            self.body = Body::Observe(Vec::new());
            Flow::Continue
        }
    }

    /// Whether the shell must read the response body bytes at this event.
    pub fn response_body_read(&self, body_size: usize, end_of_stream: bool) -> BodyRead {
        match self.body {
            Body::Stream { .. } | Body::Observe(_) if body_size > 0 => BodyRead::Bytes,
            Body::Buffer if end_of_stream => BodyRead::Bytes,
            _ => BodyRead::Nothing,
        }
    }

    /// A response body event; `bytes` are what [`Exchange::response_body_read`]
    /// asked for (empty otherwise).
    pub fn on_response_body(
        &mut self,
        bytes: Vec<u8>,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        let Some(api) = self.api else {
            return Flow::Continue;
        };
        if self.first_byte_ms.is_none() && body_size > 0 {
            self.first_byte_ms = Some(self.clock.now_ms());
        }
        let (chunk, whole) = if matches!(self.body, Body::Stream { .. }) {
            (bytes, Vec::new())
        } else {
            (Vec::new(), bytes)
        };
        match &mut self.body {
            Body::Ignore => Flow::Continue,
            Body::Observe(seen) => {
                let limit = usize::try_from(self.config.max_body_bytes.max(MAX_OBSERVED_BYTES))
                    .unwrap_or(usize::MAX);
                if seen.len().saturating_add(whole.len()) <= limit {
                    seen.extend_from_slice(&whole);
                }
                if !end_of_stream {
                    return Flow::Continue;
                }
                let body = std::mem::take(seen);
                if let Some(info) = usage::parse_response(api, &body) {
                    self.usage = info.usage;
                    self.served_model = info.model;
                }
                self.complete_json(api, body);
                Flow::Continue
            }
            Body::Buffer => {
                if !end_of_stream {
                    return Flow::Pause;
                }
                let mut body = whole;
                let mut edits = self.our_response_headers();
                let up_api = self.upstream_api.unwrap_or(api);
                if up_api != api {
                    let opts = ResponseOptions {
                        created: self.clock.now_ms() / 1000,
                        model: None,
                        include_usage: false,
                    };
                    let upstream_status = self.upstream_status;
                    let t =
                        translate::translate_response(api, up_api, upstream_status, &body, &opts);
                    body = t.body;
                    if t.status != self.status {
                        self.status = t.status;
                    }
                    edits.push((":status", Some(self.status.to_string())));
                    edits.push(("content-length", Some(body.len().to_string())));
                    self.fx.response_body = Some(body.clone());
                }
                if let Some(info) = usage::parse_response(api, &body) {
                    self.usage = info.usage;
                    self.served_model = info.model;
                }
                if self.config.response_filter.enabled && self.status == 200 {
                    let (new, findings) =
                        respfilter::filter_json(&self.config.response_filter, api, &body);
                    self.response_findings = findings;
                    if let Some(what) = self.response_findings.blocked {
                        let err = ApiError::new(
                            502,
                            "response_blocked",
                            format!("the response was blocked: it contained {what}"),
                        );
                        body = err.body(api);
                        self.status = 502;
                        self.reason = Some("response_blocked".to_string());
                        self.cache_plan = Plan::Bypass;
                        self.usage = None;
                        edits.push((":status", Some("502".to_string())));
                        edits.push(("content-type", Some("application/json".to_string())));
                        edits.push(("content-length", Some(body.len().to_string())));
                        self.fx.response_body = Some(body.clone());
                    } else if let Some(new) = new {
                        body = new;
                        edits.push(("content-length", Some(body.len().to_string())));
                        self.fx.response_body = Some(body.clone());
                    }
                }
                if let Some(u) = self.usage {
                    edits.push(("x-llmgate-tokens-in", Some(u.input_tokens.to_string())));
                    edits.push(("x-llmgate-tokens-out", Some(u.output_tokens.to_string())));
                    let model = self
                        .served_model
                        .clone()
                        .or_else(|| self.model.clone())
                        .unwrap_or_default();
                    if let Some(c) = self.config.prices.cost_micro_usd(&model, &u) {
                        edits.push(("x-llmgate-cost-usd", Some(format_usd(c))));
                    }
                }
                let headers = std::mem::take(&mut self.resp_headers);
                self.flush_response_headers(headers, &edits);
                self.complete_json(api, body);
                Flow::Continue
            }
            Body::Stream {
                parser,
                tracker,
                filter,
                translator,
            } => {
                let mut translated = false;
                let chunk = match translator.as_mut() {
                    Some(t) => {
                        let (up_parser, tr) = &mut **t;
                        let mut evs = up_parser.push(&chunk);
                        if end_of_stream {
                            evs.extend(up_parser.finish());
                        }
                        let mut out = Vec::with_capacity(chunk.len());
                        for ev in &evs {
                            out.extend(tr.on_event(ev));
                        }
                        // An oversized upstream event cannot be translated:
                        // the translator ends the stream with an error event.
                        if up_parser.overflowed() {
                            let _ = up_parser.take_unparsed();
                            out.extend(tr.finish());
                        } else if end_of_stream {
                            out.extend(tr.finish());
                        }
                        translated = true;
                        out
                    }
                    None => chunk,
                };
                let mut events = parser.push(&chunk);
                if end_of_stream {
                    events.extend(parser.finish());
                }
                let mut out = Vec::with_capacity(chunk.len());
                let mut changed = filter.is_some() || translated;
                let had_token = tracker.first_token_seen();
                for ev in &events {
                    match (tracker.observe(ev), filter.as_mut()) {
                        (Verdict::Forward, None) => out.extend_from_slice(&ev.raw),
                        (Verdict::Forward, Some(f)) => out.extend(f.on_event(ev)),
                        (Verdict::Drop, _) => changed = true,
                    }
                }
                let unparsed = parser.take_unparsed();
                let mut unfilterable = false;
                if let Some(f) = filter.as_mut() {
                    if parser.overflowed() {
                        // An event over the parser's limit cannot be
                        // filtered: fail closed, never pass it through.
                        if !f.ended() {
                            unfilterable = true;
                        }
                        out.extend(f.fail_closed("an event exceeded the stream size limit"));
                        changed = true;
                    } else if end_of_stream {
                        out.extend(f.finish());
                    }
                    if f.findings != self.response_findings {
                        self.response_findings = f.findings.clone();
                    }
                } else {
                    out.extend_from_slice(&unparsed);
                }
                let filter_ended = filter.as_ref().is_some_and(|f| f.ended());
                let first_token_now = !had_token && tracker.first_token_seen();
                // Held-back bytes (an incomplete event) also change the chunk.
                changed |= out.len() != chunk.len();
                let usage_now = tracker.usage();
                let model_now = tracker.model().map(str::to_string);
                let done = tracker.completed();
                if unfilterable {
                    self.metrics.incr(
                        "llmgate.response_filter_failures_total.reason.event_too_large",
                        1,
                    );
                    self.reason = Some("response_unfilterable".to_string());
                }
                if changed {
                    self.fx.response_body = Some(out.clone());
                }
                if let Some(rec) = &mut self.recorder {
                    rec.push(&out);
                }
                if first_token_now {
                    self.first_token_ms = Some(self.clock.now_ms());
                }
                if usage_now.is_some() {
                    self.usage = usage_now;
                }
                if model_now.is_some() {
                    self.served_model = model_now;
                }
                if end_of_stream {
                    self.completed = done || self.status >= 400;
                    // A stream the filter ended (blocked, unfilterable) is
                    // never cached.
                    let blocked = self.response_findings.blocked.is_some() || filter_ended;
                    if let Some(rec) = self.recorder.take().filter(|_| !blocked) {
                        if let Some(entry) = rec.finish(
                            done,
                            api,
                            &self.content_type.clone(),
                            self.clock.now_ms(),
                            self.served_model.clone(),
                            self.usage,
                        ) {
                            self.store(entry);
                        }
                    }
                    self.finish();
                }
                Flow::Continue
            }
        }
    }

    /// Request trailers arrived.
    pub fn on_request_trailers(&mut self) -> Flow {
        // The body of an LLM request ends with trailers (HTTP/2): the
        // body-complete step never ran, so nothing was inspected. Refuse it
        // rather than forward it unchecked.
        match self.api {
            Some(api) if !self.replied && !self.passthrough && !self.body_done => self.reply_error(
                api,
                &ApiError::new(
                    400,
                    "trailers_not_supported",
                    "request trailers are not accepted on LLM routes",
                ),
            ),
            _ => Flow::Continue,
        }
    }

    /// The end of the exchange, whatever happened; `downstream_gone`: the
    /// client went away (Envoy's response flags), asked only when
    /// [`Exchange::needs_abort_check`] says so.
    pub fn on_log(&mut self, downstream_gone: bool) {
        self.absorb_coalescing();
        if self.fleet_wait_until.take().is_some() {
            self.parked = None;
        }
        if self.needs_abort_check() {
            self.client_aborted = downstream_gone;
        }
        if self.other_path {
            if let Some(r) = self.reservation.take() {
                let report = self.config.budgets.release(&*self.store, &*self.clock, &r);
                if !report.store_failures.is_empty() {
                    self.metrics.incr(
                        "llmgate.dependency_failures_total.dependency.shared_data",
                        report.store_failures.len() as u64,
                    );
                }
            }
            return;
        }
        self.finish();
    }
}

/// Owned header pairs.
fn owned<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
        .collect()
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        413,
        "request_too_large",
        format!("request body exceeds the limit of {limit} bytes"),
    )
}

#[cfg(test)]
#[path = "exchange_tests.rs"]
mod tests;

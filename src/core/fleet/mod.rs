//! Fleet mode (issue 16): limits that hold across every sidecar, through a
//! Redis Cluster, without a Redis round trip per request — leased budget
//! slices.
//!
//! # Design
//!
//! For each fleet-scoped limit of a scope (a key or a tenant: `key:<id>`,
//! `tenant:<t>`) and its current window, this Envoy holds a *lease*: an
//! amount of requests, tokens or micro-USD granted to it out of the fleet's
//! limit by an atomic Redis script ([`redis::GRANT_SCRIPT`]). Admission
//! reserves against the lease in proxy-wasm shared data with CAS, exactly as
//! local budgets do (admit only if the lease covers the estimate); settlement
//! gives the difference back to the local lease, not to Redis.
//!
//! When a lease cannot cover a request, the request waits for one *lease
//! callout* (an HTTP call to webdis running the script): single flight per
//! scope per Envoy, a flag in the scope's shared-data record won by CAS;
//! other requests of the scope, on any worker, wait for it. The answer gives
//! the new lease; the request is then admitted or refused. The root tick
//! renews leases (a third into their TTL), gives idle leases back
//! ([`redis::RELEASE_SCRIPT`]) and gives back what the previous window's
//! leases held once a window is over.
//!
//! # Accounting
//!
//! Each lease keeps `b` (balance: unused, usable) and `u` (net use not yet
//! reported to Redis: reservations minus refunds plus overruns). Every
//! exchange reports `u` to Redis, where it moves from the sidecar's held
//! lease `h` to the fleet's reported use `s`; Redis answers the new `h`,
//! which becomes the balance (minus what was used while the callout was in
//! flight). So, at every instant, for every sidecar, Redis's
//! `s_pod + h_pod = reserved + used + b` of that sidecar (plus overruns), and
//! `s + Σ h ≤ limit`: the fleet admits at most the limit, except by requests
//! that use more than their estimate (as local budgets).
//!
//! A lease is only usable until `lease_ttl` after the exchange that granted
//! or renewed it (measured from the callout's dispatch, so before Redis's
//! own expiry): when a sidecar dies, Redis drops its lease after the TTL and
//! the capacity returns to the fleet. What the dead sidecar had admitted since
//! its last exchange (at most about a third of the TTL of traffic) is the
//! only use the fleet can lose.
//!
//! # The shell's call order
//!
//! - plugin start: [`Fleet::init`] (creates every scope's shared-data key
//!   and this Envoy's pod id, before traffic: the host has no
//!   create-if-absent).
//! - request admission: [`Fleet::reserve`]; dispatch every returned
//!   [`LeaseCallout`] (keep its [`Ticket`]); on `Wait`, pause the request and
//!   call `reserve` again when woken or at `until_ms`.
//! - callout answer (or timeout, or dispatch failure):
//!   [`Fleet::on_response`] / [`Fleet::on_answer`], then wake the requests of
//!   that scope waiting on this worker.
//! - response: [`Fleet::settle`] (or [`Fleet::release`] when the request
//!   failed before the upstream used anything).
//! - root tick: [`Fleet::tick`], dispatch what it returns; also re-run
//!   `reserve` for requests waiting on a flight another worker owns.
//! - headers: [`Fleet::peek`] for `x-ratelimit-remaining-*`.

mod codec;
pub mod config;
pub mod redis;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use self::config::{CompiledFleet, FleetConfig, FleetFailureMode, LeaseSizes};
pub use self::redis::{
    grant_request, hashtag, limit_code, parse_reply, redis_key, release_request, CalloutFailure,
    GrantArg, ItemReply, ReleaseArg, WebdisRequest, GRANT_SCRIPT, RELEASE_SCRIPT,
};
use crate::core::budget::{
    ensure_key, Actual, Estimate, LimitKind, StoreFailure, StoreFailureKind,
};
use crate::core::host::{Clock, SharedStore, StoreError};

/// Prefix of the per-scope shared-data keys (`llmgate:fleet:<scope>`).
pub const LOCAL_KEY_PREFIX: &str = "llmgate:fleet:";
/// Shared-data key holding this Envoy's pod id (the same for every worker).
pub const POD_KEY: &str = "llmgate:fleet-pod";
/// How long after a callout's timeout a waiting request may take over its
/// flight (the owner's answer or timeout callback never came: its VM died).
pub const FLIGHT_GRACE_MS: u64 = 200;
const EMPTY_RECORD: &[u8] = b"{}";
/// Kept after a window's end on the Redis keys, beyond the lease TTL.
const KEY_SLACK_MS: u64 = 60_000;

/// A scope with fleet-scoped limits, as the shell knows it from the
/// configuration: its storage name (`key:<id>`, `tenant:<t>`) and each
/// fleet limit (requests, tokens or micro-USD per window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetScope {
    pub name: String,
    pub limits: Vec<(LimitKind, u64)>,
}

/// Where an admitted amount came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The lease: the normal case.
    Lease,
    /// The `local` failure mode's share (Redis was failing).
    LocalShare,
    /// Admitted by the `open` failure mode without a lease.
    Open,
}

/// One admitted amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub scope: String,
    pub limit: LimitKind,
    pub window: u64,
    pub amount: u64,
    pub source: Source,
}

/// What a request holds in fleet leases; hand it back to
/// [`Fleet::settle`] or [`Fleet::release`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetReservation {
    pub items: Vec<Reserved>,
}

impl FleetReservation {
    /// Some of it was admitted by the failure mode (metric).
    pub fn degraded(&self) -> bool {
        self.items.iter().any(|i| i.source != Source::Lease)
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetDenyReason {
    /// 429: the fleet's limit is reached (`retry-after`: the window's end).
    Limit,
    /// 429: Redis is failing (`local` failure mode) and this Envoy's local
    /// share of the limit is used up.
    LocalShare,
    /// 503: Redis is failing and the failure mode is `closed`.
    Unavailable,
    /// 429 (`retry-after: 1`): every CAS attempt lost against other writers.
    Contention,
}

/// A refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetDenial {
    pub reason: FleetDenyReason,
    pub scope: String,
    /// The limit that refused (`None` for `Unavailable` / `Contention` when
    /// no single limit did).
    pub limit: Option<LimitKind>,
    pub limit_value: u64,
    /// What could still be admitted as far as this Envoy knows (its lease
    /// plus the fleet's remaining at the last exchange), or the local
    /// share's remaining.
    pub remaining: u64,
    pub retry_after_s: u64,
}

/// The decision for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Admitted(FleetReservation),
    /// Pause the request until a lease callout of one of its scopes is
    /// answered (this worker: wake it then; another worker's: the root tick
    /// re-runs `reserve`), and at the latest until `until_ms`; then call
    /// [`Fleet::reserve`] again. Nothing is reserved meanwhile.
    Wait {
        until_ms: u64,
    },
    Denied(FleetDenial),
}

/// What [`Fleet::reserve`] decided, and the callouts the caller won the
/// single flight for (dispatch every one, whatever the outcome).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub outcome: Outcome,
    pub callouts: Vec<LeaseCallout>,
    /// Shared-data failures met (metric).
    pub store_failures: Vec<StoreFailure>,
}

/// Identifies a lease callout for [`Fleet::on_answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub scope: String,
    pub flight: u64,
    /// A give-back (`RELEASE_SCRIPT`) rather than a grant.
    pub give_back: bool,
    /// The limit of each key, in order (for [`parse_reply`]).
    pub limits: Vec<u64>,
}

/// A lease callout to dispatch to webdis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseCallout {
    pub ticket: Ticket,
    /// Envoy cluster (`fleet.cluster`).
    pub cluster: String,
    /// `:authority`.
    pub authority: String,
    pub request: WebdisRequest,
    pub timeout_ms: u64,
}

/// What [`Fleet::on_answer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerReport {
    /// The answer was applied (false: a stale answer for a flight already
    /// taken over, or a shared-data failure).
    pub applied: bool,
    /// The callout failed (dependency-failure metric, label `reason()`).
    pub failure: Option<CalloutFailure>,
    pub store_failures: Vec<StoreFailure>,
}

/// What [`Fleet::settle`] / [`Fleet::tick`] met.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    pub callouts: Vec<LeaseCallout>,
    pub store_failures: Vec<StoreFailure>,
}

/// The fleet's remaining for a limit, for `x-ratelimit-remaining-*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetRemaining {
    pub limit: LimitKind,
    pub limit_value: u64,
    /// This Envoy's lease plus the fleet's remaining at the last exchange;
    /// `None` before the first exchange in the window.
    pub remaining: Option<u64>,
}

// ---------------------------------------------------------------------------
// Shared-data record of a scope
// ---------------------------------------------------------------------------

/// One lease (a limit of the scope) in its window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Lease {
    /// Window index.
    w: u64,
    /// Balance: unused lease.
    #[serde(default)]
    b: u64,
    /// Net use not yet reported to Redis.
    #[serde(default)]
    u: i64,
    /// The balance is usable until then (ms; 0: never granted).
    #[serde(default)]
    x: u64,
    /// Fleet remaining at the last exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<u64>,
    /// Last admission (ms).
    #[serde(default)]
    t: u64,
    /// Last exchange answered (ms).
    #[serde(default)]
    q: u64,
    /// Admitted from the `local` failure mode's share in this window.
    #[serde(default)]
    fb: u64,
    /// The last exchange could not cover its need (ms; 0: no).
    #[serde(default)]
    ex: u64,
    /// Overrun beyond the balance since the last exchange: refunds pay it
    /// before they add to the balance.
    #[serde(default)]
    dt: u64,
}

impl Lease {
    fn new(w: u64) -> Self {
        Self {
            w,
            ..Self::default()
        }
    }

    fn usable(&self, now: u64) -> u64 {
        if now < self.x {
            self.b
        } else {
            0
        }
    }

    fn has_something(&self) -> bool {
        self.b > 0 || self.u != 0
    }
}

/// A lease of a window that is over, whose final report (and release of
/// what Redis still counts as held) is pending.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OldLease {
    w: u64,
    #[serde(default)]
    u: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlightItem {
    /// Limit code.
    c: String,
    w: u64,
    /// Reported use (restored to the lease if the callout fails).
    #[serde(default)]
    rep: i64,
    #[serde(default)]
    need: u64,
    /// Ask for a lease chunk (else only report and renew).
    #[serde(default)]
    a: bool,
    /// Limit value.
    #[serde(default)]
    lim: u64,
    /// A previous window's lease (release).
    #[serde(default)]
    old: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Flight {
    id: u64,
    /// Give-back (release script).
    #[serde(default)]
    gb: bool,
    /// Dispatched at (ms).
    s: u64,
    /// Waiters may take over after this (ms).
    d: u64,
    i: Vec<FlightItem>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeRecord {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    l: BTreeMap<String, Lease>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    o: BTreeMap<String, OldLease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<Flight>,
    /// Flight id counter.
    #[serde(default)]
    n: u64,
    /// No new callout before (ms): failure backoff.
    #[serde(default)]
    fu: u64,
}

/// A scope record in its binary form ([`codec`]), or JSON (the initial
/// `{}`, or written by an older version).
fn parse_record(v: &[u8]) -> Option<ScopeRecord> {
    if codec::is_binary(v) {
        return codec::decode(v);
    }
    serde_json::from_slice(v).ok()
}

fn amount_for(kind: LimitKind, est: Estimate) -> u64 {
    match kind {
        LimitKind::RequestsPerMinute => 1,
        LimitKind::TokensPerMinute | LimitKind::TokensPerDay => est.tokens,
        LimitKind::UsdPerDay | LimitKind::UsdPerMonth => est.micro_usd,
    }
}

/// What a request really used of a reserved `amount`. Requests count at
/// admission; an unknown cost keeps the estimate (never refunds).
fn used_of(kind: LimitKind, amount: u64, actual: Option<Actual>) -> u64 {
    match (kind, actual) {
        (LimitKind::RequestsPerMinute, _) => amount,
        (_, None) => 0,
        (LimitKind::TokensPerMinute | LimitKind::TokensPerDay, Some(a)) => a.tokens,
        (LimitKind::UsdPerDay | LimitKind::UsdPerMonth, Some(a)) => a.micro_usd.unwrap_or(amount),
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn window_of(kind: LimitKind, now_ms: u64) -> u64 {
    kind.period().index(now_ms / 1000)
}

fn ceil_s(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

/// `held − since` (what the balance is once the use in flight is counted),
/// clamped to `0..=u64::MAX`.
fn balance_after(held: u64, since: i64) -> u64 {
    let v = i128::from(held).saturating_sub(i128::from(since));
    u64::try_from(v.max(0)).unwrap_or(u64::MAX)
}

enum ScopeStep {
    Admitted(Vec<Reserved>),
    Wait {
        until: u64,
        callout: Option<LeaseCallout>,
    },
    Denied(FleetDenial),
    /// Shared data failed for this scope (missing key, host error).
    StoreFailed(StoreFailure),
}

/// The fleet engine: configuration plus pure functions over shared data.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    pub cfg: CompiledFleet,
}

impl Fleet {
    pub fn new(cfg: CompiledFleet) -> Self {
        Self { cfg }
    }

    /// The shared-data key of a scope's record.
    pub fn local_key(scope: &str) -> String {
        format!("{LOCAL_KEY_PREFIX}{scope}")
    }

    /// Plugin start (every worker, before traffic): creates this Envoy's pod
    /// id (`candidate`, unless a worker already stored one: the first one
    /// stays) and every scope's record. Idempotent; repairs a corrupt value.
    pub fn init(
        &self,
        store: &dyn SharedStore,
        scopes: &[FleetScope],
        candidate_pod_id: &str,
    ) -> Result<(), StoreFailure> {
        let pod = sanitize_pod(candidate_pod_id);
        ensure_key(store, POD_KEY, pod.as_bytes(), |v| {
            !v.is_empty() && v.len() <= 128
        })?;
        for s in scopes {
            ensure_key(store, &Self::local_key(&s.name), EMPTY_RECORD, |v| {
                parse_record(v).is_some()
            })?;
        }
        Ok(())
    }

    /// This Envoy's pod id.
    pub fn pod_id(store: &dyn SharedStore) -> Result<String, StoreFailure> {
        match store.get(POD_KEY) {
            Ok(Some((v, _))) if !v.is_empty() => Ok(String::from_utf8_lossy(&v).into_owned()),
            Ok(_) => Err(StoreFailure {
                key: POD_KEY.to_string(),
                kind: StoreFailureKind::Missing,
            }),
            Err(_) => Err(StoreFailure {
                key: POD_KEY.to_string(),
                kind: StoreFailureKind::Unavailable,
            }),
        }
    }

    fn read(
        &self,
        store: &dyn SharedStore,
        key: &str,
        failures: &mut Vec<StoreFailure>,
    ) -> Result<(ScopeRecord, u32), StoreFailure> {
        let fail = |kind| StoreFailure {
            key: key.to_string(),
            kind,
        };
        match store.get(key) {
            Ok(Some((v, cas))) => match parse_record(&v) {
                Some(r) => Ok((r, cas)),
                None => {
                    // Unreadable: start again from an empty record (the
                    // leases it held return to the fleet when their TTL ends
                    // in Redis).
                    failures.push(fail(StoreFailureKind::Corrupt));
                    Ok((ScopeRecord::default(), cas))
                }
            },
            Ok(None) => Err(fail(StoreFailureKind::Missing)),
            Err(_) => Err(fail(StoreFailureKind::Unavailable)),
        }
    }

    fn write(
        store: &dyn SharedStore,
        key: &str,
        rec: &ScopeRecord,
        cas: u32,
    ) -> Result<bool, StoreFailure> {
        let bytes = codec::encode(rec);
        match store.set(key, &bytes, Some(cas)) {
            Ok(()) => Ok(true),
            Err(StoreError::CasMismatch) => Ok(false),
            Err(StoreError::Unavailable) => Err(StoreFailure {
                key: key.to_string(),
                kind: StoreFailureKind::Unavailable,
            }),
        }
    }

    fn key_ttl_ms(&self, kind: LimitKind, now: u64) -> u64 {
        let end_ms = kind.period().window_end_s(now / 1000).saturating_mul(1000);
        end_ms
            .saturating_sub(now)
            .saturating_add(self.cfg.lease_ttl_ms)
            .saturating_add(KEY_SLACK_MS)
    }

    fn chunk_for(&self, kind: LimitKind) -> u64 {
        match kind {
            LimitKind::RequestsPerMinute => self.cfg.chunk_requests,
            LimitKind::TokensPerMinute | LimitKind::TokensPerDay => self.cfg.chunk_tokens,
            LimitKind::UsdPerDay | LimitKind::UsdPerMonth => self.cfg.chunk_micro_usd,
        }
    }

    /// Window rollover, missing leases, and takeover of a flight whose owner
    /// never answered. Returns whether the record changed.
    fn roll(&self, rec: &mut ScopeRecord, scope: &FleetScope, now: u64) -> bool {
        let mut changed = false;
        for &(kind, _) in &scope.limits {
            let w = window_of(kind, now);
            let code = limit_code(kind).to_string();
            let lease = rec.l.entry(code.clone()).or_insert_with(|| {
                changed = true;
                Lease::new(w)
            });
            // A window at or past the current one counts as current (a clock
            // stepping back a little does not drop a lease).
            if lease.w < w {
                if lease.x != 0 || lease.u != 0 {
                    let old = OldLease {
                        w: lease.w,
                        u: lease.u,
                    };
                    merge_old(&mut rec.o, &code, old);
                }
                *lease = Lease::new(w);
                changed = true;
            }
        }
        if rec.f.as_ref().is_some_and(|f| f.d <= now) {
            fail_flight(rec, now, 0);
            changed = true;
        }
        changed
    }

    fn callout(&self, scope: &str, flight: &Flight, pod: &str, now: u64) -> LeaseCallout {
        let limits: Vec<u64> = flight.i.iter().map(|i| i.lim).collect();
        let kind_of = |c: &str| redis::limit_of_code(c).unwrap_or(LimitKind::TokensPerMinute);
        let request = if flight.gb {
            let items: Vec<ReleaseArg> = flight
                .i
                .iter()
                .map(|i| {
                    let kind = kind_of(&i.c);
                    ReleaseArg {
                        key: redis_key(&self.cfg.key_prefix, scope, kind, i.w),
                        report: i.rep,
                        limit: i.lim,
                        key_ttl_ms: self.key_ttl_ms(kind, now),
                    }
                })
                .collect();
            release_request(pod, &items)
        } else {
            let items: Vec<GrantArg> = flight
                .i
                .iter()
                .map(|i| {
                    let kind = kind_of(&i.c);
                    GrantArg {
                        key: redis_key(&self.cfg.key_prefix, scope, kind, i.w),
                        report: i.rep,
                        need: i.need,
                        chunk: if i.a { self.chunk_for(kind) } else { 0 },
                        limit: i.lim,
                        lease_ttl_ms: self.cfg.lease_ttl_ms,
                        key_ttl_ms: self.key_ttl_ms(kind, now),
                    }
                })
                .collect();
            grant_request(pod, &items)
        };
        LeaseCallout {
            ticket: Ticket {
                scope: scope.to_string(),
                flight: flight.id,
                give_back: flight.gb,
                limits,
            },
            cluster: self.cfg.cluster.clone(),
            authority: self.cfg.authority.clone(),
            request,
            timeout_ms: self.cfg.timeout_ms,
        }
    }

    fn start_flight(
        &self,
        rec: &mut ScopeRecord,
        give_back: bool,
        items: Vec<FlightItem>,
        now: u64,
    ) -> Flight {
        rec.n = rec.n.saturating_add(1);
        let flight = Flight {
            id: rec.n,
            gb: give_back,
            s: now,
            d: now
                .saturating_add(self.cfg.timeout_ms)
                .saturating_add(FLIGHT_GRACE_MS),
            i: items,
        };
        rec.f = Some(flight.clone());
        flight
    }

    // -----------------------------------------------------------------------
    // Admission
    // -----------------------------------------------------------------------

    /// Admission of a request with `estimate` against every fleet scope it
    /// belongs to (key, tenant). All or nothing: when one scope waits or
    /// refuses, what other scopes reserved is rolled back.
    pub fn reserve(
        &self,
        store: &dyn SharedStore,
        clock: &dyn Clock,
        scopes: &[FleetScope],
        estimate: Estimate,
    ) -> Admission {
        let now = clock.now_ms();
        let mut failures = Vec::new();
        let mut callouts = Vec::new();
        let mut admitted: Vec<Reserved> = Vec::new();
        let mut wait_until: Option<u64> = None;
        let mut denial: Option<FleetDenial> = None;
        let mut pod: Option<String> = None;
        for scope in scopes.iter().filter(|s| !s.limits.is_empty()) {
            match self.reserve_scope(store, now, scope, estimate, &mut pod, &mut failures) {
                ScopeStep::Admitted(items) => admitted.extend(items),
                ScopeStep::Wait { until, callout } => {
                    wait_until = Some(wait_until.map_or(until, |w: u64| w.max(until)));
                    callouts.extend(callout);
                }
                ScopeStep::Denied(d) => {
                    denial = Some(d);
                    break;
                }
                ScopeStep::StoreFailed(f) => {
                    let scope_name = scope.name.clone();
                    failures.push(f);
                    if self.cfg.failure_mode == FleetFailureMode::Closed {
                        denial = Some(FleetDenial {
                            reason: FleetDenyReason::Unavailable,
                            scope: scope_name,
                            limit: None,
                            limit_value: 0,
                            remaining: 0,
                            retry_after_s: 1,
                        });
                        break;
                    }
                    // Otherwise admitted for this scope without a lease.
                }
            }
        }
        let outcome = if let Some(d) = denial {
            failures.extend(self.undo(store, &admitted));
            Outcome::Denied(d)
        } else if let Some(until) = wait_until {
            failures.extend(self.undo(store, &admitted));
            Outcome::Wait { until_ms: until }
        } else {
            Outcome::Admitted(FleetReservation { items: admitted })
        };
        Admission {
            outcome,
            callouts,
            store_failures: failures,
        }
    }

    fn reserve_scope(
        &self,
        store: &dyn SharedStore,
        now: u64,
        scope: &FleetScope,
        est: Estimate,
        pod: &mut Option<String>,
        failures: &mut Vec<StoreFailure>,
    ) -> ScopeStep {
        let key = Self::local_key(&scope.name);
        for _ in 0..=self.cfg.cas_retries {
            let (mut rec, cas) = match self.read(store, &key, failures) {
                Ok(x) => x,
                Err(f) => return ScopeStep::StoreFailed(f),
            };
            self.roll(&mut rec, scope, now);
            // Which leases cannot cover the estimate.
            let mut short: Vec<(LimitKind, u64, u64)> = Vec::new();
            for &(kind, limit) in &scope.limits {
                let amount = amount_for(kind, est);
                let usable = rec.l.get(limit_code(kind)).map_or(0, |l| l.usable(now));
                if usable < amount {
                    short.push((kind, limit, amount.saturating_sub(usable)));
                }
            }
            let mut items = Vec::new();
            let step = if short.is_empty() {
                for &(kind, _) in &scope.limits {
                    let amount = amount_for(kind, est);
                    if let Some(l) = rec.l.get_mut(limit_code(kind)) {
                        l.b = l.b.saturating_sub(amount);
                        l.u = l.u.saturating_add(to_i64(amount));
                        l.t = now;
                        items.push(Reserved {
                            scope: scope.name.clone(),
                            limit: kind,
                            window: l.w,
                            amount,
                            source: Source::Lease,
                        });
                    }
                }
                None
            } else if let Some(f) = &rec.f {
                // Someone else's flight: wait for it (nothing to write).
                return ScopeStep::Wait {
                    until: f.d,
                    callout: None,
                };
            } else if now < rec.fu {
                match self.failure_mode_admit(&mut rec, scope, est, now, &mut items) {
                    Ok(()) => None,
                    Err(d) => return ScopeStep::Denied(d),
                }
            } else if let Some(d) = self.exhausted(&rec, scope, &short, now) {
                return ScopeStep::Denied(d);
            } else {
                // Win the single flight for this scope.
                let pod_id = match pod {
                    Some(p) => p.clone(),
                    None => match Self::pod_id(store) {
                        Ok(p) => {
                            *pod = Some(p.clone());
                            p
                        }
                        Err(f) => return ScopeStep::StoreFailed(f),
                    },
                };
                let mut fitems = Vec::new();
                for &(kind, limit) in &scope.limits {
                    let code = limit_code(kind);
                    let need = short.iter().find(|s| s.0 == kind).map_or(0, |s| s.2);
                    if let Some(l) = rec.l.get_mut(code) {
                        // Top up a lease running low in the same round trip.
                        let ask =
                            need > 0 || l.usable(now).saturating_mul(2) < self.chunk_for(kind);
                        fitems.push(FlightItem {
                            c: code.to_string(),
                            w: l.w,
                            rep: l.u,
                            need,
                            a: ask,
                            lim: limit,
                            old: false,
                        });
                        l.u = 0;
                    }
                }
                let flight = self.start_flight(&mut rec, false, fitems, now);
                Some((flight, pod_id))
            };
            match Self::write(store, &key, &rec, cas) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(f) => return ScopeStep::StoreFailed(f),
            }
            return match step {
                None => ScopeStep::Admitted(items),
                Some((flight, pod_id)) => ScopeStep::Wait {
                    until: flight.d,
                    callout: Some(self.callout(&scope.name, &flight, &pod_id, now)),
                },
            };
        }
        ScopeStep::Denied(FleetDenial {
            reason: FleetDenyReason::Contention,
            scope: scope.name.clone(),
            limit: None,
            limit_value: 0,
            remaining: 0,
            retry_after_s: 1,
        })
    }

    /// The fleet could not cover a need at the last exchange, recently: 429
    /// without a new callout.
    fn exhausted(
        &self,
        rec: &ScopeRecord,
        scope: &FleetScope,
        short: &[(LimitKind, u64, u64)],
        now: u64,
    ) -> Option<FleetDenial> {
        for &(kind, limit, _) in short {
            let l = rec.l.get(limit_code(kind))?;
            if l.ex != 0 && now < l.ex.saturating_add(self.cfg.exhausted_recheck_ms) {
                return Some(FleetDenial {
                    reason: FleetDenyReason::Limit,
                    scope: scope.name.clone(),
                    limit: Some(kind),
                    limit_value: limit,
                    remaining: l.r.unwrap_or(0).saturating_add(l.usable(now)),
                    retry_after_s: kind.period().retry_after_s(now),
                });
            }
        }
        None
    }

    /// Admission while Redis fails (after a failed callout, until the
    /// backoff ends) for a request the leases cannot all cover.
    fn failure_mode_admit(
        &self,
        rec: &mut ScopeRecord,
        scope: &FleetScope,
        est: Estimate,
        now: u64,
        items: &mut Vec<Reserved>,
    ) -> Result<(), FleetDenial> {
        let mode = self.cfg.failure_mode;
        let backoff_s = ceil_s(rec.fu.saturating_sub(now));
        if mode == FleetFailureMode::Closed {
            return Err(FleetDenial {
                reason: FleetDenyReason::Unavailable,
                scope: scope.name.clone(),
                limit: None,
                limit_value: 0,
                remaining: 0,
                retry_after_s: backoff_s,
            });
        }
        // Check first, then apply (all or nothing).
        for &(kind, limit) in &scope.limits {
            let amount = amount_for(kind, est);
            let Some(l) = rec.l.get(limit_code(kind)) else {
                continue;
            };
            if l.usable(now) >= amount || mode == FleetFailureMode::Open {
                continue;
            }
            let share = self.cfg.local_share_of(limit);
            if l.fb.saturating_add(amount) > share {
                return Err(FleetDenial {
                    reason: FleetDenyReason::LocalShare,
                    scope: scope.name.clone(),
                    limit: Some(kind),
                    limit_value: limit,
                    remaining: share.saturating_sub(l.fb),
                    retry_after_s: backoff_s,
                });
            }
        }
        for &(kind, _) in &scope.limits {
            let amount = amount_for(kind, est);
            let Some(l) = rec.l.get_mut(limit_code(kind)) else {
                continue;
            };
            let source = if l.usable(now) >= amount {
                l.b = l.b.saturating_sub(amount);
                Source::Lease
            } else if mode == FleetFailureMode::Open {
                Source::Open
            } else {
                l.fb = l.fb.saturating_add(amount);
                Source::LocalShare
            };
            l.u = l.u.saturating_add(to_i64(amount));
            l.t = now;
            items.push(Reserved {
                scope: scope.name.clone(),
                limit: kind,
                window: l.w,
                amount,
                source,
            });
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Settlement
    // -----------------------------------------------------------------------

    /// The response is done: gives `reserved − used` back to the local
    /// lease (or charges an overrun). A reservation of a window that is over
    /// is ignored (its window went with it). Failures are only reported.
    pub fn settle(
        &self,
        store: &dyn SharedStore,
        _clock: &dyn Clock,
        reservation: &FleetReservation,
        actual: Actual,
    ) -> Vec<StoreFailure> {
        self.finish(store, &reservation.items, Some(actual), false)
    }

    /// The request failed before using anything: everything but the request
    /// count goes back to the lease.
    pub fn release(
        &self,
        store: &dyn SharedStore,
        _clock: &dyn Clock,
        reservation: &FleetReservation,
    ) -> Vec<StoreFailure> {
        self.finish(store, &reservation.items, None, false)
    }

    /// Rolls back a partial admission (the request was never admitted: the
    /// request count goes back too).
    fn undo(&self, store: &dyn SharedStore, items: &[Reserved]) -> Vec<StoreFailure> {
        self.finish(store, items, None, true)
    }

    fn finish(
        &self,
        store: &dyn SharedStore,
        items: &[Reserved],
        actual: Option<Actual>,
        undo: bool,
    ) -> Vec<StoreFailure> {
        let mut failures = Vec::new();
        let mut scopes: Vec<&str> = items.iter().map(|i| i.scope.as_str()).collect();
        scopes.sort_unstable();
        scopes.dedup();
        for scope in scopes {
            let key = Self::local_key(scope);
            let mut done = false;
            for _ in 0..=self.cfg.cas_retries {
                let (mut rec, cas) = match self.read(store, &key, &mut failures) {
                    Ok(x) => x,
                    Err(f) => {
                        failures.push(f);
                        done = true;
                        break;
                    }
                };
                for item in items.iter().filter(|i| i.scope == scope) {
                    let Some(l) = rec.l.get_mut(limit_code(item.limit)) else {
                        continue;
                    };
                    if l.w != item.window {
                        continue;
                    }
                    let used = if undo {
                        0
                    } else {
                        used_of(item.limit, item.amount, actual)
                    };
                    if used <= item.amount {
                        let back = item.amount.saturating_sub(used);
                        match item.source {
                            Source::Lease => {
                                let paid = back.min(l.dt);
                                l.dt = l.dt.saturating_sub(paid);
                                l.b = l.b.saturating_add(back.saturating_sub(paid));
                            }
                            Source::LocalShare => l.fb = l.fb.saturating_sub(back),
                            Source::Open => {}
                        }
                        l.u = l.u.saturating_sub(to_i64(back));
                    } else {
                        let extra = used.saturating_sub(item.amount);
                        match item.source {
                            Source::Lease => {
                                l.dt = l.dt.saturating_add(extra.saturating_sub(l.b));
                                l.b = l.b.saturating_sub(extra);
                            }
                            Source::LocalShare => l.fb = l.fb.saturating_add(extra),
                            Source::Open => {}
                        }
                        l.u = l.u.saturating_add(to_i64(extra));
                    }
                }
                match Self::write(store, &key, &rec, cas) {
                    Ok(true) => {
                        done = true;
                        break;
                    }
                    Ok(false) => continue,
                    Err(f) => {
                        failures.push(f);
                        done = true;
                        break;
                    }
                }
            }
            if !done {
                failures.push(StoreFailure {
                    key,
                    kind: StoreFailureKind::RetriesExhausted,
                });
            }
        }
        failures
    }

    // -----------------------------------------------------------------------
    // Callout answers
    // -----------------------------------------------------------------------

    /// Parses webdis's answer (`status` `None`: timeout / reset) and applies
    /// it: [`parse_reply`] then [`Fleet::on_answer`].
    pub fn on_response(
        &self,
        store: &dyn SharedStore,
        clock: &dyn Clock,
        ticket: &Ticket,
        status: Option<u32>,
        body: Option<&[u8]>,
    ) -> AnswerReport {
        let parsed = parse_reply(status, body, &ticket.limits);
        self.on_answer(store, clock, ticket, parsed)
    }

    /// Applies a callout's outcome to the scope's leases. On success the new
    /// balance of each lease is what Redis says this Envoy holds, minus the
    /// net use admitted while the callout was in flight. On failure the
    /// reported use is restored (it will be reported again: a callout that
    /// timed out after Redis ran it is counted twice, never lost) and no new
    /// callout for the scope starts for `failure_backoff_ms`.
    pub fn on_answer(
        &self,
        store: &dyn SharedStore,
        clock: &dyn Clock,
        ticket: &Ticket,
        answer: Result<Vec<ItemReply>, CalloutFailure>,
    ) -> AnswerReport {
        let now = clock.now_ms();
        let key = Self::local_key(&ticket.scope);
        let mut failures = Vec::new();
        let failure = answer.as_ref().err().copied();
        for _ in 0..=self.cfg.cas_retries {
            let (mut rec, cas) = match self.read(store, &key, &mut failures) {
                Ok(x) => x,
                Err(f) => {
                    failures.push(f);
                    return AnswerReport {
                        applied: false,
                        failure,
                        store_failures: failures,
                    };
                }
            };
            let Some(flight) = rec.f.clone().filter(|f| f.id == ticket.flight) else {
                // Taken over (or answered already): ignore.
                return AnswerReport {
                    applied: false,
                    failure,
                    store_failures: failures,
                };
            };
            let replies = match &answer {
                Ok(r) if r.len() == flight.i.len() => Some(r),
                _ => None,
            };
            let failure = match replies {
                Some(replies) => {
                    rec.f = None;
                    rec.fu = 0;
                    for (item, reply) in flight.i.iter().zip(replies) {
                        self.apply_item(&mut rec, &flight, item, reply, now);
                    }
                    None
                }
                None => {
                    fail_flight(&mut rec, now, self.cfg.failure_backoff_ms);
                    Some(failure.unwrap_or(CalloutFailure::BadAnswer))
                }
            };
            match Self::write(store, &key, &rec, cas) {
                Ok(true) => {
                    return AnswerReport {
                        applied: true,
                        failure,
                        store_failures: failures,
                    }
                }
                Ok(false) => continue,
                Err(f) => {
                    failures.push(f);
                    return AnswerReport {
                        applied: false,
                        failure,
                        store_failures: failures,
                    };
                }
            }
        }
        failures.push(StoreFailure {
            key,
            kind: StoreFailureKind::RetriesExhausted,
        });
        AnswerReport {
            applied: false,
            failure,
            store_failures: failures,
        }
    }

    fn apply_item(
        &self,
        rec: &mut ScopeRecord,
        flight: &Flight,
        item: &FlightItem,
        reply: &ItemReply,
        now: u64,
    ) {
        if item.old {
            return;
        }
        match rec.l.get_mut(&item.c) {
            Some(l) if l.w == item.w => {
                l.b = balance_after(reply.held, l.u);
                l.dt = 0;
                l.x = flight.s.saturating_add(self.cfg.lease_ttl_ms);
                l.r = Some(reply.remaining);
                l.q = now;
                l.ex = if item.need > 0 && l.b < item.need {
                    now
                } else {
                    0
                };
            }
            _ => {
                // The window rolled over while the callout was in flight:
                // what Redis now holds for us there goes back at the next
                // tick.
                if reply.held > 0 {
                    merge_old(&mut rec.o, &item.c, OldLease { w: item.w, u: 0 });
                }
            }
        }
    }

    // -----------------------------------------------------------------------
    // Root tick
    // -----------------------------------------------------------------------

    /// The root context's tick (any worker; single flight per scope keeps
    /// it to one callout per scope per Envoy): gives back what leases of
    /// finished windows held, gives back idle leases (`idle_return_s`), and
    /// renews leases in use a third into their TTL (reporting their use).
    pub fn tick(
        &self,
        store: &dyn SharedStore,
        clock: &dyn Clock,
        scopes: &[FleetScope],
    ) -> TickReport {
        let now = clock.now_ms();
        let mut report = TickReport::default();
        let mut pod: Option<String> = None;
        for scope in scopes.iter().filter(|s| !s.limits.is_empty()) {
            let key = Self::local_key(&scope.name);
            for _ in 0..=self.cfg.cas_retries {
                let (mut rec, cas) = match self.read(store, &key, &mut report.store_failures) {
                    Ok(x) => x,
                    Err(f) => {
                        report.store_failures.push(f);
                        break;
                    }
                };
                let changed = self.roll(&mut rec, scope, now);
                let flight = if rec.f.is_some() || now < rec.fu {
                    None
                } else {
                    self.tick_flight(&mut rec, scope, now)
                };
                if flight.is_none() && !changed {
                    break;
                }
                let pod_id = match (&flight, &pod) {
                    (None, _) => None,
                    (Some(_), Some(p)) => Some(p.clone()),
                    (Some(_), None) => match Self::pod_id(store) {
                        Ok(p) => {
                            pod = Some(p.clone());
                            Some(p)
                        }
                        Err(f) => {
                            report.store_failures.push(f);
                            break;
                        }
                    },
                };
                match Self::write(store, &key, &rec, cas) {
                    Ok(true) => {
                        if let (Some(f), Some(p)) = (flight, pod_id) {
                            report.callouts.push(self.callout(&scope.name, &f, &p, now));
                        }
                        break;
                    }
                    Ok(false) => continue,
                    Err(f) => {
                        report.store_failures.push(f);
                        break;
                    }
                }
            }
        }
        report
    }

    fn tick_flight(&self, rec: &mut ScopeRecord, scope: &FleetScope, now: u64) -> Option<Flight> {
        let limit_of = |code: &str| {
            scope
                .limits
                .iter()
                .find(|(k, _)| limit_code(*k) == code)
                .map_or(0, |(_, v)| *v)
        };
        // 1. Windows that are over: final report, release.
        if !rec.o.is_empty() {
            let old = std::mem::take(&mut rec.o);
            let items = old
                .into_iter()
                .map(|(c, o)| FlightItem {
                    lim: limit_of(&c),
                    c,
                    w: o.w,
                    rep: o.u,
                    need: 0,
                    a: false,
                    old: true,
                })
                .collect();
            return Some(self.start_flight(rec, true, items, now));
        }
        // 2. Idle leases: give back.
        let idle: Vec<String> = rec
            .l
            .iter()
            .filter(|(c, l)| {
                limit_of(c) > 0
                    && l.has_something()
                    && now >= l.t.max(l.q).saturating_add(self.cfg.idle_return_ms)
            })
            .map(|(c, _)| c.clone())
            .collect();
        // The report of each named lease (its use since the last one); a
        // give-back also hands its balance back.
        let report = |rec: &mut ScopeRecord, names: Vec<String>, give_back: bool| {
            let mut items = Vec::new();
            for c in names {
                if let Some(l) = rec.l.get_mut(&c) {
                    items.push(FlightItem {
                        lim: limit_of(&c),
                        c,
                        w: l.w,
                        rep: l.u,
                        need: 0,
                        a: false,
                        old: false,
                    });
                    l.u = 0;
                    if give_back {
                        l.b = 0;
                    }
                }
            }
            items
        };
        if !idle.is_empty() {
            let items = report(rec, idle, true);
            return Some(self.start_flight(rec, true, items, now));
        }
        // 3. Leases in use: renew a third into their TTL, reporting use.
        let third = self.cfg.lease_ttl_ms / 3;
        let renew: Vec<String> = rec
            .l
            .iter()
            .filter(|(c, l)| {
                limit_of(c) > 0 && l.has_something() && now >= l.q.saturating_add(third)
            })
            .map(|(c, _)| c.clone())
            .collect();
        if renew.is_empty() {
            return None;
        }
        let items = report(rec, renew, false);
        Some(self.start_flight(rec, false, items, now))
    }

    // -----------------------------------------------------------------------
    // Headers
    // -----------------------------------------------------------------------

    /// The fleet's remaining per limit of `scope`, as of the last exchange.
    pub fn peek(
        &self,
        store: &dyn SharedStore,
        clock: &dyn Clock,
        scope: &FleetScope,
    ) -> Result<Vec<FleetRemaining>, StoreFailure> {
        let now = clock.now_ms();
        let mut ignored = Vec::new();
        let (rec, _) = self.read(store, &Self::local_key(&scope.name), &mut ignored)?;
        Ok(scope
            .limits
            .iter()
            .map(|&(kind, limit)| {
                let remaining = rec
                    .l
                    .get(limit_code(kind))
                    .filter(|l| l.w >= window_of(kind, now))
                    .and_then(|l| l.r.map(|r| r.saturating_add(l.usable(now)).min(limit)));
                FleetRemaining {
                    limit: kind,
                    limit_value: limit,
                    remaining,
                }
            })
            .collect())
    }
}

/// Keeps a pod id printable and short (it is a Redis hash field).
fn sanitize_pod(candidate: &str) -> String {
    let s: String = candidate
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(96)
        .collect();
    if s.is_empty() {
        "pod".to_string()
    } else {
        s
    }
}

fn merge_old(o: &mut BTreeMap<String, OldLease>, code: &str, old: OldLease) {
    match o.get_mut(code) {
        Some(e) if e.w == old.w => e.u = e.u.saturating_add(old.u),
        // A still older window's report that never went out is dropped (its
        // window is long over; Redis's lease record expires on its own).
        _ => {
            o.insert(code.to_string(), old);
        }
    }
}

/// A flight failed (or was taken over): its reports go back to the leases
/// (or to the pending old-window reports), and with `backoff_ms > 0` no new
/// callout starts before `now + backoff_ms`.
fn fail_flight(rec: &mut ScopeRecord, now: u64, backoff_ms: u64) {
    let Some(f) = rec.f.take() else {
        return;
    };
    for item in f.i {
        match rec.l.get_mut(&item.c) {
            Some(l) if !item.old && l.w == item.w => l.u = l.u.saturating_add(item.rep),
            _ => merge_old(
                &mut rec.o,
                &item.c,
                OldLease {
                    w: item.w,
                    u: item.rep,
                },
            ),
        }
    }
    if backoff_ms > 0 {
        rec.fu = now.saturating_add(backoff_ms);
    }
}

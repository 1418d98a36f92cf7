//! Circuit breaker per upstream cluster (issue 7), its state in shared data
//! so that every worker sees the same breaker.
//!
//! States: **Closed** → **Open** after `consecutive_failures` failures in a
//! row, or when the failure ratio over a sliding window of `window_s`
//! (10 sub-buckets) reaches `failure_ratio` with at least `min_requests`
//! outcomes → after `open_s`, **HalfOpen**: exactly one probe goes through.
//! The probe is the request whose CAS write of the probe lease wins; every
//! other request sees Open and is rerouted. Probe success closes the breaker
//! (counters reset), failure reopens it for a fresh `open_s`. A probe that
//! never reports (client gone) cannot wedge the breaker: its lease expires
//! after `max(open_s, 30 s)` and the next request becomes the probe.
//!
//! One shared-data key per cluster, `llmgate:breaker:<cluster>`, created by
//! [`Breaker::init`] at plugin start (before traffic; the host has no
//! create-if-absent). On the request path every write is a CAS on an existing
//! key with bounded retries. A missing key, a host error, exhausted retries or
//! a corrupt value are handled per `failure_mode`: `open` (default) → Allow,
//! `closed` → treat the cluster as open (reroute). A corrupt value is also
//! reset to Closed with a CAS on the token just read.
//!
//! Outcomes of requests admitted while Closed that arrive after the breaker
//! opened are ignored; only the probe's outcome decides in HalfOpen.

use serde::{Deserialize, Serialize};

use super::budget::{ensure_key, FailureMode, StoreFailure, StoreFailureKind, DEFAULT_CAS_RETRIES};
use super::cas::{cas_loop, Cas, CasError};
use super::error::ConfigError;
use super::host::{Clock, SharedStore};

/// Prefix of the per-cluster keys.
pub const BREAKER_KEY_PREFIX: &str = "llmgate:breaker:";
/// Sub-buckets of the sliding window.
pub const WINDOW_SLOTS: u64 = 10;
/// Shortest probe lease.
pub const MIN_PROBE_LEASE_MS: u64 = 30_000;
/// Longest accepted `open_s` / `window_s`: one day.
const MAX_SECONDS: u64 = 86_400;
const PPM: u64 = 1_000_000;

/// Breaker configuration as written by users.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker; 0 disables this rule.
    #[serde(default = "default_consecutive")]
    pub consecutive_failures: u32,
    /// Failure ratio (0 < r ≤ 1) over `window_s` that opens the breaker;
    /// absent disables this rule.
    #[serde(default)]
    pub failure_ratio: Option<f64>,
    #[serde(default = "default_window_s")]
    pub window_s: u64,
    /// Outcomes needed in the window before the ratio counts.
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// How long the breaker stays open before a probe.
    #[serde(default = "default_open_s")]
    pub open_s: u64,
    /// Shared-data failure: `open` (allow) or `closed` (treat as open).
    #[serde(default)]
    pub failure_mode: FailureMode,
}

fn default_consecutive() -> u32 {
    5
}
fn default_window_s() -> u64 {
    30
}
fn default_min_requests() -> u32 {
    10
}
fn default_open_s() -> u64 {
    30
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive(),
            failure_ratio: None,
            window_s: default_window_s(),
            min_requests: default_min_requests(),
            open_s: default_open_s(),
            failure_mode: FailureMode::default(),
        }
    }
}

impl BreakerConfig {
    /// Validates; errors name the field.
    pub fn compile(&self) -> Result<CompiledBreaker, ConfigError> {
        let ratio_ppm = match self.failure_ratio {
            None => None,
            Some(r) if !r.is_finite() || r <= 0.0 || r > 1.0 => {
                return Err(ConfigError::new(
                    "failure_ratio",
                    "must be a number greater than 0 and at most 1",
                ))
            }
            // In (0, 1e6]: the cast cannot saturate.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(r) => Some(((r * 1e6).round() as u64).max(1)),
        };
        if self.window_s == 0 || self.window_s > MAX_SECONDS {
            return Err(ConfigError::new(
                "window_s",
                format!("must be between 1 and {MAX_SECONDS}"),
            ));
        }
        if self.min_requests == 0 {
            return Err(ConfigError::new("min_requests", "must be at least 1"));
        }
        if self.open_s == 0 || self.open_s > MAX_SECONDS {
            return Err(ConfigError::new(
                "open_s",
                format!("must be between 1 and {MAX_SECONDS}"),
            ));
        }
        if self.consecutive_failures == 0 && ratio_ppm.is_none() {
            return Err(ConfigError::new(
                "consecutive_failures",
                "must be at least 1 when failure_ratio is not set",
            ));
        }
        let open_ms = self.open_s.saturating_mul(1000);
        Ok(CompiledBreaker {
            consecutive_failures: self.consecutive_failures,
            ratio_ppm,
            window_ms: self.window_s.saturating_mul(1000),
            min_requests: u64::from(self.min_requests),
            open_ms,
            lease_ms: open_ms.max(MIN_PROBE_LEASE_MS),
            failure_mode: self.failure_mode,
            cas_retries: DEFAULT_CAS_RETRIES,
        })
    }
}

/// Validated breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompiledBreaker {
    pub consecutive_failures: u32,
    /// Failure ratio in parts per million.
    pub ratio_ppm: Option<u64>,
    pub window_ms: u64,
    pub min_requests: u64,
    pub open_ms: u64,
    /// Probe lease: `max(open, 30 s)`.
    pub lease_ms: u64,
    pub failure_mode: FailureMode,
    pub cas_retries: u32,
}

impl Default for CompiledBreaker {
    fn default() -> Self {
        // The default config always compiles; fall back to literal values
        // rather than panic.
        BreakerConfig::default()
            .compile()
            .unwrap_or(CompiledBreaker {
                consecutive_failures: 5,
                ratio_ppm: None,
                window_ms: 30_000,
                min_requests: 10,
                open_ms: 30_000,
                lease_ms: 30_000,
                failure_mode: FailureMode::Open,
                cas_retries: DEFAULT_CAS_RETRIES,
            })
    }
}

/// A breaker state, as reported for the gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// Gauge value: closed = 0, open = 1, half_open = 2.
    pub fn gauge(self) -> u64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A state change (count it; set the gauge to `to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

/// May a request go to this cluster?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: send it.
    Allow,
    /// Half-open and this request is the one probe: send it, then
    /// [`Breaker::record`] with `was_probe = true`.
    Probe,
    /// Open (or half-open with a probe in flight): reroute, or answer 503
    /// with `retry-after` if nothing else is available.
    Open { retry_after_s: u64 },
}

/// Result of [`Breaker::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub admission: Admission,
    /// `Open → HalfOpen` when this request took the probe.
    pub transition: Option<Transition>,
    /// Shared-data failure met (admission then follows the failure mode).
    pub store_failure: Option<StoreFailure>,
}

/// Outcome of an upstream request (failure: 5xx, 429, reset, timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// Result of [`Breaker::record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub transition: Option<Transition>,
    pub store_failure: Option<StoreFailure>,
}

// ---------------------------------------------------------------------------
// Stored form
// ---------------------------------------------------------------------------

const S_CLOSED: u8 = 0;
const S_OPEN: u8 = 1;
const S_HALF_OPEN: u8 = 2;

/// `{"s":state,"c":consecutive failures,"u":open until ms,"p":probe lease
/// until ms,"w":[[slot,successes,failures],…]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    s: u8,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    c: u32,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    u: u64,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    p: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    w: Vec<[u64; 3]>,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

const CLOSED_STATE: &[u8] = b"{\"s\":0}";

/// Parses a stored state; `None` if corrupt (only the object form).
fn parse(value: &[u8]) -> Option<Stored> {
    if value.first() != Some(&b'{') {
        return None;
    }
    let st: Stored = serde_json::from_slice(value).ok()?;
    (st.s <= S_HALF_OPEN).then_some(st)
}

fn ceil_s(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

/// Why a CAS loop stopped without a write.
enum Step<T> {
    /// Return this without writing.
    Done(T),
    /// Write the new state, then return this.
    Write(Stored, T),
}

/// The breaker logic; stateless apart from its settings, so every worker
/// can have its own instance over the same shared data.
#[derive(Debug, Clone, Default)]
pub struct Breaker {
    cfg: CompiledBreaker,
}

impl Breaker {
    pub fn new(cfg: CompiledBreaker) -> Self {
        Self { cfg }
    }

    pub fn config(&self) -> &CompiledBreaker {
        &self.cfg
    }

    /// Key of a cluster's state.
    pub fn key(cluster: &str) -> String {
        format!("{BREAKER_KEY_PREFIX}{cluster}")
    }

    /// Creates the state of every cluster that has none (Closed) and resets
    /// corrupt ones. Call from plugin start, before traffic. Existing states
    /// are kept (a reload does not close an open breaker).
    pub fn init<'a>(
        store: &dyn SharedStore,
        clusters: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StoreFailure> {
        for cluster in clusters {
            ensure_key(store, &Self::key(cluster), CLOSED_STATE, |v| {
                parse(v).is_some()
            })?;
        }
        Ok(())
    }

    /// The CAS loop over one cluster's state.
    fn update<T>(
        &self,
        store: &dyn SharedStore,
        key: &str,
        mut f: impl FnMut(Stored) -> Step<T>,
    ) -> Result<T, StoreFailureKind> {
        cas_loop(
            store,
            key,
            self.cfg.cas_retries,
            CLOSED_STATE,
            parse,
            |st: &Stored| serde_json::to_vec(st).ok(),
            |st| match f(st) {
                Step::Done(out) => Cas::Done(out),
                Step::Write(new, out) => Cas::Write(new, out),
            },
        )
        .map_err(|e: CasError<std::convert::Infallible>| match e {
            CasError::Store(kind) => kind,
            CasError::Abort(never) => match never {},
        })
    }

    /// Decides whether a request may go to `cluster`. Closed is a single
    /// read; taking the probe is a CAS write.
    pub fn check(&self, store: &dyn SharedStore, clock: &dyn Clock, cluster: &str) -> Check {
        let now = clock.now_ms();
        let key = Self::key(cluster);
        let lease_ms = self.cfg.lease_ms;
        let r = self.update(store, &key, |st| match st.s {
            S_OPEN if now < st.u => Step::Done((
                Admission::Open {
                    retry_after_s: ceil_s(st.u.saturating_sub(now)),
                },
                None,
            )),
            // A probe is in flight and its lease is live.
            S_HALF_OPEN if now < st.p => Step::Done((Admission::Open { retry_after_s: 1 }, None)),
            S_OPEN | S_HALF_OPEN => {
                let transition = (st.s == S_OPEN).then_some(Transition {
                    from: BreakerState::Open,
                    to: BreakerState::HalfOpen,
                });
                let new = Stored {
                    s: S_HALF_OPEN,
                    p: now.saturating_add(lease_ms),
                    ..Stored::default()
                };
                Step::Write(new, (Admission::Probe, transition))
            }
            _ => Step::Done((Admission::Allow, None)),
        });
        match r {
            Ok((admission, transition)) => Check {
                admission,
                transition,
                store_failure: None,
            },
            Err(kind) => Check {
                admission: match self.cfg.failure_mode {
                    FailureMode::Open => Admission::Allow,
                    FailureMode::Closed => Admission::Open { retry_after_s: 1 },
                },
                transition: None,
                store_failure: Some(StoreFailure { key, kind }),
            },
        }
    }

    /// Records the outcome of a request sent to `cluster` (`was_probe` if
    /// [`Breaker::check`] returned [`Admission::Probe`] for it).
    pub fn record(
        &self,
        store: &dyn SharedStore,
        clock: &dyn Clock,
        cluster: &str,
        outcome: Outcome,
        was_probe: bool,
    ) -> Recorded {
        let now = clock.now_ms();
        let key = Self::key(cluster);
        let cfg = self.cfg;
        let r = self.update(store, &key, |st| match st.s {
            S_CLOSED => record_closed(&cfg, st, now, outcome),
            S_HALF_OPEN if was_probe => match outcome {
                Outcome::Success => Step::Write(
                    Stored::default(),
                    Some(Transition {
                        from: BreakerState::HalfOpen,
                        to: BreakerState::Closed,
                    }),
                ),
                Outcome::Failure => Step::Write(
                    Stored {
                        s: S_OPEN,
                        u: now.saturating_add(cfg.open_ms),
                        ..Stored::default()
                    },
                    Some(Transition {
                        from: BreakerState::HalfOpen,
                        to: BreakerState::Open,
                    }),
                ),
            },
            // Late outcomes of requests admitted before the breaker opened.
            _ => Step::Done(None),
        });
        match r {
            Ok(transition) => Recorded {
                transition,
                store_failure: None,
            },
            Err(kind) => Recorded {
                transition: None,
                store_failure: Some(StoreFailure { key, kind }),
            },
        }
    }

    /// The state of `cluster` now (read only), e.g. for the gauge. Open
    /// past its open time reads as HalfOpen (the next request probes).
    pub fn state(
        &self,
        store: &dyn SharedStore,
        clock: &dyn Clock,
        cluster: &str,
    ) -> Result<BreakerState, StoreFailure> {
        let key = Self::key(cluster);
        let fail = |kind| StoreFailure {
            key: key.clone(),
            kind,
        };
        let value = match store.get(&key) {
            Ok(Some((v, _))) => v,
            Ok(None) => return Err(fail(StoreFailureKind::Missing)),
            Err(_) => return Err(fail(StoreFailureKind::Unavailable)),
        };
        let st = parse(&value).ok_or_else(|| fail(StoreFailureKind::Corrupt))?;
        Ok(match st.s {
            S_CLOSED => BreakerState::Closed,
            S_OPEN if clock.now_ms() < st.u => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        })
    }
}

fn record_closed(
    cfg: &CompiledBreaker,
    mut st: Stored,
    now: u64,
    outcome: Outcome,
) -> Step<Option<Transition>> {
    let before = st.clone();
    match outcome {
        Outcome::Success => st.c = 0,
        Outcome::Failure => st.c = st.c.saturating_add(1),
    }
    let mut trip = cfg.consecutive_failures > 0 && st.c >= cfg.consecutive_failures;
    if let Some(ppm) = cfg.ratio_ppm {
        let slot_ms = (cfg.window_ms / WINDOW_SLOTS).max(1);
        let slot = now.checked_div(slot_ms).unwrap_or(0);
        let oldest = slot.saturating_sub(WINDOW_SLOTS.saturating_sub(1));
        st.w.retain(|b| b.first().is_some_and(|s| *s >= oldest && *s <= slot));
        let (ok, failed) = match outcome {
            Outcome::Success => (1, 0),
            Outcome::Failure => (0, 1),
        };
        match st.w.iter_mut().find(|b| b.first() == Some(&slot)) {
            Some([_, s, f]) => {
                *s = s.saturating_add(ok);
                *f = f.saturating_add(failed);
            }
            None => st.w.push([slot, ok, failed]),
        }
        let (mut total, mut failures) = (0u64, 0u64);
        for [_, s, f] in &st.w {
            total = total.saturating_add(*s).saturating_add(*f);
            failures = failures.saturating_add(*f);
        }
        if total >= cfg.min_requests && failures.saturating_mul(PPM) >= ppm.saturating_mul(total) {
            trip = true;
        }
    }
    if trip {
        let new = Stored {
            s: S_OPEN,
            u: now.saturating_add(cfg.open_ms),
            ..Stored::default()
        };
        return Step::Write(
            new,
            Some(Transition {
                from: BreakerState::Closed,
                to: BreakerState::Open,
            }),
        );
    }
    if st == before {
        Step::Done(None)
    } else {
        Step::Write(st, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::host::{FakeClock, FakeStore, StoreError};
    use std::cell::RefCell;

    const C: &str = "primary";

    fn compile(json: &str) -> CompiledBreaker {
        serde_json::from_str::<BreakerConfig>(json)
            .unwrap()
            .compile()
            .unwrap()
    }

    fn setup(json: &str) -> (Breaker, FakeStore, FakeClock) {
        let store = FakeStore::new();
        Breaker::init(&store, [C, "fallback"]).unwrap();
        (Breaker::new(compile(json)), store, FakeClock::at(1_000_000))
    }

    fn fail(b: &Breaker, s: &dyn SharedStore, c: &FakeClock) -> Option<Transition> {
        let r = b.record(s, c, C, Outcome::Failure, false);
        assert!(r.store_failure.is_none());
        r.transition
    }

    fn ok(b: &Breaker, s: &dyn SharedStore, c: &FakeClock) -> Option<Transition> {
        let r = b.record(s, c, C, Outcome::Success, false);
        assert!(r.store_failure.is_none());
        r.transition
    }

    fn admission(b: &Breaker, s: &dyn SharedStore, c: &FakeClock) -> Admission {
        b.check(s, c, C).admission
    }

    const TO_OPEN: Option<Transition> = Some(Transition {
        from: BreakerState::Closed,
        to: BreakerState::Open,
    });

    #[test]
    fn config_defaults_and_validation() {
        let c = compile("{}");
        assert_eq!(c.consecutive_failures, 5);
        assert_eq!(c.ratio_ppm, None);
        assert_eq!(
            (c.window_ms, c.min_requests, c.open_ms),
            (30_000, 10, 30_000)
        );
        assert_eq!(c.lease_ms, 30_000);
        assert_eq!(c.failure_mode, FailureMode::Open);
        assert_eq!(c, CompiledBreaker::default());
        assert_eq!(compile(r#"{"open_s": 120}"#).lease_ms, 120_000);
        assert_eq!(compile(r#"{"open_s": 5}"#).lease_ms, 30_000);
        assert_eq!(
            compile(r#"{"failure_ratio": 0.5}"#).ratio_ppm,
            Some(500_000)
        );

        let err = |json: &str| {
            serde_json::from_str::<BreakerConfig>(json)
                .unwrap()
                .compile()
                .unwrap_err()
                .field
        };
        assert_eq!(err(r#"{"failure_ratio": 0}"#), "failure_ratio");
        assert_eq!(err(r#"{"failure_ratio": 1.5}"#), "failure_ratio");
        assert_eq!(err(r#"{"window_s": 0}"#), "window_s");
        assert_eq!(err(r#"{"min_requests": 0}"#), "min_requests");
        assert_eq!(err(r#"{"open_s": 0}"#), "open_s");
        assert_eq!(err(r#"{"open_s": 100000000}"#), "open_s");
        assert_eq!(
            err(r#"{"consecutive_failures": 0}"#),
            "consecutive_failures"
        );
        let nan = BreakerConfig {
            failure_ratio: Some(f64::NAN),
            ..BreakerConfig::default()
        };
        assert_eq!(nan.compile().unwrap_err().field, "failure_ratio");
        assert!(serde_json::from_str::<BreakerConfig>(r#"{"bogus": 1}"#).is_err());
        // Ratio only.
        let c = compile(r#"{"consecutive_failures": 0, "failure_ratio": 1}"#);
        assert_eq!((c.consecutive_failures, c.ratio_ppm), (0, Some(1_000_000)));
    }

    #[test]
    fn consecutive_failures_open_the_breaker() {
        let (b, store, clock) = setup("{}");
        assert_eq!(admission(&b, &store, &clock), Admission::Allow);
        for _ in 0..4 {
            assert_eq!(fail(&b, &store, &clock), None);
        }
        assert_eq!(ok(&b, &store, &clock), None); // resets the streak
        for _ in 0..4 {
            assert_eq!(fail(&b, &store, &clock), None);
        }
        assert_eq!(b.state(&store, &clock, C).unwrap(), BreakerState::Closed);
        assert_eq!(fail(&b, &store, &clock), TO_OPEN);
        assert_eq!(b.state(&store, &clock, C).unwrap(), BreakerState::Open);
        assert_eq!(BreakerState::Open.gauge(), 1);
        assert_eq!(
            admission(&b, &store, &clock),
            Admission::Open { retry_after_s: 30 }
        );
        // Other clusters are independent.
        assert_eq!(
            b.check(&store, &clock, "fallback").admission,
            Admission::Allow
        );
        // Late outcomes while open change nothing.
        assert_eq!(fail(&b, &store, &clock), None);
        assert_eq!(ok(&b, &store, &clock), None);
        clock.advance(500);
        assert_eq!(
            admission(&b, &store, &clock),
            Admission::Open { retry_after_s: 30 }
        );
        clock.advance(29_000);
        assert_eq!(
            admission(&b, &store, &clock),
            Admission::Open { retry_after_s: 1 }
        );
    }

    #[test]
    fn success_in_closed_state_does_not_write() {
        let (b, store, clock) = setup("{}");
        let before = store.raw(&Breaker::key(C));
        store.inject_failures(0);
        store.inject_conflicts(100); // any write would fail
        assert_eq!(ok(&b, &store, &clock), None);
        assert_eq!(admission(&b, &store, &clock), Admission::Allow);
        assert_eq!(store.raw(&Breaker::key(C)), before);
    }

    #[test]
    fn failure_ratio_over_the_sliding_window() {
        let cfg = r#"{"consecutive_failures": 100, "failure_ratio": 0.5,
                      "window_s": 10, "min_requests": 10}"#;
        let (b, store, clock) = setup(cfg);
        for _ in 0..5 {
            assert_eq!(ok(&b, &store, &clock), None);
            clock.advance(100);
        }
        for _ in 0..4 {
            assert_eq!(fail(&b, &store, &clock), None);
        }
        // 10 outcomes, 5 failures: 50%.
        assert_eq!(fail(&b, &store, &clock), TO_OPEN);
        assert_eq!(b.state(&store, &clock, C).unwrap(), BreakerState::Open);

        // Below min_requests nothing happens, even at 100% failures.
        let (b, store, clock) = setup(cfg);
        for _ in 0..9 {
            assert_eq!(fail(&b, &store, &clock), None);
        }
        // Old failures slide out of the window.
        clock.advance(10_000);
        for _ in 0..9 {
            assert_eq!(ok(&b, &store, &clock), None);
        }
        assert_eq!(fail(&b, &store, &clock), None); // 1 of 10
        assert_eq!(b.state(&store, &clock, C).unwrap(), BreakerState::Closed);
        // 4 more failures: 5 of 14 < 50%; then 4 more: 9 of 18 = 50%.
        for _ in 0..4 {
            assert_eq!(fail(&b, &store, &clock), None);
        }
        for _ in 0..3 {
            assert_eq!(fail(&b, &store, &clock), None);
        }
        assert_eq!(fail(&b, &store, &clock), TO_OPEN);
        // The window is bounded (at most WINDOW_SLOTS sub-buckets kept).
        let (b, store, clock) = setup(cfg);
        for _ in 0..100 {
            ok(&b, &store, &clock);
            clock.advance(1_000);
        }
        let raw = store.raw(&Breaker::key(C)).unwrap();
        let st: Stored = serde_json::from_slice(&raw).unwrap();
        assert!(st.w.len() <= WINDOW_SLOTS as usize, "{}", st.w.len());
    }

    fn open_it(b: &Breaker, store: &FakeStore, clock: &FakeClock) {
        for _ in 0..b.config().consecutive_failures {
            fail(b, store, clock);
        }
        assert_eq!(b.state(store, clock, C).unwrap(), BreakerState::Open);
    }

    #[test]
    fn half_open_lets_exactly_one_probe_and_success_closes() {
        let (b, store, clock) = setup("{}");
        open_it(&b, &store, &clock);
        clock.advance(30_000);
        assert_eq!(b.state(&store, &clock, C).unwrap(), BreakerState::HalfOpen);
        let first = b.check(&store, &clock, C);
        assert_eq!(first.admission, Admission::Probe);
        assert_eq!(
            first.transition,
            Some(Transition {
                from: BreakerState::Open,
                to: BreakerState::HalfOpen
            })
        );
        let second = b.check(&store, &clock, C);
        assert_eq!(second.admission, Admission::Open { retry_after_s: 1 });
        assert_eq!(second.transition, None);
        // A late non-probe outcome does not decide.
        assert_eq!(ok(&b, &store, &clock), None);
        assert_eq!(b.state(&store, &clock, C).unwrap(), BreakerState::HalfOpen);
        let r = b.record(&store, &clock, C, Outcome::Success, true);
        assert_eq!(
            r.transition,
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Closed
            })
        );
        assert_eq!(admission(&b, &store, &clock), Admission::Allow);
        // Counters were reset: it takes 5 new failures to open again.
        for _ in 0..4 {
            assert_eq!(fail(&b, &store, &clock), None);
        }
        assert_eq!(fail(&b, &store, &clock), TO_OPEN);
    }

    #[test]
    fn probe_failure_reopens_for_a_fresh_period() {
        let (b, store, clock) = setup("{}");
        open_it(&b, &store, &clock);
        clock.advance(45_000);
        assert_eq!(admission(&b, &store, &clock), Admission::Probe);
        clock.advance(2_000);
        let r = b.record(&store, &clock, C, Outcome::Failure, true);
        assert_eq!(
            r.transition,
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Open
            })
        );
        assert_eq!(
            admission(&b, &store, &clock),
            Admission::Open { retry_after_s: 30 }
        );
        clock.advance(29_999);
        assert_eq!(
            admission(&b, &store, &clock),
            Admission::Open { retry_after_s: 1 }
        );
        clock.advance(1);
        assert_eq!(admission(&b, &store, &clock), Admission::Probe);
    }

    #[test]
    fn lost_probe_lease_expires() {
        let (b, store, clock) = setup(r#"{"open_s": 10}"#);
        open_it(&b, &store, &clock);
        clock.advance(10_000);
        assert_eq!(admission(&b, &store, &clock), Admission::Probe);
        // The probe never reports. The lease is max(open_s, 30 s).
        clock.advance(29_999);
        assert_eq!(
            admission(&b, &store, &clock),
            Admission::Open { retry_after_s: 1 }
        );
        clock.advance(1);
        let c = b.check(&store, &clock, C);
        assert_eq!(c.admission, Admission::Probe);
        assert_eq!(c.transition, None); // still half-open
        assert_eq!(
            admission(&b, &store, &clock),
            Admission::Open { retry_after_s: 1 }
        );
        // The late first probe reports success: any probe's answer counts.
        let r = b.record(&store, &clock, C, Outcome::Success, true);
        assert_eq!(r.transition.unwrap().to, BreakerState::Closed);
        // A probe reporting after the breaker closed is a normal outcome.
        assert_eq!(
            b.record(&store, &clock, C, Outcome::Success, true)
                .transition,
            None
        );
    }

    type Hook<'a> = Box<dyn FnOnce(&FakeStore) + 'a>;

    /// Runs `hook` (another worker) between this worker's read and its write.
    struct HookStore<'a> {
        inner: &'a FakeStore,
        hook: RefCell<Option<Hook<'a>>>,
    }

    impl SharedStore for HookStore<'_> {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            let hook = self.hook.borrow_mut().take();
            if let Some(hook) = hook {
                hook(self.inner);
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn concurrent_checks_yield_exactly_one_probe() {
        let (a, store, clock) = setup("{}");
        let b = a.clone();
        open_it(&a, &store, &clock);
        clock.advance(30_000);
        let other = RefCell::new(None);
        let hooked = HookStore {
            inner: &store,
            hook: RefCell::new(Some(Box::new(|inner: &FakeStore| {
                *other.borrow_mut() = Some(b.check(inner, &clock, C).admission);
            }))),
        };
        // Both workers read "open, time is up"; B's CAS wins, A's loses,
        // A re-reads and sees the probe in flight.
        let mine = a.check(&hooked, &clock, C).admission;
        drop(hooked);
        assert_eq!(other.into_inner(), Some(Admission::Probe));
        assert_eq!(mine, Admission::Open { retry_after_s: 1 });
    }

    #[test]
    fn conflicts_are_retried() {
        let (b, store, clock) = setup("{}");
        for _ in 0..4 {
            fail(&b, &store, &clock);
        }
        store.inject_conflicts(DEFAULT_CAS_RETRIES);
        assert_eq!(fail(&b, &store, &clock), TO_OPEN);
        clock.advance(30_000);
        store.inject_conflicts(3);
        assert_eq!(admission(&b, &store, &clock), Admission::Probe);
        store.inject_conflicts(DEFAULT_CAS_RETRIES + 1);
        let r = b.record(&store, &clock, C, Outcome::Success, true);
        assert_eq!(r.transition, None);
        assert_eq!(
            r.store_failure.unwrap().kind,
            StoreFailureKind::RetriesExhausted
        );
    }

    #[test]
    fn store_failures_follow_the_failure_mode() {
        let (b, store, clock) = setup("{}");
        store.inject_failures(1);
        let c = b.check(&store, &clock, C);
        assert_eq!(c.admission, Admission::Allow);
        assert_eq!(c.store_failure.unwrap().kind, StoreFailureKind::Unavailable);
        let (b, store, clock) = setup(r#"{"failure_mode": "closed"}"#);
        store.inject_failures(1);
        let c = b.check(&store, &clock, C);
        assert_eq!(c.admission, Admission::Open { retry_after_s: 1 });
        store.inject_failures(1);
        let r = b.record(&store, &clock, C, Outcome::Failure, false);
        assert_eq!(r.store_failure.unwrap().kind, StoreFailureKind::Unavailable);
        store.inject_failures(1);
        assert!(b.state(&store, &clock, C).is_err());
    }

    #[test]
    fn missing_key_is_never_created_on_the_request_path() {
        let (b, store, clock) = setup("{}");
        let c = b.check(&store, &clock, "unknown");
        assert_eq!(c.admission, Admission::Allow);
        assert_eq!(c.store_failure.unwrap().kind, StoreFailureKind::Missing);
        let r = b.record(&store, &clock, "unknown", Outcome::Failure, false);
        assert_eq!(r.store_failure.unwrap().kind, StoreFailureKind::Missing);
        assert!(store.raw(&Breaker::key("unknown")).is_none());
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn corrupt_state_is_a_failure_and_is_reset() {
        let max = u64::MAX;
        let cases = [
            "".to_string(),
            "{".into(),
            "[0]".into(),
            "{\"s\":7}".into(),
            "{\"s\":-1}".into(),
            "{\"x\":0}".into(),
            "{\"s\":0,\"w\":[[1,2]]}".into(),
            "\u{0}".into(),
        ];
        for case in cases {
            for mode in ["open", "closed"] {
                let (b, store, clock) = setup(&format!(r#"{{"failure_mode": "{mode}"}}"#));
                store.set(&Breaker::key(C), case.as_bytes(), None).unwrap();
                let c = b.check(&store, &clock, C);
                assert_eq!(
                    c.store_failure.unwrap().kind,
                    StoreFailureKind::Corrupt,
                    "{case}"
                );
                let expect = if mode == "open" {
                    Admission::Allow
                } else {
                    Admission::Open { retry_after_s: 1 }
                };
                assert_eq!(c.admission, expect);
                // Reset to closed.
                assert_eq!(b.state(&store, &clock, C).unwrap(), BreakerState::Closed);
            }
        }
        // Extreme but valid values do not panic.
        let (b, store, clock) = setup(r#"{"failure_ratio": 0.5, "min_requests": 1}"#);
        let v = format!("{{\"s\":0,\"c\":4294967295,\"u\":{max},\"p\":{max},\"w\":[[{max},{max},{max}],[0,{max},{max}]]}}");
        store.set(&Breaker::key(C), v.as_bytes(), None).unwrap();
        assert_eq!(admission(&b, &store, &clock), Admission::Allow);
        assert_eq!(fail(&b, &store, &clock), TO_OPEN);
        let v = format!("{{\"s\":1,\"u\":{max}}}");
        store.set(&Breaker::key(C), v.as_bytes(), None).unwrap();
        assert!(matches!(
            admission(&b, &store, &clock),
            Admission::Open { .. }
        ));
        let v = format!("{{\"s\":2,\"p\":{max}}}");
        store.set(&Breaker::key(C), v.as_bytes(), None).unwrap();
        assert_eq!(
            admission(&b, &store, &clock),
            Admission::Open { retry_after_s: 1 }
        );
        clock.now.set(max);
        let v = "{\"s\":1,\"u\":5}";
        store.set(&Breaker::key(C), v.as_bytes(), None).unwrap();
        assert_eq!(admission(&b, &store, &clock), Admission::Probe);
        // init resets corrupt states and keeps valid ones.
        store.set(&Breaker::key("fallback"), b"junk", None).unwrap();
        Breaker::init(&store, [C, "fallback"]).unwrap();
        assert_eq!(store.raw(&Breaker::key("fallback")).unwrap(), CLOSED_STATE);
        assert_eq!(b.state(&store, &clock, C).unwrap(), BreakerState::HalfOpen);
        store.inject_failures(1);
        assert!(Breaker::init(&store, [C]).is_err());
    }

    #[test]
    fn gauge_values() {
        assert_eq!(BreakerState::Closed.gauge(), 0);
        assert_eq!(BreakerState::Open.gauge(), 1);
        assert_eq!(BreakerState::HalfOpen.gauge(), 2);
        assert_eq!(BreakerState::HalfOpen.as_str(), "half_open");
    }
}

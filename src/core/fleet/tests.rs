//! Fleet mode, simulated: several pods (each its own shared data) and one
//! simulated Redis running the scripts' algorithm, fed the real webdis
//! requests built by the engine and answering in webdis's JSON form.

use std::cell::RefCell;
use std::collections::HashMap;

use super::*;
use crate::core::host::{FakeClock, FakeStore};

const MINUTE_MS: u64 = 60_000;
/// 2024-01-01T00:00:00Z, a minute boundary.
const T0: u64 = 1_704_067_200_000;

// ---------------------------------------------------------------------------
// Simulated Redis (the Lua scripts' algorithm, in Rust)
// ---------------------------------------------------------------------------

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[derive(Default, Debug)]
struct SimHash {
    s: i128,
    /// pod → (held, expiry ms)
    h: HashMap<String, (i128, u64)>,
}

#[derive(Default)]
struct SimRedis {
    keys: HashMap<String, SimHash>,
    execs: u64,
}

impl SimRedis {
    /// Runs a webdis EVAL request; answers like webdis (200 + JSON).
    fn exec(&mut self, now: u64, req: &WebdisRequest) -> Vec<u8> {
        self.execs += 1;
        assert_eq!(req.method, "GET");
        let parts: Vec<String> = req.path.split('/').skip(1).map(pct_decode).collect();
        assert_eq!(parts[0], "EVAL");
        let script = parts[1].as_str();
        let nkeys: usize = parts[2].parse().unwrap();
        let keys = &parts[3..3 + nkeys];
        let args = &parts[3 + nkeys..];
        let pod = args[0].clone();
        let grant = script == GRANT_SCRIPT;
        assert!(grant || script == RELEASE_SCRIPT);
        let per = if grant { 6 } else { 3 };
        assert_eq!(args.len(), 1 + per * nkeys);
        // One slot: every key has the same hashtag.
        let tag = |k: &str| k[..k.find('}').unwrap() + 1].to_string();
        assert!(keys.iter().all(|k| tag(k) == tag(&keys[0])));
        let mut out = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let a: Vec<i128> = args[1 + i * per..1 + (i + 1) * per]
                .iter()
                .map(|x| x.parse().unwrap())
                .collect();
            let hash = self.keys.entry(k.clone()).or_default();
            hash.h.retain(|_, (_, e)| *e > now);
            let mine = hash.h.get(&pod).map_or(0, |x| x.0);
            let others: i128 = hash
                .h
                .iter()
                .filter(|(p, _)| **p != pod)
                .map(|(_, x)| x.0)
                .sum();
            let rep = a[0];
            hash.s = (hash.s + rep).max(0);
            let mine = (mine - rep).max(0);
            if grant {
                let (need, chunk, limit, ttl) = (a[1], a[2], a[3], a[4]);
                let rem = (limit - hash.s - others - mine).max(0);
                let g = need.max(chunk.min(rem / 4)).min(rem);
                let mine = mine + g;
                if mine > 0 {
                    hash.h.insert(pod.clone(), (mine, now + ttl as u64));
                } else {
                    hash.h.remove(&pod);
                }
                out.extend([g, mine, rem - g]);
            } else {
                let limit = a[1];
                hash.h.remove(&pod);
                out.extend([mine, 0, (limit - hash.s - others).max(0)]);
            }
        }
        serde_json::json!({ "EVAL": out }).to_string().into_bytes()
    }

    /// `s + Σ live h` of a key.
    fn granted(&self, key: &str, now: u64) -> i128 {
        self.keys.get(key).map_or(0, |h| {
            h.s + h
                .h
                .values()
                .filter(|(_, e)| *e > now)
                .map(|x| x.0)
                .sum::<i128>()
        })
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn cfg(json: &str) -> CompiledFleet {
    serde_json::from_str::<FleetConfig>(json)
        .unwrap()
        .compile()
        .unwrap()
}

fn scope(name: &str, limits: &[(LimitKind, u64)]) -> FleetScope {
    FleetScope {
        name: name.to_string(),
        limits: limits.to_vec(),
    }
}

fn est(tokens: u64) -> Estimate {
    Estimate {
        tokens,
        micro_usd: 0,
    }
}

fn actual(tokens: u64) -> Actual {
    Actual {
        tokens,
        micro_usd: Some(0),
    }
}

struct Pod {
    fleet: Fleet,
    store: FakeStore,
}

impl Pod {
    fn new(c: &CompiledFleet, name: &str, scopes: &[FleetScope]) -> Pod {
        let store = FakeStore::new();
        let fleet = Fleet::new(c.clone());
        fleet.init(&store, scopes, name).unwrap();
        Pod { fleet, store }
    }

    fn record(&self, scope: &str) -> ScopeRecord {
        parse_record(&self.store.raw(&Fleet::local_key(scope)).unwrap()).unwrap()
    }

    fn lease(&self, scope: &str, kind: LimitKind) -> Lease {
        self.record(scope).l[limit_code(kind)].clone()
    }

    /// Reserves; every callout is answered right away by `redis`; loops
    /// until the request is admitted or refused.
    fn admit(
        &self,
        clock: &FakeClock,
        redis: &mut SimRedis,
        scopes: &[FleetScope],
        e: Estimate,
    ) -> Result<FleetReservation, FleetDenial> {
        for _ in 0..5 {
            let a = self.fleet.reserve(&self.store, clock, scopes, e);
            for c in &a.callouts {
                let body = redis.exec(clock.now_ms(), &c.request);
                let r =
                    self.fleet
                        .on_response(&self.store, clock, &c.ticket, Some(200), Some(&body));
                assert!(r.applied && r.failure.is_none(), "{r:?}");
            }
            match a.outcome {
                Outcome::Admitted(r) => return Ok(r),
                Outcome::Denied(d) => return Err(d),
                Outcome::Wait { .. } => {}
            }
        }
        panic!("no decision after 5 rounds");
    }

    fn tick_and_answer(
        &self,
        clock: &FakeClock,
        redis: &mut SimRedis,
        scopes: &[FleetScope],
    ) -> usize {
        let t = self.fleet.tick(&self.store, clock, scopes);
        assert!(t.store_failures.is_empty(), "{:?}", t.store_failures);
        for c in &t.callouts {
            let body = redis.exec(clock.now_ms(), &c.request);
            let r = self
                .fleet
                .on_response(&self.store, clock, &c.ticket, Some(200), Some(&body));
            assert!(r.applied, "{r:?}");
        }
        t.callouts.len()
    }
}

const TPM: LimitKind = LimitKind::TokensPerMinute;
const RPM: LimitKind = LimitKind::RequestsPerMinute;

fn tkey(scope: &str, kind: LimitKind, now: u64) -> String {
    redis_key("llmgate:fleet", scope, kind, now / 1000 / 60)
}

// ---------------------------------------------------------------------------
// The lease state machine
// ---------------------------------------------------------------------------

#[test]
fn fleet_first_request_waits_for_a_lease_then_reserves_locally() {
    let c = cfg(r#"{"lease": {"tokens": 1000, "requests": 10}}"#);
    let s = [scope("key:a", &[(TPM, 100_000), (RPM, 1000)])];
    let pod = Pod::new(&c, "pod-1", &s);
    let clock = FakeClock::at(T0 + 5);
    let mut redis = SimRedis::default();
    let a = pod.fleet.reserve(&pod.store, &clock, &s, est(300));
    let Outcome::Wait { until_ms } = a.outcome else {
        panic!("{a:?}")
    };
    assert_eq!(until_ms, T0 + 5 + c.timeout_ms + FLIGHT_GRACE_MS);
    assert_eq!(a.callouts.len(), 1);
    let call = &a.callouts[0];
    assert_eq!(call.cluster, "fleet_webdis");
    assert_eq!(call.ticket.limits, vec![100_000, 1000]);
    assert!(!call.ticket.give_back);
    // Nothing reserved while waiting.
    assert_eq!(pod.lease("key:a", TPM).b, 0);
    let body = redis.exec(clock.now_ms(), &call.request);
    assert_eq!(
        String::from_utf8_lossy(&body),
        r#"{"EVAL":[1000,1000,99000,10,10,990]}"#
    );
    let r = pod
        .fleet
        .on_response(&pod.store, &clock, &call.ticket, Some(200), Some(&body));
    assert!(r.applied);
    // Now 5 requests of 150 fit in the lease without Redis.
    let execs = redis.execs;
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(pod.admit(&clock, &mut redis, &s, est(150)).unwrap());
    }
    assert_eq!(redis.execs, execs);
    let l = pod.lease("key:a", TPM);
    assert_eq!((l.b, l.u), (100, 900));
    assert_eq!(pod.lease("key:a", RPM).b, 4);
    // Settle gives the difference back to the local lease, not to Redis.
    pod.fleet
        .settle(&pod.store, &clock, &held.pop().unwrap(), actual(50));
    let l = pod.lease("key:a", TPM);
    assert_eq!((l.b, l.u), (200, 800));
    // Overrun: charged to the lease and reported.
    pod.fleet
        .settle(&pod.store, &clock, &held.pop().unwrap(), actual(400));
    let l = pod.lease("key:a", TPM);
    assert_eq!((l.b, l.u, l.dt), (0, 1050, 50));
    // Release: everything but the request goes back.
    pod.fleet.release(&pod.store, &clock, &held.pop().unwrap());
    // (it pays the overrun's 50 the balance could not cover first).
    let l = pod.lease("key:a", TPM);
    assert_eq!((l.b, l.u, l.dt), (100, 900, 0));
    assert_eq!(pod.lease("key:a", RPM).b, 4);
    // The remaining for headers: lease + fleet remaining at the exchange.
    let p = pod.fleet.peek(&pod.store, &clock, &s[0]).unwrap();
    assert_eq!(p[0].remaining, Some(99_100));
    assert_eq!(p[1].remaining, Some(994));
    // The next exchange reports the use: Redis's s becomes 900.
    pod.admit(&clock, &mut redis, &s, est(500)).unwrap();
    let k = tkey("key:a", TPM, clock.now_ms());
    assert_eq!(redis.keys[&k].s, 900);
    let l = pod.lease("key:a", TPM);
    // held 100 + 1000 granted, then 500 reserved.
    assert_eq!((l.b, l.u), (600, 500));
    assert_eq!(redis.granted(&k, clock.now_ms()), 900 + 1100);
}

type Hook<'a> = Box<dyn FnOnce(&FakeStore) + 'a>;

/// A store that runs `hook` (another worker) right before the first write.
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
        if let Some(h) = hook {
            h(self.inner);
        }
        self.inner.set(key, value, cas)
    }
}

#[test]
fn fleet_single_flight_per_scope_across_workers() {
    let c = cfg("{}");
    let s = [scope("key:a", &[(TPM, 100_000)])];
    let pod = Pod::new(&c, "p", &s);
    let clock = FakeClock::at(T0);
    let b_result = RefCell::new(None);
    // Worker B reserves between worker A's read and its CAS write.
    let hooked = HookStore {
        inner: &pod.store,
        hook: RefCell::new(Some(Box::new(|inner: &FakeStore| {
            *b_result.borrow_mut() = Some(pod.fleet.reserve(inner, &clock, &s, est(10)));
        }))),
    };
    let a = pod.fleet.reserve(&hooked, &clock, &s, est(10));
    drop(hooked);
    let b = b_result.into_inner().unwrap();
    // B won the flag; A's CAS failed, it re-read and now waits on B's flight.
    assert_eq!(b.callouts.len(), 1);
    assert!(matches!(b.outcome, Outcome::Wait { .. }));
    assert!(a.callouts.is_empty());
    assert!(matches!(a.outcome, Outcome::Wait { .. }));
    // A third request waits too, without a callout.
    let third = pod.fleet.reserve(&pod.store, &clock, &s, est(10));
    assert!(third.callouts.is_empty());
    // Scopes are independent: another scope gets its own flight.
    let other = [scope("tenant:t", &[(TPM, 100)])];
    pod.fleet.init(&pod.store, &other, "p").unwrap();
    let o = pod.fleet.reserve(&pod.store, &clock, &other, est(10));
    assert_eq!(o.callouts.len(), 1);
    // Contention without end: 429 contention, nothing reserved.
    let third = [scope("tenant:u", &[(TPM, 100)])];
    pod.fleet.init(&pod.store, &third, "p").unwrap();
    pod.store.inject_conflicts(100);
    let d = pod.fleet.reserve(&pod.store, &clock, &third, est(10));
    let Outcome::Denied(d) = d.outcome else {
        panic!()
    };
    assert_eq!(d.reason, FleetDenyReason::Contention);
    pod.store.inject_conflicts(0);
}

#[test]
fn fleet_waiters_take_over_a_flight_whose_owner_never_answered() {
    let c = cfg(r#"{"lease": {"tokens": 1000}}"#);
    let s = [scope("key:a", &[(TPM, 100_000)])];
    let pod = Pod::new(&c, "p", &s);
    let clock = FakeClock::at(T0);
    let mut redis = SimRedis::default();
    let first = pod.fleet.reserve(&pod.store, &clock, &s, est(10));
    let Outcome::Wait { until_ms } = first.outcome else {
        panic!()
    };
    // Redis ran it, but the answer is lost (the owner's VM died).
    redis.exec(clock.now_ms(), &first.callouts[0].request);
    clock.now.set(until_ms);
    let second = pod.fleet.reserve(&pod.store, &clock, &s, est(10));
    assert_eq!(second.callouts.len(), 1, "{second:?}");
    let body = redis.exec(clock.now_ms(), &second.callouts[0].request);
    // The late answer of the first flight is ignored.
    let late = pod.fleet.on_response(
        &pod.store,
        &clock,
        &first.callouts[0].ticket,
        Some(200),
        Some(br#"{"EVAL":[1000,1000,0]}"#),
    );
    assert!(!late.applied);
    let r = pod.fleet.on_response(
        &pod.store,
        &clock,
        &second.callouts[0].ticket,
        Some(200),
        Some(&body),
    );
    assert!(r.applied);
    // Redis's answer is authoritative: both grants are this pod's.
    assert_eq!(pod.lease("key:a", TPM).b, 2000);
}

#[test]
fn fleet_garbled_answers_fail_and_follow_the_failure_mode() {
    let bodies: Vec<(Option<u32>, &[u8])> = vec![
        (None, b""),
        (Some(503), b""),
        (Some(200), b"-upstream failure"),
        (Some(200), br#"{"EVAL":[false,"upstream failure"]}"#),
        (Some(200), b"\x00\xff garbage"),
        (Some(200), br#"{"EVAL":[1,2,3]}"#), // one triple for two keys
        (Some(200), br#"{"EVAL":[1,2,3,4,99999999,6]}"#), // held > limit
        (Some(500), b"oops"),
    ];
    for (status, body) in bodies {
        for mode in ["local", "open", "closed"] {
            let c = cfg(&format!(
                r#"{{"failure_mode": "{mode}", "local_share": 0.01, "lease": {{"tokens": 1000}}}}"#
            ));
            let s = [scope("key:a", &[(TPM, 100_000), (RPM, 1000)])];
            let pod = Pod::new(&c, "p", &s);
            let clock = FakeClock::at(T0);
            let a = pod.fleet.reserve(&pod.store, &clock, &s, est(400));
            let r = pod.fleet.on_response(
                &pod.store,
                &clock,
                &a.callouts[0].ticket,
                status,
                Some(body),
            );
            assert!(r.applied && r.failure.is_some(), "{r:?}");
            let rec = pod.record("key:a");
            assert_eq!(rec.fu, T0 + c.failure_backoff_ms);
            assert!(rec.f.is_none());
            let second = pod.fleet.reserve(&pod.store, &clock, &s, est(400));
            assert!(second.callouts.is_empty(), "backoff: no new callout");
            match (mode, second.outcome) {
                ("closed", Outcome::Denied(d)) => {
                    assert_eq!(d.reason, FleetDenyReason::Unavailable);
                    assert_eq!(d.retry_after_s, 1);
                }
                ("open", Outcome::Admitted(r)) => {
                    assert!(r.degraded());
                    assert_eq!(r.items[0].source, Source::Open);
                }
                ("local", Outcome::Admitted(r)) => {
                    assert_eq!(r.items[0].source, Source::LocalShare);
                    // 1% of 100,000 = 1,000 tokens: a second 400 fits, a
                    // third does not.
                    let again = pod.fleet.reserve(&pod.store, &clock, &s, est(400));
                    assert!(matches!(again.outcome, Outcome::Admitted(_)));
                    let third = pod.fleet.reserve(&pod.store, &clock, &s, est(400));
                    let Outcome::Denied(d) = third.outcome else {
                        panic!()
                    };
                    assert_eq!(d.reason, FleetDenyReason::LocalShare);
                    assert_eq!(d.remaining, 200);
                    // What was admitted is reported when Redis is back.
                    assert_eq!(pod.lease("key:a", TPM).u, 800);
                }
                (m, o) => panic!("{m}: {o:?}"),
            }
            // After the backoff, a new callout.
            clock.advance(c.failure_backoff_ms);
            let third = pod.fleet.reserve(&pod.store, &clock, &s, est(400));
            assert_eq!(third.callouts.len(), 1, "{mode}");
        }
    }
}

#[test]
fn fleet_failed_callout_restores_the_report() {
    let c = cfg(r#"{"lease": {"tokens": 1000}}"#);
    let s = [scope("key:a", &[(TPM, 100_000)])];
    let pod = Pod::new(&c, "p", &s);
    let clock = FakeClock::at(T0);
    let mut redis = SimRedis::default();
    pod.admit(&clock, &mut redis, &s, est(900)).unwrap();
    assert_eq!(pod.lease("key:a", TPM).u, 900);
    let a = pod.fleet.reserve(&pod.store, &clock, &s, est(900));
    assert_eq!(a.callouts.len(), 1);
    assert_eq!(pod.lease("key:a", TPM).u, 0, "moved into the flight");
    pod.fleet
        .on_response(&pod.store, &clock, &a.callouts[0].ticket, None, None);
    assert_eq!(pod.lease("key:a", TPM).u, 900, "restored");
    // Dispatch failure: same.
    clock.advance(c.failure_backoff_ms);
    let a = pod.fleet.reserve(&pod.store, &clock, &s, est(900));
    let r = pod.fleet.on_answer(
        &pod.store,
        &clock,
        &a.callouts[0].ticket,
        Err(CalloutFailure::Dispatch),
    );
    assert_eq!(r.failure, Some(CalloutFailure::Dispatch));
    assert_eq!(pod.lease("key:a", TPM).u, 900);
    // Once Redis answers, the use is reported exactly once.
    clock.advance(c.failure_backoff_ms);
    pod.admit(&clock, &mut redis, &s, est(900)).unwrap();
    assert_eq!(redis.keys[&tkey("key:a", TPM, T0)].s, 900);
}

#[test]
fn fleet_exhausted_fleet_refuses_without_a_callout_per_request() {
    let c = cfg(r#"{"lease": {"tokens": 1000}}"#);
    let s = [scope("key:a", &[(TPM, 1000)])];
    let pod = Pod::new(&c, "p", &s);
    let clock = FakeClock::at(T0 + 30_000);
    let mut redis = SimRedis::default();
    let mut admitted = 0;
    let mut denial = None;
    for _ in 0..100 {
        match pod.admit(&clock, &mut redis, &s, est(100)) {
            Ok(_) => admitted += 1,
            Err(d) => {
                denial = Some(d);
                break;
            }
        }
    }
    assert_eq!(admitted, 10, "exactly the limit");
    let d = denial.unwrap();
    assert_eq!(d.reason, FleetDenyReason::Limit);
    assert_eq!(d.limit, Some(TPM));
    assert_eq!(d.retry_after_s, 30);
    let execs = redis.execs;
    for _ in 0..50 {
        assert!(pod.admit(&clock, &mut redis, &s, est(100)).is_err());
    }
    assert_eq!(redis.execs, execs, "no callout while exhausted");
    clock.advance(c.exhausted_recheck_ms);
    assert!(pod.admit(&clock, &mut redis, &s, est(100)).is_err());
    assert_eq!(redis.execs, execs + 1, "one recheck");
    // An estimate above the whole limit is refused too.
    let s2 = [scope("key:b", &[(TPM, 1000)])];
    pod.fleet.init(&pod.store, &s2, "p").unwrap();
    let d = pod.admit(&clock, &mut redis, &s2, est(5000)).unwrap_err();
    assert_eq!(d.reason, FleetDenyReason::Limit);
}

#[test]
fn fleet_window_rollover_gives_the_old_lease_back() {
    let c = cfg(r#"{"lease": {"tokens": 1000}}"#);
    let s = [scope("key:a", &[(TPM, 100_000)])];
    let pod = Pod::new(&c, "p", &s);
    let clock = FakeClock::at(T0 + 59_000);
    let mut redis = SimRedis::default();
    let r = pod.admit(&clock, &mut redis, &s, est(300)).unwrap();
    let old_key = tkey("key:a", TPM, clock.now_ms());
    clock.advance(2_000);
    // The old window's lease is void: a new callout for the new window.
    let a = pod.fleet.reserve(&pod.store, &clock, &s, est(300));
    assert_eq!(a.callouts.len(), 1);
    let new_key = tkey("key:a", TPM, clock.now_ms());
    assert_ne!(old_key, new_key);
    assert!(a.callouts[0].request.path.contains(&encode(&new_key)));
    let body = redis.exec(clock.now_ms(), &a.callouts[0].request);
    pod.fleet.on_response(
        &pod.store,
        &clock,
        &a.callouts[0].ticket,
        Some(200),
        Some(&body),
    );
    // Settling the old window's reservation does not touch the new lease.
    let before = pod.lease("key:a", TPM);
    pod.fleet.settle(&pod.store, &clock, &r, actual(10));
    assert_eq!(pod.lease("key:a", TPM), before);
    // The tick gives the old window's lease back, reporting its use.
    assert_eq!(pod.record("key:a").o.len(), 1);
    let t = pod.fleet.tick(&pod.store, &clock, &s);
    assert_eq!(t.callouts.len(), 1);
    assert!(t.callouts[0].ticket.give_back);
    assert!(t.callouts[0].request.path.contains(&encode(&old_key)));
    let body = redis.exec(clock.now_ms(), &t.callouts[0].request);
    assert_eq!(String::from_utf8_lossy(&body), r#"{"EVAL":[700,0,99700]}"#);
    pod.fleet.on_response(
        &pod.store,
        &clock,
        &t.callouts[0].ticket,
        Some(200),
        Some(&body),
    );
    assert!(pod.record("key:a").o.is_empty());
    assert_eq!(redis.keys[&old_key].s, 300);
    assert!(redis.keys[&old_key].h.is_empty());
    // A window rolling over during a flight: the answer goes to `o`.
    let clock2 = FakeClock::at(T0 + 2 * MINUTE_MS - 10);
    let s3 = [scope("key:c", &[(TPM, 100_000)])];
    pod.fleet.init(&pod.store, &s3, "p").unwrap();
    let a = pod.fleet.reserve(&pod.store, &clock2, &s3, est(1));
    let body = redis.exec(clock2.now_ms(), &a.callouts[0].request);
    clock2.advance(20);
    pod.fleet.on_response(
        &pod.store,
        &clock2,
        &a.callouts[0].ticket,
        Some(200),
        Some(&body),
    );
    let a = pod.fleet.reserve(&pod.store, &clock2, &s3, est(1));
    assert_eq!(a.callouts.len(), 1, "a new window needs a new lease");
    let rec = pod.record("key:c");
    assert_eq!(rec.o["tpm"].w, (T0 + 2 * MINUTE_MS - 10) / MINUTE_MS);
}

fn encode(key: &str) -> String {
    crate::core::cache::encode_path_arg(key.as_bytes())
}

#[test]
fn fleet_idle_leases_go_back_and_busy_ones_are_renewed() {
    let c = cfg(r#"{"lease": {"tokens": 1000}, "idle_return_s": 10, "lease_ttl_s": 30}"#);
    let s = [scope("key:a", &[(TPM, 100_000)])];
    let pod = Pod::new(&c, "p", &s);
    let clock = FakeClock::at(T0);
    let mut redis = SimRedis::default();
    let k = tkey("key:a", TPM, T0);
    pod.admit(&clock, &mut redis, &s, est(100)).unwrap();
    assert_eq!(pod.tick_and_answer(&clock, &mut redis, &s), 0);
    // Busy: renewed after a third of the TTL, reporting the use.
    for _ in 0..10 {
        clock.advance(1_000);
        pod.admit(&clock, &mut redis, &s, est(10)).unwrap();
        pod.tick_and_answer(&clock, &mut redis, &s);
    }
    assert_eq!(redis.keys[&k].s, 200, "renewed once at 10 s");
    let l = pod.lease("key:a", TPM);
    assert_eq!(l.x, T0 + 10_000 + 30_000);
    assert_eq!(l.b, 800);
    // Idle for 10 s: given back.
    clock.advance(9_000);
    assert_eq!(pod.tick_and_answer(&clock, &mut redis, &s), 0);
    clock.advance(1_000);
    assert_eq!(pod.tick_and_answer(&clock, &mut redis, &s), 1);
    let l = pod.lease("key:a", TPM);
    assert_eq!((l.b, l.u), (0, 0));
    assert_eq!(redis.granted(&k, clock.now_ms()), 200);
    assert_eq!(
        pod.tick_and_answer(&clock, &mut redis, &s),
        0,
        "nothing left"
    );
    // A lease past its local expiry is not used.
    pod.admit(&clock, &mut redis, &s, est(10)).unwrap();
    let execs = redis.execs;
    clock.advance(30_000);
    let a = pod.fleet.reserve(&pod.store, &clock, &s, est(10));
    assert_eq!(a.callouts.len(), 1, "expired lease: new exchange");
    let _ = execs;
}

#[test]
fn fleet_dead_pod_lease_returns_after_ttl() {
    let c = cfg(r#"{"lease": {"tokens": 10000}, "lease_ttl_s": 30}"#);
    let s = [scope("key:a", &[(TPM, 10_000)])];
    let clock = FakeClock::at(T0);
    let mut redis = SimRedis::default();
    let a = Pod::new(&c, "a", &s);
    let b = Pod::new(&c, "b", &s);
    // The fleet has 10,000: A asks min(chunk, 10000/4) = 2,500.
    a.admit(&clock, &mut redis, &s, est(100)).unwrap();
    assert_eq!(a.lease("key:a", TPM).b, 2400);
    // B drains what is left.
    let mut got = 0;
    while b.admit(&clock, &mut redis, &s, est(100)).is_ok() {
        got += 100;
    }
    assert_eq!(got, 7500);
    // A dies. Within the TTL, its lease is still counted.
    clock.advance(28_000);
    clock.advance(c.exhausted_recheck_ms);
    assert!(b.admit(&clock, &mut redis, &s, est(100)).is_err());
    // After it, A's unused lease (2,500 minus the 100 A never reported)
    // returns to the fleet.
    clock.advance(1_000);
    let mut got = 0;
    while b.admit(&clock, &mut redis, &s, est(100)).is_ok() {
        got += 100;
    }
    assert_eq!(got, 2500);
}

#[test]
fn fleet_scopes_all_or_nothing() {
    let c = cfg(r#"{"lease": {"tokens": 1000}}"#);
    let key = scope("key:a", &[(TPM, 100_000), (RPM, 100)]);
    let tenant = scope("tenant:t", &[(TPM, 500)]);
    let s = [key.clone(), tenant.clone()];
    let pod = Pod::new(&c, "p", &s);
    let clock = FakeClock::at(T0);
    let mut redis = SimRedis::default();
    // Both scopes' callouts start at once.
    let a = pod.fleet.reserve(&pod.store, &clock, &s, est(100));
    assert_eq!(a.callouts.len(), 2);
    for call in &a.callouts {
        let body = redis.exec(clock.now_ms(), &call.request);
        pod.fleet
            .on_response(&pod.store, &clock, &call.ticket, Some(200), Some(&body));
    }
    let mut n = 0;
    while pod.admit(&clock, &mut redis, &s, est(100)).is_ok() {
        n += 1;
    }
    assert_eq!(n, 5, "the tenant's 500 tokens");
    // The key scope's reservations of the refused requests were rolled back.
    let l = pod.lease("key:a", TPM);
    assert_eq!(l.u, 500);
    assert_eq!(pod.lease("key:a", RPM).u, 5);
    let _ = (key, tenant);
}

#[test]
fn fleet_store_failures() {
    let s = [scope("key:a", &[(TPM, 100_000)])];
    let clock = FakeClock::at(T0);
    for mode in ["local", "open", "closed"] {
        let c = cfg(&format!(r#"{{"failure_mode": "{mode}"}}"#));
        let fleet = Fleet::new(c);
        // init never ran: the key is missing, never created on the request path.
        let store = FakeStore::new();
        let a = fleet.reserve(&store, &clock, &s, est(1));
        assert_eq!(a.store_failures[0].kind, StoreFailureKind::Missing);
        assert!(store.is_empty());
        match mode {
            "closed" => assert!(matches!(
                a.outcome,
                Outcome::Denied(FleetDenial {
                    reason: FleetDenyReason::Unavailable,
                    ..
                })
            )),
            _ => assert_eq!(a.outcome, Outcome::Admitted(FleetReservation::default())),
        }
        // A corrupt record is reset (and reported).
        fleet.init(&store, &s, "p").unwrap();
        store
            .set(&Fleet::local_key("key:a"), b"{not json", None)
            .unwrap();
        let a = fleet.reserve(&store, &clock, &s, est(1));
        assert_eq!(a.store_failures[0].kind, StoreFailureKind::Corrupt);
        assert_eq!(a.callouts.len(), 1);
        // Host failure on read.
        store.inject_failures(1);
        let a = fleet.reserve(&store, &clock, &s, est(1));
        assert_eq!(a.store_failures[0].kind, StoreFailureKind::Unavailable);
        // Settle and answers report failures, never panic.
        store.inject_failures(5);
        let r = fleet.on_answer(
            &store,
            &clock,
            &Ticket {
                scope: "key:a".into(),
                flight: 1,
                give_back: false,
                limits: vec![1],
            },
            Ok(vec![]),
        );
        assert!(!r.applied);
        let f = fleet.settle(
            &store,
            &clock,
            &FleetReservation {
                items: vec![Reserved {
                    scope: "key:a".into(),
                    limit: TPM,
                    window: 0,
                    amount: 1,
                    source: Source::Lease,
                }],
            },
            actual(0),
        );
        assert_eq!(f[0].kind, StoreFailureKind::Unavailable);
        store.inject_failures(0);
    }
    // Pod id: the first worker's stays.
    let store = FakeStore::new();
    let fleet = Fleet::new(CompiledFleet::default());
    fleet.init(&store, &s, "first pod\n").unwrap();
    fleet.init(&store, &s, "second").unwrap();
    assert_eq!(Fleet::pod_id(&store).unwrap(), "firstpod");
    fleet.init(&FakeStore::new(), &s, "\u{0}").unwrap();
}

#[test]
fn fleet_corrupt_record_values_never_panic() {
    let s = [scope("key:a", &[(TPM, 100), (RPM, 10)])];
    let clock = FakeClock::at(T0);
    let max = u64::MAX;
    let cases = [
        "".to_string(),
        "null".into(),
        "[]".into(),
        r#"{"l":{"tpm":{"w":0}}}"#.into(),
        format!(r#"{{"l":{{"tpm":{{"w":{max},"b":{max},"x":{max},"u":-9223372036854775808}}}}}}"#),
        format!(r#"{{"l":{{"tpm":{{"w":28401120,"b":{max},"x":{max},"u":9223372036854775807,"fb":{max}}}}},"fu":{max}}}"#),
        format!(r#"{{"f":{{"id":{max},"s":{max},"d":{max},"i":[{{"c":"zz","w":1}}]}},"n":{max}}}"#),
        r#"{"f":{"id":1,"s":0,"d":0,"i":[{"c":"tpm","w":1,"rep":-5,"old":true}]},"o":{"x":{"w":1}}}"#.into(),
    ];
    for case in cases {
        for mode in ["local", "open", "closed"] {
            let fleet = Fleet::new(cfg(&format!(r#"{{"failure_mode": "{mode}"}}"#)));
            let store = FakeStore::new();
            fleet.init(&store, &s, "p").unwrap();
            store
                .set(&Fleet::local_key("key:a"), case.as_bytes(), None)
                .unwrap();
            let a = fleet.reserve(&store, &clock, &s, est(max));
            for c in &a.callouts {
                fleet.on_response(
                    &store,
                    &clock,
                    &c.ticket,
                    Some(200),
                    Some(b"{\"EVAL\":[100,100,0,10,10,0]}"),
                );
            }
            let _ = fleet.tick(&store, &clock, &s);
            let _ = fleet.peek(&store, &clock, &s[0]);
            if let Outcome::Admitted(r) = a.outcome {
                fleet.settle(
                    &store,
                    &clock,
                    &r,
                    Actual {
                        tokens: max,
                        micro_usd: None,
                    },
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The guarantee, simulated: many pods, one Redis, interleaved callouts
// ---------------------------------------------------------------------------

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

struct InFlight {
    pod: usize,
    call: LeaseCallout,
    /// Redis already ran it (the answer is on its way).
    answer: Option<Vec<u8>>,
}

#[derive(Default)]
struct Outcomes {
    admitted: u64,
    denied: u64,
    callouts: u64,
    /// Callouts and admissions when 90% of the limit was committed.
    at_90: Option<(u64, u64)>,
    /// Tokens committed: settled use plus outstanding estimates.
    committed: u64,
}

/// `pods` pods, each with `workers` interleaved requests, steady load of
/// requests of 50..150 tokens for 20 s, callouts answered after random
/// delays (some lost: `loss` per mille, half of them after Redis ran).
fn simulate(pods: usize, limit: u64, chunk: u64, loss: u64, seed: u64) -> Outcomes {
    let c = cfg(&format!(
        r#"{{"lease": {{"tokens": {chunk}, "requests": 1000}}, "failure_mode": "closed", "exhausted_recheck_ms": 500, "failure_backoff_ms": 200}}"#
    ));
    let s = [scope("key:k", &[(TPM, limit), (RPM, 1_000_000)])];
    let clock = FakeClock::at(T0);
    let mut redis = SimRedis::default();
    let fleet: Vec<Pod> = (0..pods)
        .map(|i| Pod::new(&c, &format!("pod{i}"), &s))
        .collect();
    let mut rng = Lcg(seed);
    let mut net: Vec<InFlight> = Vec::new();
    let mut outstanding: Vec<(usize, FleetReservation, u64)> = Vec::new();
    let mut out = Outcomes::default();
    let key = tkey("key:k", TPM, T0);
    while clock.now_ms() < T0 + 20_000 {
        clock.advance(rng.next(3));
        match rng.next(10) {
            0..=3 => {
                let p = rng.next(pods as u64) as usize;
                let e = 50 + rng.next(101);
                let a = fleet[p].fleet.reserve(&fleet[p].store, &clock, &s, est(e));
                assert!(a.store_failures.is_empty());
                for call in a.callouts {
                    out.callouts += 1;
                    net.push(InFlight {
                        pod: p,
                        call,
                        answer: None,
                    });
                }
                match a.outcome {
                    Outcome::Admitted(r) => {
                        out.admitted += 1;
                        out.committed += e;
                        outstanding.push((p, r, e));
                    }
                    Outcome::Denied(_) => out.denied += 1,
                    Outcome::Wait { .. } => {}
                }
            }
            4..=5 if !outstanding.is_empty() => {
                let i = rng.next(outstanding.len() as u64) as usize;
                let (p, r, e) = outstanding.swap_remove(i);
                // Use at most the estimate (most often all of it).
                let used = if rng.next(4) == 0 { rng.next(e + 1) } else { e };
                fleet[p]
                    .fleet
                    .settle(&fleet[p].store, &clock, &r, actual(used));
                out.committed -= e - used;
            }
            6..=7 if !net.is_empty() => {
                // Redis runs a callout (in any order).
                let i = rng.next(net.len() as u64) as usize;
                if net[i].answer.is_none() {
                    net[i].answer = Some(redis.exec(clock.now_ms(), &net[i].call.request));
                }
            }
            8 if !net.is_empty() => {
                let i = rng.next(net.len() as u64) as usize;
                let f = net.swap_remove(i);
                let pod = &fleet[f.pod];
                let lost = rng.next(1000) < loss;
                let r = match (&f.answer, lost) {
                    (Some(body), false) => pod.fleet.on_response(
                        &pod.store,
                        &clock,
                        &f.call.ticket,
                        Some(200),
                        Some(body),
                    ),
                    (None, false) => {
                        let body = redis.exec(clock.now_ms(), &f.call.request);
                        pod.fleet.on_response(
                            &pod.store,
                            &clock,
                            &f.call.ticket,
                            Some(200),
                            Some(&body),
                        )
                    }
                    // Timed out, whether or not Redis ran it.
                    _ => pod
                        .fleet
                        .on_response(&pod.store, &clock, &f.call.ticket, None, None),
                };
                assert!(r.store_failures.is_empty());
            }
            _ => {
                let p = rng.next(pods as u64) as usize;
                let t = fleet[p].fleet.tick(&fleet[p].store, &clock, &s);
                for call in t.callouts {
                    out.callouts += 1;
                    net.push(InFlight {
                        pod: p,
                        call,
                        answer: None,
                    });
                }
            }
        }
        // The guarantee, at every step.
        assert!(
            out.committed <= limit,
            "committed {} > limit {limit}",
            out.committed
        );
        if out.at_90.is_none() && out.committed * 10 >= limit * 9 {
            out.at_90 = Some((out.callouts, out.admitted));
        }
        // Without lost answers (whose reports may count twice: never
        // less), Redis's books hold too.
        if loss == 0 {
            assert!(redis.granted(&key, clock.now_ms()) <= i128::from(limit));
        }
    }
    out
}

#[test]
fn fleet_many_pods_never_exceed_the_limit_and_use_90_percent() {
    for (pods, limit, chunk, seed) in [
        (4, 200_000, 5_000, 1),
        (8, 100_000, 20_000, 2),
        (2, 50_000, 1_000, 3),
        (16, 300_000, 10_000, 4),
    ] {
        let o = simulate(pods, limit, chunk, 0, seed);
        assert!(o.denied > 0, "the limit was reached");
        let used = o.committed as f64 / limit as f64;
        assert!(
            used >= 0.9,
            "{pods} pods: only {:.1}% of the limit used",
            used * 100.0
        );
        // Tens of callouts per 1,000 admissions, not a thousand (counted
        // up to 90% of the limit: after it, each pod rechecks about once per
        // `exhausted_recheck_ms`).
        let (callouts, admitted) = o.at_90.unwrap();
        let per_1000 = callouts as f64 * 1000.0 / admitted as f64;
        assert!(
            per_1000 < 100.0,
            "{pods} pods: {per_1000:.0} callouts per 1000"
        );
        eprintln!(
            "{pods} pods, limit {limit}, chunk {chunk}: {:.1}% used, {} admitted, {:.1} callouts per 1000",
            used * 100.0,
            o.admitted,
            per_1000
        );
    }
}

#[test]
fn fleet_lost_and_late_answers_never_over_admit() {
    for seed in 10..16 {
        let o = simulate(5, 60_000, 3_000, 150, seed);
        assert!(o.admitted > 100);
    }
}

//! Fleet mode's Redis side through the real path: HTTP to webdis → Envoy
//! `redis_proxy` → a 3-master Redis Cluster, running the filter's own Lua
//! scripts with the filter's own request builders and answer parser.

use llmgate::core::budget::{Actual, Estimate, LimitKind};
use llmgate::core::fleet::{
    grant_request, parse_reply, redis_key, release_request, CalloutFailure, Fleet, FleetConfig,
    FleetScope, GrantArg, ItemReply, Outcome, ReleaseArg, WebdisRequest,
};
use llmgate::core::host::{FakeClock, FakeStore};
use llmgate_integration::cluster::{client_encode, RedisCluster};
use llmgate_integration::Request;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PREFIX: &str = "llmgate:fleet";
const TPM: LimitKind = LimitKind::TokensPerMinute;
const RPM: LimitKind = LimitKind::RequestsPerMinute;

fn send(c: &RedisCluster, req: &WebdisRequest) -> (Option<u32>, Vec<u8>) {
    match c.webdis(&Request::new(req.method, &req.path)) {
        Ok(r) => (Some(u32::from(r.status)), r.body),
        Err(_) => (None, Vec::new()),
    }
}

fn key(scope: &str, kind: LimitKind) -> String {
    redis_key(PREFIX, scope, kind, 1)
}

/// A scope `<stem>:<n>` whose keys live on master `i`.
fn scope_on_master(c: &RedisCluster, i: usize, stem: &str) -> String {
    (0..1000)
        .map(|n| format!("{stem}:{n}"))
        .find(|s| c.master_of(&key(s, TPM)) == Some(i))
        .unwrap()
}

struct Ask {
    report: i64,
    need: u64,
    chunk: u64,
    limit: u64,
    ttl_ms: u64,
}

fn ask(report: i64, need: u64, chunk: u64, limit: u64) -> Ask {
    Ask {
        report,
        need,
        chunk,
        limit,
        ttl_ms: 30_000,
    }
}

fn grant(
    c: &RedisCluster,
    pod: &str,
    items: &[(&str, Ask)],
) -> Result<Vec<ItemReply>, CalloutFailure> {
    let args: Vec<GrantArg> = items
        .iter()
        .map(|(k, a)| GrantArg {
            key: k.to_string(),
            report: a.report,
            need: a.need,
            chunk: a.chunk,
            limit: a.limit,
            lease_ttl_ms: a.ttl_ms,
            key_ttl_ms: 120_000,
        })
        .collect();
    let limits: Vec<u64> = items.iter().map(|(_, a)| a.limit).collect();
    let (status, body) = send(c, &grant_request(pod, &args));
    parse_reply(status, Some(&body), &limits)
}

fn release(
    c: &RedisCluster,
    pod: &str,
    k: &str,
    report: i64,
    limit: u64,
) -> Result<Vec<ItemReply>, CalloutFailure> {
    let req = release_request(
        pod,
        &[ReleaseArg {
            key: k.to_string(),
            report,
            limit,
            key_ttl_ms: 120_000,
        }],
    );
    let (status, body) = send(c, &req);
    parse_reply(status, Some(&body), &[limit])
}

fn reply(granted: u64, held: u64, remaining: u64) -> ItemReply {
    ItemReply {
        granted,
        held,
        remaining,
    }
}

#[test]
fn grants_partial_grant_at_the_limit_and_give_back() {
    let c = RedisCluster::start();
    let k = key("key:grants", TPM);
    // First ask: a whole chunk.
    assert_eq!(
        grant(&c, "a", &[(&k, ask(0, 100, 1000, 10_000))]).unwrap(),
        vec![reply(1000, 1000, 9000)]
    );
    // Shrinking: min(chunk, remaining / 4).
    assert_eq!(
        grant(&c, "b", &[(&k, ask(0, 1, 5000, 10_000))]).unwrap(),
        vec![reply(2250, 2250, 6750)]
    );
    // A reports its use (all 1,000) and needs 8,000: a partial grant of
    // what is left.
    assert_eq!(
        grant(&c, "a", &[(&k, ask(1000, 8000, 1000, 10_000))]).unwrap(),
        vec![reply(6750, 6750, 0)]
    );
    // Nothing left: B gets nothing more, keeps what it holds.
    assert_eq!(
        grant(&c, "b", &[(&k, ask(0, 1, 5000, 10_000))]).unwrap(),
        vec![reply(0, 2250, 0)]
    );
    // B used 250 and gives the rest back.
    assert_eq!(
        release(&c, "b", &k, 250, 10_000).unwrap(),
        vec![reply(2000, 0, 2000)]
    );
    // A refund (negative report) goes back to the fleet too.
    assert_eq!(
        grant(&c, "a", &[(&k, ask(-500, 0, 0, 10_000))]).unwrap(),
        vec![reply(0, 7250, 2000)]
    );
    // What Redis holds, on the master that owns the slot.
    let m = c.master_of(&k).unwrap();
    let h = c.redis(m, &["HGETALL", &k]).unwrap();
    let fields: Vec<&str> = h.lines().collect();
    let get = |f: &str| {
        fields
            .chunks(2)
            .find(|p| p[0] == f)
            .map(|p| p[1].to_string())
    };
    assert_eq!(get("s").as_deref(), Some("750"));
    assert_eq!(get("h:a").as_deref(), Some("7250"));
    assert_eq!(get("h:b"), None);
    let ttl: i64 = c.redis(m, &["PTTL", &k]).unwrap().parse().unwrap();
    assert!(ttl > 100_000 && ttl <= 120_000, "{ttl}");
    // Several limits of one scope in one script (one slot).
    let r = grant(
        &c,
        "a",
        &[
            (&key("key:multi", TPM), ask(0, 10, 100, 1000)),
            (&key("key:multi", RPM), ask(0, 1, 10, 20)),
        ],
    )
    .unwrap();
    assert_eq!(r, vec![reply(100, 100, 900), reply(5, 5, 15)]);
    // Large amounts (micro-USD) stay exact.
    let big = 9_000_000_000_000_000u64;
    let r = grant(
        &c,
        "a",
        &[(&key("key:big", TPM), ask(0, big - 7, big, big))],
    )
    .unwrap();
    assert_eq!(r, vec![reply(big - 7, big - 7, 7)]);
}

#[test]
fn a_dead_pods_lease_expires_and_returns() {
    let c = RedisCluster::start();
    let k = key("key:dead", TPM);
    let short = Ask {
        ttl_ms: 300,
        ..ask(0, 6000, 6000, 10_000)
    };
    assert_eq!(
        grant(&c, "dying", &[(&k, short)]).unwrap(),
        vec![reply(6000, 6000, 4000)]
    );
    assert_eq!(
        grant(&c, "alive", &[(&k, ask(0, 1, 100_000, 10_000))]).unwrap(),
        vec![reply(1000, 1000, 3000)]
    );
    std::thread::sleep(Duration::from_millis(400));
    // The dead pod's 6,000 are back.
    assert_eq!(
        grant(&c, "alive", &[(&k, ask(0, 1, 100_000, 10_000))]).unwrap(),
        vec![reply(2250, 3250, 6750)]
    );
    let m = c.master_of(&k).unwrap();
    let h = c.redis(m, &["HGETALL", &k]).unwrap();
    assert!(!h.contains("dying"), "{h}");
}

#[test]
fn scopes_spread_over_the_three_masters_and_a_scope_stays_in_one_slot() {
    let c = RedisCluster::start();
    let mut per_master = [0usize; 3];
    for i in 0..45 {
        let scope = format!("tenant:t{i}");
        let kinds = [TPM, RPM, LimitKind::UsdPerDay];
        let keys: Vec<String> = kinds.iter().map(|&k| key(&scope, k)).collect();
        let items: Vec<(&str, Ask)> = keys
            .iter()
            .map(|k| (k.as_str(), ask(0, 1, 10, 100)))
            .collect();
        let r = grant(&c, "p", &items).unwrap();
        assert_eq!(r.len(), 3);
        let masters: Vec<usize> = keys.iter().map(|k| c.master_of(k).unwrap()).collect();
        assert!(
            masters.iter().all(|&m| m == masters[0]),
            "{scope}: {masters:?}"
        );
        per_master[masters[0]] += 1;
        // The data really is on that master.
        assert_eq!(
            c.redis(masters[0], &["EXISTS", &keys[0]]).as_deref(),
            Some("1")
        );
    }
    assert!(per_master.iter().all(|&n| n >= 5), "{per_master:?}");
    // Keys of two scopes in one script: refused (CROSSSLOT), a failure.
    let (k1, k2) = (
        key(&scope_on_master(&c, 0, "tenant:x"), TPM),
        key(&scope_on_master(&c, 1, "tenant:y"), TPM),
    );
    let e = grant(&c, "p", &[(&k1, ask(0, 1, 1, 1)), (&k2, ask(0, 1, 1, 1))]).unwrap_err();
    assert_eq!(e, CalloutFailure::RedisError);
    // Garbled arguments: the script's own error.
    let mut req = grant_request(
        "p",
        &[GrantArg {
            key: k1.clone(),
            report: 0,
            need: 1,
            chunk: 1,
            limit: 1,
            lease_ttl_ms: 1,
            key_ttl_ms: 1,
        }],
    );
    req.path.push_str("/extra");
    let (status, body) = send(&c, &req);
    assert_eq!(
        String::from_utf8_lossy(&body),
        r#"{"EVAL":[false,"ERR llmgate: bad arguments"]}"#
    );
    assert_eq!(
        parse_reply(status, Some(&body), &[1]),
        Err(CalloutFailure::RedisError)
    );
    // webdis's ACL refuses what the proxy would fan out to every shard.
    for cmd in ["/KEYS/*", "/FLUSHALL", "/SCAN/0", "/CONFIG/GET/maxmemory"] {
        let r = c.webdis_get(cmd).unwrap();
        assert_eq!(r.status, 403, "{cmd}");
    }
}

#[test]
fn a_killed_master_is_an_upstream_failure_and_leases_resume_after_it() {
    let mut c = RedisCluster::start();
    let down_scope = scope_on_master(&c, 0, "key:down");
    let up_scope = scope_on_master(&c, 1, "key:up");
    let (kd, ku) = (key(&down_scope, TPM), key(&up_scope, TPM));
    assert_eq!(c.master_of(&kd), Some(0));
    grant(&c, "p", &[(&kd, ask(0, 1, 100, 1000))]).unwrap();
    c.kill_master(0);
    let t = Instant::now();
    let (status, body) = send(
        &c,
        &grant_request(
            "p",
            &[GrantArg {
                key: kd.clone(),
                report: 0,
                need: 1,
                chunk: 100,
                limit: 1000,
                lease_ttl_ms: 30_000,
                key_ttl_ms: 120_000,
            }],
        ),
    );
    let took = t.elapsed();
    assert_eq!(status, Some(200), "webdis answers 200 for a Redis error");
    assert_eq!(
        String::from_utf8_lossy(&body),
        r#"{"EVAL":[false,"upstream failure"]}"#
    );
    assert_eq!(
        parse_reply(status, Some(&body), &[1000]),
        Err(CalloutFailure::UpstreamFailure)
    );
    assert!(took < Duration::from_millis(500), "{took:?}");
    // The `.txt` form of the same failure.
    let r = c
        .webdis_get(&format!("/GET/{}.txt", client_encode(&kd)))
        .unwrap();
    assert!(r.text().starts_with("-upstream failure"), "{}", r.text());
    assert_eq!(
        parse_reply(Some(u32::from(r.status)), Some(&r.body), &[1000]),
        Err(CalloutFailure::UpstreamFailure)
    );
    // The other shards keep granting.
    assert!(grant(&c, "p", &[(&ku, ask(0, 1, 100, 1000))]).is_ok());
    // The master comes back (empty: no persistence, no replica here) and
    // leases resume through the same proxy.
    c.restart_master(0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match grant(&c, "p", &[(&kd, ask(0, 1, 100, 1000))]) {
            Ok(r) => {
                assert_eq!(r, vec![reply(100, 100, 900)]);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "still failing: {e:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The engine end to end on the real scripts: three pods (each its own
/// shared data) admit against one fleet limit until refused.
#[test]
fn pods_share_one_limit_through_the_real_scripts() {
    let c = RedisCluster::start();
    let cfg: FleetConfig = serde_json::from_str(r#"{"lease": {"tokens": 2000}}"#).unwrap();
    let cfg = cfg.compile().unwrap();
    let limit = 20_000;
    let scopes = [FleetScope {
        name: "key:e2e".to_string(),
        limits: vec![(TPM, limit)],
    }];
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // Far from a minute's end, so the window does not roll over.
    let start = now - now % 60_000 + 1_000;
    let clock = FakeClock::at(start);
    let pods: Vec<(Fleet, FakeStore)> = (0..3)
        .map(|i| {
            let f = Fleet::new(cfg.clone());
            let s = FakeStore::new();
            f.init(&s, &scopes, &format!("pod{i}")).unwrap();
            (f, s)
        })
        .collect();
    let mut admitted = 0u64;
    let mut callouts = 0u64;
    let mut refused = [false; 3];
    let mut turn = 0usize;
    while !refused.iter().all(|r| *r) {
        let i = turn % 3;
        turn += 1;
        if refused[i] {
            continue;
        }
        let (fleet, store) = &pods[i];
        let est = Estimate {
            tokens: 150,
            micro_usd: 0,
        };
        let a = fleet.reserve(store, &clock, &scopes, est);
        for call in &a.callouts {
            callouts += 1;
            let (status, body) = send(&c, &call.request);
            let r = fleet.on_response(store, &clock, &call.ticket, status, Some(&body));
            assert!(r.failure.is_none(), "{r:?}");
        }
        match a.outcome {
            Outcome::Admitted(r) => {
                admitted += 150;
                fleet.settle(
                    store,
                    &clock,
                    &r,
                    Actual {
                        tokens: 150,
                        micro_usd: Some(0),
                    },
                );
            }
            Outcome::Denied(_) => refused[i] = true,
            Outcome::Wait { .. } => {}
        }
        assert!(admitted <= limit);
        assert!(turn < 10_000);
    }
    assert!(admitted * 10 >= limit * 9, "only {admitted} of {limit}");
    eprintln!("admitted {admitted} of {limit} with {callouts} lease callouts");
    // Every pod gives back on idle; Redis ends with s = what was used.
    clock.advance(cfg.idle_return_ms);
    for (fleet, store) in &pods {
        for call in fleet.tick(store, &clock, &scopes).callouts {
            let (status, body) = send(&c, &call.request);
            let r = fleet.on_response(store, &clock, &call.ticket, status, Some(&body));
            assert!(r.applied && r.failure.is_none(), "{r:?}");
        }
    }
    let k = redis_key(PREFIX, "key:e2e", TPM, start / 60_000);
    let m = c.master_of(&k).unwrap();
    assert_eq!(c.redis(m, &["HGET", &k, "s"]), Some(admitted.to_string()));
    let h = c.redis(m, &["HGETALL", &k]).unwrap();
    assert!(!h.contains("h:"), "all leases given back: {h}");
}

//! Per-key budgets in shared data: 429 in both shapes with `retry-after` and
//! rate-limit headers, window reset, and exactness under concurrency across
//! two Envoy workers.

use llmgate::core::util::sha256_hex;
use llmgate_integration::{config, Mock, Options, Request, Stack};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn stack_with(limits: serde_json::Value, concurrency: u32) -> Stack {
    let mut opts = Options::new(&config(json!({
        "keys": [{"id": "demo", "sha256": sha256_hex(b"sk-llmgate-demo"), "tenant": "demo", "limits": limits}],
        "budgets": {"default_max_tokens": 16},
        "response_headers": {"usage": true}
    })));
    opts.concurrency = concurrency;
    Stack::start(opts)
}

fn chat(text: &str) -> serde_json::Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": text}]})
}

/// Waits if the current minute ends within `margin_s`, so a test's requests
/// all fall into one fixed window.
fn avoid_minute_boundary(margin_s: u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 60 - now % 60;
    if left < margin_s {
        std::thread::sleep(Duration::from_secs(left + 1));
    }
}

#[test]
fn request_limit_429_in_both_shapes_with_headers_then_the_window_resets() {
    avoid_minute_boundary(20);
    let s = stack_with(json!({"requests_per_minute": 2}), 2);
    let r = s.send(&Request::openai(chat("one")));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("1"));
    let r = s.send(&Request::anthropic(json!({"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "two"}]})));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));

    let r = s.send(&Request::openai(chat("three")));
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    let retry: u64 = r
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("2"));

    let r = s.send(&Request::anthropic(json!({"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "four"}]})));
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        s.mock_requests(Mock::Primary),
        2,
        "denied requests never reach the upstream"
    );

    // After retry-after seconds the next window admits again.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::thread::sleep(Duration::from_secs(60 - now % 60 + 1));
    let r = s.send(&Request::openai(chat("five")));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("1"));
}

#[test]
fn token_budget_is_exact_under_concurrency_on_two_workers() {
    avoid_minute_boundary(25);
    let limit: u64 = 250;
    let s = Arc::new(stack_with(
        json!({"tokens_per_minute": limit, "requests_per_minute": 100000}),
        2,
    ));
    // One sequential probe tells the per-request estimate and actual usage.
    let r = s.send(&Request::openai(chat("alpha beta gamma")));
    assert_eq!(r.status, 200);
    let remaining_after_reserve: u64 = r
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    let estimate = limit - remaining_after_reserve;
    let actual: u64 = r
        .header("x-llmgate-tokens-in")
        .unwrap()
        .parse::<u64>()
        .unwrap()
        + r.header("x-llmgate-tokens-out")
            .unwrap()
            .parse::<u64>()
            .unwrap();
    assert!(actual <= estimate, "actual {actual} estimate {estimate}");

    let clients = 50;
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || s.send(&Request::openai(chat("alpha beta gamma"))).status)
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let admitted = statuses.iter().filter(|&&c| c == 200).count() as u64;
    let denied = statuses.iter().filter(|&&c| c == 429).count() as u64;
    assert_eq!(admitted + denied, clients, "{statuses:?}");
    assert!(denied > 0, "the limit must bite");
    // Never over the limit: every admission had used+reserved+estimate <= limit.
    let used = (admitted + 1) * actual;
    assert!(used <= limit, "used {used} > limit {limit}");
    // No admitted request lost from the count: a final probe sees exactly
    // limit - used - its own estimate remaining (or is denied when that is < 0).
    let r = s.send(&Request::openai(chat("alpha beta gamma")));
    if limit - used >= estimate {
        assert_eq!(r.status, 200);
        let rem: u64 = r
            .header("x-ratelimit-remaining-tokens")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            rem,
            limit - used - estimate,
            "admitted {admitted}, actual {actual}"
        );
    } else {
        assert_eq!(r.status, 429);
        let rem: u64 = r
            .header("x-ratelimit-remaining-tokens")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(rem, limit - used);
    }
    // The upstream saw exactly the admitted requests.
    let expected = admitted + 1 + u64::from(r.status == 200);
    assert_eq!(s.mock_requests(Mock::Primary), expected);
}

#[test]
fn dollar_budget_holds_under_concurrency() {
    let s = Arc::new(stack_with(json!({"usd_per_day": 0.0002}), 2));
    let r = s.send(&Request::openai(chat("alpha beta gamma")));
    assert_eq!(r.status, 200);
    let cost: f64 = r.header("x-llmgate-cost-usd").unwrap().parse().unwrap();
    assert!(cost > 0.0);
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || s.send(&Request::openai(chat("alpha beta gamma"))).status)
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let admitted = statuses.iter().filter(|&&c| c == 200).count() as f64;
    assert!(
        statuses.iter().all(|&c| c == 200 || c == 429),
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "the budget must bite");
    let spent = (admitted + 1.0) * cost;
    assert!(spent <= 0.0002 + 1e-9, "spent {spent}");
    // Audit lines account for every admitted request.
    let lines = s.wait_audit(51);
    let allowed = lines.iter().filter(|l| l["decision"] == "allowed").count() as f64;
    assert_eq!(allowed, admitted + 1.0);
}

#[test]
fn end_user_and_tenant_limits_apply_separately() {
    avoid_minute_boundary(15);
    let s = Stack::start(Options::new(&config(json!({
        "keys": [
            {"id": "demo", "sha256": sha256_hex(b"sk-llmgate-demo"), "tenant": "acme",
             "user_limits": {"requests_per_minute": 2}},
            {"id": "second", "sha256": sha256_hex(b"sk-second-key"), "tenant": "acme"}
        ],
        "tenants": {"acme": {"limits": {"requests_per_minute": 5}}}
    }))));
    let as_user = |u: &str| Request::openai(chat("hi")).header("x-llmgate-user", u);
    assert_eq!(s.send(&as_user("alice")).status, 200);
    assert_eq!(s.send(&as_user("alice")).status, 200);
    let r = s.send(&as_user("alice"));
    assert_eq!(r.status, 429, "alice's own limit");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("user"));
    assert_eq!(
        s.send(&as_user("bob")).status,
        200,
        "bob has his own counter"
    );
    // The tenant's limit (5 per minute) covers both keys.
    let second = Request::openai(chat("hi"))
        .without("authorization")
        .bearer("sk-second-key");
    assert_eq!(s.send(&second).status, 200);
    assert_eq!(s.send(&second).status, 200);
    let r = s.send(&second);
    assert_eq!(r.status, 429, "tenant acme is at 5 requests");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tenant"));
    let audit = s.wait_audit(7);
    assert!(audit.iter().any(|l| l["user"] == "alice"));
}

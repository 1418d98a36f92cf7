//! Response cache in real Redis through real webdis: hits, misses, streams,
//! client controls, what is stored, and failing open.

use llmgate::core::util::sha256_hex;
use llmgate_integration::{config, Mock, Options, Request, Stack};
use serde_json::json;
use std::time::{Duration, Instant};

const PREFIX: &str = "llmgate:cache:";

fn cache_config() -> serde_json::Value {
    cache_config_l1(4 * 1024 * 1024)
}

fn cache_config_l1(l1_bytes: u64) -> serde_json::Value {
    json!({
        "cache": {"enabled": true, "ttl_s": 600, "timeout_ms": 250, "l1_bytes": l1_bytes},
        "keys": [
            {"id": "demo", "sha256": sha256_hex(b"sk-llmgate-demo"), "tenant": "demo"},
            {"id": "other", "sha256": sha256_hex(b"sk-other-tenant"), "tenant": "acme"}
        ]
    })
}

fn stack() -> Stack {
    Stack::start(Options::new(&config(cache_config())))
}

fn openai(text: &str) -> Request {
    Request::openai(
        json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": text}]}),
    )
}

fn anthropic(text: &str) -> Request {
    Request::anthropic(
        json!({"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": text}]}),
    )
}

#[test]
fn second_identical_request_is_a_hit_in_both_apis() {
    let s = stack();
    for (first, again) in [
        (
            openai("What is the capital of France?"),
            openai("What is the capital of France?"),
        ),
        (
            anthropic("Name three colours"),
            anthropic("Name three colours"),
        ),
    ] {
        let before = s.mock_requests(Mock::Primary);
        let r1 = s.send(&first);
        assert_eq!(r1.status, 200);
        assert_eq!(r1.header("x-llmgate-cache"), Some("miss"));
        assert_eq!(s.mock_requests(Mock::Primary), before + 1);
        s.wait_redis_keys(&format!("{PREFIX}*"), if before == 0 { 1 } else { 2 });
        let r2 = s.send(&again);
        assert_eq!(r2.status, 200, "{}", r2.text());
        assert_eq!(r2.header("x-llmgate-cache"), Some("hit"));
        assert!(r2.header("age").is_some());
        assert_eq!(r2.body, r1.body, "a hit is byte-identical");
        assert_eq!(
            s.mock_requests(Mock::Primary),
            before + 1,
            "the upstream was not asked again"
        );
    }
    // Key order and whitespace do not matter.
    let raw = br#"{"messages":[{"content":"What is the capital of France?","role":"user"}],   "temperature":0,"model":"gpt-4o-mini"}"#;
    let r = s.send(
        &Request::new("POST", "/v1/chat/completions")
            .bearer("sk-llmgate-demo")
            .body(raw),
    );
    assert_eq!(r.header("x-llmgate-cache"), Some("hit"));
    assert_eq!(
        s.metric("llmgate_cache_total", &[("outcome", "hit")]),
        Some(3.0)
    );
    let audit = s.wait_audit(5);
    assert!(audit
        .iter()
        .any(|l| l["cache"] == "hit" && l["decision"] == "allowed"));
}

#[test]
fn a_streaming_hit_replays_a_valid_stream() {
    let s = stack();
    let req = Request::openai(json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "stream me please"}]}))
        .header("x-mock-write-bytes", "5");
    let r1 = s.send(&req);
    assert_eq!(r1.header("x-llmgate-cache"), Some("miss"));
    s.wait_redis_keys(&format!("{PREFIX}*"), 1);
    let r2 = s.send(&req);
    assert_eq!(r2.header("x-llmgate-cache"), Some("hit"));
    assert!(r2
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(r2.body, r1.body);
    assert_eq!(
        llmgate_integration::sse_text(&r2.text()),
        "echo: stream me please"
    );
    assert!(r2.text().trim_end().ends_with("data: [DONE]"));
    assert_eq!(s.mock_requests(Mock::Primary), 1);

    let areq = Request::anthropic(
        json!({"model": "claude-haiku-4-5", "stream": true, "max_tokens": 50, "messages": [{"role": "user", "content": "anthropic stream"}]}),
    );
    let a1 = s.send(&areq);
    assert_eq!(a1.header("x-llmgate-cache"), Some("miss"));
    s.wait_redis_keys(&format!("{PREFIX}*"), 2);
    let a2 = s.send(&areq);
    assert_eq!(a2.header("x-llmgate-cache"), Some("hit"));
    assert_eq!(
        llmgate_integration::sse_text(&a2.text()),
        "echo: anthropic stream"
    );
    assert!(a2.text().contains("event: message_stop"));
    // A non-streaming request does not get the streamed entry.
    let r3 = s.send(&Request::anthropic(json!({"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "anthropic stream"}]})));
    assert_eq!(r3.header("x-llmgate-cache"), Some("miss"));
}

#[test]
fn different_model_temperature_or_tenant_misses() {
    let s = stack();
    assert_eq!(
        s.send(&openai("same question")).header("x-llmgate-cache"),
        Some("miss")
    );
    s.wait_redis_keys(&format!("{PREFIX}*"), 1);
    assert_eq!(
        s.send(&openai("same question")).header("x-llmgate-cache"),
        Some("hit")
    );
    let other_model = Request::openai(
        json!({"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": "same question"}]}),
    );
    assert_eq!(s.send(&other_model).header("x-llmgate-cache"), Some("miss"));
    let other_temp = Request::openai(
        json!({"model": "gpt-4o-mini", "temperature": 0.7, "messages": [{"role": "user", "content": "same question"}]}),
    );
    // Non-zero temperature is not cacheable by default: bypass.
    assert_eq!(
        s.send(&other_temp).header("x-llmgate-cache"),
        Some("bypass")
    );
    let other_tenant = openai("same question")
        .without("authorization")
        .bearer("sk-other-tenant");
    assert_eq!(
        s.send(&other_tenant).header("x-llmgate-cache"),
        Some("miss")
    );
}

#[test]
fn no_cache_and_no_store_behave_as_stated() {
    let s = stack();
    let r = s.send(&openai("controls").header("x-llmgate-cache", "no-store"));
    assert_eq!(r.header("x-llmgate-cache"), Some("bypass"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.redis(&["KEYS", &format!("{PREFIX}*")])
            .strings()
            .is_empty(),
        "no-store stores nothing"
    );

    let r = s.send(&openai("controls").header("x-llmgate-cache", "no-cache"));
    assert_eq!(r.header("x-llmgate-cache"), Some("bypass"));
    assert_eq!(
        s.wait_redis_keys(&format!("{PREFIX}*"), 1).len(),
        1,
        "no-cache still stores"
    );
    let before = s.mock_requests(Mock::Primary);
    let r = s.send(&openai("controls").header("x-llmgate-cache", "no-cache"));
    assert_eq!(r.header("x-llmgate-cache"), Some("bypass"));
    assert_eq!(
        s.mock_requests(Mock::Primary),
        before + 1,
        "no-cache skips the lookup"
    );
    let r = s.send(&openai("controls"));
    assert_eq!(r.header("x-llmgate-cache"), Some("hit"));
}

#[test]
fn redis_holds_hashed_keys_with_ttl_and_no_prompt_text() {
    let s = stack();
    s.send(&openai("my secret prompt about zebras"));
    let keys = s.wait_redis_keys(&format!("{PREFIX}*"), 1);
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    let hash = key.strip_prefix(PREFIX).expect("prefix");
    assert_eq!(hash.len(), 64);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!key.contains("zebra"));
    let ttl = s.redis(&["TTL", key]).as_int().unwrap();
    assert!(ttl > 500 && ttl <= 600, "ttl {ttl}");
}

/// Without the in-VM L1, so every lookup goes to webdis.
fn stack_without_l1() -> Stack {
    Stack::start(Options::new(&config(cache_config_l1(0))))
}

#[test]
fn garbage_in_redis_is_a_miss_not_an_error() {
    let s = stack_without_l1();
    s.send(&openai("garbage test"));
    let keys = s.wait_redis_keys(&format!("{PREFIX}*"), 1);
    s.redis(&["SET", &keys[0], "\u{0}\u{1}not an entry {\"v\":99}"]);
    let r = s.send(&openai("garbage test"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "echo: garbage test"
    );
    assert!(
        s.metric(
            "llmgate_dependency_failures_total",
            &[("dependency", "webdis")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
}

#[test]
fn webdis_down_fails_open() {
    let mut s = stack_without_l1();
    s.kill("webdis");
    for i in 0..3 {
        let r = s.send(&openai(&format!("webdis is down {i}")));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
    }
    let r = s.send(&openai("webdis is down 0"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
    assert!(
        s.metric(
            "llmgate_dependency_failures_total",
            &[("dependency", "webdis")]
        )
        .unwrap_or(0.0)
            >= 3.0
    );
}

#[test]
fn a_hanging_webdis_costs_at_most_the_timeout() {
    // A listener that accepts and never answers.
    let port = llmgate_integration::black_hole();
    let mut opts = Options::new(&config(cache_config_l1(0)));
    opts.webdis_cluster_port = Some(port);
    let s = Stack::start(opts);
    // Warm up, then time a few requests: each waits at most ~250 ms for the cache.
    s.send(&openai("warm up"));
    for i in 0..3 {
        let t = Instant::now();
        let r = s.send(&openai(&format!("hanging webdis {i}")));
        let took = t.elapsed();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
        assert!(took < Duration::from_millis(1000), "took {took:?}");
    }
    assert!(
        s.metric(
            "llmgate_dependency_failures_total",
            &[("dependency", "webdis")]
        )
        .unwrap_or(0.0)
            >= 3.0
    );
}

#[test]
fn the_in_vm_l1_answers_repeats_without_webdis() {
    let mut opts = Options::new(&config(cache_config()));
    opts.concurrency = 1;
    let mut s = Stack::start(opts);
    let r1 = s.send(&openai("remember me"));
    assert_eq!(r1.header("x-llmgate-cache"), Some("miss"));
    s.wait_redis_keys(&format!("{PREFIX}*"), 1);
    s.kill("webdis");
    let r2 = s.send(&openai("remember me"));
    assert_eq!(
        r2.header("x-llmgate-cache"),
        Some("hit"),
        "served from the worker's L1"
    );
    assert_eq!(r2.body, r1.body);
    assert_eq!(s.mock_requests(Mock::Primary), 1);
    // Another tenant's identical question is not answered from it.
    let other = openai("remember me")
        .without("authorization")
        .bearer("sk-other-tenant");
    assert_eq!(s.send(&other).header("x-llmgate-cache"), Some("miss"));
    assert!(s.metric("llmgate_cache_l1_hits_total", &[]).unwrap_or(0.0) >= 1.0);
}

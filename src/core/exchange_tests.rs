//! The request path's ordering rules, natively, with the fake store, clock
//! and metrics: every rule that used to be testable only through Envoy.

use super::*;
use crate::core::breaker::Breaker;
use crate::core::host::{FakeClock, FakeMetrics, FakeStore};
use crate::core::util::sha256_hex;
use serde_json::json;

const KEY: &str = "sk-test";
const T0: u64 = 1_704_067_210_000; // 2024-01-01T00:00:10Z

struct Harness {
    config: Rc<Config>,
    store: Rc<FakeStore>,
    clock: Rc<FakeClock>,
    metrics: Rc<FakeMetrics>,
    vm: Rc<VmState>,
    next_id: u32,
}

impl Harness {
    fn new(extra: serde_json::Value) -> Self {
        let mut cfg = json!({
            "keys": [{"id": "k1", "sha256": sha256_hex(KEY.as_bytes()), "tenant": "t1"}],
            "credentials": {"openai": {"env": "OAI"}, "anthropic": {"env": "ANT"}}
        });
        if let (Some(a), Some(b)) = (cfg.as_object_mut(), extra.as_object()) {
            for (k, v) in b {
                a.insert(k.clone(), v.clone());
            }
        }
        let env = |n: &str| match n {
            "OAI" => Some("sk-real-openai".to_string()),
            "ANT" => Some("sk-real-anthropic".to_string()),
            _ => None,
        };
        let config = Rc::new(Config::from_json_with_env(cfg.to_string().as_bytes(), &env).unwrap());
        let store = Rc::new(FakeStore::new());
        config.budgets.init(&*store).unwrap();
        Breaker::init(&*store, config.upstreams.iter().map(|u| u.name.as_str())).unwrap();
        let vm = Rc::new(VmState::new(config.cache.l1_bytes));
        Harness {
            config,
            store,
            clock: Rc::new(FakeClock::at(T0)),
            metrics: Rc::new(FakeMetrics::default()),
            vm,
            next_id: 1,
        }
    }

    fn exchange(&mut self) -> Exchange {
        self.next_id += 1;
        Exchange::new(
            self.next_id,
            self.config.clone(),
            self.metrics.clone(),
            self.store.clone(),
            self.clock.clone(),
            self.vm.clone(),
        )
    }
}

fn headers(path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), "llm".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
        ("authorization".to_string(), format!("Bearer {KEY}")),
    ];
    for (k, v) in extra {
        h.push((k.to_string(), v.to_string()));
    }
    h
}

fn get<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Request headers and body through the exchange; the effects of the body
/// event and its flow.
fn send(ex: &mut Exchange, h: Vec<(String, String)>, body: &serde_json::Value) -> (Flow, Effects) {
    let bytes = body.to_string().into_bytes();
    let f = ex.on_request_headers(h, false);
    let fx = ex.take_effects();
    if f != Flow::Pause || fx.reply.is_some() {
        return (f, fx);
    }
    match ex.request_body_event(bytes.len(), true) {
        Err(f) => (f, ex.take_effects()),
        Ok(()) => {
            let f = ex.on_request_body(&bytes);
            (f, ex.take_effects())
        }
    }
}

fn json_response(ex: &mut Exchange, status: u32, body: &serde_json::Value) -> Effects {
    let h = vec![
        (":status".to_string(), status.to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    assert!(ex.wants_response_headers());
    let f = ex.on_response_headers(h, false);
    let mut fx = ex.take_effects();
    let bytes = body.to_string().into_bytes();
    let n = bytes.len();
    let read = ex.response_body_read(n, true);
    let given = if read == BodyRead::Bytes {
        bytes
    } else {
        Vec::new()
    };
    let _ = f;
    ex.on_response_body(given, n, true);
    let more = ex.take_effects();
    fx.response_headers = more.response_headers.or(fx.response_headers);
    fx.response_body = more.response_body;
    fx.audit = more.audit.or(fx.audit);
    fx
}

fn sse_headers(ex: &mut Exchange) {
    let h = vec![
        (":status".to_string(), "200".to_string()),
        ("content-type".to_string(), "text/event-stream".to_string()),
    ];
    assert_eq!(ex.on_response_headers(h, false), Flow::Continue);
    ex.take_effects();
}

fn sse_chunk(ex: &mut Exchange, data: &str, end: bool) -> Effects {
    let bytes = data.as_bytes().to_vec();
    let n = bytes.len();
    assert_eq!(ex.response_body_read(n, end), BodyRead::Bytes);
    ex.on_response_body(bytes, n, end);
    ex.take_effects()
}

fn openai_chunk(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    )
}

fn chat(text: &str) -> serde_json::Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
}

fn ok_body(text: &str) -> serde_json::Value {
    json!({"id": "x", "object": "chat.completion", "model": "gpt-4o-mini",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
}

fn audit(fx: &Effects) -> serde_json::Value {
    serde_json::from_slice(fx.audit.as_ref().expect("an audit line")).unwrap()
}

#[test]
fn a_missing_key_is_answered_before_the_body_and_audited() {
    let mut h = Harness::new(json!({}));
    let mut ex = h.exchange();
    let mut hs = headers("/v1/chat/completions", &[]);
    hs.retain(|(k, _)| k != "authorization");
    assert_eq!(ex.on_request_headers(hs, false), Flow::Pause);
    let fx = ex.take_effects();
    let reply = fx.reply.clone().unwrap();
    assert_eq!(reply.status, 401);
    assert!(get(&reply.headers, "x-llmgate-request-id").is_some());
    assert_eq!(audit(&fx)["reason"], "missing_api_key");
    assert!(fx.request_headers.is_none());
    // A later body event does nothing.
    assert_eq!(ex.request_body_event(10, true), Err(Flow::Pause));
    ex.on_log(false);
    assert!(ex.take_effects().audit.is_none(), "audited once");
}

#[test]
fn the_happy_path_swaps_credentials_strips_our_headers_and_accounts() {
    let mut h = Harness::new(json!({"response_headers": {"usage": true}}));
    let mut ex = h.exchange();
    let (flow, fx) = send(
        &mut ex,
        headers(
            "/v1/chat/completions",
            &[("x-llmgate-user", "alice"), ("x-llmgate-whatever", "1")],
        ),
        &chat("hi"),
    );
    assert_eq!(flow, Flow::Continue);
    let up = fx.request_headers.expect("headers edited");
    assert_eq!(get(&up, "authorization"), Some("Bearer sk-real-openai"));
    assert!(
        up.iter().all(|(k, _)| !k.starts_with("x-llmgate")),
        "{up:?}"
    );
    assert!(
        fx.request_body.is_none(),
        "an unchanged body is not rewritten"
    );
    let fx = json_response(&mut ex, 200, &ok_body("hello"));
    let rh = fx.response_headers.clone().expect("our response headers");
    assert_eq!(get(&rh, "x-llmgate-upstream"), Some("primary"));
    assert_eq!(get(&rh, "x-llmgate-tokens-in"), Some("5"));
    assert_eq!(get(&rh, "x-llmgate-tokens-out"), Some("2"));
    let a = audit(&fx);
    assert_eq!(a["status"], 200);
    assert_eq!(a["user"], "alice");
    assert_eq!(a["tokens_in"], 5);
    assert_eq!(
        h.metrics
            .counter("llmgate.requests_total.api.openai.model.gpt-4o-mini.outcome.ok"),
        1
    );
}

#[test]
fn without_usage_headers_a_json_response_is_not_paused() {
    let mut h = Harness::new(json!({}));
    let mut ex = h.exchange();
    send(&mut ex, headers("/v1/chat/completions", &[]), &chat("hi"));
    let hs = vec![
        (":status".to_string(), "200".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    assert_eq!(ex.on_response_headers(hs, false), Flow::Continue);
    let fx = ex.take_effects();
    let rh = fx.response_headers.expect("our headers, at once");
    assert!(get(&rh, "x-llmgate-tokens-in").is_none());
    // The body is observed as it passes, for accounting.
    let body = ok_body("hello").to_string().into_bytes();
    let (a, b) = body.split_at(10);
    assert_eq!(ex.response_body_read(a.len(), false), BodyRead::Bytes);
    assert_eq!(
        ex.on_response_body(a.to_vec(), a.len(), false),
        Flow::Continue
    );
    assert!(ex.take_effects().response_body.is_none());
    assert_eq!(
        ex.on_response_body(b.to_vec(), b.len(), true),
        Flow::Continue
    );
    let fx = ex.take_effects();
    assert_eq!(audit(&fx)["tokens_out"], 2);
}

#[test]
fn the_cache_key_is_computed_before_llmgate_adds_include_usage() {
    let mut h = Harness::new(json!({"cache": {"enabled": true}}));
    let body = json!({"model": "gpt-4o-mini", "stream": true, "temperature": 0,
                      "messages": [{"role": "user", "content": "hi"}]});
    let mut ex = h.exchange();
    let (flow, fx) = send(&mut ex, headers("/v1/chat/completions", &[]), &body);
    assert_eq!(flow, Flow::Pause, "waiting for the lookup");
    let path = fx.cache_lookup.expect("a lookup");
    let expected = h
        .config
        .cache
        .key("t1", Api::OpenAi, body.as_object().unwrap(), None);
    assert_eq!(path, cache::lookup_path(&expected));
    // ... while the upstream gets include_usage.
    let sent: serde_json::Value = serde_json::from_slice(&fx.request_body.unwrap()).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    // A timeout of the lookup is a miss (fail open): the request resumes.
    ex.on_cache_answer(None, None);
    let fx = ex.take_effects();
    assert!(fx.resume);
    assert!(fx.reply.is_none());
    assert_eq!(
        h.metrics
            .counter("llmgate.dependency_failures_total.dependency.webdis"),
        1
    );
}

#[test]
fn a_remapped_model_bypasses_the_cache() {
    let mut h = Harness::new(json!({
        "cache": {"enabled": true},
        "upstreams": [{"name": "primary", "model_map": {"gpt-4o-mini": "gpt-4o"}}]
    }));
    let mut ex = h.exchange();
    let mut body = chat("hi");
    body["temperature"] = json!(0);
    let (flow, fx) = send(&mut ex, headers("/v1/chat/completions", &[]), &body);
    assert_eq!(flow, Flow::Continue);
    assert!(fx.cache_lookup.is_none());
    let sent: serde_json::Value = serde_json::from_slice(&fx.request_body.unwrap()).unwrap();
    assert_eq!(sent["model"], "gpt-4o");
    let fx = json_response(&mut ex, 200, &ok_body("x"));
    assert_eq!(
        get(&fx.response_headers.unwrap(), "x-llmgate-cache"),
        Some("bypass")
    );
    assert!(h.vm.stores.borrow().is_empty(), "nothing stored");
}

#[test]
fn a_breaker_probe_is_store_only() {
    let mut h = Harness::new(json!({
        "cache": {"enabled": true},
        "breaker": {"consecutive_failures": 1, "open_s": 1}
    }));
    let mut body = chat("hi");
    body["temperature"] = json!(0);
    // One failure opens the breaker (no fallback: 503 while open).
    let mut ex = h.exchange();
    let (_, fx) = send(&mut ex, headers("/v1/chat/completions", &[]), &body);
    assert!(fx.cache_lookup.is_some());
    ex.on_cache_answer(Some(404), None);
    ex.take_effects();
    json_response(&mut ex, 503, &json!({"error": {"message": "down"}}));
    ex.on_log(false);
    let mut ex = h.exchange();
    let (_, fx) = send(&mut ex, headers("/v1/chat/completions", &[]), &body);
    assert_eq!(fx.reply.unwrap().status, 503);
    // After open_s the next request is the probe: no lookup, but stored.
    h.clock.advance(1500);
    let mut ex = h.exchange();
    let (flow, fx) = send(&mut ex, headers("/v1/chat/completions", &[]), &body);
    assert_eq!(flow, Flow::Continue);
    assert!(fx.cache_lookup.is_none(), "a probe always goes upstream");
    json_response(&mut ex, 200, &ok_body("fresh"));
    assert_eq!(
        h.vm.stores.borrow().len(),
        1,
        "the probe's answer is stored"
    );
}

#[test]
fn a_client_that_goes_away_mid_stream_is_charged_and_trips_nothing() {
    let mut h = Harness::new(json!({
        "keys": [{"id": "k1", "sha256": sha256_hex(KEY.as_bytes()), "tenant": "t1",
                  "limits": {"tokens_per_minute": 100000}}],
        "breaker": {"consecutive_failures": 1, "open_s": 30}
    }));
    let mut ex = h.exchange();
    let mut body = chat("one two three");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(500);
    send(&mut ex, headers("/v1/chat/completions", &[]), &body);
    sse_headers(&mut ex);
    for w in ["alpha ", "beta ", "gamma "] {
        sse_chunk(&mut ex, &openai_chunk(w), false);
    }
    assert!(ex.needs_abort_check());
    ex.on_log(true);
    let fx = ex.take_effects();
    assert_eq!(audit(&fx)["completed"], false);
    assert!(h.metrics.names_with("upstream_failures_total").is_empty());
    // Charged: the estimated input plus 3 delivered tokens, not released.
    let scope = crate::core::budget::ScopeId::Key("k1".into());
    let key = h.config.keys.by_id("k1").unwrap();
    let info = h
        .config
        .budgets
        .peek(&*h.store, &*h.clock, &scope, &key.limits)
        .unwrap();
    let used = 100_000 - info.remaining_tokens.unwrap();
    assert!((3..500).contains(&used), "charged {used}");
    // The breaker is still closed: the next request goes upstream.
    let mut ex = h.exchange();
    let (flow, fx) = send(&mut ex, headers("/v1/chat/completions", &[]), &chat("x"));
    assert_eq!(flow, Flow::Continue);
    assert!(fx.reply.is_none());
}

#[test]
fn an_upstream_reset_counts_as_an_upstream_failure() {
    let mut h = Harness::new(json!({}));
    let mut ex = h.exchange();
    send(&mut ex, headers("/v1/chat/completions", &[]), &chat("x"));
    ex.on_log(false);
    assert_eq!(
        h.metrics
            .counter("llmgate.upstream_failures_total.cluster.primary"),
        1
    );
}

#[test]
fn a_blocked_json_response_is_a_502_and_never_stored() {
    let mut h = Harness::new(json!({
        "cache": {"enabled": true},
        "response_filter": {"enabled": true, "secrets": {"default": "block"}}
    }));
    let mut ex = h.exchange();
    let mut body = chat("x");
    body["temperature"] = json!(0);
    send(&mut ex, headers("/v1/chat/completions", &[]), &body);
    ex.on_cache_answer(Some(404), None);
    ex.take_effects();
    let fx = json_response(
        &mut ex,
        200,
        &ok_body("token ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    );
    let rh = fx.response_headers.unwrap();
    assert_eq!(get(&rh, ":status"), Some("502"));
    let out = String::from_utf8(fx.response_body.unwrap()).unwrap();
    assert!(out.contains("response_blocked") && !out.contains("ghp_"));
    assert!(h.vm.stores.borrow().is_empty());
}

#[test]
fn hostile_requests_are_answered_in_the_callers_shape() {
    let mut h = Harness::new(json!({}));
    // Duplicate keys.
    let mut ex = h.exchange();
    let hs = headers("/v1/chat/completions", &[]);
    ex.on_request_headers(hs, false);
    ex.take_effects();
    let raw = br#"{"model":"m","messages":[],"messages":[]}"#;
    ex.request_body_event(raw.len(), true).unwrap();
    ex.on_request_body(raw);
    let fx = ex.take_effects();
    assert_eq!(fx.reply.unwrap().status, 400);
    // Trailers before the body completed.
    let mut ex = h.exchange();
    ex.on_request_headers(headers("/v1/messages", &[("x-api-key", KEY)]), false);
    ex.take_effects();
    assert_eq!(ex.request_body_event(10, false), Err(Flow::Pause));
    assert_eq!(ex.on_request_trailers(), Flow::Pause);
    let reply = ex.take_effects().reply.unwrap();
    assert_eq!(reply.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["type"], "error");
    // Other paths are denied, other methods refused.
    let mut ex = h.exchange();
    ex.on_request_headers(headers("/v1/embeddings", &[]), false);
    assert_eq!(ex.take_effects().reply.unwrap().status, 404);
    let mut ex = h.exchange();
    let mut hs = headers("//V1/chat%2Fcompletions", &[]);
    hs[0].1 = "GET".into();
    ex.on_request_headers(hs, true);
    assert_eq!(ex.take_effects().reply.unwrap().status, 405);
}

#[test]
fn mutated_requests_never_panic() {
    let mut h =
        Harness::new(json!({"cache": {"enabled": true}, "response_filter": {"enabled": true}}));
    let base = json!({"model": "gpt-4o-mini", "stream": true, "temperature": 0,
                      "messages": [{"role": "user", "content": "hello there"}]})
    .to_string()
    .into_bytes();
    let mut seed: u64 = 42;
    for i in 0..300 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut b = base.clone();
        let pos = (seed >> 33) as usize % b.len();
        b[pos] = (seed >> 11) as u8;
        let mut ex = h.exchange();
        ex.on_request_headers(headers("/v1/chat/completions", &[]), false);
        ex.take_effects();
        if ex.request_body_event(b.len(), true).is_ok() {
            ex.on_request_body(&b);
        }
        ex.take_effects();
        if ex.waiting_cache() {
            ex.on_cache_answer(Some(200), Some(&b));
            ex.take_effects();
        }
        if ex.wants_response_headers() {
            sse_headers(&mut ex);
            let chunk = String::from_utf8_lossy(&b).into_owned();
            ex.on_response_body(chunk.into_bytes(), b.len(), i % 2 == 0);
            ex.take_effects();
        }
        ex.on_log(i % 3 == 0);
        ex.take_effects();
    }
}

#[test]
fn an_openai_client_is_served_by_an_anthropic_upstream() {
    let mut h = Harness::new(json!({
        "upstreams": [{"name": "primary", "api": "anthropic", "model_map": {"gpt-4o-mini": "claude-haiku-4-5"}}]
    }));
    let mut ex = h.exchange();
    let (flow, fx) = send(&mut ex, headers("/v1/chat/completions", &[]), &chat("hi"));
    assert_eq!(flow, Flow::Continue);
    let up = fx.request_headers.unwrap();
    assert_eq!(get(&up, ":path"), Some("/v1/messages"));
    assert_eq!(get(&up, "x-api-key"), Some("sk-real-anthropic"));
    assert!(get(&up, "authorization").is_none());
    let sent: serde_json::Value = serde_json::from_slice(&fx.request_body.unwrap()).unwrap();
    assert_eq!(sent["model"], "claude-haiku-4-5");
    assert!(sent["max_tokens"].as_u64().is_some());
    assert_eq!(sent["messages"][0]["role"], "user");
    let answer = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 1}});
    let fx = json_response(&mut ex, 200, &answer);
    let body: serde_json::Value =
        serde_json::from_slice(&fx.response_body.clone().unwrap()).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "hello");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let a = audit(&fx);
    assert_eq!(a["upstream_api"], "anthropic");
    assert_eq!(a["served_model"], "claude-haiku-4-5");
    assert_eq!(a["tokens_in"], 3);
}

#[test]
fn an_anthropic_stream_reaches_an_openai_client_translated() {
    let mut h = Harness::new(json!({"upstreams": [{"name": "primary", "api": "anthropic"}]}));
    let mut ex = h.exchange();
    let mut body = chat("hi");
    body["stream"] = json!(true);
    send(&mut ex, headers("/v1/chat/completions", &[]), &body);
    sse_headers(&mut ex);
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "m1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5", "content": [], "usage": {"input_tokens": 4, "output_tokens": 0}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hel"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let mut out = String::new();
    let mut audit_line = None;
    let n = events.len();
    for (i, (name, data)) in events.iter().enumerate() {
        let raw = format!("event: {name}\ndata: {data}\n\n");
        // Split each event in two to cross chunk boundaries.
        let (a, b) = raw.split_at(raw.len() / 2);
        for (part, last) in [(a, false), (b, i + 1 == n)] {
            let fx = sse_chunk(&mut ex, part, last);
            if fx.audit.is_some() {
                audit_line = Some(audit(&fx));
            }
            if let Some(bytes) = fx.response_body {
                out.push_str(&String::from_utf8(bytes).unwrap());
            }
        }
    }
    assert!(out.contains("data: [DONE]"), "{out}");
    let text: String = out
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "hello");
    // llmgate added include_usage itself: the usage chunk is counted, not sent.
    assert!(!out.contains("\"usage\":{"), "{out}");
    let a = audit_line.expect("audited at the end of the stream");
    assert_eq!(a["completed"], true);
    assert_eq!(a["tokens_out"], 2);
    assert_eq!(a["upstream_api"], "anthropic");
}

#[test]
fn a_follower_waits_for_its_leader_and_is_accounted_as_coalesced() {
    let mut h = Harness::new(json!({"cache": {"enabled": true, "coalesce": {"enabled": true}}}));
    h.config.cache.coalesce.init(&*h.store).unwrap();
    let mut body = chat("same");
    body["temperature"] = json!(0);
    // The leader: a cache miss, then it goes upstream.
    let mut leader = h.exchange();
    send(&mut leader, headers("/v1/chat/completions", &[]), &body);
    leader.on_cache_answer(Some(404), None);
    assert!(leader.take_effects().resume);
    // The follower: a miss too, but it stays paused.
    let mut follower = h.exchange();
    send(&mut follower, headers("/v1/chat/completions", &[]), &body);
    follower.on_cache_answer(Some(404), None);
    assert!(!follower.take_effects().resume, "the follower waits");
    assert_eq!(h.vm.followers.borrow().len(), 1);
    // The leader's answer is published for it.
    json_response(&mut leader, 200, &ok_body("shared"));
    let f = h.vm.followers.borrow()[0].clone();
    let crate::core::coalesce::Poll::Ready(bytes) = h
        .config
        .cache
        .coalesce
        .poll(&*h.store, &*h.clock, f.slot, &f.key)
    else {
        panic!("the leader published")
    };
    let entry = cache::decode(&bytes).unwrap();
    let reply = coalesced_reply(&entry, &f.request_id);
    assert_eq!(get(&reply.headers, "x-llmgate-cache"), Some("coalesced"));
    // The root answered it: its exchange accounts for a coalesced hit.
    h.vm.followers.borrow_mut().clear();
    h.vm.coalesced
        .borrow_mut()
        .insert(f.context_id, Coalesced::Served(Rc::new(entry)));
    follower.on_log(false);
    let a = audit(&follower.take_effects());
    assert_eq!(a["cache"], "coalesced");
    assert_eq!(a["status"], 200);
    assert_eq!(
        h.metrics.counter("llmgate.cache_total.outcome.coalesced"),
        1
    );
    // A follower whose client left is removed from the list.
    let mut gone = h.exchange();
    let mut other = chat("another");
    other["temperature"] = json!(0);
    let mut lead2 = h.exchange();
    send(&mut lead2, headers("/v1/chat/completions", &[]), &other);
    lead2.on_cache_answer(Some(404), None);
    send(&mut gone, headers("/v1/chat/completions", &[]), &other);
    gone.on_cache_answer(Some(404), None);
    assert_eq!(h.vm.followers.borrow().len(), 1);
    gone.on_log(true);
    assert!(h.vm.followers.borrow().is_empty());
}

// ---------------------------------------------------------------------------
// Semantic cache tier

fn semantic_harness() -> Harness {
    Harness::new(json!({
        "cache": {"enabled": true, "semantic": {"enabled": true, "threshold": 0.9}},
        "pricing": {"models": {"gpt-4o-mini": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                               "text-embedding-3-small": {"input_per_mtok": 1000.0, "output_per_mtok": 0.0}}}
    }))
}

fn resp_hit(entry: &Entry, score: &str) -> Vec<u8> {
    let enc = cache::encode(entry);
    let mut b = format!("*3\r\n${}\r\n{score}\r\n${}\r\n", score.len(), enc.len()).into_bytes();
    b.extend_from_slice(&enc);
    b.extend_from_slice(b"\r\n:0\r\n");
    b
}

const EMBEDDING: &str = r#"{"data":[{"embedding":[0.6,0.8,0.0]}],"usage":{"prompt_tokens":6}}"#;

#[test]
fn an_exact_miss_embeds_searches_and_serves_a_semantic_hit_charged_for_the_embedding() {
    let mut h = semantic_harness();
    let mut ex = h.exchange();
    let (flow, fx) = send(
        &mut ex,
        headers("/v1/chat/completions", &[]),
        &chat("What is the capital of France?"),
    );
    assert_eq!(flow, Flow::Pause);
    assert!(fx.cache_lookup.is_some());
    // Exact miss: the embeddings callout, with the provider credential.
    ex.on_cache_answer(Some(404), Some(b""));
    let fx = ex.take_effects();
    assert!(!fx.resume, "still paused");
    let c = fx.callout.expect("embeddings callout");
    assert_eq!(c.cluster, "embeddings");
    assert_eq!(get(&c.headers, ":path"), Some("/v1/embeddings"));
    assert_eq!(
        get(&c.headers, "authorization"),
        Some("Bearer sk-real-openai")
    );
    let sent: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(sent["input"], "What is the capital of France?");
    assert!(ex.waiting_semantic());
    // The embedding: the vector search.
    ex.on_semantic_answer(Some(200), Some(EMBEDDING.as_bytes()));
    let fx = ex.take_effects();
    let c = fx.callout.expect("search callout");
    assert_eq!(c.cluster, "webdis_vectors");
    assert!(get(&c.headers, ":path").unwrap().starts_with("/EVAL/"));
    assert_eq!(c.body.len(), 12, "3 f32");
    // A hit at cosine 0.96 (VSIM score 0.98).
    let entry = Entry {
        api: Api::OpenAi,
        stream: false,
        content_type: "application/json".into(),
        created_ms: T0 - 5000,
        model: Some("gpt-4o-mini".into()),
        usage: Some(Usage {
            input_tokens: 5,
            output_tokens: 2,
            ..Usage::default()
        }),
        body: ok_body("Paris").to_string().into_bytes(),
    };
    ex.on_semantic_answer(Some(200), Some(&resp_hit(&entry, "0.98")));
    let fx = ex.take_effects();
    let r = fx.reply.clone().expect("answered from the semantic tier");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, entry.body);
    assert_eq!(get(&r.headers, "x-llmgate-cache"), Some("semantic-hit"));
    assert_eq!(
        get(&r.headers, "x-llmgate-cache-similarity"),
        Some("0.9600")
    );
    let a = audit(&fx);
    assert_eq!(a["cache"], "semantic-hit");
    assert_eq!(a["embedding_tokens"], 6);
    assert!(
        (a["cost_usd"].as_f64().unwrap() - 0.006).abs() < 1e-9,
        "{a}"
    );
    assert_eq!(
        h.metrics
            .counter("llmgate.semantic_cache_total.outcome.hit"),
        1
    );
    assert_eq!(
        h.metrics
            .counter("llmgate.tokens_total.model.text-embedding-3-small.direction.in"),
        6
    );
    // The budget saw the embedding tokens.
    assert!(h
        .metrics
        .histograms
        .borrow()
        .iter()
        .any(|(n, v)| n == "llmgate.semantic_similarity_permille" && *v == 960));
}

#[test]
fn a_semantic_miss_goes_upstream_and_stores_both_tiers() {
    let mut h = semantic_harness();
    let mut ex = h.exchange();
    send(
        &mut ex,
        headers("/v1/chat/completions", &[]),
        &chat("What is the capital of Spain?"),
    );
    ex.on_cache_answer(Some(404), Some(b""));
    ex.take_effects();
    ex.on_semantic_answer(Some(200), Some(EMBEDDING.as_bytes()));
    ex.take_effects();
    ex.on_semantic_answer(Some(200), Some(b"*3\r\n$4\r\n0.70\r\n$0\r\n\r\n:1\r\n"));
    let fx = ex.take_effects();
    assert!(fx.resume && fx.reply.is_none());
    let fx = json_response(&mut ex, 200, &ok_body("Madrid"));
    let a = audit(&fx);
    assert_eq!(a["cache"], "semantic-miss");
    assert_eq!(a["embedding_tokens"], 6);
    let stores = h.vm.stores.borrow();
    assert_eq!(stores.len(), 2);
    assert!(stores
        .iter()
        .any(|s| s.semantic && s.path.starts_with("/EVAL/")));
    assert!(stores
        .iter()
        .any(|s| !s.semantic && s.path.starts_with("/SETEX/")));
    assert_eq!(
        h.metrics
            .counter("llmgate.semantic_cache_total.outcome.miss"),
        1
    );
    assert_eq!(
        h.metrics.counter("llmgate.semantic_cache_dangling_total"),
        1
    );
}

#[test]
fn every_semantic_failure_is_a_miss_that_never_fails_the_request() {
    for (embed, search, dep) in [
        (None, None, "embeddings"),
        (Some((500, b"{}".to_vec())), None, "embeddings"),
        (Some((200, b"garbage".to_vec())), None, "embeddings"),
        (
            Some((200, EMBEDDING.as_bytes().to_vec())),
            Some((None, Vec::new())),
            "vectors",
        ),
        (
            Some((200, EMBEDDING.as_bytes().to_vec())),
            Some((Some(200), b"-ERR boom\r\n".to_vec())),
            "vectors",
        ),
        (
            Some((200, EMBEDDING.as_bytes().to_vec())),
            Some((Some(503), Vec::new())),
            "vectors",
        ),
    ] {
        let mut h = semantic_harness();
        let mut ex = h.exchange();
        send(
            &mut ex,
            headers("/v1/chat/completions", &[]),
            &chat("What is the capital of Italy?"),
        );
        ex.on_cache_answer(Some(404), Some(b""));
        ex.take_effects();
        match &embed {
            None => ex.on_semantic_answer(None, None),
            Some((st, b)) => ex.on_semantic_answer(Some(*st), Some(b)),
        }
        let mut fx = ex.take_effects();
        if let Some((st, b)) = &search {
            assert!(fx.callout.is_some());
            ex.on_semantic_answer(*st, Some(b));
            fx = ex.take_effects();
        }
        assert!(fx.resume, "{dep}: resumed");
        assert!(fx.reply.is_none());
        assert!(!ex.waiting_semantic());
        assert_eq!(
            h.metrics.counter(&format!(
                "llmgate.dependency_failures_total.dependency.{dep}"
            )),
            1,
            "{dep}"
        );
        let fx = json_response(&mut ex, 200, &ok_body("Rome"));
        assert_eq!(audit(&fx)["cache"], "semantic-miss");
        // Without an embedding, nothing goes to the semantic tier.
        let semantic_stores = h.vm.stores.borrow().iter().filter(|s| s.semantic).count();
        assert_eq!(semantic_stores, usize::from(search.is_some()));
    }
}

#[test]
fn opt_out_short_questions_and_non_deterministic_requests_skip_the_semantic_tier() {
    let mut h = semantic_harness();
    for (hdrs, body) in [
        (
            vec![("x-llmgate-cache", "no-semantic")],
            chat("What is the capital of France?"),
        ),
        (vec![], chat("hi")),
        (
            vec![],
            json!({"model": "gpt-4o-mini", "temperature": 0.7,
                        "messages": [{"role": "user", "content": "What is the capital of France?"}]}),
        ),
    ] {
        let mut ex = h.exchange();
        let (flow, fx) = send(&mut ex, headers("/v1/chat/completions", &hdrs), &body);
        if fx.cache_lookup.is_some() {
            assert_eq!(flow, Flow::Pause);
            ex.on_cache_answer(Some(404), Some(b""));
            let fx = ex.take_effects();
            assert!(fx.callout.is_none(), "no embeddings call");
            assert!(fx.resume);
        } else {
            assert_eq!(flow, Flow::Continue, "bypass");
            assert!(fx.callout.is_none());
        }
    }
}

#[test]
fn a_failed_embeddings_dispatch_lets_the_request_go_on() {
    let mut h = semantic_harness();
    let mut ex = h.exchange();
    send(
        &mut ex,
        headers("/v1/chat/completions", &[]),
        &chat("What is the capital of Peru?"),
    );
    // The exact lookup could not be dispatched: semantic starts in the body event.
    assert_eq!(ex.on_cache_dispatch_failed(), Flow::Pause);
    let fx = ex.take_effects();
    assert!(fx.callout.is_some());
    assert_eq!(ex.on_semantic_dispatch_failed(false), Flow::Continue);
    assert!(
        !ex.take_effects().resume,
        "the body event returns Continue instead"
    );
    assert_eq!(
        h.metrics
            .counter("llmgate.dependency_failures_total.dependency.embeddings"),
        1
    );
}

#[test]
fn a_semantic_hit_charges_the_embedding_tokens_to_the_key_budget() {
    let limited = || {
        Harness::new(json!({
            "keys": [{"id": "k1", "sha256": sha256_hex(KEY.as_bytes()), "tenant": "t1",
                      "limits": {"tokens_per_minute": 100000}}],
            "cache": {"enabled": true, "semantic": {"enabled": true, "threshold": 0.9}}
        }))
    };
    let remaining_after = |h: &mut Harness| -> u64 {
        let mut ex = h.exchange();
        let (flow, fx) = send(
            &mut ex,
            headers("/v1/chat/completions", &[("x-llmgate-cache", "no-store")]),
            &chat("A plain question afterwards"),
        );
        assert_eq!(flow, Flow::Continue, "{:?}", fx.reply);
        let fx = json_response(&mut ex, 200, &ok_body("ok"));
        get(
            fx.response_headers.as_deref().unwrap_or_default(),
            "x-ratelimit-remaining-tokens",
        )
        .expect("x-ratelimit-remaining-tokens")
        .parse()
        .unwrap()
    };
    // Without a semantic lookup first.
    let mut base = limited();
    let baseline = remaining_after(&mut base);
    // After a semantic hit whose embedding counted 6 tokens.
    let mut h = limited();
    let mut ex = h.exchange();
    send(
        &mut ex,
        headers("/v1/chat/completions", &[]),
        &chat("What is the capital of France?"),
    );
    ex.on_cache_answer(Some(404), Some(b""));
    ex.take_effects();
    ex.on_semantic_answer(Some(200), Some(EMBEDDING.as_bytes()));
    ex.take_effects();
    let entry = Entry {
        api: Api::OpenAi,
        stream: false,
        content_type: "application/json".into(),
        created_ms: T0,
        model: None,
        usage: None,
        body: ok_body("Paris").to_string().into_bytes(),
    };
    ex.on_semantic_answer(Some(200), Some(&resp_hit(&entry, "0.99")));
    assert!(ex.take_effects().reply.is_some());
    assert_eq!(baseline - remaining_after(&mut h), 6);
}

#[test]
fn the_reservation_includes_the_embedding_of_a_semantic_lookup() {
    // A budget with room for the chat estimate exactly: the semantic
    // tier's embedding estimate tips it over, unless the client opts out.
    let mut body = chat("What is the capital of France, in one word?");
    body["max_tokens"] = json!(1);
    let Value::Object(map) = &body else {
        unreachable!()
    };
    let chat_estimate = crate::core::usage::estimate_input_tokens_map(Api::OpenAi, map) + 1;
    let harness = |semantic: bool| {
        Harness::new(json!({
            "keys": [{"id": "k1", "sha256": sha256_hex(KEY.as_bytes()), "tenant": "t1",
                      "limits": {"tokens_per_minute": chat_estimate}}],
            "cache": {"enabled": true, "semantic": {"enabled": semantic, "threshold": 0.9}}
        }))
    };
    let first = |h: &mut Harness, extra: &[(&str, &str)]| {
        let mut ex = h.exchange();
        let (_, fx) = send(&mut ex, headers("/v1/chat/completions", extra), &body);
        fx.reply.map(|r| r.status)
    };
    assert_eq!(first(&mut harness(false), &[]), None, "admitted without it");
    assert_eq!(
        first(&mut harness(true), &[]),
        Some(429),
        "the embedding counts"
    );
    assert_eq!(
        first(&mut harness(true), &[("x-llmgate-cache", "no-semantic")]),
        None,
        "opted out: no embedding"
    );
}

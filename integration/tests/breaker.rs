//! Circuit breaker, fallback upstream and cheap-model routing, through Envoy.

use llmgate_integration::{config, Mock, Options, Request, Stack};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn stack(extra: serde_json::Value) -> Stack {
    let mut v = json!({
        "upstreams": [{"name": "primary"}, {"name": "fallback"}],
        "breaker": {"consecutive_failures": 3, "open_s": 2}
    });
    if let (Some(base), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in more {
            base.insert(k.clone(), val.clone());
        }
    }
    Stack::start(Options::new(&config(v)))
}

fn chat(text: &str) -> Request {
    Request::openai(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}))
}

#[test]
fn failing_primary_trips_the_breaker_then_a_probe_closes_it() {
    let s = stack(json!({}));
    s.mock_control(Mock::Primary, "POST", "/mock/faults", r#"{"status": 503}"#);
    let mut statuses = Vec::new();
    for i in 0..3 {
        let r = s.send(&chat(&format!("fail {i}")));
        statuses.push(r.status);
        assert_eq!(r.header("x-llmgate-upstream"), Some("primary"));
    }
    assert_eq!(statuses, vec![503, 503, 503]);
    // Open: served by the fallback, clients get 200s.
    for i in 0..5 {
        let r = s.send(&chat(&format!("after {i}")));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-mock-name"), Some("fallback"));
        assert_eq!(r.header("x-llmgate-upstream"), Some("fallback"));
    }
    assert_eq!(s.mock_requests(Mock::Fallback), 5);
    assert_eq!(
        s.metric("llmgate_breaker_state", &[("cluster", "primary")]),
        Some(1.0),
        "state gauge: open"
    );
    assert!(
        s.metric(
            "llmgate_breaker_transitions_total",
            &[("cluster", "primary"), ("state", "open")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );

    // Primary healthy again; after open_s one probe closes the breaker.
    s.mock_control(Mock::Primary, "DELETE", "/mock/faults", "");
    std::thread::sleep(Duration::from_millis(2200));
    let r = s.send(&chat("probe"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-mock-name"), Some("primary"));
    let r = s.send(&chat("closed again"));
    assert_eq!(r.header("x-mock-name"), Some("primary"));
    assert_eq!(
        s.metric("llmgate_breaker_state", &[("cluster", "primary")]),
        Some(0.0)
    );
    let audit = s.wait_audit(10);
    assert!(audit.iter().any(|l| l["upstream"] == "fallback"));
}

#[test]
fn exactly_one_probe_goes_out_while_half_open_and_other_workers_reroute() {
    let s = Arc::new(stack(json!({})));
    s.mock_control(Mock::Primary, "POST", "/mock/faults", r#"{"status": 503}"#);
    for i in 0..3 {
        assert_eq!(s.send(&chat(&format!("fail {i}"))).status, 503);
    }
    // Many requests after the breaker opened: every one rerouted, on both
    // workers (each request is a new connection; the kernel spreads them).
    let per_worker = |s: &Stack| -> Vec<f64> {
        (0..2)
            .map(|w| {
                let text = s.prometheus();
                text.lines()
                    .find(|l| {
                        l.starts_with("envoy_listener_worker_downstream_cx_total{")
                            && l.contains(&format!("envoy_worker_id=\"{w}\""))
                    })
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0)
            })
            .collect()
    };
    let before = per_worker(&s);
    for i in 0..30 {
        let r = s.send(&chat(&format!("open {i}")));
        assert_eq!(r.header("x-mock-name"), Some("fallback"));
    }
    let after = per_worker(&s);
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "both workers rerouted: {before:?} -> {after:?}"
    );

    // Half-open with a slow healthy primary: 10 concurrent requests, exactly
    // one reaches the primary.
    s.mock_control(
        Mock::Primary,
        "POST",
        "/mock/faults",
        r#"{"delay_ms": 800}"#,
    );
    std::thread::sleep(Duration::from_millis(2200));
    let before = s.mock_requests(Mock::Primary);
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || s.send(&chat(&format!("half-open {i}"))))
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results.iter().all(|r| r.status == 200));
    let to_primary = results
        .iter()
        .filter(|r| r.header("x-mock-name") == Some("primary"))
        .count();
    assert_eq!(to_primary, 1, "exactly one probe");
    assert_eq!(s.mock_requests(Mock::Primary) - before, 1);
}

#[test]
fn both_upstreams_down_is_503_with_retry_after_in_both_shapes() {
    let s = stack(json!({}));
    s.mock_control(Mock::Primary, "POST", "/mock/faults", r#"{"status": 503}"#);
    s.mock_control(Mock::Fallback, "POST", "/mock/faults", r#"{"status": 503}"#);
    for i in 0..3 {
        s.send(&chat(&format!("p {i}")));
    }
    for i in 0..3 {
        let r = s.send(&chat(&format!("f {i}")));
        assert_eq!(r.header("x-llmgate-upstream"), Some("fallback"));
    }
    let r = s.send(&chat("nothing left"));
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "no_healthy_upstream");
    let retry: u64 = r
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry));
    let r = s.send(&Request::anthropic(json!({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})));
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
}

#[test]
fn fallback_can_rewrite_the_model() {
    let s = stack(json!({
        "upstreams": [{"name": "primary"}, {"name": "fallback", "model_map": {"gpt-4o": "gpt-4o-mini"}}]
    }));
    s.mock_control(Mock::Primary, "POST", "/mock/faults", r#"{"status": 503}"#);
    for i in 0..3 {
        s.send(&chat(&format!("p {i}")));
    }
    let r = s.send(&chat("rerouted"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-llmgate-model"), Some("gpt-4o-mini"));
    assert_eq!(r.json()["model"], "gpt-4o-mini");
    assert_eq!(
        s.mock_json(Mock::Fallback, "/mock/last")["body"]["model"],
        "gpt-4o-mini"
    );
}

#[test]
fn cheap_model_rule_rewrites_the_model() {
    let s = stack(json!({
        "model_routing": [
            {"name": "short-questions", "models": ["gpt-4o"], "max_input_tokens": 50, "no_tools": true, "model": "gpt-4o-mini"}
        ]
    }));
    let r = s.send(&chat("What is 2+2?"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-llmgate-model"), Some("gpt-4o-mini"));
    assert_eq!(
        s.mock_json(Mock::Primary, "/mock/last")["body"]["model"],
        "gpt-4o-mini"
    );
    assert_eq!(r.json()["model"], "gpt-4o-mini");
    let audit = s.wait_audit(1);
    assert_eq!(audit[0]["model"], "gpt-4o");
    assert_eq!(audit[0]["served_model"], "gpt-4o-mini");

    // A long request keeps its model.
    let long = "The quick brown fox jumps over the lazy dog near the river bank. ".repeat(40);
    let r = s.send(&chat(&long));
    assert_eq!(r.header("x-llmgate-model"), Some("gpt-4o"));
    assert_eq!(
        s.mock_json(Mock::Primary, "/mock/last")["body"]["model"],
        "gpt-4o"
    );
}

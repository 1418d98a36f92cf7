//! Response filtering through Envoy: PII and secrets in completions are
//! redacted, also in streams split into tiny pieces, identically.

use llmgate_integration::{config, Mock, Options, Request, Stack};
use serde_json::json;

const REPLY: &str = "Sure! Write to jane.doe@example.com or call +1 415-555-2671. Card 4111 1111 1111 1111. Token ghp_abcdefghijklmnopqrstuvwxyz0123456789 done.";

fn stack(extra: serde_json::Value) -> Stack {
    let mut v = json!({"response_filter": {"enabled": true}});
    if let (Some(a), Some(b)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in b {
            a.insert(k.clone(), val.clone());
        }
    }
    Stack::start(Options::new(&config(v)))
}

fn queue(s: &Stack, n: usize) {
    let replies: Vec<&str> = std::iter::repeat_n(REPLY, n).collect();
    s.mock_control(
        Mock::Primary,
        "POST",
        "/mock/replies",
        &json!({"replies": replies}).to_string(),
    );
}

#[test]
fn completions_are_redacted_identically_streamed_or_not() {
    let s = stack(json!({}));
    for api in ["openai", "anthropic"] {
        let (req, stream_req) = match api {
            "openai" => (
                Request::openai(
                    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "tell me"}]}),
                ),
                Request::openai(
                    json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "tell me"}]}),
                ),
            ),
            _ => (
                Request::anthropic(
                    json!({"model": "claude-haiku-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "tell me"}]}),
                ),
                Request::anthropic(
                    json!({"model": "claude-haiku-4-5", "stream": true, "max_tokens": 100, "messages": [{"role": "user", "content": "tell me"}]}),
                ),
            ),
        };
        queue(&s, 3);
        let r = s.send(&req);
        assert_eq!(r.status, 200);
        let j = r.json();
        let plain = j["choices"][0]["message"]["content"]
            .as_str()
            .or(j["content"][0]["text"].as_str())
            .unwrap()
            .to_string();
        for secret in [
            "jane.doe@example.com",
            "415-555-2671",
            "4111 1111 1111 1111",
            "ghp_abc",
        ] {
            assert!(!plain.contains(secret), "{api}: {plain}");
        }
        assert!(
            plain.contains("[REDACTED_EMAIL]") && plain.contains("[REDACTED_GITHUB_TOKEN]"),
            "{plain}"
        );
        assert_eq!(
            r.header("content-length")
                .map(|l| l.parse::<usize>().unwrap()),
            Some(r.body.len())
        );

        for (h, v) in [("x-mock-chunk-chars", "1"), ("x-mock-write-bytes", "3")] {
            let r = s.send(&stream_req.clone().header(h, v));
            assert_eq!(r.status, 200);
            let streamed = llmgate_integration::sse_text(&r.text());
            assert_eq!(streamed, plain, "{api} with {h}: {v}");
            assert!(!r.text().contains("jane.doe"));
        }
    }
    let audit = s.wait_audit(6);
    assert!(audit.iter().all(|l| l["response_redacted"]
        .as_array()
        .is_some_and(|a| a.iter().any(|e| e == "email"))));
    assert!(s.prometheus().contains("llmgate_response_filter_total"));
}

#[test]
fn block_action_replaces_the_answer_or_ends_the_stream() {
    let s = stack(json!({"response_filter": {"enabled": true, "secrets": {"default": "block"}}}));
    queue(&s, 2);
    let r = s.send(&Request::openai(
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
    ));
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "response_blocked");
    assert!(!r.text().contains("ghp_"));
    let r = s.send(&Request::anthropic(json!({"model": "claude-haiku-4-5", "stream": true, "max_tokens": 100, "messages": [{"role": "user", "content": "x"}]})).header("x-mock-write-bytes", "3"));
    let text = r.text();
    assert!(text.contains("event: error"), "{text}");
    assert!(!text.contains("ghp_"));
    assert!(!text.contains("message_stop"));
}

#[test]
fn filtering_off_leaves_responses_alone() {
    let s = Stack::start(Options::new(&config(json!({}))));
    queue(&s, 1);
    let r = s.send(&Request::openai(
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
    ));
    assert!(r.text().contains("jane.doe@example.com"));
}

// ------------------------------------------------------ issue 14, items 12-14

fn tool_request(api: &str, stream: bool) -> Request {
    let args = r#"{"city":"Paris","contact":"jane.doe@example.com","token":"ghp_abcdefghijklmnopqrstuvwxyz0123456789"}"#;
    let text = format!("TOOL:get_weather {args}");
    match api {
        "openai" => Request::openai(json!({"model": "gpt-4o", "stream": stream,
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "messages": [{"role": "user", "content": text}]})),
        _ => Request::anthropic(
            json!({"model": "claude-haiku-4-5", "stream": stream, "max_tokens": 200,
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": text}]}),
        ),
    }
}

/// The tool-call arguments of a response, streamed or not.
fn tool_arguments(api: &str, body: &str, stream: bool) -> String {
    if !stream {
        let j: serde_json::Value = serde_json::from_str(body).unwrap();
        return match api {
            "openai" => j["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_string(),
            _ => j["content"][0]["input"].to_string(),
        };
    }
    let mut out = String::new();
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
            continue;
        };
        if let Some(calls) = v["choices"][0]["delta"]["tool_calls"].as_array() {
            for c in calls {
                out.push_str(c["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
        if v["delta"]["type"] == "input_json_delta" {
            out.push_str(v["delta"]["partial_json"].as_str().unwrap_or(""));
        }
    }
    out
}

#[test]
fn streamed_tool_call_arguments_are_filtered_at_any_split() {
    // The request guard off: the secrets must reach the mock's tool call.
    let s = stack(json!({"guard": {"disabled": true}}));
    for api in ["openai", "anthropic"] {
        for chars in ["1", "3", "7"] {
            let r = s.send(
                &tool_request(api, true)
                    .header("x-mock-chunk-chars", chars)
                    .header("x-mock-write-bytes", "5"),
            );
            assert_eq!(r.status, 200, "{api}");
            let text = r.text();
            assert!(
                !text.contains("jane.doe@example.com"),
                "{api} {chars}: {text}"
            );
            assert!(
                !text.contains("ghp_abcdefghijklmnopqrstuvwxyz"),
                "{api} {chars}"
            );
            let args = tool_arguments(api, &text, true);
            let parsed: serde_json::Value = serde_json::from_str(&args)
                .unwrap_or_else(|e| panic!("{api} {chars}: {e}: {args}"));
            assert_eq!(parsed["city"], "Paris");
            assert_ne!(parsed["contact"], "jane.doe@example.com");
        }
        let r = s.send(&tool_request(api, false));
        let plain = tool_arguments(api, &r.text(), false);
        assert!(!plain.contains("jane.doe@example.com"), "{api}: {plain}");
    }
}

#[test]
fn an_event_too_large_to_filter_ends_the_stream_with_an_error() {
    let s = stack(json!({"max_body_bytes": 4194304, "guard": {"disabled": true}}));
    let word = format!("x{}jane.doe@example.com", "y".repeat(1_100_000));
    for api in ["openai", "anthropic"] {
        let req = match api {
            "openai" => Request::openai(json!({"model": "gpt-4o", "stream": true,
                "messages": [{"role": "user", "content": format!("REPLY: {word}")}]})),
            _ => Request::anthropic(
                json!({"model": "claude-haiku-4-5", "stream": true, "max_tokens": 10,
                "messages": [{"role": "user", "content": format!("REPLY: {word}")}]}),
            ),
        };
        let r = s.send(&req);
        assert_eq!(r.status, 200);
        let text = r.text();
        assert!(
            !text.contains("jane.doe@example.com"),
            "{api}: unfiltered bytes passed"
        );
        assert!(text.len() < 100_000, "{api}: {} bytes passed", text.len());
        assert!(
            text.contains("response_unfilterable") || text.contains("could not be filtered"),
            "{api}: {text}"
        );
    }
    assert!(s
        .metric(
            "llmgate_response_filter_failures_total",
            &[("reason", "event_too_large")]
        )
        .is_some_and(|v| v >= 2.0));
}

#[test]
fn a_blocked_stream_is_never_cached() {
    let s = stack(json!({
        "response_filter": {"enabled": true, "secrets": {"default": "block"}},
        "cache": {"enabled": true, "ttl_s": 60}
    }));
    let req = Request::openai(json!({"model": "gpt-4o", "stream": true, "temperature": 0,
        "messages": [{"role": "user", "content": "tell me"}]}));
    queue(&s, 2);
    for _ in 0..2 {
        let r = s.send(&req);
        assert_eq!(r.status, 200);
        assert_ne!(r.header("x-llmgate-cache"), Some("hit"));
        let text = r.text();
        assert!(text.contains("response_blocked"), "{text}");
        assert!(!text.contains("ghp_abcdefghijklmnop"));
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert_eq!(s.mock_requests(Mock::Primary), 2);
    let keys = s.redis(&["KEYS", "llmgate:*"]).strings();
    assert!(keys.iter().all(|k| !k.contains("cache")), "{keys:?}");
}

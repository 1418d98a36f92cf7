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

//! Foundation: llmgate loads into real Envoy, rejects bad config, enforces the
//! body limit and request shape in both API formats, and forwards valid
//! requests unchanged, streams included.

use llmgate_integration::{config, Mock, Options, Request, Stack, DEMO_KEY};
use serde_json::json;

fn stack(extra: serde_json::Value) -> Stack {
    Stack::start(Options::new(&config(extra)))
}

#[test]
fn bad_configuration_is_refused_and_names_the_field() {
    let err = Stack::try_start(Options::new(
        r#"{"max_body_bytes": 1024, "no_such_field": true}"#,
    ))
    .err()
    .expect("envoy must refuse the plugin");
    assert!(
        err.contains("no_such_field"),
        "log must name the field:\n{err}"
    );
    assert!(err.contains("llmgate: invalid configuration"), "{err}");

    let err = Stack::try_start(Options::new(r#"{"max_body_bytes": 0}"#))
        .err()
        .expect("envoy must refuse the plugin");
    assert!(err.contains("max_body_bytes"), "{err}");
}

#[test]
fn oversized_body_is_413_in_both_shapes() {
    let s = stack(json!({"max_body_bytes": 2048}));
    let big = "x".repeat(4096);
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": big}]});

    let r = s.send(&Request::openai(body.clone()));
    assert_eq!(r.status, 413);
    let j = r.json();
    assert_eq!(j["error"]["code"], "request_too_large");
    assert_eq!(j["error"]["type"], "invalid_request_error");
    assert!(r.header("x-llmgate-request-id").is_some());

    let r = s.send(&Request::anthropic(body.clone()));
    assert_eq!(r.status, 413);
    let j = r.json();
    assert_eq!(j["type"], "error");
    assert_eq!(j["error"]["type"], "request_too_large");

    // Chunked upload without content-length: caught while buffering.
    let mut req = Request::openai(body);
    req.headers
        .push(("transfer-encoding".into(), "chunked".into()));
    let raw = req.body.clone();
    let mut chunked = Vec::new();
    for piece in raw.chunks(1000) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    req.body = chunked;
    let r = s.send(&req);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    assert_eq!(
        s.mock_requests(Mock::Primary),
        0,
        "nothing may reach the upstream"
    );
}

#[test]
fn malformed_requests_are_400_in_both_shapes() {
    let s = stack(json!({}));
    let cases: Vec<(&[u8], &str)> = vec![
        (b"this is not json", "invalid_json"),
        (b"[1,2,3]", "invalid_request"),
        (br#"{"messages": []}"#, "missing_model"),
        (br#"{"model": "gpt-4o"}"#, "missing_messages"),
        (
            br#"{"model": "gpt-4o", "messages": "hi"}"#,
            "invalid_messages",
        ),
        (b"\xff\xfe\x00garbage", "invalid_json"),
    ];
    for (body, code) in cases {
        let r = s.send(
            &Request::new("POST", "/v1/chat/completions")
                .bearer(DEMO_KEY)
                .body(body),
        );
        assert_eq!(r.status, 400, "{code}");
        assert_eq!(r.json()["error"]["code"], code);
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        assert!(r.header("x-llmgate-request-id").is_some());

        let r = s.send(
            &Request::new("POST", "/v1/messages")
                .header("x-api-key", DEMO_KEY)
                .body(body),
        );
        assert_eq!(r.status, 400, "{code}");
        assert_eq!(r.json()["type"], "error");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    assert_eq!(s.mock_requests(Mock::Primary), 0);
}

#[test]
fn valid_request_reaches_the_mock_unchanged() {
    let s = stack(json!({}));
    // Odd spacing and key order: must arrive byte for byte.
    let raw = br#"{ "messages":[{"role":"user","content":"Hello   there"}],  "model":"gpt-4o-mini", "temperature":0 }"#;
    let r = s.send(
        &Request::new("POST", "/v1/chat/completions")
            .bearer(DEMO_KEY)
            .header("content-type", "application/json")
            .body(raw),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "echo: Hello   there"
    );
    assert_eq!(r.header("x-mock-name"), Some("primary"));
    let id = r.header("x-llmgate-request-id").expect("request id");
    assert!(!id.is_empty());
    let last = s.mock_json(Mock::Primary, "/mock/last");
    assert_eq!(last["path"], "/v1/chat/completions");
    let sent: serde_json::Value = serde_json::from_slice(raw).unwrap();
    assert_eq!(last["body"], sent);
    assert_eq!(last["headers"]["content-length"], raw.len().to_string());

    // The client's request id is kept.
    let r = s.send(&Request::anthropic(json!({"model":"claude-sonnet-4-5","max_tokens":50,"messages":[{"role":"user","content":"Hi"}]})).header("x-request-id", "my-id-123"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-llmgate-request-id"), Some("my-id-123"));
    assert_eq!(r.json()["content"][0]["text"], "echo: Hi");
}

#[test]
fn other_paths_pass_through_untouched_when_configured() {
    let s = stack(json!({"other_paths": "pass"}));
    let r = s.send(&Request::post_json(
        "/v1/embeddings",
        &json!({"model":"e","input":"hello world"}),
    ));
    assert_eq!(r.status, 200);
    assert!(r.header("x-llmgate-request-id").is_none());
    assert_eq!(
        r.json()["data"][0]["embedding"].as_array().map(|a| a.len()),
        Some(64)
    );
    // Not JSON, not our route: untouched, no 400 from llmgate.
    let r = s.send(&Request::new("GET", "/health"));
    assert_eq!(r.status, 200);
    assert!(r.header("x-llmgate-request-id").is_none());
}

#[test]
fn streams_flow_through_in_several_chunks() {
    let s = stack(json!({}));
    let body = json!({"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"one two three four five six seven eight"}]});
    let r = s.send(&Request::openai(body).header("x-mock-write-bytes", "64"));
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/event-stream"));
    assert!(r.header("x-llmgate-request-id").is_some());
    assert!(
        r.chunks.len() >= 3,
        "expected several body chunks, got {}",
        r.chunks.len()
    );
    let text = r.text();
    assert!(text.contains("data: [DONE]"));
    assert!(text.contains("eight"));

    let body = json!({"model":"claude-sonnet-4-5","stream":true,"max_tokens":100,"messages":[{"role":"user","content":"alpha beta gamma delta"}]});
    let r = s.send(&Request::anthropic(body).header("x-mock-write-bytes", "64"));
    assert_eq!(r.status, 200);
    assert!(r.chunks.len() >= 3, "got {}", r.chunks.len());
    let text = r.text();
    assert!(text.contains("event: message_start"));
    assert!(text.contains("event: message_stop"));
}

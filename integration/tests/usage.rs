//! Usage, cost, metrics and the audit log, for JSON responses and for streams
//! split into small pieces.

use llmgate_integration::{config, Options, Request, Stack};
use serde_json::json;

fn stack() -> Stack {
    Stack::start(Options::new(&config(
        json!({"response_headers": {"usage": true}}),
    )))
}

/// Parses an SSE body into its `data:` payloads.
fn data_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(str::to_string)
        .collect()
}

#[test]
fn json_responses_report_tokens_cost_metrics_and_audit() {
    let s = stack();
    // 5 input words; reply "echo: alpha beta gamma delta epsilon" = 6 words.
    let r = s.send(&Request::openai(json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "alpha beta gamma delta epsilon"}]})));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-llmgate-tokens-in"), Some("5"));
    assert_eq!(r.header("x-llmgate-tokens-out"), Some("6"));
    let cost: f64 = r
        .header("x-llmgate-cost-usd")
        .expect("cost header")
        .parse()
        .unwrap();
    assert!(cost > 0.0 && cost < 0.001, "{cost}");
    assert_eq!(r.header("x-llmgate-upstream"), Some("primary"));
    let body = r.json();
    assert_eq!(body["usage"]["prompt_tokens"], 5);

    // Anthropic, response written 3 bytes at a time.
    let r = s.send(&Request::anthropic(json!({"model": "claude-sonnet-4-5", "max_tokens": 50, "system": "be brief", "messages": [{"role": "user", "content": "one two three"}]})).header("x-mock-write-bytes", "3"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-llmgate-tokens-in"), Some("5"));
    assert_eq!(r.header("x-llmgate-tokens-out"), Some("4"));

    let lines = s.wait_audit(2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let a = &lines[0];
    assert_eq!(a["api"], "openai");
    assert_eq!(a["model"], "gpt-4o-mini");
    assert_eq!(a["tokens_in"], 5);
    assert_eq!(a["tokens_out"], 6);
    assert_eq!(a["key_id"], "demo");
    assert_eq!(a["tenant"], "demo");
    assert_eq!(a["status"], 200);
    assert_eq!(a["decision"], "allowed");
    assert_eq!(a["upstream"], "primary");
    assert_eq!(a["stream"], false);
    assert!(a["cost_usd"].as_f64().unwrap() > 0.0);
    assert!(a["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    let text = lines.iter().map(|l| l.to_string()).collect::<String>();
    assert!(!text.contains("alpha"), "no prompt text in the audit log");
    assert!(!text.contains("sk-llmgate-demo"), "no key in the audit log");

    assert_eq!(
        s.metric(
            "llmgate_tokens_total",
            &[("model", "gpt-4o-mini"), ("direction", "in")]
        ),
        Some(5.0)
    );
    assert_eq!(
        s.metric(
            "llmgate_tokens_total",
            &[("model", "gpt-4o-mini"), ("direction", "out")]
        ),
        Some(6.0)
    );
    assert_eq!(
        s.metric(
            "llmgate_tokens_total",
            &[("model", "claude-sonnet-4-5"), ("direction", "out")]
        ),
        Some(4.0)
    );
    assert_eq!(
        s.metric(
            "llmgate_requests_total",
            &[
                ("api", "openai"),
                ("model", "gpt-4o-mini"),
                ("outcome", "ok")
            ]
        ),
        Some(1.0)
    );
    assert!(
        s.metric(
            "llmgate_cost_micro_usd_total",
            &[("model", "gpt-4o-mini"), ("key", "demo")]
        )
        .unwrap()
            > 0.0
    );
}

#[test]
fn openai_stream_usage_without_include_usage_is_hidden_but_counted() {
    let s = stack();
    let r = s.send(
        &Request::openai(json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "héllo wörld ünïcode"}]}))
            .header("x-mock-write-bytes", "3"),
    );
    assert_eq!(r.status, 200);
    assert!(r.chunks.len() > 5);
    let text = r.text();
    let data = data_lines(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let mut content = String::new();
    for d in &data[..data.len() - 1] {
        let v: serde_json::Value = serde_json::from_str(d).expect("each event is valid JSON");
        let choices = v["choices"].as_array().expect("choices");
        assert!(
            !choices.is_empty(),
            "no usage-only chunk for a client that did not ask: {d}"
        );
        content.push_str(choices[0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert_eq!(content, "echo: héllo wörld ünïcode");
    // The mock saw include_usage set by llmgate.
    let last = s.mock_json(llmgate_integration::Mock::Primary, "/mock/last");
    assert_eq!(last["body"]["stream_options"]["include_usage"], true);

    let lines = s.wait_audit(1);
    assert_eq!(lines[0]["tokens_in"], 3);
    assert_eq!(lines[0]["tokens_out"], 4);
    assert_eq!(lines[0]["stream"], true);
    assert_eq!(lines[0]["completed"], true);
    assert!(lines[0]["ttft_ms"].as_u64().is_some());
    assert_eq!(
        s.metric(
            "llmgate_tokens_total",
            &[("model", "gpt-4o"), ("direction", "out")]
        ),
        Some(4.0)
    );
}

#[test]
fn openai_stream_with_include_usage_keeps_the_usage_chunk() {
    let s = stack();
    let r = s.send(
        &Request::openai(json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "a b c"}]}))
            .header("x-mock-write-bytes", "7"),
    );
    assert_eq!(r.status, 200);
    let data = data_lines(&r.text());
    let usage_chunk = data
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .find(|v| v["choices"].as_array().is_some_and(|c| c.is_empty()))
        .expect("usage chunk present");
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 3);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 4);
    let lines = s.wait_audit(1);
    assert_eq!(lines[0]["tokens_out"], 4);
}

#[test]
fn anthropic_stream_split_into_small_pieces_counts_exactly() {
    let s = stack();
    let r = s.send(
        &Request::anthropic(json!({"model": "claude-haiku-4-5", "stream": true, "max_tokens": 100, "messages": [{"role": "user", "content": "REPLY: one two three four five six"}]}))
            .header("x-mock-write-bytes", "3")
            .header("x-mock-chunk-chars", "2"),
    );
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("event: message_stop"));
    let lines = s.wait_audit(1);
    assert_eq!(lines[0]["tokens_in"], 7);
    assert_eq!(lines[0]["tokens_out"], 6);
    assert_eq!(lines[0]["api"], "anthropic");
    assert!(lines[0]["cost_usd"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_reset_mid_stream_still_writes_an_audit_line() {
    let s = stack();
    let r = s.send(
        &Request::openai(json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "one two three four five six seven eight nine ten"}]}))
            .header("x-mock-reset-after-chunks", "3"),
    );
    assert!(r.truncated || r.status != 200 || !r.text().contains("[DONE]"));
    let lines = s.wait_audit(1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["completed"], false);
    assert_eq!(lines[0]["decision"], "failed");
    // Envoy and llmgate survive: the next request works.
    let r = s.send(&Request::openai(
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "still alive"}]}),
    ));
    assert_eq!(r.status, 200);
}

#[test]
fn a_model_without_a_price_counts_as_cost_unknown() {
    let s = stack();
    let r = s.send(&Request::openai(
        json!({"model": "my-private-model", "messages": [{"role": "user", "content": "x y"}]}),
    ));
    assert_eq!(r.status, 200);
    assert!(r.header("x-llmgate-cost-usd").is_none());
    assert_eq!(r.header("x-llmgate-tokens-in"), Some("2"));
    let lines = s.wait_audit(1);
    assert!(lines[0]["cost_usd"].is_null());
    // A model the configuration does not name is labelled `other`.
    assert_eq!(
        s.metric("llmgate_cost_unknown_total", &[("model", "other")]),
        Some(1.0)
    );
}

//! Issue 19: cross-provider translation through Envoy. The mock LLM speaks
//! both APIs; an upstream declared `"api": "anthropic"` is sent Anthropic
//! requests on `/v1/messages` even when the client speaks OpenAI, and back.

use llmgate_integration::{config, sse_text, Mock, Options, Request, Stack};
use serde_json::{json, Value};

fn stack(extra: Value) -> Stack {
    Stack::start(Options::new(&config(extra)))
}

fn data_events(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

fn weather_tools_openai() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
}

#[test]
fn an_openai_client_is_answered_by_an_anthropic_upstream() {
    let s = stack(json!({
        "upstreams": [{"name": "primary", "api": "anthropic", "model_map": {"gpt-4o-mini": "claude-haiku-4-5"}}]
    }));
    let r = s.send(&Request::openai(json!({"model": "gpt-4o-mini", "max_tokens": 50,
        "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hello there"}]})));
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["object"], "chat.completion");
    assert_eq!(j["choices"][0]["message"]["content"], "echo: hello there");
    assert_eq!(j["choices"][0]["finish_reason"], "stop");
    assert_eq!(j["usage"]["completion_tokens"], 3);
    let last = s.mock_json(Mock::Primary, "/mock/last");
    assert_eq!(last["path"], "/v1/messages");
    assert_eq!(last["body"]["system"], "be nice");
    assert_eq!(last["body"]["model"], "claude-haiku-4-5");
    assert_eq!(last["headers"]["x-api-key"], "sk-ant-provider-test");
    assert!(last["headers"].get("authorization").is_none());

    // Streaming, in OpenAI chunks ending with [DONE].
    let r = s.send(
        &Request::openai(
            json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 50,
        "messages": [{"role": "user", "content": "REPLY: one two three"}]}),
        )
        .header("x-mock-write-bytes", "7"),
    );
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("data: [DONE]"), "{text}");
    assert_eq!(sse_text(&text), "one two three");
    assert!(
        !text.contains("event: "),
        "no Anthropic event names leak: {text}"
    );

    // The audit line names both sides.
    let lines = s.wait_audit(2);
    assert_eq!(lines[0]["upstream_api"], "anthropic");
    assert_eq!(lines[0]["model"], "gpt-4o-mini");
    assert_eq!(lines[0]["served_model"], "claude-haiku-4-5");
}

#[test]
fn a_tool_call_round_trip_across_providers_streamed_and_not() {
    let s = stack(json!({"upstreams": [{"name": "primary", "api": "anthropic"}]}));
    for stream in [false, true] {
        let r = s.send(&Request::openai(
            json!({"model": "claude-haiku-4-5", "stream": stream, "max_tokens": 100,
            "tools": weather_tools_openai(),
            "messages": [{"role": "user", "content": "TOOL:get_weather {\"city\":\"Paris\"}"}]}),
        ));
        assert_eq!(r.status, 200, "{}", r.text());
        let (id, args, finish) = if stream {
            let mut id = String::new();
            let mut args = String::new();
            let mut finish = String::new();
            for ev in data_events(&r.text()) {
                for c in ev["choices"][0]["delta"]["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if let Some(i) = c["id"].as_str() {
                        id = i.to_string();
                    }
                    args.push_str(c["function"]["arguments"].as_str().unwrap_or(""));
                }
                if let Some(f) = ev["choices"][0]["finish_reason"].as_str() {
                    finish = f.to_string();
                }
            }
            (id, args, finish)
        } else {
            let j = r.json();
            let call = &j["choices"][0]["message"]["tool_calls"][0];
            (
                call["id"].as_str().unwrap().to_string(),
                call["function"]["arguments"].as_str().unwrap().to_string(),
                j["choices"][0]["finish_reason"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        };
        assert_eq!(finish, "tool_calls");
        let parsed: Value = serde_json::from_str(&args).unwrap();
        assert_eq!(parsed["city"], "Paris");
        // The tool result goes back; the final answer comes in OpenAI shape.
        let r = s.send(&Request::openai(json!({"model": "claude-haiku-4-5", "max_tokens": 100,
            "tools": weather_tools_openai(),
            "messages": [
                {"role": "user", "content": "TOOL:get_weather {\"city\":\"Paris\"}"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function", "function": {"name": "get_weather", "arguments": args}}]},
                {"role": "tool", "tool_call_id": id, "content": "sunny, 21 C"}
            ]})));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.json()["choices"][0]["message"]["content"],
            "tool result: sunny, 21 C"
        );
        let last = s.mock_json(Mock::Primary, "/mock/last");
        assert_eq!(
            last["body"]["messages"][2]["content"][0]["type"],
            "tool_result"
        );
    }
}

#[test]
fn an_anthropic_client_is_answered_by_an_openai_upstream() {
    let s = stack(json!({"upstreams": [{"name": "primary", "api": "openai"}]}));
    let r = s.send(&Request::anthropic(
        json!({"model": "gpt-4o-mini", "max_tokens": 50, "system": "terse",
        "messages": [{"role": "user", "content": "hi there"}]}),
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["type"], "message");
    assert_eq!(j["content"][0]["text"], "echo: hi there");
    assert_eq!(j["stop_reason"], "end_turn");
    let last = s.mock_json(Mock::Primary, "/mock/last");
    assert_eq!(last["path"], "/v1/chat/completions");
    assert_eq!(last["body"]["messages"][0]["role"], "system");
    assert_eq!(
        last["headers"]["authorization"],
        "Bearer sk-provider-openai-test"
    );
    let r = s.send(&Request::anthropic(
        json!({"model": "gpt-4o-mini", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "REPLY: alpha beta"}]}),
    ));
    let text = r.text();
    assert!(text.contains("event: message_start"), "{text}");
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(!text.contains("[DONE]"));
    assert_eq!(sse_text(&text), "alpha beta");
    // Upstream errors come back in the client's shape.
    let r = s.send(
        &Request::anthropic(json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
            .header("x-mock-status", "429"),
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    // A field that cannot be translated is refused by name, in the client's shape.
    let s = stack(json!({"upstreams": [{"name": "primary", "api": "anthropic"}]}));
    let r = s.send(&Request::openai(
        json!({"model": "m", "n": 3, "messages": [{"role": "user", "content": "x"}]}),
    ));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains('n'));
    assert_eq!(s.mock_requests(Mock::Primary), 0);
}

#[test]
fn breaker_fallback_from_openai_to_anthropic_keeps_the_clients_api() {
    let s = stack(json!({
        "upstreams": [{"name": "primary"}, {"name": "fallback", "api": "anthropic", "model_map": {"*": "claude-haiku-4-5"}}],
        "breaker": {"consecutive_failures": 2, "open_s": 30}
    }));
    s.mock_control(Mock::Primary, "POST", "/mock/faults", r#"{"status": 503}"#);
    for _ in 0..2 {
        s.send(&Request::openai(
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
        ));
    }
    let r = s.send(&Request::openai(
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "after"}]}),
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-llmgate-upstream"), Some("fallback"));
    assert_eq!(r.json()["choices"][0]["message"]["content"], "echo: after");
    let last = s.mock_json(Mock::Fallback, "/mock/last");
    assert_eq!(last["path"], "/v1/messages");
    let r = s.send(&Request::openai(json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "REPLY: streamed answer"}]})));
    assert_eq!(r.header("x-llmgate-upstream"), Some("fallback"));
    assert_eq!(sse_text(&r.text()), "streamed answer");
    assert!(r.text().contains("data: [DONE]"));
}

/// The official Python SDKs (installed into `.venv` by `make test`).
fn sdk(which: &str, s: &Stack) {
    let python = llmgate_integration::repo_root().join(".venv/bin/python");
    let script = llmgate_integration::repo_root().join("integration/sdk/translation_sdk.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(which)
        .arg(s.url())
        .arg(llmgate_integration::DEMO_KEY)
        .output()
        .expect("python from .venv (make test installs the SDKs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "{which} SDK: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_official_sdks_work_across_providers() {
    let s = stack(json!({"upstreams": [{"name": "primary", "api": "anthropic"}]}));
    sdk("openai", &s);
    let s = stack(json!({"upstreams": [{"name": "primary", "api": "openai"}]}));
    sdk("anthropic", &s);
}

#[test]
fn translated_requests_are_counted() {
    let s = stack(json!({"upstreams": [{"name": "primary", "api": "anthropic"}]}));
    s.send(&Request::openai(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    ));
    assert_eq!(
        s.metric(
            "llmgate_translated_total",
            &[("from", "openai"), ("to", "anthropic")]
        ),
        Some(1.0)
    );
}

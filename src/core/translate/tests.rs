//! Tests of the translators: hand-written fixtures in the documented wire
//! formats of both APIs, round trips, streams split at every byte, and
//! hostile inputs (nothing may panic).

use serde_json::{json, Map, Value};

use super::*;
use crate::core::api::Api;
use crate::core::sse::tests::{crlf, Rng, ANTHROPIC_STREAM, OPENAI_STREAM};
use crate::core::sse::{SseEvent, SseParser};
use crate::core::usage::{self, StreamTracker, Verdict};

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn opts() -> RequestOptions {
    RequestOptions {
        default_max_tokens: 1000,
    }
}

fn o2a(v: Value) -> Result<TranslatedRequest, crate::core::api::ApiError> {
    translate_request(Api::OpenAi, Api::Anthropic, &obj(v), &opts())
}

fn a2o(v: Value) -> Result<TranslatedRequest, crate::core::api::ApiError> {
    translate_request(Api::Anthropic, Api::OpenAi, &obj(v), &opts())
}

// ------------------------------------------------------------------ requests

fn openai_request() -> Value {
    json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [
                {"type": "text", "text": "What's in this image, and the weather in Paris?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_abc123", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_def456", "type": "function",
                 "function": {"name": "get_time", "arguments": "{\"tz\":\"Europe/Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_abc123", "content": "18\u{b0}C, sunny"},
            {"role": "tool", "tool_call_id": "call_def456", "content": "14:05"},
            {"role": "user", "content": "Thanks!"}
        ],
        "max_completion_tokens": 512,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["\n\nHuman:"],
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "user-42",
        "tools": [
            {"type": "function", "function": {
                "name": "get_weather", "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                "strict": true}},
            {"type": "function", "function": {
                "name": "get_time",
                "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "seed": 7,
        "n": 1,
        "logprobs": false
    })
}

#[test]
fn openai_request_to_anthropic() {
    let t = o2a(openai_request()).unwrap();
    assert!(t.stream);
    assert!(t.include_usage);
    assert_eq!(t.dropped, ["seed"]);
    assert_eq!(
        Value::Object(t.body),
        json!({
            "model": "gpt-4o",
            "system": "You are a helpful assistant.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What's in this image, and the weather in Paris?"},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_abc123", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_def456", "name": "get_time", "input": {"tz": "Europe/Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_abc123", "content": "18\u{b0}C, sunny"},
                    {"type": "tool_result", "tool_use_id": "call_def456", "content": "14:05"},
                    {"type": "text", "text": "Thanks!"}
                ]}
            ],
            "max_tokens": 512,
            "temperature": 0.7,
            "top_p": 0.9,
            "stop_sequences": ["\n\nHuman:"],
            "stream": true,
            "metadata": {"user_id": "user-42"},
            "tools": [
                {"name": "get_weather", "description": "Current weather",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "get_time",
                 "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}}
            ],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true}
        })
    );
}

fn anthropic_request() -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [
            {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Answer in French."}
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                {"type": "text", "text": "Weather?"}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I need the tool.", "signature": "EqQBCgIYAhIM"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A",
                 "content": [{"type": "text", "text": "18\u{b0}C"}]},
                {"type": "text", "text": "And tomorrow?", "cache_control": {"type": "ephemeral"}}
            ]},
            {"role": "assistant", "content": "Probably similar."},
            {"role": "user", "content": "ok"}
        ],
        "temperature": 0.5,
        "top_k": 40,
        "stop_sequences": ["END"],
        "stream": true,
        "metadata": {"user_id": "u-1"},
        "tools": [{
            "name": "get_weather", "description": "Weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            "cache_control": {"type": "ephemeral"}
        }],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "thinking": {"type": "enabled", "budget_tokens": 2000}
    })
}

#[test]
fn anthropic_request_to_openai() {
    let t = a2o(anthropic_request()).unwrap();
    assert!(t.stream);
    assert!(!t.include_usage);
    assert_eq!(t.dropped, ["thinking", "top_k"]);
    assert_eq!(
        Value::Object(t.body),
        json!({
            "model": "claude-sonnet-4-5",
            "max_completion_tokens": 1024,
            "messages": [
                {"role": "system", "content": "You are terse.\nAnswer in French."},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                    {"type": "text", "text": "Weather?"}
                ]},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [
                    {"id": "toolu_01A", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_01A", "content": "18\u{b0}C"},
                {"role": "user", "content": "And tomorrow?"},
                {"role": "assistant", "content": "Probably similar."},
                {"role": "user", "content": "ok"}
            ],
            "temperature": 0.5,
            "stop": ["END"],
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "u-1",
            "tools": [{"type": "function", "function": {
                "name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false
        })
    );
}

#[test]
fn request_round_trips() {
    // OpenAI → Anthropic → OpenAI gives the same conversation.
    let original = json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "TOOL:get_weather {\"city\":\"Paris\"}"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "assistant", "content": "It is sunny."},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGR"}}]}
        ],
        "max_completion_tokens": 50,
        "temperature": 0.25,
        "stop": ["x", "y"],
        "user": "u",
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                   "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false
    });
    let there = o2a(original.clone()).unwrap();
    let back = translate_request(Api::Anthropic, Api::OpenAi, &there.body, &opts()).unwrap();
    assert_eq!(Value::Object(back.body), original);

    // Anthropic → OpenAI → Anthropic likewise (system as a string, no
    // dropped fields).
    let original = json!({
        "model": "claude",
        "max_tokens": 300,
        "system": "be brief",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"a": [1, 2]}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_9", "content": "done"},
                {"type": "text", "text": "thanks"}]},
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://x.test/i.png"}}]}
        ],
        "stop_sequences": ["S"],
        "temperature": 1,
        "top_p": 0.5,
        "metadata": {"user_id": "abc"},
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": true}
    });
    let there = a2o(original.clone()).unwrap();
    let back = translate_request(Api::OpenAi, Api::Anthropic, &there.body, &opts()).unwrap();
    // The two consecutive user turns come back merged: Anthropic alternates.
    let mut expected = original.clone();
    expected["messages"] = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "calling"},
            {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"a": [1, 2]}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_9", "content": "done"},
            {"type": "text", "text": "thanks"},
            {"type": "image", "source": {"type": "url", "url": "https://x.test/i.png"}}]}
    ]);
    assert_eq!(Value::Object(back.body), expected);
}

#[test]
fn system_prompts_and_defaults() {
    // Several system/developer messages, anywhere: hoisted, in order.
    let t = o2a(json!({"model": "m", "messages": [
        {"role": "developer", "content": "one"},
        {"role": "user", "content": "q"},
        {"role": "system", "content": [{"type": "text", "text": "two"}, {"type": "text", "text": "three"}]}
    ]}))
    .unwrap();
    assert_eq!(
        t.body["system"],
        json!([{"type": "text", "text": "one"}, {"type": "text", "text": "two"}, {"type": "text", "text": "three"}])
    );
    assert_eq!(
        t.body["messages"],
        json!([{"role": "user", "content": "q"}])
    );
    // No limit in the request: the default; `max_tokens` used when alone.
    assert_eq!(t.body["max_tokens"], 1000);
    assert!(!t.body.contains_key("system_fingerprint"));
    let t = o2a(json!({"model": "m", "max_tokens": 77, "messages": []})).unwrap();
    assert_eq!(t.body["max_tokens"], 77);
    assert!(!t.body.contains_key("system"));
    // Temperature clamped to Anthropic's range.
    let t = o2a(json!({"model": "m", "temperature": 1.6, "messages": []})).unwrap();
    assert_eq!(t.body["temperature"], 1.0);
    // Empty stop strings are left out.
    let t = o2a(json!({"model": "m", "stop": "", "messages": []})).unwrap();
    assert!(!t.body.contains_key("stop_sequences"));
    let t = o2a(json!({"model": "m", "stop": ["", "X"], "messages": []})).unwrap();
    assert_eq!(t.body["stop_sequences"], json!(["X"]));
    // include_usage only matters for streams.
    let t = o2a(json!({"model": "m", "stream_options": {"include_usage": true}, "messages": []}))
        .unwrap();
    assert!(!t.include_usage && !t.stream);
    // tool_choice none keeps parallel settings out; required → any.
    let t = o2a(json!({"model": "m", "messages": [], "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": "none", "parallel_tool_calls": false}))
    .unwrap();
    assert_eq!(t.body["tool_choice"], json!({"type": "none"}));
    assert_eq!(
        t.body["tools"],
        json!([{"name": "f", "input_schema": {"type": "object", "properties": {}}}])
    );
    let t = o2a(json!({"model": "m", "messages": [], "tool_choice": "required"})).unwrap();
    assert_eq!(t.body["tool_choice"], json!({"type": "any"}));
    // Anthropic system string → one system message; no stream options
    // without stream.
    let t = a2o(
        json!({"model": "m", "max_tokens": 5, "system": "s", "messages": [
        {"role": "user", "content": "u"}]}),
    )
    .unwrap();
    assert_eq!(
        t.body["messages"],
        json!([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    );
    assert!(!t.body.contains_key("stream_options"));
    // Assistant tool results only: no empty user message.
    let t = a2o(json!({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r1"},
                                     {"type": "tool_result", "tool_use_id": "t2"}]}]}))
    .unwrap();
    assert_eq!(
        t.body["messages"],
        json!([{"role": "tool", "tool_call_id": "t1", "content": "r1"},
               {"role": "tool", "tool_call_id": "t2", "content": ""}])
    );
    // Same API: the body as is.
    let body = obj(openai_request());
    let t = translate_request(Api::OpenAi, Api::OpenAi, &body, &opts()).unwrap();
    assert_eq!(t.body, body);
    assert!(t.include_usage && t.stream);
}

#[test]
fn refused_fields_name_the_field() {
    let base = |extra: Value| {
        let mut m = obj(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        m.extend(obj(extra));
        Value::Object(m)
    };
    for (extra, field) in [
        (json!({"n": 2}), "`n`"),
        (json!({"logprobs": true}), "`logprobs`"),
        (json!({"logit_bias": {"50256": -100}}), "`logit_bias`"),
        (
            json!({"response_format": {"type": "json_object"}}),
            "`response_format`",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}),
            "`response_format`",
        ),
        (json!({"modalities": ["text", "audio"]}), "`modalities`"),
        (json!({"audio": {"voice": "alloy"}}), "`audio`"),
        (json!({"functions": [{"name": "f"}]}), "`functions`"),
        (json!({"function_call": "auto"}), "`function_call`"),
        (json!({"web_search_options": {}}), "`web_search_options`"),
        (
            json!({"tools": [{"type": "custom", "custom": {"name": "x"}}]}),
            "`tools[0].type`",
        ),
        (
            json!({"tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}),
            "`tool_choice`",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "`messages[0].content[0].type`",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]}),
            "`messages[0].content[0].type`",
        ),
        (
            json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}),
            "`messages[0].role`",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
            "`messages[0].content[0].image_url.url`",
        ),
    ] {
        let e = o2a(base(extra.clone())).unwrap_err();
        assert_eq!(e.status, 400, "{extra}");
        assert_eq!(e.code, "unsupported_field", "{extra}");
        assert!(e.message.contains(field), "{extra}: {}", e.message);
    }
    for (extra, field) in [
        (json!({"max_tokens": 0}), "`max_tokens`"),
        (
            json!({"max_completion_tokens": -5}),
            "`max_completion_tokens`",
        ),
        (json!({"max_tokens": 1.5}), "`max_tokens`"),
        (json!({"temperature": "hot"}), "`temperature`"),
        (json!({"stop": [1]}), "`stop`"),
        (json!({"stream": "yes"}), "`stream`"),
        (json!({"messages": "hi"}), "`messages`"),
        (
            json!({"messages": [{"content": "x"}]}),
            "`messages[0].role`",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "`messages[0].tool_call_id`",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": "{not json"}}]}]}),
            "`messages[0].tool_calls[0].function.arguments`",
        ),
        (
            json!({"tools": [{"type": "function"}]}),
            "`tools[0].function`",
        ),
    ] {
        let e = o2a(base(extra.clone())).unwrap_err();
        assert_eq!((e.status, e.code), (400, "invalid_request"), "{extra}");
        assert!(e.message.contains(field), "{extra}: {}", e.message);
    }
    // Harmless fields are dropped, and listed.
    let t = o2a(base(
        json!({"n": 1, "logprobs": false, "seed": 1, "frequency_penalty": 0.5,
        "response_format": {"type": "text"}, "logit_bias": {}, "modalities": ["text"],
        "store": true, "some_future_field": 1}),
    ))
    .unwrap();
    assert_eq!(
        t.dropped,
        ["frequency_penalty", "seed", "some_future_field", "store"]
    );

    let base = |extra: Value| {
        let mut m = obj(
            json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
        );
        m.extend(obj(extra));
        Value::Object(m)
    };
    for (extra, field) in [
        (
            json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
            "`tools[0].type`",
        ),
        (json!({"mcp_servers": [{"url": "x"}]}), "`mcp_servers`"),
        (json!({"container": "c"}), "`container`"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}),
            "`messages[0].content[0].type`",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}),
            "`messages[0].content[0].source.type`",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                "content": [{"type": "image", "source": {}}]}]}]}),
            "`messages[0].content[0].content[0].type`",
        ),
        (json!({"system": [{"type": "image"}]}), "`system[0].type`"),
    ] {
        let e = a2o(base(extra.clone())).unwrap_err();
        assert_eq!((e.status, e.code), (400, "unsupported_field"), "{extra}");
        assert!(e.message.contains(field), "{extra}: {}", e.message);
    }
    for extra in [
        json!({"max_tokens": "10"}),
        json!({"messages": [{"role": "system", "content": "x"}]}),
        json!({"messages": [{"role": "user", "content": 5}]}),
        json!({"tool_choice": {"type": "tool"}}),
        json!({"tools": [{"name": "f"}]}),
        json!({"metadata": {"user_id": 5}}),
        json!({"system": 5}),
    ] {
        let e = a2o(base(extra.clone())).unwrap_err();
        assert_eq!((e.status, e.code), (400, "invalid_request"), "{extra}");
    }
}

// ------------------------------------------------------------------ responses

const ANTHROPIC_MESSAGE: &str = r#"{"id":"msg_01Aq9w938a90dw8q","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"thinking","thinking":"The user wants weather.","signature":"EqQBCgIYAhIM1gbcDa9GJwZA"},{"type":"text","text":"I'll check the weather in Paris."},{"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{"city":"Paris","unit":"celsius"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":1024,"output_tokens":89,"service_tier":"standard"}}"#;

const OPENAI_COMPLETION: &str = r#"{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_12345xyz","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris, France\"}"}}],"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}"#;

fn ropts() -> ResponseOptions {
    ResponseOptions {
        created: 1_750_000_000,
        model: None,
        include_usage: true,
    }
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn anthropic_message_to_openai() {
    let r = translate_response(
        Api::OpenAi,
        Api::Anthropic,
        200,
        ANTHROPIC_MESSAGE.as_bytes(),
        &ropts(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        json_of(&r.body),
        json!({
            "id": "msg_01Aq9w938a90dw8q",
            "object": "chat.completion",
            "created": 1_750_000_000u64,
            "model": "claude-sonnet-4-5-20250929",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "I'll check the weather in Paris.",
                    "refusal": null,
                    "tool_calls": [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"celsius\"}"}}]
                },
                "logprobs": null,
                "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": 1496, "completion_tokens": 89, "total_tokens": 1585,
                      "prompt_tokens_details": {"cached_tokens": 1024}}
        })
    );
    // llmgate's own usage accounting agrees on both sides.
    let a = usage::parse_response(Api::Anthropic, ANTHROPIC_MESSAGE.as_bytes()).unwrap();
    let o = usage::parse_response(Api::OpenAi, &r.body).unwrap();
    assert_eq!(a.usage, o.usage);
    assert_eq!(a.model, o.model);
}

#[test]
fn openai_completion_to_anthropic() {
    let r = translate_response(
        Api::Anthropic,
        Api::OpenAi,
        200,
        OPENAI_COMPLETION.as_bytes(),
        &ResponseOptions {
            model: Some("claude-as-asked".into()),
            ..ropts()
        },
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        json_of(&r.body),
        json!({
            "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "type": "message",
            "role": "assistant",
            "model": "claude-as-asked",
            "content": [{"type": "tool_use", "id": "call_12345xyz", "name": "get_weather",
                         "input": {"location": "Paris, France"}}],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {"input_tokens": 93, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 1024, "output_tokens": 46}
        })
    );
    let a = usage::parse_response(Api::Anthropic, &r.body).unwrap();
    let o = usage::parse_response(Api::OpenAi, OPENAI_COMPLETION.as_bytes()).unwrap();
    assert_eq!(a.usage, o.usage);
}

#[test]
fn response_round_trips_and_stop_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
    ] {
        let msg = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "c",
            "content": [{"type": "text", "text": "Hello \u{1f600}"}], "stop_reason": stop,
            "stop_sequence": null,
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 5, "output_tokens": 3}});
        let oa = translate_response(
            Api::OpenAi,
            Api::Anthropic,
            200,
            msg.to_string().as_bytes(),
            &ropts(),
        );
        assert_eq!(json_of(&oa.body)["choices"][0]["finish_reason"], finish);
        let back = translate_response(Api::Anthropic, Api::OpenAi, 200, &oa.body, &ropts());
        let back = json_of(&back.body);
        assert_eq!(back["content"], msg["content"]);
        assert_eq!(back["usage"], msg["usage"]);
        if stop != "stop_sequence" && stop != "refusal" {
            assert_eq!(back["stop_reason"], stop);
        }
    }
    // A refusal from OpenAI.
    let body = br#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
    let r = json_of(&translate_response(Api::Anthropic, Api::OpenAi, 200, body, &ropts()).body);
    assert_eq!(r["stop_reason"], "refusal");
    assert_eq!(r["content"][0]["text"], "I can't help with that.");
    // Tool arguments that are not a JSON object: 502 in the client's shape.
    let body = br#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","tool_calls":[{"id":"x","type":"function","function":{"name":"f","arguments":"{oops"}}]},"finish_reason":"tool_calls"}]}"#;
    let r = translate_response(Api::Anthropic, Api::OpenAi, 200, body, &ropts());
    assert_eq!(r.status, 502);
    assert_eq!(json_of(&r.body)["type"], "error");
    // Not JSON, no choices.
    for body in [&b"<html>"[..], b"{}", b"[]", br#"{"choices":[]}"#] {
        let r = translate_response(Api::Anthropic, Api::OpenAi, 200, body, &ropts());
        assert_eq!(r.status, 502);
        let r = translate_response(Api::OpenAi, Api::Anthropic, 200, body, &ropts());
        assert_eq!(r.status, 502);
        assert!(json_of(&r.body)["error"]["message"].is_string());
    }
    // Same API: untouched.
    let r = translate_response(Api::OpenAi, Api::OpenAi, 200, b"xyz", &ropts());
    assert_eq!((r.status, r.body.as_slice()), (200, &b"xyz"[..]));
}

#[test]
fn error_bodies_both_ways() {
    let cases = [
        (
            529,
            "overloaded_error",
            "Overloaded",
            503,
            "service_unavailable",
        ),
        (
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            429,
            "rate_limit_error",
        ),
        (
            400,
            "invalid_request_error",
            "max_tokens: Field required",
            400,
            "invalid_request_error",
        ),
        (
            401,
            "authentication_error",
            "invalid x-api-key",
            401,
            "authentication_error",
        ),
        (403, "permission_error", "no", 403, "permission_error"),
        (
            404,
            "not_found_error",
            "model: claude-x",
            404,
            "not_found_error",
        ),
        (
            413,
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes",
            413,
            "invalid_request_error",
        ),
        (
            500,
            "api_error",
            "Internal server error",
            500,
            "server_error",
        ),
    ];
    for (status, kind, message, out_status, out_kind) in cases {
        let body = json!({"type": "error", "error": {"type": kind, "message": message}});
        let r = translate_response(
            Api::OpenAi,
            Api::Anthropic,
            status,
            body.to_string().as_bytes(),
            &ropts(),
        );
        assert_eq!(r.status, out_status);
        assert_eq!(
            json_of(&r.body),
            json!({"error": {"message": message, "type": out_kind, "code": kind}})
        );
        assert_eq!(
            client_status(Api::OpenAi, Api::Anthropic, status),
            out_status
        );
    }
    let cases = [
        (
            429,
            "rate_limit_error",
            Some("rate_limit_exceeded"),
            "rate_limit_error",
        ),
        (
            429,
            "insufficient_quota",
            Some("insufficient_quota"),
            "rate_limit_error",
        ),
        (
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            "authentication_error",
        ),
        (400, "invalid_request_error", None, "invalid_request_error"),
        (
            404,
            "invalid_request_error",
            Some("model_not_found"),
            "not_found_error",
        ),
        (503, "server_error", None, "overloaded_error"),
        (500, "server_error", None, "api_error"),
    ];
    for (status, kind, code, out_kind) in cases {
        let body = json!({"error": {"message": "m", "type": kind, "param": null, "code": code}});
        let r = translate_error(
            Api::Anthropic,
            Api::OpenAi,
            status,
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, status);
        assert_eq!(
            json_of(&r.body),
            json!({"type": "error", "error": {"type": out_kind, "message": "m"}})
        );
    }
    // Not an error object: a message naming the status.
    let r = translate_error(
        Api::OpenAi,
        Api::Anthropic,
        502,
        b"<html>Bad Gateway</html>",
    );
    assert_eq!(r.status, 502);
    let v = json_of(&r.body);
    assert_eq!(v["error"]["type"], "server_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("502"));
    let r = translate_error(Api::Anthropic, Api::OpenAi, 503, b"");
    assert_eq!(json_of(&r.body)["error"]["type"], "overloaded_error");
    // Anthropic clients keep 529/503 as they are.
    assert_eq!(client_status(Api::Anthropic, Api::OpenAi, 503), 503);
}

// ------------------------------------------------------------------ streams

/// A recorded-style Anthropic stream: text with multi-byte characters, then
/// a tool call in `input_json_delta` pieces, and cache tokens.
const ANTHROPIC_TOOL_STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":2048,\"output_tokens\":2},\"content\":[],\"stop_reason\":null}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Need the tool.\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCgIYAhIM\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay, let's check the weather for Paris \u{2014} \"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"\u{fc}n\u{ef}c\u{f6}d\u{e9} \u{65e5}\u{672c} \u{1f600}\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"Paris\\\", \\\"unit\\\": \\\"celsius\\\"}\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_02\",\"name\":\"get_time\",\"input\":{}}}\n\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"tz\\\": \\\"CET\\\"}\"}}\n\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":3}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

/// A recorded-style OpenAI stream with two parallel tool calls, a
/// keep-alive comment and the usage chunk.
const OPENAI_TOOL_STREAM: &str = concat!(
    "data: {\"id\":\"chatcmpl-BxT\",\"object\":\"chat.completion.chunk\",\"created\":1741000000,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_DdmO9pD3xa9XTPNJ32zg2hcA\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}],\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-BxT\",\"object\":\"chat.completion.chunk\",\"created\":1741000000,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"lo\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    ": keep-alive\n\n",
    "data: {\"id\":\"chatcmpl-BxT\",\"object\":\"chat.completion.chunk\",\"created\":1741000000,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"cation\\\": \\\"Par\u{ee}s\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-BxT\",\"object\":\"chat.completion.chunk\",\"created\":1741000000,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-BxT\",\"object\":\"chat.completion.chunk\",\"created\":1741000000,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{\\\"tz\\\":\\\"CET\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-BxT\",\"object\":\"chat.completion.chunk\",\"created\":1741000000,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_x\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-BxT\",\"object\":\"chat.completion.chunk\",\"created\":1741000000,\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_x\",\"choices\":[],\"usage\":{\"prompt_tokens\":82,\"completion_tokens\":37,\"total_tokens\":119,\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n",
    "data: [DONE]\n\n",
);

/// Feeds `input` cut at `cuts` through the SSE parser and a translator.
fn translate_cuts(
    client: Api,
    upstream: Api,
    opts: &ResponseOptions,
    input: &[u8],
    cuts: &[usize],
) -> Vec<u8> {
    let mut p = SseParser::new();
    let mut t = StreamTranslator::new(client, upstream, opts.clone());
    let mut out = Vec::new();
    let mut start = 0;
    for &c in cuts.iter().chain(std::iter::once(&input.len())) {
        for ev in p.push(&input[start..c]) {
            out.extend(t.on_event(&ev));
        }
        start = c;
    }
    if let Some(ev) = p.finish() {
        out.extend(t.on_event(&ev));
    }
    out.extend(t.finish());
    out
}

fn events(bytes: &[u8]) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let mut out = p.push(bytes);
    out.extend(p.finish());
    out
}

/// What a client makes of a stream.
#[derive(Debug, Default, PartialEq)]
struct Content {
    text: String,
    /// (id, name, arguments parsed as JSON).
    tools: Vec<(String, String, Value)>,
    /// Normalised to OpenAI's finish reasons.
    finish: Option<String>,
    /// (input, output, cache read) per llmgate's usage convention.
    usage: Option<(u64, u64, u64)>,
    completed: bool,
    error: Option<String>,
}

fn tracker_usage(api: Api, evs: &[SseEvent]) -> Option<(u64, u64, u64)> {
    let mut t = StreamTracker::new(api, false);
    for ev in evs {
        assert_eq!(t.observe(ev), Verdict::Forward);
    }
    t.usage()
        .map(|u| (u.input_tokens, u.output_tokens, u.cache_read_tokens))
}

fn parse_args(s: &str) -> Value {
    if s.is_empty() {
        json!({})
    } else {
        serde_json::from_str(s).unwrap_or(Value::String(s.to_string()))
    }
}

fn openai_content(bytes: &[u8]) -> Content {
    let evs = events(bytes);
    let mut c = Content {
        usage: tracker_usage(Api::OpenAi, &evs),
        ..Content::default()
    };
    let mut tools: Vec<(u64, String, String, String)> = Vec::new();
    for ev in &evs {
        assert!(!c.completed, "nothing after [DONE]");
        assert!(c.error.is_none(), "nothing after an error");
        if !ev.has_data {
            continue;
        }
        assert!(ev.event.is_none());
        if ev.data == "[DONE]" {
            c.completed = true;
            continue;
        }
        let v: Value = serde_json::from_str(&ev.data).unwrap();
        if let Some(e) = v.get("error") {
            c.error = Some(e["message"].as_str().unwrap().to_string());
            continue;
        }
        assert_eq!(v["object"], "chat.completion.chunk");
        for choice in v["choices"].as_array().unwrap() {
            let delta = &choice["delta"];
            if let Some(t) = delta["content"].as_str() {
                c.text.push_str(t);
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let i = call["index"].as_u64().unwrap();
                if let Some(id) = call["id"].as_str() {
                    tools.push((
                        i,
                        id.to_string(),
                        call["function"]["name"].as_str().unwrap().to_string(),
                        String::new(),
                    ));
                }
                let entry = tools.iter_mut().find(|t| t.0 == i).unwrap();
                if let Some(a) = call["function"]["arguments"].as_str() {
                    entry.3.push_str(a);
                }
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                c.finish = Some(f.to_string());
            }
        }
    }
    c.tools = tools
        .into_iter()
        .map(|(_, id, name, args)| (id, name, parse_args(&args)))
        .collect();
    c
}

fn anthropic_content(bytes: &[u8]) -> Content {
    let evs = events(bytes);
    let mut c = Content {
        usage: tracker_usage(Api::Anthropic, &evs),
        ..Content::default()
    };
    let mut tools: Vec<(u64, String, String, String)> = Vec::new();
    let mut open: Option<u64> = None;
    let mut started = false;
    for ev in &evs {
        assert!(!c.completed, "nothing after message_stop");
        assert!(c.error.is_none(), "nothing after an error");
        if !ev.has_data {
            continue;
        }
        let v: Value = serde_json::from_str(&ev.data).unwrap();
        let kind = v["type"].as_str().unwrap();
        assert_eq!(ev.event.as_deref(), Some(kind));
        if kind != "error" && kind != "ping" {
            assert_eq!(
                started,
                kind != "message_start",
                "message_start first, once"
            );
            started = true;
        }
        match kind {
            "content_block_start" => {
                assert_eq!(open, None, "blocks do not overlap");
                let i = v["index"].as_u64().unwrap();
                open = Some(i);
                let b = &v["content_block"];
                if b["type"] == "tool_use" {
                    tools.push((
                        i,
                        b["id"].as_str().unwrap().to_string(),
                        b["name"].as_str().unwrap().to_string(),
                        String::new(),
                    ));
                }
            }
            "content_block_delta" => {
                let i = v["index"].as_u64().unwrap();
                assert_eq!(open, Some(i), "delta of the open block");
                let d = &v["delta"];
                match d["type"].as_str().unwrap() {
                    "text_delta" => c.text.push_str(d["text"].as_str().unwrap()),
                    "input_json_delta" => {
                        let entry = tools.iter_mut().find(|t| t.0 == i).unwrap();
                        entry.3.push_str(d["partial_json"].as_str().unwrap());
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                assert_eq!(open.take(), v["index"].as_u64());
            }
            "message_delta" => {
                assert_eq!(open, None);
                c.finish = Some(finish_reason_of(v["delta"]["stop_reason"].as_str()).to_string());
            }
            "message_stop" => c.completed = true,
            "error" => c.error = Some(v["error"]["message"].as_str().unwrap().to_string()),
            _ => {}
        }
    }
    c.tools = tools
        .into_iter()
        .map(|(_, id, name, args)| (id, name, parse_args(&args)))
        .collect();
    c
}

fn content_of(api: Api, bytes: &[u8]) -> Content {
    match api {
        Api::OpenAi => openai_content(bytes),
        Api::Anthropic => anthropic_content(bytes),
    }
}

/// Translates `input` whole, then cut at every byte offset and one byte at
/// a time: the output must be the same bytes each time. Returns it.
fn check_every_split(client: Api, upstream: Api, opts: &ResponseOptions, input: &[u8]) -> Vec<u8> {
    let whole = translate_cuts(client, upstream, opts, input, &[]);
    for cut in 0..=input.len() {
        assert_eq!(
            translate_cuts(client, upstream, opts, input, &[cut]),
            whole,
            "cut at {cut}"
        );
    }
    let every: Vec<usize> = (1..input.len()).collect();
    assert_eq!(translate_cuts(client, upstream, opts, input, &every), whole);
    whole
}

#[test]
fn anthropic_stream_to_openai_every_split() {
    for input in [
        ANTHROPIC_TOOL_STREAM.to_string(),
        crlf(ANTHROPIC_TOOL_STREAM),
        ANTHROPIC_STREAM.to_string(),
    ] {
        let out = check_every_split(Api::OpenAi, Api::Anthropic, &ropts(), input.as_bytes());
        let want = anthropic_content(input.as_bytes());
        let got = openai_content(&out);
        // Usage compares (input, output, cache read): OpenAI has no
        // cache-write count.
        assert!(got.completed);
        assert_eq!(got.text, want.text);
        assert_eq!(got.tools, want.tools);
        assert_eq!(got.finish, want.finish);
        assert_eq!(got.usage, want.usage);
        // Every chunk carries "usage": null except the final usage chunk.
        let evs = events(&out);
        let n = evs.len();
        assert_eq!(evs[n - 1].data, "[DONE]");
        assert!(evs[n - 2].data.contains("\"choices\":[]"));
        for ev in &evs[..n - 2] {
            assert!(ev.data.contains("\"usage\":null"), "{}", ev.data);
        }
    }
    let c = anthropic_content(ANTHROPIC_TOOL_STREAM.as_bytes());
    assert_eq!(c.usage, Some((2520, 89, 2048)));
    assert_eq!(c.tools.len(), 2);
    assert_eq!(
        c.tools[0],
        (
            "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
            "get_weather".into(),
            json!({"location": "Paris", "unit": "celsius"})
        )
    );
}

#[test]
fn anthropic_stream_to_openai_without_usage_chunk() {
    let opts = ResponseOptions {
        include_usage: false,
        ..ropts()
    };
    let out = translate_cuts(
        Api::OpenAi,
        Api::Anthropic,
        &opts,
        ANTHROPIC_STREAM.as_bytes(),
        &[],
    );
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(!text.contains("usage"));
    assert!(text.ends_with("data: [DONE]\n\n"));
    let c = openai_content(&out);
    assert_eq!(
        c.text,
        "Gr\u{fc}\u{df} \u{1f44b} na\u{ef}ve \u{4e16}\u{754c}"
    );
    assert_eq!(c.finish.as_deref(), Some("stop"));
    assert_eq!(c.usage, None);
    // The first chunk is the role chunk, with the message id and model.
    let first: Value = serde_json::from_str(&events(&out)[0].data).unwrap();
    assert_eq!(
        first,
        json!({"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "object": "chat.completion.chunk",
               "created": 1_750_000_000u64, "model": "claude-sonnet-4-5-20250929",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                            "logprobs": null, "finish_reason": null}]})
    );
}

#[test]
fn openai_stream_to_anthropic_every_split() {
    for input in [
        OPENAI_TOOL_STREAM.to_string(),
        crlf(OPENAI_TOOL_STREAM),
        OPENAI_STREAM.to_string(),
    ] {
        let out = check_every_split(Api::Anthropic, Api::OpenAi, &ropts(), input.as_bytes());
        let want = openai_content(input.as_bytes());
        let got = anthropic_content(&out);
        assert!(got.completed);
        assert_eq!(got, want);
    }
    let c = anthropic_content(&translate_cuts(
        Api::Anthropic,
        Api::OpenAi,
        &ropts(),
        OPENAI_TOOL_STREAM.as_bytes(),
        &[],
    ));
    assert_eq!(
        c.tools,
        [
            (
                "call_DdmO9pD3xa9XTPNJ32zg2hcA".to_string(),
                "get_weather".to_string(),
                json!({"location": "Par\u{ee}s"})
            ),
            ("call_2".into(), "get_time".into(), json!({"tz": "CET"}))
        ]
    );
    assert_eq!(c.finish.as_deref(), Some("tool_calls"));
    assert_eq!(c.usage, Some((82, 37, 0)));
    let c = anthropic_content(&translate_cuts(
        Api::Anthropic,
        Api::OpenAi,
        &ropts(),
        OPENAI_STREAM.as_bytes(),
        &[],
    ));
    assert_eq!(c.usage, Some((1200, 7, 1024)));
}

#[test]
fn stream_round_trips() {
    // Anthropic → OpenAI → Anthropic, and OpenAI → Anthropic → OpenAI: the
    // client sees the same content.
    for input in [ANTHROPIC_TOOL_STREAM, ANTHROPIC_STREAM] {
        let oa = translate_cuts(Api::OpenAi, Api::Anthropic, &ropts(), input.as_bytes(), &[]);
        let back = translate_cuts(Api::Anthropic, Api::OpenAi, &ropts(), &oa, &[]);
        let a = anthropic_content(input.as_bytes());
        let b = anthropic_content(&back);
        assert_eq!((a.text, a.tools, a.finish), (b.text, b.tools, b.finish));
        assert!(a.usage.is_some());
        assert_eq!(b.usage, a.usage);
    }
    for input in [OPENAI_TOOL_STREAM, OPENAI_STREAM] {
        let an = translate_cuts(Api::Anthropic, Api::OpenAi, &ropts(), input.as_bytes(), &[]);
        let back = translate_cuts(Api::OpenAi, Api::Anthropic, &ropts(), &an, &[]);
        assert_eq!(openai_content(input.as_bytes()), openai_content(&back));
    }
}

#[test]
fn stream_errors_and_truncation() {
    // An Anthropic error event mid-stream.
    let input = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
        "event: error\n",
        "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n",
    );
    let out = check_every_split(Api::OpenAi, Api::Anthropic, &ropts(), input.as_bytes());
    let c = openai_content(&out);
    assert_eq!(c.text, "Hel");
    assert_eq!(c.error.as_deref(), Some("Overloaded"));
    assert!(!c.completed);
    let last: Value = serde_json::from_str(&events(&out).last().unwrap().data).unwrap();
    assert_eq!(
        last,
        json!({"error": {"message": "Overloaded", "type": "service_unavailable", "code": "overloaded_error"}})
    );

    // An OpenAI error chunk.
    let input = "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\ndata: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";
    let out = check_every_split(Api::Anthropic, Api::OpenAi, &ropts(), input.as_bytes());
    let c = anthropic_content(&out);
    assert_eq!(c.text, "Hi");
    assert_eq!(c.error.as_deref(), Some("The server had an error"));
    let last = events(&out).pop().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(
        serde_json::from_str::<Value>(&last.data).unwrap(),
        json!({"type": "error", "error": {"type": "api_error", "message": "The server had an error"}})
    );

    // Truncated streams: an error event at finish, unless the message was
    // finished (then the stream is closed properly).
    let half = &ANTHROPIC_TOOL_STREAM[..ANTHROPIC_TOOL_STREAM
        .find("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2")
        .unwrap()];
    let c = openai_content(&translate_cuts(
        Api::OpenAi,
        Api::Anthropic,
        &ropts(),
        half.as_bytes(),
        &[],
    ));
    assert!(!c.completed);
    assert_eq!(
        c.error.as_deref(),
        Some("the upstream stream ended before completion")
    );
    let no_stop =
        &ANTHROPIC_TOOL_STREAM[..ANTHROPIC_TOOL_STREAM.find("event: message_stop").unwrap()];
    let c = openai_content(&translate_cuts(
        Api::OpenAi,
        Api::Anthropic,
        &ropts(),
        no_stop.as_bytes(),
        &[],
    ));
    assert!(c.completed && c.error.is_none());
    assert_eq!(c.finish.as_deref(), Some("tool_calls"));

    let half = &OPENAI_TOOL_STREAM[..OPENAI_TOOL_STREAM
        .find("\"finish_reason\":\"tool_calls\"")
        .unwrap()
        - 40];
    let c = anthropic_content(&translate_cuts(
        Api::Anthropic,
        Api::OpenAi,
        &ropts(),
        half.as_bytes(),
        &[],
    ));
    assert!(!c.completed);
    assert!(c.error.is_some());
    let no_done = &OPENAI_TOOL_STREAM[..OPENAI_TOOL_STREAM.find("data: [DONE]").unwrap()];
    let c = anthropic_content(&translate_cuts(
        Api::Anthropic,
        Api::OpenAi,
        &ropts(),
        no_done.as_bytes(),
        &[],
    ));
    assert!(c.completed && c.error.is_none());
    assert_eq!(c.usage, Some((82, 37, 0)));

    // Empty upstream body.
    for (client, upstream) in [(Api::OpenAi, Api::Anthropic), (Api::Anthropic, Api::OpenAi)] {
        let out = translate_cuts(client, upstream, &ropts(), b"", &[]);
        let c = content_of(client, &out);
        assert!(c.error.is_some() && !c.completed);
    }
}

#[test]
fn same_api_streams_pass_through() {
    for (api, input) in [
        (Api::OpenAi, OPENAI_STREAM),
        (Api::Anthropic, ANTHROPIC_STREAM),
    ] {
        let mut t = StreamTranslator::new(api, api, ropts());
        let mut out = Vec::new();
        for ev in events(input.as_bytes()) {
            out.extend(t.on_event(&ev));
        }
        out.extend(t.finish());
        assert_eq!(out, input.as_bytes());
        assert!(!t.done());
    }
}

#[test]
fn invalid_utf8_split_across_chunks_is_replaced() {
    // A text delta holding a truncated emoji (`\xf0\x9f`) then a valid one,
    // fed one byte at a time.
    let mut input = Vec::new();
    input.extend_from_slice(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n");
    input.extend_from_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\xf0\x9f b \xf0\x9f\x98\x80\"}}\n\n");
    input.extend_from_slice(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    let out = check_every_split(Api::OpenAi, Api::Anthropic, &ropts(), &input);
    let c = openai_content(&out);
    assert_eq!(c.text, "a\u{fffd} b \u{1f600}");
    assert!(c.completed);
}

// ------------------------------------------------------------------ hostile

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(6) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.truncate(i);
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let pieces: [&[u8]; 14] = [
                    b"{",
                    b"}",
                    b"[",
                    b"]",
                    b"\"",
                    b",",
                    b":",
                    b"\\u0000",
                    b"\xff",
                    b"null",
                    b"1e999",
                    b"18446744073709551615",
                    b"-1",
                    b"\n\n",
                ];
                let piece = pieces[rng.below(pieces.len())];
                v.splice(i..i, piece.iter().copied());
            }
            3 if v.len() > 2 => {
                let a = rng.below(v.len());
                let b = rng.below(v.len());
                v.swap(a, b);
            }
            _ => {
                let i = rng.below(v.len() + 1);
                v.splice(i..i, std::iter::repeat_n(b'[', rng.below(200)));
            }
        }
    }
    v
}

/// Replaces one random node of `v` by a value of another type.
fn confuse(rng: &mut Rng, v: &mut Value) {
    let replacements = [
        Value::Null,
        json!(true),
        json!(-1),
        json!(18_446_744_073_709_551_615u64),
        json!(1.5e300),
        json!("x"),
        json!(""),
        json!([]),
        json!([null]),
        json!({}),
        json!({"type": "text"}),
    ];
    let mut node = v;
    loop {
        let children: usize = match node {
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            _ => 0,
        };
        if children == 0 || rng.below(4) == 0 {
            *node = replacements[rng.below(replacements.len())].clone();
            return;
        }
        let i = rng.below(children);
        node = match node {
            Value::Array(a) => &mut a[i],
            Value::Object(o) => o.values_mut().nth(i).unwrap(),
            _ => unreachable!(),
        };
    }
}

#[test]
fn hostile_requests_never_panic() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let bases = [openai_request(), anthropic_request()];
    for round in 0..4000 {
        let base = &bases[round % 2];
        let client = if round % 2 == 0 {
            Api::OpenAi
        } else {
            Api::Anthropic
        };
        let upstream = if round % 2 == 0 {
            Api::Anthropic
        } else {
            Api::OpenAi
        };
        let mut v = base.clone();
        for _ in 0..1 + rng.below(3) {
            confuse(&mut rng, &mut v);
        }
        if let Value::Object(m) = &v {
            if let Ok(t) = translate_request(client, upstream, m, &opts()) {
                // Whatever comes out translates back without panicking.
                let _ = translate_request(upstream, client, &t.body, &opts());
            }
        }
        let bytes = mutate(&mut rng, base.to_string().as_bytes());
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&bytes) {
            let _ = translate_request(client, upstream, &m, &opts());
        }
    }
}

#[test]
fn hostile_responses_never_panic() {
    let mut rng = Rng(77);
    let bases: [(&[u8], Api); 4] = [
        (ANTHROPIC_MESSAGE.as_bytes(), Api::Anthropic),
        (OPENAI_COMPLETION.as_bytes(), Api::OpenAi),
        (
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            Api::Anthropic,
        ),
        (
            br#"{"error":{"message":"m","type":"server_error","code":null}}"#,
            Api::OpenAi,
        ),
    ];
    for round in 0..4000 {
        let (base, upstream) = bases[round % bases.len()];
        let client = match upstream {
            Api::OpenAi => Api::Anthropic,
            Api::Anthropic => Api::OpenAi,
        };
        let mut v: Value = serde_json::from_slice(base).unwrap();
        confuse(&mut rng, &mut v);
        let status = [200, 400, 429, 500, 529, 302][rng.below(6)];
        for body in [v.to_string().into_bytes(), mutate(&mut rng, base)] {
            let r = translate_response(client, upstream, status, &body, &ropts());
            if status != 302 {
                // Always a JSON body.
                let _: Value = serde_json::from_slice(&r.body).unwrap();
            }
        }
    }
}

#[test]
fn hostile_streams_never_panic_and_output_stays_well_formed() {
    let mut rng = Rng(0xdead_beef);
    let bases: [(&str, Api); 4] = [
        (ANTHROPIC_TOOL_STREAM, Api::Anthropic),
        (ANTHROPIC_STREAM, Api::Anthropic),
        (OPENAI_TOOL_STREAM, Api::OpenAi),
        (OPENAI_STREAM, Api::OpenAi),
    ];
    for round in 0..3000 {
        let (base, upstream) = bases[round % bases.len()];
        let client = match upstream {
            Api::OpenAi => Api::Anthropic,
            Api::Anthropic => Api::OpenAi,
        };
        let input = if round % 3 == 0 {
            // Type confusion inside one event's JSON.
            let evs = events(base.as_bytes());
            let mut out = Vec::new();
            let victim = rng.below(evs.len());
            for (i, ev) in evs.iter().enumerate() {
                match serde_json::from_str::<Value>(&ev.data) {
                    Ok(mut v) if i == victim => {
                        confuse(&mut rng, &mut v);
                        out.extend(crate::core::sse::serialize_event(
                            ev.event.as_deref(),
                            &v.to_string(),
                        ));
                    }
                    _ => out.extend_from_slice(&ev.raw),
                }
            }
            out
        } else {
            mutate(&mut rng, base.as_bytes())
        };
        let mut cuts: Vec<usize> = (0..rng.below(8))
            .map(|_| rng.below(input.len() + 1))
            .collect();
        cuts.sort_unstable();
        let out = translate_cuts(client, upstream, &ropts(), &input, &cuts);
        // The output is valid UTF-8 SSE: every event is JSON (or [DONE]),
        // and the stream ends with its end or an error.
        let text = String::from_utf8(out.clone()).unwrap();
        let evs = events(text.as_bytes());
        assert!(!evs.is_empty());
        for ev in &evs {
            assert!(ev.has_data);
            if ev.data != "[DONE]" {
                let _: Value = serde_json::from_str(&ev.data).unwrap();
            }
        }
        let last = evs.last().unwrap();
        let ended = match client {
            Api::OpenAi => last.data == "[DONE]" || last.data.starts_with("{\"error\""),
            Api::Anthropic => matches!(last.event.as_deref(), Some("message_stop" | "error")),
        };
        assert!(ended, "round {round}: {text}");
    }
}

#[test]
fn huge_counts_saturate() {
    let max = u64::MAX;
    let msg = json!({"id": "m", "type": "message", "content": [], "stop_reason": "end_turn",
        "usage": {"input_tokens": max, "cache_read_input_tokens": max,
                  "cache_creation_input_tokens": max, "output_tokens": max}});
    let r = translate_response(
        Api::OpenAi,
        Api::Anthropic,
        200,
        msg.to_string().as_bytes(),
        &ropts(),
    );
    let v = json_of(&r.body);
    assert_eq!(v["usage"]["prompt_tokens"], max);
    assert_eq!(v["usage"]["total_tokens"], max);
    let body = json!({"id": "c", "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": max,
                  "prompt_tokens_details": {"cached_tokens": max}}});
    let r = translate_response(
        Api::Anthropic,
        Api::OpenAi,
        200,
        body.to_string().as_bytes(),
        &ropts(),
    );
    let v = json_of(&r.body);
    // cached_tokens larger than prompt_tokens is capped by it.
    assert_eq!(v["usage"]["cache_read_input_tokens"], 5);
    assert_eq!(v["usage"]["input_tokens"], 0);
    // Responses-style usage names.
    let body = json!({"id": "c", "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}],
        "usage": {"input_tokens": 9, "output_tokens": 4, "input_tokens_details": {"cached_tokens": 2}}});
    let r = translate_response(
        Api::Anthropic,
        Api::OpenAi,
        200,
        body.to_string().as_bytes(),
        &ropts(),
    );
    assert_eq!(
        json_of(&r.body)["usage"],
        json!({"input_tokens": 7, "cache_read_input_tokens": 2,
               "cache_creation_input_tokens": 0, "output_tokens": 4})
    );
    // Huge block and tool indexes in a stream.
    let input = format!(
        "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":{max},\"id\":\"a\",\"function\":{{\"name\":\"f\",\"arguments\":\"{{}}\"}}}}]}}}}]}}\n\ndata: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"tool_calls\"}}]}}\n\ndata: [DONE]\n\n"
    );
    let c = anthropic_content(&translate_cuts(
        Api::Anthropic,
        Api::OpenAi,
        &ropts(),
        input.as_bytes(),
        &[],
    ));
    assert_eq!(c.tools, [("a".into(), "f".into(), json!({}))]);
}

/// The mock LLM's OpenAI tool-call stream (`x-mock-chunk-chars: 4`), as
/// captured from `integration/mock-llm`.
const MOCK_OPENAI_TOOL_STREAM: &str = concat!(
    "data: {\"id\":\"chatcmpl-mock01a22c02593c000000000001\",\"object\":\"chat.completion.chunk\",\"created\":1796034682,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"id\":\"call_mock01a22c02593c000000000002\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-mock01a22c02593c000000000001\",\"object\":\"chat.completion.chunk\",\"created\":1796034682,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"ci\"}}]},\"finish_reason\":null}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-mock01a22c02593c000000000001\",\"object\":\"chat.completion.chunk\",\"created\":1796034682,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"ty\\\":\"}}]},\"finish_reason\":null}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-mock01a22c02593c000000000001\",\"object\":\"chat.completion.chunk\",\"created\":1796034682,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\" \\\"Pa\"}}]},\"finish_reason\":null}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-mock01a22c02593c000000000001\",\"object\":\"chat.completion.chunk\",\"created\":1796034682,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"ris\\\"\"}}]},\"finish_reason\":null}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-mock01a22c02593c000000000001\",\"object\":\"chat.completion.chunk\",\"created\":1796034682,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"}\"}}]},\"finish_reason\":null}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-mock01a22c02593c000000000001\",\"object\":\"chat.completion.chunk\",\"created\":1796034682,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n",
    "\n",
    "data: {\"id\":\"chatcmpl-mock01a22c02593c000000000001\",\"object\":\"chat.completion.chunk\",\"created\":1796034682,\"model\":\"gpt-x\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n",
    "\n",
    "data: [DONE]\n",
    "\n",
);

/// The mock LLM's Anthropic tool-call stream (`x-mock-chunk-chars: 4`).
const MOCK_ANTHROPIC_TOOL_STREAM: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_mock01a22c02593c000000000003\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n",
    "\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_mock01a22c02593c000000000004\",\"name\":\"get_weather\",\"input\":{}}}\n",
    "\n",
    "event: ping\n",
    "data: {\"type\":\"ping\"}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"ci\"}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"ty\\\":\"}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"Pa\"}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"ris\\\"\"}}\n",
    "\n",
    "event: content_block_delta\n",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"}\"}}\n",
    "\n",
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n",
    "\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2}}\n",
    "\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n",
    "\n",
);

#[test]
fn mock_llm_tool_streams_translate_both_ways() {
    let want = (
        "get_weather".to_string(),
        json!({"city": "Paris"}),
        Some("tool_calls".to_string()),
    );
    for (input, client, upstream) in [
        (MOCK_OPENAI_TOOL_STREAM, Api::Anthropic, Api::OpenAi),
        (MOCK_ANTHROPIC_TOOL_STREAM, Api::OpenAi, Api::Anthropic),
    ] {
        let out = check_every_split(client, upstream, &ropts(), input.as_bytes());
        let original = content_of(upstream, input.as_bytes());
        let got = content_of(client, &out);
        assert!(got.completed);
        assert_eq!(got, original);
        assert_eq!(got.tools.len(), 1);
        let (_, name, args) = &got.tools[0];
        assert_eq!((name.clone(), args.clone(), got.finish.clone()), want);
        assert_eq!(got.usage, Some((3, 2, 0)));
    }
}

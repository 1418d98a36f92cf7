//! Non-streaming response bodies and error bodies.

use serde_json::{json, Map, Value};

use super::{finish_reason_of, stop_reason_of, str_of, to_json_string, Counts, ResponseOptions};
use crate::core::api::Api;

/// A response to send to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslatedResponse {
    /// The status for the client (see [`client_status`]); 502 when a
    /// successful upstream body could not be translated.
    pub status: u32,
    /// The body in the client's API.
    pub body: Vec<u8>,
}

/// The status the client gets for an upstream status: Anthropic's 529
/// (overloaded) is 503 for OpenAI clients; everything else is kept.
pub fn client_status(client: Api, upstream: Api, status: u32) -> u32 {
    match (client, upstream, status) {
        (Api::OpenAi, Api::Anthropic, 529) => 503,
        _ => status,
    }
}

/// Translates a whole (non-streaming) upstream response: a `2xx` body as a
/// message / completion, a `4xx`/`5xx` body as an error (see
/// [`translate_error`]); other statuses are passed as they are. Same API:
/// unchanged.
pub fn translate_response(
    client: Api,
    upstream: Api,
    status: u32,
    body: &[u8],
    opts: &ResponseOptions,
) -> TranslatedResponse {
    if client == upstream || (!(200..300).contains(&status) && status < 400) {
        return TranslatedResponse {
            status,
            body: body.to_vec(),
        };
    }
    if status >= 400 {
        return translate_error(client, upstream, status, body);
    }
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let result = match (parsed.as_ref().and_then(Value::as_object), upstream) {
        (Some(obj), Api::Anthropic) => anthropic_to_openai(obj, opts),
        (Some(obj), Api::OpenAi) => openai_to_anthropic(obj, opts),
        (None, _) => Err("the upstream response is not a JSON object".to_string()),
    };
    match result {
        Ok(v) => TranslatedResponse {
            status,
            body: to_json_string(&v).into_bytes(),
        },
        Err(message) => TranslatedResponse {
            status: 502,
            body: error_body(
                client,
                "api_error",
                "upstream_invalid_response",
                &format!("llmgate could not translate the upstream response: {message}"),
            ),
        },
    }
}

fn anthropic_to_openai(obj: &Map<String, Value>, opts: &ResponseOptions) -> Result<Value, String> {
    if let Some(err) = obj.get("error").filter(|e| e.is_object()) {
        let (_, message) = anthropic_error_fields(err);
        return Err(format!("it is an error: {message}"));
    }
    let Some(Value::Array(content)) = obj.get("content") else {
        return Err("`content` is not an array".into());
    };
    let mut text = String::new();
    let mut has_text = false;
    let mut tool_calls = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = block.get("text").and_then(Value::as_str) {
                    text.push_str(t);
                    has_text = true;
                }
            }
            Some("tool_use") => {
                let id = block.get("id").and_then(Value::as_str).unwrap_or_default();
                let name = block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let arguments = match block.get("input") {
                    None | Some(Value::Null) => "{}".to_string(),
                    Some(input) => to_json_string(input),
                };
                tool_calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }));
            }
            // thinking, redacted_thinking, server tool blocks: no counterpart.
            _ => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if has_text || tool_calls.is_empty() {
            Value::String(text)
        } else {
            Value::Null
        },
    );
    message.insert("refusal".into(), Value::Null);
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    let mut counts = Counts::default();
    counts.update_anthropic(obj.get("usage"));
    let model = opts
        .model
        .clone()
        .or_else(|| str_of(obj, "model").map(str::to_string))
        .unwrap_or_default();
    Ok(json!({
        "id": str_of(obj, "id").unwrap_or_default(),
        "object": "chat.completion",
        "created": opts.created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason_of(str_of(obj, "stop_reason")),
        }],
        "usage": counts.openai_usage(),
    }))
}

fn openai_to_anthropic(obj: &Map<String, Value>, opts: &ResponseOptions) -> Result<Value, String> {
    if let Some(err) = obj.get("error").filter(|e| e.is_object()) {
        let (_, message, _) = openai_error_fields(err);
        return Err(format!("it is an error: {message}"));
    }
    let choice = obj
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        })
        .and_then(Value::as_object)
        .ok_or_else(|| "no `choices[0]`".to_string())?;
    let message = choice
        .get("message")
        .and_then(Value::as_object)
        .ok_or_else(|| "no `choices[0].message`".to_string())?;
    let mut content = Vec::new();
    match message.get("content") {
        Some(Value::String(s)) if !s.is_empty() => content.push(json!({"type": "text", "text": s})),
        Some(Value::Array(parts)) => {
            for part in parts {
                if let Some(t) = part.get("text").and_then(Value::as_str) {
                    content.push(json!({"type": "text", "text": t}));
                }
            }
        }
        _ => {}
    }
    let mut refusal = false;
    if let Some(r) = str_of(message, "refusal").filter(|r| !r.is_empty()) {
        content.push(json!({"type": "text", "text": r}));
        refusal = true;
    }
    if let Some(Value::Array(calls)) = message.get("tool_calls") {
        for call in calls {
            let function = call.get("function");
            let name = function
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let input = match function.and_then(|f| f.get("arguments")) {
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(Value::String(s)) if s.trim().is_empty() => Value::Object(Map::new()),
                Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        return Err(format!(
                            "the arguments of the `{name}` tool call are not a JSON object"
                        ))
                    }
                },
                Some(v @ Value::Object(_)) => v.clone(),
                Some(_) => {
                    return Err(format!(
                        "the arguments of the `{name}` tool call are not a string"
                    ))
                }
            };
            content.push(json!({
                "type": "tool_use",
                "id": call.get("id").and_then(Value::as_str).unwrap_or_default(),
                "name": name,
                "input": input,
            }));
        }
    }
    let stop_reason = if refusal {
        "refusal"
    } else {
        stop_reason_of(str_of(choice, "finish_reason"))
    };
    let counts = Counts::from_openai(obj.get("usage")).unwrap_or_default();
    let model = opts
        .model
        .clone()
        .or_else(|| str_of(obj, "model").map(str::to_string))
        .unwrap_or_default();
    Ok(json!({
        "id": str_of(obj, "id").unwrap_or_default(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": counts.anthropic_usage(),
    }))
}

/// `(type, message)` of an Anthropic `error` object.
pub(super) fn anthropic_error_fields(err: &Value) -> (Option<String>, String) {
    let kind = err.get("type").and_then(Value::as_str).map(str::to_string);
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| kind.clone())
        .unwrap_or_else(|| "upstream error".to_string());
    (kind, message)
}

/// `(type, message, code)` of an OpenAI `error` object (or string).
pub(super) fn openai_error_fields(err: &Value) -> (Option<String>, String, Option<String>) {
    if let Some(s) = err.as_str() {
        return (None, s.to_string(), None);
    }
    let kind = err.get("type").and_then(Value::as_str).map(str::to_string);
    let code = match err.get("code") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| kind.clone())
        .unwrap_or_else(|| "upstream error".to_string());
    (kind, message, code)
}

/// The OpenAI error type for an Anthropic one (or the status).
pub(super) fn openai_type_of(anthropic_type: Option<&str>, status: u32) -> &'static str {
    match anthropic_type {
        Some("invalid_request_error" | "request_too_large") => "invalid_request_error",
        Some("authentication_error") => "authentication_error",
        Some("permission_error") => "permission_error",
        Some("not_found_error") => "not_found_error",
        Some("rate_limit_error") => "rate_limit_error",
        Some("overloaded_error") => "service_unavailable",
        Some("api_error" | "timeout_error") => "server_error",
        _ => match status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            503 | 529 => "service_unavailable",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        },
    }
}

/// The Anthropic error type for an OpenAI one (or the status).
pub(super) fn anthropic_type_of(openai_type: Option<&str>, status: u32) -> &'static str {
    match (openai_type, status) {
        (_, 401) | (Some("authentication_error"), _) => "authentication_error",
        (_, 403) | (Some("permission_error"), _) => "permission_error",
        (_, 404) | (Some("not_found_error"), _) => "not_found_error",
        (_, 413) => "request_too_large",
        (_, 429) | (Some("rate_limit_error" | "insufficient_quota"), _) => "rate_limit_error",
        (_, 503 | 529) | (Some("service_unavailable"), _) => "overloaded_error",
        (_, 504) => "timeout_error",
        (_, 500..=599) | (Some("server_error" | "api_error"), _) => "api_error",
        _ => "invalid_request_error",
    }
}

/// An error body in `api`'s shape.
pub(super) fn error_body(api: Api, kind: &str, code: &str, message: &str) -> Vec<u8> {
    let v = error_value(api, kind, code, message);
    to_json_string(&v).into_bytes()
}

pub(super) fn error_value(api: Api, kind: &str, code: &str, message: &str) -> Value {
    match api {
        Api::OpenAi => json!({"error": {"message": message, "type": kind, "code": code}}),
        Api::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
    }
}

/// Translates an upstream error body (any status) into the client's shape,
/// keeping the message; the status as [`client_status`] says. A body that is
/// not an error object of the upstream's API gets a message naming the
/// status. Same API: unchanged.
pub fn translate_error(client: Api, upstream: Api, status: u32, body: &[u8]) -> TranslatedResponse {
    let out_status = client_status(client, upstream, status);
    if client == upstream {
        return TranslatedResponse {
            status,
            body: body.to_vec(),
        };
    }
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let generic = || format!("the upstream answered HTTP {status}");
    let body = match (client, upstream) {
        (Api::OpenAi, _) => {
            let (kind, message) = match err {
                Some(e) if e.is_object() => anthropic_error_fields(e),
                _ => (None, generic()),
            };
            let out_kind = openai_type_of(kind.as_deref(), status);
            let code = kind.as_deref().unwrap_or(out_kind).to_string();
            to_json_string(&json!({"error": {"message": message, "type": out_kind, "code": code}}))
        }
        (Api::Anthropic, _) => {
            let (kind, message, _) = match err {
                Some(e) if e.is_object() || e.is_string() => openai_error_fields(e),
                _ => (None, generic(), None),
            };
            let out_kind = anthropic_type_of(kind.as_deref(), status);
            to_json_string(&error_value(Api::Anthropic, out_kind, "", &message))
        }
    };
    TranslatedResponse {
        status: out_status,
        body: body.into_bytes(),
    }
}

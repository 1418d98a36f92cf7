//! Request bodies: OpenAI chat.completions ⇄ Anthropic messages.

use serde_json::{json, Map, Value};

use super::{invalid, str_of, to_json_string, unsupported};
use crate::core::api::{Api, ApiError};

/// Settings of the request translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOptions {
    /// `max_tokens` sent to Anthropic when the OpenAI request has neither
    /// `max_tokens` nor `max_completion_tokens` (Anthropic requires it).
    pub default_max_tokens: u64,
}

impl Default for RequestOptions {
    fn default() -> Self {
        Self {
            default_max_tokens: 4096,
        }
    }
}

/// The upstream request body and what the response translation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslatedRequest {
    /// The body to send upstream, in the upstream's API.
    pub body: Map<String, Value>,
    /// `"stream": true`.
    pub stream: bool,
    /// The OpenAI client asked for the final usage chunk
    /// (`stream_options.include_usage: true`); goes to
    /// [`ResponseOptions::include_usage`](super::ResponseOptions).
    pub include_usage: bool,
    /// Top-level fields left out (non-null ones only) because the upstream's
    /// API has no counterpart and dropping them is harmless (see the
    /// translation table), for the audit log. Nested details dropped by rule
    /// (`detail` of images, `cache_control`, `strict`, …) are not listed.
    pub dropped: Vec<String>,
}

/// Translates a request body from the client's API to the upstream's.
/// Same API: the body is copied. Errors are 400s, to answer in the client's
/// shape.
pub fn translate_request(
    client: Api,
    upstream: Api,
    body: &Map<String, Value>,
    opts: &RequestOptions,
) -> Result<TranslatedRequest, ApiError> {
    match (client, upstream) {
        (Api::OpenAi, Api::Anthropic) => openai_to_anthropic(body, opts),
        (Api::Anthropic, Api::OpenAi) => anthropic_to_openai(body),
        (Api::OpenAi, Api::OpenAi) | (Api::Anthropic, Api::Anthropic) => {
            let stream = matches!(body.get("stream"), Some(Value::Bool(true)));
            let include_usage = client == Api::OpenAi
                && body
                    .get("stream_options")
                    .and_then(|o| o.get("include_usage"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
            Ok(TranslatedRequest {
                body: body.clone(),
                stream,
                include_usage,
                dropped: Vec::new(),
            })
        }
    }
}

fn is_null(v: &Value) -> bool {
    v.is_null()
}

/// A positive integer (token limits).
fn positive_int(v: &Value, field: &str) -> Result<Option<u64>, ApiError> {
    match v {
        Value::Null => Ok(None),
        _ => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(invalid(field, "must be a positive integer")),
        },
    }
}

fn number(v: &Value, field: &str) -> Result<Option<f64>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => Ok(Some(f)),
            _ => Err(invalid(field, "must be a finite number")),
        },
        _ => Err(invalid(field, "must be a number")),
    }
}

/// Stop strings: a string or a list of strings; empty ones are left out.
fn string_list(v: &Value, field: &str) -> Result<Vec<Value>, ApiError> {
    let non_empty = |s: &&Value| s.as_str().is_some_and(|s| !s.is_empty());
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![Value::String(s.clone())]),
        Value::Array(items) => {
            if items.iter().all(Value::is_string) {
                Ok(items.iter().filter(non_empty).cloned().collect())
            } else {
                Err(invalid(field, "must be a string or a list of strings"))
            }
        }
        _ => Err(invalid(field, "must be a string or a list of strings")),
    }
}

// ------------------------------------------------------------ OpenAI → Anthropic

fn openai_to_anthropic(
    body: &Map<String, Value>,
    opts: &RequestOptions,
) -> Result<TranslatedRequest, ApiError> {
    let mut out = Map::new();
    let mut dropped = Vec::new();
    let mut stream = false;
    let mut include_usage = false;
    let mut max_tokens = None;
    let mut max_completion_tokens = None;
    let mut tool_choice: Option<Map<String, Value>> = None;
    let mut parallel_tool_calls = None;
    let mut has_tools = false;
    let mut metadata = Map::new();

    for (key, value) in body {
        let k = key.as_str();
        match k {
            "model" => {
                out.insert(key.clone(), value.clone());
            }
            "messages" => {}
            "max_tokens" => max_tokens = positive_int(value, k)?,
            "max_completion_tokens" => max_completion_tokens = positive_int(value, k)?,
            "temperature" => {
                if let Some(t) = number(value, k)? {
                    let v = if (0.0..=1.0).contains(&t) {
                        value.clone()
                    } else {
                        json!(t.clamp(0.0, 1.0))
                    };
                    out.insert(key.clone(), v);
                }
            }
            "top_p" => copy_number(&mut out, k, value)?,
            "stop" => stops_as(&mut out, "stop_sequences", k, value)?,
            "stream" => stream = copy_stream(&mut out, value)?.unwrap_or(stream),
            "stream_options" => match value {
                Value::Null => {}
                Value::Object(o) => {
                    include_usage = o
                        .get("include_usage")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                }
                _ => return Err(invalid(k, "must be an object")),
            },
            "user" => match value {
                Value::Null => {}
                Value::String(_) => {
                    metadata.insert("user_id".into(), value.clone());
                }
                _ => return Err(invalid(k, "must be a string")),
            },
            "tools" => match value {
                Value::Null => {}
                Value::Array(tools) => {
                    let mut mapped = Vec::with_capacity(tools.len());
                    for (i, tool) in tools.iter().enumerate() {
                        mapped.push(openai_tool_to_anthropic(tool, i)?);
                    }
                    has_tools = !mapped.is_empty();
                    out.insert(key.clone(), Value::Array(mapped));
                }
                _ => return Err(invalid(k, "must be an array")),
            },
            "tool_choice" => tool_choice = openai_tool_choice_to_anthropic(value)?,
            "parallel_tool_calls" => match value {
                Value::Null => {}
                Value::Bool(b) => parallel_tool_calls = Some(*b),
                _ => return Err(invalid(k, "must be a boolean")),
            },
            "n" => match value {
                Value::Null => {}
                v if v.as_u64() == Some(1) => {}
                v if v.as_u64().is_some() => {
                    return Err(unsupported(
                        k,
                        "greater than 1 cannot be served by an Anthropic upstream (one reply per request)",
                    ))
                }
                _ => return Err(invalid(k, "must be a positive integer")),
            },
            "logprobs" => match value {
                Value::Null | Value::Bool(false) => {}
                Value::Bool(true) => {
                    return Err(unsupported(
                        k,
                        "cannot be served by an Anthropic upstream (no log probabilities)",
                    ))
                }
                _ => return Err(invalid(k, "must be a boolean")),
            },
            "logit_bias" => match value {
                Value::Null => {}
                Value::Object(o) if o.is_empty() => {}
                _ => {
                    return Err(unsupported(
                        k,
                        "cannot be served by an Anthropic upstream (no token biasing)",
                    ))
                }
            },
            "response_format" => {
                let kind = value.get("type").and_then(Value::as_str);
                if !(value.is_null() || kind == Some("text")) {
                    return Err(unsupported(
                        k,
                        "other than `text` cannot be served by an Anthropic upstream (no JSON mode)",
                    ));
                }
            }
            "modalities" => {
                let text_only = match value {
                    Value::Null => true,
                    Value::Array(m) => m.iter().all(|m| m.as_str() == Some("text")),
                    _ => false,
                };
                if !text_only {
                    return Err(unsupported(
                        k,
                        "other than [\"text\"] cannot be served by an Anthropic upstream",
                    ));
                }
            }
            "audio" | "functions" | "function_call" | "web_search_options" => {
                if !is_null(value) {
                    return Err(unsupported(
                        k,
                        "cannot be served by an Anthropic upstream (no counterpart)",
                    ));
                }
            }
            // Sampling and bookkeeping hints without counterpart, and any
            // field this version does not know: dropped.
            _ => {
                if !is_null(value) && k != "top_logprobs" {
                    dropped.push(key.clone());
                }
            }
        }
    }

    let (system, messages) = openai_messages_to_anthropic(body.get("messages"))?;
    if let Some(system) = system {
        out.insert("system".into(), system);
    }
    out.insert("messages".into(), Value::Array(messages));
    let max = max_completion_tokens
        .or(max_tokens)
        .unwrap_or(opts.default_max_tokens.max(1));
    out.insert("max_tokens".into(), json!(max));

    if parallel_tool_calls == Some(false) && tool_choice.is_none() && has_tools {
        let mut auto = Map::new();
        auto.insert("type".into(), json!("auto"));
        tool_choice = Some(auto);
    }
    if let Some(mut choice) = tool_choice {
        if parallel_tool_calls == Some(false) && choice.get("type") != Some(&json!("none")) {
            choice.insert("disable_parallel_tool_use".into(), json!(true));
        }
        out.insert("tool_choice".into(), Value::Object(choice));
    }
    if !metadata.is_empty() {
        out.insert("metadata".into(), Value::Object(metadata));
    }
    Ok(TranslatedRequest {
        body: out,
        stream,
        include_usage: stream && include_usage,
        dropped,
    })
}

fn openai_tool_to_anthropic(tool: &Value, i: usize) -> Result<Value, ApiError> {
    let field = format!("tools[{i}]");
    let Value::Object(tool) = tool else {
        return Err(invalid(&field, "must be an object"));
    };
    match str_of(tool, "type") {
        Some("function") | None => {}
        Some(_) => {
            return Err(unsupported(
                &format!("{field}.type"),
                "other than `function` cannot be served by an Anthropic upstream",
            ))
        }
    }
    let Some(Value::Object(function)) = tool.get("function") else {
        return Err(invalid(&format!("{field}.function"), "must be an object"));
    };
    let Some(name) = function.get("name").filter(|n| n.is_string()) else {
        return Err(invalid(
            &format!("{field}.function.name"),
            "must be a string",
        ));
    };
    let mut out = Map::new();
    out.insert("name".into(), name.clone());
    match function.get("description") {
        None | Some(Value::Null) => {}
        Some(d @ Value::String(_)) => {
            out.insert("description".into(), d.clone());
        }
        Some(_) => {
            return Err(invalid(
                &format!("{field}.function.description"),
                "must be a string",
            ))
        }
    }
    let schema = match function.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(invalid(
                &format!("{field}.function.parameters"),
                "must be an object",
            ))
        }
    };
    out.insert("input_schema".into(), schema);
    Ok(Value::Object(out))
}

fn openai_tool_choice_to_anthropic(v: &Value) -> Result<Option<Map<String, Value>>, ApiError> {
    let field = "tool_choice";
    let mut out = Map::new();
    match v {
        Value::Null => return Ok(None),
        Value::String(s) => {
            let kind = match s.as_str() {
                "none" => "none",
                "auto" => "auto",
                "required" => "any",
                _ => return Err(invalid(field, "must be `none`, `auto` or `required`")),
            };
            out.insert("type".into(), json!(kind));
        }
        Value::Object(o) => {
            let name = match str_of(o, "type") {
                Some("function") => o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .filter(|n| n.is_string()),
                _ => {
                    return Err(unsupported(
                        field,
                        "other than none/auto/required/function cannot be served by an Anthropic upstream",
                    ))
                }
            };
            let Some(name) = name else {
                return Err(invalid("tool_choice.function.name", "must be a string"));
            };
            out.insert("type".into(), json!("tool"));
            out.insert("name".into(), name.clone());
        }
        _ => return Err(invalid(field, "must be a string or an object")),
    }
    Ok(Some(out))
}

/// One Anthropic turn being built.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

fn push_turn(turns: &mut Vec<Turn>, role: &'static str, blocks: Vec<Value>) {
    if let Some(last) = turns.last_mut().filter(|t| t.role == role) {
        last.blocks.extend(blocks);
    } else {
        turns.push(Turn { role, blocks });
    }
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// The text parts of an OpenAI content (string or array of `text` parts;
/// `refusal` parts too when `allow_refusal`).
fn openai_text_parts(
    content: Option<&Value>,
    field: &str,
    allow_refusal: bool,
) -> Result<Vec<String>, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let pf = format!("{field}[{j}]");
                let Value::Object(part) = part else {
                    return Err(invalid(&pf, "must be an object"));
                };
                let key = match str_of(part, "type") {
                    Some("text") => "text",
                    Some("refusal") if allow_refusal => "refusal",
                    Some(other) => {
                        return Err(unsupported(
                            &format!("{pf}.type"),
                            &format!("`{other}` is not supported here by an Anthropic upstream"),
                        ))
                    }
                    None => return Err(invalid(&format!("{pf}.type"), "must be a string")),
                };
                let Some(text) = str_of(part, key) else {
                    return Err(invalid(&format!("{pf}.{key}"), "must be a string"));
                };
                out.push(text.to_string());
            }
            Ok(out)
        }
        Some(_) => Err(invalid(field, "must be a string or an array")),
    }
}

/// `data:<media type>;base64,<data>` → (media type, data).
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

fn openai_user_content(content: Option<&Value>, field: &str) -> Result<Vec<Value>, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![text_block(s)]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let pf = format!("{field}[{j}]");
                let Value::Object(part) = part else {
                    return Err(invalid(&pf, "must be an object"));
                };
                match str_of(part, "type") {
                    Some("text") => {
                        let Some(text) = str_of(part, "text") else {
                            return Err(invalid(&format!("{pf}.text"), "must be a string"));
                        };
                        out.push(text_block(text));
                    }
                    Some("image_url") => {
                        let url = match part.get("image_url") {
                            Some(Value::String(u)) => Some(u.as_str()),
                            Some(Value::Object(o)) => str_of(o, "url"),
                            _ => None,
                        };
                        let Some(url) = url else {
                            return Err(invalid(
                                &format!("{pf}.image_url.url"),
                                "must be a string",
                            ));
                        };
                        let source = if let Some((media, data)) = parse_data_url(url) {
                            json!({"type": "base64", "media_type": media, "data": data})
                        } else if url.starts_with("https://") || url.starts_with("http://") {
                            json!({"type": "url", "url": url})
                        } else {
                            return Err(unsupported(
                                &format!("{pf}.image_url.url"),
                                "must be an http(s) URL or a base64 data URL for an Anthropic upstream",
                            ));
                        };
                        out.push(json!({"type": "image", "source": source}));
                    }
                    Some(other) => {
                        return Err(unsupported(
                            &format!("{pf}.type"),
                            &format!("`{other}` cannot be served by an Anthropic upstream"),
                        ))
                    }
                    None => return Err(invalid(&format!("{pf}.type"), "must be a string")),
                }
            }
            Ok(out)
        }
        Some(_) => Err(invalid(field, "must be a string or an array")),
    }
}

fn openai_tool_calls(v: Option<&Value>, field: &str) -> Result<Vec<Value>, ApiError> {
    let calls = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err(invalid(field, "must be an array")),
    };
    let mut out = Vec::with_capacity(calls.len());
    for (j, call) in calls.iter().enumerate() {
        let cf = format!("{field}[{j}]");
        let Value::Object(call) = call else {
            return Err(invalid(&cf, "must be an object"));
        };
        match str_of(call, "type") {
            Some("function") | None => {}
            Some(_) => {
                return Err(unsupported(
                    &format!("{cf}.type"),
                    "other than `function` cannot be served by an Anthropic upstream",
                ))
            }
        }
        let Some(id) = str_of(call, "id") else {
            return Err(invalid(&format!("{cf}.id"), "must be a string"));
        };
        let Some(Value::Object(function)) = call.get("function") else {
            return Err(invalid(&format!("{cf}.function"), "must be an object"));
        };
        let Some(name) = str_of(function, "name") else {
            return Err(invalid(&format!("{cf}.function.name"), "must be a string"));
        };
        let input = match function.get("arguments") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::String(s)) if s.trim().is_empty() => Value::Object(Map::new()),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    return Err(invalid(
                        &format!("{cf}.function.arguments"),
                        "must be a JSON object for an Anthropic upstream",
                    ))
                }
            },
            Some(_) => {
                return Err(invalid(
                    &format!("{cf}.function.arguments"),
                    "must be a string",
                ))
            }
        };
        out.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(out)
}

type SystemAndMessages = (Option<Value>, Vec<Value>);

fn openai_messages_to_anthropic(messages: Option<&Value>) -> Result<SystemAndMessages, ApiError> {
    let messages = match messages {
        Some(Value::Array(m)) => m,
        _ => return Err(invalid("messages", "must be an array")),
    };
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let Value::Object(message) = message else {
            return Err(invalid(&field, "must be an object"));
        };
        let Some(role) = str_of(message, "role") else {
            return Err(invalid(&format!("{field}.role"), "must be a string"));
        };
        let content = message.get("content");
        let cf = format!("{field}.content");
        match role {
            "system" | "developer" => {
                system.extend(openai_text_parts(content, &cf, false)?);
            }
            "user" => {
                let blocks = openai_user_content(content, &cf)?;
                push_turn(&mut turns, "user", blocks);
            }
            "assistant" => {
                for key in ["function_call", "audio"] {
                    if message.get(key).is_some_and(|v| !v.is_null()) {
                        return Err(unsupported(
                            &format!("{field}.{key}"),
                            "cannot be served by an Anthropic upstream",
                        ));
                    }
                }
                let mut blocks: Vec<Value> = openai_text_parts(content, &cf, true)?
                    .iter()
                    .filter(|t| !t.is_empty())
                    .map(|t| text_block(t))
                    .collect();
                if let Some(refusal) = str_of(message, "refusal").filter(|r| !r.is_empty()) {
                    blocks.push(text_block(refusal));
                }
                blocks.extend(openai_tool_calls(
                    message.get("tool_calls"),
                    &format!("{field}.tool_calls"),
                )?);
                push_turn(&mut turns, "assistant", blocks);
            }
            "tool" => {
                let Some(id) = str_of(message, "tool_call_id") else {
                    return Err(invalid(
                        &format!("{field}.tool_call_id"),
                        "must be a string",
                    ));
                };
                let content = match content {
                    Some(Value::String(s)) => Value::String(s.clone()),
                    other => Value::Array(
                        openai_text_parts(other, &cf, false)?
                            .iter()
                            .map(|t| text_block(t))
                            .collect(),
                    ),
                };
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": content});
                // Results go before any other content of the user turn.
                match turns.last_mut().filter(|t| t.role == "user") {
                    Some(turn) => {
                        let at = turn
                            .blocks
                            .iter()
                            .take_while(|b| b.get("type") == Some(&json!("tool_result")))
                            .count();
                        turn.blocks.insert(at.min(turn.blocks.len()), block);
                    }
                    None => push_turn(&mut turns, "user", vec![block]),
                }
            }
            "function" => {
                return Err(unsupported(
                    &format!("{field}.role"),
                    "`function` (deprecated) cannot be served by an Anthropic upstream; use `tool`",
                ))
            }
            _ => {
                return Err(invalid(
                    &format!("{field}.role"),
                    "must be system, developer, user, assistant or tool",
                ))
            }
        }
    }
    let system = match system.len() {
        0 => None,
        1 => system.first().map(|s| Value::String(s.clone())),
        _ => Some(Value::Array(system.iter().map(|t| text_block(t)).collect())),
    };
    let messages = turns
        .into_iter()
        .map(|t| {
            let content = match t.blocks.as_slice() {
                [only] if only.get("type") == Some(&json!("text")) => {
                    only.get("text").cloned().unwrap_or_default()
                }
                [] => Value::String(String::new()),
                _ => Value::Array(t.blocks),
            };
            json!({"role": t.role, "content": content})
        })
        .collect();
    Ok((system, messages))
}

// ------------------------------------------------------------ Anthropic → OpenAI

/// A sampling number copied as it is (null: left out).
fn copy_number(out: &mut Map<String, Value>, k: &str, value: &Value) -> Result<(), ApiError> {
    if number(value, k)?.is_some() {
        out.insert(k.to_string(), value.clone());
    }
    Ok(())
}

/// A stop list under the other API's name (left out when empty or null).
fn stops_as(
    out: &mut Map<String, Value>,
    name: &str,
    k: &str,
    value: &Value,
) -> Result<(), ApiError> {
    let stops = string_list(value, k)?;
    if !stops.is_empty() {
        out.insert(name.to_string(), Value::Array(stops));
    }
    Ok(())
}

/// `stream`: a boolean is copied and returned; null is left out.
fn copy_stream(out: &mut Map<String, Value>, value: &Value) -> Result<Option<bool>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(b) => {
            out.insert("stream".to_string(), value.clone());
            Ok(Some(*b))
        }
        _ => Err(invalid("stream", "must be a boolean")),
    }
}

fn anthropic_to_openai(body: &Map<String, Value>) -> Result<TranslatedRequest, ApiError> {
    let mut out = Map::new();
    let mut dropped = Vec::new();
    let mut stream = false;
    let mut disable_parallel = false;
    for (key, value) in body {
        let k = key.as_str();
        match k {
            "model" => {
                out.insert(key.clone(), value.clone());
            }
            "messages" | "system" => {}
            "max_tokens" => {
                if let Some(n) = positive_int(value, k)? {
                    out.insert("max_completion_tokens".into(), json!(n));
                }
            }
            "temperature" | "top_p" => copy_number(&mut out, k, value)?,
            "stop_sequences" => stops_as(&mut out, "stop", k, value)?,
            "stream" => stream = copy_stream(&mut out, value)?.unwrap_or(stream),
            "metadata" => match value {
                Value::Null => {}
                Value::Object(m) => match m.get("user_id") {
                    None | Some(Value::Null) => {}
                    Some(u @ Value::String(_)) => {
                        out.insert("user".into(), u.clone());
                    }
                    Some(_) => return Err(invalid("metadata.user_id", "must be a string")),
                },
                _ => return Err(invalid(k, "must be an object")),
            },
            "tools" => match value {
                Value::Null => {}
                Value::Array(tools) => {
                    let mut mapped = Vec::with_capacity(tools.len());
                    for (i, tool) in tools.iter().enumerate() {
                        mapped.push(anthropic_tool_to_openai(tool, i)?);
                    }
                    out.insert(key.clone(), Value::Array(mapped));
                }
                _ => return Err(invalid(k, "must be an array")),
            },
            "tool_choice" => match value {
                Value::Null => {}
                Value::Object(o) => {
                    disable_parallel = o.get("disable_parallel_tool_use") == Some(&json!(true));
                    let choice = match str_of(o, "type") {
                        Some("auto") => json!("auto"),
                        Some("any") => json!("required"),
                        Some("none") => json!("none"),
                        Some("tool") => {
                            let Some(name) = o.get("name").filter(|n| n.is_string()) else {
                                return Err(invalid("tool_choice.name", "must be a string"));
                            };
                            json!({"type": "function", "function": {"name": name}})
                        }
                        _ => {
                            return Err(invalid(
                                "tool_choice.type",
                                "must be auto, any, tool or none",
                            ))
                        }
                    };
                    out.insert(key.clone(), choice);
                }
                _ => return Err(invalid(k, "must be an object")),
            },
            "container" | "mcp_servers" => {
                if !is_null(value) {
                    return Err(unsupported(
                        k,
                        "cannot be served by an OpenAI upstream (no counterpart)",
                    ));
                }
            }
            // top_k, thinking, service_tier, and fields this version does
            // not know: dropped.
            _ => {
                if !is_null(value) {
                    dropped.push(key.clone());
                }
            }
        }
    }
    if disable_parallel && out.contains_key("tools") {
        out.insert("parallel_tool_calls".into(), json!(false));
    }
    if stream {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let mut messages = Vec::new();
    if let Some(system) = anthropic_system_to_openai(body.get("system"))? {
        messages.push(json!({"role": "system", "content": system}));
    }
    anthropic_messages_to_openai(body.get("messages"), &mut messages)?;
    out.insert("messages".into(), Value::Array(messages));
    Ok(TranslatedRequest {
        body: out,
        stream,
        include_usage: false,
        dropped,
    })
}

fn anthropic_system_to_openai(system: Option<&Value>) -> Result<Option<String>, ApiError> {
    match system {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (i, block) in blocks.iter().enumerate() {
                let field = format!("system[{i}]");
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {}
                    _ => {
                        return Err(unsupported(
                            &format!("{field}.type"),
                            "other than `text` cannot be served by an OpenAI upstream",
                        ))
                    }
                }
                let Some(text) = block.get("text").and_then(Value::as_str) else {
                    return Err(invalid(&format!("{field}.text"), "must be a string"));
                };
                texts.push(text);
            }
            Ok(Some(texts.join("\n")))
        }
        Some(_) => Err(invalid("system", "must be a string or an array")),
    }
}

fn anthropic_tool_to_openai(tool: &Value, i: usize) -> Result<Value, ApiError> {
    let field = format!("tools[{i}]");
    let Value::Object(tool) = tool else {
        return Err(invalid(&field, "must be an object"));
    };
    match str_of(tool, "type") {
        None | Some("custom") => {}
        Some(other) => {
            return Err(unsupported(
                &format!("{field}.type"),
                &format!("`{other}` (a server tool) cannot be served by an OpenAI upstream"),
            ))
        }
    }
    let Some(name) = tool.get("name").filter(|n| n.is_string()) else {
        return Err(invalid(&format!("{field}.name"), "must be a string"));
    };
    let mut function = Map::new();
    function.insert("name".into(), name.clone());
    match tool.get("description") {
        None | Some(Value::Null) => {}
        Some(d @ Value::String(_)) => {
            function.insert("description".into(), d.clone());
        }
        Some(_) => return Err(invalid(&format!("{field}.description"), "must be a string")),
    }
    match tool.get("input_schema") {
        Some(s @ Value::Object(_)) => {
            function.insert("parameters".into(), s.clone());
        }
        _ => {
            return Err(invalid(
                &format!("{field}.input_schema"),
                "must be an object",
            ))
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

/// An Anthropic `image` block → OpenAI `image_url` part.
fn anthropic_image_to_openai(block: &Map<String, Value>, field: &str) -> Result<Value, ApiError> {
    let Some(Value::Object(source)) = block.get("source") else {
        return Err(invalid(&format!("{field}.source"), "must be an object"));
    };
    let url = match str_of(source, "type") {
        Some("base64") => {
            let (Some(media), Some(data)) = (str_of(source, "media_type"), str_of(source, "data"))
            else {
                return Err(invalid(
                    &format!("{field}.source"),
                    "needs string `media_type` and `data`",
                ));
            };
            format!("data:{media};base64,{data}")
        }
        Some("url") => match str_of(source, "url") {
            Some(u) => u.to_string(),
            None => return Err(invalid(&format!("{field}.source.url"), "must be a string")),
        },
        _ => {
            return Err(unsupported(
                &format!("{field}.source.type"),
                "other than base64 or url cannot be served by an OpenAI upstream",
            ))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// The text of a `tool_result` content (string or text blocks).
fn anthropic_tool_result_content(content: Option<&Value>, field: &str) -> Result<Value, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(Value::String(String::new())),
        Some(Value::String(s)) => Ok(Value::String(s.clone())),
        Some(Value::Array(blocks)) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (k, block) in blocks.iter().enumerate() {
                let bf = format!("{field}[{k}]");
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => match block.get("text").and_then(Value::as_str) {
                        Some(t) => parts.push(t),
                        None => return Err(invalid(&format!("{bf}.text"), "must be a string")),
                    },
                    _ => return Err(unsupported(
                        &format!("{bf}.type"),
                        "other than `text` in a tool result cannot be served by an OpenAI upstream",
                    )),
                }
            }
            Ok(match parts.as_slice() {
                [only] => Value::String((*only).to_string()),
                _ => Value::Array(parts.iter().map(|t| text_block(t)).collect()),
            })
        }
        Some(_) => Err(invalid(field, "must be a string or an array")),
    }
}

fn anthropic_messages_to_openai(
    messages: Option<&Value>,
    out: &mut Vec<Value>,
) -> Result<(), ApiError> {
    let messages = match messages {
        Some(Value::Array(m)) => m,
        _ => return Err(invalid("messages", "must be an array")),
    };
    for (i, message) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let Value::Object(message) = message else {
            return Err(invalid(&field, "must be an object"));
        };
        let role = match str_of(message, "role") {
            Some(r @ ("user" | "assistant")) => r,
            _ => {
                return Err(invalid(
                    &format!("{field}.role"),
                    "must be user or assistant",
                ))
            }
        };
        let cf = format!("{field}.content");
        let blocks = match message.get("content") {
            Some(Value::String(s)) => {
                out.push(json!({"role": role, "content": s}));
                continue;
            }
            Some(Value::Array(blocks)) => blocks,
            _ => return Err(invalid(&cf, "must be a string or an array")),
        };
        let mut parts: Vec<Value> = Vec::new();
        let mut tool_calls: Vec<Value> = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let bf = format!("{cf}[{j}]");
            let Value::Object(block) = block else {
                return Err(invalid(&bf, "must be an object"));
            };
            let Some(kind) = str_of(block, "type") else {
                return Err(invalid(&format!("{bf}.type"), "must be a string"));
            };
            match (role, kind) {
                (_, "text") => {
                    let Some(text) = str_of(block, "text") else {
                        return Err(invalid(&format!("{bf}.text"), "must be a string"));
                    };
                    parts.push(text_block(text));
                }
                ("user", "image") => parts.push(anthropic_image_to_openai(block, &bf)?),
                ("user", "tool_result") => {
                    let Some(id) = str_of(block, "tool_use_id") else {
                        return Err(invalid(&format!("{bf}.tool_use_id"), "must be a string"));
                    };
                    let content = anthropic_tool_result_content(
                        block.get("content"),
                        &format!("{bf}.content"),
                    )?;
                    out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
                }
                ("assistant", "tool_use") => {
                    let (Some(id), Some(name)) = (str_of(block, "id"), str_of(block, "name"))
                    else {
                        return Err(invalid(
                            &bf,
                            "a tool_use block needs string `id` and `name`",
                        ));
                    };
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
                ("assistant", "thinking" | "redacted_thinking") => {}
                (_, other) => {
                    return Err(unsupported(
                        &format!("{bf}.type"),
                        &format!("`{other}` cannot be served by an OpenAI upstream"),
                    ))
                }
            }
        }
        let all_text = parts.iter().all(|p| p.get("type") == Some(&json!("text")));
        let content = match parts.as_slice() {
            [] if !tool_calls.is_empty() => Value::Null,
            [] if role == "user" => continue, // only tool results
            [] => Value::String(String::new()),
            [only] if all_text => only.get("text").cloned().unwrap_or_default(),
            _ => Value::Array(parts),
        };
        let mut m = Map::new();
        m.insert("role".into(), json!(role));
        m.insert("content".into(), content);
        if !tool_calls.is_empty() {
            m.insert("tool_calls".into(), Value::Array(tool_calls));
        }
        out.push(Value::Object(m));
    }
    Ok(())
}

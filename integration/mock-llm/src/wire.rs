//! The wire format of the responses: OpenAI and Anthropic JSON bodies, their SSE
//! streams, error bodies and embeddings. Structs (not `json!`) keep the fields in the
//! order the real APIs send them and avoid building maps per request.

use serde::Serialize;
use serde_json::Value;

use crate::logic::{self, Api, ToolCall, EMBEDDING_DIMS};

/// Token usage of one chat request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
}

/// What is common to every response of one request.
pub struct Meta<'a> {
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
}

/// A sequence of SSE events written into a single buffer. `ends[i]` is the end offset of
/// event `i`, so the events can later be cut out of one `Bytes` without copying.
#[derive(Default)]
pub struct Events {
    pub buf: Vec<u8>,
    pub ends: Vec<usize>,
}

impl Events {
    fn data<T: Serialize>(&mut self, value: &T) {
        self.buf.extend_from_slice(b"data: ");
        write_json(&mut self.buf, value);
        self.buf.extend_from_slice(b"\n\n");
        self.ends.push(self.buf.len());
    }

    fn raw(&mut self, event: &[u8]) {
        self.buf.extend_from_slice(event);
        self.ends.push(self.buf.len());
    }

    fn event<T: Serialize>(&mut self, kind: &str, value: &T) {
        self.buf.extend_from_slice(b"event: ");
        self.buf.extend_from_slice(kind.as_bytes());
        self.buf.extend_from_slice(b"\ndata: ");
        write_json(&mut self.buf, value);
        self.buf.extend_from_slice(b"\n\n");
        self.ends.push(self.buf.len());
    }
}

fn write_json<T: Serialize>(buf: &mut Vec<u8>, value: &T) {
    // Serialising these plain structs into a Vec cannot fail (no maps with non-string
    // keys, no I/O); should it ever, the event is left truncated rather than panicking.
    let _ = serde_json::to_writer(&mut *buf, value);
}

/// Serialises `value` to a JSON byte vector.
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    write_json(&mut buf, value);
    buf
}

// ---------------------------------------------------------------- OpenAI

#[derive(Serialize)]
struct OaUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<Usage> for OaUsage {
    fn from(u: Usage) -> Self {
        OaUsage {
            prompt_tokens: u.input,
            completion_tokens: u.output,
            total_tokens: u.input + u.output,
        }
    }
}

#[derive(Serialize)]
struct OaMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[OaToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct OaFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct OaToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OaFunction<'a>,
}

#[derive(Serialize)]
struct OaFunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct OaToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: OaFunctionDelta<'a>,
}

#[derive(Serialize)]
struct OaChoice<'a> {
    index: u32,
    message: OaMessage<'a>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct OaCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [OaChoice<'a>; 1],
    usage: OaUsage,
}

#[derive(Serialize)]
struct OaDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[OaToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct OaChunkChoice<'a> {
    index: u32,
    delta: OaDelta<'a>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct OaChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [OaChunkChoice<'a>],
    /// Absent without `include_usage`; `null` on the ordinary chunks with it; the usage
    /// on the final chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<OaUsage>>,
}

/// Non-streaming `chat.completion` body.
pub fn openai_completion(meta: &Meta, reply: &str, usage: Usage) -> Vec<u8> {
    to_json(&OaCompletion {
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices: [OaChoice {
            index: 0,
            message: OaMessage {
                role: "assistant",
                content: Some(reply),
                tool_calls: None,
            },
            finish_reason: "stop",
        }],
        usage: usage.into(),
    })
}

/// Non-streaming `chat.completion` body holding one tool call (`content: null`,
/// `finish_reason: "tool_calls"`).
pub fn openai_tool_completion(
    meta: &Meta,
    call_id: &str,
    call: &ToolCall,
    usage: Usage,
) -> Vec<u8> {
    to_json(&OaCompletion {
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices: [OaChoice {
            index: 0,
            message: OaMessage {
                role: "assistant",
                content: None,
                tool_calls: Some([OaToolCall {
                    id: call_id,
                    kind: "function",
                    function: OaFunction {
                        name: &call.name,
                        arguments: &call.arguments,
                    },
                }]),
            },
            finish_reason: "tool_calls",
        }],
        usage: usage.into(),
    })
}

/// The SSE stream of `chat.completion.chunk`s for `pieces`, ending with `data: [DONE]`.
pub fn openai_stream(meta: &Meta, pieces: &[&str], usage: Usage, include_usage: bool) -> Events {
    openai_chunks(meta, None, pieces, usage, include_usage)
}

/// The SSE stream of one tool call: a role chunk carrying the call's `id`, `type` and
/// `function.name` (with empty `arguments`), one `delta.tool_calls` chunk per piece of
/// the arguments, a chunk with `finish_reason: "tool_calls"`, the usage chunk with
/// `include_usage`, then `data: [DONE]`.
pub fn openai_tool_stream(
    meta: &Meta,
    call_id: &str,
    name: &str,
    pieces: &[&str],
    usage: Usage,
    include_usage: bool,
) -> Events {
    openai_chunks(meta, Some((call_id, name)), pieces, usage, include_usage)
}

/// Text chunks (`tool` is `None`) or the chunks of one tool call `(id, name)`.
fn openai_chunks(
    meta: &Meta,
    tool: Option<(&str, &str)>,
    pieces: &[&str],
    usage: Usage,
    include_usage: bool,
) -> Events {
    let mut ev = Events {
        buf: Vec::with_capacity(160 * (pieces.len() + 4)),
        ends: Vec::with_capacity(pieces.len() + 4),
    };
    let chunk = |delta: OaDelta, finish_reason: Option<&'static str>, ev: &mut Events| {
        ev.data(&OaChunk {
            id: meta.id,
            object: "chat.completion.chunk",
            created: meta.created,
            model: meta.model,
            choices: &[OaChunkChoice {
                index: 0,
                delta,
                finish_reason,
            }],
            usage: if include_usage { Some(None) } else { None },
        })
    };
    match tool {
        None => chunk(
            OaDelta {
                role: Some("assistant"),
                content: Some(""),
                tool_calls: None,
            },
            None,
            &mut ev,
        ),
        Some((id, name)) => chunk(
            OaDelta {
                role: Some("assistant"),
                content: None,
                tool_calls: Some([OaToolCallDelta {
                    index: 0,
                    id: Some(id),
                    kind: Some("function"),
                    function: OaFunctionDelta {
                        name: Some(name),
                        arguments: "",
                    },
                }]),
            },
            None,
            &mut ev,
        ),
    }
    for piece in pieces {
        let delta = match tool {
            None => OaDelta {
                role: None,
                content: Some(piece),
                tool_calls: None,
            },
            Some(_) => OaDelta {
                role: None,
                content: None,
                tool_calls: Some([OaToolCallDelta {
                    index: 0,
                    id: None,
                    kind: None,
                    function: OaFunctionDelta {
                        name: None,
                        arguments: piece,
                    },
                }]),
            },
        };
        chunk(delta, None, &mut ev);
    }
    chunk(
        OaDelta {
            role: None,
            content: None,
            tool_calls: None,
        },
        Some(if tool.is_some() { "tool_calls" } else { "stop" }),
        &mut ev,
    );
    if include_usage {
        ev.data(&OaChunk {
            id: meta.id,
            object: "chat.completion.chunk",
            created: meta.created,
            model: meta.model,
            choices: &[],
            usage: Some(Some(usage.into())),
        });
    }
    ev.raw(b"data: [DONE]\n\n");
    ev
}

#[derive(Serialize)]
struct OaEmbedding<'a, E: Serialize + ?Sized> {
    object: &'static str,
    index: usize,
    embedding: &'a E,
}

#[derive(Serialize)]
struct OaEmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// `POST /v1/embeddings` body for `inputs`; `base64` for `encoding_format: "base64"`
/// (little-endian f32s, as OpenAI sends them).
pub fn openai_embeddings(model: &str, inputs: &[&str], base64: bool) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64 + inputs.len() * (EMBEDDING_DIMS * 22 + 64));
    buf.extend_from_slice(br#"{"object":"list","data":["#);
    let mut words = 0;
    for (index, input) in inputs.iter().enumerate() {
        let (vector, n) = logic::embed(input);
        words += n;
        if index > 0 {
            buf.push(b',');
        }
        if base64 {
            let bytes: Vec<u8> = vector
                .iter()
                .flat_map(|x| (*x as f32).to_le_bytes())
                .collect();
            let encoded = logic::base64_encode(&bytes);
            write_json(
                &mut buf,
                &OaEmbedding {
                    object: "embedding",
                    index,
                    embedding: encoded.as_str(),
                },
            );
        } else {
            write_json(
                &mut buf,
                &OaEmbedding {
                    object: "embedding",
                    index,
                    embedding: &vector[..],
                },
            );
        }
    }
    buf.extend_from_slice(br#"],"model":"#);
    write_json(&mut buf, &model);
    buf.extend_from_slice(br#","usage":"#);
    write_json(
        &mut buf,
        &OaEmbeddingUsage {
            prompt_tokens: words,
            total_tokens: words,
        },
    );
    buf.push(b'}');
    buf
}

// ---------------------------------------------------------------- Anthropic

#[derive(Serialize)]
struct AnUsage {
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
struct AnText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct AnToolUse<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    name: &'a str,
    input: &'a Value,
}

#[derive(Serialize)]
#[serde(untagged)]
enum AnBlock<'a> {
    Text(AnText<'a>),
    ToolUse(AnToolUse<'a>),
}

#[derive(Serialize)]
struct AnMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: &'a [AnBlock<'a>],
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'static str>,
    usage: AnUsage,
}

#[derive(Serialize)]
struct AnMessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: AnMessage<'a>,
}

#[derive(Serialize)]
struct AnBlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    content_block: AnBlock<'a>,
}

#[derive(Serialize)]
struct AnJsonDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    partial_json: &'a str,
}

#[derive(Serialize)]
struct AnBlockDelta<D> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: D,
}

#[derive(Serialize)]
struct AnStop {
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
}

#[derive(Serialize)]
struct AnOutputUsage {
    output_tokens: u64,
}

#[derive(Serialize)]
struct AnMessageDelta {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: AnStop,
    usage: AnOutputUsage,
}

fn anthropic_body(
    meta: &Meta,
    block: AnBlock<'_>,
    stop_reason: &'static str,
    usage: Usage,
) -> Vec<u8> {
    to_json(&AnMessage {
        id: meta.id,
        kind: "message",
        role: "assistant",
        model: meta.model,
        content: &[block],
        stop_reason: Some(stop_reason),
        stop_sequence: None,
        usage: AnUsage {
            input_tokens: usage.input,
            output_tokens: usage.output,
        },
    })
}

/// Non-streaming `message` body.
pub fn anthropic_message(meta: &Meta, reply: &str, usage: Usage) -> Vec<u8> {
    let block = AnBlock::Text(AnText {
        kind: "text",
        text: reply,
    });
    anthropic_body(meta, block, "end_turn", usage)
}

/// Non-streaming `message` body holding one `tool_use` block (`stop_reason:
/// "tool_use"`).
pub fn anthropic_tool_message(
    meta: &Meta,
    call_id: &str,
    call: &ToolCall,
    usage: Usage,
) -> Vec<u8> {
    let block = AnBlock::ToolUse(AnToolUse {
        kind: "tool_use",
        id: call_id,
        name: &call.name,
        input: &call.input,
    });
    anthropic_body(meta, block, "tool_use", usage)
}

/// The Anthropic event stream for `pieces`: message_start, content_block_start, ping,
/// one content_block_delta per piece, content_block_stop, message_delta, message_stop.
pub fn anthropic_stream(meta: &Meta, pieces: &[&str], usage: Usage) -> Events {
    anthropic_events(meta, None, pieces, usage)
}

/// The same for one tool call: the block starts as `tool_use` with its `id`, `name` and
/// an empty `input`, the pieces of the arguments are `input_json_delta`s, and the stop
/// reason is `tool_use`.
pub fn anthropic_tool_stream(
    meta: &Meta,
    call_id: &str,
    name: &str,
    pieces: &[&str],
    usage: Usage,
) -> Events {
    anthropic_events(meta, Some((call_id, name)), pieces, usage)
}

fn anthropic_events(
    meta: &Meta,
    tool: Option<(&str, &str)>,
    pieces: &[&str],
    usage: Usage,
) -> Events {
    let mut ev = Events {
        buf: Vec::with_capacity(160 * (pieces.len() + 7)),
        ends: Vec::with_capacity(pieces.len() + 7),
    };
    ev.event(
        "message_start",
        &AnMessageStart {
            kind: "message_start",
            message: AnMessage {
                id: meta.id,
                kind: "message",
                role: "assistant",
                model: meta.model,
                content: &[],
                stop_reason: None,
                stop_sequence: None,
                usage: AnUsage {
                    input_tokens: usage.input,
                    // The real API reports the first output token here already.
                    output_tokens: usage.output.min(1),
                },
            },
        },
    );
    let empty_input = Value::Object(serde_json::Map::new());
    match tool {
        None => ev.raw(
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\
              \"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        ),
        Some((id, name)) => ev.event(
            "content_block_start",
            &AnBlockStart {
                kind: "content_block_start",
                index: 0,
                content_block: AnBlock::ToolUse(AnToolUse {
                    kind: "tool_use",
                    id,
                    name,
                    input: &empty_input,
                }),
            },
        ),
    }
    ev.raw(b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
    for piece in pieces {
        match tool {
            None => ev.event(
                "content_block_delta",
                &AnBlockDelta {
                    kind: "content_block_delta",
                    index: 0,
                    delta: AnText {
                        kind: "text_delta",
                        text: piece,
                    },
                },
            ),
            Some(_) => ev.event(
                "content_block_delta",
                &AnBlockDelta {
                    kind: "content_block_delta",
                    index: 0,
                    delta: AnJsonDelta {
                        kind: "input_json_delta",
                        partial_json: piece,
                    },
                },
            ),
        }
    }
    ev.raw(b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
    ev.event(
        "message_delta",
        &AnMessageDelta {
            kind: "message_delta",
            delta: AnStop {
                stop_reason: if tool.is_some() {
                    "tool_use"
                } else {
                    "end_turn"
                },
                stop_sequence: None,
            },
            usage: AnOutputUsage {
                output_tokens: usage.output,
            },
        },
    );
    ev.raw(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    ev
}

// ---------------------------------------------------------------- errors

#[derive(Serialize)]
struct OaErrorInner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

#[derive(Serialize)]
struct OaError<'a> {
    error: OaErrorInner<'a>,
}

#[derive(Serialize)]
struct AnErrorInner<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct AnError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnErrorInner<'a>,
}

/// An error body in the API's own shape. OpenAI: `{"error":{"message","type","param",
/// "code"}}`; Anthropic: `{"type":"error","error":{"type","message"}}`. The error type
/// follows the status as the real APIs do.
pub fn error_body(api: Api, status: u16, message: &str) -> Vec<u8> {
    match api {
        Api::OpenAi => {
            let (kind, code) = match status {
                400 => ("invalid_request_error", "invalid_request"),
                401 => ("authentication_error", "invalid_api_key"),
                403 => ("permission_error", "permission_denied"),
                404 => ("not_found_error", "not_found"),
                405 => ("invalid_request_error", "method_not_allowed"),
                413 => ("invalid_request_error", "request_too_large"),
                429 => ("rate_limit_error", "rate_limit_exceeded"),
                503 => ("server_error", "service_unavailable"),
                500..=599 => ("server_error", "server_error"),
                _ => ("invalid_request_error", "invalid_request"),
            };
            to_json(&OaError {
                error: OaErrorInner {
                    message,
                    kind,
                    param: None,
                    code,
                },
            })
        }
        Api::Anthropic => {
            let kind = match status {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                503 | 529 => "overloaded_error",
                500..=599 => "api_error",
                _ => "invalid_request_error",
            };
            to_json(&AnError {
                kind: "error",
                error: AnErrorInner { kind, message },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const META: Meta = Meta {
        id: "id1",
        created: 7,
        model: "m",
    };

    fn events(ev: &Events) -> Vec<String> {
        let mut out = Vec::new();
        let mut start = 0;
        for &end in &ev.ends {
            out.push(String::from_utf8(ev.buf[start..end].to_vec()).unwrap());
            start = end;
        }
        assert_eq!(start, ev.buf.len());
        out
    }

    fn data(event: &str) -> Value {
        let line = event.lines().find(|l| l.starts_with("data: ")).unwrap();
        serde_json::from_str(&line["data: ".len()..]).unwrap()
    }

    #[test]
    fn openai_non_stream() {
        let body: Value = serde_json::from_slice(&openai_completion(
            &META,
            "hi",
            Usage {
                input: 3,
                output: 1,
            },
        ))
        .unwrap();
        assert_eq!(
            body,
            json!({"id":"id1","object":"chat.completion","created":7,"model":"m",
                "choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],
                "usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}})
        );
    }

    #[test]
    fn openai_sse() {
        let usage = Usage {
            input: 2,
            output: 2,
        };
        let ev = events(&openai_stream(&META, &["a ", "b"], usage, false));
        assert_eq!(ev.len(), 5);
        assert_eq!(
            ev[0],
            "data: {\"id\":\"id1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\
             \"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n"
        );
        assert_eq!(data(&ev[1])["choices"][0]["delta"], json!({"content":"a "}));
        assert_eq!(data(&ev[3])["choices"][0]["delta"], json!({}));
        assert_eq!(data(&ev[3])["choices"][0]["finish_reason"], "stop");
        assert_eq!(ev[4], "data: [DONE]\n\n");

        let ev = events(&openai_stream(&META, &["a ", "b"], usage, true));
        assert_eq!(ev.len(), 6);
        for e in &ev[..4] {
            assert_eq!(data(e)["usage"], Value::Null);
            assert!(e.contains("\"usage\":null"));
        }
        assert_eq!(
            data(&ev[4]),
            json!({"id":"id1","object":"chat.completion.chunk","created":7,"model":"m","choices":[],
                "usage":{"prompt_tokens":2,"completion_tokens":2,"total_tokens":4}})
        );
    }

    #[test]
    fn anthropic_sse() {
        let usage = Usage {
            input: 4,
            output: 2,
        };
        let ev = events(&anthropic_stream(&META, &["a ", "b"], usage));
        let kinds: Vec<&str> = ev
            .iter()
            .map(|e| e.lines().next().unwrap().strip_prefix("event: ").unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        for (e, kind) in ev.iter().zip(&kinds) {
            assert_eq!(data(e)["type"], *kind);
            assert!(e.ends_with("\n\n"));
        }
        assert_eq!(
            data(&ev[0])["message"]["usage"],
            json!({"input_tokens":4,"output_tokens":1})
        );
        assert_eq!(
            data(&ev[3])["delta"],
            json!({"type":"text_delta","text":"a "})
        );
        assert_eq!(
            data(&ev[6]),
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},
                "usage":{"output_tokens":2}})
        );
    }

    #[test]
    fn anthropic_non_stream() {
        let body: Value = serde_json::from_slice(&anthropic_message(
            &META,
            "x y",
            Usage {
                input: 1,
                output: 2,
            },
        ))
        .unwrap();
        assert_eq!(
            body,
            json!({"id":"id1","type":"message","role":"assistant","model":"m",
                "content":[{"type":"text","text":"x y"}],"stop_reason":"end_turn","stop_sequence":null,
                "usage":{"input_tokens":1,"output_tokens":2}})
        );
    }

    fn call() -> ToolCall {
        ToolCall {
            name: "get_weather".into(),
            arguments: r#"{"city": "Paris"}"#.into(),
            input: json!({"city": "Paris"}),
        }
    }

    #[test]
    fn openai_tool_call_bodies() {
        let usage = Usage {
            input: 5,
            output: 2,
        };
        let body: Value =
            serde_json::from_slice(&openai_tool_completion(&META, "call_1", &call(), usage))
                .unwrap();
        assert_eq!(
            body,
            json!({"id":"id1","object":"chat.completion","created":7,"model":"m",
                "choices":[{"index":0,"message":{"role":"assistant","content":null,
                    "tool_calls":[{"id":"call_1","type":"function",
                        "function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]},
                    "finish_reason":"tool_calls"}],
                "usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}})
        );
        let pieces = ["{\"city\": ", "\"Paris\"}"];
        let ev = events(&openai_tool_stream(
            &META,
            "call_1",
            "get_weather",
            &pieces,
            usage,
            true,
        ));
        assert_eq!(ev.len(), 6);
        assert_eq!(
            data(&ev[0])["choices"][0]["delta"],
            json!({"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function",
                "function":{"name":"get_weather","arguments":""}}]})
        );
        assert_eq!(
            data(&ev[1])["choices"][0]["delta"],
            json!({"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": "}}]})
        );
        let args: String = ev[..3]
            .iter()
            .map(|e| {
                data(e)["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(args, r#"{"city": "Paris"}"#);
        assert_eq!(data(&ev[3])["choices"][0]["delta"], json!({}));
        assert_eq!(data(&ev[3])["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(data(&ev[4])["usage"]["completion_tokens"], 2);
        assert_eq!(ev[5], "data: [DONE]\n\n");
    }

    #[test]
    fn anthropic_tool_call_bodies() {
        let usage = Usage {
            input: 5,
            output: 2,
        };
        let body: Value =
            serde_json::from_slice(&anthropic_tool_message(&META, "toolu_1", &call(), usage))
                .unwrap();
        assert_eq!(
            body,
            json!({"id":"id1","type":"message","role":"assistant","model":"m",
                "content":[{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}],
                "stop_reason":"tool_use","stop_sequence":null,
                "usage":{"input_tokens":5,"output_tokens":2}})
        );
        let pieces = ["{\"city\": ", "\"Paris\"}"];
        let ev = events(&anthropic_tool_stream(
            &META,
            "toolu_1",
            "get_weather",
            &pieces,
            usage,
        ));
        assert_eq!(ev.len(), 8);
        assert_eq!(
            data(&ev[1]),
            json!({"type":"content_block_start","index":0,
                "content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}})
        );
        assert_eq!(
            data(&ev[3]),
            json!({"type":"content_block_delta","index":0,
                "delta":{"type":"input_json_delta","partial_json":"{\"city\": "}})
        );
        let json_text: String = ev[3..5]
            .iter()
            .map(|e| {
                data(e)["delta"]["partial_json"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(json_text, r#"{"city": "Paris"}"#);
        assert_eq!(data(&ev[6])["delta"]["stop_reason"], "tool_use");
        assert_eq!(data(&ev[6])["usage"]["output_tokens"], 2);
        assert!(ev[7].starts_with("event: message_stop\n"));
    }

    #[test]
    fn errors() {
        let v: Value = serde_json::from_slice(&error_body(Api::OpenAi, 503, "down")).unwrap();
        assert_eq!(v["error"]["message"], "down");
        assert_eq!(v["error"]["type"], "server_error");
        let v: Value = serde_json::from_slice(&error_body(Api::Anthropic, 429, "slow")).unwrap();
        assert_eq!(
            v,
            json!({"type":"error","error":{"type":"rate_limit_error","message":"slow"}})
        );
    }

    #[test]
    fn embeddings_body() {
        let v: Value =
            serde_json::from_slice(&openai_embeddings("e", &["hello world", ""], false)).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "e");
        assert_eq!(v["usage"], json!({"prompt_tokens":2,"total_tokens":2}));
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 64);
        let v: Value = serde_json::from_slice(&openai_embeddings("e", &["hello"], true)).unwrap();
        // 64 f32 = 256 bytes -> 344 base64 characters.
        assert_eq!(v["data"][0]["embedding"].as_str().unwrap().len(), 344);
    }
}

//! Incremental SSE translation, one upstream event at a time.

use serde_json::{json, Map, Value};

use super::response::{
    anthropic_error_fields, anthropic_type_of, error_value, openai_error_fields, openai_type_of,
};
use super::{finish_reason_of, stop_reason_of, str_of, to_json_string, Counts, ResponseOptions};
use crate::core::api::Api;
use crate::core::sse::{serialize_event, SseEvent};

/// At most this many content blocks / tool calls are tracked per stream;
/// events for further ones are dropped (a hostile upstream cannot make the
/// translator grow without bound).
const MAX_TRACKED: usize = 1024;

const TRUNCATED: &str = "the upstream stream ended before completion";

/// Translates an upstream SSE stream into the client's API, event by event.
/// Holds only a few counters and ids, never the stream. See the module
/// documentation for the call order.
#[derive(Debug, Clone)]
pub struct StreamTranslator {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Passthrough,
    ToOpenAi(AnthropicToOpenAi),
    ToAnthropic(OpenAiToAnthropic),
}

impl StreamTranslator {
    /// A translator from `upstream`'s stream format to `client`'s.
    pub fn new(client: Api, upstream: Api, opts: ResponseOptions) -> Self {
        let inner = match (client, upstream) {
            (Api::OpenAi, Api::Anthropic) => Inner::ToOpenAi(AnthropicToOpenAi::new(opts)),
            (Api::Anthropic, Api::OpenAi) => Inner::ToAnthropic(OpenAiToAnthropic::new(opts)),
            _ => Inner::Passthrough,
        };
        Self { inner }
    }

    /// The bytes (zero or more complete events, in the client's format) to
    /// send for one upstream event. Events without data, non-JSON data and
    /// unknown event types give nothing; everything after the end of the
    /// stream (or an error event) gives nothing. Same API: the event's raw
    /// bytes.
    pub fn on_event(&mut self, ev: &SseEvent) -> Vec<u8> {
        match &mut self.inner {
            Inner::Passthrough => ev.raw.clone(),
            Inner::ToOpenAi(t) => t.on_event(ev),
            Inner::ToAnthropic(t) => t.on_event(ev),
        }
    }

    /// At the end of the upstream body: the closing events when the upstream
    /// had finished its message without closing the stream, an error event
    /// when it stopped before finishing, nothing when the stream was
    /// complete (or for the same API).
    pub fn finish(&mut self) -> Vec<u8> {
        match &mut self.inner {
            Inner::Passthrough => Vec::new(),
            Inner::ToOpenAi(t) => t.finish(),
            Inner::ToAnthropic(t) => t.finish(),
        }
    }

    /// Whether the translated stream is complete (its end, or an error
    /// event, was sent).
    pub fn done(&self) -> bool {
        match &self.inner {
            Inner::Passthrough => false,
            Inner::ToOpenAi(t) => t.done,
            Inner::ToAnthropic(t) => t.done,
        }
    }
}

fn parse_data(ev: &SseEvent) -> Option<Map<String, Value>> {
    if !ev.has_data {
        return None;
    }
    match serde_json::from_str::<Value>(&ev.data) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

fn index_of(obj: &Map<String, Value>) -> Option<u64> {
    obj.get("index").and_then(Value::as_u64)
}

// ------------------------------------------------------------ Anthropic → OpenAI

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    /// A tool_use block and its OpenAI `tool_calls` index.
    Tool(u64),
    Other,
}

#[derive(Debug, Clone)]
struct AnthropicToOpenAi {
    opts: ResponseOptions,
    id: String,
    model: String,
    started: bool,
    done: bool,
    /// Anthropic block index → kind.
    blocks: Vec<(u64, BlockKind)>,
    next_tool: u64,
    counts: Counts,
    finish_reason: Option<&'static str>,
}

impl AnthropicToOpenAi {
    fn new(opts: ResponseOptions) -> Self {
        Self {
            opts,
            id: String::new(),
            model: String::new(),
            started: false,
            done: false,
            blocks: Vec::new(),
            next_tool: 0,
            counts: Counts::default(),
            finish_reason: None,
        }
    }

    fn chunk_value(&self, choices: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("object".into(), json!("chat.completion.chunk"));
        m.insert("created".into(), json!(self.opts.created));
        m.insert("model".into(), json!(self.model));
        m.insert("choices".into(), choices);
        if self.opts.include_usage {
            m.insert("usage".into(), Value::Null);
        }
        m
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>, out: &mut Vec<u8>) {
        let choices = json!([{
            "index": 0,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish_reason,
        }]);
        let m = self.chunk_value(choices);
        out.extend(serialize_event(None, &to_json_string(&Value::Object(m))));
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.chunk(json!({"role": "assistant", "content": ""}), None, out);
        }
    }

    fn kind_of(&self, index: Option<u64>) -> Option<BlockKind> {
        let index = index?;
        self.blocks
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, k)| *k)
    }

    fn on_event(&mut self, ev: &SseEvent) -> Vec<u8> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let Some(obj) = parse_data(ev) else {
            return out;
        };
        let kind = str_of(&obj, "type")
            .map(str::to_string)
            .or_else(|| ev.event.clone())
            .unwrap_or_default();
        match kind.as_str() {
            "message_start" => {
                if let Some(message) = obj.get("message").and_then(Value::as_object) {
                    if let Some(id) = str_of(message, "id") {
                        self.id = id.to_string();
                    }
                    self.model = self
                        .opts
                        .model
                        .clone()
                        .or_else(|| str_of(message, "model").map(str::to_string))
                        .unwrap_or_default();
                    self.counts.update_anthropic(message.get("usage"));
                }
                self.start(&mut out);
            }
            "content_block_start" => {
                self.start(&mut out);
                let index = index_of(&obj);
                let block = obj.get("content_block").and_then(Value::as_object);
                let block_kind = match block.and_then(|b| str_of(b, "type")) {
                    Some("text") => BlockKind::Text,
                    Some("tool_use") => {
                        let n = self.next_tool;
                        self.next_tool = self.next_tool.saturating_add(1);
                        BlockKind::Tool(n)
                    }
                    _ => BlockKind::Other,
                };
                if let (Some(index), true) = (index, self.blocks.len() < MAX_TRACKED) {
                    self.blocks.retain(|(i, _)| *i != index);
                    self.blocks.push((index, block_kind));
                }
                match block_kind {
                    BlockKind::Text => {
                        if let Some(t) = block
                            .and_then(|b| str_of(b, "text"))
                            .filter(|t| !t.is_empty())
                        {
                            self.chunk(json!({"content": t}), None, &mut out);
                        }
                    }
                    BlockKind::Tool(n) => {
                        let block = block.cloned().unwrap_or_default();
                        let mut arguments = String::new();
                        if let Some(input) = block
                            .get("input")
                            .and_then(Value::as_object)
                            .filter(|i| !i.is_empty())
                        {
                            arguments = to_json_string(&Value::Object(input.clone()));
                        }
                        let call = json!({
                            "index": n,
                            "id": str_of(&block, "id").unwrap_or_default(),
                            "type": "function",
                            "function": {
                                "name": str_of(&block, "name").unwrap_or_default(),
                                "arguments": arguments,
                            },
                        });
                        self.chunk(json!({"tool_calls": [call]}), None, &mut out);
                    }
                    BlockKind::Other => {}
                }
            }
            "content_block_delta" => {
                self.start(&mut out);
                let Some(delta) = obj.get("delta").and_then(Value::as_object) else {
                    return out;
                };
                match str_of(delta, "type") {
                    Some("text_delta") => {
                        if let Some(t) = str_of(delta, "text").filter(|t| !t.is_empty()) {
                            self.chunk(json!({"content": t}), None, &mut out);
                        }
                    }
                    Some("input_json_delta") => {
                        let Some(BlockKind::Tool(n)) = self.kind_of(index_of(&obj)) else {
                            return out;
                        };
                        if let Some(p) = str_of(delta, "partial_json").filter(|p| !p.is_empty()) {
                            let call = json!({"index": n, "function": {"arguments": p}});
                            self.chunk(json!({"tool_calls": [call]}), None, &mut out);
                        }
                    }
                    // thinking_delta, signature_delta, citations_delta: no
                    // counterpart.
                    _ => {}
                }
            }
            "message_delta" => {
                self.start(&mut out);
                self.counts.update_anthropic(obj.get("usage"));
                let stop = obj
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                let reason = finish_reason_of(stop);
                self.finish_reason = Some(reason);
                self.chunk(json!({}), Some(reason), &mut out);
            }
            "message_stop" => {
                self.start(&mut out);
                if self.finish_reason.is_none() {
                    self.finish_reason = Some("stop");
                    self.chunk(json!({}), Some("stop"), &mut out);
                }
                self.end(&mut out);
            }
            "error" => {
                let (kind, message) = match obj.get("error") {
                    Some(e) if e.is_object() => anthropic_error_fields(e),
                    _ => (None, "upstream error".to_string()),
                };
                let out_kind = openai_type_of(kind.as_deref(), 500);
                let code = kind.as_deref().unwrap_or(out_kind);
                let v = error_value(Api::OpenAi, out_kind, code, &message);
                out.extend(serialize_event(None, &to_json_string(&v)));
                self.done = true;
            }
            // ping, content_block_stop, unknown events.
            _ => {}
        }
        out
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if self.opts.include_usage {
            let mut m = self.chunk_value(json!([]));
            m.insert("usage".into(), self.counts.openai_usage());
            out.extend(serialize_event(None, &to_json_string(&Value::Object(m))));
        }
        out.extend(serialize_event(None, "[DONE]"));
        self.done = true;
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if self.finish_reason.is_some() {
            self.end(&mut out);
        } else {
            let v = error_value(
                Api::OpenAi,
                "server_error",
                "upstream_stream_truncated",
                TRUNCATED,
            );
            out.extend(serialize_event(None, &to_json_string(&v)));
            self.done = true;
        }
        out
    }
}

// ------------------------------------------------------------ OpenAI → Anthropic

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(u64),
    /// OpenAI tool call index, Anthropic block index.
    Tool(u64, u64),
}

#[derive(Debug, Clone)]
struct OpenAiToAnthropic {
    opts: ResponseOptions,
    started: bool,
    done: bool,
    open: Option<Open>,
    next_block: u64,
    /// OpenAI tool call index → Anthropic block index, for every tool call
    /// seen.
    tools: Vec<(u64, u64)>,
    stop_reason: Option<&'static str>,
    refusal: bool,
    counts: Counts,
}

impl OpenAiToAnthropic {
    fn new(opts: ResponseOptions) -> Self {
        Self {
            opts,
            started: false,
            done: false,
            open: None,
            next_block: 0,
            tools: Vec::new(),
            stop_reason: None,
            refusal: false,
            counts: Counts::default(),
        }
    }

    fn emit(kind: &str, v: &Value, out: &mut Vec<u8>) {
        out.extend(serialize_event(Some(kind), &to_json_string(v)));
    }

    fn start(&mut self, obj: &Map<String, Value>, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let model = self
            .opts
            .model
            .clone()
            .or_else(|| str_of(obj, "model").map(str::to_string))
            .unwrap_or_default();
        let message = json!({
            "type": "message_start",
            "message": {
                "id": str_of(obj, "id").unwrap_or_default(),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        });
        Self::emit("message_start", &message, out);
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some(open) = self.open.take() {
            let index = match open {
                Open::Text(i) | Open::Tool(_, i) => i,
            };
            Self::emit(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
                out,
            );
        }
    }

    fn new_block(&mut self) -> u64 {
        let i = self.next_block;
        self.next_block = self.next_block.saturating_add(1);
        i
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        let index = match self.open {
            Some(Open::Text(i)) => i,
            _ => {
                self.close(out);
                let i = self.new_block();
                Self::emit(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": i,
                            "content_block": {"type": "text", "text": ""}}),
                    out,
                );
                self.open = Some(Open::Text(i));
                i
            }
        };
        Self::emit(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": text}}),
            out,
        );
    }

    fn tool_call(&mut self, call: &Map<String, Value>, out: &mut Vec<u8>) {
        let oa_index = index_of(call).unwrap_or(0);
        let function = call.get("function").and_then(Value::as_object);
        let arguments = function
            .and_then(|f| str_of(f, "arguments"))
            .filter(|a| !a.is_empty());
        let block = match self.open {
            Some(Open::Tool(o, b)) if o == oa_index => Some(b),
            _ => self
                .tools
                .iter()
                .find(|(o, _)| *o == oa_index)
                .map(|(_, b)| *b),
        };
        let block = match block {
            Some(b) => b,
            None => {
                if self.tools.len() >= MAX_TRACKED {
                    return;
                }
                self.close(out);
                let b = self.new_block();
                self.tools.push((oa_index, b));
                let id = str_of(call, "id")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("call_{oa_index}"));
                let name = function.and_then(|f| str_of(f, "name")).unwrap_or_default();
                Self::emit(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": b,
                            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                    out,
                );
                self.open = Some(Open::Tool(oa_index, b));
                b
            }
        };
        if let Some(a) = arguments {
            // A late piece of an earlier (closed) call keeps that call's
            // block index: best effort, OpenAI sends calls in order.
            Self::emit(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": block,
                        "delta": {"type": "input_json_delta", "partial_json": a}}),
                out,
            );
        }
    }

    fn on_event(&mut self, ev: &SseEvent) -> Vec<u8> {
        let mut out = Vec::new();
        if self.done || !ev.has_data {
            return out;
        }
        if ev.data.trim() == "[DONE]" {
            self.start(&Map::new(), &mut out);
            self.end(&mut out);
            return out;
        }
        let Some(obj) = parse_data(ev) else {
            return out;
        };
        if let Some(err) = obj.get("error").filter(|e| !e.is_null()) {
            let (kind, message, _) = openai_error_fields(err);
            let out_kind = anthropic_type_of(kind.as_deref(), 500);
            let v = error_value(Api::Anthropic, out_kind, "", &message);
            Self::emit("error", &v, &mut out);
            self.done = true;
            return out;
        }
        self.start(&obj, &mut out);
        if let Some(c) = Counts::from_openai(obj.get("usage").filter(|u| !u.is_null())) {
            self.counts = c;
        }
        let choices = obj.get("choices").and_then(Value::as_array);
        for choice in choices.into_iter().flatten() {
            let Some(choice) = choice.as_object() else {
                continue;
            };
            if index_of(choice).unwrap_or(0) != 0 {
                continue;
            }
            if let Some(delta) = choice.get("delta").and_then(Value::as_object) {
                if let Some(t) = str_of(delta, "content").filter(|t| !t.is_empty()) {
                    self.text(t, &mut out);
                }
                if let Some(r) = str_of(delta, "refusal").filter(|r| !r.is_empty()) {
                    self.refusal = true;
                    self.text(r, &mut out);
                }
                if let Some(Value::Array(calls)) = delta.get("tool_calls") {
                    for call in calls.iter().filter_map(Value::as_object) {
                        self.tool_call(call, &mut out);
                    }
                }
            }
            if let Some(reason) = str_of(choice, "finish_reason") {
                self.close(&mut out);
                self.stop_reason = Some(if self.refusal {
                    "refusal"
                } else {
                    stop_reason_of(Some(reason))
                });
            }
        }
        out
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.close(out);
        let stop = self.stop_reason.unwrap_or("end_turn");
        Self::emit(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": null},
                    "usage": self.counts.anthropic_usage()}),
            out,
        );
        Self::emit("message_stop", &json!({"type": "message_stop"}), out);
        self.done = true;
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if self.stop_reason.is_some() {
            self.end(&mut out);
        } else {
            let v = error_value(Api::Anthropic, "api_error", "", TRUNCATED);
            Self::emit("error", &v, &mut out);
            self.done = true;
        }
        out
    }
}

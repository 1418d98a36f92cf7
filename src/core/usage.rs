//! Token usage of LLM responses, non-streaming JSON and SSE streams, for
//! OpenAI chat completions and Anthropic messages; the OpenAI
//! `stream_options.include_usage` request rewrite; a cheap input-token
//! estimate for budgets.
//!
//! ## Convention
//!
//! [`Usage`] is normalised to one convention whatever the API:
//! `input_tokens` counts *every* input token, cached or not — OpenAI's
//! `prompt_tokens` as is (it already includes
//! `prompt_tokens_details.cached_tokens`); for Anthropic, whose
//! `input_tokens` excludes cache reads and cache writes, the sum
//! `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`.
//! `cache_read_tokens` and `cache_creation_tokens` are the parts of
//! `input_tokens` read from or written to the provider's prompt cache
//! (OpenAI reports no cache writes: always 0). So
//! [`Usage::uncached_input_tokens`] is what is billed at the full input
//! price, and budgets and metrics see the real prompt size.

use serde_json::{Map, Value};

use super::api::Api;
use super::sse::SseEvent;

/// Tokens used by one request. See the module documentation for the
/// convention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// All input tokens, including cache reads and cache writes.
    pub input_tokens: u64,
    /// Output tokens (for OpenAI including reasoning tokens).
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache (Anthropic).
    pub cache_creation_tokens: u64,
}

impl Usage {
    /// Input tokens neither read from nor written to the cache.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cache_read_tokens)
            .saturating_sub(self.cache_creation_tokens)
    }

    /// Input plus output tokens.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// From an OpenAI `usage` object (`prompt_tokens`, `completion_tokens`,
    /// `prompt_tokens_details.cached_tokens`; the Responses-style
    /// `input_tokens`/`output_tokens` are accepted too). `None` when it is
    /// not an object or has neither count.
    pub fn from_openai(usage: &Value) -> Option<Usage> {
        let u = usage.as_object()?;
        let input = count(u, "prompt_tokens").or_else(|| count(u, "input_tokens"));
        let output = count(u, "completion_tokens").or_else(|| count(u, "output_tokens"));
        if input.is_none() && output.is_none() {
            return None;
        }
        let cached = ["prompt_tokens_details", "input_tokens_details"]
            .iter()
            .find_map(|k| u.get(*k).and_then(Value::as_object))
            .and_then(|d| count(d, "cached_tokens"));
        Some(Usage {
            input_tokens: input.unwrap_or(0),
            output_tokens: output.unwrap_or(0),
            cache_read_tokens: cached.unwrap_or(0),
            cache_creation_tokens: 0,
        })
    }

    /// From an Anthropic `usage` object, normalised (see the module
    /// documentation). `None` when it is not an object or has neither
    /// `input_tokens` nor `output_tokens`.
    pub fn from_anthropic(usage: &Value) -> Option<Usage> {
        let mut counts = AnthropicCounts::default();
        if counts.update(usage) {
            Some(counts.to_usage())
        } else {
            None
        }
    }
}

/// A non-negative integer count; tolerates floats (`12.0`), ignores anything
/// else.
pub(crate) fn count(obj: &Map<String, Value>, key: &str) -> Option<u64> {
    let v = obj.get(key)?;
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    if f.is_finite() && f >= 0.0 {
        // `as` saturates at u64::MAX.
        Some(f as u64)
    } else {
        None
    }
}

/// Anthropic's raw counts (input excluding cache), latest value of each.
#[derive(Debug, Clone, Copy, Default)]
struct AnthropicCounts {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
}

impl AnthropicCounts {
    /// Takes every count present in `usage` (they are cumulative); true when
    /// it had input or output tokens.
    fn update(&mut self, usage: &Value) -> bool {
        let Some(u) = usage.as_object() else {
            return false;
        };
        let input = count(u, "input_tokens");
        let output = count(u, "output_tokens");
        if let Some(n) = input {
            self.input = n;
        }
        if let Some(n) = output {
            self.output = n;
        }
        if let Some(n) = count(u, "cache_read_input_tokens") {
            self.cache_read = n;
        }
        if let Some(n) = count(u, "cache_creation_input_tokens") {
            self.cache_creation = n;
        }
        input.is_some() || output.is_some()
    }

    fn to_usage(self) -> Usage {
        Usage {
            input_tokens: self
                .input
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_creation),
            output_tokens: self.output,
            cache_read_tokens: self.cache_read,
            cache_creation_tokens: self.cache_creation,
        }
    }
}

/// What a non-streaming response body tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseInfo {
    /// `None` when the body has no usable `usage` (an error body, say).
    pub usage: Option<Usage>,
    /// The model that served the request (`model` of the response).
    pub model: Option<String>,
    /// OpenAI `choices[0].finish_reason`; Anthropic `stop_reason`.
    pub stop_reason: Option<String>,
}

/// Parses a non-streaming response body. `None` when it is not a JSON
/// object.
pub fn parse_response(api: Api, body: &[u8]) -> Option<ResponseInfo> {
    // One pass that keeps only `model`, `usage`, `stop_reason` and the first
    // choice's `finish_reason`: the completion text and everything else is
    // skipped without building a value tree (this runs on every response).
    let top: Option<Top> = serde_json::from_slice::<TopOf>(body).ok()?.0;
    let top = top?;
    let info = match api {
        Api::OpenAi => ResponseInfo {
            usage: top.usage.as_ref().and_then(Usage::from_openai),
            model: top.model,
            stop_reason: top.finish_reason,
        },
        Api::Anthropic => ResponseInfo {
            usage: top.usage.as_ref().and_then(Usage::from_anthropic),
            model: top.model,
            stop_reason: top.stop_reason,
        },
    };
    Some(info)
}

/// The parts of a JSON response body that accounting reads. Repeated keys:
/// the last wins (as with a `Value`); a field of the wrong type is absent.
#[derive(Default)]
struct Top {
    model: Option<String>,
    usage: Option<Value>,
    stop_reason: Option<String>,
    finish_reason: Option<String>,
}

/// `Some` for a JSON object, `None` for any other JSON value.
struct TopOf(Option<Top>);

/// `choices`: the first element's `finish_reason`, if a string.
struct FirstFinish(Option<String>);

/// One choice: its `finish_reason`, if a string.
struct FinishOnly(Option<String>);

/// The string a small JSON value is, if it is one.
fn string_of(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// Implements a `deserialize_any` visitor that reads one kind of JSON
/// container (`map` or `seq`, with the body given) and is `$none` for every
/// other value (a container of the other kind is skipped unread).
macro_rules! lenient_visitor {
    (map, $ty:ident, $none:expr, |$m:ident| $body:block) => {
        lenient_visitor!(@impl $ty, $none,
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut $m: A) -> Result<$ty, A::Error> $body
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<$ty, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok($none)
            }
        );
    };
    (seq, $ty:ident, $none:expr, |$s:ident| $body:block) => {
        lenient_visitor!(@impl $ty, $none,
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut $s: A) -> Result<$ty, A::Error> $body
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok($none)
            }
        );
    };
    (@impl $ty:ident, $none:expr, $($visits:item)*) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("any JSON value")
                    }
                    fn visit_bool<E>(self, _: bool) -> Result<$ty, E> { Ok($none) }
                    fn visit_i64<E>(self, _: i64) -> Result<$ty, E> { Ok($none) }
                    fn visit_u64<E>(self, _: u64) -> Result<$ty, E> { Ok($none) }
                    fn visit_f64<E>(self, _: f64) -> Result<$ty, E> { Ok($none) }
                    fn visit_str<E>(self, _: &str) -> Result<$ty, E> { Ok($none) }
                    fn visit_unit<E>(self) -> Result<$ty, E> { Ok($none) }
                    $($visits)*
                }
                d.deserialize_any(V)
            }
        }
    };
}

lenient_visitor!(map, FinishOnly, FinishOnly(None), |map| {
    let mut out = None;
    while let Some(k) = map.next_key::<Field>()? {
        if k == Field::FinishReason {
            out = string_of(map.next_value()?);
        } else {
            map.next_value::<serde::de::IgnoredAny>()?;
        }
    }
    Ok(FinishOnly(out))
});

lenient_visitor!(seq, FirstFinish, FirstFinish(None), |seq| {
    let first = seq.next_element::<FinishOnly>()?.and_then(|f| f.0);
    while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
    Ok(FirstFinish(first))
});

lenient_visitor!(map, TopOf, TopOf(None), |map| {
    let mut top = Top::default();
    while let Some(k) = map.next_key::<Field>()? {
        match k {
            Field::Model => top.model = string_of(map.next_value()?),
            Field::Usage => top.usage = Some(map.next_value()?),
            Field::StopReason => top.stop_reason = string_of(map.next_value()?),
            Field::Choices => top.finish_reason = map.next_value::<FirstFinish>()?.0,
            Field::FinishReason | Field::Other => {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
    }
    Ok(TopOf(Some(top)))
});

/// The keys accounting reads, matched without allocating.
#[derive(PartialEq, Eq)]
enum Field {
    Model,
    Usage,
    StopReason,
    Choices,
    FinishReason,
    Other,
}

impl<'de> serde::Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "model" => Field::Model,
                    "usage" => Field::Usage,
                    "stop_reason" => Field::StopReason,
                    "choices" => Field::Choices,
                    "finish_reason" => Field::FinishReason,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

fn str_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_string)
}

fn non_empty_str(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

/// What to do with a stream event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it to the client unchanged.
    Forward,
    /// Leave it out (the OpenAI usage-only chunk llmgate asked for itself).
    Drop,
}

/// Follows one SSE response stream, event by event (feed it every
/// [`SseEvent`] the parser returns, in order).
///
/// OpenAI: usage from the chunk whose `usage` is not null (the last wins),
/// completion at `data: [DONE]`, the stop reason from
/// `choices[].finish_reason`. Anthropic: input and cache tokens from
/// `message_start`, output tokens from `message_delta` (each count takes its
/// latest value: they are cumulative), the stop reason from
/// `message_delta.delta.stop_reason`, completion at `message_stop`.
///
/// The first token is the first event carrying non-empty text, refusal,
/// tool-call or (Anthropic) thinking content, or the start of a tool-use
/// block. Anthropic `ping`/`content_block_stop` events, and content events
/// once the first token is seen, are forwarded without parsing their JSON
/// (they carry nothing else tracked here); every other event is parsed once.
#[derive(Debug, Clone)]
pub struct StreamTracker {
    api: Api,
    drop_usage_chunk: bool,
    openai_usage: Option<Usage>,
    anthropic: AnthropicCounts,
    anthropic_seen: bool,
    model: Option<String>,
    first_token: bool,
    completed: bool,
    stop_reason: Option<String>,
    error: Option<String>,
    events: u64,
    dropped: u64,
    /// Output tokens estimated from the content deltas seen so far.
    delivered_out: u64,
}

/// Output tokens in one content event, estimated from the length of its
/// delta strings (text, tool-call arguments, thinking): at least 1 for a
/// non-empty delta (providers stream about one token per event), else about
/// 4 characters per token. A cheap scan, no JSON parse.
pub fn delta_tokens(data: &str) -> u64 {
    let mut chars: u64 = 0;
    for key in [
        "\"content\":",
        "\"text\":",
        "\"partial_json\":",
        "\"arguments\":",
        "\"thinking\":",
    ] {
        let mut rest = data;
        while let Some(i) = rest.find(key) {
            rest = rest.get(i.saturating_add(key.len())..).unwrap_or("");
            let value = rest.trim_start();
            let Some(body) = value.strip_prefix('"') else {
                continue;
            };
            let (n, used) = json_string_chars(body);
            chars = chars.saturating_add(n);
            rest = body.get(used..).unwrap_or("");
        }
    }
    if chars == 0 {
        0
    } else {
        chars.div_ceil(4).max(1)
    }
}

/// Characters of a JSON string body (after its opening quote) up to the
/// closing quote, an escape counting as one; and the bytes consumed.
fn json_string_chars(s: &str) -> (u64, usize) {
    let mut n: u64 = 0;
    let mut it = s.char_indices();
    while let Some((i, c)) = it.next() {
        match c {
            '"' => return (n, i.saturating_add(1)),
            '\\' => {
                if let Some((_, e)) = it.next() {
                    if e == 'u' {
                        for _ in 0..4 {
                            it.next();
                        }
                    }
                }
                n = n.saturating_add(1);
            }
            _ => n = n.saturating_add(1),
        }
    }
    (n, s.len())
}

impl StreamTracker {
    /// `drop_usage_chunk`: llmgate set `include_usage` itself (see
    /// [`ensure_include_usage`]), so the OpenAI usage-only chunk is counted
    /// but not forwarded. Ignored for Anthropic.
    pub fn new(api: Api, drop_usage_chunk: bool) -> Self {
        Self {
            api,
            drop_usage_chunk,
            openai_usage: None,
            anthropic: AnthropicCounts::default(),
            anthropic_seen: false,
            model: None,
            first_token: false,
            completed: false,
            stop_reason: None,
            error: None,
            events: 0,
            dropped: 0,
            delivered_out: 0,
        }
    }

    /// Output tokens estimated from the content seen so far (for charging
    /// a stream that ends early).
    pub fn delivered_output_tokens(&self) -> u64 {
        self.delivered_out
    }

    /// Takes one event into account and says whether to forward it. Events
    /// without data (comments) and non-JSON data are forwarded.
    pub fn observe(&mut self, event: &SseEvent) -> Verdict {
        self.events = self.events.saturating_add(1);
        if !event.has_data {
            return Verdict::Forward;
        }
        self.delivered_out = self.delivered_out.saturating_add(delta_tokens(&event.data));
        let verdict = match self.api {
            Api::OpenAi => self.observe_openai(event),
            Api::Anthropic => {
                self.observe_anthropic(event);
                Verdict::Forward
            }
        };
        if verdict == Verdict::Drop {
            self.dropped = self.dropped.saturating_add(1);
        }
        verdict
    }

    fn observe_openai(&mut self, event: &SseEvent) -> Verdict {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.completed = true;
            return Verdict::Forward;
        }
        // Fast path: once the model and the first token are known, an
        // ordinary content chunk carries nothing we need. Only chunks that
        // may hold usage, a finish reason or an error are parsed.
        let maybe = |field: &str, null: &str| data.contains(field) && !data.contains(null);
        if self.first_token
            && self.model.is_some()
            && !maybe("\"usage\"", "\"usage\":null")
            && !maybe("\"finish_reason\"", "\"finish_reason\":null")
            && !data.contains("\"error\"")
        {
            return Verdict::Forward;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return Verdict::Forward;
        };
        let Some(obj) = v.as_object() else {
            return Verdict::Forward;
        };
        if self.model.is_none() {
            self.model = str_field(obj, "model");
        }
        if let Some(err) = obj.get("error").filter(|e| !e.is_null()) {
            self.error = Some(error_label(err));
        }
        let usage = obj
            .get("usage")
            .filter(|u| !u.is_null())
            .and_then(Usage::from_openai);
        if usage.is_some() {
            self.openai_usage = usage;
        }
        let choices = obj.get("choices").and_then(Value::as_array);
        for choice in choices.into_iter().flatten() {
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.stop_reason = Some(reason.to_string());
            }
            if !self.first_token {
                if let Some(delta) = choice.get("delta") {
                    self.first_token = non_empty_str(delta.get("content"))
                        || non_empty_str(delta.get("refusal"))
                        || delta
                            .get("tool_calls")
                            .and_then(Value::as_array)
                            .is_some_and(|t| !t.is_empty())
                        || delta.get("function_call").is_some_and(Value::is_object);
                }
            }
        }
        let usage_only =
            usage.is_some() && choices.is_none_or(|c| c.is_empty()) && !obj.contains_key("error");
        if self.drop_usage_chunk && usage_only {
            Verdict::Drop
        } else {
            Verdict::Forward
        }
    }

    fn observe_anthropic(&mut self, event: &SseEvent) {
        match event.event.as_deref() {
            Some("ping" | "content_block_stop") => return,
            Some("content_block_delta" | "content_block_start") if self.first_token => return,
            _ => {}
        }
        let Ok(v) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        let Some(obj) = v.as_object() else {
            return;
        };
        match obj.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if let Some(message) = obj.get("message").and_then(Value::as_object) {
                    if let Some(model) = str_field(message, "model") {
                        self.model = Some(model);
                    }
                    if let Some(u) = message.get("usage") {
                        self.anthropic_seen |= self.anthropic.update(u);
                    }
                }
            }
            Some("message_delta") => {
                if let Some(reason) = obj
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stop_reason = Some(reason.to_string());
                }
                if let Some(u) = obj.get("usage") {
                    self.anthropic_seen |= self.anthropic.update(u);
                }
            }
            Some("message_stop") => self.completed = true,
            Some("content_block_start") => {
                if let Some(block) = obj.get("content_block") {
                    let kind = block.get("type").and_then(Value::as_str);
                    self.first_token |= matches!(kind, Some("tool_use" | "server_tool_use"))
                        || non_empty_str(block.get("text"));
                }
            }
            Some("content_block_delta") => {
                if let Some(delta) = obj.get("delta") {
                    self.first_token |= non_empty_str(delta.get("text"))
                        || non_empty_str(delta.get("partial_json"))
                        || non_empty_str(delta.get("thinking"));
                }
            }
            Some("error") => {
                self.error = Some(
                    obj.get("error")
                        .map_or_else(|| "error".to_string(), error_label),
                );
            }
            _ => {}
        }
    }

    /// The usage seen so far; `None` if the stream reported none (yet).
    pub fn usage(&self) -> Option<Usage> {
        match self.api {
            Api::OpenAi => self.openai_usage,
            Api::Anthropic => self.anthropic_seen.then(|| self.anthropic.to_usage()),
        }
    }

    /// The model that served the stream, as the stream says.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Whether a content token has been seen (for time to first token:
    /// compare before and after [`StreamTracker::observe`]).
    pub fn first_token_seen(&self) -> bool {
        self.first_token
    }

    /// Whether the stream ended properly (`[DONE]` / `message_stop`).
    pub fn completed(&self) -> bool {
        self.completed
    }

    /// The last finish/stop reason seen (`stop`, `length`, `tool_calls`,
    /// `end_turn`, `max_tokens`, ...).
    pub fn stop_reason(&self) -> Option<&str> {
        self.stop_reason.as_deref()
    }

    /// The type (or code, or message) of an error event in the stream.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Events observed, and how many of them got [`Verdict::Drop`].
    pub fn counts(&self) -> (u64, u64) {
        (self.events, self.dropped)
    }
}

fn error_label(err: &Value) -> String {
    if let Some(s) = err.as_str() {
        return s.to_string();
    }
    ["type", "code", "message"]
        .iter()
        .find_map(|k| err.get(*k).and_then(Value::as_str))
        .unwrap_or("error")
        .to_string()
}

#[cfg(test)]
mod delta_tests {
    use super::*;

    #[test]
    fn delta_tokens_counts_content_strings_only() {
        assert_eq!(
            delta_tokens(r#"{"choices":[{"delta":{"content":"hello "}}]}"#),
            2
        );
        assert_eq!(
            delta_tokens(r#"{"choices":[{"delta":{"content":"a"}}]}"#),
            1
        );
        assert_eq!(
            delta_tokens(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#),
            0
        );
        assert_eq!(delta_tokens(r#"{"usage":{"prompt_tokens":3}}"#), 0);
        assert_eq!(
            delta_tokens(
                r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"\u00e9\"x"}}"#
            ),
            1
        );
        assert_eq!(
            delta_tokens(
                r#"{"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Paris\"}"}}"#
            ),
            5
        );
        for junk in [
            "\"content\":",
            "\"content\":\"",
            "\"text\": 5",
            "\"text\":\"\\",
            "é\"content\":\"é",
        ] {
            let _ = delta_tokens(junk);
        }
    }
}

/// The outcome of [`ensure_include_usage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeUsage {
    /// Not a streaming request (`stream` is not `true`), or not an object:
    /// body unchanged.
    NotStreaming,
    /// The client set `stream_options.include_usage: true` itself: body
    /// unchanged, the client gets the usage chunk.
    ClientAsked,
    /// llmgate set it: the usage-only chunk must be dropped from the stream
    /// (`StreamTracker::new(Api::OpenAi, true)`).
    Added,
    /// `stream_options` is present but not an object: body unchanged, usage
    /// of this stream will likely be unknown.
    InvalidStreamOptions,
}

/// For an OpenAI chat completion request with `"stream": true`, makes sure
/// `stream_options.include_usage` is `true` (creating `stream_options` when
/// absent or null; an explicit `false` is overridden, and the client will not
/// see the usage chunk it did not ask for).
pub fn ensure_include_usage(body: &mut Value) -> IncludeUsage {
    let Some(obj) = body.as_object_mut() else {
        return IncludeUsage::NotStreaming;
    };
    if obj.get("stream").and_then(Value::as_bool) != Some(true) {
        return IncludeUsage::NotStreaming;
    }
    match obj.get_mut("stream_options") {
        None | Some(Value::Null) => {
            let mut options = Map::new();
            options.insert("include_usage".to_string(), Value::Bool(true));
            obj.insert("stream_options".to_string(), Value::Object(options));
            IncludeUsage::Added
        }
        Some(Value::Object(options)) => {
            if options.get("include_usage").and_then(Value::as_bool) == Some(true) {
                IncludeUsage::ClientAsked
            } else {
                options.insert("include_usage".to_string(), Value::Bool(true));
                IncludeUsage::Added
            }
        }
        Some(_) => IncludeUsage::InvalidStreamOptions,
    }
}

/// Tokens added per message (role, separators), and once for an Anthropic
/// `system` prompt.
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 4;

/// A cheap estimate of a request's input tokens, for budget checks before
/// the real usage is known: the characters (Unicode scalar values) of all
/// message text divided by 4, rounded up, plus [`MESSAGE_OVERHEAD_TOKENS`] per
/// message (and per Anthropic `system` prompt).
///
/// Text counted: string `content`; the `text` of content parts/blocks;
/// OpenAI `tool_calls[].function.arguments` and `function_call.arguments`;
/// Anthropic `tool_result` content and the strings inside `tool_use` input;
/// the `system` prompt (string or text blocks). Images, audio and documents
/// count nothing (their base64 would wildly inflate the estimate), nor do
/// tool definitions.
pub fn estimate_input_tokens(api: Api, body: &Value) -> u64 {
    match body.as_object() {
        Some(map) => estimate_input_tokens_map(api, map),
        None => 0,
    }
}

/// [`estimate_input_tokens`] on the body's object, without wrapping it.
pub fn estimate_input_tokens_map(api: Api, body: &Map<String, Value>) -> u64 {
    let mut chars: u64 = 0;
    let mut messages: u64 = 0;
    if api == Api::Anthropic {
        if let Some(system) = body.get("system").filter(|s| !s.is_null()) {
            chars = chars.saturating_add(content_chars(system, 0));
            messages = messages.saturating_add(1);
        }
    }
    let list = body.get("messages").and_then(Value::as_array);
    for message in list.into_iter().flatten() {
        messages = messages.saturating_add(1);
        if let Some(content) = message.get("content") {
            chars = chars.saturating_add(content_chars(content, 0));
        }
        if api == Api::OpenAi {
            let calls = message.get("tool_calls").and_then(Value::as_array);
            for call in calls.into_iter().flatten() {
                let args = call.get("function").and_then(|f| f.get("arguments"));
                chars = chars.saturating_add(str_chars(args));
            }
            let legacy = message
                .get("function_call")
                .and_then(|f| f.get("arguments"));
            chars = chars.saturating_add(str_chars(legacy));
        }
    }
    chars
        .div_ceil(4)
        .saturating_add(messages.saturating_mul(MESSAGE_OVERHEAD_TOKENS))
}

fn str_chars(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_str).map_or(0, char_count)
}

fn char_count(s: &str) -> u64 {
    u64::try_from(s.chars().count()).unwrap_or(u64::MAX)
}

/// Nesting bound for content walks (JSON nesting is bounded by the parser
/// anyway; this keeps the walk cheap on hostile input).
const MAX_DEPTH: usize = 16;

/// Characters of text in a `content` value: a string, or an array of
/// parts/blocks.
fn content_chars(content: &Value, depth: usize) -> u64 {
    if depth > MAX_DEPTH {
        return 0;
    }
    match content {
        Value::String(s) => char_count(s),
        Value::Array(parts) => parts.iter().fold(0u64, |acc, part| {
            acc.saturating_add(part_chars(part, depth.saturating_add(1)))
        }),
        _ => 0,
    }
}

fn part_chars(part: &Value, depth: usize) -> u64 {
    match part {
        Value::String(s) => char_count(s),
        Value::Object(block) => {
            let mut n = str_chars(block.get("text"));
            if let Some(inner) = block.get("content") {
                // Anthropic tool_result.
                n = n.saturating_add(content_chars(inner, depth));
            }
            if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                if let Some(input) = block.get("input") {
                    n = n.saturating_add(string_leaves_chars(input, depth));
                }
            }
            n
        }
        _ => 0,
    }
}

/// Characters of all strings (keys and values) inside a JSON value.
fn string_leaves_chars(v: &Value, depth: usize) -> u64 {
    if depth > MAX_DEPTH {
        return 0;
    }
    let next = depth.saturating_add(1);
    match v {
        Value::String(s) => char_count(s),
        Value::Array(items) => items.iter().fold(0u64, |acc, item| {
            acc.saturating_add(string_leaves_chars(item, next))
        }),
        Value::Object(map) => map.iter().fold(0u64, |acc, (k, item)| {
            acc.saturating_add(char_count(k))
                .saturating_add(string_leaves_chars(item, next))
        }),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sse::tests::{
        cr, crlf, parse_cuts, parse_step, random_cuts, Rng, ANTHROPIC_STREAM, OPENAI_STREAM,
    };
    use crate::core::sse::SseParser;
    use serde_json::json;

    #[derive(Debug, PartialEq)]
    struct Outcome {
        usage: Option<Usage>,
        model: Option<String>,
        first_token_at: Option<usize>,
        completed: bool,
        stop_reason: Option<String>,
        forwarded: Vec<u8>,
    }

    fn track(api: Api, drop: bool, events: &[SseEvent]) -> Outcome {
        let mut t = StreamTracker::new(api, drop);
        let mut forwarded = Vec::new();
        let mut first_token_at = None;
        for (i, e) in events.iter().enumerate() {
            let before = t.first_token_seen();
            if t.observe(e) == Verdict::Forward {
                forwarded.extend_from_slice(&e.raw);
            }
            if !before && t.first_token_seen() {
                first_token_at = Some(i);
            }
        }
        Outcome {
            usage: t.usage(),
            model: t.model().map(str::to_string),
            first_token_at,
            completed: t.completed(),
            stop_reason: t.stop_reason().map(str::to_string),
            forwarded,
        }
    }

    fn openai_expected_usage() -> Usage {
        Usage {
            input_tokens: 1200,
            output_tokens: 7,
            cache_read_tokens: 1024,
            cache_creation_tokens: 0,
        }
    }

    #[test]
    fn openai_stream_usage_every_split() {
        for input in [
            OPENAI_STREAM.to_string(),
            crlf(OPENAI_STREAM),
            cr(OPENAI_STREAM),
        ] {
            let input = input.as_bytes();
            let whole = track(Api::OpenAi, false, &parse_cuts(input, &[]));
            assert_eq!(whole.usage, Some(openai_expected_usage()));
            assert_eq!(whole.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
            assert_eq!(
                whole.first_token_at,
                Some(1),
                "the empty-content role chunk is not a token"
            );
            assert!(whole.completed);
            assert_eq!(whole.stop_reason.as_deref(), Some("stop"));
            assert_eq!(whole.forwarded, input);
            for cut in 0..=input.len() {
                let events = parse_cuts(input, &[cut]);
                assert_eq!(track(Api::OpenAi, false, &events), whole, "cut {cut}");
            }
            for step in [1, 3] {
                assert_eq!(track(Api::OpenAi, false, &parse_step(input, step)), whole);
            }
        }
    }

    #[test]
    fn openai_usage_chunk_dropped_only_when_asked() {
        for input in [OPENAI_STREAM.to_string(), crlf(OPENAI_STREAM)] {
            let input = input.as_bytes();
            let kept = track(Api::OpenAi, false, &parse_cuts(input, &[]));
            let dropped = track(Api::OpenAi, true, &parse_cuts(input, &[]));
            assert_eq!(kept.forwarded, input);
            assert_eq!(
                dropped.usage,
                Some(openai_expected_usage()),
                "still counted"
            );
            assert!(dropped.completed);
            let text = String::from_utf8(dropped.forwarded.clone()).unwrap();
            assert!(!text.contains("\"usage\":{"));
            assert!(text.contains("[DONE]"));
            // The rest is byte-identical: only the usage chunk is missing.
            let usage_event = parse_cuts(input, &[])
                .into_iter()
                .find(|e| e.data.contains("\"usage\":{"))
                .unwrap();
            assert_eq!(dropped.forwarded.len() + usage_event.raw.len(), input.len());
            // The client's parse of what it receives is a valid stream.
            let client = parse_cuts(&dropped.forwarded, &[]);
            assert_eq!(client.iter().filter(|e| e.has_data).count(), 5);
            for cut in 0..=input.len() {
                let events = parse_cuts(input, &[cut]);
                assert_eq!(track(Api::OpenAi, true, &events), dropped, "cut {cut}");
            }
        }
    }

    #[test]
    fn usage_in_a_chunk_with_choices_is_not_dropped() {
        let e = SseEvent::new(
            None,
            r#"{"choices":[{"index":0,"delta":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
        );
        let mut t = StreamTracker::new(Api::OpenAi, true);
        assert_eq!(t.observe(&e), Verdict::Forward);
        assert_eq!(t.usage().unwrap().input_tokens, 3);
        assert!(t.first_token_seen());
    }

    #[test]
    fn openai_tool_call_is_a_first_token() {
        let mut t = StreamTracker::new(Api::OpenAi, false);
        t.observe(&SseEvent::new(
            None,
            r#"{"choices":[{"delta":{"role":"assistant","content":null}}]}"#,
        ));
        assert!(!t.first_token_seen());
        t.observe(&SseEvent::new(
            None,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
        ));
        assert!(t.first_token_seen());
    }

    fn anthropic_expected_usage() -> Usage {
        Usage {
            input_tokens: 25 + 100 + 2000,
            output_tokens: 15,
            cache_read_tokens: 2000,
            cache_creation_tokens: 100,
        }
    }

    #[test]
    fn anthropic_stream_usage_every_split() {
        for input in [
            ANTHROPIC_STREAM.to_string(),
            crlf(ANTHROPIC_STREAM),
            cr(ANTHROPIC_STREAM),
        ] {
            let input = input.as_bytes();
            let whole = track(Api::Anthropic, true, &parse_cuts(input, &[]));
            assert_eq!(whole.usage, Some(anthropic_expected_usage()));
            assert_eq!(whole.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
            assert_eq!(whole.first_token_at, Some(3));
            assert!(whole.completed);
            assert_eq!(whole.stop_reason.as_deref(), Some("end_turn"));
            assert_eq!(whole.forwarded, input, "Anthropic never drops");
            for cut in 0..=input.len() {
                let events = parse_cuts(input, &[cut]);
                assert_eq!(track(Api::Anthropic, true, &events), whole, "cut {cut}");
            }
            for step in [1, 3] {
                assert_eq!(track(Api::Anthropic, true, &parse_step(input, step)), whole);
            }
        }
    }

    #[test]
    fn anthropic_latest_cumulative_values_win() {
        let mut t = StreamTracker::new(Api::Anthropic, false);
        assert_eq!(t.usage(), None);
        t.observe(&SseEvent::new(
            Some("message_start"),
            r#"{"type":"message_start","message":{"model":"claude-haiku-4-5","usage":{"input_tokens":10,"output_tokens":1}}}"#,
        ));
        assert_eq!(t.usage().unwrap().output_tokens, 1);
        t.observe(&SseEvent::new(
            Some("message_delta"),
            r#"{"type":"message_delta","delta":{"stop_reason":null},"usage":{"output_tokens":5}}"#,
        ));
        t.observe(&SseEvent::new(
            Some("message_delta"),
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"input_tokens":12,"cache_read_input_tokens":3,"output_tokens":9}}"#,
        ));
        let u = t.usage().unwrap();
        assert_eq!(
            u,
            Usage {
                input_tokens: 15,
                output_tokens: 9,
                cache_read_tokens: 3,
                cache_creation_tokens: 0
            }
        );
        assert_eq!(t.stop_reason(), Some("max_tokens"));
        assert!(!t.completed());
    }

    #[test]
    fn anthropic_tool_use_and_errors() {
        let mut t = StreamTracker::new(Api::Anthropic, false);
        t.observe(&SseEvent::new(
            Some("content_block_start"),
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}"#,
        ));
        assert!(t.first_token_seen());
        t.observe(&SseEvent::new(
            Some("error"),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ));
        assert_eq!(t.error(), Some("overloaded_error"));
    }

    #[test]
    fn garbage_events_never_panic() {
        let mut rng = Rng(7);
        let samples = [
            "[DONE]", "", "null", "1", "\"s\"", "[]", "{", "{\"usage\":5}",
            "{\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":1e300}}",
            "{\"choices\":{},\"usage\":{\"prompt_tokens\":\"x\"}}",
            "{\"choices\":[null,1,{\"delta\":7,\"finish_reason\":3}]}",
            "{\"type\":\"message_start\",\"message\":[]}",
            "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":18446744073709551615,\"input_tokens\":1.5e30,\"cache_read_input_tokens\":18446744073709551615}}",
            "{\"type\":\"content_block_delta\",\"delta\":null}",
            "{\"type\":\"error\",\"error\":null}",
            "{\"error\":{\"code\":429}}",
        ];
        for api in [Api::OpenAi, Api::Anthropic] {
            for drop in [false, true] {
                let mut t = StreamTracker::new(api, drop);
                for s in samples {
                    t.observe(&SseEvent::new(None, s));
                    t.observe(&SseEvent::new(Some("content_block_delta"), s));
                }
                let u = t.usage().unwrap_or_default();
                let _ = u.total_tokens();
                let _ = u.uncached_input_tokens();
                for _ in 0..500 {
                    let len = rng.below(64);
                    let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    let mut p = SseParser::new();
                    let mut events = p.push(b"data: ");
                    events.extend(p.push(&bytes));
                    events.extend(p.finish());
                    for e in &events {
                        t.observe(e);
                    }
                }
            }
        }
        let mut t = StreamTracker::new(Api::OpenAi, true);
        assert_eq!(t.observe(&SseEvent::new(None, "[DONE]")), Verdict::Forward);
        assert_eq!(
            t.observe(&SseEvent::new(None, "not json")),
            Verdict::Forward
        );
        assert!(t.completed());
    }

    #[test]
    fn random_splits_give_same_usage() {
        let mut rng = Rng(1234);
        for (api, input) in [
            (Api::OpenAi, OPENAI_STREAM),
            (Api::Anthropic, ANTHROPIC_STREAM),
        ] {
            let input = crlf(input);
            let input = input.as_bytes();
            let whole = track(api, true, &parse_cuts(input, &[]));
            for _ in 0..200 {
                let cuts = random_cuts(&mut rng, input.len());
                assert_eq!(track(api, true, &parse_cuts(input, &cuts)), whole);
            }
        }
    }

    #[test]
    fn non_streaming_openai() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Hello \u00e9"},"logprobs":null,"finish_reason":"stop"}],
            "usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#;
        let info = parse_response(Api::OpenAi, body).unwrap();
        assert_eq!(info.model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(info.stop_reason.as_deref(), Some("stop"));
        assert_eq!(
            info.usage,
            Some(Usage {
                input_tokens: 19,
                output_tokens: 10,
                cache_read_tokens: 0,
                cache_creation_tokens: 0
            })
        );
        let err = br#"{"error":{"message":"bad","type":"invalid_request_error","code":null}}"#;
        let info = parse_response(Api::OpenAi, err).unwrap();
        assert_eq!(info.usage, None);
        assert_eq!(parse_response(Api::OpenAi, b"not json"), None);
        assert_eq!(parse_response(Api::OpenAi, b"[1]"), None);
        assert_eq!(parse_response(Api::OpenAi, b"\xff\xfe"), None);
    }

    /// The former `Value`-tree parse, kept as the reference the one-pass
    /// parse must agree with.
    fn parse_response_by_value(api: Api, body: &[u8]) -> Option<ResponseInfo> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let obj = v.as_object()?;
        let model = str_field(obj, "model");
        Some(match api {
            Api::OpenAi => ResponseInfo {
                usage: obj.get("usage").and_then(Usage::from_openai),
                model,
                stop_reason: obj
                    .get("choices")
                    .and_then(Value::as_array)
                    .and_then(|c| c.first())
                    .and_then(Value::as_object)
                    .and_then(|c| str_field(c, "finish_reason")),
            },
            Api::Anthropic => ResponseInfo {
                usage: obj.get("usage").and_then(Usage::from_anthropic),
                model,
                stop_reason: str_field(obj, "stop_reason"),
            },
        })
    }

    #[test]
    fn one_pass_parse_agrees_with_the_value_parse() {
        let bodies: &[&[u8]] = &[
            br#"{"model":"m","choices":[{"finish_reason":"stop","message":{"content":"x"}}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            br#"{"model":1,"choices":{"finish_reason":"stop"},"usage":[1]}"#,
            br#"{"model":"a","model":"b","choices":[],"choices":[{"finish_reason":null},{"finish_reason":"x"}]}"#,
            br#"{"choices":[1,{"finish_reason":"stop"}],"stop_reason":"end_turn","usage":{"input_tokens":2,"output_tokens":5,"cache_read_input_tokens":7}}"#,
            br#"{"choices":[{"finish_reason":["stop"],"finish_reason":"length"}],"model":{"x":"y"}}"#,
            br#"{"m\u006fdel":"escaped","usage":{"prompt_tokens":1.5e2,"completion_tokens":-1}}"#,
            br#"{"stop_reason":7,"usage":null,"choices":null,"model":null}"#,
            br#"{} "#,
            br#"{"a":{"b":[{"c":"d"}]},"model":"deep"} x"#,
            br#"[{"model":"m"}]"#,
            br#""model""#,
            br#"null"#,
            br#"{"model":"m""#,
            b"\xff",
            b"",
        ];
        for body in bodies {
            for api in [Api::OpenAi, Api::Anthropic] {
                assert_eq!(
                    parse_response(api, body),
                    parse_response_by_value(api, body),
                    "{}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        // Every prefix of a real body (truncated upstream answers).
        let full = br#"{"id":"x","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hi \u00e9"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}"#;
        for n in 0..=full.len() {
            let b = &full[..n];
            for api in [Api::OpenAi, Api::Anthropic] {
                assert_eq!(parse_response(api, b), parse_response_by_value(api, b));
            }
        }
    }

    #[test]
    fn non_streaming_anthropic() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-haiku-20241022",
            "content":[{"type":"text","text":"Hi!"}],"stop_reason":"end_turn","stop_sequence":null,
            "usage":{"input_tokens":12,"cache_creation_input_tokens":5,"cache_read_input_tokens":40,"output_tokens":6}}"#;
        let info = parse_response(Api::Anthropic, body).unwrap();
        assert_eq!(info.model.as_deref(), Some("claude-3-5-haiku-20241022"));
        assert_eq!(info.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(
            info.usage,
            Some(Usage {
                input_tokens: 57,
                output_tokens: 6,
                cache_read_tokens: 40,
                cache_creation_tokens: 5
            })
        );
        assert_eq!(info.usage.unwrap().uncached_input_tokens(), 12);
        let err = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(parse_response(Api::Anthropic, err).unwrap().usage, None);
    }

    #[test]
    fn include_usage_cases() {
        let mut b = json!({"model":"gpt-4o","messages":[],"stream":true});
        assert_eq!(ensure_include_usage(&mut b), IncludeUsage::Added);
        assert_eq!(b["stream_options"], json!({"include_usage": true}));

        let mut b = json!({"stream":true,"stream_options":null});
        assert_eq!(ensure_include_usage(&mut b), IncludeUsage::Added);
        assert_eq!(b["stream_options"], json!({"include_usage": true}));

        let mut b = json!({"stream":true,"stream_options":{"include_usage":false,"other":1}});
        assert_eq!(ensure_include_usage(&mut b), IncludeUsage::Added);
        assert_eq!(
            b["stream_options"],
            json!({"include_usage": true, "other": 1})
        );

        let mut b = json!({"stream":true,"stream_options":{}});
        assert_eq!(ensure_include_usage(&mut b), IncludeUsage::Added);

        let orig = json!({"stream":true,"stream_options":{"include_usage":true}});
        let mut b = orig.clone();
        assert_eq!(ensure_include_usage(&mut b), IncludeUsage::ClientAsked);
        assert_eq!(b, orig);

        for orig in [
            json!({"stream":false}),
            json!({"model":"x"}),
            json!({"stream":"true"}),
            json!([1]),
            json!(null),
        ] {
            let mut b = orig.clone();
            assert_eq!(ensure_include_usage(&mut b), IncludeUsage::NotStreaming);
            assert_eq!(b, orig);
        }

        let orig = json!({"stream":true,"stream_options":"yes"});
        let mut b = orig.clone();
        assert_eq!(
            ensure_include_usage(&mut b),
            IncludeUsage::InvalidStreamOptions
        );
        assert_eq!(b, orig);
    }

    #[test]
    fn estimate_openai() {
        let body = json!({"model":"gpt-4o","messages":[
            {"role":"system","content":"abcd"},
            {"role":"user","content":[{"type":"text","text":"héllo"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAAAAAAAAAAAAAA"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}
        ]});
        // chars: 4 + 5 + 7 = 16 -> 4 tokens; 3 messages * 4 = 12.
        assert_eq!(estimate_input_tokens(Api::OpenAi, &body), 16);
        // Rounded up: 1 char -> 1 token.
        let body = json!({"messages":[{"role":"user","content":"x"}]});
        assert_eq!(estimate_input_tokens(Api::OpenAi, &body), 1 + 4);
        assert_eq!(estimate_input_tokens(Api::OpenAi, &json!({})), 0);
        assert_eq!(
            estimate_input_tokens(Api::OpenAi, &json!({"messages": 5})),
            0
        );
        assert_eq!(estimate_input_tokens(Api::OpenAi, &json!([1, 2])), 0);
    }

    #[test]
    fn estimate_anthropic() {
        let body = json!({"model":"claude-sonnet-4-5","system":[{"type":"text","text":"12345678"}],"messages":[
            {"role":"user","content":"abc"},
            {"role":"assistant","content":[{"type":"text","text":"d"},{"type":"tool_use","id":"t","name":"f","input":{"q":"xy"}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"12"}]},
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAAAAAAAAAAAAAAAAAAAAAA"}}]}
        ]});
        // chars: 8 + 3 + 1 + ("q" + "xy" = 3) + 2 = 17 -> 5 tokens; (1 system + 3) * 4 = 16.
        assert_eq!(estimate_input_tokens(Api::Anthropic, &body), 21);
        let body = json!({"system":"abcd","messages":[]});
        assert_eq!(estimate_input_tokens(Api::Anthropic, &body), 1 + 4);
    }
}

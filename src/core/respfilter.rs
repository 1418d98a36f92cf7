//! Response filtering: the request guard's detectors applied to completion
//! text, in JSON responses and in SSE streams.
//!
//! Streams hold back a window of text per choice (OpenAI) or content block
//! (Anthropic), so an entity split across chunks is caught; text is released
//! once it is further than the window from the end, never cutting through a
//! match. The result is the same as redacting the whole text at once, for
//! every way the stream is split (unit-tested at every split point).

use crate::core::api::Api;
use crate::core::config::ConfigError;
use crate::core::guard::{Action, Detectors, Entity, Match, PiiConfig, SecretsConfig};
use crate::core::sse::{serialize_event, SseEvent};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Default hold-back window: longer than every entity but PEM blocks.
pub const DEFAULT_WINDOW_BYTES: usize = 512;
/// A `-----BEGIN` seen in the window holds text up to this long for its end.
pub const MAX_PEM_HOLD: usize = 8192;

/// The `response_filter` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseFilterConfig {
    /// Off by default: no detector runs on responses.
    pub enabled: bool,
    /// Actions per PII type (`redact`, `block`, `allow`), as in the guard.
    pub pii: PiiConfig,
    /// Actions per secret type, as in the guard.
    pub secrets: SecretsConfig,
    /// Text held back per choice/content block in streams (64 .. 8192).
    pub stream_window_bytes: usize,
}

impl Default for ResponseFilterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            pii: PiiConfig::default(),
            secrets: SecretsConfig::default(),
            stream_window_bytes: DEFAULT_WINDOW_BYTES,
        }
    }
}

/// The compiled response filter.
#[derive(Debug, Clone)]
pub struct ResponseFilter {
    pub enabled: bool,
    pub detectors: Detectors,
    pub window: usize,
}

impl ResponseFilterConfig {
    pub fn compile(&self) -> Result<ResponseFilter, ConfigError> {
        if !(64..=8192).contains(&self.stream_window_bytes) {
            return Err(ConfigError::new(
                "response_filter.stream_window_bytes",
                "must be between 64 and 8192",
            ));
        }
        let detectors = Detectors::new(&self.pii, &self.secrets);
        Ok(ResponseFilter {
            enabled: self.enabled && detectors.any_enabled(),
            detectors,
            window: self.stream_window_bytes,
        })
    }
}

/// What filtering found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Entity type → count, redacted or blocking.
    pub counts: Vec<(&'static str, u32)>,
    /// An entity whose action is `block` was found.
    pub blocked: Option<&'static str>,
}

impl Findings {
    fn add(&mut self, name: &'static str) {
        if let Some(c) = self.counts.iter_mut().find(|(k, _)| *k == name) {
            c.1 = c.1.saturating_add(1);
        } else {
            self.counts.push((name, 1));
        }
    }
}

fn redact_with(det: &Detectors, text: &str, matches: &[Match], f: &mut Findings) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0usize;
    for m in matches {
        if m.start < last {
            continue;
        }
        if det.action(m.entity) == Action::Block && f.blocked.is_none() {
            f.blocked = Some(m.entity.name());
        }
        if let Some(seg) = text.get(last..m.start) {
            out.push_str(seg);
        }
        out.push_str(m.entity.placeholder());
        f.add(m.entity.name());
        last = m.end;
    }
    if let Some(seg) = text.get(last..) {
        out.push_str(seg);
    }
    out
}

fn redact_value(det: &Detectors, v: &mut Value, f: &mut Findings) -> bool {
    if let Value::String(s) = v {
        let matches = det.find(s);
        if !matches.is_empty() {
            *s = redact_with(det, s, &matches, f);
            return true;
        }
    }
    false
}

/// Filters a non-streaming JSON response body. `Ok(None)`: unchanged.
pub fn filter_json(rf: &ResponseFilter, api: Api, body: &[u8]) -> (Option<Vec<u8>>, Findings) {
    let mut f = Findings::default();
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return (None, f);
    };
    let det = &rf.detectors;
    let mut changed = false;
    match api {
        Api::OpenAi => {
            if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
                for c in choices {
                    let Some(msg) = c.get_mut("message") else {
                        continue;
                    };
                    if let Some(content) = msg.get_mut("content") {
                        changed |= redact_value(det, content, &mut f);
                    }
                    if let Some(calls) = msg.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        for call in calls {
                            if let Some(args) = call
                                .get_mut("function")
                                .and_then(|func| func.get_mut("arguments"))
                            {
                                changed |= redact_value(det, args, &mut f);
                            }
                        }
                    }
                }
            }
        }
        Api::Anthropic => {
            if let Some(blocks) = v.get_mut("content").and_then(Value::as_array_mut) {
                for b in blocks {
                    if let Some(t) = b.get_mut("text") {
                        changed |= redact_value(det, t, &mut f);
                    }
                }
            }
        }
    }
    if !changed {
        return (None, f);
    }
    (serde_json::to_vec(&v).ok(), f)
}

/// Held-back text of one choice or content block.
#[derive(Debug, Default)]
struct Pending {
    /// Already released original text kept as left context (≤ window).
    context: String,
    /// Not yet released.
    text: String,
}

/// Largest index ≤ `i` on a char boundary.
fn floor_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while i > 0 && !s.is_char_boundary(i) {
        i = i.saturating_sub(1);
    }
    i
}

/// A streaming filter for one response.
pub struct StreamFilter {
    rf: ResponseFilter,
    api: Api,
    pending: BTreeMap<u64, Pending>,
    pub findings: Findings,
    /// An error event was sent; everything after is dropped.
    ended: bool,
    /// A template of the last OpenAI chunk (id, model, …) to flush into.
    last_chunk: Option<Map<String, Value>>,
}

impl StreamFilter {
    pub fn new(rf: &ResponseFilter, api: Api) -> Self {
        Self {
            rf: rf.clone(),
            api,
            pending: BTreeMap::new(),
            findings: Findings::default(),
            ended: false,
            last_chunk: None,
        }
    }

    pub fn blocked(&self) -> bool {
        self.ended
    }

    /// Adds text to a choice/block and returns what may be released now.
    fn push_text(&mut self, index: u64, text: &str, last: bool) -> String {
        let window = self.rf.window;
        let det = &self.rf.detectors;
        let p = self.pending.entry(index).or_default();
        p.text.push_str(text);
        let ctx_len = p.context.len();
        let mut full = String::with_capacity(ctx_len.saturating_add(p.text.len()));
        full.push_str(&p.context);
        full.push_str(&p.text);
        let matches = det.find(&full);
        let mut cut = if last {
            full.len()
        } else {
            floor_boundary(&full, full.len().saturating_sub(window))
        };
        if !last {
            // A PEM block may be longer than the window: hold from its start
            // until its end marker (bounded).
            if let Some(rel) = full.get(ctx_len..).and_then(|t| t.find("-----BEGIN")) {
                let start = ctx_len.saturating_add(rel);
                let has_end = full.get(start..).is_some_and(|t| t.contains("-----END"));
                if !has_end && full.len().saturating_sub(start) < MAX_PEM_HOLD {
                    cut = cut.min(start);
                }
            }
            for m in &matches {
                if m.start < cut && m.end > cut {
                    cut = m.start;
                }
            }
        }
        let cut = cut.max(ctx_len);
        let released: Vec<Match> = matches
            .iter()
            .filter(|m| m.start >= ctx_len && m.end <= cut)
            .map(|m| Match {
                entity: m.entity,
                start: m.start.saturating_sub(ctx_len),
                end: m.end.saturating_sub(ctx_len),
            })
            .collect();
        let seg = full.get(ctx_len..cut).unwrap_or("");
        let out = redact_with(det, seg, &released, &mut self.findings);
        // Keep up to `window` bytes of original text as context.
        let keep_from = floor_boundary(&full, cut.saturating_sub(window));
        let keep_from = if full.is_char_boundary(keep_from) {
            keep_from
        } else {
            cut
        };
        p.context = full.get(keep_from..cut).unwrap_or("").to_string();
        p.text = full.get(cut..).unwrap_or("").to_string();
        out
    }

    fn error_event(&mut self) -> Vec<u8> {
        self.ended = true;
        let what = self.findings.blocked.unwrap_or("sensitive data");
        let message = format!("response blocked: it contained {what}");
        match self.api {
            Api::OpenAi => {
                let v = json!({"error": {"message": message, "type": "api_error", "code": "response_blocked"}});
                serialize_event(None, &v.to_string())
            }
            Api::Anthropic => {
                let v =
                    json!({"type": "error", "error": {"type": "api_error", "message": message}});
                serialize_event(Some("error"), &v.to_string())
            }
        }
    }

    /// Takes one event; returns the raw bytes to send instead.
    pub fn on_event(&mut self, ev: &SseEvent) -> Vec<u8> {
        if self.ended {
            return Vec::new();
        }
        if !ev.has_data {
            return ev.raw.clone();
        }
        match self.api {
            Api::OpenAi => self.on_openai(ev),
            Api::Anthropic => self.on_anthropic(ev),
        }
    }

    fn on_openai(&mut self, ev: &SseEvent) -> Vec<u8> {
        let data = ev.data.trim();
        if data == "[DONE]" {
            let mut out = self.flush_openai();
            if self.ended {
                return out;
            }
            out.extend_from_slice(&ev.raw);
            return out;
        }
        let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(data) else {
            return ev.raw.clone();
        };
        let mut changed = false;
        if let Some(Value::Array(choices)) = obj.get_mut("choices") {
            for c in choices.iter_mut() {
                let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                let last = c.get("finish_reason").is_some_and(|f| !f.is_null());
                let text = c
                    .get("delta")
                    .and_then(|d| d.get("content"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if text.is_none() && !last {
                    continue;
                }
                let released = self.push_text(index, text.as_deref().unwrap_or(""), last);
                if let Some(delta) = c.get_mut("delta").and_then(Value::as_object_mut) {
                    if text.is_some() || !released.is_empty() {
                        delta.insert("content".to_string(), Value::String(released));
                        changed = true;
                    }
                }
            }
        }
        let mut template = obj.clone();
        template.remove("usage");
        self.last_chunk = Some(template);
        if self.findings.blocked.is_some() {
            return self.error_event();
        }
        if !changed {
            return ev.raw.clone();
        }
        serialize_event(ev.event.as_deref(), &Value::Object(obj).to_string())
    }

    /// Releases everything still held (end of stream) as OpenAI chunks.
    fn flush_openai(&mut self) -> Vec<u8> {
        let indexes: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.text.is_empty())
            .map(|(i, _)| *i)
            .collect();
        let mut out = Vec::new();
        for i in indexes {
            let text = self.push_text(i, "", true);
            if self.findings.blocked.is_some() {
                return self.error_event();
            }
            let mut chunk = self.last_chunk.clone().unwrap_or_default();
            chunk.insert(
                "choices".to_string(),
                json!([{"index": i, "delta": {"content": text}, "finish_reason": null}]),
            );
            out.extend(serialize_event(None, &Value::Object(chunk).to_string()));
        }
        out
    }

    fn on_anthropic(&mut self, ev: &SseEvent) -> Vec<u8> {
        let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(ev.data.trim()) else {
            return ev.raw.clone();
        };
        let ty = obj
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let index = obj.get("index").and_then(Value::as_u64).unwrap_or(0);
        match ty.as_str() {
            "content_block_delta" => {
                let text = obj
                    .get("delta")
                    .filter(|d| d.get("type").and_then(Value::as_str) == Some("text_delta"))
                    .and_then(|d| d.get("text"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let Some(text) = text else {
                    return ev.raw.clone();
                };
                let released = self.push_text(index, &text, false);
                if self.findings.blocked.is_some() {
                    return self.error_event();
                }
                if let Some(d) = obj.get_mut("delta").and_then(Value::as_object_mut) {
                    d.insert("text".to_string(), Value::String(released));
                }
                serialize_event(ev.event.as_deref(), &Value::Object(obj).to_string())
            }
            "content_block_stop" => {
                let mut out = Vec::new();
                if self.pending.get(&index).is_some_and(|p| !p.text.is_empty()) {
                    let text = self.push_text(index, "", true);
                    if self.findings.blocked.is_some() {
                        return self.error_event();
                    }
                    let delta = json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}});
                    out.extend(serialize_event(
                        Some("content_block_delta"),
                        &delta.to_string(),
                    ));
                }
                out.extend_from_slice(&ev.raw);
                out
            }
            _ => ev.raw.clone(),
        }
    }

    /// End of the byte stream: anything still held is released (OpenAI
    /// streams that ended without `[DONE]`).
    pub fn finish(&mut self) -> Vec<u8> {
        if self.ended {
            return Vec::new();
        }
        match self.api {
            Api::OpenAi => self.flush_openai(),
            Api::Anthropic => Vec::new(),
        }
    }
}

/// The entity types found, for the audit line.
pub fn entity_names(f: &Findings) -> Vec<String> {
    f.counts.iter().map(|(k, _)| (*k).to_string()).collect()
}

/// Every entity type, for documentation and tests.
pub fn all_entities() -> impl Iterator<Item = Entity> {
    Entity::ALL.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sse::SseParser;

    fn rf(window: usize) -> ResponseFilter {
        let cfg: ResponseFilterConfig =
            serde_json::from_value(json!({"enabled": true, "stream_window_bytes": window}))
                .unwrap();
        cfg.compile().unwrap()
    }

    fn openai_stream(pieces: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            let v = json!({"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]});
            out.extend(serialize_event(None, &v.to_string()));
        }
        let v = json!({"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        out.extend(serialize_event(None, &v.to_string()));
        out.extend(b"data: [DONE]\n\n");
        out
    }

    fn anthropic_stream(pieces: &[&str]) -> Vec<u8> {
        let mut out = serialize_event(Some("message_start"), &json!({"type": "message_start", "message": {"id": "m1", "usage": {"input_tokens": 1, "output_tokens": 0}}}).to_string());
        out.extend(serialize_event(Some("content_block_start"), &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}).to_string()));
        for p in pieces {
            out.extend(serialize_event(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}).to_string()));
        }
        out.extend(serialize_event(
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": 0}).to_string(),
        ));
        out.extend(serialize_event(
            Some("message_stop"),
            &json!({"type": "message_stop"}).to_string(),
        ));
        out
    }

    /// Runs bytes through parser + filter, split every `step` bytes.
    fn run(rf: &ResponseFilter, api: Api, bytes: &[u8], step: usize) -> (String, Findings) {
        let mut parser = SseParser::new();
        let mut f = StreamFilter::new(rf, api);
        let mut out = Vec::new();
        for chunk in bytes.chunks(step.max(1)) {
            for ev in parser.push(chunk) {
                out.extend(f.on_event(&ev));
            }
        }
        if let Some(ev) = parser.finish() {
            out.extend(f.on_event(&ev));
        }
        out.extend(f.finish());
        // Reassemble the text the client sees.
        let mut p2 = SseParser::new();
        let mut text = String::new();
        for ev in p2.push(&out).into_iter().chain(p2.finish()) {
            let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                continue;
            };
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(t);
            }
            if let Some(t) = v["delta"]["text"].as_str() {
                text.push_str(t);
            }
            if v.get("error").is_some() {
                text.push_str("<ERROR>");
            }
        }
        (text, f.findings)
    }

    const TEXTS: &[&str] = &[
        "Contact me at jane.doe@example.com or +1 415-555-2671 please.",
        "Card 4111 1111 1111 1111 and key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD done",
        "Nothing to see here, just a normal answer with numbers 12 and 345.",
        "ümlaut text with an email ünïcode@example.org and more ünïcode…",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789 at the very end",
    ];

    fn expected(rf: &ResponseFilter, text: &str) -> String {
        match rf.detectors.redact(text) {
            Some((t, _)) => t,
            None => text.to_string(),
        }
    }

    #[test]
    fn every_split_point_gives_the_unsplit_result_openai() {
        let r = rf(64);
        for text in TEXTS {
            let want = expected(&r, text);
            // Content pieces of 1, 2, 3 and 7 characters, bytes split at every offset.
            for piece_chars in [1usize, 2, 3, 7] {
                let chars: Vec<char> = text.chars().collect();
                let pieces: Vec<String> = chars
                    .chunks(piece_chars)
                    .map(|c| c.iter().collect())
                    .collect();
                let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
                let bytes = openai_stream(&refs);
                for step in [1usize, 2, 3, 5, 13, 64, 4096] {
                    let (got, _) = run(&r, Api::OpenAi, &bytes, step);
                    assert_eq!(got, want, "text {text:?} pieces {piece_chars} step {step}");
                }
            }
        }
    }

    #[test]
    fn every_split_point_gives_the_unsplit_result_anthropic() {
        let r = rf(64);
        for text in TEXTS {
            let want = expected(&r, text);
            let chars: Vec<char> = text.chars().collect();
            for split in 0..=chars.len() {
                let a: String = chars[..split].iter().collect();
                let b: String = chars[split..].iter().collect();
                let bytes = anthropic_stream(&[&a, &b]);
                let (got, _) = run(&r, Api::Anthropic, &bytes, 3);
                assert_eq!(got, want, "split {split}");
            }
        }
    }

    #[test]
    fn json_responses_are_redacted_in_both_apis() {
        let r = rf(512);
        let body = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "mail jane.doe@example.com", "tool_calls": [{"function": {"name": "f", "arguments": "{\"card\":\"4111111111111111\"}"}}]}}]});
        let (out, f) = filter_json(&r, Api::OpenAi, body.to_string().as_bytes());
        let v: Value = serde_json::from_slice(&out.unwrap()).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "mail [REDACTED_EMAIL]"
        );
        assert!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
                .contains("[REDACTED_CREDIT_CARD]")
        );
        assert_eq!(f.counts.len(), 2);
        let body = json!({"content": [{"type": "text", "text": "mail jane.doe@example.com"}]});
        let (out, _) = filter_json(&r, Api::Anthropic, body.to_string().as_bytes());
        let v: Value = serde_json::from_slice(&out.unwrap()).unwrap();
        assert_eq!(v["content"][0]["text"], "mail [REDACTED_EMAIL]");
        let (out, _) = filter_json(&r, Api::OpenAi, b"not json");
        assert!(out.is_none());
    }

    #[test]
    fn block_ends_the_stream_with_an_error_event() {
        let cfg: ResponseFilterConfig =
            serde_json::from_value(json!({"enabled": true, "secrets": {"default": "block"}}))
                .unwrap();
        let r = cfg.compile().unwrap();
        let bytes = openai_stream(&[
            "here is ",
            "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
            " secret",
        ]);
        let (got, f) = run(&r, Api::OpenAi, &bytes, 5);
        assert!(got.ends_with("<ERROR>"), "{got}");
        assert!(!got.contains("sk-proj"));
        assert_eq!(f.blocked, Some("openai_key"));
        let bytes = anthropic_stream(&[
            "here is ",
            "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
        ]);
        let (got, _) = run(&r, Api::Anthropic, &bytes, 5);
        assert!(
            got.ends_with("<ERROR>") && !got.contains("sk-proj"),
            "{got}"
        );
    }

    #[test]
    fn garbage_streams_do_not_panic() {
        let r = rf(64);
        let mut seed = 7u64;
        for _ in 0..200 {
            let mut bytes = Vec::new();
            for _ in 0..200 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                bytes.push((seed >> 33) as u8);
            }
            bytes.extend(b"\n\ndata: {\"choices\":[{\"index\":18446744073709551615,\"delta\":{\"content\":\"x\"}}]}\n\n");
            let _ = run(&r, Api::OpenAi, &bytes, 7);
            let _ = run(&r, Api::Anthropic, &bytes, 7);
        }
    }

    #[test]
    fn window_is_validated() {
        let cfg: ResponseFilterConfig =
            serde_json::from_value(json!({"stream_window_bytes": 1})).unwrap();
        assert_eq!(
            cfg.compile().unwrap_err().field,
            "response_filter.stream_window_bytes"
        );
    }
}

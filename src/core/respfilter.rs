//! Response filtering: the request guard's detectors applied to completion
//! text, in JSON responses and in SSE streams.
//!
//! Streams hold back a window of text per choice (OpenAI) or content block
//! (Anthropic), so an entity split across chunks is caught; text is released
//! once it is further than the window from the end, never cutting through a
//! match. The result is the same as redacting the whole text at once, for
//! every way the stream is split (unit-tested at every split point).
//!
//! Tool-call arguments (OpenAI `tool_calls[].function.arguments` and the
//! deprecated `function_call.arguments`, per choice and call; Anthropic
//! `input_json_delta.partial_json`, per block) are JSON text, filtered with
//! the same window by a `JsonRedactor`: the streamed pieces concatenate to
//! exactly what [`filter_json`] makes of the whole arguments. Held text is
//! never dropped: it is released (redacted) when its call/block/choice ends,
//! before an upstream error event is forwarded, at the end of the stream
//! ([`StreamFilter::finish`]) and before the filter's own error event
//! ([`StreamFilter::fail_closed`], for a stream that can no longer be
//! parsed).

use crate::core::api::Api;
use crate::core::error::ConfigError;
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

    fn merge(&mut self, other: &Findings) {
        for (name, n) in &other.counts {
            if let Some(c) = self.counts.iter_mut().find(|(k, _)| k == name) {
                c.1 = c.1.saturating_add(*n);
            } else {
                self.counts.push((name, *n));
            }
        }
        if self.blocked.is_none() {
            self.blocked = other.blocked;
        }
    }
}

/// Replaces each match with its placeholder. `quote`: the text is raw JSON
/// outside any string, so a placeholder is written as a JSON string
/// (`"[REDACTED_…]"`) and a redacted number stays valid JSON.
fn redact_with(
    det: &Detectors,
    text: &str,
    matches: &[Match],
    quote: bool,
    f: &mut Findings,
) -> String {
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
        if quote {
            out.push('"');
        }
        out.push_str(m.entity.placeholder());
        if quote {
            out.push('"');
        }
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
            *s = redact_with(det, s, &matches, false, f);
            return true;
        }
    }
    false
}

/// Redacts JSON text (tool-call arguments) as a whole: the content of every
/// string (decoded, keys included) and every run of text between strings
/// are redacted separately; see [`JsonRedactor`]. The streamed arguments of
/// a tool call, filtered piece by piece, concatenate to exactly this.
pub fn redact_json_text(det: &Detectors, text: &str, f: &mut Findings) -> String {
    let mut r = JsonRedactor::default();
    let mut out = r.push(det, usize::MAX, text, f);
    out.push_str(&r.finish(det, usize::MAX, f));
    out
}

/// Redacts a JSON value (an Anthropic `tool_use` input) the way its streamed
/// form is redacted: serialised, [`redact_json_text`], parsed back. Should
/// the result not parse (a match inside a longer number token), string and
/// number leaves and keys are redacted one by one instead. True if changed.
fn redact_json_value(det: &Detectors, v: &mut Value, f: &mut Findings) -> bool {
    let Ok(text) = serde_json::to_string(v) else {
        return redact_leaves(det, v, f);
    };
    let mut found = Findings::default();
    let out = redact_json_text(det, &text, &mut found);
    if out == text {
        return false;
    }
    match serde_json::from_str::<Value>(&out) {
        Ok(nv) => {
            *v = nv;
            f.merge(&found);
            true
        }
        Err(_) => redact_leaves(det, v, f),
    }
}

fn redact_leaves(det: &Detectors, v: &mut Value, f: &mut Findings) -> bool {
    match v {
        Value::String(_) => redact_value(det, v, f),
        Value::Number(n) => {
            let s = n.to_string();
            let matches = det.find(&s);
            if matches.is_empty() {
                return false;
            }
            *v = Value::String(redact_with(det, &s, &matches, false, f));
            true
        }
        Value::Array(items) => {
            let mut changed = false;
            for item in items {
                changed |= redact_leaves(det, item, f);
            }
            changed
        }
        Value::Object(map) => {
            let mut changed = false;
            let old = std::mem::take(map);
            for (k, mut item) in old {
                changed |= redact_leaves(det, &mut item, f);
                let mut key = Value::String(k);
                changed |= redact_value(det, &mut key, f);
                if let Value::String(k) = key {
                    map.insert(k, item);
                }
            }
            changed
        }
        Value::Null | Value::Bool(_) => false,
    }
}

/// OpenAI tool-call arguments (a string of JSON text). True if changed.
fn redact_args(det: &Detectors, a: &mut Value, f: &mut Findings) -> bool {
    let Value::String(s) = a else {
        return false;
    };
    let out = redact_json_text(det, s, f);
    if out == *s {
        return false;
    }
    *s = out;
    true
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
                            if let Some(a) = call
                                .get_mut("function")
                                .and_then(|func| func.get_mut("arguments"))
                            {
                                changed |= redact_args(det, a, &mut f);
                            }
                        }
                    }
                    // The deprecated `functions` API.
                    if let Some(a) = msg
                        .get_mut("function_call")
                        .and_then(|fc| fc.get_mut("arguments"))
                    {
                        changed |= redact_args(det, a, &mut f);
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
                    // `tool_use` (and `server_tool_use`) input.
                    if let Some(input) = b.get_mut("input") {
                        changed |= redact_json_value(det, input, &mut f);
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

/// Adds text to a held-back window and returns what may be released now
/// (everything when `last`), redacted. `quote`: see [`redact_with`].
fn hold_back(
    det: &Detectors,
    window: usize,
    p: &mut Pending,
    text: &str,
    last: bool,
    quote: bool,
    f: &mut Findings,
) -> String {
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
    let out = redact_with(det, seg, &released, quote, f);
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

/// Appends `s` as the inside of a JSON string literal.
fn escape_json_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
}

/// Streaming redaction of JSON text (tool-call arguments), split anywhere.
///
/// The text is cut into segments: the content of each string literal
/// (escapes decoded, so `\u0040` hides nothing; re-encoded on output) and
/// each run of text between strings (structure, numbers, or whatever a
/// model wrote that is not JSON). Each segment is redacted on its own with
/// the hold-back window; a match outside strings (a card number written as
/// a number) becomes a quoted placeholder, so the JSON stays valid. The
/// output for any split of the input equals [`redact_json_text`] of the
/// whole. Invalid escapes are kept as literal text; lone surrogates become
/// U+FFFD.
#[derive(Debug, Default)]
struct JsonRedactor {
    in_string: bool,
    /// The current segment's hold-back state.
    seg: Pending,
    /// An incomplete escape (`\`, `\u12`…), raw.
    esc: String,
    /// A decoded high surrogate waiting for its low half.
    high: Option<u32>,
}

impl JsonRedactor {
    fn flush_high(&mut self, buf: &mut String) {
        if self.high.take().is_some() {
            buf.push('\u{fffd}');
        }
    }

    /// Releases the current segment's text `buf` (`last`: the segment ends).
    fn release(
        &mut self,
        det: &Detectors,
        window: usize,
        buf: &mut String,
        last: bool,
        out: &mut String,
        f: &mut Findings,
    ) {
        let text = std::mem::take(buf);
        if self.in_string {
            let r = hold_back(det, window, &mut self.seg, &text, last, false, f);
            escape_json_into(out, &r);
        } else {
            out.push_str(&hold_back(det, window, &mut self.seg, &text, last, true, f));
        }
        if last {
            self.seg = Pending::default();
        }
    }

    /// A completed `\uXXXX` escape.
    fn unicode_escape(&mut self, code: u32, buf: &mut String) {
        match code {
            0xD800..=0xDBFF => {
                self.flush_high(buf);
                self.high = Some(code);
            }
            0xDC00..=0xDFFF => match self.high.take() {
                Some(h) => {
                    let c = h
                        .saturating_sub(0xD800)
                        .checked_shl(10)
                        .and_then(|x| x.checked_add(code.saturating_sub(0xDC00)))
                        .and_then(|x| x.checked_add(0x10000))
                        .and_then(char::from_u32)
                        .unwrap_or('\u{fffd}');
                    buf.push(c);
                }
                None => buf.push('\u{fffd}'),
            },
            _ => {
                self.flush_high(buf);
                buf.push(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
        }
    }

    /// Takes one piece of the text; returns the redacted text releasable now.
    fn push(&mut self, det: &Detectors, window: usize, piece: &str, f: &mut Findings) -> String {
        let mut out = String::with_capacity(piece.len());
        let mut buf = String::new();
        for ch in piece.chars() {
            let mut next = Some(ch);
            while let Some(c) = next.take() {
                if !self.in_string {
                    if c == '"' {
                        self.release(det, window, &mut buf, true, &mut out, f);
                        out.push('"');
                        self.in_string = true;
                    } else {
                        buf.push(c);
                    }
                    continue;
                }
                if self.esc.is_empty() {
                    match c {
                        '"' => {
                            self.flush_high(&mut buf);
                            self.release(det, window, &mut buf, true, &mut out, f);
                            out.push('"');
                            self.in_string = false;
                        }
                        '\\' => self.esc.push(c),
                        _ => {
                            self.flush_high(&mut buf);
                            buf.push(c);
                        }
                    }
                    continue;
                }
                // Inside an escape: `esc` holds `\` and what followed.
                if self.esc.len() == 1 {
                    let decoded = match c {
                        '"' => Some('"'),
                        '\\' => Some('\\'),
                        '/' => Some('/'),
                        'b' => Some('\u{8}'),
                        'f' => Some('\u{c}'),
                        'n' => Some('\n'),
                        'r' => Some('\r'),
                        't' => Some('\t'),
                        _ => None,
                    };
                    if let Some(d) = decoded {
                        self.esc.clear();
                        self.flush_high(&mut buf);
                        buf.push(d);
                    } else if c == 'u' {
                        self.esc.push(c);
                    } else {
                        // Invalid escape: the backslash is literal text.
                        self.esc.clear();
                        self.flush_high(&mut buf);
                        buf.push('\\');
                        next = Some(c);
                    }
                    continue;
                }
                if c.is_ascii_hexdigit() {
                    self.esc.push(c);
                    if self.esc.len() >= 6 {
                        let hex = self.esc.get(2..).unwrap_or("");
                        let code = u32::from_str_radix(hex, 16).unwrap_or(0xFFFD);
                        self.esc.clear();
                        self.unicode_escape(code, &mut buf);
                    }
                } else {
                    let raw = std::mem::take(&mut self.esc);
                    self.flush_high(&mut buf);
                    buf.push_str(&raw);
                    next = Some(c);
                }
            }
        }
        self.release(det, window, &mut buf, false, &mut out, f);
        out
    }

    /// End of the text: releases everything held.
    fn finish(&mut self, det: &Detectors, window: usize, f: &mut Findings) -> String {
        let mut out = String::new();
        let mut buf = String::new();
        self.flush_high(&mut buf);
        self.release(det, window, &mut buf, true, &mut out, f);
        // An escape cut off by the end of the text, as received.
        out.push_str(&std::mem::take(&mut self.esc));
        out
    }
}

/// Which argument text of a choice (OpenAI) or block (Anthropic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    /// OpenAI `tool_calls[]` entry with this `index`.
    Tool(u64),
    /// OpenAI deprecated `function_call`.
    Function,
    /// Anthropic `input_json_delta` of the block.
    Block,
}

/// A streaming filter for one response.
pub struct StreamFilter {
    rf: ResponseFilter,
    api: Api,
    /// Completion text per choice (OpenAI) or text block (Anthropic).
    pending: BTreeMap<u64, Pending>,
    /// Tool-call arguments per (choice, call) or (block, [`Slot::Block`]).
    args: BTreeMap<(u64, Slot), JsonRedactor>,
    pub findings: Findings,
    /// The filter ended the stream with its own error event (blocked or
    /// failed closed); everything after is dropped.
    ended: bool,
    /// Ended by [`StreamFilter::fail_closed`].
    failed_closed: bool,
    /// A template of the last OpenAI chunk (id, model, …) to flush into.
    last_chunk: Option<Map<String, Value>>,
}

impl StreamFilter {
    pub fn new(rf: &ResponseFilter, api: Api) -> Self {
        Self {
            rf: rf.clone(),
            api,
            pending: BTreeMap::new(),
            args: BTreeMap::new(),
            findings: Findings::default(),
            ended: false,
            failed_closed: false,
            last_chunk: None,
        }
    }

    /// An entity whose action is `block` was found: the stream was ended
    /// with a `response_blocked` error event.
    pub fn blocked(&self) -> bool {
        self.findings.blocked.is_some()
    }

    /// The stream was ended by [`StreamFilter::fail_closed`].
    pub fn failed_closed(&self) -> bool {
        self.failed_closed
    }

    /// The filter ended the stream with its own error event (blocked or
    /// failed closed): what the client got is not the upstream's response,
    /// so it must not be cached; later events produce nothing.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Adds completion text to a choice/block; returns what may be released.
    fn push_text(&mut self, index: u64, text: &str, last: bool) -> String {
        let p = self.pending.entry(index).or_default();
        hold_back(
            &self.rf.detectors,
            self.rf.window,
            p,
            text,
            last,
            false,
            &mut self.findings,
        )
    }

    /// Adds argument text to a tool call; returns what may be released.
    fn push_args(&mut self, key: (u64, Slot), text: &str) -> String {
        let r = self.args.entry(key).or_default();
        r.push(&self.rf.detectors, self.rf.window, text, &mut self.findings)
    }

    /// Ends a tool call's arguments: the rest, redacted.
    fn finish_args(&mut self, key: (u64, Slot)) -> String {
        match self.args.remove(&key) {
            Some(mut r) => r.finish(&self.rf.detectors, self.rf.window, &mut self.findings),
            None => String::new(),
        }
    }

    fn has_text(&self, index: u64) -> bool {
        self.pending.get(&index).is_some_and(|p| !p.text.is_empty())
    }

    fn error_with(&mut self, code: &str, message: &str) -> Vec<u8> {
        self.ended = true;
        match self.api {
            Api::OpenAi => {
                let v = json!({"error": {"message": message, "type": "api_error", "code": code}});
                serialize_event(None, &v.to_string())
            }
            Api::Anthropic => {
                let v =
                    json!({"type": "error", "error": {"type": "api_error", "message": message}});
                serialize_event(Some("error"), &v.to_string())
            }
        }
    }

    fn error_event(&mut self) -> Vec<u8> {
        let what = self.findings.blocked.unwrap_or("sensitive data");
        let message = format!("response blocked: it contained {what}");
        self.error_with("response_blocked", &message)
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

    /// Fails closed: the stream can no longer be filtered (an event over
    /// the SSE parser's size limit). Releases everything held (redacted),
    /// then ends the stream with an error event in the API's format
    /// (`response_unfilterable`); later events produce nothing. `reason`
    /// goes into the error message: never response text.
    pub fn fail_closed(&mut self, reason: &str) -> Vec<u8> {
        if self.ended {
            return Vec::new();
        }
        let mut out = self.flush_all();
        if self.ended {
            return out;
        }
        let message = format!("the response could not be filtered: {reason}");
        out.extend(self.error_with("response_unfilterable", &message));
        self.failed_closed = true;
        out
    }

    /// Releases everything held, in the API's format; on a `block` match the
    /// blocking error event instead.
    fn flush_all(&mut self) -> Vec<u8> {
        match self.api {
            Api::OpenAi => self.flush_openai(),
            Api::Anthropic => self.flush_anthropic(),
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
        if obj.get("error").is_some_and(|e| !e.is_null()) {
            // An upstream error: what is held goes out first.
            let mut out = self.flush_openai();
            if self.ended {
                return out;
            }
            out.extend_from_slice(&ev.raw);
            return out;
        }
        if obj.contains_key("choices") {
            let mut template = obj.clone();
            template.remove("usage");
            self.last_chunk = Some(template);
        }
        let mut changed = false;
        // Chunks with the rest of finished tool calls, sent before this one.
        let mut before = Vec::new();
        let mut choices = match obj.remove("choices") {
            Some(Value::Array(c)) => Some(c),
            Some(other) => {
                obj.insert("choices".to_string(), other);
                None
            }
            None => None,
        };
        for c in choices.iter_mut().flatten() {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let last = c.get("finish_reason").is_some_and(|f| !f.is_null());
            let Some(choice) = c.as_object_mut() else {
                continue;
            };
            // Tool-call arguments.
            if let Some(Value::Array(calls)) = choice
                .get_mut("delta")
                .and_then(|d| d.get_mut("tool_calls"))
            {
                for (pos, call) in calls.iter_mut().enumerate() {
                    let k = call
                        .get("index")
                        .and_then(Value::as_u64)
                        .unwrap_or(pos as u64);
                    if let Some(Value::String(a)) = call
                        .get_mut("function")
                        .and_then(|func| func.get_mut("arguments"))
                    {
                        *a = self.push_args((index, Slot::Tool(k)), a);
                        changed = true;
                    }
                }
            }
            if let Some(Value::String(a)) = choice
                .get_mut("delta")
                .and_then(|d| d.get_mut("function_call"))
                .and_then(|fc| fc.get_mut("arguments"))
            {
                *a = self.push_args((index, Slot::Function), a);
                changed = true;
            }
            if last {
                if let Some(delta) = self.flush_choice_args(index) {
                    before.extend(self.openai_chunk(index, delta));
                }
            }
            // Completion text.
            let text = choice
                .get("delta")
                .and_then(|d| d.get("content"))
                .and_then(Value::as_str)
                .map(str::to_string);
            if text.is_none() && !(last && self.has_text(index)) {
                continue;
            }
            let released = self.push_text(index, text.as_deref().unwrap_or(""), last);
            if text.is_some() || !released.is_empty() {
                let delta = choice
                    .entry("delta")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(delta) = delta.as_object_mut() {
                    delta.insert("content".to_string(), Value::String(released));
                    changed = true;
                }
            }
        }
        if let Some(c) = choices {
            obj.insert("choices".to_string(), Value::Array(c));
        }
        if self.findings.blocked.is_some() {
            return self.error_event();
        }
        if !changed {
            before.extend_from_slice(&ev.raw);
            return before;
        }
        before.extend(serialize_event(
            ev.event.as_deref(),
            &Value::Object(obj).to_string(),
        ));
        before
    }

    /// Ends every tool call of a choice: a delta with the rest of their
    /// arguments, if any.
    fn flush_choice_args(&mut self, index: u64) -> Option<Map<String, Value>> {
        let keys: Vec<(u64, Slot)> = self
            .args
            .keys()
            .filter(|(i, _)| *i == index)
            .copied()
            .collect();
        let mut calls = Vec::new();
        let mut delta = Map::new();
        for key in keys {
            let rest = self.finish_args(key);
            if rest.is_empty() {
                continue;
            }
            match key.1 {
                Slot::Tool(k) => calls.push(json!({"index": k, "function": {"arguments": rest}})),
                Slot::Function | Slot::Block => {
                    delta.insert("function_call".to_string(), json!({"arguments": rest}));
                }
            }
        }
        if !calls.is_empty() {
            delta.insert("tool_calls".to_string(), Value::Array(calls));
        }
        (!delta.is_empty()).then_some(delta)
    }

    /// An OpenAI chunk (from the last chunk seen) with one choice's delta.
    fn openai_chunk(&self, index: u64, delta: Map<String, Value>) -> Vec<u8> {
        let mut chunk = self.last_chunk.clone().unwrap_or_default();
        chunk.insert(
            "choices".to_string(),
            json!([{"index": index, "delta": delta, "finish_reason": null}]),
        );
        serialize_event(None, &Value::Object(chunk).to_string())
    }

    /// The choice (OpenAI) or block (Anthropic) indexes that still hold
    /// text or tool arguments, in order.
    fn held_indexes(&self) -> Vec<u64> {
        let mut indexes: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.text.is_empty())
            .map(|(i, _)| *i)
            .chain(self.args.keys().map(|(i, _)| *i))
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        indexes
    }

    /// Releases everything still held as OpenAI chunks, one per choice.
    fn flush_openai(&mut self) -> Vec<u8> {
        let indexes = self.held_indexes();
        let mut out = Vec::new();
        for i in indexes {
            let mut delta = self.flush_choice_args(i).unwrap_or_default();
            if self.has_text(i) {
                let text = self.push_text(i, "", true);
                delta.insert("content".to_string(), Value::String(text));
            }
            if self.findings.blocked.is_some() {
                return self.error_event();
            }
            if !delta.is_empty() {
                out.extend(self.openai_chunk(i, delta));
            }
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
        if ty == "error" || ev.event.as_deref() == Some("error") || ty == "message_stop" {
            // An upstream error (or a message end without block ends): what
            // is held goes out first.
            let mut out = self.flush_anthropic();
            if self.ended {
                return out;
            }
            out.extend_from_slice(&ev.raw);
            return out;
        }
        match ty.as_str() {
            "content_block_start" => {
                // A tool_use block starts with an empty `input`; should one
                // come with arguments, they are filtered too.
                let changed = obj
                    .get_mut("content_block")
                    .and_then(|b| b.get_mut("input"))
                    .is_some_and(|input| {
                        redact_json_value(&self.rf.detectors, input, &mut self.findings)
                    });
                if self.findings.blocked.is_some() {
                    return self.error_event();
                }
                if !changed {
                    return ev.raw.clone();
                }
                serialize_event(ev.event.as_deref(), &Value::Object(obj).to_string())
            }
            "content_block_delta" => {
                let delta_type = obj
                    .get("delta")
                    .and_then(|d| d.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let field = match delta_type {
                    "text_delta" => "text",
                    "input_json_delta" => "partial_json",
                    _ => return ev.raw.clone(),
                };
                let Some(piece) = obj
                    .get("delta")
                    .and_then(|d| d.get(field))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                else {
                    return ev.raw.clone();
                };
                let released = if field == "text" {
                    self.push_text(index, &piece, false)
                } else {
                    self.push_args((index, Slot::Block), &piece)
                };
                if self.findings.blocked.is_some() {
                    return self.error_event();
                }
                if let Some(d) = obj.get_mut("delta").and_then(Value::as_object_mut) {
                    d.insert(field.to_string(), Value::String(released));
                }
                serialize_event(ev.event.as_deref(), &Value::Object(obj).to_string())
            }
            "content_block_stop" => {
                let mut out = self.flush_block(index);
                if self.findings.blocked.is_some() {
                    return self.error_event();
                }
                out.extend_from_slice(&ev.raw);
                out
            }
            _ => ev.raw.clone(),
        }
    }

    /// Ends one Anthropic block: `content_block_delta` events with the rest
    /// of its text and of its tool input, if any.
    fn flush_block(&mut self, index: u64) -> Vec<u8> {
        let mut out = Vec::new();
        if self.has_text(index) {
            let text = self.push_text(index, "", true);
            let delta = json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}});
            out.extend(serialize_event(
                Some("content_block_delta"),
                &delta.to_string(),
            ));
        }
        let rest = self.finish_args((index, Slot::Block));
        if !rest.is_empty() {
            let delta = json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": rest}});
            out.extend(serialize_event(
                Some("content_block_delta"),
                &delta.to_string(),
            ));
        }
        out
    }

    /// Releases everything still held as Anthropic `content_block_delta`
    /// events, block by block.
    fn flush_anthropic(&mut self) -> Vec<u8> {
        let indexes = self.held_indexes();
        let mut out = Vec::new();
        for i in indexes {
            out.extend(self.flush_block(i));
            if self.findings.blocked.is_some() {
                return self.error_event();
            }
        }
        out
    }

    /// End of the byte stream (possibly without a proper end: no `[DONE]`,
    /// no `content_block_stop`, an upstream reset): anything still held is
    /// released, redacted, in the API's format.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.ended {
            return Vec::new();
        }
        self.flush_all()
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
        let (out, f) = run_raw(rf, api, bytes, step);
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

    // ---- Tool-call arguments, fail-closed, held text on errors ----

    const AWS: &str = "AKIALALEMEL33243OLIB";

    /// Argument texts: valid JSON with secrets in strings (some behind
    /// escapes), a card number as a JSON number, no secret, not JSON.
    const ARGS: &[&str] = &[
        r#"{"to":"jane.doe@example.com","note":"my ssn is 460-89-9847 ok"}"#,
        r#"{"aws_key":"AKIALALEMEL33243OLIB","n":1}"#,
        r#"{"k":"key \"AKIALALEMEL33243OLIB\"\n","e":"jane\u002edoe\u0040example.com","u":"caf\u00e9 \ud83d\ude00 \\ \/"}"#,
        r#"{"card": 4111111111111111, "ok": true}"#,
        r#"{"city":"Paris","days":[1,2,3]}"#,
        "call me at jane.doe@example.com, key AKIALALEMEL33243OLIB",
    ];

    const SECRETS: &[&str] = &[
        "jane.doe@example.com",
        AWS,
        "460-89-9847",
        "4111111111111111",
        "jane\\u002edoe",
    ];

    fn assert_no_secret(out: &[u8]) {
        let s = String::from_utf8_lossy(out);
        for secret in SECRETS {
            assert!(!s.contains(secret), "{secret} leaked in {s}");
        }
    }

    /// Runs bytes through parser + filter, split every `step` bytes; returns
    /// the output bytes and the filter.
    fn run_raw(
        rf: &ResponseFilter,
        api: Api,
        bytes: &[u8],
        step: usize,
    ) -> (Vec<u8>, StreamFilter) {
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
        (out, f)
    }

    /// Every event of the output, which must be valid SSE with JSON data
    /// (or `[DONE]`): (event name, data; `Null` for `[DONE]`).
    fn events(out: &[u8]) -> Vec<(Option<String>, Value)> {
        let mut p = SseParser::new();
        let evs: Vec<SseEvent> = p.push(out).into_iter().chain(p.finish()).collect();
        let raw: Vec<u8> = evs.iter().flat_map(|e| e.raw.clone()).collect();
        assert_eq!(raw, out);
        evs.into_iter()
            .filter(|e| e.has_data)
            .map(|e| {
                assert!(e.raw.ends_with(b"\n\n"), "unterminated event");
                let v = if e.data == "[DONE]" {
                    Value::Null
                } else {
                    serde_json::from_str(&e.data)
                        .unwrap_or_else(|err| panic!("bad JSON {:?}: {err}", e.data))
                };
                (e.event, v)
            })
            .collect()
    }

    fn chunk(choices: Value) -> Vec<u8> {
        let v = json!({"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": choices});
        serialize_event(None, &v.to_string())
    }

    /// One choice, one tool call (id/name in its first delta), the argument
    /// pieces, the finish chunk and `[DONE]` (when `done`).
    fn openai_tool_stream(pieces: &[&str], done: bool) -> Vec<u8> {
        let mut out = chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "send", "arguments": ""}}]}, "finish_reason": null}]),
        );
        for p in pieces {
            out.extend(chunk(json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": p}}]}, "finish_reason": null}])));
        }
        if done {
            out.extend(chunk(
                json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
            ));
            out.extend(b"data: [DONE]\n\n");
        }
        out
    }

    /// The arguments the client assembles, per (choice, call index).
    fn openai_args(out: &[u8]) -> BTreeMap<(u64, u64), String> {
        let mut args: BTreeMap<(u64, u64), String> = BTreeMap::new();
        for (_, v) in events(out) {
            for c in v["choices"].as_array().into_iter().flatten() {
                for call in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                    if let Some(a) = call["function"]["arguments"].as_str() {
                        args.entry((
                            c["index"].as_u64().unwrap(),
                            call["index"].as_u64().unwrap(),
                        ))
                        .or_default()
                        .push_str(a);
                    }
                }
            }
        }
        args
    }

    fn anthropic_tool_stream(pieces: &[&str], stop: bool) -> Vec<u8> {
        let ev = |name: &str, v: Value| serialize_event(Some(name), &v.to_string());
        let mut out = ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "m1", "usage": {"input_tokens": 1, "output_tokens": 0}}}),
        );
        out.extend(ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
        out.extend(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Sending."}})));
        out.extend(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        out.extend(ev("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "send", "input": {}}})));
        for p in pieces {
            out.extend(ev("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": p}})));
        }
        if stop {
            out.extend(ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ));
            out.extend(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}})));
            out.extend(ev("message_stop", json!({"type": "message_stop"})));
        }
        out
    }

    /// The `partial_json` the client assembles for block 1.
    fn anthropic_args(out: &[u8]) -> String {
        let mut s = String::new();
        for (_, v) in events(out) {
            if v["type"] == "content_block_delta" && v["delta"]["type"] == "input_json_delta" {
                assert_eq!(v["index"], 1);
                s.push_str(v["delta"]["partial_json"].as_str().unwrap());
            }
        }
        s
    }

    /// Non-streamed OpenAI: the filtered `arguments`.
    fn openai_json_args(r: &ResponseFilter, args: &str) -> (String, Findings) {
        let body = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "send", "arguments": args}}]}}]});
        let (out, f) = filter_json(r, Api::OpenAi, body.to_string().as_bytes());
        let got = match out {
            Some(b) => serde_json::from_slice::<Value>(&b).unwrap()["choices"][0]["message"]
                ["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_string(),
            None => args.to_string(),
        };
        (got, f)
    }

    /// An independent reference: string leaves redacted one by one.
    fn leaves_redacted(r: &ResponseFilter, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(expected(r, s)),
            Value::Number(n) => {
                let s = n.to_string();
                match r.detectors.redact(&s) {
                    Some((t, _)) => Value::String(t),
                    None => v.clone(),
                }
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| leaves_redacted(r, x)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| (k.clone(), leaves_redacted(r, x)))
                    .collect(),
            ),
            _ => v.clone(),
        }
    }

    /// Splits `s` at every char boundary into two pieces.
    fn two_way_splits(s: &str) -> Vec<[String; 2]> {
        (0..=s.len())
            .filter(|i| s.is_char_boundary(*i))
            .map(|i| [s[..i].to_string(), s[i..].to_string()])
            .collect()
    }

    #[test]
    fn openai_tool_arguments_are_filtered_at_every_split_point() {
        let r = rf(64);
        for args in ARGS {
            let (want, want_f) = openai_json_args(&r, args);
            assert_eq!(
                want,
                redact_json_text(&r.detectors, args, &mut Findings::default())
            );
            if let Ok(v) = serde_json::from_str::<Value>(args) {
                let parsed: Value = serde_json::from_str(&want).unwrap();
                assert_eq!(parsed, leaves_redacted(&r, &v), "{args}");
            } else {
                assert!(want.contains("[REDACTED_EMAIL]") && want.contains("[REDACTED_AWS"));
            }
            let mut splits: Vec<Vec<String>> =
                two_way_splits(args).into_iter().map(Vec::from).collect();
            splits.push(args.chars().map(String::from).collect());
            for pieces in &splits {
                let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
                for done in [true, false] {
                    let bytes = openai_tool_stream(&refs, done);
                    for step in [1usize, 7, 4096] {
                        let (out, f) = run_raw(&r, Api::OpenAi, &bytes, step);
                        assert_no_secret(&out);
                        let got = openai_args(&out);
                        assert_eq!(got.len(), 1);
                        assert_eq!(got[&(0, 0)], want, "{pieces:?} step {step}");
                        assert_eq!(f.findings, want_f, "{pieces:?}");
                        assert!(!f.blocked() && !f.ended());
                        let evs = events(&out);
                        if done {
                            assert_eq!(evs.last().unwrap().1, Value::Null, "[DONE] last");
                        }
                        // The first delta keeps id, type and name.
                        let first = &evs[0].1["choices"][0]["delta"]["tool_calls"][0];
                        assert_eq!(first["id"], "call_1");
                        assert_eq!(first["function"]["name"], "send");
                    }
                }
            }
        }
    }

    #[test]
    fn anthropic_tool_input_is_filtered_at_every_split_point() {
        let r = rf(64);
        for args in ARGS {
            let want_text = redact_json_text(&r.detectors, args, &mut Findings::default());
            let parsed = serde_json::from_str::<Value>(args).ok();
            let want_value = parsed.as_ref().map(|input| {
                let body = json!({"content": [{"type": "text", "text": "Sending."}, {"type": "tool_use", "id": "toolu_1", "name": "send", "input": input}]});
                let (out, _) = filter_json(&r, Api::Anthropic, body.to_string().as_bytes());
                let v: Value = match out {
                    Some(b) => serde_json::from_slice(&b).unwrap(),
                    None => body,
                };
                assert_eq!(v["content"][1]["input"], leaves_redacted(&r, input));
                v["content"][1]["input"].clone()
            });
            let mut splits: Vec<Vec<String>> =
                two_way_splits(args).into_iter().map(Vec::from).collect();
            splits.push(args.chars().map(String::from).collect());
            for pieces in &splits {
                let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
                for stop in [true, false] {
                    let bytes = anthropic_tool_stream(&refs, stop);
                    for step in [1usize, 7, 4096] {
                        let (out, f) = run_raw(&r, Api::Anthropic, &bytes, step);
                        assert_no_secret(&out);
                        let got = anthropic_args(&out);
                        assert_eq!(got, want_text, "{pieces:?} step {step}");
                        if let Some(want) = &want_value {
                            let v: Value = serde_json::from_str(&got).unwrap();
                            assert_eq!(&v, want);
                        }
                        assert!(!f.ended());
                        let evs = events(&out);
                        let names: Vec<&str> =
                            evs.iter().filter_map(|(n, _)| n.as_deref()).collect();
                        if stop {
                            assert_eq!(names.last(), Some(&"message_stop"));
                            // Held input goes out before its block's stop.
                            let stop1 = evs
                                .iter()
                                .position(|(_, v)| {
                                    v["type"] == "content_block_stop" && v["index"] == 1
                                })
                                .unwrap();
                            assert!(evs[stop1 + 1..]
                                .iter()
                                .all(|(_, v)| v["type"] != "content_block_delta"));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn parallel_tool_calls_and_choices_are_kept_apart() {
        let r = rf(64);
        let a = r#"{"email":"jane.doe@example.com"}"#;
        let b = r#"{"key":"AKIALALEMEL33243OLIB"}"#;
        let mut bytes = Vec::new();
        bytes.extend(chunk(json!([
            {"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}, {"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": ""}}]}, "finish_reason": null},
            {"index": 1, "delta": {"tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "h", "arguments": ""}}]}, "finish_reason": null}
        ])));
        // Interleave the three calls character by character.
        let n = a.len().max(b.len());
        for i in 0..n {
            let pa = a.get(i..i + 1).unwrap_or("");
            let pb = b.get(i..i + 1).unwrap_or("");
            bytes.extend(chunk(json!([
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": pa}}, {"index": 1, "function": {"arguments": pb}}]}, "finish_reason": null},
                {"index": 1, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": pb}}]}, "finish_reason": null}
            ])));
        }
        bytes.extend(chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
        ));
        bytes.extend(chunk(
            json!([{"index": 1, "delta": {}, "finish_reason": "tool_calls"}]),
        ));
        bytes.extend(b"data: [DONE]\n\n");
        let (out, _) = run_raw(&r, Api::OpenAi, &bytes, 5);
        assert_no_secret(&out);
        let got = openai_args(&out);
        assert_eq!(got[&(0, 0)], r#"{"email":"[REDACTED_EMAIL]"}"#);
        assert_eq!(got[&(0, 1)], r#"{"key":"[REDACTED_AWS_ACCESS_KEY]"}"#);
        assert_eq!(got[&(1, 0)], r#"{"key":"[REDACTED_AWS_ACCESS_KEY]"}"#);
        // Each call's rest is out before its choice's finish chunk.
        let evs = events(&out);
        let fin0 = evs
            .iter()
            .position(|(_, v)| v["choices"][0]["finish_reason"] == "tool_calls")
            .unwrap();
        assert_eq!(evs[fin0].1["choices"][0]["index"], 0);
        for (_, v) in &evs[fin0..] {
            for c in v["choices"].as_array().into_iter().flatten() {
                assert!(c["index"] != 0 || c["delta"].get("tool_calls").is_none());
            }
        }
    }

    #[test]
    fn deprecated_function_call_arguments_are_filtered() {
        let r = rf(64);
        let args = r#"{"to":"jane.doe@example.com"}"#;
        let mut bytes = chunk(
            json!([{"index": 0, "delta": {"function_call": {"name": "send", "arguments": ""}}, "finish_reason": null}]),
        );
        for c in args.chars() {
            bytes.extend(chunk(json!([{"index": 0, "delta": {"function_call": {"arguments": c.to_string()}}, "finish_reason": null}])));
        }
        bytes.extend(chunk(
            json!([{"index": 0, "delta": {}, "finish_reason": "function_call"}]),
        ));
        let (out, _) = run_raw(&r, Api::OpenAi, &bytes, 9);
        assert_no_secret(&out);
        let got: String = events(&out)
            .iter()
            .filter_map(|(_, v)| {
                v["choices"][0]["delta"]["function_call"]["arguments"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(got, r#"{"to":"[REDACTED_EMAIL]"}"#);
        let body = json!({"choices": [{"message": {"function_call": {"name": "send", "arguments": args}}}]});
        let (out, _) = filter_json(&r, Api::OpenAi, body.to_string().as_bytes());
        let v: Value = serde_json::from_slice(&out.unwrap()).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["function_call"]["arguments"],
            got
        );
    }

    fn block_rf() -> ResponseFilter {
        let cfg: ResponseFilterConfig =
            serde_json::from_value(json!({"enabled": true, "secrets": {"default": "block"}}))
                .unwrap();
        cfg.compile().unwrap()
    }

    #[test]
    fn a_blocking_secret_in_tool_arguments_ends_the_stream() {
        let r = block_rf();
        let args = r#"{"note":"x","aws_key":"AKIALALEMEL33243OLIB"}"#;
        for [a, b] in two_way_splits(args) {
            for (api, bytes) in [
                (Api::OpenAi, openai_tool_stream(&[&a, &b], true)),
                (Api::Anthropic, anthropic_tool_stream(&[&a, &b], true)),
            ] {
                let (out, f) = run_raw(&r, api, &bytes, 4);
                assert_no_secret(&out);
                assert!(f.blocked() && f.ended() && !f.failed_closed());
                assert_eq!(f.findings.blocked, Some("aws_access_key"));
                let evs = events(&out);
                let (name, last) = evs.last().unwrap();
                match api {
                    Api::OpenAi => {
                        assert_eq!(name, &None);
                        assert_eq!(last["error"]["code"], "response_blocked");
                    }
                    Api::Anthropic => {
                        assert_eq!(name.as_deref(), Some("error"));
                        assert_eq!(last["type"], "error");
                        assert_eq!(last["error"]["type"], "api_error");
                    }
                }
                // Nothing after the error event.
                assert_eq!(
                    evs.iter().filter(|(_, v)| v.get("error").is_some()).count(),
                    1
                );
            }
        }
        // Non-streamed: the finding blocks.
        let (_, f) = openai_json_args(&r, args);
        assert_eq!(f.blocked, Some("aws_access_key"));
        let body =
            json!({"content": [{"type": "tool_use", "id": "t", "name": "n", "input": {"k": AWS}}]});
        let (_, f) = filter_json(&r, Api::Anthropic, body.to_string().as_bytes());
        assert_eq!(f.blocked, Some("aws_access_key"));
    }

    #[test]
    fn fail_closed_releases_held_text_then_ends_with_an_error() {
        let r = rf(512);
        // OpenAI: held content and arguments.
        let mut parser = SseParser::new();
        let mut f = StreamFilter::new(&r, Api::OpenAi);
        let mut out = Vec::new();
        let mut bytes = openai_tool_stream(&["{\"k\":\"AKIALALEM", "EL33243OLIB"], false);
        bytes.extend(chunk(json!([{"index": 0, "delta": {"content": "mail jane.doe@example.com soon"}, "finish_reason": null}])));
        for ev in parser.push(&bytes) {
            out.extend(f.on_event(&ev));
        }
        // The open string value and the content are held (window 512).
        assert_eq!(openai_args(&out)[&(0, 0)], r#"{"k":""#);
        let closed = f.fail_closed("an event exceeded 1048576 bytes");
        assert!(f.ended() && f.failed_closed() && !f.blocked());
        out.extend(&closed);
        assert_no_secret(&out);
        let evs = events(&out);
        let (_, last) = evs.last().unwrap();
        assert_eq!(last["error"]["code"], "response_unfilterable");
        assert_eq!(last["error"]["type"], "api_error");
        assert!(last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exceeded 1048576 bytes"));
        let text: String = evs
            .iter()
            .filter_map(|(_, v)| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(text, "mail [REDACTED_EMAIL] soon");
        assert_eq!(
            openai_args(&out)[&(0, 0)],
            r#"{"k":"[REDACTED_AWS_ACCESS_KEY]"#
        );
        // Ended: nothing more, ever.
        for ev in parser.push(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]\n\n") {
            assert!(f.on_event(&ev).is_empty());
        }
        assert!(f.finish().is_empty());
        assert!(f.fail_closed("again").is_empty());

        // Anthropic.
        let mut f = StreamFilter::new(&r, Api::Anthropic);
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        let mut bytes = anthropic_stream(&["mail jane.doe@", "example.com"]);
        let stop = bytes
            .windows(24)
            .position(|w| w == b"event: content_block_sto")
            .unwrap();
        bytes.truncate(stop);
        for ev in parser.push(&bytes) {
            out.extend(f.on_event(&ev));
        }
        out.extend(f.fail_closed("an event exceeded the size limit"));
        assert_no_secret(&out);
        let evs = events(&out);
        let (name, last) = evs.last().unwrap();
        assert_eq!(name.as_deref(), Some("error"));
        assert_eq!(last["type"], "error");
        assert_eq!(last["error"]["type"], "api_error");
        let text: String = evs
            .iter()
            .filter_map(|(_, v)| v["delta"]["text"].as_str().map(str::to_string))
            .collect();
        assert_eq!(text, "mail [REDACTED_EMAIL]");
        assert!(f.ended() && f.failed_closed());
        assert!(f.finish().is_empty());

        // A block match while flushing: the blocking error only.
        let r = block_rf();
        let mut f = StreamFilter::new(&r, Api::Anthropic);
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for ev in parser.push(&anthropic_tool_stream(
            &["{\"k\":\"AKIALALEMEL33243OLIB"],
            false,
        )) {
            out.extend(f.on_event(&ev));
        }
        out.extend(f.fail_closed("too big"));
        assert_no_secret(&out);
        assert!(f.blocked() && f.ended() && !f.failed_closed());
        let evs = events(&out);
        assert_eq!(
            evs.iter()
                .filter(|(n, _)| n.as_deref() == Some("error"))
                .count(),
            1
        );
    }

    #[test]
    fn held_text_goes_out_before_an_upstream_error() {
        let r = rf(512);
        // OpenAI: a chunk with a top-level error mid-stream.
        let mut bytes = chunk(
            json!([{"index": 0, "delta": {"content": "write to jane.doe@example.com"}, "finish_reason": null}]),
        );
        bytes.extend(openai_tool_stream(
            &["{\"k\":\"AKIALALEMEL33243OLIB\"}"],
            false,
        ));
        let upstream_err = serialize_event(
            None,
            &json!({"error": {"message": "overloaded", "type": "server_error", "code": null}})
                .to_string(),
        );
        bytes.extend(&upstream_err);
        for step in [1usize, 64, 4096] {
            let (out, f) = run_raw(&r, Api::OpenAi, &bytes, step);
            assert_no_secret(&out);
            assert!(out.ends_with(&upstream_err), "the upstream error is last");
            assert!(!f.ended());
            let evs = events(&out);
            let text: String = evs
                .iter()
                .filter_map(|(_, v)| {
                    v["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(str::to_string)
                })
                .collect();
            assert_eq!(text, "write to [REDACTED_EMAIL]");
            assert_eq!(
                openai_args(&out)[&(0, 0)],
                r#"{"k":"[REDACTED_AWS_ACCESS_KEY]"}"#
            );
        }
        // Anthropic: `event: error` mid-block.
        let mut bytes = anthropic_stream(&["write to jane.doe@", "example.com"]);
        let stop = bytes
            .windows(24)
            .position(|w| w == b"event: content_block_sto")
            .unwrap();
        bytes.truncate(stop);
        let upstream_err = serialize_event(
            Some("error"),
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
                .to_string(),
        );
        bytes.extend(&upstream_err);
        for step in [1usize, 64, 4096] {
            let (out, _) = run_raw(&r, Api::Anthropic, &bytes, step);
            assert_no_secret(&out);
            assert!(out.ends_with(&upstream_err));
            let text: String = events(&out)
                .iter()
                .filter_map(|(_, v)| v["delta"]["text"].as_str().map(str::to_string))
                .collect();
            assert_eq!(text, "write to [REDACTED_EMAIL]");
        }
    }

    #[test]
    fn finish_releases_held_text_for_anthropic() {
        let r = rf(512);
        // The stream stops mid-text (no content_block_stop, no message_stop).
        let mut bytes = anthropic_stream(&["hello jane.doe@", "example.com bye"]);
        let stop = bytes
            .windows(24)
            .position(|w| w == b"event: content_block_sto")
            .unwrap();
        bytes.truncate(stop);
        let (out, _) = run_raw(&r, Api::Anthropic, &bytes, 3);
        assert_no_secret(&out);
        let evs = events(&out);
        let text: String = evs
            .iter()
            .filter_map(|(_, v)| v["delta"]["text"].as_str().map(str::to_string))
            .collect();
        assert_eq!(text, "hello [REDACTED_EMAIL] bye");
        let (name, last) = evs.last().unwrap();
        assert_eq!(name.as_deref(), Some("content_block_delta"));
        assert_eq!(last["index"], 0);
        assert_eq!(last["delta"]["type"], "text_delta");
        // Mid-tool-input: an input_json_delta of the right block.
        let bytes = anthropic_tool_stream(&["{\"to\":\"jane.doe@", "example.com\"}"], false);
        let (out, _) = run_raw(&r, Api::Anthropic, &bytes, 3);
        assert_no_secret(&out);
        assert_eq!(anthropic_args(&out), r#"{"to":"[REDACTED_EMAIL]"}"#);
        let evs = events(&out);
        let (_, last) = evs.last().unwrap();
        assert_eq!(last["index"], 1);
        assert_eq!(last["delta"]["type"], "input_json_delta");
        // A message_stop without block stops releases too.
        let mut bytes = anthropic_tool_stream(&["{\"to\":\"jane.doe@example.com\"}"], false);
        bytes.extend(serialize_event(
            Some("message_stop"),
            &json!({"type": "message_stop"}).to_string(),
        ));
        let mut parser = SseParser::new();
        let mut f = StreamFilter::new(&r, Api::Anthropic);
        let mut out = Vec::new();
        for ev in parser.push(&bytes) {
            out.extend(f.on_event(&ev));
        }
        assert!(f.finish().is_empty());
        assert_eq!(anthropic_args(&out), r#"{"to":"[REDACTED_EMAIL]"}"#);
        assert_eq!(
            events(&out).last().unwrap().0.as_deref(),
            Some("message_stop")
        );
    }

    #[test]
    fn json_text_redaction_edge_cases() {
        let r = rf(64);
        let d = &r.detectors;
        let red = |s: &str| redact_json_text(d, s, &mut Findings::default());
        // Escapes are decoded before detection and re-encoded after.
        assert_eq!(
            red(r#"{"e":"jane\u002edoe\u0040example.com"}"#),
            r#"{"e":"[REDACTED_EMAIL]"}"#
        );
        assert_eq!(
            red(r#"["a\"b\\c\n\u00e9\ud83d\ude00\/"]"#),
            "[\"a\\\"b\\\\c\\n\u{e9}\u{1f600}/\"]"
        );
        // Lone surrogates, invalid and cut-off escapes: no panic, no loss.
        assert_eq!(
            red(r#"["\ud83d x","\ude00","\q","\u12x"]"#),
            "[\"\u{fffd} x\",\"\u{fffd}\",\"\\\\q\",\"\\\\u12x\"]"
        );
        assert_eq!(
            red(r#"{"a":"unterminated \u00"#),
            r#"{"a":"unterminated \u00"#
        );
        // A number that is a card number becomes a string.
        assert_eq!(
            red(r#"{"card":4111111111111111}"#),
            r#"{"card":"[REDACTED_CREDIT_CARD]"}"#
        );
        // Keys are strings too.
        assert_eq!(
            red(r#"{"jane.doe@example.com":1}"#),
            r#"{"[REDACTED_EMAIL]":1}"#
        );
        // Every split of the tricky cases gives the whole result.
        for s in [
            r#"["\ud83d x","\ude00","\q","\u12x", "é\u00e9\"\\"]"#,
            r#"{"a":"unterminated \u00"#,
            "\"\\",
        ] {
            let whole = red(s);
            for [a, b] in two_way_splits(s) {
                let mut rd = JsonRedactor::default();
                let mut f = Findings::default();
                let mut got = rd.push(d, 64, &a, &mut f);
                got.push_str(&rd.push(d, 64, &b, &mut f));
                got.push_str(&rd.finish(d, 64, &mut f));
                assert_eq!(got, whole, "{a:?} | {b:?}");
            }
        }
    }

    #[test]
    fn tool_use_input_in_content_block_start_is_filtered() {
        let r = rf(64);
        let bytes = serialize_event(Some("content_block_start"), &json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "n", "input": {"to": "jane.doe@example.com"}}}).to_string());
        let (out, f) = run_raw(&r, Api::Anthropic, &bytes, 4096);
        assert_no_secret(&out);
        assert_eq!(
            events(&out)[0].1["content_block"]["input"]["to"],
            "[REDACTED_EMAIL]"
        );
        assert_eq!(f.findings.counts, vec![("email", 1)]);
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

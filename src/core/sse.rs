//! An incremental Server-Sent Events parser over bytes.
//!
//! Body chunks arrive split anywhere: inside a line, inside a `\r\n`, inside a
//! multi-byte character. [`SseParser::push`] takes each chunk as it comes and
//! returns the events it completes; the parser holds at most the one
//! incomplete event (bounded by a maximum size), never the whole stream.
//! Bytes are never decoded per chunk: an event's `data` is decoded once, when
//! the event is complete.
//!
//! Every byte pushed comes back exactly once, in order: in the
//! [`SseEvent::raw`] of a returned event, or (after an overflow) from
//! [`SseParser::take_unparsed`]. So a caller that forwards every `raw`
//! reproduces the stream byte for byte, and one that drops or replaces some
//! events leaves the others untouched.

/// The default maximum size of one event (its raw bytes): 1 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// One block of the stream, terminated by a blank line (or by the end of the
/// stream, see [`SseParser::finish`]).
///
/// Blocks without any `data` field (only comments, say, or a stray blank
/// line) are returned too, with `has_data == false`: the SSE spec does not
/// dispatch them as events, but their bytes must still reach the client
/// (keep-alive comments, for one).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field (the last one in the block); `None` when absent or
    /// empty (the spec's default type, `message`).
    pub event: Option<String>,
    /// The `id:` field of this block, if it had one.
    pub id: Option<String>,
    /// The `data:` lines joined with `\n`, decoded as lossy UTF-8.
    pub data: String,
    /// Whether the block had at least one `data` field.
    pub has_data: bool,
    /// The exact bytes of the block, including its terminating blank line.
    pub raw: Vec<u8>,
}

impl SseEvent {
    /// A new event with its wire form (see [`serialize_event`]) as `raw`.
    pub fn new(event: Option<&str>, data: &str) -> Self {
        let raw = serialize_event(event, data);
        let event = event
            .map(first_line)
            .filter(|e| !e.is_empty())
            .map(str::to_string);
        Self {
            event,
            id: None,
            data: split_lines(data).collect::<Vec<_>>().join("\n"),
            has_data: true,
            raw,
        }
    }
}

/// The wire form of an event: `event: <event>\n` (when given), one
/// `data: <line>\n` per line of `data` (lines split on `\r\n`, `\r` or `\n`),
/// then the blank line. A line break in `event` cuts it there.
pub fn serialize_event(event: Option<&str>, data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().saturating_add(32));
    if let Some(name) = event.map(first_line).filter(|e| !e.is_empty()) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in split_lines(data) {
        if line.is_empty() {
            out.extend_from_slice(b"data:\n");
        } else {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }
    out.push(b'\n');
    out
}

fn first_line(s: &str) -> &str {
    s.split(['\r', '\n']).next().unwrap_or_default()
}

/// Splits on `\r\n`, `\r` and `\n`; `""` gives one empty line.
fn split_lines(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(current)
            }
            Some(i) => {
                let line = current.get(..i).unwrap_or_default();
                let after = current.get(i..).unwrap_or_default();
                let skip = if after.starts_with("\r\n") { 2 } else { 1 };
                rest = Some(after.get(skip..).unwrap_or_default());
                Some(line)
            }
        }
    })
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The incremental parser. See the module documentation.
#[derive(Debug, Clone)]
pub struct SseParser {
    max_event_bytes: usize,
    /// Raw bytes of the incomplete block (complete lines and the current
    /// partial line).
    raw: Vec<u8>,
    /// Where the current (partial) line starts in `raw`.
    line_start: usize,
    data: Vec<u8>,
    has_data: bool,
    event: Option<Vec<u8>>,
    id: Option<Vec<u8>>,
    /// The last byte seen ended a line with `\r`: a `\n` right after it
    /// belongs to the same line ending.
    pending_cr: bool,
    /// A `\r` not followed by `\n` was seen: the stream uses bare `\r`.
    cr_only: bool,
    /// A block completed by a blank line ending in `\r`, held until the next
    /// byte tells whether a `\n` belongs to it (never held when the stream is
    /// known to use bare `\r`, and flushed by [`SseParser::finish`]).
    ready: Option<SseEvent>,
    at_stream_start: bool,
    overflowed: bool,
    unparsed: Vec<u8>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser with the default maximum event size
    /// ([`DEFAULT_MAX_EVENT_BYTES`]).
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser whose events may be at most `max_event_bytes` raw bytes
    /// (at least 1).
    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes: max_event_bytes.max(1),
            raw: Vec::new(),
            line_start: 0,
            data: Vec::new(),
            has_data: false,
            event: None,
            id: None,
            pending_cr: false,
            cr_only: false,
            ready: None,
            at_stream_start: true,
            overflowed: false,
            unparsed: Vec::new(),
        }
    }

    /// Whether an event outgrew the maximum size. From then on the parser
    /// parses nothing: the incomplete event's bytes and every later chunk go
    /// to [`SseParser::take_unparsed`], which the caller must drain after each
    /// push and forward as is.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// The bytes not parsed because of an overflow, in stream order, after
    /// the raw bytes of any event returned by the same push. Empty otherwise.
    pub fn take_unparsed(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.unparsed)
    }

    /// Bytes currently held for an incomplete event.
    pub fn buffered_len(&self) -> usize {
        self.raw
            .len()
            .saturating_add(self.ready.as_ref().map_or(0, |e| e.raw.len()))
    }

    /// Feeds one chunk; returns every block it completes, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.overflowed {
            self.unparsed.extend_from_slice(chunk);
            return out;
        }
        let mut pos = 0usize;
        while let Some(rest) = chunk.get(pos..).filter(|r| !r.is_empty()) {
            if self.pending_cr {
                self.pending_cr = false;
                if rest.first() == Some(&b'\n') {
                    pos = pos.saturating_add(1);
                    match self.ready.as_mut() {
                        Some(ev) => ev.raw.push(b'\n'),
                        None => {
                            self.raw.push(b'\n');
                            self.line_start = self.raw.len();
                            if self.raw.len() > self.max_event_bytes {
                                self.overflow(chunk.get(pos..).unwrap_or_default());
                                return out;
                            }
                        }
                    }
                } else {
                    self.cr_only = true;
                }
                if let Some(ev) = self.ready.take() {
                    out.push(ev);
                }
                continue;
            }
            let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.raw.extend_from_slice(rest);
                if self.raw.len() > self.max_event_bytes {
                    self.overflow(&[]);
                }
                break;
            };
            let terminator = rest.get(i).copied();
            self.raw
                .extend_from_slice(rest.get(..=i).unwrap_or_default());
            pos = pos.saturating_add(i).saturating_add(1);
            if self.raw.len() > self.max_event_bytes {
                self.overflow(chunk.get(pos..).unwrap_or_default());
                return out;
            }
            let line_end = self.raw.len().saturating_sub(1);
            let completed = self.process_line(self.line_start, line_end);
            self.line_start = self.raw.len();
            if terminator == Some(b'\r') {
                self.pending_cr = true;
                if completed.is_some() {
                    self.ready = completed;
                    continue;
                }
            }
            out.extend(completed);
        }
        if self.cr_only {
            out.extend(self.ready.take());
        }
        out
    }

    /// Ends the stream: returns the held block, if any bytes are held — a
    /// block completed by a final `\r`, or one not terminated by a blank line
    /// (its last line counts even without a line ending). Check
    /// [`SseEvent::has_data`]: per the SSE spec, an unterminated block is not
    /// an event, but a caller may still count it or forward its bytes. The
    /// parser is then ready for a new stream (overflow state and unparsed
    /// bytes are kept).
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.overflowed {
            return None;
        }
        let result = if let Some(ev) = self.ready.take() {
            Some(ev)
        } else if self.raw.is_empty() {
            None
        } else {
            let end = self.raw.len();
            if self.line_start < end {
                // A last line without line ending: never blank, so it cannot
                // dispatch here.
                let _ = self.process_line(self.line_start, end);
            }
            Some(self.dispatch())
        };
        let max = self.max_event_bytes;
        *self = Self::with_max_event_bytes(max);
        result
    }

    fn overflow(&mut self, rest_of_chunk: &[u8]) {
        self.overflowed = true;
        let mut unparsed = std::mem::take(&mut self.raw);
        unparsed.extend_from_slice(rest_of_chunk);
        self.unparsed = unparsed;
        self.line_start = 0;
        self.data = Vec::new();
        self.has_data = false;
        self.event = None;
        self.id = None;
        self.pending_cr = false;
    }

    /// Interprets `raw[start..end]` (one line without its ending); returns the
    /// block when the line is blank.
    fn process_line(&mut self, start: usize, end: usize) -> Option<SseEvent> {
        let mut line = self.raw.get(start..end).unwrap_or_default();
        if self.at_stream_start {
            self.at_stream_start = false;
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            return Some(self.dispatch());
        }
        if line.first() == Some(&b':') {
            return None;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = line.get(i.saturating_add(1)..).unwrap_or_default();
                (
                    line.get(..i).unwrap_or_default(),
                    value.strip_prefix(b" ").unwrap_or(value),
                )
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(value.to_vec()),
            // Per the spec, an id containing NUL is ignored.
            b"id" if !value.contains(&0) => self.id = Some(value.to_vec()),
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> SseEvent {
        let event = self
            .event
            .take()
            .filter(|e| !e.is_empty())
            .map(decode_lossy);
        let id = self.id.take().map(decode_lossy);
        let data = decode_lossy(std::mem::take(&mut self.data));
        let has_data = std::mem::replace(&mut self.has_data, false);
        let raw = std::mem::take(&mut self.raw);
        self.line_start = 0;
        SseEvent {
            event,
            id,
            data,
            has_data,
            raw,
        }
    }
}

fn decode_lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A recorded-style OpenAI stream (with `include_usage`), with a
    /// multi-byte character split candidates (é, 日本, emoji).
    pub(crate) const OPENAI_STREAM: &str = concat!(
        "data: {\"id\":\"chatcmpl-B9\",\"object\":\"chat.completion.chunk\",\"created\":1741000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_06737a9306\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9\",\"object\":\"chat.completion.chunk\",\"created\":1741000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_06737a9306\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Caf\u{e9} \"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"chatcmpl-B9\",\"object\":\"chat.completion.chunk\",\"created\":1741000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_06737a9306\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\u{65e5}\u{672c} \u{1f600}\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9\",\"object\":\"chat.completion.chunk\",\"created\":1741000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_06737a9306\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-B9\",\"object\":\"chat.completion.chunk\",\"created\":1741000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_06737a9306\",\"choices\":[],\"usage\":{\"prompt_tokens\":1200,\"completion_tokens\":7,\"total_tokens\":1207,\"prompt_tokens_details\":{\"cached_tokens\":1024,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n\n",
        "data: [DONE]\n\n",
    );

    /// A recorded-style Anthropic stream, with a ping, a multi-byte
    /// character and cache tokens.
    pub(crate) const ANTHROPIC_STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":2000,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Gr\u{fc}\u{df} \u{1f44b}\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" na\u{ef}ve \u{4e16}\u{754c}\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    pub(crate) fn crlf(s: &str) -> String {
        s.replace('\n', "\r\n")
    }

    pub(crate) fn cr(s: &str) -> String {
        s.replace('\n', "\r")
    }

    /// Pushes `input` split at the given cut points, then finishes.
    pub(crate) fn parse_cuts(input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &c in cuts.iter().chain(std::iter::once(&input.len())) {
            out.extend(p.push(&input[start..c]));
            start = c;
        }
        out.extend(p.finish());
        out
    }

    pub(crate) fn parse_step(input: &[u8], step: usize) -> Vec<SseEvent> {
        let cuts: Vec<usize> = (1..input.len()).filter(|i| i % step == 0).collect();
        parse_cuts(input, &cuts)
    }

    fn concat_raw(events: &[SseEvent]) -> Vec<u8> {
        events.iter().flat_map(|e| e.raw.iter().copied()).collect()
    }

    fn check_all_splits(input: &[u8]) -> Vec<SseEvent> {
        let whole = parse_cuts(input, &[]);
        assert_eq!(concat_raw(&whole), input);
        for cut in 0..=input.len() {
            assert_eq!(parse_cuts(input, &[cut]), whole, "cut at {cut}");
        }
        for step in [1, 2, 3, 7] {
            assert_eq!(parse_step(input, step), whole, "step {step}");
        }
        whole
    }

    #[test]
    fn openai_stream_all_splits() {
        for input in [
            OPENAI_STREAM.to_string(),
            crlf(OPENAI_STREAM),
            cr(OPENAI_STREAM),
        ] {
            let events = check_all_splits(input.as_bytes());
            let data: Vec<&SseEvent> = events.iter().filter(|e| e.has_data).collect();
            assert_eq!(events.len(), 7);
            assert_eq!(data.len(), 6);
            assert!(data[1].data.contains("Caf\u{e9} "));
            assert!(data[2].data.contains("\u{65e5}\u{672c} \u{1f600}"));
            assert_eq!(data[5].data, "[DONE]");
            assert!(!events[2].has_data, "comment-only block");
        }
    }

    #[test]
    fn anthropic_stream_all_splits() {
        for input in [
            ANTHROPIC_STREAM.to_string(),
            crlf(ANTHROPIC_STREAM),
            cr(ANTHROPIC_STREAM),
        ] {
            let events = check_all_splits(input.as_bytes());
            assert_eq!(events.len(), 8);
            let names: Vec<_> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
            assert_eq!(
                names,
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
            assert!(events[3].data.contains("Gr\u{fc}\u{df} \u{1f44b}"));
            assert!(events.iter().all(|e| e.has_data));
        }
    }

    #[test]
    fn raw_is_exact_bytes_of_each_event() {
        let input = "event: a\r\ndata: 1\r\n\r\n: c\ndata: 2\n\n";
        let events = parse_cuts(input.as_bytes(), &[]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].raw, b"event: a\r\ndata: 1\r\n\r\n");
        assert_eq!(events[0].event.as_deref(), Some("a"));
        assert_eq!(events[0].data, "1");
        assert_eq!(events[1].raw, b": c\ndata: 2\n\n");
        assert_eq!(events[1].event, None);
    }

    #[test]
    fn crlf_split_between_cr_and_lf_of_blank_line() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: x\r\n\r").is_empty(), "held until next byte");
        let ev = p.push(b"\ndata: y\r\n\r\n");
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].raw, b"data: x\r\n\r\n");
        assert_eq!(ev[1].raw, b"data: y\r\n\r\n");
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn held_cr_event_flushed_by_finish() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: x\r\n\r").is_empty());
        let ev = p.finish().unwrap();
        assert_eq!(ev.data, "x");
        assert_eq!(ev.raw, b"data: x\r\n\r");
    }

    #[test]
    fn bare_cr_stream_is_not_delayed_once_detected() {
        // The first line ending shows bare CR: events come out at once.
        let mut p = SseParser::new();
        let ev = p.push(b"data: a\r\r");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "a");
        let ev = p.push(b"data: b\r\r");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].raw, b"data: b\r\r");
        // Before any evidence, a blank line ending in CR is held.
        let mut p = SseParser::new();
        assert!(p.push(b"\r").is_empty());
        let ev = p.push(b"data: c\r\r");
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].raw, b"\r");
        assert_eq!(ev[1].data, "c");
    }

    #[test]
    fn comments_multiline_data_fields() {
        let input = b": hello\nevent: update\nid: 42\ndata: line1\ndata:line2\ndata:  two spaces\ndata\nretry: 100\nunknown: x\n\n";
        let events = check_all_splits(input);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.event.as_deref(), Some("update"));
        assert_eq!(e.id.as_deref(), Some("42"));
        assert_eq!(e.data, "line1\nline2\n two spaces\n");
        assert!(e.has_data);
    }

    #[test]
    fn empty_data_and_empty_event() {
        let events = parse_cuts(b"event:\ndata:\n\n\n", &[]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event, None);
        assert_eq!(events[0].data, "");
        assert!(events[0].has_data);
        assert_eq!(events[1].raw, b"\n");
        assert!(!events[1].has_data);
    }

    #[test]
    fn bom_at_stream_start_is_ignored() {
        let events = check_all_splits(b"\xEF\xBB\xBFdata: x\n\n");
        assert_eq!(events[0].data, "x");
        assert!(events[0].has_data);
        assert_eq!(events[0].raw, b"\xEF\xBB\xBFdata: x\n\n");
    }

    #[test]
    fn finish_flushes_unterminated_event() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: {\"a\":1}\n\ndata: tail").len() == 1);
        let last = p.finish().unwrap();
        assert_eq!(last.data, "tail");
        assert!(last.has_data);
        assert_eq!(last.raw, b"data: tail");
        assert_eq!(p.finish(), None);

        let mut p = SseParser::new();
        p.push(b"data: x\n");
        assert_eq!(p.finish().unwrap().data, "x");

        let mut p = SseParser::new();
        p.push(b": only a comment");
        let e = p.finish().unwrap();
        assert!(!e.has_data);
        assert_eq!(e.raw, b": only a comment");
    }

    #[test]
    fn multibyte_split_is_decoded_once_complete() {
        let s = "data: \u{1f600}\u{e9}\n\n".as_bytes();
        for cut in 0..s.len() {
            let ev = parse_cuts(s, &[cut]);
            assert_eq!(ev[0].data, "\u{1f600}\u{e9}");
        }
    }

    #[test]
    fn overflow_stops_growth_and_returns_bytes() {
        let mut p = SseParser::with_max_event_bytes(32);
        let small = b"data: ok\n\n";
        let big = [b"data: ".as_slice(), &[b'x'; 40], b"\n\n"].concat();
        let mut input = small.to_vec();
        input.extend_from_slice(&big);
        let ev = p.push(&input[..20]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "ok");
        assert!(!p.overflowed());
        let ev = p.push(&input[20..]);
        assert!(ev.is_empty());
        assert!(p.overflowed());
        let mut rest = p.take_unparsed();
        assert!(p.take_unparsed().is_empty());
        assert!(p.push(b"data: later\n\n").is_empty());
        rest.extend(p.take_unparsed());
        assert_eq!(p.finish(), None);
        let mut all = small.to_vec();
        all.extend(rest);
        let mut expected = input.clone();
        expected.extend_from_slice(b"data: later\n\n");
        assert_eq!(all, expected);
        assert!(p.buffered_len() == 0);
    }

    #[test]
    fn overflow_is_split_independent() {
        let ok = [b"data: ".as_slice(), &[b'y'; 24], b"\n\n"].concat(); // 32 bytes
        let too_big = [b"data: ".as_slice(), &[b'y'; 25], b"\n\n"].concat(); // 33
        for cut in 0..=ok.len() {
            let mut p = SseParser::with_max_event_bytes(32);
            let mut n = p.push(&ok[..cut]).len();
            n += p.push(&ok[cut..]).len();
            assert_eq!(n, 1);
            assert!(!p.overflowed());
        }
        for cut in 0..=too_big.len() {
            let mut p = SseParser::with_max_event_bytes(32);
            let mut n = p.push(&too_big[..cut]).len();
            n += p.push(&too_big[cut..]).len();
            assert_eq!(n, 0);
            assert!(p.overflowed());
            assert_eq!(p.take_unparsed(), too_big);
        }
    }

    #[test]
    fn a_long_line_without_newline_overflows() {
        let mut p = SseParser::with_max_event_bytes(1000);
        for _ in 0..100 {
            p.push(b"0123456789abcdef");
            assert!(p.buffered_len() <= 1000);
        }
        assert!(p.overflowed());
        assert_eq!(p.take_unparsed().len(), 1600);
    }

    /// xorshift64*: a small deterministic PRNG for property-style tests.
    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % (n.max(1) as u64)) as usize
        }
    }

    pub(crate) fn random_cuts(rng: &mut Rng, len: usize) -> Vec<usize> {
        let n = rng.below(8);
        let mut cuts: Vec<usize> = (0..n).map(|_| rng.below(len + 1)).collect();
        cuts.sort_unstable();
        cuts
    }

    #[test]
    fn garbage_never_panics_and_bytes_are_conserved() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let alphabet: &[u8] = b"data:event:id: \r\n\n\r:x\xff\xfe\xc3\xa9\xf0\x9f\x98\x80{}[DONE]";
        for round in 0..2000 {
            let len = rng.below(200);
            let input: Vec<u8> = if round % 2 == 0 {
                (0..len)
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect()
            } else {
                (0..len).map(|_| rng.next() as u8).collect()
            };
            let max = 8 + rng.below(120);
            let mut p = SseParser::with_max_event_bytes(max);
            let mut out = Vec::new();
            let mut start = 0;
            let cuts = random_cuts(&mut rng, input.len());
            for &c in cuts.iter().chain(std::iter::once(&input.len())) {
                for e in p.push(&input[start..c]) {
                    assert!(e.raw.len() <= max + 1);
                    out.extend(e.raw);
                }
                out.extend(p.take_unparsed());
                assert!(p.buffered_len() <= max + 1);
                start = c;
            }
            if let Some(e) = p.finish() {
                out.extend(e.raw);
            }
            out.extend(p.take_unparsed());
            assert_eq!(out, input, "round {round}");
        }
    }

    #[test]
    fn random_splits_match_whole_on_valid_streams() {
        let mut rng = Rng(42);
        let inputs = [
            OPENAI_STREAM.to_string(),
            crlf(OPENAI_STREAM),
            ANTHROPIC_STREAM.to_string(),
            crlf(ANTHROPIC_STREAM),
        ];
        for input in &inputs {
            let whole = parse_cuts(input.as_bytes(), &[]);
            for _ in 0..300 {
                let cuts = random_cuts(&mut rng, input.len());
                assert_eq!(parse_cuts(input.as_bytes(), &cuts), whole);
            }
        }
    }

    #[test]
    fn serialize_round_trips() {
        let raw = serialize_event(Some("message_delta"), "{\"a\":1}");
        assert_eq!(raw, b"event: message_delta\ndata: {\"a\":1}\n\n");
        assert_eq!(serialize_event(None, "a\nb"), b"data: a\ndata: b\n\n");
        assert_eq!(serialize_event(None, ""), b"data:\n\n");
        assert_eq!(serialize_event(Some("x\ny"), "1"), b"event: x\ndata: 1\n\n");
        for (event, data) in [
            (Some("e"), "multi\nline\n\ndata"),
            (None, " leading space"),
            (None, ""),
            (Some("e"), "\u{1f600}"),
        ] {
            let built = SseEvent::new(event, data);
            let parsed = parse_cuts(&built.raw, &[]);
            assert_eq!(parsed, vec![built.clone()]);
            assert_eq!(parsed[0].data, data);
        }
        assert_eq!(SseEvent::new(None, "a\r\nb").data, "a\nb");
    }
}

//! Pure request logic: reading the text out of OpenAI / Anthropic requests, the reply
//! rule, token counting, chunking of the reply for streaming, and the deterministic
//! embeddings. Nothing here does I/O, so it is all unit-tested directly.

use serde_json::Value;

/// Which chat API a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/chat/completions`
    OpenAi,
    /// `POST /v1/messages`
    Anthropic,
}

/// What the mock needs from a chat request.
#[derive(Debug, PartialEq, Eq)]
pub struct ChatRequest {
    /// The requested model, echoed in the response.
    pub model: String,
    /// `"stream": true`.
    pub stream: bool,
    /// OpenAI `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// The system prompt received, if any (see [`parse_chat`]).
    pub system: Option<String>,
    /// Text of the last message with role `user`, if any.
    pub last_user: Option<String>,
    /// Whitespace-separated words over the text of all messages and the system prompt.
    pub input_tokens: u64,
    /// The request declares tools (a non-empty `tools` array).
    pub has_tools: bool,
    /// The text of the tool result when the last message is one (OpenAI: a `role:
    /// "tool"` message; Anthropic: a `user` message with `tool_result` blocks, the last
    /// of them).
    pub tool_result: Option<String>,
}

/// What the mock answers: text, or one tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Text(String),
    ToolCall(ToolCall),
}

/// One call of a tool, from a `TOOL:<name> <JSON object>` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    /// The JSON object as written in the message (trimmed): OpenAI's `arguments`
    /// string, and the text streamed in pieces.
    pub arguments: String,
    /// The same object, parsed: Anthropic's `input`.
    pub input: Value,
}

impl Reply {
    /// The text streamed for this reply (the arguments of a tool call) and counted as
    /// output tokens.
    pub fn streamed_text(&self) -> &str {
        match self {
            Reply::Text(t) => t,
            Reply::ToolCall(c) => &c.arguments,
        }
    }
}

/// Model reported when the request names none (the mock is lenient about it).
pub const DEFAULT_MODEL: &str = "mock-model";

/// The text of a message `content` (or of an Anthropic `system` field).
///
/// A string is taken as is. An array of content parts (OpenAI `{"type":"text","text":…}`
/// parts, Anthropic content blocks) gives the text of its `text` parts **joined with
/// `"\n"`**; every other part (images, tool calls, tool results…) is ignored. `null` or a
/// missing content (an OpenAI assistant message carrying only tool calls) is the empty
/// text. Any other type is an error.
pub fn content_text(content: Option<&Value>) -> Result<String, String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            let mut first = true;
            for part in parts {
                let Value::Object(part) = part else {
                    return Err("content parts must be objects".to_string());
                };
                if part.get("type").and_then(Value::as_str) != Some("text") {
                    continue;
                }
                let Some(text) = part.get("text").and_then(Value::as_str) else {
                    return Err("a text content part needs a string `text`".to_string());
                };
                if !first {
                    out.push('\n');
                }
                out.push_str(text);
                first = false;
            }
            Ok(out)
        }
        Some(_) => Err("`content` must be a string or an array of content parts".to_string()),
    }
}

/// The text of an Anthropic `tool_result` block's `content`: a string, or the `text`
/// blocks of an array joined with `"\n"` (other blocks ignored); anything else is empty.
fn tool_result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The text of the last `tool_result` block of an Anthropic message content, if it has
/// one.
fn last_tool_result(content: Option<&Value>) -> Option<String> {
    let Some(Value::Array(blocks)) = content else {
        return None;
    };
    blocks
        .iter()
        .rev()
        .find(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(|b| tool_result_text(b.get("content")))
}

/// Parses `TOOL:<name> <JSON object>` (spaces after `TOOL:` and between the two are
/// optional; the name ends at the first whitespace or `{`). `None` when the message is
/// not of that form.
pub fn parse_tool_command(text: &str) -> Option<ToolCall> {
    let rest = text.strip_prefix("TOOL:")?.trim_start();
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '{')
        .unwrap_or(rest.len());
    let (name, arguments) = rest.split_at(end);
    let arguments = arguments.trim();
    if name.is_empty() {
        return None;
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => Some(ToolCall {
            name: name.to_string(),
            arguments: arguments.to_string(),
            input,
        }),
        _ => None,
    }
}

/// Whitespace-separated words of `text`: the mock's token count.
pub fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Reads the parts of a chat request that the mock uses. `Err` carries the message of
/// the 400 answer (missing or ill-typed fields).
///
/// The system prompt: OpenAI, the text of the `role: "system"` messages joined with a
/// newline (`None` when there are none); Anthropic, the `system` field, a string or an
/// array of text blocks (`None` when absent or null).
pub fn parse_chat(api: Api, body: &Value) -> Result<ChatRequest, String> {
    let Value::Object(obj) = body else {
        return Err("the request body must be a JSON object".to_string());
    };
    let model = match obj.get("model") {
        None | Some(Value::Null) => DEFAULT_MODEL.to_string(),
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err("`model` must be a string".to_string()),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("`stream` must be a boolean".to_string()),
    };
    let include_usage = api == Api::OpenAi
        && stream
        && obj
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let Some(Value::Array(messages)) = obj.get("messages") else {
        return Err("`messages` must be an array".to_string());
    };

    let mut input_tokens = 0u64;
    let mut system: Option<String> = None;
    if api == Api::Anthropic {
        match obj.get("system") {
            None | Some(Value::Null) => {}
            Some(s @ (Value::String(_) | Value::Array(_))) => {
                let text = content_text(Some(s)).map_err(|e| format!("`system`: {e}"))?;
                input_tokens += count_words(&text);
                system = Some(text);
            }
            Some(_) => {
                return Err("`system` must be a string or an array of text blocks".to_string())
            }
        }
    }

    let has_tools = matches!(obj.get("tools"), Some(Value::Array(t)) if !t.is_empty());
    let mut last_user = None;
    let mut tool_result = None;
    for (i, message) in messages.iter().enumerate() {
        let Value::Object(message) = message else {
            return Err(format!("messages[{i}] must be an object"));
        };
        let role = match message.get("role") {
            Some(Value::String(r)) => r.as_str(),
            _ => return Err(format!("messages[{i}].role must be a string")),
        };
        let text =
            content_text(message.get("content")).map_err(|e| format!("messages[{i}]: {e}"))?;
        input_tokens += count_words(&text);
        tool_result = None;
        match role {
            "tool" if api == Api::OpenAi => tool_result = Some(text),
            "user" if api == Api::Anthropic => {
                // Tool results count as message text too.
                if let Some(Value::Array(blocks)) = message.get("content") {
                    for block in blocks {
                        if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                            input_tokens += count_words(&tool_result_text(block.get("content")));
                        }
                    }
                }
                tool_result = last_tool_result(message.get("content"));
                last_user = Some(text);
            }
            "user" => last_user = Some(text),
            "system" if api == Api::OpenAi => match &mut system {
                Some(s) => {
                    s.push('\n');
                    s.push_str(&text);
                }
                None => system = Some(text),
            },
            _ => {}
        }
    }

    Ok(ChatRequest {
        model,
        stream,
        include_usage,
        system,
        last_user,
        input_tokens,
        has_tools,
        tool_result,
    })
}

/// The reply, first rule that applies: a queued reply; a tool result as the last
/// message → `tool result: ` and its text; with tools declared, a last user message
/// `TOOL:<name> <JSON object>` → one call of that tool; otherwise the text rules of
/// [`choose_reply`].
pub fn decide_reply(queued: Option<String>, req: &ChatRequest) -> Reply {
    if let Some(reply) = queued {
        return Reply::Text(reply);
    }
    if let Some(result) = &req.tool_result {
        return Reply::Text(format!("tool result: {result}"));
    }
    if req.has_tools {
        if let Some(call) = req.last_user.as_deref().and_then(parse_tool_command) {
            return Reply::ToolCall(call);
        }
    }
    Reply::Text(choose_reply(None, req))
}

/// The reply text, first rule that applies: a queued reply; `SYSTEM?` → the system
/// prompt (or `no system prompt`); `REPLY:…` → the rest after one optional space;
/// otherwise `echo: ` and the last user message (empty if there is none).
pub fn choose_reply(queued: Option<String>, req: &ChatRequest) -> String {
    if let Some(reply) = queued {
        return reply;
    }
    let last = req.last_user.as_deref().unwrap_or("");
    if last == "SYSTEM?" {
        return req
            .system
            .clone()
            .unwrap_or_else(|| "no system prompt".to_string());
    }
    if let Some(rest) = last.strip_prefix("REPLY:") {
        return rest.strip_prefix(' ').unwrap_or(rest).to_string();
    }
    format!("echo: {last}")
}

/// Splits the reply into stream pieces: each word with the whitespace that follows it
/// (whitespace before the first word goes with the first piece). Concatenating the
/// pieces gives the reply back; an empty reply has no pieces.
pub fn split_words(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut seen_word = false;
    let mut after_word_space = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            after_word_space |= seen_word;
        } else {
            if after_word_space {
                pieces.push(&text[start..i]);
                start = i;
                after_word_space = false;
            }
            seen_word = true;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// Splits the reply into pieces of `n` characters (not bytes; the last may be shorter).
/// `n` must be at least 1.
pub fn split_chars(text: &str, n: usize) -> Vec<&str> {
    let n = n.max(1);
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (i, _) in text.char_indices() {
        if count == n {
            pieces.push(&text[start..i]);
            start = i;
            count = 0;
        }
        count += 1;
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// FNV-1a, 32 bits.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Dimensions of the mock embeddings.
pub const EMBEDDING_DIMS: usize = 64;

/// The deterministic embedding of `text` and its word count: lowercase the text, split
/// it into words on every non-alphanumeric character (Unicode `char::is_alphanumeric`),
/// add 1 at index `fnv1a32(word) % 64` for each word (hashing the word's UTF-8 bytes),
/// then L2-normalise. No words: all zeros.
pub fn embed(text: &str) -> ([f64; EMBEDDING_DIMS], u64) {
    let mut v = [0f64; EMBEDDING_DIMS];
    let lower = text.to_lowercase();
    let mut words = 0u64;
    for word in lower.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        words += 1;
        let idx = fnv1a32(word.as_bytes()) as usize % EMBEDDING_DIMS;
        if let Some(slot) = v.get_mut(idx) {
            *slot += 1.0;
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    (v, words)
}

/// Standard base64 (with padding), for `encoding_format: "base64"` embeddings.
pub fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |i: u32| char::from(ALPHABET[(i & 63) as usize]);
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b0 = u32::from(chunk.first().copied().unwrap_or(0));
        let b1 = u32::from(chunk.get(1).copied().unwrap_or(0));
        let b2 = u32::from(chunk.get(2).copied().unwrap_or(0));
        let n = (b0 << 16) | (b1 << 8) | b2;
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(api: Api, body: Value) -> ChatRequest {
        parse_chat(api, &body).unwrap()
    }

    #[test]
    fn reply_rules_openai() {
        let req = chat(
            Api::OpenAi,
            json!({"model":"m","messages":[
                {"role":"system","content":"be nice"},
                {"role":"system","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"user","content":"first"},
                {"role":"assistant","content":null},
                {"role":"user","content":"SYSTEM?"}]}),
        );
        assert_eq!(req.system.as_deref(), Some("be nice\na\nb"));
        assert_eq!(choose_reply(None, &req), "be nice\na\nb");
        assert_eq!(choose_reply(Some("queued".into()), &req), "queued");
        // be nice a b first SYSTEM?
        assert_eq!(req.input_tokens, 6);

        let req = chat(
            Api::OpenAi,
            json!({"messages":[{"role":"user","content":"SYSTEM?"}]}),
        );
        assert_eq!(choose_reply(None, &req), "no system prompt");
        assert_eq!(req.model, DEFAULT_MODEL);

        let req = chat(
            Api::OpenAi,
            json!({"messages":[{"role":"user","content":"REPLY: hi  there"}]}),
        );
        assert_eq!(choose_reply(None, &req), "hi  there");
        let req = chat(
            Api::OpenAi,
            json!({"messages":[{"role":"user","content":"REPLY:x"}]}),
        );
        assert_eq!(choose_reply(None, &req), "x");
        let req = chat(
            Api::OpenAi,
            json!({"messages":[{"role":"user","content":[{"type":"text","text":"hello"},{"type":"image_url","image_url":{}},{"type":"text","text":"world"}]}]}),
        );
        assert_eq!(choose_reply(None, &req), "echo: hello\nworld");
        let req = chat(Api::OpenAi, json!({"messages":[]}));
        assert_eq!(choose_reply(None, &req), "echo: ");
    }

    #[test]
    fn reply_rules_anthropic() {
        let req = chat(
            Api::Anthropic,
            json!({"model":"claude","system":[{"type":"text","text":"sys one"}],
                   "messages":[{"role":"user","content":[{"type":"text","text":"SYSTEM?"}]}]}),
        );
        assert_eq!(choose_reply(None, &req), "sys one");
        assert_eq!(req.input_tokens, 3);
        let req = chat(
            Api::Anthropic,
            json!({"system":"s","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}),
        );
        assert_eq!(choose_reply(None, &req), "echo: hi");
        // A role "system" message is not Anthropic's system prompt.
        let req = chat(
            Api::Anthropic,
            json!({"messages":[{"role":"system","content":"x"},{"role":"user","content":"SYSTEM?"}]}),
        );
        assert_eq!(choose_reply(None, &req), "no system prompt");
    }

    #[test]
    fn tool_command_parsing() {
        let call = parse_tool_command(r#"TOOL:get_weather {"city":"Paris"}"#).unwrap();
        assert_eq!(call.name, "get_weather");
        assert_eq!(call.arguments, r#"{"city":"Paris"}"#);
        assert_eq!(call.input, json!({"city":"Paris"}));
        let call = parse_tool_command("TOOL: f{\"a\": [1, 2]}  \n").unwrap();
        assert_eq!(call.name, "f");
        assert_eq!(call.arguments, r#"{"a": [1, 2]}"#);
        assert_eq!(parse_tool_command("TOOL:noop {}").unwrap().input, json!({}));
        for bad in [
            "TOOL:",
            "TOOL:f",
            "TOOL:f [1]",
            "TOOL:f {oops",
            "TOOL: {\"a\":1}",
            "tool:f {}",
            " TOOL:f {}",
            "TOOL:f {} trailing",
        ] {
            assert_eq!(parse_tool_command(bad), None, "{bad}");
        }
    }

    #[test]
    fn tool_replies_openai() {
        let tools = json!([{"type":"function","function":{"name":"get_weather","parameters":{}}}]);
        let ask = json!({"role":"user","content":"TOOL:get_weather {\"city\":\"Paris\"}"});
        let req = chat(Api::OpenAi, json!({"tools": tools, "messages":[ask]}));
        assert!(req.has_tools);
        let Reply::ToolCall(call) = decide_reply(None, &req) else {
            panic!("expected a tool call");
        };
        assert_eq!(call.name, "get_weather");
        assert_eq!(call.input, json!({"city":"Paris"}));
        // Queued replies still come first.
        assert_eq!(
            decide_reply(Some("q".into()), &req),
            Reply::Text("q".into())
        );
        // Without tools: the text rules.
        let req = chat(Api::OpenAi, json!({"messages":[ask]}));
        assert!(!req.has_tools);
        assert_eq!(
            decide_reply(None, &req),
            Reply::Text("echo: TOOL:get_weather {\"city\":\"Paris\"}".into())
        );
        let req = chat(Api::OpenAi, json!({"tools": [], "messages":[ask]}));
        assert!(!req.has_tools);
        // The tool result as the last message.
        let req = chat(
            Api::OpenAi,
            json!({"tools": tools, "messages":[ask,
                {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
                  "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
                {"role":"tool","tool_call_id":"call_1","content":"18 degrees, sunny"}]}),
        );
        assert_eq!(req.tool_result.as_deref(), Some("18 degrees, sunny"));
        assert_eq!(
            decide_reply(None, &req),
            Reply::Text("tool result: 18 degrees, sunny".into())
        );
        // TOOL:get_weather {"city":"Paris"} 18 degrees, sunny
        assert_eq!(req.input_tokens, 5);
        // A tool message that is not the last one does not count.
        let req = chat(
            Api::OpenAi,
            json!({"messages":[{"role":"tool","tool_call_id":"c","content":"r"},
                               {"role":"user","content":"next"}]}),
        );
        assert_eq!(req.tool_result, None);
        assert_eq!(decide_reply(None, &req), Reply::Text("echo: next".into()));
    }

    #[test]
    fn tool_replies_anthropic() {
        let tools = json!([{"name":"get_weather","input_schema":{"type":"object"}}]);
        let ask = json!({"role":"user","content":[{"type":"text","text":"TOOL:get_weather {\"city\":\"Paris\"}"}]});
        let req = chat(Api::Anthropic, json!({"tools": tools, "messages":[ask]}));
        assert!(matches!(decide_reply(None, &req), Reply::ToolCall(c) if c.name == "get_weather"));
        // tool_result content as a string, or text blocks; the last result wins.
        for (content, text) in [
            (json!("sunny"), "sunny"),
            (
                json!([{"type":"text","text":"a"},{"type":"image","source":{}},{"type":"text","text":"b"}]),
                "a\nb",
            ),
            (json!(null), ""),
        ] {
            let req = chat(
                Api::Anthropic,
                json!({"tools": tools, "messages":[ask,
                    {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},
                    {"role":"user","content":[
                        {"type":"tool_result","tool_use_id":"toolu_0","content":"older"},
                        {"type":"tool_result","tool_use_id":"toolu_1","content":content}]}]}),
            );
            assert_eq!(req.tool_result.as_deref(), Some(text));
            assert_eq!(
                decide_reply(None, &req),
                Reply::Text(format!("tool result: {text}"))
            );
        }
        // Tool result text counts as input.
        let req = chat(
            Api::Anthropic,
            json!({"messages":[{"role":"user","content":[
                {"type":"tool_result","tool_use_id":"t","content":"two words"},
                {"type":"text","text":"and more"}]}]}),
        );
        assert_eq!(req.input_tokens, 4);
        assert_eq!(req.tool_result.as_deref(), Some("two words"));
        // An assistant message last: no tool result.
        let req = chat(
            Api::Anthropic,
            json!({"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"x"}]},
                               {"role":"assistant","content":"y"}]}),
        );
        assert_eq!(req.tool_result, None);
    }

    #[test]
    fn bad_requests_are_errors() {
        for body in [
            json!([]),
            json!({}),
            json!({"messages":{}}),
            json!({"messages":[1]}),
            json!({"messages":[{"content":"x"}]}),
            json!({"messages":[{"role":"user","content":5}]}),
            json!({"messages":[{"role":"user","content":[1]}]}),
            json!({"messages":[{"role":"user","content":[{"type":"text"}]}]}),
            json!({"model":5,"messages":[]}),
            json!({"stream":"yes","messages":[]}),
        ] {
            assert!(parse_chat(Api::OpenAi, &body).is_err(), "{body}");
        }
        assert!(parse_chat(Api::Anthropic, &json!({"system":5,"messages":[]})).is_err());
    }

    #[test]
    fn stream_flags() {
        let req = chat(
            Api::OpenAi,
            json!({"stream":true,"stream_options":{"include_usage":true},"messages":[]}),
        );
        assert!(req.stream && req.include_usage);
        let req = chat(
            Api::Anthropic,
            json!({"stream":true,"stream_options":{"include_usage":true},"messages":[]}),
        );
        assert!(req.stream && !req.include_usage);
    }

    #[test]
    fn word_and_char_chunks() {
        assert_eq!(
            split_words("echo: hello  world"),
            ["echo: ", "hello  ", "world"]
        );
        assert_eq!(split_words(" a b\n"), [" a ", "b\n"]);
        assert!(split_words("").is_empty());
        assert_eq!(split_words("   "), ["   "]);
        assert_eq!(split_chars("héllo wörld", 3), ["hél", "lo ", "wör", "ld"]);
        assert_eq!(split_chars("ab", 5), ["ab"]);
        assert_eq!(count_words(" a  b\tc\n"), 3);
        assert_eq!(count_words(""), 0);
    }

    #[test]
    fn fnv_and_embeddings() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);

        let (v, n) = embed("Hello, hello WORLD!");
        assert_eq!(n, 3);
        let hello = fnv1a32(b"hello") as usize % 64;
        let world = fnv1a32(b"world") as usize % 64;
        assert_ne!(hello, world);
        let norm = 5f64.sqrt();
        assert!((v[hello] - 2.0 / norm).abs() < 1e-12);
        assert!((v[world] - 1.0 / norm).abs() < 1e-12);
        let len: f64 = v.iter().map(|x| x * x).sum();
        assert!((len - 1.0).abs() < 1e-12);

        let (v, n) = embed(" ,.! ");
        assert_eq!(n, 0);
        assert!(v.iter().all(|x| *x == 0.0));
    }

    #[test]
    fn base64() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }
}

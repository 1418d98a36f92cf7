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

    let mut last_user = None;
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
        match role {
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
    })
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

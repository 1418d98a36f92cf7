//! The two LLM APIs llmgate understands, request parsing and error shapes.

/// Which client API a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `POST /v1/chat/completions`
    OpenAi,
    /// `POST /v1/messages`
    Anthropic,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }

    /// The route's path.
    pub fn path(self) -> &'static str {
        match self {
            Api::OpenAi => OPENAI_PATH,
            Api::Anthropic => ANTHROPIC_PATH,
        }
    }
}

use serde_json::{json, Map, Value};

pub const OPENAI_PATH: &str = "/v1/chat/completions";
pub const ANTHROPIC_PATH: &str = "/v1/messages";

/// Which API a request targets, from its method and `:path` (query ignored).
pub fn route(method: &str, path: &str) -> Option<Api> {
    match classify(method, path) {
        RouteKind::Llm(api) => Some(api),
        _ => None,
    }
}

/// What a request is to llmgate, from its method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// `POST` on one of the two LLM routes.
    Llm(Api),
    /// Another method on an LLM route (405).
    WrongMethod(Api),
    /// Any other path (the `other_paths` policy).
    Other,
}

/// Longest path llmgate normalises; longer ones are "other" paths.
const MAX_PATH_LEN: usize = 8192;

/// Classifies a request. The path is normalised the way a lenient server
/// might read it (percent-decoding, merged slashes, dot segments, ASCII case,
/// a trailing slash; query and fragment ignored), so that no spelling of an
/// LLM route is treated as another path even where Envoy's own normalisation
/// is not configured.
pub fn classify(method: &str, path: &str) -> RouteKind {
    let api = match normalise_path(path).as_deref() {
        Some(OPENAI_PATH) => Api::OpenAi,
        Some(ANTHROPIC_PATH) => Api::Anthropic,
        _ => return RouteKind::Other,
    };
    if method.eq_ignore_ascii_case("POST") {
        RouteKind::Llm(api)
    } else {
        RouteKind::WrongMethod(api)
    }
}

/// The canonical form of a request path (see [`classify`]): lowercase,
/// decoded, single slashes, no dot segments, no trailing slash, no query.
/// `None` when the path is too long or decodes to invalid UTF-8.
pub fn normalise_path(path: &str) -> Option<String> {
    if path.len() > MAX_PATH_LEN {
        return None;
    }
    let raw = path.split(['?', '#']).next().unwrap_or(path);
    // Percent-decoding, repeated while it changes anything (double encoding).
    let mut bytes = raw.as_bytes().to_vec();
    for _ in 0..3 {
        let decoded = percent_decode(&bytes);
        if decoded == bytes {
            break;
        }
        bytes = decoded;
    }
    let text = String::from_utf8(bytes).ok()?;
    let mut segments: Vec<&str> = Vec::new();
    for seg in text.split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(text.len().saturating_add(1));
    for seg in segments {
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out.to_ascii_lowercase())
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0usize;
    while let Some(&b) = input.get(i) {
        if b == b'%' {
            let hi = input.get(i.saturating_add(1)).copied().and_then(hex);
            let lo = input.get(i.saturating_add(2)).copied().and_then(hex);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi.saturating_mul(16).saturating_add(lo));
                i = i.saturating_add(3);
                continue;
            }
        }
        out.push(b);
        i = i.saturating_add(1);
    }
    out
}

/// An error llmgate answers itself, rendered in the caller's API shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u32,
    /// A stable machine-readable code (OpenAI `code`; in the audit log).
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: u32, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds.max(1));
        self
    }

    /// The error `type` of each API for this status.
    pub fn error_type(&self, api: Api) -> &'static str {
        match (api, self.status) {
            (_, 400) => "invalid_request_error",
            (_, 401) => "authentication_error",
            (_, 403) => "permission_error",
            (Api::OpenAi, 404) => "invalid_request_error",
            (Api::Anthropic, 404) => "not_found_error",
            (_, 405) => "invalid_request_error",
            (Api::OpenAi, 413) => "invalid_request_error",
            (Api::Anthropic, 413) => "request_too_large",
            (_, 429) => "rate_limit_error",
            (Api::OpenAi, 503) => "service_unavailable",
            (Api::Anthropic, 503) => "overloaded_error",
            (Api::OpenAi, _) => "api_error",
            (Api::Anthropic, _) => "api_error",
        }
    }

    /// The JSON body in the API's error shape.
    pub fn body(&self, api: Api) -> Vec<u8> {
        let v = match api {
            Api::OpenAi => json!({
                "error": {
                    "message": self.message,
                    "type": self.error_type(api),
                    "code": self.code,
                }
            }),
            Api::Anthropic => json!({
                "type": "error",
                "error": {
                    "type": self.error_type(api),
                    "message": self.message,
                }
            }),
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// A parsed, shape-checked LLM request.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    pub api: Api,
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
}

/// Parses a request body: JSON object with a non-empty string `model` and an
/// array `messages`. Errors come back as 400 in the caller's shape.
pub fn parse_request(api: Api, bytes: &[u8]) -> Result<ParsedRequest, ApiError> {
    let value = parse_strict(bytes)?;
    let Value::Object(body) = value else {
        return Err(ApiError::new(
            400,
            "invalid_request",
            "request body must be a JSON object",
        ));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => {
            return Err(ApiError::new(
                400,
                "invalid_model",
                "`model` must be a non-empty string",
            ))
        }
        None => return Err(ApiError::new(400, "missing_model", "`model` is required")),
    };
    match body.get("messages") {
        Some(Value::Array(_)) => {}
        Some(_) => {
            return Err(ApiError::new(
                400,
                "invalid_messages",
                "`messages` must be an array",
            ))
        }
        None => {
            return Err(ApiError::new(
                400,
                "missing_messages",
                "`messages` is required",
            ))
        }
    }
    let stream = matches!(body.get("stream"), Some(Value::Bool(true)));
    Ok(ParsedRequest {
        api,
        body,
        model,
        stream,
    })
}

/// Marker of the duplicate-key error inside serde's error message.
const DUPLICATE_KEY: &str = "llmgate-duplicate-key";

/// Parses JSON like `serde_json::from_slice::<Value>`, but refuses a
/// document in which any object has the same key twice (400
/// `duplicate_key`): serde keeps the last copy while an upstream may read
/// the first, so the guard would inspect bytes other than those forwarded.
/// Keys are compared after unescaping (`"a"` and `"\u0061"` are the same).
pub fn parse_strict(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde::Deserialize::deserialize(&mut de).and_then(|v: Strict| {
        de.end()?;
        Ok(v.0)
    });
    parsed.map_err(|e| {
        if e.to_string().starts_with(DUPLICATE_KEY) {
            ApiError::new(
                400,
                "duplicate_key",
                format!(
                    "request body has a duplicate key in an object (line {} column {}); send each key once",
                    e.line(),
                    e.column()
                ),
            )
        } else {
            ApiError::new(
                400,
                "invalid_json",
                format!("request body is not valid JSON: {}", json_error_summary(&e)),
            )
        }
    })
}

/// A JSON value whose objects have no duplicate keys.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                return Err(serde::de::Error::custom(DUPLICATE_KEY));
            }
            let Strict(v) = map.next_value()?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// serde_json's message without echoing any of the input.
fn json_error_summary(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "read error",
        Category::Syntax => "syntax error",
        Category::Data => "unexpected data",
        Category::Eof => "unexpected end of input",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("POST", "/v1/chat/completions"), Some(Api::OpenAi));
        assert_eq!(
            route("post", "/v1/messages?beta=true"),
            Some(Api::Anthropic)
        );
        assert_eq!(route("GET", "/v1/messages"), None);
        assert_eq!(route("POST", "/v1/embeddings"), None);
        assert_eq!(route("POST", ""), None);
    }

    #[test]
    fn every_spelling_of_an_llm_route_is_classified() {
        for p in [
            "/v1/chat/completions",
            "//v1/chat/completions",
            "/V1/Chat/Completions",
            "/v1/chat%2Fcompletions",
            "/v1/chat%252Fcompletions",
            "/v1/./chat/completions",
            "/x/../v1/chat/completions",
            "/v1/chat/completions/",
            "/v1/chat/completions?x=1",
            "/v1\\chat/completions",
            "/%76%31/chat/completions",
        ] {
            assert_eq!(classify("POST", p), RouteKind::Llm(Api::OpenAi), "{p}");
        }
        assert_eq!(
            classify("GET", "//v1/messages"),
            RouteKind::WrongMethod(Api::Anthropic)
        );
        assert_eq!(classify("POST", "/v1/embeddings"), RouteKind::Other);
        assert_eq!(classify("POST", "/v1/chat/completion"), RouteKind::Other);
        assert_eq!(classify("POST", "/%ff%fe"), RouteKind::Other);
        assert_eq!(classify("POST", "%"), RouteKind::Other);
        assert_eq!(classify("POST", &"/".repeat(10_000)), RouteKind::Other);
        assert_eq!(normalise_path("/a//b/../c").as_deref(), Some("/a/c"));
        assert_eq!(normalise_path("/..").as_deref(), Some("/"));
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        for body in [
            &br#"{"model":"m","messages":[],"messages":[]}"#[..],
            br#"{"model":"m","messages":[{"role":"user","role":"system","content":"x"}]}"#,
            br#"{"model":"m","mod\u0065l":"n","messages":[]}"#,
        ] {
            let e = parse_request(Api::OpenAi, body).unwrap_err();
            assert_eq!(e.code, "duplicate_key", "{}", String::from_utf8_lossy(body));
            assert_eq!(e.status, 400);
        }
        let ok = parse_request(
            Api::OpenAi,
            br#"{"model":"m","messages":[{"a":1},{"a":2}],"x":{"a":{"a":1.5e3}}}"#,
        )
        .unwrap();
        assert_eq!(ok.body["x"]["a"]["a"], 1500.0);
        assert_eq!(
            parse_request(Api::OpenAi, br#"{"model":"m","messages":[]} x"#)
                .unwrap_err()
                .code,
            "invalid_json"
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            parse_strict(deep.as_bytes()).unwrap_err().code,
            "invalid_json"
        );
    }

    #[test]
    fn error_shapes() {
        let e = ApiError::new(413, "request_too_large", "too big");
        let o: Value = serde_json::from_slice(&e.body(Api::OpenAi)).unwrap();
        assert_eq!(o["error"]["code"], "request_too_large");
        assert_eq!(o["error"]["type"], "invalid_request_error");
        assert_eq!(o["error"]["message"], "too big");
        let a: Value = serde_json::from_slice(&e.body(Api::Anthropic)).unwrap();
        assert_eq!(a["type"], "error");
        assert_eq!(a["error"]["type"], "request_too_large");
    }

    #[test]
    fn parse_checks_shape() {
        let ok =
            parse_request(Api::OpenAi, br#"{"model":"m","messages":[],"stream":true}"#).unwrap();
        assert!(ok.stream);
        assert_eq!(ok.model, "m");
        for (body, code) in [
            (&b"nope"[..], "invalid_json"),
            (b"[1]", "invalid_request"),
            (br#"{"messages":[]}"#, "missing_model"),
            (br#"{"model":3,"messages":[]}"#, "invalid_model"),
            (br#"{"model":"m"}"#, "missing_messages"),
            (br#"{"model":"m","messages":{}}"#, "invalid_messages"),
            (b"\xff\xfe", "invalid_json"),
        ] {
            assert_eq!(parse_request(Api::Anthropic, body).unwrap_err().code, code);
        }
    }

    #[test]
    fn error_message_does_not_echo_input() {
        let e = parse_request(Api::OpenAi, b"{\"model\": secret-prompt-text}").unwrap_err();
        assert!(!e.message.contains("secret"));
    }
}

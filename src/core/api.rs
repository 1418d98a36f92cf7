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
}

use serde_json::{json, Map, Value};

pub const OPENAI_PATH: &str = "/v1/chat/completions";
pub const ANTHROPIC_PATH: &str = "/v1/messages";

/// Which API a request targets, from its method and `:path` (query ignored).
pub fn route(method: &str, path: &str) -> Option<Api> {
    if !method.eq_ignore_ascii_case("POST") {
        return None;
    }
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    match path {
        OPENAI_PATH => Some(Api::OpenAi),
        ANTHROPIC_PATH => Some(Api::Anthropic),
        _ => None,
    }
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
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            400,
            "invalid_json",
            format!("request body is not valid JSON: {}", json_error_summary(&e)),
        )
    })?;
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

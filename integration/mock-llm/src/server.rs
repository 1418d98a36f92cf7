//! The HTTP server: routing, the mock's shared state (counters, faults, queued replies,
//! last request) and the per-request fault headers.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::body::MockBody;
use crate::logic::{self, Api, Reply};
use crate::wire::{self, Events, Meta, Usage};

/// Largest request body read (larger: 413).
const MAX_BODY: usize = 64 << 20;
/// Pause after each piece written with `x-mock-write-bytes`.
const WRITE_PAUSE: Duration = Duration::from_millis(1);
/// Model reported by embeddings when the request names none.
const DEFAULT_EMBEDDING_MODEL: &str = "mock-embedding";

const JSON: &str = "application/json";
const SSE: &str = "text/event-stream; charset=utf-8";

static X_MOCK_NAME: HeaderName = HeaderName::from_static("x-mock-name");

/// The LLM routes (the ones counted, recorded and subject to faults).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Chat(Api),
    Embeddings,
}

impl Route {
    fn from_path(path: &str) -> Option<Route> {
        match path {
            "/v1/chat/completions" => Some(Route::Chat(Api::OpenAi)),
            "/v1/messages" => Some(Route::Chat(Api::Anthropic)),
            "/v1/embeddings" => Some(Route::Embeddings),
            _ => None,
        }
    }

    /// The API whose error shape this route answers in.
    fn api(self) -> Api {
        match self {
            Route::Chat(api) => api,
            Route::Embeddings => Api::OpenAi,
        }
    }
}

/// Faults set with `POST /mock/faults`. `remaining` counts the LLM requests still to be
/// affected (`None`: until cleared); both the status and the delay use it up.
#[derive(Clone, Copy, Default, Debug)]
struct Faults {
    status: Option<u16>,
    delay_ms: Option<u64>,
    remaining: Option<u64>,
}

impl Faults {
    fn is_active(&self) -> bool {
        (self.status.is_some() || self.delay_ms.is_some()) && self.remaining != Some(0)
    }

    /// The faults that apply to this request, using one of the count.
    fn take_one(&mut self) -> Faults {
        if !self.is_active() {
            *self = Faults::default();
            return Faults::default();
        }
        let current = *self;
        if let Some(n) = self.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                *self = Faults::default();
            }
        }
        current
    }
}

struct LastRequest {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct State {
    requests: u64,
    faults: Faults,
    replies: VecDeque<String>,
    last: Option<LastRequest>,
}

/// The per-request `x-mock-*` headers.
#[derive(Default)]
struct Opts {
    status: Option<u16>,
    delay_ms: Option<u64>,
    reset_after: Option<usize>,
    chunk_chars: Option<usize>,
    write_bytes: Option<usize>,
}

fn header_num<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

impl Opts {
    fn from_headers(headers: &HeaderMap) -> Opts {
        Opts {
            // Only error statuses are injected; anything else is ignored.
            status: header_num::<u16>(headers, "x-mock-status").filter(|s| (400..=599).contains(s)),
            delay_ms: header_num(headers, "x-mock-delay-ms"),
            reset_after: header_num(headers, "x-mock-reset-after-chunks"),
            chunk_chars: header_num(headers, "x-mock-chunk-chars").filter(|&n| n > 0),
            write_bytes: header_num(headers, "x-mock-write-bytes").filter(|&n| n > 0),
        }
    }
}

/// The mock server's shared state.
pub struct Server {
    name: HeaderValue,
    state: Mutex<State>,
    next_id: AtomicU64,
    id_prefix: u64,
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Server {
    /// A server that answers with `x-mock-name: name`.
    pub fn new(name: &str) -> io::Result<Server> {
        let name = HeaderValue::from_str(name).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "--name must be a valid header value",
            )
        })?;
        Ok(Server {
            name,
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            // Distinct ids across restarts of the mock.
            id_prefix: now().as_millis() as u64 & 0xffff_ffff_ffff,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn new_id(&self, api: Api) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        match api {
            Api::OpenAi => format!("chatcmpl-mock{:012x}{:012x}", self.id_prefix, n),
            Api::Anthropic => format!("msg_mock{:012x}{:012x}", self.id_prefix, n),
        }
    }

    /// A tool call id in the API's style (`call_…` / `toolu_…`).
    fn new_tool_id(&self, api: Api) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        match api {
            Api::OpenAi => format!("call_mock{:012x}{:012x}", self.id_prefix, n),
            Api::Anthropic => format!("toolu_mock{:012x}{:012x}", self.id_prefix, n),
        }
    }

    fn response(
        &self,
        status: StatusCode,
        content_type: &'static str,
        body: MockBody,
    ) -> Response<MockBody> {
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if content_type == SSE {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        headers.insert(X_MOCK_NAME.clone(), self.name.clone());
        resp
    }

    fn json(&self, status: StatusCode, body: impl Into<Bytes>) -> Response<MockBody> {
        self.response(status, JSON, MockBody::full(body))
    }

    /// A `{"error": message}` answer of the mock's own endpoints.
    fn mock_error(&self, status: StatusCode, message: &str) -> Response<MockBody> {
        self.json(
            status,
            wire::to_json(&serde_json::json!({ "error": message })),
        )
    }

    /// An LLM-route answer: `events` (one event for a non-streaming body) cut into
    /// frames as the `x-mock-*` headers ask.
    fn llm_response(
        &self,
        status: StatusCode,
        content_type: &'static str,
        events: Events,
        opts: &Opts,
        allow_reset: bool,
    ) -> Response<MockBody> {
        let Events { buf, ends } = events;
        let all = Bytes::from(buf);
        let reset_after = opts.reset_after.filter(|_| allow_reset);
        // The bytes sent: everything, or the first N events before a reset.
        let (sent_events, reset) = match reset_after {
            Some(n) => (n.min(ends.len()), true),
            None => (ends.len(), false),
        };
        let sent_len = match sent_events.checked_sub(1) {
            Some(i) => ends.get(i).copied().unwrap_or(all.len()),
            None => 0,
        };
        let mut frames = VecDeque::new();
        let pause = match opts.write_bytes {
            Some(n) => {
                let mut start = 0;
                while start < sent_len {
                    let end = (start + n).min(sent_len);
                    frames.push_back(all.slice(start..end));
                    start = end;
                }
                Some(WRITE_PAUSE)
            }
            None => {
                let mut start = 0;
                for &end in ends.iter().take(sent_events) {
                    frames.push_back(all.slice(start..end));
                    start = end;
                }
                None
            }
        };
        // Streams go out chunked, like the real APIs; whole bodies with a length.
        let known_length = content_type != SSE;
        self.response(
            status,
            content_type,
            MockBody::frames(frames, pause, reset, known_length),
        )
    }

    fn api_error(&self, api: Api, status: u16, message: &str, opts: &Opts) -> Response<MockBody> {
        let body = wire::error_body(api, status, message);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.llm_response(status, JSON, single(body), opts, false)
    }

    /// Handles one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<MockBody> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        if let Some(route) = Route::from_path(path) {
            if parts.method != Method::POST {
                return self.api_error(
                    route.api(),
                    405,
                    "mock-llm: only POST is supported here",
                    &Opts::default(),
                );
            }
            let body = read_body(body).await;
            return self.llm(route, path, &parts.headers, body).await;
        }
        let method = &parts.method;
        match path {
            "/health" if method == Method::GET => {
                self.json(StatusCode::OK, &br#"{"status":"ok"}"#[..])
            }
            "/mock/stats" if method == Method::GET => {
                let requests = self.state().requests;
                self.json(StatusCode::OK, format!("{{\"requests\":{requests}}}"))
            }
            "/mock/last" if method == Method::GET => self.last(),
            "/mock/reset" if method == Method::POST => {
                *self.state() = State::default();
                self.json(StatusCode::OK, &br#"{"ok":true}"#[..])
            }
            "/mock/faults" if method == Method::POST => match read_json(body).await {
                Ok(v) => self.set_faults(&v),
                Err(e) => self.mock_error(StatusCode::BAD_REQUEST, &e),
            },
            "/mock/faults" if method == Method::DELETE => {
                self.state().faults = Faults::default();
                self.json(StatusCode::OK, &br#"{"ok":true}"#[..])
            }
            "/mock/replies" if method == Method::POST => match read_json(body).await {
                Ok(v) => self.queue_replies(&v),
                Err(e) => self.mock_error(StatusCode::BAD_REQUEST, &e),
            },
            "/mock/replies" if method == Method::DELETE => {
                self.state().replies.clear();
                self.json(StatusCode::OK, &br#"{"ok":true}"#[..])
            }
            "/health" | "/mock/stats" | "/mock/last" | "/mock/reset" | "/mock/faults"
            | "/mock/replies" => {
                self.mock_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => self.mock_error(StatusCode::NOT_FOUND, "not found"),
        }
    }

    async fn llm(
        &self,
        route: Route,
        path: &str,
        headers: &HeaderMap,
        body: Result<Bytes, (u16, String)>,
    ) -> Response<MockBody> {
        let api = route.api();
        let opts = Opts::from_headers(headers);
        let fault = {
            let mut state = self.state();
            state.requests += 1;
            state.last = Some(LastRequest {
                path: path.to_string(),
                headers: headers.clone(),
                body: body.as_ref().cloned().unwrap_or_default(),
            });
            state.faults.take_one()
        };
        if let Some(ms) = opts.delay_ms.or(fault.delay_ms).filter(|&ms| ms > 0) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(status) = opts.status.or(fault.status) {
            let message = format!("mock-llm: injected fault (status {status})");
            return self.api_error(api, status, &message, &opts);
        }
        let body = match body {
            Ok(body) => body,
            Err((status, message)) => return self.api_error(api, status, &message, &opts),
        };
        let json: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                let message = format!("mock-llm: the request body is not valid JSON: {e}");
                return self.api_error(api, 400, &message, &opts);
            }
        };
        match route {
            Route::Chat(api) => self.chat(api, &json, &opts),
            Route::Embeddings => self.embeddings(&json, &opts),
        }
    }

    fn chat(&self, api: Api, json: &Value, opts: &Opts) -> Response<MockBody> {
        let req = match logic::parse_chat(api, json) {
            Ok(req) => req,
            Err(message) => return self.api_error(api, 400, &format!("mock-llm: {message}"), opts),
        };
        let queued = self.state().replies.pop_front();
        let reply = logic::decide_reply(queued, &req);
        let text = reply.streamed_text();
        let usage = Usage {
            input: req.input_tokens,
            output: logic::count_words(text),
        };
        let id = self.new_id(api);
        let call_id = match &reply {
            Reply::ToolCall(_) => self.new_tool_id(api),
            Reply::Text(_) => String::new(),
        };
        let meta = Meta {
            id: &id,
            created: now().as_secs(),
            model: &req.model,
        };
        if req.stream {
            let pieces = match opts.chunk_chars {
                Some(n) => logic::split_chars(text, n),
                None => logic::split_words(text),
            };
            let events = match (&reply, api) {
                (Reply::Text(_), Api::OpenAi) => {
                    wire::openai_stream(&meta, &pieces, usage, req.include_usage)
                }
                (Reply::Text(_), Api::Anthropic) => wire::anthropic_stream(&meta, &pieces, usage),
                (Reply::ToolCall(call), Api::OpenAi) => wire::openai_tool_stream(
                    &meta,
                    &call_id,
                    &call.name,
                    &pieces,
                    usage,
                    req.include_usage,
                ),
                (Reply::ToolCall(call), Api::Anthropic) => {
                    wire::anthropic_tool_stream(&meta, &call_id, &call.name, &pieces, usage)
                }
            };
            self.llm_response(StatusCode::OK, SSE, events, opts, true)
        } else {
            let body = match (&reply, api) {
                (Reply::Text(t), Api::OpenAi) => wire::openai_completion(&meta, t, usage),
                (Reply::Text(t), Api::Anthropic) => wire::anthropic_message(&meta, t, usage),
                (Reply::ToolCall(call), Api::OpenAi) => {
                    wire::openai_tool_completion(&meta, &call_id, call, usage)
                }
                (Reply::ToolCall(call), Api::Anthropic) => {
                    wire::anthropic_tool_message(&meta, &call_id, call, usage)
                }
            };
            self.llm_response(StatusCode::OK, JSON, single(body), opts, true)
        }
    }

    fn embeddings(&self, json: &Value, opts: &Opts) -> Response<MockBody> {
        let Value::Object(obj) = json else {
            return self.api_error(
                Api::OpenAi,
                400,
                "mock-llm: the request body must be a JSON object",
                opts,
            );
        };
        let model = match obj.get("model") {
            Some(Value::String(m)) => m.as_str(),
            None | Some(Value::Null) => DEFAULT_EMBEDDING_MODEL,
            Some(_) => {
                return self.api_error(Api::OpenAi, 400, "mock-llm: `model` must be a string", opts)
            }
        };
        let inputs: Option<Vec<&str>> = match obj.get("input") {
            Some(Value::String(s)) => Some(vec![s.as_str()]),
            Some(Value::Array(items)) => items.iter().map(Value::as_str).collect(),
            _ => None,
        };
        let Some(inputs) = inputs else {
            return self.api_error(
                Api::OpenAi,
                400,
                "mock-llm: `input` must be a string or an array of strings",
                opts,
            );
        };
        let base64 = obj.get("encoding_format").and_then(Value::as_str) == Some("base64");
        let body = wire::openai_embeddings(model, &inputs, base64);
        self.llm_response(StatusCode::OK, JSON, single(body), opts, true)
    }

    fn set_faults(&self, v: &Value) -> Response<MockBody> {
        let Value::Object(obj) = v else {
            return self.mock_error(StatusCode::BAD_REQUEST, "expected a JSON object");
        };
        let num = |key: &str| -> Result<Option<u64>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| format!("`{key}` must be a non-negative integer")),
            }
        };
        let parsed = (|| -> Result<Faults, String> {
            let status = match num("status")? {
                None => None,
                Some(s @ 400..=599) => Some(s as u16),
                Some(_) => return Err("`status` must be between 400 and 599".to_string()),
            };
            Ok(Faults {
                status,
                delay_ms: num("delay_ms")?,
                remaining: num("count")?,
            })
        })();
        match parsed {
            Ok(faults) => {
                self.state().faults = faults;
                let echo = serde_json::json!({
                    "status": faults.status,
                    "delay_ms": faults.delay_ms,
                    "count": faults.remaining,
                });
                self.json(StatusCode::OK, wire::to_json(&echo))
            }
            Err(e) => self.mock_error(StatusCode::BAD_REQUEST, &e),
        }
    }

    fn queue_replies(&self, v: &Value) -> Response<MockBody> {
        let replies: Option<Vec<String>> = match v.get("replies") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|r| r.as_str().map(str::to_string))
                .collect(),
            _ => None,
        };
        let Some(replies) = replies else {
            return self.mock_error(
                StatusCode::BAD_REQUEST,
                "expected {\"replies\": [\"...\", ...]} (an array of strings)",
            );
        };
        let queued = {
            let mut state = self.state();
            state.replies.extend(replies);
            state.replies.len()
        };
        self.json(StatusCode::OK, format!("{{\"queued\":{queued}}}"))
    }

    /// `GET /mock/last`: `{"path","headers","body"}`. Header names are lowercase; a
    /// header sent several times has its values joined with `", "`. A body that is valid
    /// JSON is returned as received (byte for byte); any other body as a JSON string.
    fn last(&self) -> Response<MockBody> {
        let Some((path, headers, body)) = self
            .state()
            .last
            .as_ref()
            .map(|l| (l.path.clone(), l.headers.clone(), l.body.clone()))
        else {
            return self.mock_error(StatusCode::NOT_FOUND, "no LLM request received yet");
        };
        let mut map: BTreeMap<&str, String> = BTreeMap::new();
        for (name, value) in &headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            map.entry(name.as_str())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        let mut out = Vec::with_capacity(body.len() + 512);
        out.extend_from_slice(b"{\"path\":");
        out.extend_from_slice(&wire::to_json(&path));
        out.extend_from_slice(b",\"headers\":");
        out.extend_from_slice(&wire::to_json(&map));
        out.extend_from_slice(b",\"body\":");
        let is_json = std::str::from_utf8(&body).is_ok()
            && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
        if is_json {
            out.extend_from_slice(body.trim_ascii());
        } else {
            out.extend_from_slice(&wire::to_json(&String::from_utf8_lossy(&body)));
        }
        out.push(b'}');
        self.json(StatusCode::OK, out)
    }
}

fn single(body: Vec<u8>) -> Events {
    let len = body.len();
    Events {
        buf: body,
        ends: vec![len],
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, (u16, String)> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err((
            413,
            format!("mock-llm: request body larger than {MAX_BODY} bytes"),
        )),
        Err(e) => Err((
            400,
            format!("mock-llm: could not read the request body: {e}"),
        )),
    }
}

async fn read_json(body: Incoming) -> Result<Value, String> {
    let bytes = read_body(body).await.map_err(|(_, m)| m)?;
    serde_json::from_slice(&bytes).map_err(|e| format!("invalid JSON body: {e}"))
}

/// Serves HTTP/1.1 (keep-alive) on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, server: Arc<Server>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // E.g. out of file descriptors: wait a little rather than spin.
                eprintln!("mock-llm: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let server = Arc::clone(&server);
                async move { Ok::<_, Infallible>(server.handle(req).await) }
            });
            // Errors here are the client going away, or our own reset: nothing to do.
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_count_down() {
        let mut f = Faults {
            status: Some(503),
            delay_ms: None,
            remaining: Some(2),
        };
        assert_eq!(f.take_one().status, Some(503));
        assert_eq!(f.take_one().status, Some(503));
        assert_eq!(f.take_one().status, None);
        let mut f = Faults {
            status: None,
            delay_ms: Some(5),
            remaining: None,
        };
        for _ in 0..3 {
            assert_eq!(f.take_one().delay_ms, Some(5));
        }
        let mut f = Faults {
            status: Some(500),
            delay_ms: None,
            remaining: Some(0),
        };
        assert_eq!(f.take_one().status, None);
    }
}

//! End-to-end tests over real sockets: each test starts its own mock on a free port
//! (in a background thread) and talks raw HTTP/1.1 to it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_llm::{serve, Server};
use serde_json::{json, Value};

fn start() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            serve(listener, Arc::new(Server::new("test-up").unwrap())).await;
        });
    });
    addr
}

struct Resp {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    /// The body ended properly (full content-length, or the last chunk).
    complete: bool,
    /// How many reads the body took (to see split writes).
    reads: usize,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

struct Conn(BufReader<TcpStream>);

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn(BufReader::new(s))
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: mock\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
        self.0.get_mut().write_all(req.as_bytes()).unwrap();
        self.read_response()
    }

    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.0.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_string()),
        }
    }

    fn read_response(&mut self) -> Resp {
        let status_line = self.line().expect("status line");
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = HashMap::new();
        loop {
            let line = self.line().expect("header line");
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
        }
        let mut body = Vec::new();
        let mut reads = 0;
        let complete;
        if let Some(len) = headers.get("content-length") {
            let len: usize = len.parse().unwrap();
            while body.len() < len {
                let buf = self.0.fill_buf().unwrap();
                if buf.is_empty() {
                    break;
                }
                let n = buf.len().min(len - body.len());
                body.extend_from_slice(&buf[..n]);
                self.0.consume(n);
                reads += 1;
            }
            complete = body.len() == len;
        } else {
            assert_eq!(
                headers.get("transfer-encoding").map(String::as_str),
                Some("chunked")
            );
            loop {
                let Some(size_line) = self.line() else {
                    complete = false;
                    break;
                };
                let size = usize::from_str_radix(size_line.trim(), 16).unwrap();
                if size == 0 {
                    assert_eq!(self.line().as_deref(), Some(""));
                    complete = true;
                    break;
                }
                let mut chunk = vec![0; size];
                self.0.read_exact(&mut chunk).unwrap();
                body.extend_from_slice(&chunk);
                reads += 1;
                assert_eq!(self.line().as_deref(), Some(""));
            }
        }
        Resp {
            status,
            headers,
            body,
            complete,
            reads,
        }
    }
}

fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
    Conn::open(addr).send("POST", path, headers, &body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    Conn::open(addr).send("GET", path, &[], "")
}

/// The `data:` payloads of an SSE body, with their `event:` names.
fn sse(body: &str) -> Vec<(Option<String>, String)> {
    assert!(body.ends_with("\n\n"));
    body.trim_end()
        .split("\n\n")
        .map(|ev| {
            let mut event = None;
            let mut data = None;
            for line in ev.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_string());
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (event, data.unwrap())
        })
        .collect()
}

#[test]
fn openai_chat_keep_alive_and_stream() {
    let addr = start();
    let mut conn = Conn::open(addr);
    let body = json!({"model":"gpt-test","messages":[
        {"role":"system","content":"be brief"},
        {"role":"user","content":"hello there"}]});
    for _ in 0..2 {
        // Same connection twice: keep-alive.
        let r = conn.send("POST", "/v1/chat/completions", &[], &body.to_string());
        assert_eq!(r.status, 200);
        assert!(r.complete);
        assert_eq!(r.headers["x-mock-name"], "test-up");
        let v = r.json();
        assert_eq!(v["model"], "gpt-test");
        assert_eq!(v["object"], "chat.completion");
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(v["choices"][0]["message"]["content"], "echo: hello there");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens":4,"completion_tokens":3,"total_tokens":7})
        );
    }

    let mut body = body;
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = conn.send("POST", "/v1/chat/completions", &[], &body.to_string());
    assert!(r.complete);
    assert!(r.headers["content-type"].starts_with("text/event-stream"));
    let events = sse(&r.text());
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: hello there");
    // role chunk, 3 words, stop chunk, usage chunk
    assert_eq!(chunks.len(), 6);
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 3);
}

#[test]
fn anthropic_stream_split_writes() {
    let addr = start();
    let body = json!({"model":"claude-test","max_tokens":10,"stream":true,
        "system":"sys prompt","messages":[{"role":"user","content":"REPLY: ünïcødé text here"}]});
    let plain = post(addr, "/v1/messages", &[], &body);
    assert!(plain.complete);
    let split = post(addr, "/v1/messages", &[("x-mock-write-bytes", "5")], &body);
    assert!(split.complete);
    assert!(split.reads > 20, "{} reads", split.reads);
    // Same bytes apart from the message id.
    let strip_id = |s: String| {
        let v: Vec<_> = sse(&s);
        v.into_iter()
            .map(|(e, d)| {
                let mut d: Value = serde_json::from_str(&d).unwrap();
                if let Some(m) = d.get_mut("message") {
                    m["id"] = json!("x");
                }
                (e, d)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip_id(plain.text()), strip_id(split.text()));

    let events = strip_id(plain.text());
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let text: String = events
        .iter()
        .filter(|(e, _)| e.as_deref() == Some("content_block_delta"))
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "ünïcødé text here");
    assert_eq!(events[0].1["message"]["model"], "claude-test");
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 6);
    let delta = events
        .iter()
        .find(|(e, _)| e.as_deref() == Some("message_delta"))
        .unwrap();
    assert_eq!(delta.1["usage"]["output_tokens"], 3);
    assert_eq!(delta.1["delta"]["stop_reason"], "end_turn");

    // chunk by characters
    let r = post(addr, "/v1/messages", &[("x-mock-chunk-chars", "2")], &body);
    let deltas = sse(&r.text())
        .into_iter()
        .filter(|(e, _)| e.as_deref() == Some("content_block_delta"))
        .count();
    assert_eq!(deltas, 9);
}

#[test]
fn reset_aborts_the_stream() {
    let addr = start();
    let body = json!({"stream":true,"messages":[{"role":"user","content":"a b c d e"}]});
    let r = post(
        addr,
        "/v1/chat/completions",
        &[("x-mock-reset-after-chunks", "3")],
        &body,
    );
    assert_eq!(r.status, 200);
    assert!(!r.complete);
    assert_eq!(r.text().matches("data: ").count(), 3);
    // The server keeps working.
    let r = post(addr, "/v1/chat/completions", &[], &body);
    assert!(r.complete);
}

#[test]
fn faults_replies_stats_last() {
    let addr = start();
    let chat = json!({"model":"m","messages":[{"role":"user","content":"hi"}]});

    let r = post(
        addr,
        "/v1/chat/completions",
        &[("x-mock-status", "503")],
        &chat,
    );
    assert_eq!(r.status, 503);
    assert!(r.json()["error"]["message"].is_string());
    let r = post(addr, "/v1/messages", &[("x-mock-status", "429")], &chat);
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");

    let r = post(addr, "/mock/faults", &[], &json!({"status":500,"count":2}));
    assert_eq!(r.status, 200);
    let statuses: Vec<u16> = (0..3)
        .map(|_| post(addr, "/v1/chat/completions", &[], &chat).status)
        .collect();
    assert_eq!(statuses, [500, 500, 200]);

    post(addr, "/mock/faults", &[], &json!({"delay_ms":150}));
    let t = Instant::now();
    assert_eq!(post(addr, "/v1/messages", &[], &chat).status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
    assert_eq!(
        Conn::open(addr)
            .send("DELETE", "/mock/faults", &[], "")
            .status,
        200
    );
    let t = Instant::now();
    post(addr, "/v1/messages", &[("x-mock-delay-ms", "100")], &chat);
    assert!(t.elapsed() >= Duration::from_millis(100));

    post(
        addr,
        "/mock/replies",
        &[],
        &json!({"replies":["first","second reply"]}),
    );
    let r = post(addr, "/v1/chat/completions", &[], &chat).json();
    assert_eq!(r["choices"][0]["message"]["content"], "first");
    let r = post(addr, "/v1/messages", &[], &chat).json();
    assert_eq!(r["content"][0]["text"], "second reply");
    assert_eq!(r["usage"]["output_tokens"], 2);
    let r = post(addr, "/v1/messages", &[], &chat).json();
    assert_eq!(r["content"][0]["text"], "echo: hi");

    let r = Conn::open(addr).send(
        "POST",
        "/v1/chat/completions",
        &[("x-custom", "Yes")],
        "{not json",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let last = get(addr, "/mock/last").json();
    assert_eq!(last["path"], "/v1/chat/completions");
    assert_eq!(last["headers"]["x-custom"], "Yes");
    assert_eq!(last["body"], "{not json");
    post(
        addr,
        "/v1/embeddings",
        &[],
        &json!({"input":"a", "x": [1, 2]}),
    );
    assert_eq!(
        get(addr, "/mock/last").json()["body"],
        json!({"input":"a","x":[1,2]})
    );

    // 2 header faults + 3 + 2 delayed + 3 replies + bad JSON + embeddings
    assert_eq!(get(addr, "/mock/stats").json(), json!({"requests": 12}));
    let r = Conn::open(addr).send("POST", "/mock/reset", &[], "");
    assert_eq!(r.headers["x-mock-name"], "test-up");
    assert_eq!(get(addr, "/mock/stats").json(), json!({"requests": 0}));
    assert_eq!(get(addr, "/mock/last").status, 404);
    assert_eq!(get(addr, "/health").status, 200);
}

#[test]
fn embeddings() {
    let addr = start();
    let r = post(
        addr,
        "/v1/embeddings",
        &[],
        &json!({"model":"emb-1","input":["Hello, world!", "hello world", ""]}),
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["model"], "emb-1");
    assert_eq!(v["usage"], json!({"prompt_tokens":4,"total_tokens":4}));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[0]["embedding"], data[1]["embedding"]);
    assert!(data[2]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x == 0.0));
    let r = post(addr, "/v1/embeddings", &[], &json!({"input":[1,2]}));
    assert_eq!(r.status, 400);
}

#[test]
fn tool_calls_round_trip() {
    let addr = start();
    let ask = "TOOL:get_weather {\"city\":\"Paris\"}";

    // OpenAI: the call, non-streaming then streaming (character chunks).
    let tools = json!([{"type":"function","function":{"name":"get_weather",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]);
    let body = json!({"model":"gpt-test","tools":tools,"messages":[{"role":"user","content":ask}]});
    let v = post(addr, "/v1/chat/completions", &[], &body).json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(v["usage"]["completion_tokens"], 1);

    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let r = post(
        addr,
        "/v1/chat/completions",
        &[("x-mock-chunk-chars", "4"), ("x-mock-write-bytes", "7")],
        &streaming,
    );
    assert!(r.complete);
    let events = sse(&r.text());
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let first = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(first["function"]["name"], "get_weather");
    let call_id = first["id"].as_str().unwrap().to_string();
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    // role chunk, 4 pieces of 4 characters, finish chunk, usage chunk
    assert_eq!(chunks.len(), 7);
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");

    // The tool result gets the final answer.
    let body = json!({"model":"gpt-test","tools":tools,"messages":[
        {"role":"user","content":ask},
        {"role":"assistant","content":null,"tool_calls":[{"id":call_id,"type":"function",
            "function":{"name":"get_weather","arguments":args}}]},
        {"role":"tool","tool_call_id":call_id,"content":"18 degrees"}]});
    let v = post(addr, "/v1/chat/completions", &[], &body).json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "tool result: 18 degrees"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // Anthropic: the same round trip.
    let tools = json!([{"name":"get_weather","input_schema":{"type":"object"}}]);
    let body = json!({"model":"claude-test","max_tokens":100,"tools":tools,
        "messages":[{"role":"user","content":ask}]});
    let v = post(addr, "/v1/messages", &[], &body).json();
    assert_eq!(v["stop_reason"], "tool_use");
    let block = &v["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["input"], json!({"city":"Paris"}));

    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let r = post(addr, "/v1/messages", &[], &streaming);
    let events = sse(&r.text());
    let start = events
        .iter()
        .find(|(e, _)| e.as_deref() == Some("content_block_start"))
        .map(|(_, d)| serde_json::from_str::<Value>(d).unwrap())
        .unwrap();
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["input"], json!({}));
    let tool_id = start["content_block"]["id"].as_str().unwrap().to_string();
    let partial: String = events
        .iter()
        .filter(|(e, _)| e.as_deref() == Some("content_block_delta"))
        .map(|(_, d)| {
            let d: Value = serde_json::from_str(d).unwrap();
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(partial, "{\"city\":\"Paris\"}");
    let delta = events
        .iter()
        .find(|(e, _)| e.as_deref() == Some("message_delta"))
        .map(|(_, d)| serde_json::from_str::<Value>(d).unwrap())
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");

    let body = json!({"model":"claude-test","max_tokens":100,"tools":tools,"messages":[
        {"role":"user","content":ask},
        {"role":"assistant","content":[{"type":"tool_use","id":tool_id,"name":"get_weather",
            "input":{"city":"Paris"}}]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":tool_id,
            "content":[{"type":"text","text":"18 degrees"}]}]}]});
    let v = post(addr, "/v1/messages", &[], &body).json();
    assert_eq!(
        v["content"],
        json!([{"type":"text","text":"tool result: 18 degrees"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
}

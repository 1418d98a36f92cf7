//! A small HTTP/1.1 client over `TcpStream`, so tests see the wire as it is:
//! status, every header, and each chunk of a chunked body separately.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn post_json(path: &str, body: &serde_json::Value) -> Self {
        Self::new("POST", path)
            .header("content-type", "application/json")
            .body(body.to_string().as_bytes())
    }

    /// An OpenAI chat request with the demo key.
    pub fn openai(body: serde_json::Value) -> Self {
        Self::post_json("/v1/chat/completions", &body).bearer(crate::DEMO_KEY)
    }

    /// An Anthropic messages request with the demo key (`x-api-key`).
    pub fn anthropic(body: serde_json::Value) -> Self {
        Self::post_json("/v1/messages", &body)
            .header("anthropic-version", "2023-06-01")
            .header("x-api-key", crate::DEMO_KEY)
    }

    /// Drops every header named `name`.
    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    /// `Authorization: Bearer <key>`.
    pub fn bearer(self, key: &str) -> Self {
        self.header("authorization", &format!("Bearer {key}"))
    }
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body as it arrived: one entry per HTTP chunk (chunked encoding), or
    /// one entry for a content-length body.
    pub chunks: Vec<Vec<u8>>,
    /// The connection ended before the body was complete.
    pub truncated: bool,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn get(port: u16, path: &str) -> Result<HttpResponse, String> {
    send(port, &Request::new("GET", path))
}

pub fn send(port: u16, req: &Request) -> Result<HttpResponse, String> {
    let mut s =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect {port}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = s.set_nodelay(true);
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n",
        req.method, req.path
    );
    let has_len = req.headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    });
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len && (req.method != "GET" || !req.body.is_empty()) {
        head.push_str(&format!("content-length: {}\r\n", req.body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&req.body);
    s.write_all(&out).map_err(|e| format!("write: {e}"))?;
    read_response(s)
}

fn read_response(s: TcpStream) -> Result<HttpResponse, String> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(|e| format!("read status: {e}"))?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)
            .map_err(|e| format!("read header: {e}"))?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    let mut chunks = Vec::new();
    let mut truncated = false;
    if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size_line = String::new();
            match r.read_line(&mut size_line) {
                Ok(0) | Err(_) => {
                    truncated = true;
                    break;
                }
                Ok(_) => {}
            }
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                let mut end = String::new();
                let _ = r.read_line(&mut end);
                break;
            }
            let mut chunk = vec![0u8; size];
            if r.read_exact(&mut chunk).is_err() {
                truncated = true;
                break;
            }
            let mut crlf = [0u8; 2];
            let _ = r.read_exact(&mut crlf);
            body.extend_from_slice(&chunk);
            chunks.push(chunk);
        }
    } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut b = vec![0u8; len];
        if r.read_exact(&mut b).is_err() {
            truncated = true;
        }
        body = b.clone();
        chunks.push(b);
    } else {
        let _ = r.read_to_end(&mut body);
        chunks.push(body.clone());
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
        chunks,
        truncated,
    })
}

//! A small blocking HTTP/1.1 client over `std::net::TcpStream`: one request
//! per connection (`connection: close`), plain `http://` only. An `https://`
//! endpoint is refused: put a local plain-http proxy in front of it (the
//! gateway itself is one).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where requests go: `http://host[:port][/base]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Base path without a trailing slash (may be empty).
    pub base_path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err(format!(
                "{url}: https endpoints are not supported (plain http only); \
                 point --endpoint at a local plain-http proxy such as the gateway"
            ));
        } else {
            return Err(format!("{url}: the endpoint must start with http://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url}: bad IPv6 address"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{url}: bad port"))?,
                None if after.is_empty() => 80,
                None => return Err(format!("{url}: bad authority")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| format!("{url}: bad port {p:?}"))?,
                ),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        Ok(Endpoint {
            host,
            port,
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    /// The chat-completions path: the base as given when it already ends
    /// with `/chat/completions`, `/chat/completions` after a `/v1` base,
    /// otherwise `<base>/v1/chat/completions`.
    pub fn chat_path(&self) -> String {
        let b = &self.base_path;
        if b.ends_with("/chat/completions") {
            b.clone()
        } else if b.ends_with("/v1") {
            format!("{b}/chat/completions")
        } else {
            format!("{b}/v1/chat/completions")
        }
    }

    fn host_header(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Client settings: per-request timeout and retries with exponential backoff
/// on connect/IO errors, 5xx and 429.
#[derive(Debug, Clone)]
pub struct Client {
    pub endpoint: Endpoint,
    pub timeout: Duration,
    pub retries: u32,
    /// First backoff; doubled after each attempt (plus up to 50% jitter).
    pub backoff: Duration,
}

/// Longest single backoff sleep (also caps `retry-after`).
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Client {
    /// POSTs `body` to `path` with `headers`. Retries as configured; the last
    /// response is returned even when it is a 5xx/429 after the retries.
    pub fn post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Response, String> {
        let mut attempt = 0u32;
        loop {
            let result = self.send_once(path, headers, body);
            let retryable = match &result {
                Ok(r) => r.status == 429 || r.status >= 500,
                Err(_) => true,
            };
            if !retryable || attempt >= self.retries {
                return result;
            }
            let mut wait = self
                .backoff
                .saturating_mul(1u32 << attempt.min(16))
                .min(MAX_BACKOFF);
            wait += jitter(wait / 2);
            if let Ok(r) = &result {
                if let Some(secs) = r
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                {
                    wait = wait.max(Duration::from_secs(secs)).min(MAX_BACKOFF);
                }
            }
            std::thread::sleep(wait);
            attempt += 1;
        }
    }

    fn send_once(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Response, String> {
        let ep = &self.endpoint;
        let deadline = Instant::now() + self.timeout;
        let addrs: Vec<_> = (ep.host.as_str(), ep.port)
            .to_socket_addrs()
            .map_err(|e| format!("resolve {}: {e}", ep.host))?
            .collect();
        let mut last_err = format!("resolve {}: no address", ep.host);
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_err = format!("connect {a}: {e}"),
            }
        }
        let mut s = stream.ok_or(last_err)?;
        let _ = s.set_nodelay(true);
        s.set_write_timeout(Some(self.timeout))
            .map_err(|e| e.to_string())?;
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
            ep.host_header(),
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        s.write_all(&out).map_err(|e| format!("write: {e}"))?;
        read_response(s, deadline)
    }
}

/// Up to `max` of pseudo-random jitter (clock nanoseconds; no RNG needed).
fn jitter(max: Duration) -> Duration {
    let ms = max.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    Duration::from_millis(nanos % ms)
}

/// A reader that sets the socket read timeout to what is left before the
/// deadline, so the whole response must arrive within the timeout.
struct DeadlineReader {
    s: TcpStream,
    deadline: Instant,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            ));
        }
        self.s.set_read_timeout(Some(left))?;
        self.s.read(buf)
    }
}

fn read_response(s: TcpStream, deadline: Instant) -> Result<Response, String> {
    let mut r = BufReader::new(DeadlineReader { s, deadline });
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(|e| format!("read status: {e}"))?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {:?}", line.trim_end()))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        let n = r
            .read_line(&mut h)
            .map_err(|e| format!("read header: {e}"))?;
        let h = h.trim_end();
        if n == 0 || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let mut size_line = String::new();
            let n = r
                .read_line(&mut size_line)
                .map_err(|e| format!("read chunk: {e}"))?;
            if n == 0 {
                return Err("connection closed inside a chunked body".into());
            }
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0u8; size];
            r.read_exact(&mut chunk)
                .map_err(|e| format!("read chunk: {e}"))?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)
                .map_err(|e| format!("read chunk: {e}"))?;
            body.extend_from_slice(&chunk);
        }
    } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = vec![0u8; len];
        r.read_exact(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
    } else {
        r.read_to_end(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("http://127.0.0.1:10000").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 10000));
        assert_eq!(e.chat_path(), "/v1/chat/completions");
        let e = Endpoint::parse("http://gw.local/llm/v1/").unwrap();
        assert_eq!(e.port, 80);
        assert_eq!(e.chat_path(), "/llm/v1/chat/completions");
        let e = Endpoint::parse("http://[::1]:8080/v1/chat/completions").unwrap();
        assert_eq!(e.host, "::1");
        assert_eq!(e.host_header(), "[::1]:8080");
        assert_eq!(e.chat_path(), "/v1/chat/completions");
        assert!(Endpoint::parse("https://api.openai.com")
            .unwrap_err()
            .contains("https"));
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://host:notaport").is_err());
    }

    #[test]
    fn connect_errors_are_retried_then_reported() {
        // A port nobody listens on: bind, take the port, drop.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let c = Client {
            endpoint: Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
            timeout: Duration::from_millis(500),
            retries: 2,
            backoff: Duration::from_millis(10),
        };
        let t = Instant::now();
        let e = c.post("/v1/chat/completions", &[], b"{}").unwrap_err();
        assert!(e.contains("connect"), "{e}");
        // 10 ms + 20 ms of backoff at least.
        assert!(t.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn retries_5xx_and_returns_the_success() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for (i, conn) in l.incoming().take(3).enumerate() {
                let mut s = conn.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let resp = if i < 2 {
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy".to_string()
                } else {
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                        .to_string()
                };
                s.write_all(resp.as_bytes()).unwrap();
            }
        });
        let c = Client {
            endpoint: Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
            timeout: Duration::from_secs(5),
            retries: 2,
            backoff: Duration::from_millis(5),
        };
        let r = c.post("/x", &[], b"{}").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"ok");
        server.join().unwrap();
    }
}

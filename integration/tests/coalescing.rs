//! Issue 21: identical in-flight requests reach the upstream once, across
//! Envoy's two workers; failures and timeouts send followers upstream.

use llmgate::core::util::sha256_hex;
use llmgate_integration::{client, config, sse_text, Mock, Options, Request, Stack, DEMO_KEY};
use serde_json::{json, Value};
use std::sync::{Arc, Barrier};

fn stack(coalesce: Value, retries: u32) -> Stack {
    let mut opts = Options::new(&config(json!({
        "keys": [
            {"id": "demo", "sha256": sha256_hex(DEMO_KEY.as_bytes()), "tenant": "demo"},
            {"id": "other", "sha256": sha256_hex(b"sk-other-tenant"), "tenant": "other"}
        ],
        "cache": {"enabled": true, "coalesce": coalesce}
    })));
    opts.retries = retries;
    opts.concurrency = 2;
    Stack::start(opts)
}

/// Sends `n` copies of a request at once; (status, cache header, body).
fn burst(s: &Stack, n: usize, make: impl Fn(usize) -> Request) -> Vec<(u16, String, String)> {
    let port = s.ports.listen;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let req = make(i);
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let r = client::send(port, &req).unwrap();
                (
                    r.status,
                    r.header("x-llmgate-cache").unwrap_or("").to_string(),
                    r.text(),
                )
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn chat(text: &str, stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "stream": stream, "temperature": 0,
           "messages": [{"role": "user", "content": text}]})
}

#[test]
fn twenty_identical_requests_reach_the_upstream_once() {
    let s = stack(json!({"enabled": true}), 2);
    let out = burst(&s, 20, |_| {
        Request::openai(chat("what is coalescing?", false)).header("x-mock-delay-ms", "500")
    });
    assert_eq!(s.mock_requests(Mock::Primary), 1, "{out:?}");
    assert!(out.iter().all(|(st, _, _)| *st == 200), "{out:?}");
    let first = &out[0].2;
    assert!(out.iter().all(|(_, _, b)| b == first), "same body for all");
    let coalesced = out.iter().filter(|(_, c, _)| c == "coalesced").count();
    assert_eq!(coalesced, 19, "{out:?}");
    let lines = s.wait_audit(20);
    assert_eq!(
        lines.iter().filter(|l| l["cache"] == "coalesced").count(),
        19
    );
    assert!(s
        .metric("llmgate_cache_total", &[("outcome", "coalesced")])
        .is_some_and(|v| v >= 19.0));

    // Streams: followers get the whole stream replayed.
    let out = burst(&s, 20, |_| {
        Request::openai(chat("REPLY: a streamed coalesced answer", true))
            .header("x-mock-delay-ms", "500")
    });
    assert_eq!(s.mock_requests(Mock::Primary), 2, "{out:?}");
    for (st, _, body) in &out {
        assert_eq!(*st, 200);
        assert_eq!(sse_text(body), "a streamed coalesced answer");
        assert!(body.contains("data: [DONE]"));
    }
    assert_eq!(out.iter().filter(|(_, c, _)| c == "coalesced").count(), 19);
}

#[test]
fn a_failed_leader_or_a_long_wait_sends_followers_upstream() {
    // No Envoy retries: the leader's 503 reaches it.
    let s = stack(json!({"enabled": true}), 0);
    s.mock_control(
        Mock::Primary,
        "POST",
        "/mock/faults",
        r#"{"status": 503, "count": 1}"#,
    );
    let out = burst(&s, 20, |_| {
        Request::openai(chat("leader fails", false)).header("x-mock-delay-ms", "400")
    });
    let ok = out.iter().filter(|(st, _, _)| *st == 200).count();
    assert_eq!(ok, 19, "only the leader's own request failed: {out:?}");
    assert_eq!(s.mock_requests(Mock::Primary), 20);

    let s = stack(json!({"enabled": true, "max_wait_ms": 200}), 2);
    let out = burst(&s, 10, |_| {
        Request::openai(chat("slow leader", false)).header("x-mock-delay-ms", "1500")
    });
    assert!(out.iter().all(|(st, _, _)| *st == 200));
    assert_eq!(
        s.mock_requests(Mock::Primary),
        10,
        "followers went upstream after the bound"
    );
}

#[test]
fn non_deterministic_or_other_tenant_requests_are_never_coalesced() {
    let s = stack(json!({"enabled": true}), 2);
    let out = burst(&s, 6, |_| {
        Request::openai(json!({"model": "gpt-4o-mini", "temperature": 1,
            "messages": [{"role": "user", "content": "creative"}]}))
        .header("x-mock-delay-ms", "300")
    });
    assert!(out.iter().all(|(_, c, _)| c != "coalesced"));
    assert_eq!(s.mock_requests(Mock::Primary), 6);
    let out = burst(&s, 2, |i| {
        let r = Request::post_json("/v1/chat/completions", &chat("same words", false))
            .header("x-mock-delay-ms", "300");
        if i == 0 {
            r.bearer(DEMO_KEY)
        } else {
            r.bearer("sk-other-tenant")
        }
    });
    assert!(out.iter().all(|(st, c, _)| *st == 200 && c != "coalesced"));
    assert_eq!(s.mock_requests(Mock::Primary), 8);
}

#[test]
fn followers_that_hang_up_leave_nothing_behind() {
    use std::io::Write;
    let s = stack(json!({"enabled": true}), 2);
    let port = s.ports.listen;
    let leader = std::thread::spawn(move || {
        client::send(
            port,
            &Request::openai(chat("abandoned", false)).header("x-mock-delay-ms", "800"),
        )
        .unwrap()
        .status
    });
    std::thread::sleep(std::time::Duration::from_millis(150));
    // Five followers connect, send, and hang up before the leader answers.
    for _ in 0..5 {
        let body = chat("abandoned", false).to_string();
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {DEMO_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        c.write_all(head.as_bytes()).unwrap();
        c.write_all(body.as_bytes()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(c);
    }
    assert_eq!(leader.join().unwrap(), 200);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(s.mock_requests(Mock::Primary), 1);
    // Envoy and the VMs are fine; the answer is now a cache hit.
    let r = s.send(&Request::openai(chat("abandoned", false)));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-llmgate-cache"), Some("hit"));
    assert!(!s.envoy_log().contains("panicked"));
}

#[test]
fn streaming_requests_through_the_openai_sdk_are_coalesced() {
    let s = stack(json!({"enabled": true}), 2);
    // One queued reply: only the leader reaches the mock.
    s.mock_control(
        Mock::Primary,
        "POST",
        "/mock/replies",
        r#"{"replies": ["one answer for all of you"]}"#,
    );
    let root = llmgate_integration::repo_root();
    let out = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("integration/sdk/coalesce_sdk.py"))
        .arg(s.url())
        .arg(DEMO_KEY)
        .arg("20")
        .output()
        .expect("python from .venv (make test installs the SDKs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["answers"], 20, "{v}");
    assert_eq!(v["texts"], json!(["one answer for all of you"]));
    assert_eq!(v["coalesced"], 19, "{v}");
    assert_eq!(s.mock_requests(Mock::Primary), 1);
}

#![allow(
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used
)]
//! Times the core's per-request steps natively on the benchmark bodies:
//! `cargo run --release --example hotpath -- target/bench/body-1024.json`.
//! A profiling aid for `make bench` findings (wasm in V8 is slower, the
//! proportions hold).

use llmgate::core::api::{self, Api};
use llmgate::core::config::Config;
use llmgate::core::usage;
use std::time::Instant;

fn time<T>(label: &str, n: u32, mut f: impl FnMut() -> T) {
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    let per = t.elapsed() / n;
    println!("{label:<40} {per:>10.2?}");
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/bench/body-1024.json".into());
    let body = std::fs::read(&path).unwrap_or_default();
    let body = String::from_utf8_lossy(&body)
        .replace("@@ID@@", "x1")
        .into_bytes();
    let cfg = Config::from_json_with_env(
        br#"{"auth":{"mode":"none"},"cache":{"enabled":true}}"#,
        &|_| None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let n: u32 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    println!("body {} bytes", body.len());
    time("parse_request", n, || {
        api::parse_request(Api::OpenAi, &body).ok()
    });
    let req = api::parse_request(Api::OpenAi, &body).unwrap_or_else(|e| panic!("{e:?}"));
    let v = serde_json::Value::Object(req.body.clone());
    time("clone body", n, || req.body.clone());
    time("estimate_input_tokens", n, || {
        usage::estimate_input_tokens(Api::OpenAi, &v)
    });
    time("guard.inspect_request", n, || {
        let mut v = v.clone();
        cfg.guard.inspect_request(Api::OpenAi, &mut v).modified
    });
    let text: String = v["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| x["content"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    println!("text {} bytes", text.len());
    time("  normalise", n, || {
        llmgate::core::guard::normalise::normalise(&text)
    });
    time("  detectors.find", n, || {
        cfg.guard.detectors().find(&text).len()
    });
    time("  score_text (rules+classifier)", n, || {
        cfg.guard
            .score_text(&text, llmgate::core::guard::Origin::User)
    });
    time("cache.key", n, || {
        cfg.cache.key("t", Api::OpenAi, &req.body, None)
    });
    time("serialize body", n, || serde_json::to_vec(&req.body).ok());
    time("sha256 key", n, || {
        llmgate::core::util::sha256_hex(b"sk-llmgate-demo")
    });
}

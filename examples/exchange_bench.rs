#![allow(
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used
)]
//! Times whole exchanges natively (request headers → body → JSON response →
//! audit) with the fake host, per bench configuration:
//! `cargo run --release --example exchange_bench -- bench/configs/full-nocache.json target/bench/body-1024.json`.
//! What is left of `make bench`'s added time after this is host crossings
//! and Envoy's own work.

use llmgate::core::config::Config;
use llmgate::core::exchange::{BodyRead, Exchange, VmState};
use llmgate::core::host::{FakeClock, FakeMetrics, FakeStore};
use std::rc::Rc;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cfg_path = args
        .get(1)
        .cloned()
        .unwrap_or("bench/configs/full-nocache.json".into());
    let body_path = args
        .get(2)
        .cloned()
        .unwrap_or("target/bench/body-1024.json".into());
    let cfg = std::fs::read(&cfg_path).unwrap();
    let body = String::from_utf8_lossy(&std::fs::read(&body_path).unwrap())
        .replace("@@ID@@", "x1")
        .into_bytes();
    let config = Rc::new(Config::from_json_with_env(&cfg, &|_| Some("k".into())).unwrap());
    let store = Rc::new(FakeStore::new());
    config.budgets.init(&*store).unwrap();
    let clock = Rc::new(FakeClock::at(1_704_067_210_000));
    let metrics = Rc::new(FakeMetrics::default());
    let vm = Rc::new(VmState::new(config.cache.l1_bytes));
    let response = br#"{"id":"x","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"a reply of a few words"},"finish_reason":"stop"}],"usage":{"prompt_tokens":200,"completion_tokens":6,"total_tokens":206}}"#.to_vec();
    let headers = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), "/v1/chat/completions".to_string()),
        (":authority".to_string(), "llm".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
        (
            "authorization".to_string(),
            "Bearer sk-llmgate-demo".to_string(),
        ),
    ];
    let n: u32 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let t = Instant::now();
    for i in 0..n {
        let mut ex = Exchange::new(
            i,
            config.clone(),
            metrics.clone(),
            store.clone(),
            clock.clone(),
            vm.clone(),
        );
        ex.on_request_headers(headers.clone(), false);
        ex.take_effects();
        if ex.request_body_event(body.len(), true).is_ok() {
            ex.on_request_body(&body);
        }
        ex.take_effects();
        if ex.wants_response_headers() {
            ex.on_response_headers(
                vec![
                    (":status".to_string(), "200".to_string()),
                    ("content-type".to_string(), "application/json".to_string()),
                ],
                false,
            );
            ex.take_effects();
            let bytes = match ex.response_body_read(response.len(), true) {
                BodyRead::Bytes => response.clone(),
                BodyRead::Nothing => Vec::new(),
            };
            ex.on_response_body(bytes, response.len(), true);
            ex.take_effects();
        }
        ex.on_log(false);
        ex.take_effects();
    }
    println!(
        "{cfg_path}: {:.1?} per exchange {} ({n} runs, body {} bytes)",
        t.elapsed() / n,
        if cfg!(target_arch = "wasm32") {
            "in wasm"
        } else {
            "natively"
        },
        body.len()
    );
}

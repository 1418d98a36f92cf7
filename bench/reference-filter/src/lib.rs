//! The reference filter of `make bench` (issue 15): what any proxy-wasm
//! filter that inspects an LLM request body pays at least. It pauses the
//! request headers, buffers the body, parses it as JSON, hashes it with
//! SHA-256 and does one compare-and-swap on shared data, then lets the
//! request go on untouched. Ratios against it show what is llmgate's own.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use sha2::{Digest, Sha256};

const KEY: &str = "reference:counter";

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    register();
}}

/// Registers the root context with the host.
pub fn register() {
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        // Created once before traffic, like llmgate's buckets.
        if let (None, _) = self.get_shared_data(KEY) {
            let _ = self.set_shared_data(KEY, Some(&0u64.to_le_bytes()), None);
        }
        true
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request;

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, size).unwrap_or_default();
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let digest = Sha256::digest(&body);
        let seen = parsed.is_some() && !digest.is_empty();
        if let (Some(v), cas) = self.get_shared_data(KEY) {
            let n = <[u8; 8]>::try_from(v.as_slice())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
                .saturating_add(u64::from(seen));
            let _ = self.set_shared_data(KEY, Some(&n.to_le_bytes()), cas);
        }
        Action::Continue
    }
}

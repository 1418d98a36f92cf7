//! llmgate: a proxy-wasm filter that makes LLM API calls production-grade.
//!
//! `core` is the functional core: pure Rust, no `proxy_wasm` import, covered by
//! `cargo test` on the host. `shell` is the thin layer that talks to Envoy.

pub mod core;
pub mod shell;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    shell::register();
}}

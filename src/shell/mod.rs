//! The thin shell: proxy-wasm contexts and hostcalls. Decisions live in
//! `crate::core`; this layer moves bytes between Envoy and the core.

mod host;
mod http;
mod metrics;
mod root;

use proxy_wasm::types::LogLevel;

/// Registers llmgate's root context with the host.
pub fn register() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::new(context_id))
    });
}

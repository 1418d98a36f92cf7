//! The functional core. Nothing in here may import `proxy_wasm`: the host is
//! reached through the small traits in [`host`].

pub mod api;
pub mod audit;
pub mod breaker;
pub mod budget;
pub mod cache;
pub mod cas;
pub mod coalesce;
pub mod config;
pub mod cost;
pub mod error;
pub mod exchange;
pub mod fleet;
pub mod guard;
pub mod host;
pub mod keys;
pub mod labels;
pub mod otel;
pub mod pipeline;
pub mod prompts;
pub mod respfilter;
pub mod routing;
pub mod semantic;
pub mod sse;
pub mod translate;
pub mod usage;
pub mod util;

#[cfg(test)]
mod robustness_tests;

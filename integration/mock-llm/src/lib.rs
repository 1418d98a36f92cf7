//! mock-llm: a mock OpenAI / Anthropic HTTP server for llmgate's tests, demo and
//! benchmark. See `README.md` for the endpoints, the reply rule and the `x-mock-*`
//! fault headers.

pub mod body;
pub mod logic;
pub mod server;
pub mod wire;

pub use server::{serve, Server};

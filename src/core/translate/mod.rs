//! Translation between the two client APIs: an OpenAI-shaped client served
//! by an Anthropic upstream, and an Anthropic-shaped client served by an
//! OpenAI upstream. Requests, non-streaming responses, error bodies and SSE
//! streams (incrementally, event by event). Pure functions: no I/O, no
//! clock (the caller passes `created`), no `proxy_wasm`.
//!
//! ## Call order (the shell)
//!
//! 1. After the request is parsed and checked in the client's API (and
//!    after any body rewrite done in the client's API, such as
//!    `usage::ensure_include_usage`): [`translate_request`] with the
//!    client's and the upstream's API. It returns the upstream body, or a
//!    400 [`ApiError`] to answer in the client's shape. Keep its
//!    [`TranslatedRequest::include_usage`] and [`TranslatedRequest::stream`].
//!    Send the body to the upstream's path (`api::OPENAI_PATH` /
//!    `api::ANTHROPIC_PATH`); setting the mapped `model` is the caller's
//!    business (the translator copies `model` as is).
//! 2. Response headers: the status code may change (see [`client_status`]);
//!    a translated body has a new length (drop `content-length`).
//! 3. Non-streaming body (or any error body, streaming request or not):
//!    [`translate_response`] with the upstream status and the whole body.
//! 4. Streaming body (`2xx` with `text/event-stream`): a
//!    [`StreamTranslator`]; push each body chunk through an
//!    [`SseParser`](crate::core::sse::SseParser), give every event to
//!    [`StreamTranslator::on_event`] and send the bytes it returns; at the end
//!    of the upstream body, [`StreamTranslator::finish`] (and send its bytes).
//!    If the parser overflows, drop its unparsed bytes and call `finish`:
//!    the client gets an error event. The usage tracker, response filter and
//!    cache then work on the translated events, in the client's API.
//!
//! When client and upstream speak the same API every function is the
//! identity (the body is copied, stream events are forwarded raw).
//!
//! ## Translation table
//!
//! "Dropped" fields are left out and listed in
//! [`TranslatedRequest::dropped`] (for the audit log); "refused" fields make
//! the request fail with 400 `unsupported_field` naming the field, because
//! dropping them would change what the client asked for. A value of the
//! wrong type is a 400 `invalid_request` naming the field.
//!
//! ### Requests: OpenAI chat.completions → Anthropic messages
//!
//! | OpenAI | Anthropic | rule |
//! |---|---|---|
//! | `model` | `model` | copied (model mapping is the caller's) |
//! | `messages[]` role `system` / `developer` | `system` | all of them, wherever they are, in order: one text block per text part (a single block is sent as a string) |
//! | role `user`, content string | `user`, content string | |
//! | content part `text` | `text` block | |
//! | content part `image_url` with `data:<type>;base64,<data>` | `image` block, `source.type: base64` | `detail` dropped |
//! | content part `image_url` with an `http(s)` URL | `image` block, `source.type: url` | `detail` dropped |
//! | content parts `input_audio`, `file`, others | — | refused |
//! | role `assistant`: `content` (string or text/refusal parts), `refusal` | `assistant` `text` blocks | |
//! | `assistant.tool_calls[]` `{id, function: {name, arguments}}` | `tool_use` blocks `{id, name, input}` | `arguments` must be a JSON object (or empty: `{}`) |
//! | role `tool` `{tool_call_id, content}` | `tool_result` block `{tool_use_id, content}` in a user turn | consecutive tool results (and a following user message) are merged into one user turn, results first |
//! | consecutive messages of the same role | one turn | merged (Anthropic alternates roles) |
//! | message `name` | — | dropped |
//! | role `function`, `function_call`, `functions`, `audio` | — | refused |
//! | `max_completion_tokens`, else `max_tokens` | `max_tokens` | required by Anthropic: without either, the configured default |
//! | `temperature` | `temperature` | clamped to Anthropic's 0–1 |
//! | `top_p` | `top_p` | |
//! | `stop` (string or list) | `stop_sequences` | empty strings left out |
//! | `stream` | `stream` | |
//! | `stream_options.include_usage` | — | Anthropic always reports usage; the translated stream ends with the usage chunk when it was `true` |
//! | `user` | `metadata.user_id` | |
//! | `tools[]` `{type: function, function: {name, description, parameters}}` | `tools[]` `{name, description, input_schema}` | `strict` dropped; other tool types refused |
//! | `tool_choice` `none` / `auto` / `required` / `{function: {name}}` | `{type: none}` / `{type: auto}` / `{type: any}` / `{type: tool, name}` | `allowed_tools` and custom choices refused |
//! | `parallel_tool_calls: false` | `tool_choice.disable_parallel_tool_use: true` | |
//! | `n` | — | 1 dropped, more refused |
//! | `logprobs`, `top_logprobs` | — | `logprobs: true` refused, otherwise dropped |
//! | `logit_bias` | — | empty dropped, otherwise refused |
//! | `response_format` | — | `text` dropped, `json_object` / `json_schema` refused |
//! | `modalities` | — | `["text"]` dropped, audio refused |
//! | `web_search_options` | — | refused |
//! | `seed`, `frequency_penalty`, `presence_penalty`, `store`, `metadata`, `service_tier`, `reasoning_effort`, `verbosity`, `prediction`, `prompt_cache_key`, `safety_identifier`, any other field | — | dropped |
//!
//! ### Requests: Anthropic messages → OpenAI chat.completions
//!
//! | Anthropic | OpenAI | rule |
//! |---|---|---|
//! | `model` | `model` | copied |
//! | `system` (string or text blocks) | a first `system` message | blocks joined with `\n`; `cache_control` dropped |
//! | `user` / `assistant` content string | same role, content string | |
//! | `text` block | `text` part | `cache_control`, `citations` dropped |
//! | `image` block, `source.type: base64` | `image_url` part with a `data:` URL | |
//! | `image` block, `source.type: url` | `image_url` part with that URL | |
//! | `image` with `source.type: file`, `document`, `search_result`, server tool blocks, others | — | refused |
//! | `tool_result` blocks in a user turn | one `tool` message each, before the rest of the turn | content: string or text blocks (images refused); `is_error` dropped |
//! | assistant `tool_use` blocks | `tool_calls[]` `{id, type: function, function: {name, arguments}}` | `input` serialised as the `arguments` string |
//! | assistant `thinking`, `redacted_thinking` blocks | — | dropped |
//! | `max_tokens` | `max_completion_tokens` | |
//! | `temperature`, `top_p` | same | |
//! | `top_k` | — | dropped |
//! | `stop_sequences` | `stop` | empty strings left out |
//! | `stream` | `stream` | and `stream_options.include_usage: true`, so that the stream reports usage |
//! | `metadata.user_id` | `user` | |
//! | `tools[]` `{name, description, input_schema}` (custom tools) | `tools[]` `{type: function, function: {name, description, parameters}}` | `cache_control` dropped; server tools (`web_search_…`, `bash_…`, …) refused |
//! | `tool_choice` `{type: auto / any / tool / none}` | `auto` / `required` / `{type: function, function: {name}}` / `none` | |
//! | `tool_choice.disable_parallel_tool_use: true` | `parallel_tool_calls: false` | |
//! | `thinking`, `service_tier`, any other field | — | dropped |
//! | `container`, `mcp_servers` | — | refused |
//!
//! ### Responses (JSON and streams)
//!
//! | OpenAI | Anthropic | rule |
//! |---|---|---|
//! | `id` | `id` | copied |
//! | `model` | `model` | the upstream's, unless [`ResponseOptions::model`] is set |
//! | `created` | — | [`ResponseOptions::created`] towards OpenAI |
//! | `choices[0].message.content` | `text` blocks | text blocks are concatenated |
//! | `choices[0].message.refusal` | a `text` block, `stop_reason: refusal` | |
//! | `choices[0].message.tool_calls[]` | `tool_use` blocks | arguments that are not a JSON object: 502 |
//! | — | `thinking`, `redacted_thinking`, server tool blocks | dropped |
//! | `finish_reason` `stop` | `stop_reason` `end_turn` / `stop_sequence` / `pause_turn` | |
//! | `length` | `max_tokens` / `model_context_window_exceeded` | |
//! | `tool_calls` (and legacy `function_call`) | `tool_use` | |
//! | `content_filter` | `refusal` | |
//! | `usage.prompt_tokens` | `input_tokens + cache_read_input_tokens + cache_creation_input_tokens` | OpenAI's count includes cached tokens, Anthropic's does not |
//! | `usage.prompt_tokens_details.cached_tokens` | `cache_read_input_tokens` | OpenAI reports no cache writes (0) |
//! | `usage.completion_tokens` | `output_tokens` | |
//! | stream: first chunk (`delta.role`) | `message_start` | towards Anthropic, the usage of `message_start` is 0: OpenAI reports it at the end, and `message_delta` carries it (input, cache and output tokens) |
//! | stream: `delta.content` | `content_block_start` (text) + `text_delta` | |
//! | stream: `delta.tool_calls[i]` with `id`/`name`, then `arguments` pieces | `content_block_start` (`tool_use`) + `input_json_delta` pieces | one block per tool call, in order |
//! | stream: `finish_reason` chunk | `content_block_stop` + `message_delta` | |
//! | stream: usage-only chunk (`include_usage`) | `message_start` / `message_delta` usage | towards OpenAI only when the client asked for it |
//! | stream: `data: [DONE]` | `message_stop` | |
//! | — | `ping` | dropped towards OpenAI |
//! | stream: `{"error": {…}}` chunk | `error` event | the stream ends there |
//! | stream ends early (no finish / stop) | | an error event in the client's format |
//!
//! ### Errors
//!
//! `{"error": {"message", "type", "code"}}` ⇄ `{"type": "error", "error":
//! {"type", "message"}}`: the message is kept; the type is mapped
//! (`invalid_request_error`, `authentication_error`, `permission_error`,
//! `not_found_error`, `rate_limit_error` keep their names; Anthropic
//! `request_too_large` → OpenAI `invalid_request_error`; `api_error` ⇄
//! `server_error`; `overloaded_error` ⇄ `service_unavailable`; otherwise from
//! the status), the OpenAI `code` is the Anthropic type. The status is kept,
//! except Anthropic's 529 (overloaded), which OpenAI clients get as 503.
//! A body that is not an error object gets a message naming the status.

mod request;
mod response;
mod stream;

#[cfg(test)]
mod tests;

pub use request::{translate_request, RequestOptions, TranslatedRequest};
pub use response::{client_status, translate_error, translate_response, TranslatedResponse};
pub use stream::StreamTranslator;

/// What the response translators need to know about the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseOptions {
    /// Unix seconds for OpenAI's `created` (Anthropic responses have none).
    pub created: u64,
    /// Report this model to the client instead of the upstream's.
    pub model: Option<String>,
    /// OpenAI client streams: end with the usage-only chunk (the client's
    /// `stream_options.include_usage`, see
    /// [`TranslatedRequest::include_usage`]).
    pub include_usage: bool,
}

use serde_json::{Map, Value};

use crate::core::api::ApiError;

/// 400 for a field with no counterpart whose loss would change the request.
fn unsupported(field: &str, why: &str) -> ApiError {
    ApiError::new(400, "unsupported_field", format!("`{field}` {why}"))
}

/// 400 for a field of the wrong type or shape.
fn invalid(field: &str, why: &str) -> ApiError {
    ApiError::new(400, "invalid_request", format!("`{field}` {why}"))
}

use crate::core::usage::count;

fn str_of<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

fn to_json_string(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
fn finish_reason_of(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
fn stop_reason_of(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Token counts in Anthropic's convention (input excludes the cache).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
}

impl Counts {
    /// Takes every Anthropic count present (they are cumulative).
    fn update_anthropic(&mut self, usage: Option<&Value>) {
        let Some(u) = usage.and_then(Value::as_object) else {
            return;
        };
        if let Some(n) = count(u, "input_tokens") {
            self.input = n;
        }
        if let Some(n) = count(u, "output_tokens") {
            self.output = n;
        }
        if let Some(n) = count(u, "cache_read_input_tokens") {
            self.cache_read = n;
        }
        if let Some(n) = count(u, "cache_creation_input_tokens") {
            self.cache_creation = n;
        }
    }

    /// From an OpenAI usage object (`None` if it is not one).
    fn from_openai(usage: Option<&Value>) -> Option<Counts> {
        let u = usage.and_then(Value::as_object)?;
        // The Responses-style names are accepted too, as `usage.rs` does.
        let prompt = count(u, "prompt_tokens")
            .or_else(|| count(u, "input_tokens"))
            .unwrap_or(0);
        let cached = ["prompt_tokens_details", "input_tokens_details"]
            .iter()
            .find_map(|k| u.get(*k).and_then(Value::as_object))
            .and_then(|d| count(d, "cached_tokens"))
            .unwrap_or(0)
            .min(prompt);
        Some(Counts {
            input: prompt.saturating_sub(cached),
            output: count(u, "completion_tokens")
                .or_else(|| count(u, "output_tokens"))
                .unwrap_or(0),
            cache_read: cached,
            cache_creation: 0,
        })
    }

    fn openai_usage(&self) -> Value {
        let prompt = self
            .input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_creation);
        serde_json::json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt.saturating_add(self.output),
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        })
    }

    fn anthropic_usage(&self) -> Value {
        serde_json::json!({
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.cache_creation,
            "cache_read_input_tokens": self.cache_read,
            "output_tokens": self.output,
        })
    }
}

//! OpenTelemetry GenAI metrics (semantic conventions, `gen_ai.*`), emitted as
//! Envoy stats next to llmgate's own `llmgate.*` metrics, and the same
//! attributes for the audit line. Pure: the facts of a finished exchange in,
//! stats out through a [`MetricsSink`].
//!
//! ## From OpenTelemetry names to Envoy stats to Prometheus series
//!
//! The OpenTelemetry Prometheus exporter turns an instrument into a series
//! name by replacing every character Prometheus does not allow (the dots)
//! with `_` and appending the unit (`s` → `_seconds`, `ms` →
//! `_milliseconds`; a `{annotation}` unit such as `{token}` adds nothing);
//! attribute keys become label names the same way (`gen_ai.request.model` →
//! `gen_ai_request_model`, `error.type` → `error_type`); counters get
//! `_total`. We build the Envoy stat name so that Envoy's `/stats/prometheus`
//! prints exactly that:
//!
//! ```text
//! gen_ai.server.request.duration_milliseconds.gen_ai_operation_name.chat
//!     .gen_ai_provider_name.openai.gen_ai_request_model.gpt-4o
//!     .gen_ai_response_model.gpt-4o.error_type.503
//! ```
//!
//! (one stat name, wrapped here). The bootstrap's `stats_tags` (see
//! `envoy/envoy.yaml.tmpl`) take each `.<label>.<value>` pair out as a tag,
//! and Envoy prints what is left with `_` for `.`:
//! `gen_ai_server_request_duration_milliseconds_bucket{gen_ai_operation_name="chat",…}`.
//!
//! **The one deviation:** the conventions measure durations in seconds
//! (`s`), but proxy-wasm histograms take integers. The three durations are
//! recorded in milliseconds, i.e. as instruments with unit `ms`, which the
//! OpenTelemetry exporter names `…_milliseconds`; their bucket boundaries are
//! the conventions' advisory boundaries × 1000. Divide by 1000 for seconds.
//!
//! ## Label values are bounded
//!
//! Model names go through the same bounded labelling as llmgate's `model`
//! label (names the configuration knows, else `other`, capped per VM): the
//! caller passes that function. `gen_ai.provider.name` is `openai` or
//! `anthropic`, `gen_ai.operation.name` is always `chat`, and `error.type`
//! comes from the closed set documented at [`error_type`].

use serde::Serialize;

use crate::core::api::Api;
use crate::core::audit::label;
use crate::core::host::MetricsSink;
use crate::core::usage::Usage;

/// `gen_ai.client.token.usage` (unit `{token}`: no suffix).
pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
/// `gen_ai.server.request.duration`, in milliseconds (see the module docs).
pub const REQUEST_DURATION: &str = "gen_ai.server.request.duration_milliseconds";
/// `gen_ai.server.time_to_first_token`, in milliseconds.
pub const TIME_TO_FIRST_TOKEN: &str = "gen_ai.server.time_to_first_token_milliseconds";
/// `gen_ai.server.time_per_output_token`, in milliseconds.
pub const TIME_PER_OUTPUT_TOKEN: &str = "gen_ai.server.time_per_output_token_milliseconds";

/// `gen_ai.operation.name`: both LLM routes are chat completions.
pub const OPERATION_CHAT: &str = "chat";

/// `error.type` when no better identifier applies (the conventions' value).
pub const ERROR_OTHER: &str = "_OTHER";

/// Upstream status codes reported as themselves in `error.type`; any other
/// failure status is [`ERROR_OTHER`].
const KNOWN_STATUSES: [u32; 14] = [
    400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504, 529,
];

/// Reasons that mark a response llmgate turned into an error although the
/// upstream answered (response filtering).
const RESPONSE_ERRORS: [&str; 2] = ["response_blocked", "response_unfilterable"];

/// What [`emit`] needs to know about a finished exchange.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    /// The upstream's API (`gen_ai.provider.name`).
    pub provider: Option<Api>,
    /// The model the client asked for.
    pub request_model: Option<&'a str>,
    /// The model that answered (from the response, else the one sent).
    pub response_model: Option<&'a str>,
    pub stream: bool,
    /// HTTP status the client got.
    pub status: u32,
    /// The response reached its end.
    pub completed: bool,
    /// llmgate answered itself (an error, or a cache hit).
    pub replied: bool,
    pub cache_hit: bool,
    /// The client went away before the end.
    pub client_aborted: bool,
    /// llmgate's error code or reason (`ApiError::code` for its own replies).
    pub reason: Option<&'a str>,
    pub usage: Option<&'a Usage>,
    pub start_ms: u64,
    /// First content event of a stream.
    pub first_token_ms: Option<u64>,
    /// First byte of the response body.
    pub first_byte_ms: Option<u64>,
    pub end_ms: u64,
}

/// The same attributes for the audit line (`otel` object), with their
/// OpenTelemetry names. Model names here are the real ones (the audit line is
/// not a metric label), the rest as in the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Attributes {
    #[serde(rename = "gen_ai.operation.name")]
    pub operation_name: &'static str,
    #[serde(rename = "gen_ai.provider.name")]
    pub provider_name: &'static str,
    #[serde(
        rename = "gen_ai.request.model",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_model: Option<String>,
    #[serde(
        rename = "gen_ai.response.model",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_model: Option<String>,
    #[serde(rename = "gen_ai.request.stream")]
    pub stream: bool,
    #[serde(
        rename = "gen_ai.usage.input_tokens",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_tokens: Option<u64>,
    #[serde(
        rename = "gen_ai.usage.output_tokens",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_tokens: Option<u64>,
    #[serde(rename = "error.type", skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
}

/// `error.type` of an exchange, `None` when it succeeded. The closed set:
/// - llmgate's own error code when it answered with an error (for example
///   `rate_limit_exceeded`, `model_not_allowed`, `prompt_injection_detected`,
///   `invalid_api_key`: the `code` of its error bodies, static strings in the
///   filter) and `response_blocked` / `response_unfilterable` (response
///   filtering ended an answered response);
/// - `client_closed` (the client went away first), `incomplete` (the
///   upstream reset or never answered);
/// - the upstream's status code (`429`, `500`, `503`, … from a fixed list),
///   else `_OTHER`.
pub fn error_type(f: &Facts) -> Option<String> {
    if f.cache_hit {
        return None;
    }
    let code = f
        .reason
        .filter(|r| (f.replied && f.status >= 400) || RESPONSE_ERRORS.contains(r));
    if let Some(code) = code {
        return Some(code_label(code));
    }
    if f.replied {
        // An llmgate reply without an error code: nothing failed.
        return (f.status >= 400).then(|| ERROR_OTHER.to_string());
    }
    if !f.completed {
        return Some(
            if f.client_aborted {
                "client_closed"
            } else {
                "incomplete"
            }
            .to_string(),
        );
    }
    if f.status >= 400 || f.status == 0 {
        return Some(if KNOWN_STATUSES.contains(&f.status) {
            f.status.to_string()
        } else {
            ERROR_OTHER.to_string()
        });
    }
    None
}

/// An error code as a label value: codes are `[a-z0-9_]` identifiers;
/// anything else (which llmgate never produces) is `_OTHER`.
fn code_label(code: &str) -> String {
    let ok = !code.is_empty()
        && code.len() <= 48
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        label(code)
    } else {
        ERROR_OTHER.to_string()
    }
}

/// Emits the GenAI metrics of one finished exchange through `m` and returns
/// the attributes for the audit line. `model_label` maps a model name to its
/// bounded label value (the filter's `Exchange::model_label`).
///
/// - `gen_ai.client.token.usage` (`gen_ai.token.type` `input`/`output`):
///   whenever the upstream reported usage; not for cache hits (no provider
///   tokens were used, and the conventions count billable tokens).
/// - `gen_ai.server.request.duration`: every LLM request, including the ones
///   llmgate answered itself (with their `error.type`) and cache hits.
/// - `gen_ai.server.time_to_first_token`: successful upstream responses;
///   the first content event of a stream, the first body byte otherwise.
/// - `gen_ai.server.time_per_output_token`: successful streamed responses
///   with at least two output tokens: (end − first token) / (output − 1).
pub fn emit(f: &Facts, model_label: &dyn Fn(&str) -> String, m: &dyn MetricsSink) -> Attributes {
    let provider = f.provider.map(Api::as_str).unwrap_or("_OTHER");
    let error = error_type(f);
    // llmgate's own error replies never reached a model.
    let response_model = f.response_model.filter(|_| !f.replied || f.cache_hit);

    let mut base = format!(
        "gen_ai_operation_name.{OPERATION_CHAT}.gen_ai_provider_name.{}",
        label(provider)
    );
    if let Some(rm) = f.request_model {
        base.push_str(".gen_ai_request_model.");
        base.push_str(&model_label(rm));
    }
    if let Some(rm) = response_model {
        base.push_str(".gen_ai_response_model.");
        base.push_str(&model_label(rm));
    }

    let mut duration = format!("{REQUEST_DURATION}.{base}");
    if let Some(e) = &error {
        duration.push_str(".error_type.");
        duration.push_str(e);
    }
    m.histogram(&duration, f.end_ms.saturating_sub(f.start_ms));

    if let Some(u) = f.usage.filter(|_| !f.cache_hit) {
        m.histogram(
            &format!("{TOKEN_USAGE}.{base}.gen_ai_token_type.input"),
            u.input_tokens,
        );
        m.histogram(
            &format!("{TOKEN_USAGE}.{base}.gen_ai_token_type.output"),
            u.output_tokens,
        );
    }

    if error.is_none() && !f.replied {
        if let Some(first) = f.first_token_ms.or(f.first_byte_ms) {
            m.histogram(
                &format!("{TIME_TO_FIRST_TOKEN}.{base}"),
                first.saturating_sub(f.start_ms),
            );
        }
        if let (Some(first), Some(u)) = (f.first_token_ms, f.usage) {
            if u.output_tokens > 1 {
                let n = u.output_tokens - 1;
                let decode = f.end_ms.saturating_sub(first);
                // Rounded to the nearest millisecond.
                let per_token = decode.saturating_add(n / 2) / n;
                m.histogram(&format!("{TIME_PER_OUTPUT_TOKEN}.{base}"), per_token);
            }
        }
    }

    Attributes {
        operation_name: OPERATION_CHAT,
        provider_name: provider,
        request_model: f.request_model.map(str::to_string),
        response_model: response_model.map(str::to_string),
        stream: f.stream,
        input_tokens: f.usage.map(|u| u.input_tokens),
        output_tokens: f.usage.map(|u| u.output_tokens),
        error_type: error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::host::FakeMetrics;

    fn bounded(m: &str) -> String {
        if m.starts_with("gpt-4o") {
            "gpt-4o".to_string()
        } else if m.starts_with("claude") {
            label(m)
        } else {
            "other".to_string()
        }
    }

    fn ok_stream() -> Facts<'static> {
        static USAGE: Usage = Usage {
            input_tokens: 12,
            output_tokens: 11,
            cache_read_tokens: 0,
            cache_creation_tokens: 0,
        };
        Facts {
            provider: Some(Api::OpenAi),
            request_model: Some("gpt-4o"),
            response_model: Some("gpt-4o-2024-08-06"),
            stream: true,
            status: 200,
            completed: true,
            usage: Some(&USAGE),
            start_ms: 1_000,
            first_byte_ms: Some(1_100),
            first_token_ms: Some(1_150),
            end_ms: 1_250,
            ..Default::default()
        }
    }

    fn hist(m: &FakeMetrics) -> Vec<(String, u64)> {
        let mut v = m.histograms.borrow().clone();
        v.sort();
        v
    }

    #[test]
    fn a_streamed_success_records_all_four() {
        let m = FakeMetrics::default();
        let a = emit(&ok_stream(), &bounded, &m);
        let base = "gen_ai_operation_name.chat.gen_ai_provider_name.openai.gen_ai_request_model.gpt-4o.gen_ai_response_model.gpt-4o";
        assert_eq!(
            hist(&m),
            vec![
                (
                    format!("gen_ai.client.token.usage.{base}.gen_ai_token_type.input"),
                    12
                ),
                (
                    format!("gen_ai.client.token.usage.{base}.gen_ai_token_type.output"),
                    11
                ),
                (
                    format!("gen_ai.server.request.duration_milliseconds.{base}"),
                    250
                ),
                (
                    format!("gen_ai.server.time_per_output_token_milliseconds.{base}"),
                    10
                ),
                (
                    format!("gen_ai.server.time_to_first_token_milliseconds.{base}"),
                    150
                ),
            ]
        );
        assert!(m.counters.borrow().is_empty());
        let j = serde_json::to_value(&a).unwrap();
        assert_eq!(
            j,
            serde_json::json!({
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.request.stream": true,
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.usage.output_tokens": 11
            })
        );
    }

    #[test]
    fn non_streamed_success_has_ttft_from_first_byte_and_no_tpot() {
        let m = FakeMetrics::default();
        let f = Facts {
            stream: false,
            first_token_ms: None,
            provider: Some(Api::Anthropic),
            request_model: Some("claude-3.5-haiku"),
            response_model: Some("claude-3.5-haiku"),
            ..ok_stream()
        };
        emit(&f, &bounded, &m);
        let names: Vec<String> = hist(&m).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 4);
        assert!(names.iter().all(|n| !n.contains("time_per_output_token")));
        assert!(names.iter().all(|n| n.contains(
            "gen_ai_provider_name.anthropic.gen_ai_request_model.claude-3_5-haiku.gen_ai_response_model.claude-3_5-haiku"
        )));
        let ttft = hist(&m)
            .into_iter()
            .find(|(n, _)| n.contains("time_to_first_token"))
            .unwrap();
        assert_eq!(ttft.1, 100);
    }

    #[test]
    fn an_llmgate_refusal_has_its_code_and_only_a_duration() {
        let m = FakeMetrics::default();
        let f = Facts {
            provider: Some(Api::OpenAi),
            request_model: Some("whatever-client-sent"),
            response_model: Some("gpt-4o"),
            status: 429,
            completed: true,
            replied: true,
            reason: Some("rate_limit_exceeded"),
            start_ms: 5,
            end_ms: 7,
            ..Default::default()
        };
        let a = emit(&f, &bounded, &m);
        assert_eq!(
            hist(&m),
            vec![(
                "gen_ai.server.request.duration_milliseconds.gen_ai_operation_name.chat.gen_ai_provider_name.openai.gen_ai_request_model.other.error_type.rate_limit_exceeded".to_string(),
                2
            )]
        );
        assert_eq!(a.error_type.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(a.response_model, None);
        assert_eq!(a.request_model.as_deref(), Some("whatever-client-sent"));
    }

    #[test]
    fn a_refusal_before_the_body_has_no_model_label() {
        let m = FakeMetrics::default();
        let f = Facts {
            provider: Some(Api::Anthropic),
            status: 401,
            completed: true,
            replied: true,
            reason: Some("invalid_api_key"),
            ..Default::default()
        };
        emit(&f, &bounded, &m);
        assert_eq!(
            hist(&m)[0].0,
            "gen_ai.server.request.duration_milliseconds.gen_ai_operation_name.chat.gen_ai_provider_name.anthropic.error_type.invalid_api_key"
        );
    }

    #[test]
    fn a_cache_hit_is_a_success_without_tokens_or_ttft() {
        let m = FakeMetrics::default();
        let f = Facts {
            replied: true,
            cache_hit: true,
            reason: None,
            ..ok_stream()
        };
        let a = emit(&f, &bounded, &m);
        let h = hist(&m);
        assert_eq!(h.len(), 1);
        assert!(h[0].0.ends_with("gen_ai_response_model.gpt-4o"));
        assert_eq!(a.error_type, None);
        assert_eq!(a.response_model.as_deref(), Some("gpt-4o-2024-08-06"));
    }

    #[test]
    fn upstream_failures_map_to_a_closed_set() {
        let base = Facts {
            provider: Some(Api::OpenAi),
            completed: true,
            ..Default::default()
        };
        let et = |f: Facts| error_type(&f);
        assert_eq!(
            et(Facts {
                status: 503,
                ..base
            })
            .as_deref(),
            Some("503")
        );
        assert_eq!(
            et(Facts {
                status: 429,
                ..base
            })
            .as_deref(),
            Some("429")
        );
        assert_eq!(
            et(Facts {
                status: 418,
                ..base
            })
            .as_deref(),
            Some("_OTHER")
        );
        assert_eq!(et(Facts { status: 0, ..base }).as_deref(), Some("_OTHER"));
        assert_eq!(
            et(Facts {
                status: 200,
                ..base
            }),
            None
        );
        assert_eq!(
            et(Facts {
                status: 302,
                ..base
            }),
            None
        );
        assert_eq!(
            et(Facts {
                status: 200,
                completed: false,
                ..base
            })
            .as_deref(),
            Some("incomplete")
        );
        assert_eq!(
            et(Facts {
                status: 200,
                completed: false,
                client_aborted: true,
                ..base
            })
            .as_deref(),
            Some("client_closed")
        );
        // A routing rule's name in `reason` is not an error.
        assert_eq!(
            et(Facts {
                status: 200,
                reason: Some("model_routing:cheap"),
                ..base
            }),
            None
        );
        assert_eq!(
            et(Facts {
                status: 502,
                reason: Some("response_blocked"),
                ..base
            })
            .as_deref(),
            Some("response_blocked")
        );
        assert_eq!(
            et(Facts {
                status: 200,
                reason: Some("response_unfilterable"),
                ..base
            })
            .as_deref(),
            Some("response_unfilterable")
        );
        // llmgate replies: their code, never a raw string.
        let reply = Facts {
            replied: true,
            status: 400,
            ..base
        };
        assert_eq!(
            et(Facts {
                reason: Some("invalid_request"),
                ..reply
            })
            .as_deref(),
            Some("invalid_request")
        );
        assert_eq!(
            et(Facts {
                reason: Some("A.B c"),
                ..reply
            })
            .as_deref(),
            Some("_OTHER")
        );
        assert_eq!(
            et(Facts {
                reason: None,
                ..reply
            })
            .as_deref(),
            Some("_OTHER")
        );
    }

    #[test]
    fn failures_record_no_ttft_or_tpot_and_labels_stay_segments() {
        let m = FakeMetrics::default();
        let f = Facts {
            status: 503,
            request_model: Some("evil.model.name.error_type.x"),
            response_model: Some("a.b"),
            ..ok_stream()
        };
        emit(&f, &bounded, &m);
        for (name, _) in hist(&m) {
            assert!(!name.contains("time_to_first_token"));
            assert!(!name.contains("time_per_output_token"));
            assert!(name.contains("gen_ai_request_model.other.gen_ai_response_model.other"));
        }
    }

    #[test]
    fn odd_inputs_never_panic() {
        let m = FakeMetrics::default();
        let u = Usage {
            input_tokens: u64::MAX,
            output_tokens: u64::MAX,
            ..Default::default()
        };
        let f = Facts {
            usage: Some(&u),
            start_ms: u64::MAX,
            end_ms: 0,
            first_token_ms: Some(u64::MAX),
            first_byte_ms: Some(0),
            provider: None,
            ..ok_stream()
        };
        let a = emit(&f, &bounded, &m);
        assert_eq!(a.provider_name, "_OTHER");
        let f = Facts {
            usage: Some(&u),
            start_ms: 0,
            end_ms: u64::MAX,
            first_token_ms: Some(0),
            ..ok_stream()
        };
        emit(&f, &bounded, &m);
    }
}

//! The audit record (one JSON line per LLM request, written by Envoy's access
//! log from filter state) and the metric names.
//!
//! Privacy: the record never holds prompt or completion text, nor the key;
//! only ids, counts, categories and timings.

use serde::Serialize;

/// One audit line. Field meanings are documented in README.md.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditRecord {
    pub time: String,
    pub request_id: String,
    pub key_id: Option<String>,
    pub tenant: Option<String>,
    pub user: Option<String>,
    pub api: &'static str,
    pub model: Option<String>,
    pub served_model: Option<String>,
    pub upstream: Option<String>,
    /// The upstream's API when it differs from the client's (translated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_api: Option<&'static str>,
    pub cache: &'static str,
    pub stream: bool,
    pub status: u32,
    /// `allowed`, `blocked` (llmgate answered itself) or `failed` (upstream
    /// error or reset).
    pub decision: &'static str,
    pub reason: Option<String>,
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
    pub cost_usd: Option<f64>,
    /// Tokens of the semantic cache's embedding call (counted to the key;
    /// its cost is in `cost_usd`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_tokens: Option<u64>,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub prompt_id: Option<String>,
    pub prompt_version: Option<String>,
    pub prompt_variant: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flagged: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
    /// Entity types found in the response by response filtering.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_redacted: Vec<String>,
    /// The response reached its end (false after a reset or client abort).
    pub completed: bool,
    /// The OpenTelemetry GenAI attributes of the request (`gen_ai.*`,
    /// `error.type`), see [`crate::core::otel::Attributes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otel: Option<crate::core::otel::Attributes>,
    /// Prompt and completion text, only with `audit.include_text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_text: Option<String>,
}

impl AuditRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// RFC 3339 UTC timestamp with milliseconds from Unix milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let millis = ms % 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Makes a value safe as one segment of a dotted stat name, and so as a
/// Prometheus label value: anything but `[A-Za-z0-9_-]` (dots included)
/// becomes `_`; at most 64 characters.
pub fn label(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_798_761_599_000), "2026-12-31T23:59:59.000Z");
        let _ = rfc3339_ms(u64::MAX);
    }

    #[test]
    fn labels() {
        assert_eq!(label("claude-3.5-sonnet"), "claude-3_5-sonnet");
        assert_eq!(label(""), "none");
        assert_eq!(label(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn record_has_no_text_by_default() {
        let r = AuditRecord {
            api: "openai",
            ..Default::default()
        };
        let j: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert!(j.get("prompt_text").is_none());
        assert_eq!(j["api"], "openai");
    }
}

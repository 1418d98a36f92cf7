//! The `fleet` block of the plugin configuration.

use serde::{Deserialize, Serialize};

use crate::core::error::ConfigError;

/// Largest integer a Lua number (a double) holds exactly: every amount sent
/// to the Redis scripts is clamped to it.
pub const MAX_LUA_INT: u64 = (1 << 53) - 1;
const MICROS_PER_USD: f64 = 1_000_000.0;

/// What a sidecar does for a fleet limit while Redis (or webdis, or the
/// `redis_proxy`) fails and its lease cannot cover a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FleetFailureMode {
    /// Admit up to a local share of the limit (`limit × local_share`) per
    /// window in this Envoy, then refuse with 429. The default.
    #[default]
    Local,
    /// Admit without a lease. What was admitted is still reported to the
    /// fleet when Redis is back.
    Open,
    /// Refuse with 503.
    Closed,
}

impl FleetFailureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FleetFailureMode::Local => "local",
            FleetFailureMode::Open => "open",
            FleetFailureMode::Closed => "closed",
        }
    }
}

/// Lease chunk sizes: what a sidecar asks the fleet for at a time, per kind
/// of limit. Near the limit the ask shrinks to `min(chunk, remaining / 4)`
/// (never below what the waiting request needs).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseSizes {
    /// Tokens per lease (for `tokens_per_minute`, `tokens_per_day`).
    pub tokens: u64,
    /// US dollars per lease (for `usd_per_day`, `usd_per_month`); kept in
    /// micro-USD.
    pub usd: f64,
    /// Requests per lease (for `requests_per_minute`).
    pub requests: u64,
}

impl Default for LeaseSizes {
    fn default() -> Self {
        Self {
            tokens: 20_000,
            usd: 0.5,
            requests: 50,
        }
    }
}

/// The `fleet` block: how fleet-scoped limits are shared by every sidecar
/// through a Redis Cluster reached over webdis.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Envoy cluster of the webdis that fronts the Redis Cluster (through
    /// Envoy's `redis_proxy`). Lease callouts go there.
    pub cluster: String,
    /// `:authority` of the lease callouts.
    pub authority: String,
    /// Prefix of the Redis keys: `{<key_prefix>:<scope>}:<limit>:<window>`
    /// (the braces are the Redis Cluster hashtag: all of a scope's keys live
    /// in one slot). Letters, digits, `:`, `_`, `-` only.
    pub key_prefix: String,
    /// Lease chunk sizes.
    pub lease: LeaseSizes,
    /// Unused lease held this long (seconds) without an admission is given
    /// back to the fleet by the root tick.
    pub idle_return_s: u64,
    /// Lifetime (seconds) of a lease in Redis without an exchange: a sidecar
    /// that dies loses its lease after this and the capacity returns to the
    /// fleet. A live sidecar renews it (on its tick) after a third of it.
    pub lease_ttl_s: u64,
    /// Timeout (milliseconds) of one lease callout; requests waiting on it
    /// wait at most this long (plus the tick period).
    pub timeout_ms: u64,
    /// `local` (default), `open` or `closed`: see [`FleetFailureMode`].
    pub failure_mode: FleetFailureMode,
    /// Share of a fleet limit one Envoy may admit per window under the
    /// `local` failure mode (0..=1).
    pub local_share: f64,
    /// After a failed lease callout, no new callout for that scope for this
    /// long (milliseconds); requests its lease cannot cover meanwhile follow
    /// `failure_mode`.
    pub failure_backoff_ms: u64,
    /// When the fleet could not cover a request, the next lease callout for
    /// that scope waits this long (milliseconds, at least 50); requests
    /// meanwhile get 429 (so a request woken by the exchange that could not
    /// cover it is refused, not sent to Redis again).
    pub exhausted_recheck_ms: u64,
    /// Compare-and-swap attempts per shared-data update (after the first).
    pub cas_retries: u32,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            cluster: "fleet_webdis".to_string(),
            authority: "webdis".to_string(),
            key_prefix: "llmgate:fleet".to_string(),
            lease: LeaseSizes::default(),
            idle_return_s: 10,
            lease_ttl_s: 30,
            timeout_ms: 250,
            failure_mode: FleetFailureMode::Local,
            local_share: 0.1,
            failure_backoff_ms: 1000,
            exhausted_recheck_ms: 1000,
            cas_retries: 16,
        }
    }
}

/// The validated `fleet` block. Dollars in micro-USD, times in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledFleet {
    pub cluster: String,
    pub authority: String,
    pub key_prefix: String,
    pub chunk_tokens: u64,
    pub chunk_micro_usd: u64,
    pub chunk_requests: u64,
    pub idle_return_ms: u64,
    pub lease_ttl_ms: u64,
    pub timeout_ms: u64,
    pub failure_mode: FleetFailureMode,
    /// `local_share` in parts per million.
    pub local_share_ppm: u64,
    pub failure_backoff_ms: u64,
    pub exhausted_recheck_ms: u64,
    pub cas_retries: u32,
}

impl Default for CompiledFleet {
    fn default() -> Self {
        // The defaults are valid.
        FleetConfig::default()
            .compile()
            .unwrap_or_else(|_| CompiledFleet {
                cluster: String::new(),
                authority: String::new(),
                key_prefix: String::new(),
                chunk_tokens: 1,
                chunk_micro_usd: 1,
                chunk_requests: 1,
                idle_return_ms: 1,
                lease_ttl_ms: 2000,
                timeout_ms: 1,
                failure_mode: FleetFailureMode::Closed,
                local_share_ppm: 0,
                failure_backoff_ms: 0,
                exhausted_recheck_ms: 0,
                cas_retries: 0,
            })
    }
}

fn check_name(field: &str, v: &str, allow_dot: bool) -> Result<(), ConfigError> {
    if v.is_empty() {
        return Err(ConfigError::new(field, "must not be empty"));
    }
    if v.len() > 128 {
        return Err(ConfigError::new(field, "is longer than 128 characters"));
    }
    let ok = v.bytes().all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-') || (allow_dot && b == b'.')
    });
    if !ok {
        let allowed = if allow_dot {
            "letters, digits, ':', '_', '-', '.'"
        } else {
            "letters, digits, ':', '_', '-'"
        };
        return Err(ConfigError::new(field, format!("may hold only {allowed}")));
    }
    Ok(())
}

fn check_range(field: &str, v: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if v < min || v > max {
        return Err(ConfigError::new(
            field,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(v)
}

impl FleetConfig {
    /// Validates and compiles. Errors name the field (`lease.tokens`, …).
    pub fn compile(&self) -> Result<CompiledFleet, ConfigError> {
        // Any Envoy cluster name (Istio's are `outbound|PORT||HOST`).
        if self.cluster.is_empty()
            || self.cluster.len() > 255
            || self.cluster.chars().any(|c| c.is_control() || c == ' ')
        {
            return Err(ConfigError::new(
                "cluster",
                "must be an Envoy cluster name (1-255 characters, no spaces)",
            ));
        }
        check_name("authority", &self.authority, true)?;
        check_name("key_prefix", &self.key_prefix, false)?;
        let chunk_tokens = check_range("lease.tokens", self.lease.tokens, 1, MAX_LUA_INT)?;
        let chunk_requests = check_range("lease.requests", self.lease.requests, 1, MAX_LUA_INT)?;
        let usd = self.lease.usd;
        if !usd.is_finite() || usd <= 0.0 {
            return Err(ConfigError::new("lease.usd", "must be a number > 0"));
        }
        if usd > 1.0e9 {
            return Err(ConfigError::new("lease.usd", "is too large"));
        }
        // In (0, 1e15]: the cast cannot saturate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let chunk_micro_usd = ((usd * MICROS_PER_USD).round() as u64).max(1);
        let idle_s = check_range("idle_return_s", self.idle_return_s, 1, 86_400)?;
        let ttl_s = check_range("lease_ttl_s", self.lease_ttl_s, 3, 86_400)?;
        let timeout_ms = check_range("timeout_ms", self.timeout_ms, 1, 10_000)?;
        let ttl_ms = ttl_s.saturating_mul(1000);
        // A lease is renewed after a third of its life; the renewal (and the
        // request it may hold) must fit well inside it.
        if timeout_ms.saturating_mul(3) >= ttl_ms {
            return Err(ConfigError::new(
                "timeout_ms",
                "must be less than a third of lease_ttl_s",
            ));
        }
        let share = self.local_share;
        if !share.is_finite() || !(0.0..=1.0).contains(&share) {
            return Err(ConfigError::new(
                "local_share",
                "must be a number between 0 and 1",
            ));
        }
        // In [0, 1e6]: the cast cannot saturate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let local_share_ppm = (share * 1_000_000.0).round() as u64;
        let failure_backoff_ms =
            check_range("failure_backoff_ms", self.failure_backoff_ms, 0, 600_000)?;
        let exhausted_recheck_ms = check_range(
            "exhausted_recheck_ms",
            self.exhausted_recheck_ms,
            0,
            600_000,
        )?;
        if self.cas_retries > 1000 {
            return Err(ConfigError::new("cas_retries", "must be at most 1000"));
        }
        Ok(CompiledFleet {
            cluster: self.cluster.clone(),
            authority: self.authority.clone(),
            key_prefix: self.key_prefix.clone(),
            chunk_tokens,
            chunk_micro_usd,
            chunk_requests,
            idle_return_ms: idle_s.saturating_mul(1000),
            lease_ttl_ms: ttl_ms,
            timeout_ms,
            failure_mode: self.failure_mode,
            local_share_ppm,
            failure_backoff_ms,
            exhausted_recheck_ms,
            cas_retries: self.cas_retries,
        })
    }
}

impl CompiledFleet {
    /// `limit × local_share`, rounded down.
    pub fn local_share_of(&self, limit: u64) -> u64 {
        let v = u128::from(limit).saturating_mul(u128::from(self.local_share_ppm)) / 1_000_000;
        u64::try_from(v).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(json: &str) -> Result<CompiledFleet, ConfigError> {
        let c: FleetConfig =
            serde_json::from_str(json).map_err(|e| ConfigError::new("", e.to_string()))?;
        c.compile()
    }

    #[test]
    fn fleet_config_defaults_compile() {
        let c = compile("{}").unwrap();
        assert_eq!(c.chunk_micro_usd, 500_000);
        assert_eq!(c.lease_ttl_ms, 30_000);
        assert_eq!(c.failure_mode, FleetFailureMode::Local);
        assert_eq!(c.local_share_of(1000), 100);
        assert_eq!(CompiledFleet::default(), c);
    }

    #[test]
    fn fleet_config_errors_name_the_field() {
        let cases = [
            (r#"{"cluster": ""}"#, "cluster"),
            (r#"{"key_prefix": "a{b}"}"#, "key_prefix"),
            (r#"{"key_prefix": "a.b"}"#, "key_prefix"),
            (r#"{"lease": {"tokens": 0}}"#, "lease.tokens"),
            (r#"{"lease": {"requests": 0}}"#, "lease.requests"),
            (r#"{"lease": {"usd": 0}}"#, "lease.usd"),
            (r#"{"lease": {"usd": -1}}"#, "lease.usd"),
            (r#"{"lease": {"usd": 1e300}}"#, "lease.usd"),
            (r#"{"idle_return_s": 0}"#, "idle_return_s"),
            (r#"{"lease_ttl_s": 1}"#, "lease_ttl_s"),
            (r#"{"timeout_ms": 0}"#, "timeout_ms"),
            (r#"{"timeout_ms": 5000, "lease_ttl_s": 10}"#, "timeout_ms"),
            (r#"{"local_share": 1.5}"#, "local_share"),
            (r#"{"local_share": -0.1}"#, "local_share"),
            (r#"{"failure_backoff_ms": 700000}"#, "failure_backoff_ms"),
            (
                r#"{"exhausted_recheck_ms": 700000}"#,
                "exhausted_recheck_ms",
            ),
            (r#"{"cas_retries": 5000}"#, "cas_retries"),
        ];
        for (json, field) in cases {
            let e = compile(json).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
        }
        // Unknown fields and bad enum values are refused by serde.
        assert!(serde_json::from_str::<FleetConfig>(r#"{"clusterr": "x"}"#).is_err());
        assert!(serde_json::from_str::<FleetConfig>(r#"{"lease": {"token": 1}}"#).is_err());
        assert!(serde_json::from_str::<FleetConfig>(r#"{"failure_mode": "maybe"}"#).is_err());
        let c = compile(
            r#"{"failure_mode": "closed", "local_share": 0.25, "lease": {"usd": 0.000001}}"#,
        )
        .unwrap();
        assert_eq!(c.failure_mode, FleetFailureMode::Closed);
        assert_eq!(c.local_share_of(u64::MAX), u64::MAX / 4);
        assert_eq!(c.chunk_micro_usd, 1);
    }
}

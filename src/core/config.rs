//! Plugin configuration: JSON in, validated and compiled once at plugin start.

pub use crate::core::error::ConfigError;

use crate::core::breaker::{Breaker, BreakerConfig};
use crate::core::budget::{BudgetOptions, Budgets, CompiledLimits, FailureMode, LimitsConfig};
use crate::core::cache::{CacheConfig, CompiledCache};
use crate::core::cost::{PriceTable, PricingConfig};
use crate::core::guard::{Guard, GuardConfig};
use crate::core::keys::{KeyConfig, KeyTable};
use crate::core::labels::Labels;
use crate::core::prompts::{PromptConfig, Prompts};
use crate::core::respfilter::{ResponseFilter, ResponseFilterConfig};
use crate::core::routing::{
    compile_rules, compile_upstreams, rules_need_text, ModelRule, ModelRuleConfig, Upstream,
    UpstreamConfig,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// Default cap on a buffered request body: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Hard upper bound for `max_body_bytes`: 64 MiB.
pub const MAX_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// The plugin configuration as written by users (JSON). Every struct rejects
/// unknown fields; [`Config::compile`] checks values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Largest request body llmgate buffers; larger bodies get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Virtual keys.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// How callers are identified.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Provider credentials injected upstream, per API.
    #[serde(default)]
    pub credentials: CredentialsConfig,
    /// Price overrides and additions (USD per million tokens).
    #[serde(default)]
    pub pricing: PricingConfig,
    /// Limits per tenant, by tenant name.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// How budgets are enforced.
    #[serde(default)]
    pub budgets: BudgetsConfig,
    /// The upstream chain: primary first, then fallbacks.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Circuit breaker per upstream (absent: no breaker).
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
    /// Cheap-model rules, first match wins.
    #[serde(default)]
    pub model_routing: Vec<ModelRuleConfig>,
    /// Response cache in Redis through webdis.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Server-side prompt templates by id.
    #[serde(default)]
    pub prompts: BTreeMap<String, PromptConfig>,
    /// Request guard: limits, injection detection, PII and secrets.
    #[serde(default)]
    pub guard: GuardConfig,
    /// Response filtering: PII and secrets in completions.
    #[serde(default)]
    pub response_filter: ResponseFilterConfig,
    /// Request bodies with a `content-encoding` (gzip, …): `reject` (400,
    /// default) or `pass` (forwarded unparsed: no guard, cache or budgets
    /// by tokens — only authentication and the request count).
    #[serde(default)]
    pub encoded_body: EncodedBody,
    /// Requests to paths llmgate does not process: `deny` (default: 404 in
    /// the OpenAI error shape, nothing reaches the upstream),
    /// `authenticated` (a valid virtual key is required, the provider
    /// credential is injected, the request counts against the key's request
    /// limits) or `pass` (forwarded untouched).
    #[serde(default)]
    pub other_paths: OtherPaths,
    /// Forward the end-user id (`x-llmgate-user`) to the upstream. Default
    /// false: every `x-llmgate-*` request header is removed.
    #[serde(default)]
    pub forward_user_header: bool,
    /// Metric label bounds.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Optional response headers.
    #[serde(default)]
    pub response_headers: ResponseHeadersConfig,
    /// Fleet mode: limits with `"scope": "fleet"` are shared by every Envoy
    /// through a Redis Cluster (leased budget slices; README "Fleet mode").
    #[serde(default)]
    pub fleet: Option<crate::core::fleet::FleetConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseHeadersConfig {
    /// `x-llmgate-tokens-in`, `x-llmgate-tokens-out` and `x-llmgate-cost-usd`
    /// on non-streamed responses. They come from the body, so llmgate must
    /// hold the response headers until the body is complete: off by default
    /// (measured cost in the README's benchmark).
    pub usage: bool,
}

/// Policy for paths other than the two LLM routes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OtherPaths {
    #[default]
    Deny,
    Authenticated,
    Pass,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Distinct values per request-derived label (model, prompt) per VM;
    /// further values are reported as `other`.
    pub max_label_values: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            max_label_values: crate::core::labels::DEFAULT_MAX_LABEL_VALUES,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EncodedBody {
    #[default]
    Reject,
    Pass,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    #[serde(default)]
    pub limits: LimitsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetsConfig {
    /// `open` (admit when shared data fails; counted in
    /// `llmgate_dependency_failures_total{dependency="shared_data"}`) or
    /// `closed` (answer 503).
    pub failure_mode: FailureMode,
    /// Output tokens reserved when a request sets no `max_tokens`.
    pub default_max_tokens: u64,
    /// Compare-and-swap attempts per shared-data update.
    pub cas_retries: u32,
    /// Distinct end users (`x-llmgate-user`) tracked per key with
    /// `user_limits`; a request from a further user is refused (429
    /// `too_many_users`) until a tracked user's windows expire.
    pub max_users_per_key: u32,
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        Self {
            failure_mode: FailureMode::Open,
            default_max_tokens: 256,
            cas_retries: 16,
            max_users_per_key: 1000,
        }
    }
}

/// How llmgate identifies the caller.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `keys` (default): virtual keys in `Authorization: Bearer` or
    /// `x-api-key`. `trusted_header`: the key id is taken from
    /// `identity_header`, set by an earlier Envoy filter (jwt_authn,
    /// ext_authz). `none`: no authentication (every request is key `anonymous`).
    #[serde(default)]
    pub mode: AuthMode,
    /// Header carrying the key id in `trusted_header` mode.
    #[serde(default)]
    pub identity_header: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    #[default]
    Keys,
    TrustedHeader,
    None,
}

/// Provider credentials, read from the Envoy process environment (the wasm
/// VM's `environment_variables.host_env_keys`), never from this file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    #[serde(default)]
    pub openai: Option<CredentialConfig>,
    #[serde(default)]
    pub anthropic: Option<CredentialConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// Name of the environment variable holding the provider key.
    pub env: String,
    /// `anthropic-version` sent upstream (Anthropic only; default
    /// `2023-06-01`, a client's own header is kept).
    #[serde(default)]
    pub anthropic_version: Option<String>,
}

fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            keys: Vec::new(),
            auth: AuthConfig::default(),
            credentials: CredentialsConfig::default(),
            pricing: PricingConfig::default(),
            tenants: BTreeMap::new(),
            budgets: BudgetsConfig::default(),
            upstreams: Vec::new(),
            breaker: None,
            model_routing: Vec::new(),
            cache: CacheConfig::default(),
            prompts: BTreeMap::new(),
            guard: GuardConfig::default(),
            response_filter: ResponseFilterConfig::default(),
            encoded_body: EncodedBody::Reject,
            other_paths: OtherPaths::Deny,
            forward_user_header: false,
            metrics: MetricsConfig::default(),
            response_headers: ResponseHeadersConfig::default(),
            fleet: None,
        }
    }
}

/// The compiled configuration: everything the hot path needs, computed once.
#[derive(Debug)]
pub struct Config {
    pub max_body_bytes: u64,
    pub keys: KeyTable,
    pub auth_mode: AuthMode,
    pub identity_header: String,
    /// Provider secrets, resolved from the environment at plugin start.
    pub openai_credential: Option<String>,
    pub anthropic_credential: Option<(String, String)>,
    pub prices: PriceTable,
    pub tenant_limits: HashMap<String, CompiledLimits>,
    pub budgets: Budgets,
    pub default_max_tokens: u64,
    /// Some limit is configured somewhere: the budget path runs.
    pub budgets_enabled: bool,
    pub upstreams: Vec<Upstream>,
    pub breaker: Option<Breaker>,
    pub model_rules: Vec<ModelRule>,
    pub rules_need_text: bool,
    pub cache: CompiledCache,
    pub prompts: Prompts,
    pub guard: Guard,
    pub response_filter: ResponseFilter,
    pub encoded_body: EncodedBody,
    pub other_paths: OtherPaths,
    pub forward_user_header: bool,
    /// Known names for metric labels.
    pub labels: Labels,
    pub max_users_per_key: u32,
    /// `response_headers.usage`.
    pub usage_headers: bool,
    /// Fleet mode: the engine and every fleet-scoped scope.
    pub fleet: Option<crate::core::fleet::Fleet>,
    pub fleet_scopes: Vec<crate::core::fleet::FleetScope>,
}

impl Config {
    /// Whether any dollar limit applies to this identity (key, its end
    /// users, or its tenant).
    pub fn dollar_limits_apply(&self, key_id: &str, tenant: &str, user: bool) -> bool {
        let key = self
            .keys
            .by_id(key_id)
            .is_some_and(|k| k.limits.has_dollars() || (user && k.user_limits.has_dollars()));
        key || self
            .tenant_limits
            .get(tenant)
            .is_some_and(CompiledLimits::has_dollars)
    }

    /// Parses and validates a JSON configuration. An empty input means "all
    /// defaults".
    pub fn from_json(bytes: &[u8]) -> Result<Config, ConfigError> {
        Self::from_json_with_env(bytes, &|name| std::env::var(name).ok())
    }

    /// As [`Config::from_json`], with the environment given (tests, CLI).
    pub fn from_json_with_env(
        bytes: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        let raw: RawConfig = if first.is_none() {
            RawConfig::default()
        } else if first != Some(&b'{') {
            return Err(ConfigError::new(
                "",
                "the configuration must be a JSON object",
            ));
        } else {
            let de = &mut serde_json::Deserializer::from_slice(bytes);
            match serde_path_to_error::deserialize(de) {
                Ok(raw) => raw,
                Err(e) => {
                    let path = e.path().to_string();
                    let path = if path == "." { String::new() } else { path };
                    let inner = e.into_inner();
                    return Err(ConfigError::new(path, clean_serde_message(&inner)));
                }
            }
        };
        Self::compile(&raw, env)
    }

    pub fn compile(
        raw: &RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        if raw.max_body_bytes == 0 || raw.max_body_bytes > MAX_MAX_BODY_BYTES {
            return Err(ConfigError::new(
                "max_body_bytes",
                format!("must be between 1 and {MAX_MAX_BODY_BYTES}"),
            ));
        }
        let keys = KeyTable::compile(&raw.keys, raw.auth.mode == AuthMode::Keys)?;
        let identity_header = match (raw.auth.mode, &raw.auth.identity_header) {
            (AuthMode::TrustedHeader, None) => {
                return Err(ConfigError::new(
                    "auth.identity_header",
                    "is required with mode trusted_header",
                ))
            }
            (_, Some(h))
                if h.is_empty()
                    || !h
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                return Err(ConfigError::new(
                    "auth.identity_header",
                    "must be a header name",
                ))
            }
            (_, Some(h)) => h.to_ascii_lowercase(),
            (_, None) => String::new(),
        };
        let resolve = |c: &CredentialConfig, field: &str| -> Result<String, ConfigError> {
            match env(&c.env) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(ConfigError::new(
                    format!("credentials.{field}.env"),
                    format!("environment variable {} is not set in the Envoy process (add it to vm_config.environment_variables.host_env_keys)", c.env),
                )),
            }
        };
        let openai_credential = match &raw.credentials.openai {
            Some(c) => Some(resolve(c, "openai")?),
            None => None,
        };
        let anthropic_credential = match &raw.credentials.anthropic {
            Some(c) => Some((
                resolve(c, "anthropic")?,
                c.anthropic_version
                    .clone()
                    .unwrap_or_else(|| "2023-06-01".to_string()),
            )),
            None => None,
        };
        let mut tenant_limits = HashMap::new();
        for (name, t) in &raw.tenants {
            let l = t
                .limits
                .compile()
                .map_err(|e| e.under(&format!("tenants.{name}.limits")))?;
            tenant_limits.insert(name.clone(), l);
        }
        if raw.budgets.cas_retries == 0 || raw.budgets.cas_retries > 1000 {
            return Err(ConfigError::new(
                "budgets.cas_retries",
                "must be between 1 and 1000",
            ));
        }
        if raw.budgets.default_max_tokens > 10_000_000 {
            return Err(ConfigError::new(
                "budgets.default_max_tokens",
                "must be at most 10000000",
            ));
        }
        let budgets_enabled = keys
            .iter()
            .any(|k| !k.limits.is_empty() || !k.user_limits.is_empty())
            || tenant_limits.values().any(|l| !l.is_empty());
        let budgets = Budgets::new(BudgetOptions {
            failure_mode: raw.budgets.failure_mode,
            cas_retries: raw.budgets.cas_retries,
            max_users_per_key: raw.budgets.max_users_per_key,
            ..BudgetOptions::default()
        })
        .with_user_keys(
            keys.iter()
                .filter(|k| !k.user_limits.is_empty())
                .map(|k| k.id.clone()),
        );
        let upstreams = compile_upstreams(&raw.upstreams)?;
        let breaker = match &raw.breaker {
            Some(b) => Some(Breaker::new(b.compile().map_err(|e| e.under("breaker"))?)),
            None => None,
        };
        let model_rules = compile_rules(&raw.model_routing)?;
        let cache = raw.cache.compile()?;
        let prompts = Prompts::compile(&raw.prompts)?;
        let guard = raw.guard.compile().map_err(|e| e.under("guard"))?;
        let response_filter = raw.response_filter.compile()?;
        if raw.metrics.max_label_values == 0 || raw.metrics.max_label_values > 100_000 {
            return Err(ConfigError::new(
                "metrics.max_label_values",
                "must be between 1 and 100000",
            ));
        }
        if raw.budgets.max_users_per_key == 0 || raw.budgets.max_users_per_key > 1_000_000 {
            return Err(ConfigError::new(
                "budgets.max_users_per_key",
                "must be between 1 and 1000000",
            ));
        }
        let prices = raw.pricing.compile()?;
        let mut fleet_scopes = Vec::new();
        for (i, k) in raw.keys.iter().enumerate() {
            if k.user_limits.scope == crate::core::budget::LimitScope::Fleet {
                return Err(ConfigError::new(
                    format!("keys[{i}].user_limits.scope"),
                    "end-user limits are local only (fleet scope is for keys and tenants)",
                ));
            }
        }
        for key in keys.iter().filter(|k| k.limits.fleet) {
            fleet_scopes.push(crate::core::fleet::FleetScope {
                name: crate::core::budget::ScopeId::Key(key.id.clone()).storage_name(),
                limits: key.limits.kinds(),
            });
        }
        for (name, l) in &tenant_limits {
            if l.fleet {
                fleet_scopes.push(crate::core::fleet::FleetScope {
                    name: crate::core::budget::ScopeId::Tenant(name.clone()).storage_name(),
                    limits: l.kinds(),
                });
            }
        }
        let fleet = match &raw.fleet {
            Some(f) => Some(crate::core::fleet::Fleet::new(
                f.compile().map_err(|e| e.under("fleet"))?,
            )),
            None if !fleet_scopes.is_empty() => {
                return Err(ConfigError::new(
                    "fleet",
                    "limits with \"scope\": \"fleet\" need a fleet block (its webdis cluster)",
                ))
            }
            None => None,
        };
        let mut models: Vec<String> = prices.names().map(str::to_string).collect();
        for k in &raw.keys {
            models.extend(k.models.iter().flatten().cloned());
        }
        for u in &raw.upstreams {
            for (from, to) in &u.model_map {
                models.push(from.clone());
                models.push(to.clone());
            }
        }
        for r in &raw.model_routing {
            models.push(r.model.clone());
            models.extend(r.models.iter().cloned());
        }
        let mut prompt_names: Vec<String> = Vec::new();
        for (id, p) in &raw.prompts {
            prompt_names.push(id.clone());
            prompt_names.extend(p.versions.keys().cloned());
        }
        let labels = Labels::new(models, prompt_names, raw.metrics.max_label_values);
        Ok(Config {
            other_paths: raw.other_paths,
            forward_user_header: raw.forward_user_header,
            labels,
            max_users_per_key: raw.budgets.max_users_per_key,
            usage_headers: raw.response_headers.usage,
            fleet,
            fleet_scopes,
            max_body_bytes: raw.max_body_bytes,
            rules_need_text: rules_need_text(&model_rules),
            upstreams,
            breaker,
            model_rules,
            cache,
            prompts,
            guard,
            response_filter,
            encoded_body: raw.encoded_body,
            tenant_limits,
            budgets,
            default_max_tokens: raw.budgets.default_max_tokens,
            budgets_enabled,
            keys,
            auth_mode: raw.auth.mode,
            identity_header,
            openai_credential,
            anthropic_credential,
            prices,
        })
    }
}

/// serde_json appends " at line L column C"; keep it, it helps, but make sure
/// unknown-field messages name the field first.
fn clean_serde_message(e: &serde_json::Error) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_defaults() {
        let c = Config::from_json(br#"{"auth":{"mode":"none"}}"#).unwrap();
        assert_eq!(c.auth_mode, AuthMode::None);
        let c = Config::from_json(b"  ").unwrap();
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        let c = Config::from_json(b"{}").unwrap();
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Config::from_json(br#"{"max_body_bytes": 10, "bogus_field": 1}"#).unwrap_err();
        assert!(e.to_string().contains("bogus_field"), "{e}");
    }

    #[test]
    fn invalid_value_is_named() {
        let e = Config::from_json(br#"{"max_body_bytes": 0}"#).unwrap_err();
        assert_eq!(e.field, "max_body_bytes");
        let e = Config::from_json(br#"{"max_body_bytes": "big"}"#).unwrap_err();
        assert_eq!(e.field, "max_body_bytes", "{e}");
    }

    #[test]
    fn nested_unknown_field_is_named_with_path() {
        let e = Config::from_json(br#"{"keys":[{"id":"a","sha256":"x","bogus":1}]}"#).unwrap_err();
        assert_eq!(e.field, "keys[0].bogus", "{e}");
        let e = Config::from_json(br#"{"auth":{"mode":"sometimes"}}"#).unwrap_err();
        assert_eq!(e.field, "auth.mode", "{e}");
    }

    #[test]
    fn credentials_come_from_env() {
        let cfg = br#"{"auth":{"mode":"none"},"credentials":{"openai":{"env":"OAI"},"anthropic":{"env":"ANT"}}}"#;
        let env = |n: &str| match n {
            "OAI" => Some("sk-real".to_string()),
            "ANT" => Some("sk-ant-real".to_string()),
            _ => None,
        };
        let c = Config::from_json_with_env(cfg, &env).unwrap();
        assert_eq!(c.openai_credential.as_deref(), Some("sk-real"));
        assert_eq!(c.anthropic_credential.unwrap().1, "2023-06-01");
        let e = Config::from_json_with_env(cfg, &|_| None).unwrap_err();
        assert_eq!(e.field, "credentials.openai.env");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Config::from_json(b"{not json").is_err());
        assert!(Config::from_json(b"[]").is_err());
        assert!(Config::from_json(&[0xff, 0xfe]).is_err());
    }
}

//! The response cache, stored in Redis through webdis: everything about it
//! that can be decided without the host (configuration, keys, policy, the
//! entry format, the webdis protocol). The shell makes the callouts, sets
//! the headers and keeps the time.
//!
//! ## Key
//!
//! [`CompiledCache::key`] is `prefix` + the lowercase hex SHA-256 of a
//! canonical form of everything that changes the answer (see [`KEY_FIELDS`]
//! and [`CompiledCache::key`]). No prompt text ever appears in a key.
//! JSON key order, insignificant whitespace, string escapes (`"\u00e9"` and
//! `"é"`) and number spellings (`0`, `0.0`, `-0`, `0e0`) do not change it.
//!
//! ## Entries
//!
//! An [`Entry`] holds the exact response body bytes the client received, so
//! a hit is byte-identical to the original answer. Streamed responses are
//! stored as the SSE bytes the client got (see [`StreamRecorder`]) and
//! replayed as they are. **A streamed entry answers only streaming requests
//! and a non-streamed entry only non-streaming ones**: `stream` (and, for a
//! stream, `stream_options.include_usage`) is part of the key, so the two
//! forms of the same question are two entries.
//!
//! The stored value ([`encode`] / [`decode`]) is one line of JSON metadata,
//! a `\n`, then the raw body:
//!
//! ```text
//! {"v":1,"api":"openai","stream":false,"ct":"application/json","created_ms":1700000000000,"model":"gpt-4o","usage":{"i":12,"o":5,"cr":0,"cw":0},"len":321}\n<321 body bytes>
//! ```
//!
//! ## webdis
//!
//! Lookup is `GET /GET/<key>.txt` (the `.txt` form returns the stored value
//! as the raw response body, binary-safe; `.raw` would wrap it in RESP
//! framing to strip again, and the default JSON form would have to escape
//! it). Store is `PUT /SETEX/<key>/<ttl>` with the encoded entry as body
//! (webdis appends a PUT body as the command's last argument). Anything but
//! a clean hit or a clean 404 is an error the shell counts and treats as a
//! miss: the cache fails open.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::api::Api;
use super::error::ConfigError;
use super::usage::Usage;
use super::util::hex;

/// A small in-VM cache of recent entries in front of Redis: bounded by bytes,
/// entries expire with the configured TTL, oldest evicted first. One per
/// wasm VM (per Envoy worker), so it needs no locking; keys are the same
/// hashed, tenant-scoped keys as in Redis.
#[derive(Debug, Default)]
pub struct L1 {
    max_bytes: usize,
    bytes: usize,
    map: std::collections::HashMap<String, (std::rc::Rc<Entry>, u64)>,
    order: std::collections::VecDeque<String>,
}

impl L1 {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            ..Self::default()
        }
    }

    fn cost(key: &str, e: &Entry) -> usize {
        key.len()
            .saturating_add(e.body.len())
            .saturating_add(e.content_type.len())
            .saturating_add(128)
    }

    /// The entry for `key` if present and not expired at `now_ms`.
    pub fn get(&mut self, key: &str, now_ms: u64) -> Option<std::rc::Rc<Entry>> {
        match self.map.get(key) {
            Some((e, expires)) if *expires > now_ms => Some(e.clone()),
            Some(_) => {
                self.remove(key);
                None
            }
            None => None,
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some((e, _)) = self.map.remove(key) {
            self.bytes = self.bytes.saturating_sub(Self::cost(key, &e));
        }
        self.order.retain(|k| k != key);
    }

    /// Keeps `entry` until `expires_ms`, evicting the oldest entries to stay
    /// within the byte budget. Entries larger than a quarter of it are not kept.
    pub fn put(&mut self, key: &str, entry: std::rc::Rc<Entry>, expires_ms: u64) {
        let cost = Self::cost(key, &entry);
        if self.max_bytes == 0 || cost > self.max_bytes / 4 {
            return;
        }
        if self.map.contains_key(key) {
            self.remove(key);
        }
        while self.bytes.saturating_add(cost) > self.max_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((e, _)) = self.map.remove(&old) {
                self.bytes = self.bytes.saturating_sub(Self::cost(&old, &e));
            }
        }
        self.bytes = self.bytes.saturating_add(cost);
        self.order.push_back(key.to_string());
        self.map.insert(key.to_string(), (entry, expires_ms));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

// ---------------------------------------------------------------------------
// Configuration

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "llmgate:cache:";
/// Default entry lifetime: one hour.
pub const DEFAULT_TTL_S: u64 = 3600;
/// Longest allowed `ttl_s`: 30 days.
pub const MAX_TTL_S: u64 = 30 * 24 * 3600;
/// Default largest cached response body: 256 KiB.
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 256 * 1024;
/// Largest allowed `max_entry_bytes`: 16 MiB.
pub const MAX_MAX_ENTRY_BYTES: u64 = 16 * 1024 * 1024;
/// Default webdis callout timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 50;
/// Largest allowed `timeout_ms`.
pub const MAX_TIMEOUT_MS: u64 = 5000;
/// Longest allowed `prefix`.
pub const MAX_PREFIX_LEN: usize = 64;
/// Longest allowed `cluster` name.
pub const MAX_CLUSTER_LEN: usize = 255;

/// The `cache` section of the plugin configuration, as written by users.
///
/// ```json
/// "cache": {
///   "enabled": true,
///   "cluster": "webdis",
///   "prefix": "llmgate:cache:",
///   "ttl_s": 3600,
///   "max_entry_bytes": 262144,
///   "timeout_ms": 50,
///   "only_deterministic": true,
///   "shared": false
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Whether the cache is used at all (default `false`).
    pub enabled: bool,
    /// Envoy cluster name of webdis (default `webdis`).
    pub cluster: String,
    /// Prefix of every Redis key (default `llmgate:cache:`): 1-64 characters
    /// of `A-Z a-z 0-9 : _ -`.
    pub prefix: String,
    /// Entry lifetime in seconds (default 3600; 1 s to 30 days).
    pub ttl_s: u64,
    /// Largest response body stored (default 262144; 1 byte to 16 MiB).
    pub max_entry_bytes: u64,
    /// Timeout of each webdis callout in milliseconds (default 50; 1-5000).
    pub timeout_ms: u64,
    /// Cache only requests whose `temperature` is 0 or absent (default
    /// `true`). Absent counts as deterministic as the issue asks, although
    /// OpenAI's default temperature is 1: a client that relies on the
    /// default gets the same cached answer to the same question. Set `false`
    /// to cache whatever the temperature.
    pub only_deterministic: bool,
    /// One cache for every tenant (default `false`: the tenant is part of
    /// the key, so tenants never see each other's answers).
    pub shared: bool,
    /// Bytes of recent entries kept in each wasm VM (per Envoy worker) in
    /// front of Redis, so a repeated question on the same worker is answered
    /// without a callout. Default 4 MiB; 0 disables it.
    pub l1_bytes: u64,
    /// Request coalescing (see `core::coalesce`).
    pub coalesce: crate::core::coalesce::CoalesceConfig,
    /// The semantic tier (see `core::semantic`).
    pub semantic: crate::core::semantic::SemanticConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            cluster: "webdis".to_string(),
            prefix: DEFAULT_PREFIX.to_string(),
            ttl_s: DEFAULT_TTL_S,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            only_deterministic: true,
            shared: false,
            l1_bytes: DEFAULT_L1_BYTES,
            coalesce: crate::core::coalesce::CoalesceConfig::default(),
            semantic: crate::core::semantic::SemanticConfig::default(),
        }
    }
}

/// Default size of the in-VM L1 cache.
pub const DEFAULT_L1_BYTES: u64 = 4 * 1024 * 1024;
/// Largest allowed `l1_bytes`.
pub const MAX_L1_BYTES: u64 = 256 * 1024 * 1024;

impl CacheConfig {
    /// Validates the section. Error fields are full paths (`cache.ttl_s`).
    pub fn compile(&self) -> Result<CompiledCache, ConfigError> {
        check_cluster("cache.cluster", &self.cluster)?;
        check_prefix("cache.prefix", &self.prefix)?;
        if self.ttl_s == 0 || self.ttl_s > MAX_TTL_S {
            return Err(ConfigError::new(
                "cache.ttl_s",
                format!("must be between 1 and {MAX_TTL_S} (30 days)"),
            ));
        }
        let max_entry_bytes = match usize::try_from(self.max_entry_bytes) {
            Ok(n) if n > 0 && self.max_entry_bytes <= MAX_MAX_ENTRY_BYTES => n,
            _ => {
                return Err(ConfigError::new(
                    "cache.max_entry_bytes",
                    format!("must be between 1 and {MAX_MAX_ENTRY_BYTES} (16 MiB)"),
                ))
            }
        };
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(ConfigError::new(
                "cache.timeout_ms",
                format!("must be between 1 and {MAX_TIMEOUT_MS}"),
            ));
        }
        if self.l1_bytes > MAX_L1_BYTES {
            return Err(ConfigError::new(
                "cache.l1_bytes",
                format!("must be at most {MAX_L1_BYTES}"),
            ));
        }
        Ok(CompiledCache {
            coalesce: self.coalesce.compile()?,
            semantic: self.semantic.compile()?,
            l1_bytes: usize::try_from(self.l1_bytes).unwrap_or(usize::MAX),
            enabled: self.enabled,
            cluster: self.cluster.clone(),
            prefix: self.prefix.clone(),
            ttl_s: self.ttl_s,
            max_entry_bytes,
            timeout_ms: self.timeout_ms,
            only_deterministic: self.only_deterministic,
            shared: self.shared,
        })
    }
}

/// An Envoy cluster name: 1-255 characters, no spaces or control characters.
pub(crate) fn check_cluster(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > MAX_CLUSTER_LEN
        || name.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err(ConfigError::new(
            field,
            format!("must be an Envoy cluster name (1-{MAX_CLUSTER_LEN} characters, no spaces)"),
        ));
    }
    Ok(())
}

/// A Redis key prefix: 1-64 characters left as they are in a webdis path.
pub(crate) fn check_prefix(field: &str, prefix: &str) -> Result<(), ConfigError> {
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN || !prefix.bytes().all(is_key_byte) {
        return Err(ConfigError::new(
            field,
            format!("must be 1-{MAX_PREFIX_LEN} characters of A-Z a-z 0-9 : _ -"),
        ));
    }
    Ok(())
}

/// The validated cache configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledCache {
    pub enabled: bool,
    pub cluster: String,
    pub prefix: String,
    pub ttl_s: u64,
    pub max_entry_bytes: usize,
    pub timeout_ms: u64,
    pub only_deterministic: bool,
    pub shared: bool,
    pub l1_bytes: usize,
    pub coalesce: crate::core::coalesce::Coalescer,
    pub semantic: crate::core::semantic::CompiledSemantic,
}

impl Default for CompiledCache {
    fn default() -> Self {
        Self {
            enabled: false,
            cluster: "webdis".to_string(),
            prefix: DEFAULT_PREFIX.to_string(),
            ttl_s: DEFAULT_TTL_S,
            max_entry_bytes: 256 * 1024,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            only_deterministic: true,
            shared: false,
            l1_bytes: 4 * 1024 * 1024,
            coalesce: crate::core::coalesce::Coalescer::default(),
            semantic: crate::core::semantic::CompiledSemantic::default(),
        }
    }
}

// ---------------------------------------------------------------------------
// Key

/// The request body fields that are part of the key, in the order they are
/// hashed. A field absent or `null` is left out (so `"seed": null` and no
/// `seed` are the same request); any other value is hashed in canonical form
/// (object keys sorted, numbers canonical, strings unescaped and re-escaped
/// minimally). Nested values are hashed exactly as parsed (a nested `null`
/// is kept).
///
/// Fields **not** in this list do not change the key: `user`, `metadata`,
/// `store`, `service_tier`, `stream_options` (except `include_usage`, see
/// [`CompiledCache::key`]) and anything unknown.
pub const KEY_FIELDS: &[&str] = &[
    "model",
    "system",
    "messages",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "stop_sequences",
    "seed",
    "response_format",
    "n",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "parallel_tool_calls",
    "reasoning_effort",
    "thinking",
    // Beyond the issue's list: OpenAI parameters that change the answer too.
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "verbosity",
];

/// Version of the canonical form; bump it when the form changes so old
/// entries are simply never found again.
const KEY_SCHEME: &str = "llmgate-cache-key/1";
/// Scheme of the semantic cache's context hash.
const CONTEXT_SCHEME: &str = "llmgate-semantic-context/1";

/// Which canonical form to write.
struct Canon<'a> {
    scheme: &'a str,
    /// Replaces the body's `messages` (the semantic context).
    messages: Option<&'a [Value]>,
}

/// Where canonical bytes go: a hasher in production, a buffer in tests.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl CompiledCache {
    /// The Redis key of a request: `prefix` + lowercase hex SHA-256 of the
    /// canonical form of
    ///
    /// 1. the key scheme version;
    /// 2. the tenant (unless the cache is `shared`, in which case a fixed
    ///    marker that no tenant name can produce);
    /// 3. the API (`openai` / `anthropic`);
    /// 4. `prompt_version` when a server-side prompt template was applied
    ///    (pass `id@version`);
    /// 5. `stream` (true only for JSON `true`) and, when streaming,
    ///    `stream_options.include_usage` (true only for JSON `true`) — a
    ///    cached stream is replayed byte for byte, so it may only answer a
    ///    request that would have received the same bytes;
    /// 6. every field of [`KEY_FIELDS`] present and not `null`.
    ///
    /// Compute it on the body **as the client sent it** (before llmgate sets
    /// `stream_options.include_usage` for its own accounting), with any
    /// rewrite that changes the answer (model routing) already applied.
    pub fn key(
        &self,
        tenant: &str,
        api: Api,
        body: &Map<String, Value>,
        prompt_version: Option<&str>,
    ) -> String {
        let mut hasher = Sha256::new();
        self.write_canonical(&mut hasher, tenant, api, body, prompt_version);
        let digest = hasher.finalize();
        let mut key = String::with_capacity(self.prefix.len().saturating_add(64));
        key.push_str(&self.prefix);
        key.push_str(&hex(&digest));
        key
    }

    /// The semantic cache's context hash (lowercase hex SHA-256): the same
    /// canonical form as [`CompiledCache::key`] under another scheme, with
    /// `messages` replaced by `messages` (the conversation before the last
    /// user turn) and `extra` strings appended (the embedding model, the
    /// question's literals).
    pub fn context_hash(
        &self,
        tenant: &str,
        api: Api,
        body: &Map<String, Value>,
        prompt_version: Option<&str>,
        messages: &[Value],
        extra: &[&str],
    ) -> String {
        let mut hasher = Sha256::new();
        let canon = Canon {
            scheme: CONTEXT_SCHEME,
            messages: Some(messages),
        };
        self.write_canonical_as(&mut hasher, &canon, tenant, api, body, prompt_version);
        for e in extra {
            hasher.put(b"\n");
            write_str(&mut hasher, e);
        }
        hex(&hasher.finalize())
    }

    fn write_canonical(
        &self,
        out: &mut dyn Sink,
        tenant: &str,
        api: Api,
        body: &Map<String, Value>,
        prompt_version: Option<&str>,
    ) {
        let canon = Canon {
            scheme: KEY_SCHEME,
            messages: None,
        };
        self.write_canonical_as(out, &canon, tenant, api, body, prompt_version);
    }

    fn write_canonical_as(
        &self,
        out: &mut dyn Sink,
        canon: &Canon<'_>,
        tenant: &str,
        api: Api,
        body: &Map<String, Value>,
        prompt_version: Option<&str>,
    ) {
        out.put(b"{\"scheme\":");
        write_str(out, canon.scheme);
        if self.shared {
            out.put(b",\"shared\":true");
        } else {
            out.put(b",\"tenant\":");
            write_str(out, tenant);
        }
        out.put(b",\"api\":");
        write_str(out, api.as_str());
        if let Some(v) = prompt_version {
            out.put(b",\"prompt_version\":");
            write_str(out, v);
        }
        let stream = matches!(body.get("stream"), Some(Value::Bool(true)));
        if stream {
            let include_usage = matches!(
                body.get("stream_options")
                    .and_then(|o| o.get("include_usage")),
                Some(Value::Bool(true))
            );
            out.put(b",\"stream\":true,\"include_usage\":");
            out.put(if include_usage { b"true" } else { b"false" });
        } else {
            out.put(b",\"stream\":false");
        }
        out.put(b",\"body\":{");
        let mut first = true;
        for name in KEY_FIELDS {
            if let (Some(m), "messages") = (canon.messages, *name) {
                if !first {
                    out.put(b",");
                }
                first = false;
                write_str(out, name);
                out.put(b":");
                write_array(out, m);
                continue;
            }
            match body.get(*name) {
                None | Some(Value::Null) => {}
                Some(value) => {
                    if !first {
                        out.put(b",");
                    }
                    first = false;
                    write_str(out, name);
                    out.put(b":");
                    write_value(out, value);
                }
            }
        }
        out.put(b"}}");
    }

    #[cfg(test)]
    fn canonical_form(
        &self,
        tenant: &str,
        api: Api,
        body: &Map<String, Value>,
        prompt_version: Option<&str>,
    ) -> String {
        let mut buf = Vec::new();
        self.write_canonical(&mut buf, tenant, api, body, prompt_version);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Canonical JSON of a value: objects with keys sorted by bytes (whatever
/// the map's own order), no whitespace, canonical numbers, minimal string
/// escapes. Depth is bounded by serde_json's parser (128).
fn write_value(out: &mut dyn Sink, value: &Value) {
    match value {
        Value::Null => out.put(b"null"),
        Value::Bool(true) => out.put(b"true"),
        Value::Bool(false) => out.put(b"false"),
        Value::Number(n) => out.put(canonical_number(n).as_bytes()),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => write_array(out, items),
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.put(b"{");
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                write_str(out, k);
                out.put(b":");
                write_value(out, v);
            }
            out.put(b"}");
        }
    }
}

fn write_array(out: &mut dyn Sink, items: &[Value]) {
    out.put(b"[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.put(b",");
        }
        write_value(out, item);
    }
    out.put(b"]");
}

/// One spelling per numeric value: integers (and integral floats, e.g.
/// `1.0`, `1e2`, `-0.0`) in plain decimal, other floats in Rust's shortest
/// round-trip decimal form without exponent.
fn canonical_number(n: &serde_json::Number) -> String {
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    let Some(f) = n.as_f64() else {
        return n.to_string();
    };
    if f == 0.0 {
        // 0.0 and -0.0
        "0".to_string()
    } else if f.is_finite() {
        // `Display` of an f64 never uses an exponent and prints integral
        // values without a fraction, matching the integer spellings above.
        format!("{f}")
    } else {
        n.to_string()
    }
}

/// A JSON string with minimal escapes: `"` and `\` escaped, control
/// characters as `\u00XX`, everything else as UTF-8.
fn write_str(out: &mut dyn Sink, s: &str) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.put(b"\"");
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<[u8; 6]> = match b {
            b'"' | b'\\' => Some([b'\\', b, 0, 0, 0, 0]),
            0..=0x1f => Some([
                b'\\',
                b'u',
                b'0',
                b'0',
                DIGITS.get(usize::from(b >> 4)).copied().unwrap_or(b'0'),
                DIGITS.get(usize::from(b & 0x0f)).copied().unwrap_or(b'0'),
            ]),
            _ => None,
        };
        if let Some(esc) = escape {
            out.put(bytes.get(start..i).unwrap_or_default());
            let len = if esc.get(1) == Some(&b'u') { 6 } else { 2 };
            out.put(esc.get(..len).unwrap_or_default());
            start = i.saturating_add(1);
        }
    }
    out.put(bytes.get(start..).unwrap_or_default());
    out.put(b"\"");
}

// ---------------------------------------------------------------------------
// Policy

/// What the client asked with `x-llmgate-cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientCache {
    /// No (known) directive: normal caching.
    #[default]
    Default,
    /// `no-cache`: skip the lookup, still store the answer.
    NoCache,
    /// `no-store`: neither look up nor store.
    NoStore,
}

impl ClientCache {
    /// Parses the request header `x-llmgate-cache`: case-insensitive,
    /// comma-separated lists tolerated (`no-store` wins over `no-cache`),
    /// unknown values ignored.
    pub fn from_header(value: Option<&str>) -> ClientCache {
        let mut out = ClientCache::Default;
        for token in value.unwrap_or("").split(',').map(str::trim) {
            if token.eq_ignore_ascii_case("no-store") {
                return ClientCache::NoStore;
            }
            if token.eq_ignore_ascii_case("no-cache") {
                out = ClientCache::NoCache;
            }
        }
        out
    }
}

/// What to do with a request, from [`CompiledCache::plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The cache is disabled: no lookup, no store, no `x-llmgate-cache`
    /// header.
    Disabled,
    /// Not cacheable (policy) or `no-store`: `x-llmgate-cache: bypass`.
    Bypass,
    /// `no-cache`: no lookup, store the answer; `x-llmgate-cache: bypass`
    /// (the cache was not consulted).
    StoreOnly,
    /// Look up, and on a miss store the answer: `hit` or `miss`.
    LookupAndStore,
}

impl Plan {
    pub fn lookup(self) -> bool {
        self == Plan::LookupAndStore
    }

    pub fn store(self) -> bool {
        matches!(self, Plan::LookupAndStore | Plan::StoreOnly)
    }
}

/// Values of the response header `x-llmgate-cache`.
pub const HEADER_HIT: &str = "hit";
pub const HEADER_MISS: &str = "miss";
pub const HEADER_BYPASS: &str = "bypass";

/// Content types a stored response may have (parameters such as `charset`
/// allowed).
const STORABLE_CONTENT_TYPES: &[&str] = &["application/json", "text/event-stream"];
/// Longest content type kept in an entry.
pub const MAX_CONTENT_TYPE_LEN: usize = 256;
/// Longest model name kept in an entry (longer ones are dropped).
pub const MAX_MODEL_LEN: usize = 256;

impl CompiledCache {
    /// Whether the request may be cached: `n` absent, `null` or 1 (several
    /// choices are not cached), and with `only_deterministic`, `temperature`
    /// absent, `null` or 0. A non-numeric `temperature` or `n` is never
    /// cached.
    pub fn cacheable_request(&self, body: &Map<String, Value>) -> bool {
        let n_ok = match body.get("n") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_f64() == Some(1.0),
            Some(_) => false,
        };
        if !n_ok {
            return false;
        }
        if !self.only_deterministic {
            return true;
        }
        match body.get("temperature") {
            None | Some(Value::Null) => true,
            Some(Value::Number(t)) => t.as_f64() == Some(0.0),
            Some(_) => false,
        }
    }

    /// The plan for a request: disabled, bypass (policy or `no-store`),
    /// store only (`no-cache`), or lookup and store.
    pub fn plan(&self, client: ClientCache, body: &Map<String, Value>) -> Plan {
        if !self.enabled {
            return Plan::Disabled;
        }
        if client == ClientCache::NoStore || !self.cacheable_request(body) {
            return Plan::Bypass;
        }
        if client == ClientCache::NoCache {
            return Plan::StoreOnly;
        }
        Plan::LookupAndStore
    }

    /// Whether a complete response may be stored: status 200, a non-empty
    /// body of at most `max_entry_bytes`, and a JSON or SSE content type.
    /// (For a stream, use [`StreamRecorder`], which also requires the stream
    /// to have completed.)
    pub fn should_store(&self, status: u32, content_type: Option<&str>, body_len: usize) -> bool {
        status == 200
            && body_len > 0
            && body_len <= self.max_entry_bytes
            && content_type.is_some_and(storable_content_type)
    }

    /// A recorder for a streamed response bounded by `max_entry_bytes`.
    pub fn stream_recorder(&self) -> StreamRecorder {
        StreamRecorder::new(self.max_entry_bytes)
    }

    /// The webdis timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// [`store_path`] with the configured TTL.
    pub fn store_path(&self, key: &str) -> String {
        store_path(key, self.ttl_s)
    }
}

fn storable_content_type(ct: &str) -> bool {
    if !valid_content_type(ct) {
        return false;
    }
    let essence = ct.split(';').next().unwrap_or("").trim();
    STORABLE_CONTENT_TYPES
        .iter()
        .any(|t| essence.eq_ignore_ascii_case(t))
}

/// Safe to send back as a header value: 1-256 printable ASCII characters.
fn valid_content_type(ct: &str) -> bool {
    !ct.is_empty()
        && ct.len() <= MAX_CONTENT_TYPE_LEN
        && ct.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

fn valid_model(m: &str) -> bool {
    m.len() <= MAX_MODEL_LEN && !m.chars().any(char::is_control)
}

/// Seconds since the entry was stored, for the `age` header of a hit
/// (0 when the clock went backwards).
pub fn age_s(entry: &Entry, now_ms: u64) -> u64 {
    now_ms.saturating_sub(entry.created_ms) / 1000
}

// ---------------------------------------------------------------------------
// Entries

/// A cached response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub api: Api,
    /// A streamed (SSE) response; answers only streaming requests (the key
    /// includes `stream`, and [`Entry::answers`] checks it again).
    pub stream: bool,
    /// The response `content-type`, replayed as is.
    pub content_type: String,
    /// When it was stored (ms since the epoch).
    pub created_ms: u64,
    /// The model the response named.
    pub model: Option<String>,
    /// The usage of the original response (tokens a hit saved).
    pub usage: Option<Usage>,
    /// The exact body bytes the client received.
    pub body: Vec<u8>,
}

impl Entry {
    /// Whether this entry may answer a request of this API and form. The key
    /// already guarantees it; this guards against a corrupted or planted
    /// value.
    pub fn answers(&self, api: Api, stream: bool) -> bool {
        self.api == api && self.stream == stream
    }
}

/// Version of the entry format.
pub const ENTRY_VERSION: u64 = 1;
/// Longest metadata line accepted by [`decode`].
pub const MAX_HEADER_BYTES: usize = 4096;

/// Why a stored value could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheError {
    /// No `\n` within [`MAX_HEADER_BYTES`].
    NoHeader,
    /// The metadata line is not the expected JSON.
    BadHeader,
    /// A version other than [`ENTRY_VERSION`].
    WrongVersion,
    /// The body is not as long as the metadata says.
    LengthMismatch,
    /// A field has an impossible value (unknown API, unsafe content type).
    BadField,
}

impl CacheError {
    /// A short label for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            CacheError::NoHeader => "no_header",
            CacheError::BadHeader => "bad_header",
            CacheError::WrongVersion => "wrong_version",
            CacheError::LengthMismatch => "length_mismatch",
            CacheError::BadField => "bad_field",
        }
    }
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for CacheError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireHeader {
    v: u64,
    api: String,
    stream: bool,
    ct: String,
    created_ms: u64,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
    len: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireUsage {
    i: u64,
    o: u64,
    cr: u64,
    cw: u64,
}

/// Encodes an entry as stored in Redis: a one-line JSON header (version,
/// metadata, body length), `\n`, the raw body. A model name that
/// [`decode`] would refuse (over 256 bytes, control characters) is dropped.
pub fn encode(entry: &Entry) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("v".into(), Value::from(ENTRY_VERSION));
    header.insert("api".into(), Value::from(entry.api.as_str()));
    header.insert("stream".into(), Value::from(entry.stream));
    header.insert("ct".into(), Value::from(entry.content_type.as_str()));
    header.insert("created_ms".into(), Value::from(entry.created_ms));
    if let Some(m) = entry.model.as_deref().filter(|m| valid_model(m)) {
        header.insert("model".into(), Value::from(m));
    }
    if let Some(u) = entry.usage {
        let mut w = serde_json::Map::new();
        w.insert("i".into(), Value::from(u.input_tokens));
        w.insert("o".into(), Value::from(u.output_tokens));
        w.insert("cr".into(), Value::from(u.cache_read_tokens));
        w.insert("cw".into(), Value::from(u.cache_creation_tokens));
        header.insert("usage".into(), Value::Object(w));
    }
    let len = u64::try_from(entry.body.len()).unwrap_or(u64::MAX);
    header.insert("len".into(), Value::from(len));
    // Serialising a map of strings and numbers cannot fail; an empty header
    // would only make the entry undecodable (a miss), never wrong.
    let mut out = serde_json::to_vec(&Value::Object(header)).unwrap_or_default();
    out.reserve(entry.body.len().saturating_add(1));
    out.push(b'\n');
    out.extend_from_slice(&entry.body);
    out
}

/// Decodes a stored value. Rejects anything malformed: no header line, bad
/// JSON, unknown fields, a version other than 1, an unknown API, an unsafe
/// content type, a body whose length differs from the header's.
pub fn decode(bytes: &[u8]) -> Result<Entry, CacheError> {
    let search = bytes
        .get(..MAX_HEADER_BYTES.min(bytes.len()))
        .unwrap_or(bytes);
    let nl = search
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(CacheError::NoHeader)?;
    let head = bytes.get(..nl).ok_or(CacheError::NoHeader)?;
    let body = bytes.get(nl.saturating_add(1)..).unwrap_or_default();
    let value: Value = serde_json::from_slice(head).map_err(|_| CacheError::BadHeader)?;
    match value.get("v").map(Value::as_u64) {
        Some(Some(ENTRY_VERSION)) => {}
        Some(_) => return Err(CacheError::WrongVersion),
        None => return Err(CacheError::BadHeader),
    }
    let h: WireHeader = serde_json::from_value(value).map_err(|_| CacheError::BadHeader)?;
    if h.v != ENTRY_VERSION {
        return Err(CacheError::WrongVersion);
    }
    if u64::try_from(body.len()).ok() != Some(h.len) {
        return Err(CacheError::LengthMismatch);
    }
    let api = match h.api.as_str() {
        "openai" => Api::OpenAi,
        "anthropic" => Api::Anthropic,
        _ => return Err(CacheError::BadField),
    };
    if !valid_content_type(&h.ct) {
        return Err(CacheError::BadField);
    }
    if h.model.as_deref().is_some_and(|m| !valid_model(m)) {
        return Err(CacheError::BadField);
    }
    Ok(Entry {
        api,
        stream: h.stream,
        content_type: h.ct,
        created_ms: h.created_ms,
        model: h.model,
        usage: h.usage.map(|u| Usage {
            input_tokens: u.i,
            output_tokens: u.o,
            cache_read_tokens: u.cr,
            cache_creation_tokens: u.cw,
        }),
        body: body.to_vec(),
    })
}

/// Records a streamed response as it passes to the client, for storing once
/// it completes. Push the bytes **as the client receives them** (after any
/// rewriting by llmgate, e.g. a dropped usage chunk), so the replay is
/// byte-identical. Beyond `max_entry_bytes` it stops recording, frees what
/// it held and says so; such a stream is not stored.
#[derive(Debug, Clone)]
pub struct StreamRecorder {
    buf: Vec<u8>,
    max: usize,
    overflowed: bool,
}

impl StreamRecorder {
    pub fn new(max_entry_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            max: max_entry_bytes,
            overflowed: false,
        }
    }

    /// Appends a chunk. Returns whether the recorder is still recording
    /// (`false` from the chunk that crossed the limit on).
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        if self.overflowed {
            return false;
        }
        let room = self.max.saturating_sub(self.buf.len());
        if chunk.len() > room {
            self.overflowed = true;
            self.buf = Vec::new();
            return false;
        }
        self.buf.extend_from_slice(chunk);
        true
    }

    /// Whether the limit was crossed (nothing will be stored).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Bytes recorded so far (0 after an overflow).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The entry to store, only if the stream `completed` (e.g.
    /// `StreamTracker::completed()`: `[DONE]` / `message_stop` seen, no
    /// error event), did not overflow and is not empty.
    pub fn finish(
        self,
        completed: bool,
        api: Api,
        content_type: &str,
        created_ms: u64,
        model: Option<String>,
        usage: Option<Usage>,
    ) -> Option<Entry> {
        if !completed || self.overflowed || self.buf.is_empty() || !valid_content_type(content_type)
        {
            return None;
        }
        Some(Entry {
            api,
            stream: true,
            content_type: content_type.to_string(),
            created_ms,
            model,
            usage,
            body: self.buf,
        })
    }
}

// ---------------------------------------------------------------------------
// webdis protocol

/// Bytes left as they are in a key path argument (and allowed in a prefix).
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-')
}

/// Percent-encodes a webdis path argument: every byte outside
/// `A-Z a-z 0-9 : _ -` becomes `%XX`, `.` included (webdis would take a
/// literal `.` as a format suffix) and `/` too.
pub fn encode_path_arg(arg: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(arg.len());
    for &b in arg {
        if is_key_byte(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(
                DIGITS.get(usize::from(b >> 4)).copied().unwrap_or(b'0'),
            ));
            out.push(char::from(
                DIGITS.get(usize::from(b & 0x0f)).copied().unwrap_or(b'0'),
            ));
        }
    }
    out
}

/// `GET` path of a lookup: `/GET/<key>.txt`. The `.txt` form returns the
/// value as the raw body (binary-safe) and a missing key as a 404 with an
/// empty body.
pub fn lookup_path(key: &str) -> String {
    format!("/GET/{}.txt", encode_path_arg(key.as_bytes()))
}

/// `PUT` path of a store: `/SETEX/<key>/<ttl>`, the encoded entry as the
/// request body. The answer is webdis's JSON form.
pub fn store_path(key: &str, ttl_s: u64) -> String {
    format!("/SETEX/{}/{}", encode_path_arg(key.as_bytes()), ttl_s)
}

/// The outcome of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Hit(Entry),
    Miss,
    /// Count it (label: the reason) and treat it as a miss.
    Error(&'static str),
}

/// Interprets webdis's answer to a lookup (`status` `None`: no answer, i.e.
/// the callout timed out or failed).
///
/// - 200 with a decodable entry: `Hit`;
/// - 404 (webdis's answer for a missing key, body empty): `Miss`;
/// - `Error` with reason `timeout` (no answer), `unavailable` (503, backend
///   unreachable), `http_status` (any other status), `empty` (200, no
///   body), `redis_error` (200 with a `.txt` body starting with `-`, or the
///   JSON form `{"GET":[false,"..."]}`), or the [`CacheError::reason`] of an
///   undecodable value.
pub fn interpret_lookup(status: Option<u32>, body: Option<&[u8]>) -> Lookup {
    let body = body.unwrap_or_default();
    match status {
        None => Lookup::Error("timeout"),
        Some(404) => Lookup::Miss,
        Some(503) => Lookup::Error("unavailable"),
        Some(200) => {
            if body.is_empty() {
                return Lookup::Error("empty");
            }
            if body.first() == Some(&b'-') {
                return Lookup::Error("redis_error");
            }
            match decode(body) {
                Ok(entry) => Lookup::Hit(entry),
                Err(e) => match webdis_json_reply(body) {
                    Some(JsonReply::Error) => Lookup::Error("redis_error"),
                    Some(JsonReply::Nil) => Lookup::Miss,
                    _ => Lookup::Error(e.reason()),
                },
            }
        }
        Some(_) => Lookup::Error("http_status"),
    }
}

/// [`interpret_lookup`], then a hit that cannot answer this request
/// (another API or form) is `Error("entry_mismatch")`.
pub fn interpret_lookup_for(
    status: Option<u32>,
    body: Option<&[u8]>,
    api: Api,
    stream: bool,
) -> Lookup {
    match interpret_lookup(status, body) {
        Lookup::Hit(e) if !e.answers(api, stream) => Lookup::Error("entry_mismatch"),
        other => other,
    }
}

/// Interprets webdis's answer to a store: `Ok` for 200 with
/// `{"SETEX":[true,"OK"]}` (or a plain `+OK` / `OK`); otherwise the reason:
/// `timeout`, `unavailable`, `http_status`, `redis_error` (200 with
/// `{"SETEX":[false,"..."]}` or a body starting with `-`), `bad_answer`.
pub fn interpret_store(status: Option<u32>, body: Option<&[u8]>) -> Result<(), &'static str> {
    let body = body.unwrap_or_default();
    match status {
        None => Err("timeout"),
        Some(503) => Err("unavailable"),
        Some(200) => {
            let trimmed = body.trim_ascii();
            if trimmed == b"+OK" || trimmed == b"OK" {
                return Ok(());
            }
            if trimmed.first() == Some(&b'-') {
                return Err("redis_error");
            }
            match webdis_json_reply(trimmed) {
                Some(JsonReply::Ok) => Ok(()),
                Some(JsonReply::Error) => Err("redis_error"),
                _ => Err("bad_answer"),
            }
        }
        Some(_) => Err("http_status"),
    }
}

/// webdis's JSON reply form: `{"<CMD>": <reply>}`.
#[derive(Debug, PartialEq, Eq)]
enum JsonReply {
    /// `[true, "OK"]`
    Ok,
    /// `[false, "<message>"]`
    Error,
    /// `null` (a missing key in JSON form)
    Nil,
    Other,
}

/// Largest body parsed as a webdis JSON reply (they are tiny).
const MAX_JSON_REPLY_BYTES: usize = 64 * 1024;

fn webdis_json_reply(body: &[u8]) -> Option<JsonReply> {
    if body.len() > MAX_JSON_REPLY_BYTES {
        return None;
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    if map.len() != 1 {
        return None;
    }
    let reply = map.values().next()?;
    Some(match reply {
        Value::Null => JsonReply::Nil,
        Value::Array(a) => match (a.first(), a.get(1), a.len()) {
            (Some(Value::Bool(false)), _, _) => JsonReply::Error,
            (Some(Value::Bool(true)), Some(Value::String(s)), 2) if s == "OK" => JsonReply::Ok,
            _ => JsonReply::Other,
        },
        _ => JsonReply::Other,
    })
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod l1_tests {
    use super::*;
    use std::rc::Rc;

    fn entry(n: usize) -> Rc<Entry> {
        Rc::new(Entry {
            api: Api::OpenAi,
            stream: false,
            content_type: "application/json".into(),
            created_ms: 0,
            model: None,
            usage: None,
            body: vec![b'x'; n],
        })
    }

    #[test]
    fn expiry_eviction_and_bounds() {
        let mut l1 = L1::new(10_000);
        l1.put("a", entry(1000), 100);
        assert!(l1.get("a", 50).is_some());
        assert!(l1.get("a", 100).is_none(), "expired");
        assert!(l1.is_empty());
        for i in 0..20 {
            l1.put(&format!("k{i}"), entry(1000), 1_000);
        }
        assert!(l1.bytes() <= 10_000);
        assert!(l1.get("k0", 1).is_none(), "oldest evicted");
        assert!(l1.get("k19", 1).is_some());
        l1.put("big", entry(5_000), 1_000);
        assert!(l1.get("big", 1).is_none(), "too large for the budget");
        let mut off = L1::new(0);
        off.put("a", entry(1), 10);
        assert!(off.get("a", 1).is_none());
        l1.put("k19", entry(10), 1_000);
        assert_eq!(l1.get("k19", 1).map(|e| e.body.len()), Some(10), "replaced");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn parse(s: &str) -> Map<String, Value> {
        obj(serde_json::from_str(s).unwrap())
    }

    fn cache() -> CompiledCache {
        CacheConfig {
            enabled: true,
            ..CacheConfig::default()
        }
        .compile()
        .unwrap()
    }

    fn base() -> Map<String, Value> {
        parse(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#)
    }

    fn sample_entry() -> Entry {
        Entry {
            api: Api::OpenAi,
            stream: false,
            content_type: "application/json".into(),
            created_ms: 1_700_000_000_123,
            model: Some("gpt-4o".into()),
            usage: Some(Usage {
                input_tokens: 12,
                output_tokens: 5,
                cache_read_tokens: 2,
                cache_creation_tokens: 0,
            }),
            body: br#"{"id":"x","choices":[]}"#.to_vec(),
        }
    }

    // --- config

    #[test]
    fn config_defaults_and_json() {
        let c: CacheConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, CacheConfig::default());
        assert!(!c.enabled);
        let cc = c.compile().unwrap();
        assert_eq!(cc, CompiledCache::default());
        assert_eq!(cc.max_entry_bytes, 262_144);
        assert_eq!(cc.timeout(), Duration::from_millis(50));
        let c: CacheConfig = serde_json::from_str(
            r#"{"enabled":true,"cluster":"redis_http","prefix":"p:","ttl_s":60,"max_entry_bytes":10,"timeout_ms":5,"only_deterministic":false,"shared":true}"#,
        )
        .unwrap();
        let cc = c.compile().unwrap();
        assert!(cc.enabled && cc.shared && !cc.only_deterministic);
        assert_eq!(cc.store_path("p:ab"), "/SETEX/p:ab/60");
        assert!(serde_json::from_str::<CacheConfig>(r#"{"ttl":1}"#).is_err());
    }

    #[test]
    fn config_validation_names_fields() {
        let bad = |c: CacheConfig| c.compile().unwrap_err().field;
        let d = CacheConfig::default;
        for prefix in ["", "a.b", "a b", "{t}", "é", &"x".repeat(65)] {
            let f = bad(CacheConfig {
                prefix: prefix.into(),
                ..d()
            });
            assert_eq!(f, "cache.prefix", "{prefix}");
        }
        assert!(CacheConfig {
            prefix: "A-z_0:9".into(),
            ..d()
        }
        .compile()
        .is_ok());
        assert_eq!(bad(CacheConfig { ttl_s: 0, ..d() }), "cache.ttl_s");
        assert_eq!(
            bad(CacheConfig {
                ttl_s: MAX_TTL_S + 1,
                ..d()
            }),
            "cache.ttl_s"
        );
        assert!(CacheConfig {
            ttl_s: MAX_TTL_S,
            ..d()
        }
        .compile()
        .is_ok());
        for m in [0, MAX_MAX_ENTRY_BYTES + 1, u64::MAX] {
            assert_eq!(
                bad(CacheConfig {
                    max_entry_bytes: m,
                    ..d()
                }),
                "cache.max_entry_bytes"
            );
        }
        for t in [0, 5001] {
            assert_eq!(
                bad(CacheConfig {
                    timeout_ms: t,
                    ..d()
                }),
                "cache.timeout_ms"
            );
        }
        for c in ["", "a b", "a\nb"] {
            assert_eq!(
                bad(CacheConfig {
                    cluster: c.into(),
                    ..d()
                }),
                "cache.cluster"
            );
        }
    }

    // --- key

    #[test]
    fn key_shape() {
        let c = cache();
        let k = c.key("acme", Api::OpenAi, &base(), None);
        assert!(k.starts_with("llmgate:cache:"));
        let h = k.strip_prefix("llmgate:cache:").unwrap();
        assert_eq!(h.len(), 64);
        assert!(h
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        // Privacy: no prompt text, no tenant, no model in the key.
        assert!(!k.contains("hi") && !k.contains("acme") && !k.contains("gpt"));
        // Stable across calls.
        assert_eq!(k, c.key("acme", Api::OpenAi, &base(), None));
    }

    #[test]
    fn key_ignores_order_whitespace_escapes_and_number_forms() {
        let c = cache();
        let a = parse(
            r#"{"model":"m","temperature":0,"top_p":1,"max_tokens":100,"messages":[{"role":"user","content":"héllo"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"a":1,"b":2}}}]}"#,
        );
        let b = parse(
            "{ \"tools\" : [ { \"function\" : { \"parameters\" : { \"b\" : 2.0 , \"a\" : 1e0 } , \"name\" : \"f\" } , \"type\" : \"function\" } ] ,\n\t\"messages\":[{\"content\":\"h\\u00e9llo\",\"role\":\"user\"}], \"max_tokens\": 1E2, \"top_p\": 1.0, \"temperature\": 0e0, \"model\": \"m\" }",
        );
        assert_eq!(
            c.key("t", Api::OpenAi, &a, None),
            c.key("t", Api::OpenAi, &b, None)
        );
        for zero in ["0", "0.0", "0e0", "-0", "-0.0", "0E+5", "0.000"] {
            let z = parse(&format!(
                r#"{{"model":"m","messages":[],"temperature":{zero}}}"#
            ));
            let z0 = parse(r#"{"model":"m","messages":[],"temperature":0}"#);
            assert_eq!(
                c.key("t", Api::OpenAi, &z, None),
                c.key("t", Api::OpenAi, &z0, None),
                "{zero}"
            );
        }
        // Different values still differ.
        let t1 = parse(r#"{"model":"m","messages":[],"temperature":0.1}"#);
        let t2 = parse(r#"{"model":"m","messages":[],"temperature":0.10000001}"#);
        assert_ne!(
            c.key("t", Api::OpenAi, &t1, None),
            c.key("t", Api::OpenAi, &t2, None)
        );
        // Top-level null is absent.
        let mut n = base();
        n.insert("seed".into(), Value::Null);
        assert_eq!(
            c.key("t", Api::OpenAi, &n, None),
            c.key("t", Api::OpenAi, &base(), None)
        );
    }

    #[test]
    fn canonical_numbers() {
        let cases = [
            ("0", "0"),
            ("-0", "0"),
            ("0.0", "0"),
            ("1", "1"),
            ("1.0", "1"),
            ("1e2", "100"),
            ("-5", "-5"),
            ("-5.0", "-5"),
            ("0.5", "0.5"),
            ("1e-7", "0.0000001"),
            ("18446744073709551615", "18446744073709551615"),
            ("1e19", "10000000000000000000"),
            ("-9223372036854775808", "-9223372036854775808"),
        ];
        for (input, want) in cases {
            let v: Value = serde_json::from_str(input).unwrap();
            let Value::Number(n) = v else { panic!() };
            assert_eq!(canonical_number(&n), want, "{input}");
        }
    }

    #[test]
    fn canonical_form_is_readable_and_sorted() {
        let c = cache();
        let body = parse(
            r#"{"user":"u","model":"m","messages":[{"z":"\"q\\\n","a":null}],"stream":true,"stream_options":{"include_usage":true}}"#,
        );
        assert_eq!(
            c.canonical_form("t", Api::Anthropic, &body, Some("greet@3")),
            r#"{"scheme":"llmgate-cache-key/1","tenant":"t","api":"anthropic","prompt_version":"greet@3","stream":true,"include_usage":true,"body":{"model":"m","messages":[{"a":null,"z":"\"q\\\u000a"}]}}"#
        );
    }

    #[test]
    fn every_listed_field_changes_the_key() {
        let c = cache();
        let k0 = c.key("t", Api::OpenAi, &base(), None);
        let mut seen = std::collections::HashSet::new();
        seen.insert(k0.clone());
        for field in KEY_FIELDS {
            let mut b = base();
            let v = match *field {
                "model" => json!("gpt-4o-mini"),
                "messages" => json!([{"role":"user","content":"hello"}]),
                _ => json!(7),
            };
            b.insert((*field).to_string(), v);
            let k = c.key("t", Api::OpenAi, &b, None);
            assert!(seen.insert(k), "{field} did not change the key");
            // And a different value of it changes it again.
            let mut b2 = b.clone();
            b2.insert((*field).to_string(), json!({"x": [1, "y"]}));
            assert!(seen.insert(c.key("t", Api::OpenAi, &b2, None)), "{field}");
        }
        // API, stream and include_usage too.
        assert!(seen.insert(c.key("t", Api::Anthropic, &base(), None)));
        let mut s = base();
        s.insert("stream".into(), json!(true));
        assert!(seen.insert(c.key("t", Api::OpenAi, &s, None)));
        s.insert("stream_options".into(), json!({"include_usage": true}));
        assert!(seen.insert(c.key("t", Api::OpenAi, &s, None)));
        // stream_options.include_usage false/absent/other options: same.
        let mut s2 = s.clone();
        s2.insert(
            "stream_options".into(),
            json!({"include_usage": true, "x": 1}),
        );
        assert_eq!(
            c.key("t", Api::OpenAi, &s, None),
            c.key("t", Api::OpenAi, &s2, None)
        );
        let mut s3 = base();
        s3.insert("stream".into(), json!(true));
        let k_stream = c.key("t", Api::OpenAi, &s3, None);
        s3.insert("stream_options".into(), json!({"include_usage": false}));
        assert_eq!(k_stream, c.key("t", Api::OpenAi, &s3, None));
        // include_usage without stream: irrelevant; stream false == absent.
        let mut ns = base();
        ns.insert("stream".into(), json!(false));
        ns.insert("stream_options".into(), json!({"include_usage": true}));
        assert_eq!(k0, c.key("t", Api::OpenAi, &ns, None));
    }

    #[test]
    fn unlisted_fields_do_not_change_the_key() {
        let c = cache();
        let k0 = c.key("t", Api::OpenAi, &base(), None);
        for (f, v) in [
            ("user", json!("end-user-42")),
            ("metadata", json!({"a": "b"})),
            ("store", json!(true)),
            ("service_tier", json!("auto")),
            ("something_new", json!(1)),
        ] {
            let mut b = base();
            b.insert(f.into(), v);
            assert_eq!(k0, c.key("t", Api::OpenAi, &b, None), "{f}");
        }
    }

    #[test]
    fn tenants_are_isolated_unless_shared() {
        let c = cache();
        let b = base();
        assert_ne!(
            c.key("a", Api::OpenAi, &b, None),
            c.key("b", Api::OpenAi, &b, None)
        );
        let shared = CacheConfig {
            shared: true,
            ..CacheConfig::default()
        }
        .compile()
        .unwrap();
        assert_eq!(
            shared.key("a", Api::OpenAi, &b, None),
            shared.key("b", Api::OpenAi, &b, None)
        );
        // A shared key equals no tenant's key, even a tenant named like the marker.
        for t in ["", "shared", "true"] {
            assert_ne!(
                shared.key("a", Api::OpenAi, &b, None),
                c.key(t, Api::OpenAi, &b, None)
            );
        }
        // Prefix is used as configured.
        let p = CacheConfig {
            prefix: "x:".into(),
            ..CacheConfig::default()
        }
        .compile()
        .unwrap();
        assert!(p.key("a", Api::OpenAi, &b, None).starts_with("x:"));
        // Tenant names cannot be confused with separators.
        assert_ne!(
            c.key("a\",\"api\":\"openai", Api::OpenAi, &b, None),
            c.key("a", Api::OpenAi, &b, None)
        );
    }

    #[test]
    fn prompt_version_changes_the_key() {
        let c = cache();
        let b = base();
        let none = c.key("t", Api::OpenAi, &b, None);
        let v1 = c.key("t", Api::OpenAi, &b, Some("greet@1"));
        let v2 = c.key("t", Api::OpenAi, &b, Some("greet@2"));
        assert_ne!(none, v1);
        assert_ne!(v1, v2);
        assert_ne!(none, c.key("t", Api::OpenAi, &b, Some("")));
    }

    // --- policy

    #[test]
    fn cacheable_policy() {
        let c = cache();
        let with = |f: &str, v: Value| {
            let mut b = base();
            b.insert(f.into(), v);
            b
        };
        assert!(c.cacheable_request(&base()));
        assert!(c.cacheable_request(&with("temperature", json!(0))));
        assert!(c.cacheable_request(&with("temperature", json!(0.0))));
        assert!(c.cacheable_request(&with("temperature", Value::Null)));
        assert!(!c.cacheable_request(&with("temperature", json!(0.7))));
        assert!(!c.cacheable_request(&with("temperature", json!("0"))));
        assert!(c.cacheable_request(&with("n", json!(1))));
        assert!(!c.cacheable_request(&with("n", json!(2))));
        assert!(!c.cacheable_request(&with("n", json!("1"))));
        let any = CacheConfig {
            only_deterministic: false,
            ..CacheConfig::default()
        }
        .compile()
        .unwrap();
        assert!(any.cacheable_request(&with("temperature", json!(0.7))));
        assert!(!any.cacheable_request(&with("n", json!(2))));
    }

    #[test]
    fn client_header() {
        use ClientCache::*;
        for (h, want) in [
            (None, Default),
            (Some(""), Default),
            (Some("no-cache"), NoCache),
            (Some("No-Cache"), NoCache),
            (Some("  NO-STORE "), NoStore),
            (Some("no-cache, no-store"), NoStore),
            (Some("no-store,no-cache"), NoStore),
            (Some("foo, no-cache"), NoCache),
            (Some("max-age=0"), Default),
            (Some("nocache"), Default),
            (Some(",,,"), Default),
        ] {
            assert_eq!(ClientCache::from_header(h), want, "{h:?}");
        }
    }

    #[test]
    fn plans() {
        let c = cache();
        let b = base();
        assert_eq!(c.plan(ClientCache::Default, &b), Plan::LookupAndStore);
        assert_eq!(c.plan(ClientCache::NoCache, &b), Plan::StoreOnly);
        assert_eq!(c.plan(ClientCache::NoStore, &b), Plan::Bypass);
        let mut hot = base();
        hot.insert("temperature".into(), json!(1));
        assert_eq!(c.plan(ClientCache::Default, &hot), Plan::Bypass);
        assert_eq!(c.plan(ClientCache::NoCache, &hot), Plan::Bypass);
        let off = CompiledCache::default();
        assert_eq!(off.plan(ClientCache::Default, &b), Plan::Disabled);
        assert!(Plan::LookupAndStore.lookup() && Plan::LookupAndStore.store());
        assert!(!Plan::StoreOnly.lookup() && Plan::StoreOnly.store());
        assert!(!Plan::Bypass.lookup() && !Plan::Bypass.store());
        assert!(!Plan::Disabled.lookup() && !Plan::Disabled.store());
    }

    #[test]
    fn store_policy() {
        let c = CacheConfig {
            max_entry_bytes: 100,
            ..CacheConfig::default()
        }
        .compile()
        .unwrap();
        let j = Some("application/json");
        assert!(c.should_store(200, j, 100));
        assert!(c.should_store(200, Some("Application/JSON; charset=utf-8"), 1));
        assert!(c.should_store(200, Some("text/event-stream"), 1));
        assert!(!c.should_store(200, j, 101));
        assert!(!c.should_store(200, j, 0));
        assert!(!c.should_store(201, j, 10));
        assert!(!c.should_store(500, j, 10));
        assert!(!c.should_store(200, None, 10));
        assert!(!c.should_store(200, Some("text/html"), 10));
        assert!(!c.should_store(200, Some("application/json\r\nx: y"), 10));
    }

    #[test]
    fn age() {
        let e = sample_entry();
        assert_eq!(age_s(&e, e.created_ms), 0);
        assert_eq!(age_s(&e, e.created_ms + 999), 0);
        assert_eq!(age_s(&e, e.created_ms + 61_000), 61);
        assert_eq!(age_s(&e, 0), 0);
        assert_eq!(age_s(&e, u64::MAX), (u64::MAX - e.created_ms) / 1000);
    }

    // --- entries

    #[test]
    fn encode_decode_round_trip() {
        let e = sample_entry();
        let bytes = encode(&e);
        assert!(bytes.starts_with(b"{\""));
        assert!(bytes.ends_with(&e.body));
        assert_eq!(decode(&bytes).unwrap(), e);
        // Streams, binary bodies with newlines, no model/usage, empty body.
        let s = Entry {
            api: Api::Anthropic,
            stream: true,
            content_type: "text/event-stream".into(),
            created_ms: 0,
            model: None,
            usage: None,
            body: b"event: a\ndata: {}\n\n\x00\xff\n".to_vec(),
        };
        assert_eq!(decode(&encode(&s)).unwrap(), s);
        let empty = Entry {
            body: Vec::new(),
            ..s.clone()
        };
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
        // An unstorable model name is dropped, the rest survives.
        let long = Entry {
            model: Some("m".repeat(300)),
            ..e.clone()
        };
        assert_eq!(decode(&encode(&long)).unwrap().model, None);
    }

    #[test]
    fn decode_rejects_malformed() {
        let good = encode(&sample_entry());
        let nl = good.iter().position(|&b| b == b'\n').unwrap();
        let head = std::str::from_utf8(&good[..nl]).unwrap().to_string();
        let body = &good[nl + 1..];
        let with_head = |h: &str| {
            assert_ne!(h, head, "the test's replacement did not apply");
            let mut v = h.as_bytes().to_vec();
            v.push(b'\n');
            v.extend_from_slice(body);
            v
        };
        assert_eq!(decode(b""), Err(CacheError::NoHeader));
        assert_eq!(decode(b"no newline at all"), Err(CacheError::NoHeader));
        assert_eq!(decode(&good[..nl]), Err(CacheError::NoHeader));
        assert_eq!(
            decode(&vec![b' '; MAX_HEADER_BYTES + 10]),
            Err(CacheError::NoHeader)
        );
        assert_eq!(decode(b"\n"), Err(CacheError::BadHeader));
        assert_eq!(decode(b"-ERR x\n"), Err(CacheError::BadHeader));
        assert_eq!(decode(b"[1]\nabc"), Err(CacheError::BadHeader));
        // Truncated body, extra bytes.
        assert_eq!(
            decode(&good[..good.len() - 1]),
            Err(CacheError::LengthMismatch)
        );
        let mut longer = good.clone();
        longer.push(b'x');
        assert_eq!(decode(&longer), Err(CacheError::LengthMismatch));
        // Truncated everywhere.
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "{cut}");
        }
        // Version.
        assert_eq!(
            decode(&with_head(&head.replace("\"v\":1", "\"v\":2"))),
            Err(CacheError::WrongVersion)
        );
        assert_eq!(
            decode(&with_head(&head.replace("\"v\":1", "\"v\":\"1\""))),
            Err(CacheError::WrongVersion)
        );
        assert_eq!(
            decode(&with_head(&head.replace(",\"v\":1", ""))),
            Err(CacheError::BadHeader)
        );
        // Huge lengths.
        let len_field = format!("\"len\":{}", body.len());
        for huge in [
            "18446744073709551615",
            "99999999999999999999999",
            "-1",
            "1e300",
        ] {
            let h = head.replace(&len_field, &format!("\"len\":{huge}"));
            assert!(decode(&with_head(&h)).is_err(), "{huge}");
        }
        // Bad fields.
        assert_eq!(
            decode(&with_head(&head.replace("\"openai\"", "\"cohere\""))),
            Err(CacheError::BadField)
        );
        assert_eq!(
            decode(&with_head(
                &head.replace("application/json", "a\\r\\nset-cookie: x")
            )),
            Err(CacheError::BadField)
        );
        assert_eq!(
            decode(&with_head(&head.replace("\"application/json\"", "\"\""))),
            Err(CacheError::BadField)
        );
        assert_eq!(
            decode(&with_head(&head.replace("\"v\":1", "\"v\":1,\"x\":1"))),
            Err(CacheError::BadHeader)
        );
        assert_eq!(
            decode(&with_head(
                &head.replace("\"stream\":false", "\"stream\":0")
            )),
            Err(CacheError::BadHeader)
        );
    }

    #[test]
    fn decode_garbage_never_panics() {
        use crate::core::sse::tests::Rng;
        let good = encode(&sample_entry());
        let mut rng = Rng(0x5eed_cafe_f00d_1234);
        for round in 0..20_000 {
            let input: Vec<u8> = match round % 4 {
                // Pure noise.
                0 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
                // A good entry with a few bytes flipped.
                1 => {
                    let mut v = good.clone();
                    for _ in 0..=rng.below(4) {
                        let i = rng.below(v.len());
                        v[i] = rng.next() as u8;
                    }
                    v
                }
                // A good entry truncated or extended.
                2 => {
                    let mut v = good[..rng.below(good.len() + 1)].to_vec();
                    for _ in 0..rng.below(3) {
                        v.push(rng.next() as u8);
                    }
                    v
                }
                // JSON-ish noise with a newline.
                _ => {
                    const ALPHABET: &[u8] = b"{}[]\":,01-e.vlenaptrus \n\\";
                    (0..rng.below(120))
                        .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                        .collect()
                }
            };
            let r = decode(&input);
            if let Ok(e) = &r {
                // Anything accepted re-encodes to the body it claims.
                assert_eq!(decode(&encode(e)).unwrap(), *e);
            }
            let _ = interpret_lookup(Some(200), Some(&input));
            let _ = interpret_store(Some(200), Some(&input));
        }
    }

    // --- stream recorder

    #[test]
    fn stream_recorder_limits() {
        let mut r = StreamRecorder::new(10);
        assert!(r.is_empty());
        assert!(r.push(b"data: "));
        assert!(r.push(b"x\n\n"));
        assert_eq!(r.len(), 9);
        assert!(r.push(b"!"));
        assert_eq!(r.len(), 10);
        assert!(!r.overflowed());
        let done = r
            .clone()
            .finish(true, Api::OpenAi, "text/event-stream", 5, None, None)
            .unwrap();
        assert!(done.stream);
        assert_eq!(done.body, b"data: x\n\n!");
        assert_eq!(done.created_ms, 5);
        // Incomplete streams are never stored.
        assert!(r
            .clone()
            .finish(false, Api::OpenAi, "text/event-stream", 5, None, None)
            .is_none());
        // Crossing the limit stops recording for good and frees the buffer.
        assert!(!r.push(b"y"));
        assert!(r.overflowed());
        assert_eq!(r.len(), 0);
        assert!(!r.push(b""));
        assert!(r
            .finish(true, Api::OpenAi, "text/event-stream", 5, None, None)
            .is_none());
        // One big chunk over the limit.
        let mut r = CacheConfig {
            max_entry_bytes: 4,
            ..CacheConfig::default()
        }
        .compile()
        .unwrap()
        .stream_recorder();
        assert!(!r.push(b"12345"));
        assert!(r.overflowed());
        // Empty stream, unsafe content type: nothing.
        assert!(StreamRecorder::new(10)
            .finish(true, Api::OpenAi, "text/event-stream", 0, None, None)
            .is_none());
        let mut r = StreamRecorder::new(10);
        r.push(b"a");
        assert!(r
            .finish(true, Api::OpenAi, "bad\nct", 0, None, None)
            .is_none());
    }

    // --- webdis

    #[test]
    fn paths() {
        assert_eq!(
            lookup_path("llmgate:cache:ab12"),
            "/GET/llmgate:cache:ab12.txt"
        );
        assert_eq!(
            store_path("llmgate:cache:ab12", 3600),
            "/SETEX/llmgate:cache:ab12/3600"
        );
        assert_eq!(lookup_path("a.b"), "/GET/a%2Eb.txt");
        assert_eq!(
            encode_path_arg(b"a/b c%d?e#f\x00\xff\n{t}"),
            "a%2Fb%20c%25d%3Fe%23f%00%FF%0A%7Bt%7D"
        );
        assert_eq!(encode_path_arg("é".as_bytes()), "%C3%A9");
        assert_eq!(store_path("k.txt", 1), "/SETEX/k%2Etxt/1");
        // Real keys need no encoding at all.
        let k = cache().key("t", Api::OpenAi, &base(), None);
        assert_eq!(lookup_path(&k), format!("/GET/{k}.txt"));
    }

    #[test]
    fn lookup_answers() {
        let e = sample_entry();
        let good = encode(&e);
        assert_eq!(
            interpret_lookup(Some(200), Some(&good)),
            Lookup::Hit(e.clone())
        );
        // Missing key: 404, empty body (or none at all).
        assert_eq!(interpret_lookup(Some(404), Some(b"")), Lookup::Miss);
        assert_eq!(interpret_lookup(Some(404), None), Lookup::Miss);
        // JSON form of a missing key.
        assert_eq!(
            interpret_lookup(Some(200), Some(br#"{"GET":null}"#)),
            Lookup::Miss
        );
        // Redis errors through webdis come back as 200.
        assert_eq!(
            interpret_lookup(Some(200), Some(br#"{"GET":[false,"ERR wrong number"]}"#)),
            Lookup::Error("redis_error")
        );
        assert_eq!(
            interpret_lookup(Some(200), Some(b"-upstream failure")),
            Lookup::Error("redis_error")
        );
        assert_eq!(
            interpret_lookup(Some(200), Some(b"-ERR unknown command")),
            Lookup::Error("redis_error")
        );
        // Backend unreachable, other statuses, timeout.
        assert_eq!(
            interpret_lookup(Some(503), Some(b"")),
            Lookup::Error("unavailable")
        );
        assert_eq!(interpret_lookup(None, None), Lookup::Error("timeout"));
        for s in [0, 204, 301, 400, 403, 500, 502, 504, u32::MAX] {
            assert_eq!(
                interpret_lookup(Some(s), Some(&good)),
                Lookup::Error("http_status"),
                "{s}"
            );
        }
        // 200 with garbage.
        assert_eq!(
            interpret_lookup(Some(200), Some(b"")),
            Lookup::Error("empty")
        );
        assert_eq!(interpret_lookup(Some(200), None), Lookup::Error("empty"));
        assert_eq!(
            interpret_lookup(Some(200), Some(b"<html>oops</html>")),
            Lookup::Error("no_header")
        );
        assert_eq!(
            interpret_lookup(Some(200), Some(&good[..good.len() - 3])),
            Lookup::Error("length_mismatch")
        );
        assert_eq!(
            interpret_lookup(Some(200), Some(b"{\"v\":9}\nx")),
            Lookup::Error("wrong_version")
        );
        // A hit of another form.
        assert_eq!(
            interpret_lookup_for(Some(200), Some(&good), Api::OpenAi, true),
            Lookup::Error("entry_mismatch")
        );
        assert_eq!(
            interpret_lookup_for(Some(200), Some(&good), Api::Anthropic, false),
            Lookup::Error("entry_mismatch")
        );
        assert_eq!(
            interpret_lookup_for(Some(200), Some(&good), Api::OpenAi, false),
            Lookup::Hit(e)
        );
        assert_eq!(
            interpret_lookup_for(Some(404), None, Api::OpenAi, false),
            Lookup::Miss
        );
    }

    #[test]
    fn store_answers() {
        assert_eq!(
            interpret_store(Some(200), Some(br#"{"SETEX":[true,"OK"]}"#)),
            Ok(())
        );
        assert_eq!(
            interpret_store(Some(200), Some(b"{\"SETEX\": [true, \"OK\"]}\n")),
            Ok(())
        );
        assert_eq!(interpret_store(Some(200), Some(b"+OK\r\n")), Ok(()));
        assert_eq!(interpret_store(Some(200), Some(b"OK")), Ok(()));
        assert_eq!(
            interpret_store(
                Some(200),
                Some(br#"{"SETEX":[false,"ERR invalid expire time in 'setex' command"]}"#)
            ),
            Err("redis_error")
        );
        assert_eq!(
            interpret_store(Some(200), Some(b"-upstream failure")),
            Err("redis_error")
        );
        assert_eq!(interpret_store(Some(503), Some(b"")), Err("unavailable"));
        assert_eq!(interpret_store(None, None), Err("timeout"));
        assert_eq!(interpret_store(Some(403), None), Err("http_status"));
        for garbage in [
            &b""[..],
            b"{}",
            b"{\"SETEX\":[true,\"NO\"]}",
            b"{\"SETEX\":[true]}",
            b"{\"SETEX\":true}",
            b"{\"A\":[true,\"OK\"],\"B\":1}",
            b"\xff\xfe",
            b"[true,\"OK\"]",
        ] {
            assert_eq!(
                interpret_store(Some(200), Some(garbage)),
                Err("bad_answer"),
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    #[test]
    fn stored_value_never_looks_like_a_webdis_error() {
        // The entry header starts with `{"` and is never a one-key object,
        // so it cannot be mistaken for `-ERR` or `{"GET":[false,..]}`.
        let bytes = encode(&Entry {
            body: Vec::new(),
            ..sample_entry()
        });
        assert_eq!(bytes.first(), Some(&b'{'));
        assert_eq!(webdis_json_reply(&bytes), None);
    }
}

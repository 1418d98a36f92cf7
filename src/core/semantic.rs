//! The semantic cache tier: answers a paraphrased question from an entry
//! stored for an earlier one, found by vector similarity in Redis 8 vector
//! sets through webdis. Everything here is host-free: configuration, which
//! requests qualify, the context hash, the embeddings request and answer,
//! the two Lua scripts (search, store) and their RESP answers.
//!
//! ## What may match
//!
//! Only the **last user message** is compared by meaning. Everything else
//! that changes the answer forms a *context hash* (the exact cache's
//! canonical form with the conversation cut before the last user turn, plus
//! the embedding model and the question's literals): tenant (unless the
//! cache is `shared`), API, model, sampling parameters, tools, prompt
//! template version, stream form, the system prompt and every earlier
//! message. Each context has its own vector set, so a paraphrase inside
//! another conversation is never compared at all.
//!
//! With `match_literals` (default), the numbers and quoted strings of the
//! question (`"..."`, `“...”`, `` `...` ``, `«...»`) are part of the context:
//! "What is 2+2?" never answers "What is 2+3?".
//!
//! ## Redis layout (one hashtag per tenant, so a tenant's keys share a slot)
//!
//! - `<prefix>{<t>}:v:<ctx>`: the vector set of one context; elements are
//!   entry ids;
//! - `<prefix>{<t>}:e:<id>`: the cache entry (the exact cache's format),
//!   with the entry TTL;
//! - `<prefix>{<t>}:idx`: a sorted set of `<ctx>:<id>` by expiry (ms), used
//!   to remove expired elements and to bound the tenant's entries.
//!
//! `<t>` is the first 16 hex digits of SHA-256(tenant) (or `shared`); no
//! tenant name or text appears in a key. Vector-set elements do not expire
//! on their own: every store removes the tenant's expired elements (at most
//! [`CLEANUP_BATCH`] per store) and the oldest ones beyond
//! `max_entries_per_tenant`; a search that finds an element whose entry is
//! gone removes it (a dangling vector, counted) and tries the next one.

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::api::Api;
use super::cache::{self, CompiledCache, Entry};
use super::error::ConfigError;
use super::util::hex;

/// Default similarity threshold (cosine).
pub const DEFAULT_THRESHOLD: f64 = 0.95;
/// Default lowest question length (characters) that may be looked up.
pub const DEFAULT_MIN_CHARS: u64 = 10;
/// Default longest question (characters) that is embedded.
pub const DEFAULT_MAX_CHARS: u64 = 4000;
/// Default bound on a tenant's semantic entries.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;
/// Default webdis (vector search) timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 100;
/// Default embeddings callout timeout.
pub const DEFAULT_EMBED_TIMEOUT_MS: u64 = 1000;
/// Expired elements removed per store, at most.
pub const CLEANUP_BATCH: u32 = 64;
/// Largest embedding accepted (dimensions).
pub const MAX_DIMENSIONS: usize = 8192;

/// `cache.semantic` as written by users.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SemanticConfig {
    pub enabled: bool,
    /// Envoy cluster of the webdis in front of Redis 8 (vector sets).
    pub cluster: String,
    /// Prefix of every semantic key.
    pub prefix: String,
    /// Lowest cosine similarity served (0 < t <= 1; default 0.95).
    pub threshold: f64,
    /// Entry lifetime in seconds (default: `cache.ttl_s`).
    pub ttl_s: Option<u64>,
    /// Most semantic entries per tenant (oldest removed first).
    pub max_entries_per_tenant: u64,
    /// Questions shorter than this (characters, trimmed) are not looked up.
    pub min_chars: u64,
    /// Questions longer than this are not embedded.
    pub max_chars: u64,
    /// Numbers and quoted strings of the question must match exactly.
    pub match_literals: bool,
    /// Nearest neighbours examined per search (1-16).
    pub candidates: u32,
    /// Timeout of each vector search / store callout (ms).
    pub timeout_ms: u64,
    pub embeddings: EmbeddingsConfig,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            cluster: "webdis_vectors".to_string(),
            prefix: "llmgate:sem:".to_string(),
            threshold: DEFAULT_THRESHOLD,
            ttl_s: None,
            max_entries_per_tenant: DEFAULT_MAX_ENTRIES,
            min_chars: DEFAULT_MIN_CHARS,
            max_chars: DEFAULT_MAX_CHARS,
            match_literals: true,
            candidates: 4,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            embeddings: EmbeddingsConfig::default(),
        }
    }
}

/// `cache.semantic.embeddings`: an OpenAI-compatible `/v1/embeddings`
/// upstream (the OpenAI credential is injected as for chat).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingsConfig {
    pub cluster: String,
    /// `:authority` of the callout (default: the cluster name).
    pub authority: Option<String>,
    pub path: String,
    pub model: String,
    pub timeout_ms: u64,
    /// `base64` (default, compact) or `float`.
    pub encoding_format: String,
}

impl Default for EmbeddingsConfig {
    fn default() -> Self {
        Self {
            cluster: "embeddings".to_string(),
            authority: None,
            path: "/v1/embeddings".to_string(),
            model: "text-embedding-3-small".to_string(),
            timeout_ms: DEFAULT_EMBED_TIMEOUT_MS,
            encoding_format: "base64".to_string(),
        }
    }
}

/// The validated section.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledSemantic {
    pub enabled: bool,
    pub cluster: String,
    pub prefix: String,
    pub threshold: f64,
    pub ttl_s: Option<u64>,
    pub max_entries: u64,
    pub min_chars: usize,
    pub max_chars: usize,
    pub match_literals: bool,
    pub candidates: u32,
    pub timeout_ms: u64,
    pub embed_cluster: String,
    pub embed_authority: String,
    pub embed_path: String,
    pub embed_model: String,
    pub embed_timeout_ms: u64,
    pub embed_base64: bool,
    /// `/EVAL/<search script>/1/` (percent-encoded once, at load).
    search_prefix: String,
    /// `/<min score>/<candidates>.raw`: the search's last arguments.
    search_suffix: String,
    /// `/EVAL/<store script>/3/`.
    store_prefix: String,
}

impl Default for CompiledSemantic {
    fn default() -> Self {
        // The defaults always compile; a disabled section if they ever did not.
        SemanticConfig::default()
            .compile()
            .unwrap_or_else(|_| Self::disabled())
    }
}

impl SemanticConfig {
    pub fn compile(&self) -> Result<CompiledSemantic, ConfigError> {
        cache::check_cluster("cache.semantic.cluster", &self.cluster)?;
        cache::check_prefix("cache.semantic.prefix", &self.prefix)?;
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(ConfigError::new(
                "cache.semantic.threshold",
                "must be a cosine similarity in (0, 1]",
            ));
        }
        if let Some(t) = self.ttl_s {
            if t == 0 || t > cache::MAX_TTL_S {
                return Err(ConfigError::new(
                    "cache.semantic.ttl_s",
                    format!("must be between 1 and {}", cache::MAX_TTL_S),
                ));
            }
        }
        if self.max_entries_per_tenant == 0 || self.max_entries_per_tenant > 10_000_000 {
            return Err(ConfigError::new(
                "cache.semantic.max_entries_per_tenant",
                "must be between 1 and 10000000",
            ));
        }
        if self.max_chars == 0 || self.max_chars > 100_000 {
            return Err(ConfigError::new(
                "cache.semantic.max_chars",
                "must be between 1 and 100000",
            ));
        }
        if self.min_chars > self.max_chars {
            return Err(ConfigError::new(
                "cache.semantic.min_chars",
                "must be at most max_chars",
            ));
        }
        if self.candidates == 0 || self.candidates > 16 {
            return Err(ConfigError::new(
                "cache.semantic.candidates",
                "must be between 1 and 16",
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > cache::MAX_TIMEOUT_MS {
            return Err(ConfigError::new(
                "cache.semantic.timeout_ms",
                format!("must be between 1 and {}", cache::MAX_TIMEOUT_MS),
            ));
        }
        let e = &self.embeddings;
        cache::check_cluster("cache.semantic.embeddings.cluster", &e.cluster)?;
        if let Some(a) = &e.authority {
            if a.is_empty() || a.len() > 255 || !a.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::new(
                    "cache.semantic.embeddings.authority",
                    "must be a host[:port] (printable ASCII, no spaces)",
                ));
            }
        }
        if !e.path.starts_with('/')
            || e.path.len() > 1024
            || !e.path.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::new(
                "cache.semantic.embeddings.path",
                "must be an absolute path (printable ASCII)",
            ));
        }
        if e.model.is_empty() || e.model.len() > 256 || e.model.chars().any(char::is_control) {
            return Err(ConfigError::new(
                "cache.semantic.embeddings.model",
                "must be a model name (1-256 characters)",
            ));
        }
        if e.timeout_ms == 0 || e.timeout_ms > 30_000 {
            return Err(ConfigError::new(
                "cache.semantic.embeddings.timeout_ms",
                "must be between 1 and 30000",
            ));
        }
        let embed_base64 = match e.encoding_format.as_str() {
            "base64" => true,
            "float" => false,
            _ => {
                return Err(ConfigError::new(
                    "cache.semantic.embeddings.encoding_format",
                    "must be \"base64\" or \"float\"",
                ))
            }
        };
        Ok(CompiledSemantic {
            enabled: self.enabled,
            cluster: self.cluster.clone(),
            prefix: self.prefix.clone(),
            threshold: self.threshold,
            ttl_s: self.ttl_s,
            max_entries: self.max_entries_per_tenant,
            min_chars: usize::try_from(self.min_chars).unwrap_or(usize::MAX),
            max_chars: usize::try_from(self.max_chars).unwrap_or(usize::MAX),
            match_literals: self.match_literals,
            candidates: self.candidates,
            timeout_ms: self.timeout_ms,
            embed_cluster: e.cluster.clone(),
            embed_authority: e.authority.clone().unwrap_or_else(|| e.cluster.clone()),
            embed_path: e.path.clone(),
            embed_model: e.model.clone(),
            embed_timeout_ms: e.timeout_ms,
            embed_base64,
            search_prefix: format!(
                "/EVAL/{}/1/",
                cache::encode_path_arg(SEARCH_SCRIPT.as_bytes())
            ),
            search_suffix: format!(
                "/{}/{}.raw",
                cache::encode_path_arg(format!("{:.6}", (1.0 + self.threshold) / 2.0).as_bytes()),
                self.candidates
            ),
            store_prefix: format!(
                "/EVAL/{}/3/",
                cache::encode_path_arg(STORE_SCRIPT.as_bytes())
            ),
        })
    }
}

impl CompiledSemantic {
    fn disabled() -> Self {
        Self {
            enabled: false,
            cluster: String::new(),
            prefix: String::new(),
            threshold: DEFAULT_THRESHOLD,
            ttl_s: None,
            max_entries: DEFAULT_MAX_ENTRIES,
            min_chars: 0,
            max_chars: 0,
            match_literals: true,
            candidates: 1,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            embed_cluster: String::new(),
            embed_authority: String::new(),
            embed_path: String::new(),
            embed_model: String::new(),
            embed_timeout_ms: DEFAULT_EMBED_TIMEOUT_MS,
            embed_base64: true,
            search_prefix: String::new(),
            search_suffix: String::new(),
            store_prefix: String::new(),
        }
    }
}

// ---------------------------------------------------------------------------
// Which requests qualify, and the context

/// Whether `x-llmgate-cache` asks to skip the semantic tier.
pub fn opted_out(header: Option<&str>) -> bool {
    header
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .any(|t| t.eq_ignore_ascii_case("no-semantic"))
}

/// The text of the last message when it is a user turn made only of text
/// (an OpenAI string or text parts; Anthropic text blocks). Anything else
/// (a tool result, an image, an assistant prefill) does not qualify.
pub fn question(body: &Map<String, Value>) -> Option<String> {
    let Some(Value::Array(messages)) = body.get("messages") else {
        return None;
    };
    let last = messages.last()?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    match last.get("content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                if p.get("type").and_then(Value::as_str) != Some("text") {
                    return None;
                }
                let t = p.get("text").and_then(Value::as_str)?;
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(t);
            }
            Some(out)
        }
        _ => None,
    }
}

/// The question's numbers (digit runs, with `.` `,` between digits) and
/// quoted strings, sorted: they must match exactly for a semantic hit.
pub fn literals(q: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let chars: Vec<char> = q.chars().collect();
    let mut i = 0usize;
    while let Some(&c) = chars.get(i) {
        if c.is_ascii_digit() {
            let start = i;
            let mut j = i;
            while let Some(&d) = chars.get(j) {
                let sep_then_digit = matches!(d, '.' | ',')
                    && chars
                        .get(j.saturating_add(1))
                        .is_some_and(char::is_ascii_digit);
                if d.is_ascii_digit() || sep_then_digit {
                    j = j.saturating_add(1);
                } else {
                    break;
                }
            }
            out.push(chars.get(start..j).unwrap_or_default().iter().collect());
            i = j;
            continue;
        }
        let close = match c {
            '"' => Some('"'),
            '`' => Some('`'),
            '\u{201c}' => Some('\u{201d}'),
            '\u{ab}' => Some('\u{bb}'),
            _ => None,
        };
        if let Some(close) = close {
            let rest = chars.get(i.saturating_add(1)..).unwrap_or_default();
            if let Some(end) = rest.iter().position(|&x| x == close) {
                let s: String = rest.get(..end).unwrap_or_default().iter().collect();
                out.push(format!("q:{s}"));
                i = i.saturating_add(end).saturating_add(2);
                continue;
            }
        }
        i = i.saturating_add(1);
    }
    out.sort_unstable();
    out
}

/// One request's semantic lookup: where to search and store, and what to
/// embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The last user message (embedded; never logged or stored).
    pub question: String,
    pub vset_key: String,
    pub entry_key: String,
    pub entry_prefix: String,
    pub idx_key: String,
    pub vset_prefix: String,
    /// `<ctx>:<id>` in the index.
    pub member: String,
    /// The element name in the vector set.
    pub id: String,
}

/// Why a request does not use the semantic tier (for a metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The last message is not a plain user text turn.
    NotAQuestion,
    TooShort,
    TooLong,
}

impl Skip {
    pub fn reason(self) -> &'static str {
        match self {
            Skip::NotAQuestion => "not_a_question",
            Skip::TooShort => "too_short",
            Skip::TooLong => "too_long",
        }
    }
}

impl CompiledSemantic {
    /// The request's question (the last user message), if its length
    /// qualifies for the semantic tier.
    fn qualifying_question(&self, body: &Map<String, Value>) -> Result<String, Skip> {
        let q = question(body).ok_or(Skip::NotAQuestion)?;
        let n = q.trim().chars().count();
        if n < self.min_chars.max(1) {
            return Err(Skip::TooShort);
        }
        if n > self.max_chars {
            return Err(Skip::TooLong);
        }
        Ok(q)
    }

    /// The lookup of a request the exact cache would look up and store
    /// (`exact_key` is its exact key), or why it does not qualify.
    pub fn lookup(
        &self,
        cache: &CompiledCache,
        tenant: &str,
        api: Api,
        body: &Map<String, Value>,
        prompt_version: Option<&str>,
        exact_key: &str,
    ) -> Result<Lookup, Skip> {
        let q = self.qualifying_question(body)?;
        let messages: &[Value] = match body.get("messages") {
            Some(Value::Array(m)) => m.get(..m.len().saturating_sub(1)).unwrap_or_default(),
            _ => &[],
        };
        let lits = if self.match_literals {
            literals(&q)
        } else {
            Vec::new()
        };
        let mut extra: Vec<&str> = vec![self.embed_model.as_str()];
        extra.extend(lits.iter().map(String::as_str));
        let ctx_full = cache.context_hash(tenant, api, body, prompt_version, messages, &extra);
        let ctx = ctx_full.get(..32).unwrap_or(&ctx_full).to_string();
        let t = if cache.shared {
            "shared".to_string()
        } else {
            let h = hex(&Sha256::digest(tenant.as_bytes()));
            h.get(..16).unwrap_or(&h).to_string()
        };
        // The exact key's hash names the entry: one element per distinct
        // request.
        let tail = exact_key.rsplit(':').next().unwrap_or(exact_key);
        let id = tail.get(..32).unwrap_or(tail).to_string();
        let base = format!("{}{{{t}}}:", self.prefix);
        Ok(Lookup {
            question: q,
            vset_key: format!("{base}v:{ctx}"),
            entry_key: format!("{base}e:{id}"),
            entry_prefix: format!("{base}e:"),
            idx_key: format!("{base}idx"),
            vset_prefix: format!("{base}v:"),
            member: format!("{ctx}:{id}"),
            id,
        })
    }

    /// The embedding tokens a request would spend if it reached the
    /// semantic tier (its question's characters / 4, rounded up), for the
    /// budget reservation; `None` when its question does not qualify.
    pub fn embedding_estimate(&self, body: &Map<String, Value>) -> Option<u64> {
        let q = self.qualifying_question(body).ok()?;
        Some(
            u64::try_from(q.chars().count())
                .unwrap_or(u64::MAX)
                .div_ceil(4),
        )
    }

    /// The lifetime of semantic entries.
    pub fn ttl_s(&self, cache: &CompiledCache) -> u64 {
        self.ttl_s.unwrap_or(cache.ttl_s)
    }
}

// ---------------------------------------------------------------------------
// Embeddings

/// The embeddings request body for a question.
pub fn embed_body(sem: &CompiledSemantic, question: &str) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("model".into(), Value::from(sem.embed_model.as_str()));
    m.insert("input".into(), Value::from(question));
    m.insert(
        "encoding_format".into(),
        Value::from(if sem.embed_base64 { "base64" } else { "float" }),
    );
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

/// An embedding: the vector as little-endian f32 (what `VADD`/`VSIM FP32`
/// take) and the tokens the provider counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub fp32: Vec<u8>,
    pub tokens: Option<u64>,
}

/// Reads an embeddings answer: status 200, `data[0].embedding` as an array
/// of numbers or a base64 string of little-endian f32, 1-8192 dimensions,
/// finite, not all zero. Errors are reasons for a metric.
pub fn parse_embedding(
    status: Option<u32>,
    body: Option<&[u8]>,
) -> Result<Embedding, &'static str> {
    match status {
        None => return Err("timeout"),
        Some(200) => {}
        Some(_) => return Err("http_status"),
    }
    let v: Value = serde_json::from_slice(body.unwrap_or_default()).map_err(|_| "bad_json")?;
    let emb = v
        .get("data")
        .and_then(|d| d.get(0))
        .and_then(|d| d.get("embedding"))
        .ok_or("no_embedding")?;
    let fp32 = match emb {
        Value::Array(xs) => {
            if xs.is_empty() || xs.len() > MAX_DIMENSIONS {
                return Err("bad_dimensions");
            }
            let mut out = Vec::with_capacity(xs.len().saturating_mul(4));
            for x in xs {
                let f = x.as_f64().ok_or("bad_vector")? as f32;
                out.extend_from_slice(&f.to_le_bytes());
            }
            out
        }
        Value::String(s) => {
            let bytes = base64_decode(s).ok_or("bad_vector")?;
            if bytes.is_empty() || bytes.len() % 4 != 0 || bytes.len() / 4 > MAX_DIMENSIONS {
                return Err("bad_dimensions");
            }
            bytes
        }
        _ => return Err("bad_vector"),
    };
    let mut nonzero = false;
    for c in fp32.chunks_exact(4) {
        let f = f32::from_le_bytes([
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
            c.get(2).copied().unwrap_or(0),
            c.get(3).copied().unwrap_or(0),
        ]);
        if !f.is_finite() {
            return Err("bad_vector");
        }
        nonzero |= f != 0.0;
    }
    if !nonzero {
        return Err("zero_vector");
    }
    let tokens = v
        .get("usage")
        .and_then(|u| u.get("prompt_tokens").or_else(|| u.get("total_tokens")))
        .and_then(Value::as_u64);
    Ok(Embedding { fp32, tokens })
}

/// Standard base64 (padding optional); `None` on any other character.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let trimmed = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(trimmed.len().saturating_mul(3) / 4);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &c in trimmed.as_bytes() {
        acc = (acc << 6) | val(c)?;
        bits = bits.saturating_add(6);
        if bits >= 8 {
            bits = bits.saturating_sub(8);
            out.push(((acc >> bits) & 0xff) as u8);
            acc &= (1u32 << bits).saturating_sub(1);
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// Vector search and store (Lua through webdis, answers in RESP: `.raw`)

/// Search: the nearest `candidates` elements of the context's set; the
/// first whose entry still exists and whose score reaches the threshold is
/// the answer; elements whose entry is gone are removed.
/// KEYS[1] vset; ARGV: entry prefix, min score, count, vector (PUT body).
/// Returns `{best score or "", entry or "", dangling removed}`.
pub const SEARCH_SCRIPT: &str =
    "local r=redis.call('VSIM',KEYS[1],'FP32',ARGV[4],'WITHSCORES','COUNT',tonumber(ARGV[3])) \
local best='' local gone=0 \
for i=1,#r,2 do local s=r[i+1] if best=='' then best=s end \
if tonumber(s)<tonumber(ARGV[2]) then break end \
local v=redis.call('GET',ARGV[1]..r[i]) if v then return {s,v,gone} end \
redis.call('VREM',KEYS[1],r[i]) gone=gone+1 end \
return {best,'',gone}";

/// Store: the entry (with its TTL), its vector, its index member; then
/// the tenant's expired elements and the oldest beyond the bound go.
/// KEYS: vset, entry, idx; ARGV: ttl s, now ms, max entries, member, id,
/// vset prefix, entry prefix, vector length, cleanup batch, vector ++ entry
/// (PUT body). Returns the tenant's entry count.
pub const STORE_SCRIPT: &str = "local ttl=tonumber(ARGV[1]) local now=tonumber(ARGV[2]) local max=tonumber(ARGV[3]) \
local n=tonumber(ARGV[8]) local blob=string.sub(ARGV[10],1,n) local val=string.sub(ARGV[10],n+1) \
redis.call('SET',KEYS[2],val,'EX',ttl) \
redis.call('VADD',KEYS[1],'FP32',blob,ARGV[5]) \
redis.call('ZADD',KEYS[3],now+ttl*1000,ARGV[4]) \
local function drop(m) local c,i=string.match(m,'^([^:]+):(.+)$') \
if c then redis.call('VREM',ARGV[6]..c,i) redis.call('DEL',ARGV[7]..i) end redis.call('ZREM',KEYS[3],m) end \
for _,m in ipairs(redis.call('ZRANGEBYSCORE',KEYS[3],'-inf',now,'LIMIT',0,tonumber(ARGV[9]))) do drop(m) end \
local c=redis.call('ZCARD',KEYS[3]) \
while c>max do local p=redis.call('ZRANGE',KEYS[3],0,0) if #p==0 then break end drop(p[1]) c=c-1 end \
redis.call('EXPIRE',KEYS[1],ttl) redis.call('EXPIRE',KEYS[3],ttl) \
return c";

/// The webdis `PUT` path and body of a search.
pub fn search_request(sem: &CompiledSemantic, l: &Lookup, fp32: &[u8]) -> (String, Vec<u8>) {
    // The minimum score is the VSIM score `(1 + cosine) / 2` of the
    // threshold, fixed at load (`search_suffix`).
    let path = format!(
        "{}{}/{}{}",
        sem.search_prefix,
        cache::encode_path_arg(l.vset_key.as_bytes()),
        cache::encode_path_arg(l.entry_prefix.as_bytes()),
        sem.search_suffix,
    );
    (path, fp32.to_vec())
}

/// The webdis `PUT` path and body of a store.
pub fn store_request(
    sem: &CompiledSemantic,
    cache_cfg: &CompiledCache,
    l: &Lookup,
    fp32: &[u8],
    encoded_entry: &[u8],
    now_ms: u64,
) -> (String, Vec<u8>) {
    let enc = |s: &str| cache::encode_path_arg(s.as_bytes());
    let path = format!(
        "{}{}/{}/{}/{}/{}/{}/{}/{}/{}/{}/{}/{}.raw",
        sem.store_prefix,
        enc(&l.vset_key),
        enc(&l.entry_key),
        enc(&l.idx_key),
        sem.ttl_s(cache_cfg),
        now_ms,
        sem.max_entries,
        enc(&l.member),
        enc(&l.id),
        enc(&l.vset_prefix),
        enc(&l.entry_prefix),
        fp32.len(),
        CLEANUP_BATCH,
    );
    let mut body = Vec::with_capacity(fp32.len().saturating_add(encoded_entry.len()));
    body.extend_from_slice(fp32);
    body.extend_from_slice(encoded_entry);
    (path, body)
}

/// One RESP value (what webdis's `.raw` form returns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

/// Parses one RESP value from the start of `b`: (value, bytes used).
/// Bounded depth and sizes; `None` on anything malformed or truncated.
pub fn parse_resp(b: &[u8]) -> Option<(Resp, usize)> {
    parse_resp_depth(b, 0)
}

fn line(b: &[u8]) -> Option<(&[u8], usize)> {
    let end = b.windows(2).position(|w| w == b"\r\n")?;
    Some((b.get(..end)?, end.checked_add(2)?))
}

fn parse_resp_depth(b: &[u8], depth: u32) -> Option<(Resp, usize)> {
    if depth > 4 {
        return None;
    }
    let kind = *b.first()?;
    let (head, used) = line(b.get(1..)?)?;
    let used = used.checked_add(1)?;
    let text = std::str::from_utf8(head).ok()?;
    match kind {
        b'+' => Some((Resp::Simple(head.to_vec()), used)),
        b'-' => Some((Resp::Error(head.to_vec()), used)),
        b':' => Some((Resp::Int(text.parse().ok()?), used)),
        b'$' => {
            let n: i64 = text.parse().ok()?;
            if n < 0 {
                return Some((Resp::Bulk(None), used));
            }
            let n = usize::try_from(n).ok()?;
            let data = b.get(used..used.checked_add(n)?)?;
            let end = used.checked_add(n)?.checked_add(2)?;
            if b.get(end.checked_sub(2)?..end)? != b"\r\n" {
                return None;
            }
            Some((Resp::Bulk(Some(data.to_vec())), end))
        }
        b'*' => {
            let n: i64 = text.parse().ok()?;
            if n < 0 {
                return Some((Resp::Array(None), used));
            }
            if n > 64 {
                return None;
            }
            let mut items = Vec::new();
            let mut at = used;
            for _ in 0..n {
                let (item, k) = parse_resp_depth(b.get(at..)?, depth.saturating_add(1))?;
                items.push(item);
                at = at.checked_add(k)?;
            }
            Some((Resp::Array(Some(items)), at))
        }
        _ => None,
    }
}

impl Resp {
    fn text(&self) -> Option<String> {
        match self {
            Resp::Bulk(Some(b)) | Resp::Simple(b) => String::from_utf8(b.clone()).ok(),
            Resp::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }
}

/// The outcome of a search.
#[derive(Debug, Clone, PartialEq)]
pub enum Search {
    /// `similarity` is the cosine; `best` the nearest candidate's cosine on
    /// a miss (for the histogram).
    Hit {
        similarity: f64,
        entry: Entry,
        dangling: u64,
    },
    Miss {
        best: Option<f64>,
        dangling: u64,
    },
    /// Count it (label: the reason) and treat it as a miss.
    Error(&'static str),
}

/// Interprets webdis's answer to the search script.
pub fn interpret_search(status: Option<u32>, body: Option<&[u8]>) -> Search {
    match status {
        None => return Search::Error("timeout"),
        Some(200) => {}
        Some(503) => return Search::Error("unavailable"),
        Some(_) => return Search::Error("http_status"),
    }
    let body = body.unwrap_or_default();
    let Some((resp, _)) = parse_resp(body) else {
        return Search::Error(if body.first() == Some(&b'{') {
            "redis_error"
        } else {
            "bad_reply"
        });
    };
    let items = match resp {
        Resp::Array(Some(items)) => items,
        Resp::Error(_) => return Search::Error("redis_error"),
        _ => return Search::Error("bad_reply"),
    };
    let (Some(score), Some(value), Some(gone)) = (items.first(), items.get(1), items.get(2)) else {
        return Search::Error("bad_reply");
    };
    let dangling = gone.text().and_then(|t| t.parse().ok()).unwrap_or(0);
    let cosine = score
        .text()
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|s| s.is_finite())
        .map(|s| (2.0 * s - 1.0).clamp(-1.0, 1.0));
    match value {
        Resp::Bulk(Some(v)) if !v.is_empty() => match (cache::decode(v), cosine) {
            (Ok(entry), Some(similarity)) => Search::Hit {
                similarity,
                entry,
                dangling,
            },
            (Err(e), _) => Search::Error(e.reason()),
            (_, None) => Search::Error("bad_reply"),
        },
        _ => Search::Miss {
            best: cosine,
            dangling,
        },
    }
}

/// Interprets webdis's answer to the store script.
pub fn interpret_store(status: Option<u32>, body: Option<&[u8]>) -> Result<(), &'static str> {
    match status {
        None => return Err("timeout"),
        Some(200) => {}
        Some(503) => return Err("unavailable"),
        Some(_) => return Err("http_status"),
    }
    match parse_resp(body.unwrap_or_default()) {
        Some((Resp::Int(_) | Resp::Bulk(Some(_)) | Resp::Simple(_), _)) => Ok(()),
        Some((Resp::Error(_), _)) => Err("redis_error"),
        _ => Err("bad_reply"),
    }
}

#[cfg(test)]
#[path = "semantic_tests.rs"]
mod tests;

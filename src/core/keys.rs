//! Virtual keys: authentication by SHA-256 of the presented key, tenants,
//! allowed models, and the trusted-identity alternative.

use crate::core::budget::{CompiledLimits, LimitsConfig};
use crate::core::error::ConfigError;
use crate::core::util::sha256_hex;
use serde::Deserialize;
use std::collections::HashMap;

/// One virtual key as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Stable id used in metrics, the audit log and budget counters.
    pub id: String,
    /// Lowercase hex SHA-256 of the key (`llmgate hash-key`, or
    /// `printf %s "$KEY" | sha256sum`). Not needed with trusted identity.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Tenant the key belongs to (cache namespace, tenant budgets).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Allowed models, glob patterns with `*` (default: all).
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Limits of this key (all its traffic).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Limits applied to each end user (`x-llmgate-user`) of this key.
    #[serde(default)]
    pub user_limits: LimitsConfig,
}

/// A compiled key.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    pub tenant: String,
    models: Vec<Glob>,
    pub limits: CompiledLimits,
    pub user_limits: CompiledLimits,
}

impl Key {
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|g| g.matches(model))
    }
}

/// Keys indexed by hash and by id.
#[derive(Debug, Default)]
pub struct KeyTable {
    by_hash: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
    keys: Vec<Key>,
}

impl KeyTable {
    pub fn compile(raw: &[KeyConfig], need_hash: bool) -> Result<KeyTable, ConfigError> {
        let mut t = KeyTable::default();
        for (i, k) in raw.iter().enumerate() {
            let at = |f: &str| format!("keys[{i}].{f}");
            if k.id.is_empty() || k.id.len() > 64 || !k.id.chars().all(is_label_char) {
                return Err(ConfigError::new(
                    at("id"),
                    "must be 1-64 characters of [A-Za-z0-9_-]",
                ));
            }
            if t.by_id.contains_key(&k.id) {
                return Err(ConfigError::new(at("id"), "duplicate key id"));
            }
            match &k.sha256 {
                Some(h) => {
                    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(ConfigError::new(
                            at("sha256"),
                            "must be the 64-character hex SHA-256 of the key",
                        ));
                    }
                    let h = h.to_ascii_lowercase();
                    if t.by_hash.contains_key(&h) {
                        return Err(ConfigError::new(at("sha256"), "duplicate key hash"));
                    }
                    t.by_hash.insert(h, i);
                }
                None if need_hash => {
                    return Err(ConfigError::new(at("sha256"), "is required"));
                }
                None => {}
            }
            let tenant = k.tenant.clone().unwrap_or_else(|| k.id.clone());
            if tenant.is_empty() || tenant.len() > 64 || !tenant.chars().all(is_label_char) {
                return Err(ConfigError::new(
                    at("tenant"),
                    "must be 1-64 characters of [A-Za-z0-9_-]",
                ));
            }
            let mut models = Vec::new();
            for (j, m) in k.models.iter().flatten().enumerate() {
                if m.is_empty() {
                    return Err(ConfigError::new(at(&format!("models[{j}]")), "is empty"));
                }
                models.push(Glob::new(m));
            }
            let limits = k.limits.compile().map_err(|e| e.under(&at("limits")))?;
            let user_limits = k
                .user_limits
                .compile()
                .map_err(|e| e.under(&at("user_limits")))?;
            t.by_id.insert(k.id.clone(), i);
            t.keys.push(Key {
                id: k.id.clone(),
                tenant,
                models,
                limits,
                user_limits,
            });
        }
        Ok(t)
    }

    /// The key whose hash matches the presented secret.
    pub fn by_secret(&self, secret: &str) -> Option<&Key> {
        let h = sha256_hex(secret.as_bytes());
        self.by_hash.get(&h).and_then(|i| self.keys.get(*i))
    }

    pub fn by_id(&self, id: &str) -> Option<&Key> {
        self.by_id.get(id).and_then(|i| self.keys.get(*i))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter()
    }
}

pub fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// The key a client presented: `Authorization: Bearer <key>` or
/// `x-api-key: <key>`.
pub fn presented_key<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(a) = authorization {
        let a = a.trim();
        let rest = a
            .strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("bearer "))
            .map(str::trim);
        if let Some(k) = rest.filter(|k| !k.is_empty()) {
            return Some(k);
        }
    }
    x_api_key.map(str::trim).filter(|k| !k.is_empty())
}

/// A glob with `*` wildcards (any run of characters).
#[derive(Debug, Clone)]
pub struct Glob {
    parts: Vec<String>,
    anchored_start: bool,
    anchored_end: bool,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Self {
            parts: pattern
                .split('*')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
            anchored_start: !pattern.starts_with('*'),
            anchored_end: !pattern.ends_with('*'),
        }
    }

    /// Whether the pattern has a `*`.
    pub fn is_wildcard(&self) -> bool {
        !self.anchored_start || !self.anchored_end || self.parts.len() > 1
    }

    pub fn matches(&self, s: &str) -> bool {
        let mut rest = s;
        let n = self.parts.len();
        for (i, part) in self.parts.iter().enumerate() {
            let first = i == 0;
            let last = i + 1 == n;
            if first && self.anchored_start {
                match rest.strip_prefix(part.as_str()) {
                    Some(r) => rest = r,
                    None => return false,
                }
                if last && self.anchored_end {
                    return rest.is_empty();
                }
                continue;
            }
            if last && self.anchored_end {
                return rest.ends_with(part.as_str());
            }
            match rest.find(part.as_str()) {
                Some(pos) => rest = rest.get(pos.saturating_add(part.len())..).unwrap_or(""),
                None => return false,
            }
        }
        if n == 0 {
            // "" matches only "", "*" matches all.
            return !self.anchored_start || s.is_empty();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("*", "anything", true),
            ("gpt-4o*", "gpt-4o-mini", true),
            ("gpt-4o*", "gpt-4", false),
            ("gpt-4o", "gpt-4o", true),
            ("gpt-4o", "gpt-4o-mini", false),
            ("claude-*-haiku*", "claude-3-5-haiku-latest", true),
            ("claude-*-haiku*", "claude-3-5-sonnet", false),
            ("*mini", "gpt-4o-mini", true),
            ("*mini", "gpt-4o-mini-x", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("", "", true),
            ("", "x", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(Glob::new(p).matches(s), want, "{p} vs {s}");
        }
    }

    #[test]
    fn presented() {
        assert_eq!(presented_key(Some("Bearer abc"), None), Some("abc"));
        assert_eq!(presented_key(Some("Basic abc"), Some("k")), Some("k"));
        assert_eq!(presented_key(Some("Bearer "), None), None);
        assert_eq!(presented_key(None, Some(" k ")), Some("k"));
        assert_eq!(presented_key(None, None), None);
    }

    #[test]
    fn table() {
        let raw: Vec<KeyConfig> = serde_json::from_str(&format!(
            r#"[{{"id":"a","sha256":"{}","tenant":"t1","models":["gpt-*"]}}]"#,
            sha256_hex(b"secret")
        ))
        .unwrap();
        let t = KeyTable::compile(&raw, true).unwrap();
        let k = t.by_secret("secret").unwrap();
        assert_eq!(k.tenant, "t1");
        assert!(k.allows_model("gpt-4o"));
        assert!(!k.allows_model("claude-3"));
        assert!(t.by_secret("other").is_none());
    }

    #[test]
    fn table_errors_name_fields() {
        let raw: Vec<KeyConfig> =
            serde_json::from_str(r#"[{"id":"a","sha256":"nothex"}]"#).unwrap();
        assert_eq!(
            KeyTable::compile(&raw, true).unwrap_err().field,
            "keys[0].sha256"
        );
        let raw: Vec<KeyConfig> = serde_json::from_str(r#"[{"id":"a b"}]"#).unwrap();
        assert_eq!(
            KeyTable::compile(&raw, false).unwrap_err().field,
            "keys[0].id"
        );
        let raw: Vec<KeyConfig> = serde_json::from_str(r#"[{"id":"a"},{"id":"a"}]"#).unwrap();
        assert_eq!(
            KeyTable::compile(&raw, false).unwrap_err().field,
            "keys[1].id"
        );
    }
}

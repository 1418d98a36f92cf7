//! Server-side prompt templates: versions, `{{variable}}` rendering, sticky
//! A/B assignment, and applying the rendered prompt as the system prompt.

use crate::core::api::{Api, ApiError};
use crate::core::error::ConfigError;
use crate::core::keys::is_label_char;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

/// One prompt as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    /// Version name → template text with `{{variable}}` placeholders.
    pub versions: BTreeMap<String, String>,
    /// The version served by default.
    pub current: String,
    /// An A/B test: a share of users gets `variant` instead of `current`.
    #[serde(default)]
    pub ab_test: Option<AbTestConfig>,
    /// `replace` (default): the template replaces the client's system
    /// prompt. `prefix`: it goes before it.
    #[serde(default)]
    pub mode: PromptMode,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbTestConfig {
    pub variant: String,
    /// Share of users (0-100) assigned to `variant`.
    pub percent: u8,
    /// Salt of the assignment hash; change it to reshuffle users.
    pub salt: String,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PromptMode {
    #[default]
    Replace,
    Prefix,
}

#[derive(Debug, Clone)]
struct Template {
    /// Literal pieces and variable names, alternating.
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Var(String),
}

#[derive(Debug, Clone)]
struct Prompt {
    versions: HashMap<String, Template>,
    current: String,
    ab: Option<(String, u8, String)>,
    mode: PromptMode,
}

/// All prompts, compiled.
#[derive(Debug, Clone, Default)]
pub struct Prompts {
    prompts: HashMap<String, Prompt>,
}

/// Which version a request got, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub id: String,
    pub version: String,
    /// `pinned` (the client named the version), `control` or `variant`.
    pub variant: &'static str,
}

fn parse_template(text: &str, field: &str) -> Result<Template, ConfigError> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if let Some(lit) = rest.get(..start) {
            if !lit.is_empty() {
                parts.push(Part::Text(lit.to_string()));
            }
        }
        let after = rest.get(start.saturating_add(2)..).unwrap_or("");
        let Some(end) = after.find("}}") else {
            return Err(ConfigError::new(field, "unclosed {{ in template"));
        };
        let name = after.get(..end).unwrap_or("").trim();
        if name.is_empty() || !name.chars().all(is_label_char) {
            return Err(ConfigError::new(
                field,
                format!("invalid variable name {{{{{name}}}}}"),
            ));
        }
        parts.push(Part::Var(name.to_string()));
        rest = after.get(end.saturating_add(2)..).unwrap_or("");
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(Template { parts })
}

impl Prompts {
    pub fn compile(raw: &BTreeMap<String, PromptConfig>) -> Result<Prompts, ConfigError> {
        let mut prompts = HashMap::new();
        for (id, p) in raw {
            let at = |f: &str| format!("prompts.{id}.{f}");
            if id.is_empty() || id.len() > 64 || !id.chars().all(is_label_char) {
                return Err(ConfigError::new(
                    format!("prompts.{id}"),
                    "prompt ids are 1-64 characters of [A-Za-z0-9_-]",
                ));
            }
            if p.versions.is_empty() {
                return Err(ConfigError::new(
                    at("versions"),
                    "needs at least one version",
                ));
            }
            let mut versions = HashMap::new();
            for (v, text) in &p.versions {
                if v.is_empty() || v.len() > 64 || !v.chars().all(|c| is_label_char(c) || c == '.')
                {
                    return Err(ConfigError::new(
                        at(&format!("versions.{v}")),
                        "version names are 1-64 characters of [A-Za-z0-9_.-]",
                    ));
                }
                versions.insert(
                    v.clone(),
                    parse_template(text, &at(&format!("versions.{v}")))?,
                );
            }
            if !versions.contains_key(&p.current) {
                return Err(ConfigError::new(
                    at("current"),
                    format!("unknown version {}", p.current),
                ));
            }
            let ab = match &p.ab_test {
                Some(t) => {
                    if !versions.contains_key(&t.variant) {
                        return Err(ConfigError::new(
                            at("ab_test.variant"),
                            format!("unknown version {}", t.variant),
                        ));
                    }
                    if t.percent > 100 {
                        return Err(ConfigError::new(at("ab_test.percent"), "must be 0-100"));
                    }
                    Some((t.variant.clone(), t.percent, t.salt.clone()))
                }
                None => None,
            };
            prompts.insert(
                id.clone(),
                Prompt {
                    versions,
                    current: p.current.clone(),
                    ab,
                    mode: p.mode,
                },
            );
        }
        Ok(Prompts { prompts })
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// Picks the version for a request: `header` is `x-llmgate-prompt`
    /// (`<id>` or `<id>@<version>`), `subject` the end user or key id.
    pub fn select(&self, header: &str, subject: &str) -> Result<Selection, ApiError> {
        let (id, pinned) = match header.trim().split_once('@') {
            Some((id, v)) => (id.trim(), Some(v.trim())),
            None => (header.trim(), None),
        };
        let Some(p) = self.prompts.get(id) else {
            return Err(ApiError::new(
                400,
                "unknown_prompt",
                "unknown prompt id in x-llmgate-prompt",
            ));
        };
        if let Some(v) = pinned {
            if !p.versions.contains_key(v) {
                return Err(ApiError::new(
                    400,
                    "unknown_prompt_version",
                    "unknown prompt version in x-llmgate-prompt",
                ));
            }
            return Ok(Selection {
                id: id.to_string(),
                version: v.to_string(),
                variant: "pinned",
            });
        }
        if let Some((variant, percent, salt)) = &p.ab {
            if bucket(salt, subject) < u64::from(*percent) {
                return Ok(Selection {
                    id: id.to_string(),
                    version: variant.clone(),
                    variant: "variant",
                });
            }
        }
        Ok(Selection {
            id: id.to_string(),
            version: p.current.clone(),
            variant: "control",
        })
    }

    /// Renders the selected version with `vars` and sets it as the system
    /// prompt of `body`.
    pub fn apply(
        &self,
        sel: &Selection,
        vars: &Map<String, Value>,
        api: Api,
        body: &mut Map<String, Value>,
    ) -> Result<(), ApiError> {
        let Some(p) = self.prompts.get(&sel.id) else {
            return Err(ApiError::new(400, "unknown_prompt", "unknown prompt id"));
        };
        let Some(t) = p.versions.get(&sel.version) else {
            return Err(ApiError::new(
                400,
                "unknown_prompt_version",
                "unknown prompt version",
            ));
        };
        let mut text = String::new();
        for part in &t.parts {
            match part {
                Part::Text(s) => text.push_str(s),
                Part::Var(name) => match vars.get(name) {
                    Some(Value::String(s)) => text.push_str(s),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => text.push_str(&v.to_string()),
                    _ => {
                        return Err(ApiError::new(
                            400,
                            "prompt_variable_missing",
                            format!("prompt variable `{name}` is missing (send it in x-llmgate-prompt-vars)"),
                        ))
                    }
                },
            }
        }
        match api {
            Api::OpenAi => apply_openai(body, text, p.mode),
            Api::Anthropic => apply_anthropic(body, text, p.mode),
        }
        Ok(())
    }
}

/// Sticky bucket 0-99: SHA-256(salt + subject), first 8 bytes, mod 100.
pub fn bucket(salt: &str, subject: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(subject.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    for (dst, src) in first.iter_mut().zip(d.iter()) {
        *dst = *src;
    }
    u64::from_be_bytes(first) % 100
}

fn apply_openai(body: &mut Map<String, Value>, text: String, mode: PromptMode) {
    let mut messages = match body.remove("messages") {
        Some(Value::Array(m)) => m,
        _ => Vec::new(),
    };
    if mode == PromptMode::Replace {
        messages.retain(|m| {
            !matches!(
                m.get("role").and_then(Value::as_str),
                Some("system") | Some("developer")
            )
        });
    }
    let mut sys = Map::new();
    sys.insert("role".to_string(), Value::String("system".to_string()));
    sys.insert("content".to_string(), Value::String(text));
    messages.insert(0, Value::Object(sys));
    body.insert("messages".to_string(), Value::Array(messages));
}

fn apply_anthropic(body: &mut Map<String, Value>, text: String, mode: PromptMode) {
    let new = match (mode, body.remove("system")) {
        (PromptMode::Prefix, Some(Value::String(old))) if !old.is_empty() => {
            Value::String(format!("{text}\n\n{old}"))
        }
        (PromptMode::Prefix, Some(Value::Array(mut blocks))) => {
            let mut b = Map::new();
            b.insert("type".to_string(), Value::String("text".to_string()));
            b.insert("text".to_string(), Value::String(text));
            blocks.insert(0, Value::Object(b));
            Value::Array(blocks)
        }
        _ => Value::String(text),
    };
    body.insert("system".to_string(), new);
}

/// Parses `x-llmgate-prompt-vars` (a JSON object).
pub fn parse_vars(header: Option<&str>) -> Result<Map<String, Value>, ApiError> {
    match header.map(str::trim).filter(|h| !h.is_empty()) {
        None => Ok(Map::new()),
        Some(h) => match serde_json::from_str::<Value>(h) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(ApiError::new(
                400,
                "invalid_prompt_vars",
                "x-llmgate-prompt-vars must be a JSON object",
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prompts() -> Prompts {
        let raw: BTreeMap<String, PromptConfig> = serde_json::from_value(json!({
            "support": {
                "versions": {"v1": "You help {{company}} customers.", "v2": "Be brief. You help {{company}}."},
                "current": "v1",
                "ab_test": {"variant": "v2", "percent": 30, "salt": "s1"}
            },
            "plain": {"versions": {"1": "Static."}, "current": "1", "mode": "prefix"}
        }))
        .unwrap();
        Prompts::compile(&raw).unwrap()
    }

    #[test]
    fn render_and_apply_openai() {
        let p = prompts();
        let sel = p.select("support@v1", "u").unwrap();
        assert_eq!(sel.variant, "pinned");
        let mut body = json!({"messages": [{"role": "system", "content": "old"}, {"role": "user", "content": "hi"}]});
        let vars = parse_vars(Some(r#"{"company": "Acme"}"#)).unwrap();
        p.apply(&sel, &vars, Api::OpenAi, body.as_object_mut().unwrap())
            .unwrap();
        assert_eq!(body["messages"][0]["content"], "You help Acme customers.");
        assert_eq!(body["messages"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn prefix_mode_anthropic() {
        let p = prompts();
        let sel = p.select("plain", "u").unwrap();
        let mut body = json!({"system": "client system", "messages": []});
        p.apply(
            &sel,
            &Map::new(),
            Api::Anthropic,
            body.as_object_mut().unwrap(),
        )
        .unwrap();
        assert_eq!(body["system"], "Static.\n\nclient system");
    }

    #[test]
    fn errors() {
        let p = prompts();
        assert_eq!(p.select("nope", "u").unwrap_err().code, "unknown_prompt");
        assert_eq!(
            p.select("support@v9", "u").unwrap_err().code,
            "unknown_prompt_version"
        );
        let sel = p.select("support@v2", "u").unwrap();
        let mut body = json!({"messages": []});
        let e = p
            .apply(
                &sel,
                &Map::new(),
                Api::OpenAi,
                body.as_object_mut().unwrap(),
            )
            .unwrap_err();
        assert_eq!(e.code, "prompt_variable_missing");
        assert_eq!(parse_vars(Some("[1]")).unwrap_err().status, 400);
    }

    #[test]
    fn split_is_sticky_and_close_to_the_share() {
        let p = prompts();
        let mut variant = 0;
        for i in 0..1000 {
            let user = format!("user-{i}");
            let a = p.select("support", &user).unwrap();
            let b = p.select("support", &user).unwrap();
            assert_eq!(a, b);
            if a.variant == "variant" {
                variant += 1;
            }
        }
        assert!((250..=350).contains(&variant), "{variant}");
    }

    #[test]
    fn config_errors_name_the_field() {
        let raw: BTreeMap<String, PromptConfig> = serde_json::from_value(json!({
            "x": {"versions": {"a": "t"}, "current": "b"}
        }))
        .unwrap();
        assert_eq!(
            Prompts::compile(&raw).unwrap_err().field,
            "prompts.x.current"
        );
        let raw: BTreeMap<String, PromptConfig> = serde_json::from_value(json!({
            "x": {"versions": {"a": "{{oops"}, "current": "a"}
        }))
        .unwrap();
        assert_eq!(
            Prompts::compile(&raw).unwrap_err().field,
            "prompts.x.versions.a"
        );
    }
}

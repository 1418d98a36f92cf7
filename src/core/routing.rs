//! Where a request goes: cheap-model rules (rewrite the model of simple
//! requests) and the upstream chain (primary, then fallbacks) filtered by the
//! circuit breaker.

use crate::core::api::Api;
use crate::core::error::ConfigError;
use crate::core::keys::{is_label_char, Glob};
use crate::core::usage::estimate_input_tokens_map;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One upstream cluster in the chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Envoy cluster name. The first upstream is the default route; every
    /// other one needs an Envoy route matching `x-llmgate-route: <name>`.
    pub name: String,
    /// Model rewrites applied when this upstream serves the request
    /// (e.g. `{"gpt-4o": "gpt-4o-mini"}`); `*` as key matches any model.
    #[serde(default)]
    pub model_map: BTreeMap<String, String>,
    /// The API this upstream speaks: `openai` or `anthropic`. Absent: the
    /// client's own. When it differs, llmgate translates the request, the
    /// response and the stream (README, "Cross-provider translation").
    #[serde(default)]
    pub api: Option<UpstreamApi>,
}

/// An upstream's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamApi {
    Openai,
    Anthropic,
}

impl UpstreamApi {
    pub fn api(self) -> crate::core::api::Api {
        match self {
            UpstreamApi::Openai => crate::core::api::Api::OpenAi,
            UpstreamApi::Anthropic => crate::core::api::Api::Anthropic,
        }
    }
}

/// A cheap-model rule: when every condition given holds, the request's model
/// becomes `model`. First matching rule wins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRuleConfig {
    pub name: String,
    /// Requested models the rule applies to (globs; absent = any).
    #[serde(default)]
    pub models: Vec<String>,
    /// Estimated input tokens at most this.
    #[serde(default)]
    pub max_input_tokens: Option<u64>,
    /// At most this many user turns.
    #[serde(default)]
    pub max_turns: Option<u32>,
    /// No `tools`/`functions` in the request.
    #[serde(default)]
    pub no_tools: bool,
    /// No image parts in any message.
    #[serde(default)]
    pub no_images: bool,
    /// Some user text contains one of these (case-insensitive).
    #[serde(default)]
    pub keywords_any: Vec<String>,
    /// No user text contains any of these (case-insensitive).
    #[serde(default)]
    pub keywords_none: Vec<String>,
    /// A request header has this value (`{"name": "x-llmgate-tier", "value": "cheap"}`).
    #[serde(default)]
    pub header: Option<HeaderMatch>,
    /// The model to use instead.
    pub model: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    model_map: Vec<(Glob, String)>,
    /// The upstream's API (`None`: the client's).
    pub api: Option<crate::core::api::Api>,
}

impl Upstream {
    /// The model this upstream should be asked for, if it differs.
    pub fn map_model(&self, model: &str) -> Option<&str> {
        self.model_map
            .iter()
            .find(|(g, _)| g.matches(model))
            .map(|(_, m)| m.as_str())
            .filter(|m| *m != model)
    }
}

#[derive(Debug, Clone)]
pub struct ModelRule {
    pub name: String,
    models: Vec<Glob>,
    max_input_tokens: Option<u64>,
    max_turns: Option<u32>,
    no_tools: bool,
    no_images: bool,
    keywords_any: Vec<String>,
    keywords_none: Vec<String>,
    pub header: Option<(String, String)>,
    pub model: String,
}

pub fn compile_upstreams(raw: &[UpstreamConfig]) -> Result<Vec<Upstream>, ConfigError> {
    let raw: Vec<UpstreamConfig> = if raw.is_empty() {
        vec![UpstreamConfig {
            name: "primary".to_string(),
            model_map: BTreeMap::new(),
            api: None,
        }]
    } else {
        raw.to_vec()
    };
    let mut out: Vec<Upstream> = Vec::new();
    for (i, u) in raw.iter().enumerate() {
        if u.name.is_empty() || u.name.len() > 64 || !u.name.chars().all(is_label_char) {
            return Err(ConfigError::new(
                format!("upstreams[{i}].name"),
                "must be 1-64 characters of [A-Za-z0-9_-]",
            ));
        }
        if out.iter().any(|o| o.name == u.name) {
            return Err(ConfigError::new(
                format!("upstreams[{i}].name"),
                "duplicate upstream",
            ));
        }
        let mut model_map = Vec::new();
        for (from, to) in &u.model_map {
            if from.is_empty() || to.is_empty() {
                return Err(ConfigError::new(
                    format!("upstreams[{i}].model_map"),
                    "model names must not be empty",
                ));
            }
            model_map.push((Glob::new(from), to.clone()));
        }
        // Exact names before globs.
        model_map.sort_by_key(|(g, _)| g.is_wildcard());
        out.push(Upstream {
            name: u.name.clone(),
            model_map,
            api: u.api.map(UpstreamApi::api),
        });
    }
    Ok(out)
}

pub fn compile_rules(raw: &[ModelRuleConfig]) -> Result<Vec<ModelRule>, ConfigError> {
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let at = |f: &str| format!("model_routing[{i}].{f}");
        if r.name.is_empty() {
            return Err(ConfigError::new(at("name"), "must not be empty"));
        }
        if r.model.is_empty() {
            return Err(ConfigError::new(at("model"), "must not be empty"));
        }
        let header = match &r.header {
            Some(h) if h.name.is_empty() => {
                return Err(ConfigError::new(at("header.name"), "must not be empty"))
            }
            Some(h) => Some((h.name.to_ascii_lowercase(), h.value.clone())),
            None => None,
        };
        out.push(ModelRule {
            name: r.name.clone(),
            models: r.models.iter().map(|m| Glob::new(m)).collect(),
            max_input_tokens: r.max_input_tokens,
            max_turns: r.max_turns,
            no_tools: r.no_tools,
            no_images: r.no_images,
            keywords_any: r.keywords_any.iter().map(|k| k.to_lowercase()).collect(),
            keywords_none: r.keywords_none.iter().map(|k| k.to_lowercase()).collect(),
            header,
            model: r.model.clone(),
        });
    }
    Ok(out)
}

/// Facts about a request the rules look at.
pub struct RequestFacts {
    pub input_tokens: u64,
    pub user_turns: u32,
    pub has_tools: bool,
    pub has_images: bool,
    /// Lowercased user text (only computed when a rule needs keywords).
    pub user_text: String,
}

impl RequestFacts {
    pub fn of(api: Api, body: &Map<String, Value>, need_text: bool) -> Self {
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut user_turns: u32 = 0;
        let mut has_images = false;
        let mut user_text = String::new();
        for m in messages {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            if role == "user" {
                user_turns = user_turns.saturating_add(1);
            }
            match m.get("content") {
                Some(Value::String(t)) if role == "user" && need_text => {
                    user_text.push_str(&t.to_lowercase());
                    user_text.push('\n');
                }
                Some(Value::Array(parts)) => {
                    for p in parts {
                        let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
                        if matches!(ty, "image_url" | "image" | "input_image") {
                            has_images = true;
                        }
                        if role == "user" && need_text {
                            if let Some(t) = p.get("text").and_then(Value::as_str) {
                                user_text.push_str(&t.to_lowercase());
                                user_text.push('\n');
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let has_tools = ["tools", "functions"].iter().any(|f| {
            body.get(*f)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        });
        Self {
            input_tokens: estimate_input_tokens_map(api, body),
            user_turns,
            has_tools,
            has_images,
            user_text,
        }
    }
}

/// The first rule matching this request, if any.
pub fn choose_model<'a>(
    rules: &'a [ModelRule],
    model: &str,
    facts: &RequestFacts,
    header: &dyn Fn(&str) -> Option<String>,
) -> Option<&'a ModelRule> {
    rules.iter().find(|r| {
        (r.models.is_empty() || r.models.iter().any(|g| g.matches(model)))
            && r.max_input_tokens.is_none_or(|m| facts.input_tokens <= m)
            && r.max_turns.is_none_or(|m| facts.user_turns <= m)
            && (!r.no_tools || !facts.has_tools)
            && (!r.no_images || !facts.has_images)
            && (r.keywords_any.is_empty()
                || r.keywords_any
                    .iter()
                    .any(|k| facts.user_text.contains(k.as_str())))
            && !r
                .keywords_none
                .iter()
                .any(|k| facts.user_text.contains(k.as_str()))
            && r.header
                .as_ref()
                .is_none_or(|(n, v)| header(n).as_deref() == Some(v.as_str()))
    })
}

/// Whether some rule needs the user text.
pub fn rules_need_text(rules: &[ModelRule]) -> bool {
    rules
        .iter()
        .any(|r| !r.keywords_any.is_empty() || !r.keywords_none.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(v: Value) -> Vec<ModelRule> {
        let raw: Vec<ModelRuleConfig> = serde_json::from_value(v).unwrap();
        compile_rules(&raw).unwrap()
    }

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn first_matching_rule_wins() {
        let r = rules(json!([
            {"name": "tier", "header": {"name": "x-tier", "value": "cheap"}, "model": "m-header"},
            {"name": "short", "models": ["gpt-4o"], "max_input_tokens": 50, "no_tools": true, "max_turns": 1, "model": "gpt-4o-mini"},
            {"name": "kw", "keywords_any": ["translate"], "keywords_none": ["legal"], "model": "m-kw"}
        ]));
        let b = body(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}));
        let f = RequestFacts::of(Api::OpenAi, &b, true);
        let none = |_: &str| None;
        assert_eq!(
            choose_model(&r, "gpt-4o", &f, &none).unwrap().model,
            "gpt-4o-mini"
        );
        let cheap = |n: &str| (n == "x-tier").then(|| "cheap".to_string());
        assert_eq!(
            choose_model(&r, "gpt-4o", &f, &cheap).unwrap().model,
            "m-header"
        );
        // Tools disqualify "short".
        let b = body(
            json!({"model": "gpt-4o", "tools": [{"type": "function"}], "messages": [{"role": "user", "content": "Translate this"}]}),
        );
        let f = RequestFacts::of(Api::OpenAi, &b, true);
        assert_eq!(choose_model(&r, "gpt-4o", &f, &none).unwrap().model, "m-kw");
        let b = body(
            json!({"model": "gpt-4o", "tools": [{"type": "function"}], "messages": [{"role": "user", "content": "Translate this legal text"}]}),
        );
        let f = RequestFacts::of(Api::OpenAi, &b, true);
        assert!(choose_model(&r, "gpt-4o", &f, &none).is_none());
    }

    #[test]
    fn images_and_turns() {
        let r =
            rules(json!([{"name": "simple", "no_images": true, "max_turns": 1, "model": "small"}]));
        let b = body(
            json!({"model": "x", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]}),
        );
        let f = RequestFacts::of(Api::OpenAi, &b, false);
        assert!(f.has_images);
        assert!(choose_model(&r, "x", &f, &|_| None).is_none());
        let b = body(
            json!({"model": "x", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}),
        );
        let f = RequestFacts::of(Api::OpenAi, &b, false);
        assert_eq!(f.user_turns, 2);
        assert!(choose_model(&r, "x", &f, &|_| None).is_none());
    }

    #[test]
    fn upstreams_and_model_maps() {
        let raw: Vec<UpstreamConfig> = serde_json::from_value(json!([
            {"name": "primary"},
            {"name": "fallback", "model_map": {"*": "generic", "gpt-4o": "gpt-4o-mini"}}
        ]))
        .unwrap();
        let u = compile_upstreams(&raw).unwrap();
        assert_eq!(u[1].map_model("gpt-4o"), Some("gpt-4o-mini"));
        assert_eq!(u[1].map_model("other"), Some("generic"));
        assert_eq!(u[0].map_model("gpt-4o"), None);
        let bad: Vec<UpstreamConfig> =
            serde_json::from_value(json!([{"name": "a"}, {"name": "a"}])).unwrap();
        assert_eq!(
            compile_upstreams(&bad).unwrap_err().field,
            "upstreams[1].name"
        );
        assert_eq!(compile_upstreams(&[]).unwrap()[0].name, "primary");
    }

    #[test]
    fn hostile_bodies_do_not_panic() {
        for v in [
            json!({}),
            json!({"messages": 3}),
            json!({"messages": [1, null, {"content": 5}, {"role": "user", "content": [null, 1, {"type": 3}]}]}),
        ] {
            let _ = RequestFacts::of(Api::Anthropic, &body(v), true);
        }
    }
}

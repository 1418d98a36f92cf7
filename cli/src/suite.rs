//! The eval suite file (JSON; the format is documented in `eval.rs`).

use regex_lite::{Regex, RegexBuilder};
use serde::Deserialize;
use std::collections::HashSet;

/// Default pass threshold for the overall score.
pub const DEFAULT_THRESHOLD: f64 = 7.0;
/// Default model when neither the suite nor `--model` names one.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// Criteria used when a case lists none.
pub const DEFAULT_CRITERIA: [&str; 2] = ["accuracy", "helpfulness"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSuite {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub judge_model: Option<String>,
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub cases: Vec<RawCase>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCase {
    pub id: String,
    pub query: String,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub vars: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub expected: Vec<String>,
    #[serde(default)]
    pub criteria: Vec<String>,
    #[serde(default)]
    pub threshold: Option<f64>,
}

/// One expected element: a case-insensitive substring, or (`re:` prefix) a
/// case-insensitive regular expression.
#[derive(Debug, Clone)]
pub enum Expected {
    Word(String),
    Regex(String, Regex),
}

impl Expected {
    pub fn parse(s: &str) -> Result<Expected, String> {
        match s.strip_prefix("re:") {
            Some(pat) => RegexBuilder::new(pat)
                .case_insensitive(true)
                .build()
                .map(|r| Expected::Regex(s.to_string(), r))
                .map_err(|e| format!("bad regex {pat:?}: {e}")),
            None if s.is_empty() => Err("an expected element cannot be empty".into()),
            None => Ok(Expected::Word(s.to_string())),
        }
    }

    pub fn source(&self) -> &str {
        match self {
            Expected::Word(s) | Expected::Regex(s, _) => s,
        }
    }

    pub fn matches(&self, answer: &str) -> bool {
        match self {
            Expected::Word(w) => answer.to_lowercase().contains(&w.to_lowercase()),
            Expected::Regex(_, r) => r.is_match(answer),
        }
    }
}

/// The expected elements missing from `answer`, as written in the suite.
pub fn missing(expected: &[Expected], answer: &str) -> Vec<String> {
    expected
        .iter()
        .filter(|e| !e.matches(answer))
        .map(|e| e.source().to_string())
        .collect()
}

#[derive(Debug, Clone)]
pub struct Case {
    pub id: String,
    pub query: String,
    pub system: Option<String>,
    pub prompt: Option<String>,
    /// Template variables (suite `vars` overlaid with the case's), sent as
    /// `x-llmgate-prompt-vars` when a prompt is used.
    pub vars: serde_json::Map<String, serde_json::Value>,
    pub reference: Option<String>,
    pub expected: Vec<Expected>,
    pub criteria: Vec<String>,
    pub threshold: f64,
}

#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub model: String,
    pub judge_model: String,
    pub cases: Vec<Case>,
}

/// Overrides from the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub model: Option<String>,
    pub judge_model: Option<String>,
    pub threshold: Option<f64>,
}

fn check_threshold(t: f64, field: &str) -> Result<f64, String> {
    if t.is_finite() && (1.0..=10.0).contains(&t) {
        Ok(t)
    } else {
        Err(format!("{field}: must be between 1 and 10"))
    }
}

/// A prompt reference `id[@version]` as the `x-llmgate-prompt` header takes.
pub fn check_prompt_ref(p: &str) -> Result<(), String> {
    let ok_part = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
    };
    let (id, version) = match p.split_once('@') {
        Some((i, v)) => (i, Some(v)),
        None => (p, None),
    };
    if ok_part(id) && version.is_none_or(ok_part) {
        Ok(())
    } else {
        Err(format!(
            "{p:?} is not a prompt reference <id>@<version> (letters, digits, - _ . : /)"
        ))
    }
}

/// Parses and validates a suite; errors name the field (`cases[2].threshold`).
pub fn parse_suite(bytes: &[u8], file_stem: &str, ov: &Overrides) -> Result<Suite, String> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let raw: RawSuite = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })?;
    if raw.cases.is_empty() {
        return Err("cases: at least one case is required".into());
    }
    let default_threshold = match ov.threshold.or(raw.threshold) {
        Some(t) => check_threshold(t, "threshold")?,
        None => DEFAULT_THRESHOLD,
    };
    let model = ov
        .model
        .clone()
        .or(raw.model)
        .unwrap_or_else(|| DEFAULT_MODEL.to_string());
    let judge_model = ov
        .judge_model
        .clone()
        .or(raw.judge_model)
        .unwrap_or_else(|| model.clone());
    let mut seen = HashSet::new();
    let mut cases = Vec::new();
    for (i, c) in raw.cases.into_iter().enumerate() {
        let at = |f: &str| format!("cases[{i}].{f}");
        if c.id.trim().is_empty() {
            return Err(format!("{}: must not be empty", at("id")));
        }
        if !seen.insert(c.id.clone()) {
            return Err(format!("{}: duplicate id {:?}", at("id"), c.id));
        }
        if c.query.is_empty() {
            return Err(format!("{}: must not be empty", at("query")));
        }
        if let Some(p) = &c.prompt {
            check_prompt_ref(p).map_err(|e| format!("{}: {e}", at("prompt")))?;
        }
        let expected = c
            .expected
            .iter()
            .enumerate()
            .map(|(j, e)| Expected::parse(e).map_err(|m| format!("{}[{j}]: {m}", at("expected"))))
            .collect::<Result<Vec<_>, _>>()?;
        let criteria = if c.criteria.is_empty() {
            DEFAULT_CRITERIA.iter().map(|s| s.to_string()).collect()
        } else {
            if let Some(j) = c.criteria.iter().position(|s| s.trim().is_empty()) {
                return Err(format!("{}[{j}]: must not be empty", at("criteria")));
            }
            c.criteria
        };
        let threshold = match c.threshold {
            Some(t) => check_threshold(t, &at("threshold"))?,
            None => default_threshold,
        };
        let mut vars = raw.vars.clone();
        vars.extend(c.vars);
        cases.push(Case {
            id: c.id,
            query: c.query,
            system: c.system,
            prompt: c.prompt,
            vars,
            reference: c.reference,
            expected,
            criteria,
            threshold,
        });
    }
    Ok(Suite {
        name: raw.name.unwrap_or_else(|| file_stem.to_string()),
        model,
        judge_model,
        cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_case_insensitive_substrings() {
        let e = Expected::parse("Refund").unwrap();
        assert!(e.matches("You can get a REFUND within 30 days"));
        assert!(e.matches("refunds"));
        assert!(!e.matches("no money back"));
        let e = Expected::parse("Größe").unwrap();
        assert!(e.matches("die GRÖSSE? no: die größe"));
    }

    #[test]
    fn regexes_are_case_insensitive() {
        let e = Expected::parse(r"re:\b\d+ days\b").unwrap();
        assert!(e.matches("within 30 Days."));
        assert!(!e.matches("within thirty days"));
        let e = Expected::parse("re:^hello").unwrap();
        assert!(e.matches("Hello world"));
        assert!(!e.matches("oh hello"));
        assert!(Expected::parse("re:(unclosed").is_err());
        assert!(Expected::parse("").is_err());
    }

    #[test]
    fn missing_lists_sources_in_order() {
        let ex: Vec<_> = ["paris", "re:capital", "france", "re:\\d"]
            .iter()
            .map(|s| Expected::parse(s).unwrap())
            .collect();
        assert_eq!(
            missing(&ex, "Paris is the Capital."),
            vec!["france".to_string(), "re:\\d".to_string()]
        );
        assert!(missing(&ex, "Paris, capital of France since 987").is_empty());
    }

    #[test]
    fn suite_defaults_and_overrides() {
        let s = parse_suite(
            br#"{"model": "m1", "cases": [{"id": "a", "query": "q"}, {"id": "b", "query": "q", "threshold": 9, "criteria": ["tone"]}]}"#,
            "file",
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.name, "file");
        assert_eq!(s.judge_model, "m1");
        assert_eq!(s.cases[0].threshold, DEFAULT_THRESHOLD);
        assert_eq!(s.cases[0].criteria, vec!["accuracy", "helpfulness"]);
        assert_eq!(s.cases[1].threshold, 9.0);
        let s = parse_suite(
            br#"{"name": "n", "model": "m1", "threshold": 5, "cases": [{"id": "a", "query": "q"}]}"#,
            "file",
            &Overrides {
                model: Some("m2".into()),
                judge_model: Some("j".into()),
                threshold: Some(8.0),
            },
        )
        .unwrap();
        assert_eq!((s.model.as_str(), s.judge_model.as_str()), ("m2", "j"));
        assert_eq!(s.cases[0].threshold, 8.0);
    }

    #[test]
    fn suite_errors_name_the_field() {
        let bad: &[(&str, &str)] = &[
            (r#"{"cases": []}"#, "cases"),
            (
                r#"{"cases": [{"id": "a", "query": "q", "bogus": 1}]}"#,
                "cases[0].bogus",
            ),
            (r#"{"cases": [{"id": "a"}]}"#, "cases[0]"),
            (
                r#"{"cases": [{"id": "a", "query": "q"}, {"id": "a", "query": "q"}]}"#,
                "cases[1].id",
            ),
            (
                r#"{"cases": [{"id": "a", "query": "q", "threshold": 11}]}"#,
                "cases[0].threshold",
            ),
            (
                r#"{"cases": [{"id": "a", "query": "q", "expected": ["ok", "re:("]}]}"#,
                "cases[0].expected[1]",
            ),
            (
                r#"{"cases": [{"id": "a", "query": "q", "prompt": "a b"}]}"#,
                "cases[0].prompt",
            ),
            (
                r#"{"threshold": 0, "cases": [{"id": "a", "query": "q"}]}"#,
                "threshold",
            ),
            (r#"{"model": 3, "cases": []}"#, "model"),
        ];
        for (json, field) in bad {
            let e = parse_suite(json.as_bytes(), "f", &Overrides::default()).unwrap_err();
            assert!(e.starts_with(field), "{json}: {e}");
        }
    }

    #[test]
    fn prompt_refs() {
        assert!(check_prompt_ref("support@v2").is_ok());
        assert!(check_prompt_ref("support").is_ok());
        assert!(check_prompt_ref("support@").is_err());
        assert!(check_prompt_ref("@v1").is_err());
        assert!(check_prompt_ref("a\r\nx: y@1").is_err());
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn example_suites_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/eval");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.to_string_lossy().ends_with(".suite.json") {
                let b = std::fs::read(&p).unwrap();
                parse_suite(&b, "x", &Overrides::default())
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 1);
    }
}

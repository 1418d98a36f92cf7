//! The judge: the rubric prompt, and robust parsing of the judge's JSON
//! verdict. Anything that is not a complete, valid verdict is `Malformed`,
//! never a pass.

use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A parsed, validated verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Per-criterion scores, 1 to 10 (every requested criterion present).
    pub scores: BTreeMap<String, f64>,
    /// Overall score, 1 to 10.
    pub overall: f64,
    /// `PASS` (true) or `FAIL` (false).
    pub pass: bool,
    pub reason: String,
}

/// What the judge is told about one answer.
pub struct JudgeInput<'a> {
    pub query: &'a str,
    pub system: Option<&'a str>,
    pub prompt: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub answer: &'a str,
    pub criteria: &'a [String],
}

const RUBRIC: &str = "You are a strict, impartial evaluator of an AI assistant's answer. \
Score the answer on each listed criterion from 1 (very poor) to 10 (excellent), give an \
overall score from 1 to 10, and a verdict: \"PASS\" if the answer is acceptable to ship, \
\"FAIL\" otherwise. Reply with a single JSON object and nothing else (no prose, no code \
fences), exactly in this form:\n\
{\"scores\": {\"<criterion>\": <1-10>, ...}, \"overall\": <1-10>, \"verdict\": \"PASS\" or \"FAIL\", \"reason\": \"<one sentence>\"}";

/// The chat-completions body of a judge request. The rubric and the case
/// (criteria, the assistant's system prompt, the query, the reference) go in
/// the system message and only the answer to judge in the user message: the
/// case material is the evaluator's own text, not a user's, so the gateway's
/// request guard (which scans user turns) judges only the answer, and a
/// rubric that quotes a system prompt is not mistaken for an injection.
pub fn judge_request(model: &str, input: &JudgeInput<'_>) -> Value {
    let mut system = String::from(RUBRIC);
    system.push_str("\n\nCriteria to score:\n");
    for c in input.criteria {
        system.push_str(&format!("- {c}\n"));
    }
    if let Some(s) = input.system {
        system.push_str(&format!(
            "\nSystem prompt given to the assistant:\n<<<\n{s}\n>>>\n"
        ));
    }
    if let Some(p) = input.prompt {
        system.push_str(&format!(
            "\nThe assistant used the server-side prompt template {p}.\n"
        ));
    }
    system.push_str(&format!("\nUser query:\n<<<\n{}\n>>>\n", input.query));
    if let Some(r) = input.reference {
        system.push_str(&format!("\nReference answer:\n<<<\n{r}\n>>>\n"));
    }
    let user = format!(
        "Assistant's answer:\n<<<\n{}\n>>>\n\nReturn the JSON verdict now.",
        input.answer
    );
    json!({
        "model": model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ],
    })
}

/// Finds the JSON object in a judge reply: the whole text, else the content
/// of a ``` fence, else the balanced `{...}` objects in order (braces inside
/// JSON strings ignored). Among candidates, the first with a `verdict` or
/// `overall` key wins, else the first object found.
pub fn extract_json_object(text: &str) -> Option<Value> {
    let mut candidates = Vec::new();
    if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(text.trim()) {
        return Some(v);
    }
    for block in fenced_blocks(text) {
        if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(block.trim()) {
            candidates.push(v);
        }
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes.get(i) == Some(&b'{') {
            if let Some(end) = balanced_end(bytes, i) {
                if let Some(Ok(v @ Value::Object(_))) =
                    text.get(i..=end).map(serde_json::from_str::<Value>)
                {
                    candidates.push(v);
                    i = end + 1;
                    continue;
                }
            }
        }
        i += 1;
    }
    let is_verdict = |v: &Value| v.get("verdict").is_some() || v.get("overall").is_some();
    let best = candidates.iter().position(is_verdict).unwrap_or(0);
    if best < candidates.len() {
        Some(candidates.swap_remove(best))
    } else {
        None
    }
}

/// Contents of ``` fenced blocks (the info string after the opening fence,
/// e.g. `json`, is skipped).
fn fenced_blocks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = rest.get(open + 3..).unwrap_or("");
        let body_start = after.find('\n').map(|n| n + 1).unwrap_or(after.len());
        let body = after.get(body_start..).unwrap_or("");
        match body.find("```") {
            Some(close) => {
                out.push(body.get(..close).unwrap_or(""));
                rest = body.get(close + 3..).unwrap_or("");
            }
            None => break,
        }
    }
    out
}

/// Index of the `}` closing the `{` at `start`, skipping JSON strings.
fn balanced_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn score(v: &Value) -> Option<f64> {
    let x = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (x.is_finite() && (1.0..=10.0).contains(&x)).then_some(x)
}

/// Parses and validates a judge reply. `Err` explains why it is malformed.
pub fn parse_verdict(text: &str, criteria: &[String]) -> Result<Verdict, String> {
    let v = extract_json_object(text).ok_or("no JSON object in the judge reply")?;
    let verdict = match v.get("verdict") {
        Some(Value::String(s)) => match s.trim().to_ascii_uppercase().as_str() {
            "PASS" => true,
            "FAIL" => false,
            other => return Err(format!("verdict must be PASS or FAIL, got {other:?}")),
        },
        Some(other) => return Err(format!("verdict must be PASS or FAIL, got {other}")),
        None => return Err("no verdict".into()),
    };
    let overall = match v.get("overall") {
        Some(o) => score(o).ok_or_else(|| format!("overall must be a number 1-10, got {o}"))?,
        None => return Err("no overall score".into()),
    };
    let mut scores = BTreeMap::new();
    match v.get("scores") {
        Some(Value::Object(m)) => {
            for (k, s) in m {
                let x = score(s)
                    .ok_or_else(|| format!("score {k:?} must be a number 1-10, got {s}"))?;
                scores.insert(k.clone(), x);
            }
        }
        Some(other) => return Err(format!("scores must be an object, got {other}")),
        None if criteria.is_empty() => {}
        None => return Err("no scores".into()),
    }
    for c in criteria {
        if !scores.keys().any(|k| k.eq_ignore_ascii_case(c)) {
            return Err(format!("no score for criterion {c:?}"));
        }
    }
    let reason = match v.get("reason") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    Ok(Verdict {
        scores,
        overall,
        pass: verdict,
        reason,
    })
}

/// The answer text of an OpenAI chat-completions response.
pub fn answer_text(body: &Value) -> Option<String> {
    let content = body
        .get("choices")?
        .get(0)?
        .get("message")?
        .get("content")?;
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crit() -> Vec<String> {
        vec!["accuracy".into(), "helpfulness".into()]
    }

    const GOOD: &str = r#"{"scores": {"accuracy": 9, "helpfulness": 8}, "overall": 8, "verdict": "PASS", "reason": "fine"}"#;

    #[test]
    fn plain_json() {
        let v = parse_verdict(GOOD, &crit()).unwrap();
        assert!(v.pass);
        assert_eq!(v.overall, 8.0);
        assert_eq!(v.scores["accuracy"], 9.0);
        assert_eq!(v.reason, "fine");
    }

    #[test]
    fn fenced_json() {
        let t = format!("Here is my evaluation:\n```json\n{GOOD}\n```\nThanks.");
        assert!(parse_verdict(&t, &crit()).unwrap().pass);
        let t = format!("```\n{GOOD}\n```");
        assert!(parse_verdict(&t, &crit()).unwrap().pass);
    }

    #[test]
    fn prose_wrapped_json_and_stray_braces() {
        let t = format!("I looked at {{accuracy}} first. Verdict: {GOOD} -- done {{}}");
        let v = parse_verdict(&t, &crit()).unwrap();
        assert_eq!(v.overall, 8.0);
        // An earlier unrelated object loses to the one with a verdict.
        let t = format!("Example: {{\"a\": 1}}. Mine: {GOOD}");
        assert!(parse_verdict(&t, &crit()).unwrap().pass);
    }

    #[test]
    fn nested_braces_inside_strings() {
        let t = r#"Result: {"scores": {"accuracy": 7, "helpfulness": 7}, "overall": 7, "verdict": "FAIL", "reason": "uses } and { and \"quotes {\" badly"} end"#;
        let v = parse_verdict(t, &crit()).unwrap();
        assert!(!v.pass);
        assert_eq!(v.reason, r#"uses } and { and "quotes {" badly"#);
    }

    #[test]
    fn lenient_values() {
        let t = r#"{"scores": {"Accuracy": "9", "helpfulness": 8.5}, "overall": "8", "verdict": " pass "}"#;
        let v = parse_verdict(t, &crit()).unwrap();
        assert!(v.pass);
        assert_eq!(v.overall, 8.0);
        assert_eq!(v.reason, "");
    }

    #[test]
    fn malformed_is_never_a_pass() {
        let cases = [
            "PASS",
            "looks good to me, 9/10",
            "",
            "{not json}",
            r#"{"scores": {"accuracy": 9, "helpfulness": 9}, "overall": 9}"#,
            r#"{"scores": {"accuracy": 9, "helpfulness": 9}, "overall": 9, "verdict": "MAYBE"}"#,
            r#"{"scores": {"accuracy": 9, "helpfulness": 9}, "overall": 11, "verdict": "PASS"}"#,
            r#"{"scores": {"accuracy": 9, "helpfulness": 9}, "overall": 0, "verdict": "PASS"}"#,
            r#"{"scores": {"accuracy": 9}, "overall": 9, "verdict": "PASS"}"#,
            r#"{"overall": 9, "verdict": "PASS"}"#,
            r#"{"scores": {"accuracy": 9, "helpfulness": "great"}, "overall": 9, "verdict": "PASS"}"#,
            r#"{"scores": [9, 9], "overall": 9, "verdict": "PASS"}"#,
            r#"{"scores": {"accuracy": 9, "helpfulness": 9}, "overall": 9, "verdict": true}"#,
            r#"```json
{"scores": {"accuracy": 9, "helpfulness": 9}, "overall": 9, "verdict": "PASS""#,
        ];
        for c in cases {
            assert!(parse_verdict(c, &crit()).is_err(), "{c}");
        }
    }

    #[test]
    fn no_criteria_needs_no_scores() {
        let v = parse_verdict(r#"{"overall": 3, "verdict": "FAIL"}"#, &[]).unwrap();
        assert!(!v.pass);
    }

    #[test]
    fn answer_text_shapes() {
        let b = json!({"choices": [{"message": {"role": "assistant", "content": "hi"}}]});
        assert_eq!(answer_text(&b).as_deref(), Some("hi"));
        let b = json!({"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}]});
        assert_eq!(answer_text(&b).as_deref(), Some("ab"));
        assert_eq!(answer_text(&json!({"error": {}})), None);
    }

    #[test]
    fn judge_request_mentions_everything() {
        let c = crit();
        let r = judge_request(
            "judge-m",
            &JudgeInput {
                query: "Q?",
                system: Some("be nice"),
                prompt: Some("support@v2"),
                reference: Some("ref"),
                answer: "A!",
                criteria: &c,
            },
        );
        assert_eq!(r["model"], "judge-m");
        let system = r["messages"][0]["content"].as_str().unwrap();
        let user = r["messages"][1]["content"].as_str().unwrap();
        for s in [
            "- accuracy",
            "- helpfulness",
            "be nice",
            "support@v2",
            "Q?",
            "ref",
        ] {
            assert!(system.contains(s), "{s}");
        }
        assert!(user.contains("A!"));
        assert!(r["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("\"verdict\""));
    }
}

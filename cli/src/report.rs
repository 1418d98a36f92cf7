//! Eval output: the readable table, the JSON report and JUnit XML.

use crate::eval::{fmt_score, CaseResult, Comparison, Status};
use serde_json::json;
use std::fmt::Write;
use std::time::Duration;

/// Run facts shown in every report.
pub struct Meta {
    pub suite: String,
    pub model: String,
    pub judge_model: String,
    pub endpoint: String,
}

/// Drops trailing blanks of padded rows.
fn trim_rows(out: &str) -> String {
    out.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn score_cell(r: &CaseResult) -> String {
    r.overall().map(fmt_score).unwrap_or_else(|| "-".into())
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        let mut t: String = flat.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    } else {
        flat
    }
}

/// Pads `s` to `w` characters (not bytes).
fn pad(s: &str, w: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(w.saturating_sub(n)))
}

pub struct Summary {
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub malformed: usize,
    pub errors: usize,
}

pub fn summary(results: &[CaseResult]) -> Summary {
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    Summary {
        total: results.len(),
        passed: count(Status::Pass),
        failed: count(Status::Fail),
        malformed: count(Status::Malformed),
        errors: count(Status::Error),
    }
}

pub fn table(meta: &Meta, results: &[CaseResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "suite {}  model {}  judge {}  endpoint {}",
        meta.suite, meta.model, meta.judge_model, meta.endpoint
    );
    let idw = results
        .iter()
        .map(|r| r.id.chars().count())
        .max()
        .unwrap_or(2)
        .clamp(2, 40);
    let _ = writeln!(
        out,
        "{}  {:<9}  {:>5}  {:>6}  {:>8}  DETAIL",
        pad("ID", idw),
        "STATUS",
        "SCORE",
        "THRESH",
        "EXPECTED"
    );
    for r in results {
        let expected = format!(
            "{}/{}",
            r.expected_total - r.missing.len(),
            r.expected_total
        );
        let detail = if r.problems.is_empty() {
            r.verdict
                .as_ref()
                .map(|v| v.reason.clone())
                .unwrap_or_default()
        } else {
            r.problems.join("; ")
        };
        let _ = writeln!(
            out,
            "{}  {:<9}  {:>5}  {:>6}  {:>8}  {}",
            pad(&one_line(&r.id, idw), idw),
            r.status.as_str().to_uppercase(),
            score_cell(r),
            fmt_score(r.threshold),
            expected,
            one_line(&detail, 100)
        );
    }
    let s = summary(results);
    let _ = writeln!(
        out,
        "{} cases: {} passed, {} failed, {} malformed, {} errors",
        s.total, s.passed, s.failed, s.malformed, s.errors
    );
    trim_rows(&out)
}

pub fn json_report(meta: &Meta, results: &[CaseResult], elapsed: Duration) -> String {
    let s = summary(results);
    let v = json!({
        "mode": "eval",
        "suite": meta.suite,
        "model": meta.model,
        "judge_model": meta.judge_model,
        "endpoint": meta.endpoint,
        "duration_ms": elapsed.as_millis() as u64,
        "summary": {
            "total": s.total,
            "passed": s.passed,
            "failed": s.failed,
            "malformed": s.malformed,
            "errors": s.errors,
        },
        "cases": results.iter().map(CaseResult::to_json).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

fn signed(x: f64) -> String {
    format!("{}{:.2}", if x > 0.0 { "+" } else { "" }, x)
}

pub fn compare_table(meta: &Meta, c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "suite {}  model {}  judge {}  endpoint {}",
        meta.suite, meta.model, meta.judge_model, meta.endpoint
    );
    let _ = writeln!(out, "compare A = {}  B = {}", c.a, c.b);
    let idw = c
        .pairs
        .iter()
        .map(|p| p.0.id.chars().count())
        .max()
        .unwrap_or(2)
        .clamp(2, 40);
    let _ = writeln!(
        out,
        "{}  {:>5}  {:>5}  {:>6}  {:<9}  {:<9}",
        pad("ID", idw),
        "A",
        "B",
        "B-A",
        "A STATUS",
        "B STATUS"
    );
    for (x, y) in &c.pairs {
        let diff = match (x.overall(), y.overall()) {
            (Some(p), Some(q)) => signed(q - p),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{}  {:>5}  {:>5}  {:>6}  {:<9}  {:<9}",
            pad(&one_line(&x.id, idw), idw),
            score_cell(x),
            score_cell(y),
            diff,
            x.status.as_str(),
            y.status.as_str()
        );
    }
    let passed = |f: &dyn Fn(&(CaseResult, CaseResult)) -> &CaseResult| {
        c.pairs
            .iter()
            .filter(|p| f(p).status == Status::Pass)
            .count()
    };
    let _ = writeln!(
        out,
        "pairs: {} complete of {}; mean overall A {:.2}, B {:.2}; mean difference (B-A) {}",
        c.complete,
        c.pairs.len(),
        c.mean_a,
        c.mean_b,
        signed(c.mean_diff)
    );
    let _ = writeln!(
        out,
        "B vs A: {} wins, {} ties, {} losses; sign test p = {:.4} (two-sided, n = {})",
        c.wins,
        c.ties,
        c.losses,
        c.p_value,
        c.wins + c.losses
    );
    let _ = writeln!(
        out,
        "passed: A {}/{}, B {}/{}",
        passed(&|p| &p.0),
        c.pairs.len(),
        passed(&|p| &p.1),
        c.pairs.len()
    );
    trim_rows(&out)
}

pub fn compare_json(meta: &Meta, c: &Comparison, elapsed: Duration) -> String {
    let v = json!({
        "mode": "compare",
        "suite": meta.suite,
        "model": meta.model,
        "judge_model": meta.judge_model,
        "endpoint": meta.endpoint,
        "duration_ms": elapsed.as_millis() as u64,
        "a": c.a,
        "b": c.b,
        "summary": {
            "pairs": c.pairs.len(),
            "complete": c.complete,
            "mean_a": c.mean_a,
            "mean_b": c.mean_b,
            "mean_diff": c.mean_diff,
            "wins": c.wins,
            "ties": c.ties,
            "losses": c.losses,
            "p_value": c.p_value,
        },
        "cases": c.pairs.iter().map(|(x, y)| json!({
            "id": x.id,
            "a": x.to_json(),
            "b": y.to_json(),
            "diff": match (x.overall(), y.overall()) {
                (Some(p), Some(q)) => Some(q - p),
                _ => None,
            },
        })).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// Escapes text for XML attributes and content; characters XML 1.0 cannot
/// hold (most C0 controls, U+FFFE/U+FFFF) become U+FFFD.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// JUnit XML: one `<testsuite>` per variant (one in eval mode, A and B in
/// compare mode), one `<testcase>` per case; `fail` and `malformed` are
/// `<failure type="...">`, `error` is `<error>`.
pub fn junit(suite: &str, variants: &[(Option<&str>, &[CaseResult])], elapsed: Duration) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let all: Vec<&CaseResult> = variants.iter().flat_map(|v| v.1.iter()).collect();
    let failures = all
        .iter()
        .filter(|r| matches!(r.status, Status::Fail | Status::Malformed))
        .count();
    let errors = all.iter().filter(|r| r.status == Status::Error).count();
    let _ = writeln!(
        out,
        "<testsuites name=\"llmgate eval\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{}\">",
        all.len(),
        secs(elapsed)
    );
    for (variant, results) in variants {
        let name = match variant {
            Some(v) => format!("{suite} [{v}]"),
            None => suite.to_string(),
        };
        let s = summary(results);
        let time: Duration = results.iter().map(|r| r.duration).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"{}\">",
            xml_escape(&name),
            s.total,
            s.failed + s.malformed,
            s.errors,
            secs(time)
        );
        for r in results.iter() {
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{}\"",
                xml_escape(&r.id),
                xml_escape(&name),
                secs(r.duration)
            );
            let detail = {
                let mut d = r.problems.join("\n");
                if let Some(v) = &r.verdict {
                    let _ = write!(d, "\noverall {} reason: {}", fmt_score(v.overall), v.reason);
                }
                if let Some(a) = &r.answer {
                    let _ = write!(d, "\nanswer: {a}");
                }
                if r.status == Status::Malformed {
                    if let Some(j) = &r.judge_raw {
                        let _ = write!(d, "\njudge reply: {j}");
                    }
                }
                d
            };
            let message = r.problems.join("; ");
            match r.status {
                Status::Pass => out.push_str("/>\n"),
                Status::Fail | Status::Malformed => {
                    let _ = write!(
                        out,
                        ">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>\n",
                        r.status.as_str(),
                        xml_escape(&message),
                        xml_escape(&detail)
                    );
                }
                Status::Error => {
                    let _ = write!(
                        out,
                        ">\n      <error type=\"error\" message=\"{}\">{}</error>\n    </testcase>\n",
                        xml_escape(&message),
                        xml_escape(&detail)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            xml_escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &apos;Jerry&apos;&lt;/a&gt;"
        );
        assert_eq!(
            xml_escape("a\u{0}b\u{1b}c\td\ne"),
            "a\u{FFFD}b\u{FFFD}c\td\ne"
        );
        assert_eq!(xml_escape("]]> ünï"), "]]&gt; ünï");
    }

    fn r(id: &str, status: Status, problem: &str) -> CaseResult {
        CaseResult {
            id: id.into(),
            prompt: None,
            status,
            answer: Some("a <b> & \"c\"".into()),
            expected_total: 1,
            missing: vec![],
            verdict: None,
            judge_raw: Some("<<not json>>".into()),
            threshold: 7.0,
            problems: if problem.is_empty() {
                vec![]
            } else {
                vec![problem.into()]
            },
            duration: Duration::from_millis(1500),
        }
    }

    #[test]
    fn junit_counts_and_escapes() {
        let results = vec![
            r("ok & fine", Status::Pass, ""),
            r("bad<1>", Status::Fail, "verdict FAIL"),
            r("mal", Status::Malformed, "malformed verdict: no JSON"),
            r(
                "err",
                Status::Error,
                "answer request failed: HTTP 503: \"down\"",
            ),
        ];
        let x = junit("s&s", &[(None, &results)], Duration::from_secs(2));
        assert!(
            x.contains("<testsuites name=\"llmgate eval\" tests=\"4\" failures=\"2\" errors=\"1\"")
        );
        assert!(x.contains("<testsuite name=\"s&amp;s\" tests=\"4\" failures=\"2\" errors=\"1\""));
        assert!(
            x.contains("<testcase name=\"ok &amp; fine\" classname=\"s&amp;s\" time=\"1.500\"/>")
        );
        assert!(x.contains("name=\"bad&lt;1&gt;\""));
        assert!(x.contains("<failure type=\"malformed\""));
        assert!(x.contains("judge reply: &lt;&lt;not json&gt;&gt;"));
        assert!(x.contains("message=\"answer request failed: HTTP 503: &quot;down&quot;\""));
        assert_eq!(x.matches("<testcase ").count(), 4);
        assert_eq!(x.matches("<failure ").count(), 2);
        assert_eq!(x.matches("<error ").count(), 1);
        // No raw markup characters from the data.
        assert!(!x.contains("<b>") && !x.contains("\"c\""));
    }

    #[test]
    fn table_lists_every_case() {
        let results = vec![
            r("one", Status::Pass, ""),
            r("two", Status::Fail, "missing expected: x"),
        ];
        let meta = Meta {
            suite: "s".into(),
            model: "m".into(),
            judge_model: "j".into(),
            endpoint: "http://e".into(),
        };
        let t = table(&meta, &results);
        assert!(t.contains("one  PASS"), "{t}");
        assert!(t.contains("missing expected: x"), "{t}");
        assert!(t.contains("2 cases: 1 passed, 1 failed, 0 malformed, 0 errors"));
        let j: serde_json::Value =
            serde_json::from_str(&json_report(&meta, &results, Duration::ZERO)).unwrap();
        assert_eq!(j["summary"]["failed"], 1);
        assert_eq!(j["cases"][1]["status"], "fail");
    }
}

//! The `llmgate` command against the real stack: `eval` through Envoy with
//! the mock LLM answering from queued replies (case answers and judge
//! verdicts), `--compare` on a known set, JUnit XML checked for
//! well-formedness, and `check-config` / `hash-key`.
//!
//! The binary is built by `cargo build -p llmgate-cli` (the Makefile's
//! `build` target); the newer of target/debug/llmgate and
//! target/release/llmgate is used, or `LLMGATE_CLI`.

use llmgate_integration::{config, repo_root, Mock, Options, Stack, DEMO_KEY};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

fn cli_bin() -> PathBuf {
    if let Ok(p) = std::env::var("LLMGATE_CLI") {
        return PathBuf::from(p);
    }
    let root = repo_root();
    let candidates = [
        root.join("target/debug/llmgate"),
        root.join("target/release/llmgate"),
    ];
    candidates
        .iter()
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p.clone())))
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| {
            panic!("the llmgate binary is missing: run `cargo build -p llmgate-cli` first")
        })
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(cli_bin());
    cmd.args(args)
        .current_dir(repo_root())
        .env_remove("LLMGATE_KEY")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start llmgate");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("llmgate output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

static N: AtomicU32 = AtomicU32::new(0);

fn scratch() -> PathBuf {
    let d = repo_root().join("target/itest").join(format!(
        "cli-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write");
    p.display().to_string()
}

fn verdict(overall: u32, pass: bool) -> String {
    json!({
        "scores": {"accuracy": overall, "helpfulness": overall},
        "overall": overall,
        "verdict": if pass { "PASS" } else { "FAIL" },
        "reason": format!("scored {overall}"),
    })
    .to_string()
}

fn queue(s: &Stack, replies: &[String]) {
    s.mock_control(
        Mock::Primary,
        "POST",
        "/mock/replies",
        &json!({ "replies": replies }).to_string(),
    );
}

/// A minimal XML well-formedness check (what JUnit consumers need): one
/// root, properly nested and closed tags, quoted attributes, only the five
/// predefined or numeric entities, no raw `<` in text. Returns the element
/// names in document order.
fn check_xml(xml: &str) -> Result<Vec<String>, String> {
    fn check_entities(s: &str) -> Result<(), String> {
        let mut rest = s;
        while let Some(i) = rest.find('&') {
            let after = &rest[i + 1..];
            let end = after.find(';').ok_or("unterminated entity")?;
            let name = &after[..end];
            let ok = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
                || (name.starts_with('#')
                    && name[1..].chars().all(|c| c.is_ascii_hexdigit() || c == 'x'));
            if !ok {
                return Err(format!("bad entity &{name};"));
            }
            rest = &after[end + 1..];
        }
        Ok(())
    }
    let mut rest = xml.trim_start();
    if let Some(r) = rest.strip_prefix("<?xml") {
        rest = &r[r.find("?>").ok_or("unterminated declaration")? + 2..];
    }
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut roots = 0;
    loop {
        let lt = match rest.find('<') {
            Some(i) => i,
            None => {
                if !rest.trim().is_empty() {
                    return Err("text after the root".into());
                }
                break;
            }
        };
        let txt = &rest[..lt];
        if stack.is_empty() && !txt.trim().is_empty() {
            return Err(format!("text outside the root: {txt:?}"));
        }
        check_entities(txt)?;
        let gt = rest[lt..].find('>').ok_or("unterminated tag")? + lt;
        let tag = &rest[lt + 1..gt];
        if tag.contains('<') {
            return Err(format!("'<' inside a tag: {tag:?}"));
        }
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or("close without open")?;
            if open != name.trim() {
                return Err(format!("</{name}> closes <{open}>"));
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name: String = body.chars().take_while(|c| !c.is_whitespace()).collect();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || "-_:.".contains(c))
        {
            return Err(format!("bad element name {name:?}"));
        }
        // Attributes: name="value" pairs, values without raw '<' or '"'.
        let mut attrs = body[name.len()..].trim();
        let mut seen = Vec::new();
        while !attrs.is_empty() {
            let eq = attrs
                .find('=')
                .ok_or(format!("attribute without value in <{name}>"))?;
            let an = attrs[..eq].trim().to_string();
            if an.is_empty() || seen.contains(&an) {
                return Err(format!("bad or duplicate attribute {an:?} in <{name}>"));
            }
            let v = attrs[eq + 1..].trim_start();
            let v = v
                .strip_prefix('"')
                .ok_or(format!("unquoted attribute {an}"))?;
            let close = v.find('"').ok_or("unterminated attribute")?;
            check_entities(&v[..close])?;
            seen.push(an);
            attrs = v[close + 1..].trim_start();
        }
        if stack.is_empty() {
            roots += 1;
        }
        names.push(name.clone());
        if !self_closing {
            stack.push(name);
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed elements {stack:?}"));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(names)
}

#[test]
fn xml_checker_rejects_broken_documents() {
    assert!(check_xml("<a><b x=\"1\"/>t &amp; u</a>").is_ok());
    for bad in [
        "<a><b></a></b>",
        "<a>x & y</a>",
        "<a>1 < 2</a>",
        "<a x=1/>",
        "<a/><b/>",
        "<a>",
        "<a x=\"1\" x=\"2\"/>",
    ] {
        assert!(check_xml(bad).is_err(), "{bad}");
    }
}

#[test]
fn eval_judges_through_the_gateway() {
    let s = Stack::start(Options::new(&config(json!({}))));
    let dir = scratch();
    let suite = json!({
        "name": "gateway <regressions> & more",
        "model": "gpt-4o-mini",
        "judge_model": "judge-model-x",
        "cases": [
            {"id": "passes", "query": "What is the capital of France?",
             "system": "Answer briefly.", "expected": ["paris", "re:capital\\s+of"]},
            {"id": "judge-fails", "query": "Capital of Italy?", "expected": ["Rome"]},
            {"id": "malformed", "query": "Say something nice."},
            {"id": "fenced", "query": "Say hello.", "expected": ["hello"]},
            {"id": "missing-expected", "query": "How long is the refund window?",
             "expected": ["refund", "re:\\b\\d+ days\\b"]},
            {"id": "below-threshold", "query": "Explain TCP.", "threshold": 8}
        ]
    });
    let suite_path = write(&dir, "gw.suite.json", &suite.to_string());
    queue(
        &s,
        &[
            "Paris is the capital of France.".into(),
            verdict(9, true),
            "Rome is the capital of Italy.".into(),
            verdict(3, false),
            "You are wonderful.".into(),
            "I think this answer is great, 9/10, PASS!".into(),
            "Hello there!".into(),
            format!(
                "Here is my verdict:\n```json\n{}\n```\nHope that helps.",
                verdict(8, true)
            ),
            "Refunds are handled by the store <b>manager</b> & team.".into(),
            verdict(9, true),
            "TCP is a protocol.".into(),
            verdict(6, true),
        ],
    );
    let report = dir.join("report.json");
    let junit = dir.join("junit.xml");
    let out = run(
        &[
            "eval",
            &suite_path,
            "--endpoint",
            &s.url(),
            "--concurrency",
            "1",
            "--json-report",
            report.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ],
        None,
    );
    let stdout = text(&out.stdout);
    eprintln!("{stdout}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert_eq!(
        s.mock_requests(Mock::Primary),
        12,
        "answer + judge per case"
    );
    // The last request was the judge's, with the judge model, at temperature 0.
    let last = s.mock_json(Mock::Primary, "/mock/last");
    assert_eq!(last["body"]["model"], "judge-model-x");
    assert_eq!(last["body"]["temperature"], 0);
    // The case material in the system message, the answer to judge in the
    // user message (the gateway's guard scans user turns only).
    let judge_case = last["body"]["messages"][0]["content"].as_str().unwrap();
    let judge_prompt = last["body"]["messages"][1]["content"].as_str().unwrap();
    assert!(
        judge_prompt.contains("TCP is a protocol."),
        "{judge_prompt}"
    );
    assert!(judge_case.contains("Explain TCP."));

    for (id, status) in [
        ("passes", "PASS"),
        ("judge-fails", "FAIL"),
        ("malformed", "MALFORMED"),
        ("fenced", "PASS"),
        ("missing-expected", "FAIL"),
        ("below-threshold", "FAIL"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no row for {id}:\n{stdout}"));
        assert!(line.contains(status), "{line}");
    }
    assert!(
        stdout.contains("6 cases: 2 passed, 3 failed, 1 malformed, 0 errors"),
        "{stdout}"
    );

    let j: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(j["summary"]["total"], 6);
    assert_eq!(j["summary"]["passed"], 2);
    assert_eq!(j["judge_model"], "judge-model-x");
    let case = |id: &str| {
        j["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(case("passes")["status"], "pass");
    assert_eq!(case("passes")["overall"], 9.0);
    assert_eq!(case("passes")["scores"]["accuracy"], 9.0);
    assert_eq!(case("passes")["answer"], "Paris is the capital of France.");
    assert_eq!(case("judge-fails")["verdict"], "FAIL");
    assert_eq!(case("malformed")["status"], "malformed");
    assert_eq!(case("malformed")["verdict"], Value::Null);
    assert!(case("malformed")["judge_raw"]
        .as_str()
        .unwrap()
        .contains("9/10"));
    assert_eq!(case("fenced")["status"], "pass");
    assert_eq!(case("fenced")["overall"], 8.0);
    let m = case("missing-expected");
    assert_eq!(m["status"], "fail");
    assert_eq!(
        m["verdict"], "PASS",
        "the judge liked it, the check did not"
    );
    assert_eq!(m["missing_expected"], json!(["re:\\b\\d+ days\\b"]));
    let b = case("below-threshold");
    assert_eq!(b["threshold"], 8.0);
    assert!(b["problems"][0]
        .as_str()
        .unwrap()
        .contains("overall 6 < threshold 8"));

    let xml = std::fs::read_to_string(&junit).unwrap();
    let names = check_xml(&xml).unwrap_or_else(|e| panic!("{e}:\n{xml}"));
    assert_eq!(names.first().map(String::as_str), Some("testsuites"));
    assert_eq!(names.iter().filter(|n| *n == "testsuite").count(), 1);
    assert_eq!(names.iter().filter(|n| *n == "testcase").count(), 6);
    assert_eq!(names.iter().filter(|n| *n == "failure").count(), 4);
    assert_eq!(names.iter().filter(|n| *n == "error").count(), 0);
    assert!(
        xml.contains("tests=\"6\" failures=\"4\" errors=\"0\""),
        "{xml}"
    );
    assert!(xml.contains("gateway &lt;regressions&gt; &amp; more"));
    assert!(xml.contains("<failure type=\"malformed\""));
    assert!(xml.contains("&lt;b&gt;manager&lt;/b&gt; &amp; team"));

    // All passing: exit 0, the system prompt and key reached the gateway.
    s.mock_control(Mock::Primary, "POST", "/mock/reset", "");
    let ok = json!({"model": "m-ok", "cases": [
        {"id": "only", "query": "Hi?", "system": "Be kind.", "expected": ["hi"], "criteria": ["tone"]}
    ]});
    let ok_path = write(&dir, "ok.suite.json", &ok.to_string());
    queue(
        &s,
        &[
            "Hi! How can I help?".into(),
            json!({"scores": {"tone": 10}, "overall": 10, "verdict": "pass"}).to_string(),
        ],
    );
    let out = run(
        &["eval", &ok_path, "--endpoint", &s.url(), "--key", DEMO_KEY],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("1 cases: 1 passed"));
    // --threshold above the score turns it into a failure.
    queue(
        &s,
        &[
            "Hi! How can I help?".into(),
            json!({"scores": {"tone": 8}, "overall": 8, "verdict": "PASS"}).to_string(),
        ],
    );
    let out = run(
        &["eval", &ok_path, "--endpoint", &s.url(), "--threshold", "9"],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("overall 8 < threshold 9"));

    // A key the gateway refuses: an error, and no judge request.
    s.mock_control(Mock::Primary, "POST", "/mock/reset", "");
    let junit2 = dir.join("junit2.xml");
    let out = run(
        &[
            "eval",
            &ok_path,
            "--endpoint",
            &s.url(),
            "--key",
            "sk-not-a-key",
            "--retries",
            "0",
            "--junit",
            junit2.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("ERROR") && stdout.contains("HTTP 401"),
        "{stdout}"
    );
    assert_eq!(s.mock_requests(Mock::Primary), 0);
    let xml = std::fs::read_to_string(&junit2).unwrap();
    let names = check_xml(&xml).unwrap_or_else(|e| panic!("{e}:\n{xml}"));
    assert_eq!(names.iter().filter(|n| *n == "error").count(), 1);

    // Usage and file errors are exit 2.
    let out = run(&["eval", "/nonexistent.suite.json"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        &["eval", &ok_path, "--endpoint", "https://example.com"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("https"));
    let bad = write(
        &dir,
        "bad.suite.json",
        r#"{"cases": [{"id": "a", "query": "q", "expect": []}]}"#,
    );
    let out = run(&["eval", &bad], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cases[0].expect"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_reports_the_paired_difference() {
    let prompts = json!({"prompts": {"support": {
        "versions": {"v1": "You are the support agent of {{company}}.",
                     "v2": "You are the concise support agent of {{company}}."},
        "current": "v1"
    }}});
    let s = Stack::start(Options::new(&config(prompts)));
    let dir = scratch();
    let suite = json!({"name": "support", "vars": {"company": "Acme"}, "cases": [
        {"id": "c1", "query": "q1"}, {"id": "c2", "query": "q2"}, {"id": "c3", "query": "q3"},
        {"id": "c4", "query": "q4"}, {"id": "c5", "query": "q5"}
    ]});
    let path = write(&dir, "cmp.suite.json", &suite.to_string());
    // Per case: A answer, A verdict, B answer, B verdict.
    let a = [5, 6, 7, 4, 8];
    let b = [8, 9, 7, 6, 9];
    let mut replies = Vec::new();
    for (x, y) in a.iter().zip(b) {
        replies.push("answer A".to_string());
        replies.push(verdict(*x, *x >= 7));
        replies.push("answer B".to_string());
        replies.push(verdict(y, y >= 7));
    }
    queue(&s, &replies);
    let report = dir.join("cmp.json");
    let junit = dir.join("cmp.xml");
    let out = run(
        &[
            "eval",
            &path,
            "--endpoint",
            &s.url(),
            "--concurrency",
            "1",
            "--compare",
            "support@v1",
            "support@v2",
            "--json-report",
            report.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ],
        None,
    );
    let stdout = text(&out.stdout);
    eprintln!("{stdout}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("compare A = support@v1  B = support@v2"),
        "{stdout}"
    );
    assert!(stdout.contains("mean difference (B-A) +1.80"), "{stdout}");
    assert!(
        stdout
            .contains("B vs A: 4 wins, 1 ties, 0 losses; sign test p = 0.1250 (two-sided, n = 4)"),
        "{stdout}"
    );
    assert!(stdout.contains("passed: A 2/5, B 4/5"), "{stdout}");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(j["mode"], "compare");
    assert_eq!(j["summary"]["wins"], 4);
    assert_eq!(j["summary"]["ties"], 1);
    assert_eq!(j["summary"]["losses"], 0);
    assert!((j["summary"]["mean_diff"].as_f64().unwrap() - 1.8).abs() < 1e-9);
    assert!((j["summary"]["p_value"].as_f64().unwrap() - 0.125).abs() < 1e-9);
    assert_eq!(j["cases"][0]["a"]["overall"], 5.0);
    assert_eq!(j["cases"][0]["b"]["overall"], 8.0);
    assert_eq!(j["cases"][0]["diff"], 3.0);

    // The gateway applied each version: the audit log names them, 5 each.
    let audit = s.wait_audit(20);
    let count = |v: &str| {
        audit
            .iter()
            .filter(|l| l["prompt_id"] == "support" && l["prompt_version"] == v)
            .count()
    };
    assert_eq!((count("v1"), count("v2")), (5, 5), "{audit:?}");

    let xml = std::fs::read_to_string(&junit).unwrap();
    let names = check_xml(&xml).unwrap_or_else(|e| panic!("{e}:\n{xml}"));
    assert_eq!(names.iter().filter(|n| *n == "testsuite").count(), 2);
    assert_eq!(names.iter().filter(|n| *n == "testcase").count(), 10);
    // A: 5, 6, 4 fail their threshold; B: 6.
    assert_eq!(names.iter().filter(|n| *n == "failure").count(), 4);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_names_the_field_and_accepts_the_examples() {
    let dir = scratch();
    let bad: &[(&str, &str, &str)] = &[
        (
            "unknown.json",
            r#"{"max_body_bytes": 1024, "no_such_field": true}"#,
            "no_such_field",
        ),
        ("zero.json", r#"{"max_body_bytes": 0}"#, "max_body_bytes: "),
        (
            "type.json",
            r#"{"max_body_bytes": "big"}"#,
            "max_body_bytes: ",
        ),
        (
            "nested.json",
            r#"{"keys": [{"id": "a", "sha256": "x", "bogus": 1}]}"#,
            "keys[0].bogus: ",
        ),
        (
            "mode.json",
            r#"{"auth": {"mode": "sometimes"}}"#,
            "auth.mode: ",
        ),
        (
            "header.json",
            r#"{"auth": {"mode": "trusted_header"}}"#,
            "auth.identity_header: ",
        ),
        ("array.json", "[1, 2]", "must be a JSON object"),
        ("garbage.json", "{not json", ""),
    ];
    for (name, content, needle) in bad {
        let p = write(&dir, name, content);
        let out = run(&["check-config", &p], None);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{name}: {stdout}");
        assert!(stdout.starts_with(&format!("{p}: ")), "{stdout}");
        assert!(stdout.contains(needle), "{name}: {stdout}");
    }

    // Several files: each reported, exit 1 because one fails.
    let good = write(&dir, "good.json", r#"{"auth": {"mode": "none"}}"#);
    let bad1 = dir.join("unknown.json").display().to_string();
    let out = run(&["check-config", &good, &bad1], None);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("{good}: ok")), "{stdout}");
    assert!(stdout.contains("no_such_field"), "{stdout}");

    // Credentials: assumed set by default, checked with --check-env.
    let cred = write(
        &dir,
        "cred.json",
        r#"{"auth": {"mode": "none"}, "credentials": {"openai": {"env": "LLMGATE_CLI_TEST_UNSET"}}}"#,
    );
    let out = run(&["check-config", &cred], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("--check-env"));
    let out = run(&["check-config", "--check-env", &cred], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("credentials.openai.env: "));

    // The repository's examples, by file and by directory (suites skipped).
    let out = run(&["check-config", "examples/demo.json"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("examples/demo.json: ok"));
    let out = run(&["check-config", "examples"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains(".suite.json"));

    let out = run(&["check-config", "/nonexistent/x.json"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("cannot read"));
    let out = run(&["check-config"], None);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hash_key_prints_the_config_form() {
    let out = run(&["hash-key"], Some("sk-llmgate-demo\n"));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        llmgate::core::util::sha256_hex(DEMO_KEY.as_bytes())
    );
    let out = run(&["hash-key"], Some(""));
    assert_eq!(out.status.code(), Some(2));
}

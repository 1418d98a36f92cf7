//! `llmgate eval`: an LLM-as-a-judge regression runner.
//!
//! # Suite file (JSON)
//!
//! ```json
//! {
//!   "name": "support-bot",            // optional; default: the file name
//!   "model": "gpt-4o-mini",           // optional; model the cases are sent to (default gpt-4o-mini)
//!   "judge_model": "gpt-4o",          // optional; default: "model"
//!   "threshold": 7,                   // optional; pass threshold for "overall", 1-10 (default 7)
//!   "vars": {"company": "Acme"},      // optional; prompt template variables for every case
//!   "cases": [
//!     {
//!       "id": "refund-window",        // unique
//!       "query": "How long do I have to return a jacket?",
//!       "system": "You are the support bot of Acme.",   // optional system message
//!       "prompt": "support@v2",       // optional; sent as header x-llmgate-prompt
//!       "vars": {"company": "Acme"},  // optional template variables (x-llmgate-prompt-vars),
//!                                     // laid over the suite-level "vars"
//!       "reference": "30 days",       // optional reference answer shown to the judge
//!       "expected": ["30 days", "re:\\brefund(s|ed)?\\b"], // must all appear in the answer
//!       "criteria": ["accuracy", "helpfulness"],          // default: accuracy, helpfulness
//!       "threshold": 8                // optional; overrides the suite threshold
//!     }
//!   ]
//! }
//! ```
//! (Comments are for this description only: the file is plain JSON, and
//! unknown fields are errors.)
//!
//! An expected element is a case-insensitive substring, or with the `re:`
//! prefix a case-insensitive regular expression (regex-lite syntax).
//!
//! # What a case does
//!
//! 1. `POST <endpoint>/v1/chat/completions` (OpenAI shape, not streaming)
//!    with `Authorization: Bearer <key>`, the optional system message, the
//!    query as the user message, `x-llmgate-prompt` when the case (or
//!    `--compare`) names a prompt, and `x-llmgate-cache: no-store` unless
//!    `--use-cache`.
//! 2. The answer is checked for every expected element.
//! 3. A judge request goes through the same endpoint (judge model,
//!    temperature 0, no prompt header) with a rubric asking for
//!    `{"scores": {"<criterion>": 1-10}, "overall": 1-10, "verdict":
//!    "PASS"|"FAIL", "reason": "..."}`. The reply is parsed robustly (whole
//!    text, a ``` fence, or the first balanced `{...}` object with a
//!    `verdict`); every requested criterion needs a score. Anything else is
//!    `malformed`, never a pass.
//!
//! A case passes when every expected element is present, the verdict is
//! PASS and overall ≥ threshold. Status: `pass`, `fail`, `malformed` (the
//! judge's reply is not a valid verdict) or `error` (the endpoint failed
//! after retries; the judge is then not asked).
//!
//! With `--concurrency 1` requests are strictly ordered: for each case in
//! file order, the answer request then its judge request (in compare mode,
//! variant A's pair then variant B's pair).
//!
//! # Compare mode
//!
//! `--compare A B` runs every case once with prompt A and once with prompt B
//! (overriding the case's `prompt`), judges both, and reports per case the
//! overall scores, the mean difference (B − A), wins/ties/losses of B against
//! A, and the two-sided exact sign-test p-value over non-tied pairs. Pairs
//! with an error or malformed verdict are left out and reported; the exit
//! status is then 1.
//!
//! # Exit status
//!
//! 0 every case passed (compare: every pair complete); 1 some case did not
//! pass (compare: some pair incomplete); 2 usage, suite or file errors.

use crate::http::{Client, Endpoint};
use crate::judge::{self, JudgeInput, Verdict};
use crate::report;
use crate::stats::sign_test_p;
use crate::suite::{self, check_prompt_ref, Case, Overrides, Suite};
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:10000";
pub const DEFAULT_KEY: &str = "sk-llmgate-demo";

#[derive(Debug, Clone)]
pub struct EvalArgs {
    pub suite: PathBuf,
    pub endpoint: String,
    pub key: String,
    pub overrides: Overrides,
    pub concurrency: usize,
    pub timeout: Duration,
    pub retries: u32,
    pub json_report: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    pub compare: Option<(String, String)>,
    pub use_cache: bool,
}

impl EvalArgs {
    /// Parses the arguments after `eval`.
    pub fn parse(args: &[String]) -> Result<EvalArgs, String> {
        let mut suite = None;
        let mut a = EvalArgs {
            suite: PathBuf::new(),
            endpoint: DEFAULT_ENDPOINT.to_string(),
            key: std::env::var("LLMGATE_KEY")
                .ok()
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| DEFAULT_KEY.to_string()),
            overrides: Overrides::default(),
            concurrency: 4,
            timeout: Duration::from_secs(60),
            retries: 2,
            json_report: None,
            junit: None,
            compare: None,
            use_cache: false,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = |name: &str| -> Result<String, String> {
                match &inline {
                    Some(v) => Ok(v.clone()),
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("{name} needs a value")),
                }
            };
            match flag {
                "--endpoint" => a.endpoint = value(flag)?,
                "--key" => a.key = value(flag)?,
                "--model" => a.overrides.model = Some(value(flag)?),
                "--judge-model" => a.overrides.judge_model = Some(value(flag)?),
                "--threshold" => {
                    let v = value(flag)?;
                    let t: f64 = v
                        .parse()
                        .map_err(|_| format!("--threshold: not a number: {v}"))?;
                    if !(1.0..=10.0).contains(&t) {
                        return Err("--threshold must be between 1 and 10".into());
                    }
                    a.overrides.threshold = Some(t);
                }
                "--concurrency" => a.concurrency = parse_num(flag, &value(flag)?, 1, 256)? as usize,
                "--timeout-ms" => {
                    a.timeout = Duration::from_millis(parse_num(flag, &value(flag)?, 1, 3_600_000)?)
                }
                "--retries" => a.retries = parse_num(flag, &value(flag)?, 0, 10)? as u32,
                "--json-report" => a.json_report = Some(PathBuf::from(value(flag)?)),
                "--junit" => a.junit = Some(PathBuf::from(value(flag)?)),
                "--use-cache" if inline.is_none() => a.use_cache = true,
                "--compare" => {
                    let x = value(flag)?;
                    let y = it
                        .next()
                        .cloned()
                        .ok_or("--compare needs two prompt references: A B")?;
                    for p in [&x, &y] {
                        check_prompt_ref(p).map_err(|e| format!("--compare: {e}"))?;
                    }
                    if x == y {
                        return Err("--compare: the two prompts are the same".into());
                    }
                    a.compare = Some((x, y));
                }
                f if f.starts_with('-') && f != "-" => return Err(format!("unknown option {f}")),
                _ => {
                    if suite.replace(PathBuf::from(arg)).is_some() {
                        return Err("eval takes one SUITE file".into());
                    }
                }
            }
        }
        a.suite = suite.ok_or("eval needs a SUITE file")?;
        if a.key.is_empty() {
            return Err("--key must not be empty".into());
        }
        Ok(a)
    }
}

fn parse_num(flag: &str, v: &str, min: u64, max: u64) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{flag}: expected a whole number from {min} to {max}, got {v:?}"
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Malformed,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Malformed => "malformed",
            Status::Error => "error",
        }
    }
}

/// The outcome of one case (one prompt variant in compare mode).
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: String,
    pub prompt: Option<String>,
    pub status: Status,
    pub answer: Option<String>,
    pub expected_total: usize,
    pub missing: Vec<String>,
    pub verdict: Option<Verdict>,
    pub judge_raw: Option<String>,
    pub threshold: f64,
    /// Why the case did not pass (empty when it passed).
    pub problems: Vec<String>,
    pub duration: Duration,
}

impl CaseResult {
    pub fn overall(&self) -> Option<f64> {
        self.verdict.as_ref().map(|v| v.overall)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "prompt": self.prompt,
            "status": self.status.as_str(),
            "threshold": self.threshold,
            "overall": self.overall(),
            "verdict": self.verdict.as_ref().map(|v| if v.pass { "PASS" } else { "FAIL" }),
            "scores": self.verdict.as_ref().map(|v| &v.scores),
            "reason": self.verdict.as_ref().map(|v| &v.reason),
            "expected_total": self.expected_total,
            "missing_expected": self.missing,
            "problems": self.problems,
            "answer": self.answer,
            "judge_raw": self.judge_raw,
            "duration_ms": self.duration.as_millis() as u64,
        })
    }
}

/// What a run needs besides the suite.
pub struct Runner {
    pub client: Client,
    pub chat_path: String,
    pub key: String,
    pub use_cache: bool,
}

impl Runner {
    fn headers(
        &self,
        prompt: Option<&str>,
        vars: &serde_json::Map<String, Value>,
    ) -> Vec<(String, String)> {
        let mut h = vec![
            ("authorization".to_string(), format!("Bearer {}", self.key)),
            ("content-type".to_string(), "application/json".to_string()),
            ("accept".to_string(), "application/json".to_string()),
            (
                "user-agent".to_string(),
                concat!("llmgate-eval/", env!("CARGO_PKG_VERSION")).to_string(),
            ),
        ];
        if !self.use_cache {
            h.push(("x-llmgate-cache".to_string(), "no-store".to_string()));
        }
        if let Some(p) = prompt {
            h.push(("x-llmgate-prompt".to_string(), p.to_string()));
            if !vars.is_empty() {
                h.push((
                    "x-llmgate-prompt-vars".to_string(),
                    Value::Object(vars.clone()).to_string(),
                ));
            }
        }
        h
    }

    /// One chat completion; the answer text, or why there is none.
    fn chat(
        &self,
        body: &Value,
        prompt: Option<&str>,
        vars: &serde_json::Map<String, Value>,
    ) -> Result<String, String> {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let r = self
            .client
            .post(&self.chat_path, &self.headers(prompt, vars), &bytes)?;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if !(200..300).contains(&r.status) {
            let msg = v["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&r.body).chars().take(200).collect());
            return Err(format!("HTTP {}: {msg}", r.status));
        }
        judge::answer_text(&v).ok_or_else(|| {
            format!(
                "HTTP {}: no choices[0].message.content in the response",
                r.status
            )
        })
    }

    /// Runs one case with `prompt` (the case's own, or a compare variant).
    pub fn run_case(&self, suite: &Suite, case: &Case, prompt: Option<&str>) -> CaseResult {
        let start = Instant::now();
        let mut res = CaseResult {
            id: case.id.clone(),
            prompt: prompt.map(str::to_string),
            status: Status::Error,
            answer: None,
            expected_total: case.expected.len(),
            missing: Vec::new(),
            verdict: None,
            judge_raw: None,
            threshold: case.threshold,
            problems: Vec::new(),
            duration: Duration::ZERO,
        };
        let mut messages = Vec::new();
        if let Some(s) = &case.system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": case.query}));
        let body = json!({"model": suite.model, "messages": messages, "stream": false});
        let answer = match self.chat(&body, prompt, &case.vars) {
            Ok(a) => a,
            Err(e) => {
                res.problems.push(format!("answer request failed: {e}"));
                res.duration = start.elapsed();
                return res;
            }
        };
        res.missing = suite::missing(&case.expected, &answer);
        let jbody = judge::judge_request(
            &suite.judge_model,
            &JudgeInput {
                query: &case.query,
                system: case.system.as_deref(),
                prompt,
                reference: case.reference.as_deref(),
                answer: &answer,
                criteria: &case.criteria,
            },
        );
        res.answer = Some(answer);
        if !res.missing.is_empty() {
            res.problems
                .push(format!("missing expected: {}", res.missing.join(", ")));
        }
        match self.chat(&jbody, None, &serde_json::Map::new()) {
            Err(e) => {
                res.problems.push(format!("judge request failed: {e}"));
                res.status = Status::Error;
            }
            Ok(raw) => {
                match judge::parse_verdict(&raw, &case.criteria) {
                    Err(why) => {
                        res.problems.push(format!("malformed verdict: {why}"));
                        res.status = Status::Malformed;
                    }
                    Ok(v) => {
                        if !v.pass {
                            res.problems.push("verdict FAIL".to_string());
                        }
                        if v.overall < case.threshold {
                            res.problems.push(format!(
                                "overall {} < threshold {}",
                                fmt_score(v.overall),
                                fmt_score(case.threshold)
                            ));
                        }
                        res.status = if res.problems.is_empty() {
                            Status::Pass
                        } else {
                            Status::Fail
                        };
                        res.verdict = Some(v);
                    }
                }
                res.judge_raw = Some(raw);
            }
        }
        res.duration = start.elapsed();
        res
    }
}

pub fn fmt_score(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
struct Progress {
    total: usize,
    done: AtomicUsize,
    tty: bool,
    lock: Mutex<()>,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total,
            done: AtomicUsize::new(0),
            tty: std::io::stderr().is_terminal(),
            lock: Mutex::new(()),
        }
    }

    fn tick(&self, last: &str) {
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.tty {
            return;
        }
        let _g = self.lock.lock();
        const W: usize = 30;
        let filled = (done * W).checked_div(self.total).unwrap_or(W).min(W);
        let label: String = last.chars().take(30).collect();
        let _ = write!(
            std::io::stderr(),
            "\r\x1b[2K[{}{}] {done}/{} {label}",
            "#".repeat(filled),
            ".".repeat(W - filled),
            self.total
        );
        if done >= self.total {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// Runs `jobs` (case index, prompt) on at most `concurrency` threads; results
/// come back in job order.
fn run_jobs(
    runner: &Runner,
    suite: &Suite,
    jobs: &[(usize, Option<String>)],
    concurrency: usize,
) -> Vec<CaseResult> {
    let progress = Progress::new(jobs.len());
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<CaseResult>>> = Mutex::new(vec![None; jobs.len()]);
    let workers = concurrency.clamp(1, jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((ci, prompt)) = jobs.get(i) else {
                    break;
                };
                let Some(case) = suite.cases.get(*ci) else {
                    break;
                };
                let r = runner.run_case(suite, case, prompt.as_deref());
                progress.tick(&r.id);
                if let Ok(mut g) = slots.lock() {
                    if let Some(slot) = g.get_mut(i) {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    slots
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

/// Paired comparison of two prompt versions.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    /// Per case: (id, result with A, result with B).
    pub pairs: Vec<(CaseResult, CaseResult)>,
    pub complete: usize,
    pub mean_a: f64,
    pub mean_b: f64,
    pub mean_diff: f64,
    pub wins: u64,
    pub ties: u64,
    pub losses: u64,
    pub p_value: f64,
}

pub fn compare(a: &str, b: &str, pairs: Vec<(CaseResult, CaseResult)>) -> Comparison {
    let scored: Vec<(f64, f64)> = pairs
        .iter()
        .filter_map(|(x, y)| Some((x.overall()?, y.overall()?)))
        .collect();
    let n = scored.len();
    let mean = |f: &dyn Fn(&(f64, f64)) -> f64| {
        if n == 0 {
            0.0
        } else {
            scored.iter().map(f).sum::<f64>() / n as f64
        }
    };
    let wins = scored.iter().filter(|(x, y)| y > x).count() as u64;
    let losses = scored.iter().filter(|(x, y)| y < x).count() as u64;
    let ties = n as u64 - wins - losses;
    Comparison {
        a: a.to_string(),
        b: b.to_string(),
        complete: n,
        mean_a: mean(&|p| p.0),
        mean_b: mean(&|p| p.1),
        mean_diff: mean(&|p| p.1 - p.0),
        wins,
        ties,
        losses,
        p_value: sign_test_p(wins + losses, wins),
        pairs,
    }
}

/// Entry point: returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let a = match EvalArgs::parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("llmgate eval: {e}\n\n{}", crate::USAGE);
            return 2;
        }
    };
    match run(&a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("llmgate eval: {e}");
            2
        }
    }
}

fn run(a: &EvalArgs) -> Result<i32, String> {
    let bytes =
        std::fs::read(&a.suite).map_err(|e| format!("{}: cannot read: {e}", a.suite.display()))?;
    let stem = a
        .suite
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.trim_end_matches(".json").trim_end_matches(".suite"))
        .unwrap_or("suite")
        .to_string();
    let suite = suite::parse_suite(&bytes, &stem, &a.overrides)
        .map_err(|e| format!("{}: {e}", a.suite.display()))?;
    let endpoint = Endpoint::parse(&a.endpoint)?;
    let runner = Runner {
        chat_path: endpoint.chat_path(),
        client: Client {
            endpoint,
            timeout: a.timeout,
            retries: a.retries,
            backoff: Duration::from_millis(250),
        },
        key: a.key.clone(),
        use_cache: a.use_cache,
    };
    let meta = report::Meta {
        suite: suite.name.clone(),
        model: suite.model.clone(),
        judge_model: suite.judge_model.clone(),
        endpoint: a.endpoint.clone(),
    };
    let started = Instant::now();
    match &a.compare {
        None => {
            let jobs: Vec<_> = (0..suite.cases.len())
                .map(|i| (i, suite.cases.get(i).and_then(|c| c.prompt.clone())))
                .collect();
            let results = run_jobs(&runner, &suite, &jobs, a.concurrency);
            let elapsed = started.elapsed();
            print!("{}", report::table(&meta, &results));
            if let Some(p) = &a.json_report {
                write_file(p, &report::json_report(&meta, &results, elapsed))?;
            }
            if let Some(p) = &a.junit {
                write_file(p, &report::junit(&meta.suite, &[(None, &results)], elapsed))?;
            }
            Ok(i32::from(results.iter().any(|r| r.status != Status::Pass)))
        }
        Some((pa, pb)) => {
            let jobs: Vec<_> = (0..suite.cases.len())
                .flat_map(|i| [(i, Some(pa.clone())), (i, Some(pb.clone()))])
                .collect();
            let mut results = run_jobs(&runner, &suite, &jobs, a.concurrency).into_iter();
            let mut pairs = Vec::new();
            while let (Some(x), Some(y)) = (results.next(), results.next()) {
                pairs.push((x, y));
            }
            let elapsed = started.elapsed();
            let c = compare(pa, pb, pairs);
            print!("{}", report::compare_table(&meta, &c));
            if let Some(p) = &a.json_report {
                write_file(p, &report::compare_json(&meta, &c, elapsed))?;
            }
            if let Some(p) = &a.junit {
                let ra: Vec<CaseResult> = c.pairs.iter().map(|p| p.0.clone()).collect();
                let rb: Vec<CaseResult> = c.pairs.iter().map(|p| p.1.clone()).collect();
                write_file(
                    p,
                    &report::junit(
                        &meta.suite,
                        &[(Some(pa.as_str()), &ra), (Some(pb.as_str()), &rb)],
                        elapsed,
                    ),
                )?;
            }
            Ok(i32::from(c.complete < c.pairs.len()))
        }
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<EvalArgs, String> {
        EvalArgs::parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn arguments() {
        let a = args("s.json --endpoint http://h:1 --key k --concurrency 3 --timeout-ms=500 --retries 0 --threshold 8.5 --compare p@1 p@2 --junit j.xml --json-report r.json --judge-model J --model M --use-cache").unwrap();
        assert_eq!(a.suite, PathBuf::from("s.json"));
        assert_eq!(a.endpoint, "http://h:1");
        assert_eq!(a.key, "k");
        assert_eq!(a.concurrency, 3);
        assert_eq!(a.timeout, Duration::from_millis(500));
        assert_eq!(a.retries, 0);
        assert_eq!(a.overrides.threshold, Some(8.5));
        assert_eq!(a.compare, Some(("p@1".into(), "p@2".into())));
        assert_eq!(a.junit, Some(PathBuf::from("j.xml")));
        assert!(a.use_cache);
        for bad in [
            "",
            "a.json b.json",
            "s.json --bogus",
            "s.json --concurrency 0",
            "s.json --threshold 11",
            "s.json --compare p@1",
            "s.json --compare p@1 p@1",
            "s.json --key",
        ] {
            assert!(args(bad).is_err(), "{bad}");
        }
    }

    fn result(id: &str, overall: Option<f64>) -> CaseResult {
        CaseResult {
            id: id.into(),
            prompt: None,
            status: if overall.is_some() {
                Status::Pass
            } else {
                Status::Malformed
            },
            answer: None,
            expected_total: 0,
            missing: vec![],
            verdict: overall.map(|o| Verdict {
                scores: Default::default(),
                overall: o,
                pass: true,
                reason: String::new(),
            }),
            judge_raw: None,
            threshold: 7.0,
            problems: vec![],
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn comparison_counts() {
        let pairs = vec![
            (result("a", Some(6.0)), result("a", Some(8.0))),
            (result("b", Some(7.0)), result("b", Some(7.0))),
            (result("c", Some(9.0)), result("c", Some(5.0))),
            (result("d", Some(4.0)), result("d", Some(9.0))),
            (result("e", None), result("e", Some(9.0))),
        ];
        let c = compare("x@1", "x@2", pairs);
        assert_eq!((c.wins, c.ties, c.losses), (2, 1, 1));
        assert_eq!(c.complete, 4);
        assert!((c.mean_diff - 0.75).abs() < 1e-9);
        assert!((c.mean_a - 6.5).abs() < 1e-9);
        assert!((c.p_value - 1.0).abs() < 1e-9);
    }
}

//! Guard report: runs the request guard (the same Rust code the filter runs)
//! over the public corpus and writes a markdown table.
//!
//! ```text
//! cargo run --release --example guard_report -- <corpus dir> <output.md> [benign_extra.jsonl]
//! cargo run --release --example guard_report -- --features <in.jsonl> <out.txt>
//! ```
//! The second form prints the classifier's feature indices for each record's
//! `text` (one line per record), for `scripts/train_guard.py`.

// A development tool, not filter code: fixed-table indexing in the
// synthetic-value generators is fine here.
#![allow(clippy::indexing_slicing)]

// The guard's own source files, compiled into this tool exactly as the
// filter compiles them (so the report does not depend on the root crate
// exporting the module).
#[allow(dead_code)]
#[path = "../src/core"]
mod core {
    pub use llmgate::core::api;
    pub use llmgate::core::config;
    pub mod guard;
}

use self::core::api::Api;
use self::core::guard::classifier;
use self::core::guard::detect::{Detectors, Entity};
use self::core::guard::normalise;
use self::core::guard::{Guard, GuardConfig};
use regex_lite::Regex;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, Write as _};
use std::path::Path;
use std::time::Instant;

type Res<T> = Result<T, String>;

fn main() {
    if let Err(e) = run() {
        eprintln!("guard_report: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, input, output] if flag == "--features" => dump_features(input, output),
        [corpus, output] => report(corpus, output, None),
        [corpus, output, extra] => report(corpus, output, Some(extra.as_str())),
        _ => Err("usage: guard_report <corpus dir> <output.md> [benign_extra.jsonl] | --features <in.jsonl> <out.txt>".into()),
    }
}

fn read_jsonl(path: &Path) -> Res<Vec<Value>> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    Ok(out)
}

fn dump_features(input: &str, output: &str) -> Res<()> {
    let recs = read_jsonl(Path::new(input))?;
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(output).map_err(|e| e.to_string())?);
    for r in recs {
        let text = r.get("text").and_then(Value::as_str).unwrap_or("");
        let norm = normalise::normalise(text);
        let f = classifier::text_features(&norm);
        let line: Vec<String> = f.iter().map(|x| x.to_string()).collect();
        writeln!(out, "{}", line.join(" ")).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// FNV-1a 32 of the record id; `% 5 == 0` is the held-out split (the
/// training script uses the same function).
fn heldout(id: &str) -> bool {
    let mut h: u32 = 0x811c_9dc5;
    for &b in id.as_bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h.is_multiple_of(5)
}

/// The seed article's five patterns, as written (Python `re.IGNORECASE`).
/// Note `r"\\n\\n\\n\\n"` matches a literal backslash-n sequence, not
/// newlines.
fn baseline() -> Vec<Regex> {
    [
        r"(?i)ignore previous instructions",
        r"(?i)disregard all above",
        r"(?i)system:",
        r"(?i)\\n\\n\\n\\n",
        r"(?i)<\|im_start\|>",
    ]
    .iter()
    .filter_map(|p| Regex::new(p).ok())
    .collect()
}

#[derive(Default, Clone, Copy)]
struct Counts {
    n: u32,
    guard: u32,
    rules: u32,
    base: u32,
    ho_n: u32,
    ho_guard: u32,
    ho_rules: u32,
    ho_base: u32,
}

fn pct(a: u32, n: u32) -> String {
    if n == 0 {
        "–".into()
    } else {
        format!("{:.1}%", 100.0 * f64::from(a) / f64::from(n))
    }
}

fn detected(g: &Guard, r: &Value) -> bool {
    let text = r.get("text").and_then(Value::as_str).unwrap_or("");
    let mut msgs = Vec::new();
    if let Some(sp) = r.get("system_prompt").and_then(Value::as_str) {
        msgs.push(json!({"role": "system", "content": sp}));
    }
    msgs.push(json!({"role": "user", "content": text}));
    let mut body = json!({"model": "m", "messages": msgs});
    let o = g.inspect_request(Api::OpenAi, &mut body);
    o.block
        .as_ref()
        .is_some_and(|b| b.code == "prompt_injection_detected")
        || !o.flagged.is_empty()
}

/// Sources whose licence allows training (mirrors scripts/train_guard.py).
fn trainable(file: &str) -> bool {
    !(file.starts_with("protectai") || file.starts_with("alpaca"))
}

fn report(corpus: &str, output: &str, extra: Option<&str>) -> Res<()> {
    let corpus = Path::new(corpus);
    let no_pii = json!({"pii": {"email": "allow", "phone": "allow", "credit_card": "allow", "iban": "allow", "us_ssn": "allow", "ip_address": "allow"}, "secrets": {"default": "allow"}});
    let full: Guard = compile(no_pii.clone())?;
    let mut rules_cfg = no_pii.clone();
    rules_cfg["injection"] = json!({"actions": {"classifier": "off"}});
    let rules_only: Guard = compile(rules_cfg)?;
    let base = baseline();
    let base_hit = |t: &str| base.iter().any(|r| r.is_match(t));

    let mut md = String::new();
    let _ = writeln!(md, "## Guard report\n");
    let _ = writeln!(
        md,
        "Generated by `make guard-report` (`examples/guard_report.rs`) with the default guard configuration (threshold 0.5; a row counts as detected when any injection category reaches the threshold, blocked or flagged). Classifier loaded: {}. *Held-out* = the 20% of records (FNV-1a of the id mod 5 = 0) never used for training; sources marked *eval only* were never trained on at all.\n",
        if full.has_classifier() { "yes" } else { "no" }
    );

    // ---- injection
    let mut files: Vec<(String, std::path::PathBuf)> = Vec::new();
    for dir in ["injection", "benign"] {
        let d = corpus.join(dir);
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .map_err(|e| format!("{}: {e}", d.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        entries.sort();
        for p in entries {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            files.push((name, p));
        }
    }
    if let Some(x) = extra {
        files.push(("benign_extra (ours)".into(), Path::new(x).to_path_buf()));
    }
    let mut rows: BTreeMap<(String, String), Counts> = BTreeMap::new();
    let mut totals: BTreeMap<String, Counts> = BTreeMap::new();
    let t0 = Instant::now();
    let mut n_texts = 0u32;
    for (name, path) in &files {
        for r in read_jsonl(path)? {
            let label = r
                .get("label")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            let id = r.get("id").and_then(Value::as_str).unwrap_or("");
            let text = r.get("text").and_then(Value::as_str).unwrap_or("");
            let g = detected(&full, &r);
            let ru = detected(&rules_only, &r);
            let b = base_hit(text);
            n_texts += 1;
            let ho = heldout(id);
            add(
                rows.entry((name.clone(), label.clone())).or_default(),
                g,
                ru,
                b,
                ho,
            );
            let tkey = match label.as_str() {
                "attack" => "attacks (all sources)",
                "benign" => "benign (all sources)",
                _ => "harmful_plain (all sources)",
            };
            add(totals.entry(tkey.to_string()).or_default(), g, ru, b, ho);
            if label != "harmful_plain" {
                let scope = if trainable(name) {
                    "trained sources"
                } else {
                    "eval-only sources"
                };
                add(
                    totals
                        .entry(format!(
                            "{}, {scope}",
                            if label == "attack" {
                                "attacks"
                            } else {
                                "benign"
                            }
                        ))
                        .or_default(),
                    g,
                    ru,
                    b,
                    ho,
                );
            }
            if label == "benign" && (name.starts_with("notinject") || name.starts_with("xstest")) {
                add(
                    totals
                        .entry("benign hard negatives (NotInject + XSTest safe)".into())
                        .or_default(),
                    g,
                    ru,
                    b,
                    ho,
                );
            }
        }
    }
    let elapsed = t0.elapsed();

    let _ = writeln!(md, "### Prompt injection\n");
    let _ = writeln!(md, "Attack rows: detection rate (higher is better). Benign rows: false-positive rate (lower is better). harmful_plain rows are plain harmful requests with no manipulation — out of scope for an injection detector, shown apart and counted neither as misses nor as false positives.\n");
    let _ = writeln!(md, "| source | label | n | llmgate (rules + classifier) | held-out n | llmgate held-out | rules only | seed's five patterns |");
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|");
    for label in ["attack", "benign", "harmful_plain"] {
        for ((name, l), c) in &rows {
            if l != label {
                continue;
            }
            let src = if trainable(name) {
                name.clone()
            } else {
                format!("{name} (eval only)")
            };
            let _ = writeln!(
                md,
                "| {src} | {l} | {} | {} | {} | {} | {} | {} |",
                c.n,
                pct(c.guard, c.n),
                c.ho_n,
                pct(c.ho_guard, c.ho_n),
                pct(c.rules, c.n),
                pct(c.base, c.n)
            );
        }
    }
    for (name, c) in &totals {
        let _ = writeln!(
            md,
            "| **{name}** | | {} | **{}** | {} | **{}** | {} | {} |",
            c.n,
            pct(c.guard, c.n),
            c.ho_n,
            pct(c.ho_guard, c.ho_n),
            pct(c.rules, c.n),
            pct(c.base, c.n)
        );
    }
    let _ = writeln!(
        md,
        "\nHow to read it: the *held-out* columns of trained sources are the honest classifier numbers (those rows were never trained on). The rules, however, were written while looking at misses and false positives across the whole corpus, the eval-only ProtectAI set included, so rule-driven numbers everywhere are optimistic. Many CyberSecEval rows are attacks only relative to their system prompt (e.g. an off-topic question), which no input-only detector can see; Mosscap and Gandalf rows are password-game attempts.\n"
    );
    let _ = writeln!(
        md,
        "\n{} texts scored twice in {:.2} s natively (release build).\n",
        n_texts,
        elapsed.as_secs_f64()
    );

    // ---- PII (Presidio synthetic)
    let _ = writeln!(md, "### PII — Presidio research synthetic dataset\n");
    let pii_path = corpus.join("pii/presidio_research_synth_dataset_v2.json");
    let raw =
        std::fs::read_to_string(&pii_path).map_err(|e| format!("{}: {e}", pii_path.display()))?;
    let data: Value = serde_json::from_str(&raw).map_err(|e| e.to_string())?;
    let det = Detectors::all_enabled();
    let map = [
        ("EMAIL_ADDRESS", Entity::Email),
        ("PHONE_NUMBER", Entity::Phone),
        ("CREDIT_CARD", Entity::CreditCard),
        ("IBAN_CODE", Entity::Iban),
        ("US_SSN", Entity::UsSsn),
        ("IP_ADDRESS", Entity::IpAddress),
    ];
    let mut pr: BTreeMap<&str, (u32, u32, u32)> = BTreeMap::new(); // tp(gold found), gold, pred, pred_tp
    let mut pred_ok: BTreeMap<&str, u32> = BTreeMap::new();
    for rec in data.as_array().map(|a| a.as_slice()).unwrap_or(&[]) {
        let text = rec.get("full_text").and_then(Value::as_str).unwrap_or("");
        let spans: Vec<(Entity, usize, usize)> = rec
            .get("spans")
            .and_then(Value::as_array)
            .map(|a| a.as_slice())
            .unwrap_or(&[])
            .iter()
            .filter_map(|s| {
                let t = s.get("entity_type")?.as_str()?;
                let e = map.iter().find(|(k, _)| *k == t)?.1;
                // positions are in characters
                let sc = s.get("start_position")?.as_u64()? as usize;
                let ec = s.get("end_position")?.as_u64()? as usize;
                Some((e, char_to_byte(text, sc), char_to_byte(text, ec)))
            })
            .collect();
        let found = det.find(text);
        for (e, s, en) in &spans {
            let c = pr.entry(e.name()).or_default();
            c.1 += 1;
            if found
                .iter()
                .any(|m| m.entity == *e && m.start < *en && *s < m.end)
            {
                c.0 += 1;
            }
        }
        for m in &found {
            if !map.iter().any(|(_, e)| *e == m.entity) {
                continue;
            }
            let c = pr.entry(m.entity.name()).or_default();
            c.2 += 1;
            if spans
                .iter()
                .any(|(e, s, en)| *e == m.entity && m.start < *en && *s < m.end)
            {
                *pred_ok.entry(m.entity.name()).or_default() += 1;
            }
        }
    }
    let _ = writeln!(
        md,
        "| entity | gold spans | recall | predictions | precision |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for (_, e) in map {
        let (tp, gold, pred) = pr.get(e.name()).copied().unwrap_or_default();
        let ok = pred_ok.get(e.name()).copied().unwrap_or(0);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            e.name(),
            gold,
            ratio(tp, gold),
            pred,
            ratio(ok, pred)
        );
    }
    let _ = writeln!(md, "\nPresidio's own pattern recognizers were not run (they need the presidio-analyzer package and a spaCy model, not available offline here). Precision counts a prediction as wrong when it overlaps no gold span of its type; the dataset leaves some numbers unlabelled, so precision is a lower bound.\n");

    // ---- secrets (gitleaks rule examples)
    let _ = writeln!(
        md,
        "### Secrets — gitleaks rule examples (in-scope rules)\n"
    );
    let rules_map: &[(&str, Entity)] = &[
        ("openai-api-key", Entity::OpenaiKey),
        ("anthropic-api-key", Entity::AnthropicKey),
        ("anthropic-admin-api-key", Entity::AnthropicKey),
        ("aws-access-token", Entity::AwsAccessKey),
        ("github-pat", Entity::GithubToken),
        ("github-fine-grained-pat", Entity::GithubToken),
        ("github-oauth", Entity::GithubToken),
        ("github-app-token", Entity::GithubToken),
        ("github-refresh-token", Entity::GithubToken),
        ("gitlab-pat", Entity::GitlabToken),
        ("gitlab-pat-routable", Entity::GitlabToken),
        ("slack-", Entity::SlackToken),
        ("stripe-access-token", Entity::StripeKey),
        ("gcp-api-key", Entity::GoogleApiKey),
        ("huggingface-", Entity::HuggingfaceToken),
        ("jwt", Entity::Jwt),
        ("private-key", Entity::PrivateKey),
    ];
    let mut sec: BTreeMap<&str, [u32; 4]> = BTreeMap::new(); // pos, pos_found, neg, neg_flagged
    let mut other_n = 0u32;
    let mut other_hit = 0u32;
    for r in read_jsonl(&corpus.join("secrets/gitleaks_rule_examples.jsonl"))? {
        let rule = r.get("rule_id").and_then(Value::as_str).unwrap_or("");
        let label = r.get("label").and_then(Value::as_str).unwrap_or("");
        let text = r.get("text").and_then(Value::as_str).unwrap_or("");
        let found = det.find(text);
        let ent = rules_map
            .iter()
            .find(|(k, _)| {
                if k.ends_with('-') {
                    rule.starts_with(k)
                } else {
                    rule == *k
                }
            })
            .map(|(_, e)| *e);
        match ent {
            Some(e) => {
                let c = sec.entry(e.name()).or_default();
                let hit = found.iter().any(|m| m.entity == e);
                if label == "secret" {
                    c[0] += 1;
                    c[1] += u32::from(hit);
                } else {
                    c[2] += 1;
                    c[3] += u32::from(hit);
                }
            }
            None => {
                other_n += 1;
                other_hit += u32::from(found.iter().any(|m| m.entity.is_secret()));
            }
        }
    }
    let _ = writeln!(
        md,
        "| type | secrets | recall | look-alike non-secrets | flagged | precision |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for (name, c) in &sec {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} |",
            c[0],
            ratio(c[1], c[0]),
            c[2],
            c[3],
            ratio(c[1], c[1] + c[3])
        );
    }
    let _ = writeln!(md, "\nExamples of the {other_n} out-of-scope gitleaks rules: {other_hit} contain something we report as a secret (mostly embedded JWTs). gitleaks' own negatives include its allow-listed public Google keys and syntactically valid keys of a sibling rule (e.g. an `sk-ant-api03-` key in the admin-key rule's negatives); llmgate redacts those on purpose.\n");

    // ---- synthetic values
    let _ = writeln!(
        md,
        "### Synthetic values (generated, 300 positives and 300 look-alike negatives per type)\n"
    );
    let _ = writeln!(md, "| type | recall | precision |");
    let _ = writeln!(md, "|---|---:|---:|");
    for (name, rec, prec) in synthetic(&det) {
        let _ = writeln!(md, "| {name} | {rec:.3} | {prec:.3} |");
    }

    // ---- latency
    let _ = writeln!(md, "\n### Cost\n");
    let (us_inj, us_all) = latency()?;
    let _ = writeln!(md, "Native release build, one 4 KB OpenAI request (user text with an email and a phone number): guard with PII redaction {us_all:.1} µs, injection only {us_inj:.1} µs per request (wasm is typically 2–3× slower; `make bench` measures it in Envoy).\n");

    std::fs::write(output, md).map_err(|e| format!("{output}: {e}"))?;
    eprintln!("wrote {output}");
    Ok(())
}

fn add(c: &mut Counts, g: bool, r: bool, b: bool, ho: bool) {
    c.n += 1;
    c.guard += u32::from(g);
    c.rules += u32::from(r);
    c.base += u32::from(b);
    if ho {
        c.ho_n += 1;
        c.ho_guard += u32::from(g);
        c.ho_rules += u32::from(r);
        c.ho_base += u32::from(b);
    }
}

fn ratio(a: u32, n: u32) -> String {
    if n == 0 {
        "–".into()
    } else {
        format!("{:.3}", f64::from(a) / f64::from(n))
    }
}

fn char_to_byte(s: &str, c: usize) -> usize {
    s.char_indices().nth(c).map_or(s.len(), |(b, _)| b)
}

fn compile(v: Value) -> Res<Guard> {
    let c: GuardConfig = serde_json::from_value(v).map_err(|e| e.to_string())?;
    c.compile().map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// synthetic values

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
    fn from(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n)
            .map(|_| {
                char::from(
                    alphabet
                        .get(self.below(alphabet.len() as u64) as usize)
                        .copied()
                        .unwrap_or(b'a'),
                )
            })
            .collect()
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const TOK: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn luhn_complete(prefix: &str, len: usize, rng: &mut Rng) -> String {
    let mut s = prefix.to_string();
    s.push_str(&rng.digits(len.saturating_sub(prefix.len() + 1)));
    for d in 0..10u8 {
        let cand = format!("{s}{d}");
        let sum: u32 = cand
            .bytes()
            .rev()
            .enumerate()
            .map(|(k, c)| {
                let v = u32::from(c - b'0');
                if k % 2 == 1 {
                    let x = v * 2;
                    if x > 9 {
                        x - 9
                    } else {
                        x
                    }
                } else {
                    v
                }
            })
            .sum();
        if sum.is_multiple_of(10) {
            return cand;
        }
    }
    s
}

fn group(s: &str, sizes: &[usize], sep: &str) -> String {
    let mut out = String::new();
    let mut i = 0;
    for (k, n) in sizes.iter().enumerate() {
        if k > 0 {
            out.push_str(sep);
        }
        out.push_str(s.get(i..(i + n).min(s.len())).unwrap_or(""));
        i += n;
    }
    out.push_str(s.get(i..).unwrap_or(""));
    out
}

fn iban(cc: &str, bban: &str) -> String {
    // check digits: mod 97 of bban + cc + "00"
    let rearr = format!("{bban}{cc}00");
    let mut rem: u32 = 0;
    for c in rearr.bytes() {
        if c.is_ascii_digit() {
            rem = (rem * 10 + u32::from(c - b'0')) % 97;
        } else {
            rem = (rem * 100 + u32::from(c.to_ascii_uppercase() - b'A') + 10) % 97;
        }
    }
    format!("{cc}{:02}{bban}", 98 - rem)
}

type Gen = fn(&mut Rng) -> String;

fn synthetic(det: &Detectors) -> Vec<(&'static str, f64, f64)> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let pos: Vec<(Entity, Gen)> = vec![
        (Entity::Email, |r| {
            format!(
                "{}.{}@{}.{}",
                r.from(LETTERS, 6).to_lowercase(),
                r.from(LETTERS, 5).to_lowercase(),
                r.from(LETTERS, 7).to_lowercase(),
                ["com", "de", "co.uk", "io", "fr"][r.below(5) as usize]
            )
        }),
        (Entity::Phone, |r| match r.below(6) {
            0 => format!("+1 {} {} {}", 200 + r.below(800), r.digits(3), r.digits(4)),
            1 => format!(
                "({}) {}-{}",
                200 + r.below(800),
                200 + r.below(800),
                r.digits(4)
            ),
            2 => format!("+44 7{} {}", r.digits(3), r.digits(6)),
            3 => format!("+49 30 {}", r.digits(8)),
            4 => {
                format!(
                    "0{} {} {} {}",
                    1 + r.below(9),
                    r.digits(2),
                    r.digits(2),
                    r.digits(2)
                ) + &format!(" {}", r.digits(2))
            }
            _ => format!(
                "{}-{}-{}",
                200 + r.below(800),
                200 + r.below(800),
                r.digits(4)
            ),
        }),
        (Entity::CreditCard, |r| {
            let (p, l) = [
                ("4", 16),
                ("51", 16),
                ("55", 16),
                ("2221", 16),
                ("2720", 16),
                ("34", 15),
                ("37", 15),
                ("6011", 16),
                ("65", 16),
                ("3530", 16),
                ("36", 14),
            ][r.below(11) as usize];
            let n = luhn_complete(p, l, r);
            match r.below(3) {
                0 => n,
                1 if l == 16 => group(&n, &[4, 4, 4], " "),
                _ if l == 16 => group(&n, &[4, 4, 4], "-"),
                _ => n,
            }
        }),
        (Entity::Iban, |r| {
            let v = match r.below(4) {
                0 => iban("DE", &r.digits(18)),
                1 => iban(
                    "GB",
                    &format!(
                        "{}{}",
                        r.from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4),
                        r.digits(14)
                    ),
                ),
                2 => iban("FR", &r.digits(23)),
                _ => iban(
                    "NL",
                    &format!(
                        "{}{}",
                        r.from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4),
                        r.digits(10)
                    ),
                ),
            };
            if r.below(2) == 0 {
                group(&v, &[4, 4, 4, 4, 4, 4], " ").trim_end().to_string()
            } else {
                v
            }
        }),
        (Entity::UsSsn, |r| {
            format!(
                "{:03}-{:02}-{:04}",
                1 + r.below(665),
                1 + r.below(99),
                1 + r.below(9999)
            )
        }),
        (Entity::IpAddress, |r| {
            format!(
                "{}.{}.{}.{}",
                1 + r.below(223),
                r.below(256),
                r.below(256),
                1 + r.below(254)
            )
        }),
        (Entity::OpenaiKey, |r| match r.below(3) {
            0 => format!("sk-proj-{}T3BlbkFJ{}", r.from(TOK, 74), r.from(TOK, 74)),
            1 => format!("sk-{}T3BlbkFJ{}", r.from(ALNUM, 20), r.from(ALNUM, 20)),
            _ => format!("sk-svcacct-{}", r.from(TOK, 120)),
        }),
        (Entity::AnthropicKey, |r| {
            format!("sk-ant-api03-{}AA", r.from(TOK, 93))
        }),
        (Entity::AwsAccessKey, |r| {
            format!(
                "{}{}",
                ["AKIA", "ASIA"][r.below(2) as usize],
                r.from(B32, 16)
            )
        }),
        (Entity::GithubToken, |r| match r.below(2) {
            0 => format!(
                "{}_{}",
                ["ghp", "gho", "ghu", "ghs", "ghr"][r.below(5) as usize],
                r.from(ALNUM, 36)
            ),
            _ => format!("github_pat_{}_{}", r.from(ALNUM, 22), r.from(ALNUM, 59)),
        }),
        (Entity::GitlabToken, |r| {
            format!("glpat-{}", r.from(ALNUM, 20))
        }),
        (Entity::SlackToken, |r| match r.below(3) {
            0 => format!(
                "xoxb-{}-{}-{}",
                r.digits(12),
                r.digits(13),
                r.from(ALNUM, 24)
            ),
            1 => format!(
                "xoxp-{}-{}-{}-{}",
                r.digits(11),
                r.digits(12),
                r.digits(12),
                r.from(b"0123456789abcdef", 32)
            ),
            _ => format!(
                "https://hooks.slack.com/services/T{}/B{}/{}",
                r.from(B32, 8),
                r.from(B32, 8),
                r.from(ALNUM, 24)
            ),
        }),
        (Entity::StripeKey, |r| {
            let n = 24 + r.below(75) as usize;
            format!(
                "{}_{}_{}",
                ["sk", "rk"][r.below(2) as usize],
                ["live", "test"][r.below(2) as usize],
                r.from(ALNUM, n)
            )
        }),
        (Entity::GoogleApiKey, |r| format!("AIza{}", r.from(TOK, 35))),
        (Entity::HuggingfaceToken, |r| {
            format!("hf_{}", r.from(LETTERS, 34))
        }),
        (Entity::Jwt, |r| {
            format!(
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{}.{}",
                r.from(ALNUM, 40),
                r.from(TOK, 43)
            )
        }),
        (Entity::PrivateKey, |r| {
            format!(
                "-----BEGIN {}PRIVATE KEY-----\n{}\n{}\n-----END {}PRIVATE KEY-----",
                "RSA ",
                r.from(ALNUM, 64),
                r.from(ALNUM, 40),
                "RSA "
            )
        }),
    ];
    let neg: Vec<(Entity, Gen)> = vec![
        (Entity::Email, |r| {
            format!(
                "@{} or {}@localhost or user at {} dot com",
                r.from(LETTERS, 6),
                r.from(LETTERS, 4),
                r.from(LETTERS, 5)
            )
        }),
        (Entity::Phone, |r| match r.below(5) {
            0 => format!("order {}", r.digits(7)),
            1 => format!("on 20{}-0{}-1{}", r.digits(2), 1 + r.below(9), r.below(10)),
            2 => format!("version {}.{}.{}", r.below(20), r.below(20), r.below(99)),
            3 => format!("total {} {}", 1 + r.below(999), r.digits(3)),
            _ => format!("at 1{}:{}{}", r.below(10), r.below(6), r.below(10)),
        }),
        (Entity::CreditCard, |r| {
            let mut n = luhn_complete("4", 16, r);
            // break the check digit
            let last = n.pop().map_or(0, |c| c as u8 - b'0');
            n.push(char::from(b'0' + (last + 1) % 10));
            n
        }),
        (Entity::Iban, |r| {
            let v = iban("DE", &r.digits(18));
            // corrupt one digit
            let mut b = v.into_bytes();
            if let Some(c) = b.get_mut(10) {
                *c = if *c == b'9' { b'0' } else { *c + 1 };
            }
            String::from_utf8(b).unwrap_or_default()
        }),
        (Entity::UsSsn, |r| match r.below(3) {
            0 => format!("000-{:02}-{:04}", 1 + r.below(99), 1 + r.below(9999)),
            1 => format!(
                "9{:02}-{:02}-{:04}",
                r.below(100),
                1 + r.below(99),
                1 + r.below(9999)
            ),
            _ => format!("id {}", r.digits(9)),
        }),
        (Entity::IpAddress, |r| {
            format!("{}.{}.{}", r.below(256), r.below(256), r.below(256))
        }),
        (Entity::OpenaiKey, |r| {
            format!("sk-{} and ask-{}", r.from(LETTERS, 10), r.from(ALNUM, 40))
        }),
        (Entity::AnthropicKey, |r| {
            format!("sk-ant-api03-{}", "x".repeat(20 + r.below(10) as usize))
        }),
        (Entity::AwsAccessKey, |r| {
            format!("AKIA{}EXAMPLE or AKIA{}", r.from(B32, 9), "X".repeat(16))
        }),
        (Entity::GithubToken, |r| {
            format!("ghp_{} and ghp_{}", "x".repeat(36), r.from(ALNUM, 12))
        }),
        (Entity::GitlabToken, |r| {
            format!("glpat-{}", r.from(ALNUM, 8))
        }),
        (Entity::SlackToken, |r| {
            format!("xoxb-{} and xoxb-xxxxxxxxx-xxxxxxxxxx-xxxx", r.digits(5))
        }),
        (Entity::StripeKey, |r| {
            format!(
                "sk_live_{} task_live_{}",
                r.from(ALNUM, 5),
                r.from(ALNUM, 20)
            )
        }),
        (Entity::GoogleApiKey, |r| format!("AIza{}", r.from(TOK, 20))),
        (Entity::HuggingfaceToken, |r| {
            format!(
                "hf_{} hf_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                r.from(LETTERS, 10)
            )
        }),
        (Entity::Jwt, |r| format!("eyJ{}.notjwt", r.from(ALNUM, 10))),
        (Entity::PrivateKey, |r| {
            format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----",
                r.from(ALNUM, 64)
            )
        }),
    ];
    let templates = [
        "{}",
        "my value is {} thanks",
        "see: {}.",
        "\"{}\"",
        "(x) {}\nnext line",
    ];
    let mut out = Vec::new();
    for (e, g) in &pos {
        let negf = neg.iter().find(|(n, _)| n == e).map(|(_, f)| *f);
        let (mut tp, mut fp, mut n) = (0u32, 0u32, 0u32);
        for k in 0..300 {
            let v = g(&mut rng);
            let t = templates
                .get(k % templates.len())
                .copied()
                .unwrap_or("{}")
                .replace("{}", &v);
            n += 1;
            if det.find(&t).iter().any(|m| m.entity == *e) {
                tp += 1;
            }
            if let Some(f) = negf {
                let v = f(&mut rng);
                let t = templates
                    .get(k % templates.len())
                    .copied()
                    .unwrap_or("{}")
                    .replace("{}", &v);
                if det.find(&t).iter().any(|m| m.entity == *e) {
                    fp += 1;
                }
            }
        }
        let rec = f64::from(tp) / f64::from(n);
        let prec = if tp + fp == 0 {
            0.0
        } else {
            f64::from(tp) / f64::from(tp + fp)
        };
        out.push((e.name(), rec, prec));
    }
    out
}

fn latency() -> Res<(f64, f64)> {
    let para = "Hello team, following up on the quarterly planning meeting. We agreed to move the launch to the second week of March, pending the security review. Please send comments to maria.keller@example.com or call me on +49 30 12345678 before Friday. The draft covers the onboarding flow, the billing changes and the new reporting dashboard. ";
    let mut text = String::new();
    while text.len() < 4096 {
        text.push_str(para);
    }
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": text}
    ]});
    let g_all = compile(json!({}))?;
    let g_inj = compile(
        json!({"pii": {"email": "allow", "phone": "allow", "credit_card": "allow", "iban": "allow", "us_ssn": "allow"}, "secrets": {"default": "allow"}}),
    )?;
    let iters = 2000;
    let time = |g: Option<&Guard>| {
        let t = Instant::now();
        for _ in 0..iters {
            let mut b = body.clone();
            if let Some(g) = g {
                let o = g.inspect_request(Api::OpenAi, &mut b);
                std::hint::black_box(o);
            }
            std::hint::black_box(b);
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(iters)
    };
    let _ = time(Some(&g_all));
    let clone = time(None);
    let all = time(Some(&g_all)) - clone;
    let inj = time(Some(&g_inj)) - clone;
    Ok((inj, all))
}

//! Guard report: runs the request guard (the same Rust code the filter runs)
//! over the public corpus and writes a markdown table.
//!
//! ```text
//! cargo run --release --example guard_report -- <corpus dir> <output.md> [benign_extra.jsonl]
//! cargo run --release --example guard_report -- --features <in.jsonl> <out prefix>
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
    pub use llmgate::core::error;
    pub mod guard;
}
#[path = "../src/core/guard/evasion.rs"]
mod evasion;

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
        [flag, input, output] if flag == "--keys" => dump_keys(input, output),
        [flag, input] if flag == "--rule-hits" => {
            // development aid: which built-in rules fire on each text (names
            // only; the text itself is not printed)
            let g = compile(json!({}))?;
            for (k, r) in read_jsonl(Path::new(input))?.iter().enumerate() {
                let text = r.get("text").and_then(Value::as_str).unwrap_or("");
                let hits = g.matching_rules(text);
                if !hits.is_empty() {
                    println!("{k}\t{}", hits.join(","));
                }
            }
            Ok(())
        }
        [flag, input] if flag == "--score" => score_file(input),
        [flag] if flag == "--latency" => {
            if std::env::var_os("GUARD_LATENCY_PARTS").is_some() {
                latency_parts()?;
            }
            for kb in [1usize, 4, 16] {
                let (inj, all) = latency(kb)?;
                println!(
                    "{kb:>2} KB: injection only {inj:.1} µs ({:.1} µs/KB), with PII redaction {all:.1} µs ({:.1} µs/KB)",
                    inj / kb as f64,
                    all / kb as f64
                );
            }
            Ok(())
        }
        [corpus, output] => report(corpus, output, None),
        [corpus, output, extra] => report(corpus, output, Some(extra.as_str())),
        _ => Err("usage: guard_report <corpus dir> <output.md> [benign_extra.jsonl] | --features <in.jsonl> <out prefix> | --keys <in.jsonl> <out.txt> | --latency".into()),
    }
}

/// Development aid: for every record, the verdict of the default guard (as
/// a user message, with the record's `system_prompt` if any) and the
/// per-category scores: `<n>\t<verdict>\t<category=score,...>`.
fn score_file(input: &str) -> Res<()> {
    let g = compile(json!({}))?;
    for (k, r) in read_jsonl(Path::new(input))?.iter().enumerate() {
        let text = r.get("text").and_then(Value::as_str).unwrap_or("");
        let verdict = if detected(&g, r) { "INJECTION" } else { "ok" };
        let ts = g.score_text(text, self::core::guard::Origin::User);
        let mut cats = String::new();
        for c in self::core::guard::Category::ALL {
            let v = ts.get(c);
            if v > 0.0 {
                let _ = write!(cats, "{}={v:.3},", c.name());
            }
        }
        println!("{k}\t{verdict}\t{cats}");
    }
    Ok(())
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

/// Writes, for every record's `text` (normalised as the filter does), the
/// distinct feature indices of each scored span (the whole text, then its
/// windows): `<out>.idx` holds little-endian u32 pairs (record number,
/// feature count) per span, `<out>.feat` the feature indices (u32 LE),
/// `<out>.len` u32 pairs (normalised length in bytes, word count) per record:
/// what the filter uses to pick the length class's bias and to skip texts
/// of fewer than three words.
fn dump_features(input: &str, output: &str) -> Res<()> {
    let recs = read_jsonl(Path::new(input))?;
    let open = |ext: &str| -> Res<std::io::BufWriter<std::fs::File>> {
        Ok(std::io::BufWriter::new(
            std::fs::File::create(format!("{output}.{ext}")).map_err(|e| e.to_string())?,
        ))
    };
    let mut idx = open("idx")?;
    let mut feat = open("feat")?;
    let mut lens = open("len")?;
    let mut words = Vec::new();
    let mut spans = Vec::new();
    let mut f: Vec<u32> = Vec::new();
    for (k, r) in recs.iter().enumerate() {
        let text = r.get("text").and_then(Value::as_str).unwrap_or("");
        let norm = normalise::normalise(text);
        classifier::words(&norm, &mut words);
        classifier::spans(&norm, &mut spans);
        for v in [norm.len(), words.len()] {
            let v = u32::try_from(v).unwrap_or(u32::MAX);
            lens.write_all(&v.to_le_bytes())
                .map_err(|e| e.to_string())?;
        }
        for &(s, e) in &spans {
            f.clear();
            let ws = classifier::words_in(&words, s, e);
            classifier::for_each_distinct(norm.as_bytes().get(s..e).unwrap_or(&[]), ws, |i| {
                f.push(i)
            });
            f.sort_unstable();
            let w = |out: &mut std::io::BufWriter<std::fs::File>, v: u32| {
                out.write_all(&v.to_le_bytes()).map_err(|e| e.to_string())
            };
            w(&mut idx, k as u32)?;
            w(&mut idx, f.len() as u32)?;
            for &i in &f {
                w(&mut feat, i)?;
            }
        }
    }
    idx.flush().map_err(|e| e.to_string())?;
    feat.flush().map_err(|e| e.to_string())?;
    lens.flush().map_err(|e| e.to_string())?;
    Ok(())
}

/// The de-duplication key of a text: the guard's normalisation (compatibility
/// folding, invisible characters removed, look-alikes folded, lowercase), then
/// every run of non-alphanumerics as one space. Texts with equal keys are one
/// text for training and evaluation.
fn dedup_key(text: &str) -> String {
    let n = normalise::normalise(text);
    let mut out = String::with_capacity(n.len());
    let mut gap = false;
    for c in n.chars() {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.push(c);
        } else {
            gap = true;
        }
    }
    out
}

/// Writes the [`dedup_key`] of every record's `text`, one per line.
fn dump_keys(input: &str, output: &str) -> Res<()> {
    let recs = read_jsonl(Path::new(input))?;
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(output).map_err(|e| e.to_string())?);
    for r in recs {
        let text = r.get("text").and_then(Value::as_str).unwrap_or("");
        writeln!(out, "{}", dedup_key(text)).map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

/// FNV-1a 32 of the text's [`dedup_key`]; `% 5 == 0` is the held-out split
/// (the training script uses the same function on the same keys).
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
    cls: u32,
    base: u32,
    ho_n: u32,
    ho_guard: u32,
    ho_rules: u32,
    ho_cls: u32,
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
    // an `obfuscation` flag alone is a hint, not a detection
    o.block
        .as_ref()
        .is_some_and(|b| b.code == "prompt_injection_detected")
        || o.flagged.iter().any(|c| *c != "obfuscation")
}

/// Benign directive messages through the default guard (PII redaction on):
/// how many are blocked or flagged as an injection, per category.
fn directives_section(md: &mut String, path: &Path) -> Res<()> {
    if !path.exists() {
        return Ok(());
    }
    let g = compile(json!({}))?;
    let mut by: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut total = (0u32, 0u32);
    for r in read_jsonl(path)? {
        let text = r.get("text").and_then(Value::as_str).unwrap_or("");
        let cat = r.get("category").and_then(Value::as_str).unwrap_or("?");
        let trained = !(cat == "literal" || cat == "handwritten");
        let key = if trained && heldout(&dedup_key(text)) {
            format!("{cat} (held-out fifth)")
        } else if trained {
            format!("{cat} (trained on)")
        } else {
            format!("{cat} (never trained on)")
        };
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": text}]});
        let o = g.inspect_request(Api::OpenAi, &mut body);
        let bad = o.block.is_some() || o.flagged.iter().any(|c| *c != "obfuscation");
        let e = by.entry(key).or_default();
        e.0 += 1;
        total.0 += 1;
        if bad {
            e.1 += 1;
            total.1 += 1;
        }
    }
    let _ = writeln!(
        md,
        "### Benign directives
"
    );
    let _ = writeln!(md, "`tests/data/guard/benign_directives.jsonl` (`gen_benign_directives.py`): the mock's `REPLY:`/`SYSTEM?`/`TOOL:` messages with every kind of payload, judge and grader prompts, system prompts, task instructions, plain questions; `literal` = texts used by llmgate's own tests and examples, `handwritten` = written apart from the templates (neither is trained on). Default guard (PII redaction on); a row fails when it is blocked or flagged as an injection. A unit test (`benign_directives_pass`) requires 0 failures.\n");
    let _ = writeln!(md, "| category | n | blocked or flagged |");
    let _ = writeln!(md, "|---|---:|---:|");
    for (k, (n, bad)) in &by {
        let _ = writeln!(md, "| {k} | {n} | {bad} |");
    }
    let _ = writeln!(md, "| **all** | {} | **{}** |\n", total.0, total.1);
    Ok(())
}

/// Sources whose licence allows training (mirrors scripts/train_guard.py).
fn trainable(file: &str) -> bool {
    !(file.starts_with("protectai")
        || file.starts_with("alpaca")
        || file.starts_with("benign_directives_eval"))
}

fn report(corpus: &str, output: &str, extra: Option<&str>) -> Res<()> {
    let corpus = Path::new(corpus);
    let no_pii = json!({"pii": {"email": "allow", "phone": "allow", "credit_card": "allow", "iban": "allow", "us_ssn": "allow", "ip_address": "allow"}, "secrets": {"default": "allow"}});
    let full: Guard = compile(no_pii.clone())?;
    let mut rules_cfg = no_pii.clone();
    rules_cfg["injection"] = json!({"actions": {"classifier": "off"}});
    let rules_only: Guard = compile(rules_cfg)?;
    let mut cls_cfg = no_pii.clone();
    cls_cfg["injection"] = json!({"actions": {"instruction_override": "off", "role_injection": "off", "system_prompt_extraction": "off", "jailbreak_persona": "off", "tool_output_injection": "off", "obfuscation": "off"}});
    let cls_only: Guard = compile(cls_cfg)?;
    let base = baseline();
    let base_hit = |t: &str| base.iter().any(|r| r.is_match(t));

    let mut md = String::new();
    let _ = writeln!(md, "## Guard report\n");
    let _ = writeln!(
        md,
        "Generated by `make guard-report` (`examples/guard_report.rs`) with the default guard configuration (threshold 0.5; a row counts as detected when an injection category reaches the threshold, blocked or flagged; an `obfuscation` flag alone is a hint, not a detection). Classifier loaded: {}. Texts are de-duplicated by normalised text (the guard's normalisation, every run of non-alphanumerics as one space): *held-out* = the texts whose normalised form hashes to the held-out fifth (FNV-1a mod 5 = 0), never trained on, whatever source they come from; sources marked *eval only* (ProtectAI: licence not stated; Alpaca: non-commercial) were never trained on, and neither was any text of another source that equals one of theirs. Columns: the full guard; on the held-out texts the full guard, the rules alone and the classifier alone (its contribution).\n",
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
        let generated = Path::new(x).with_file_name("benign_generated.jsonl");
        if generated.exists() {
            files.push(("benign_generated (ours)".into(), generated));
        }
        let directives = Path::new(x).with_file_name("benign_directives.jsonl");
        if directives.exists() {
            files.push(("benign_directives (ours)".into(), directives));
        }
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
            // our directive rows written apart from the templates (or taken
            // from llmgate's own tests) are never trained on
            let cat = r.get("category").and_then(Value::as_str).unwrap_or("");
            let name = &if name.starts_with("benign_directives")
                && (cat == "literal" || cat == "handwritten")
            {
                "benign_directives_eval (ours)".to_string()
            } else {
                name.clone()
            };
            let d = Det {
                guard: detected(&full, &r),
                rules: detected(&rules_only, &r),
                cls: detected(&cls_only, &r),
                base: base_hit(text),
            };
            n_texts += 1;
            let _ = id;
            let ho = heldout(&dedup_key(text));
            add(
                rows.entry((name.clone(), label.clone())).or_default(),
                d,
                ho,
            );
            let tkey = match label.as_str() {
                "attack" => "attacks (all sources)",
                "benign" => "benign (all sources)",
                _ => "harmful_plain (all sources)",
            };
            add(totals.entry(tkey.to_string()).or_default(), d, ho);
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
                    d,
                    ho,
                );
            }
            if label == "benign" && (name.starts_with("notinject") || name.starts_with("xstest")) {
                add(
                    totals
                        .entry("benign hard negatives (NotInject + XSTest safe)".into())
                        .or_default(),
                    d,
                    ho,
                );
            }
        }
    }
    let elapsed = t0.elapsed();

    let _ = writeln!(md, "### Prompt injection\n");
    let _ = writeln!(md, "Attack rows: detection rate (higher is better). Benign rows: false-positive rate (lower is better). harmful_plain rows are plain harmful requests with no manipulation — out of scope for an injection detector, shown apart and counted neither as misses nor as false positives.\n");
    let _ = writeln!(md, "| source | label | n | llmgate (rules + classifier) | held-out n | llmgate held-out | held-out: rules only | held-out: classifier only | seed's five patterns |");
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
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
                "| {src} | {l} | {} | {} | {} | {} | {} | {} | {} |",
                c.n,
                pct(c.guard, c.n),
                c.ho_n,
                pct(c.ho_guard, c.ho_n),
                pct(c.ho_rules, c.ho_n),
                pct(c.ho_cls, c.ho_n),
                pct(c.base, c.n)
            );
        }
    }
    for (name, c) in &totals {
        let _ = writeln!(
            md,
            "| **{name}** | | {} | **{}** | {} | **{}** | {} | {} | {} |",
            c.n,
            pct(c.guard, c.n),
            c.ho_n,
            pct(c.ho_guard, c.ho_n),
            pct(c.ho_rules, c.ho_n),
            pct(c.ho_cls, c.ho_n),
            pct(c.base, c.n)
        );
    }
    let _ = writeln!(
        md,
        "\nHow to read it: the *held-out* columns are the honest classifier numbers (those texts were never trained on, and no training text equals them after normalisation). The rules, however, were written while looking at misses and false positives across the older corpus, the eval-only ProtectAI set included, so rule-driven numbers are optimistic. Many CyberSecEval rows are attacks only relative to their system prompt (e.g. an off-topic question), which no input-only detector can see; Mosscap and Gandalf rows are password-game attempts; WildGuardMix `attack` rows are long harmful role-play prompts (labelled by length, see the corpus README) and its benign rows adversarial look-alikes; composed_indirect payloads are often plain out-of-place instructions (\"Use emojis to represent your answer.\").\n"
    );
    let _ = writeln!(
        md,
        "\n{} texts scored twice in {:.2} s natively (release build).\n",
        n_texts,
        elapsed.as_secs_f64()
    );

    // ---- benign directives with the default guard (PII on)
    if let Some(x) = extra {
        directives_section(
            &mut md,
            &Path::new(x).with_file_name("benign_directives.jsonl"),
        )?;
    }

    // ---- leave one source out (scripts/train_guard.py --loso)
    loso_section(&mut md, &rules_only)?;

    // ---- evasion
    evasion_section(&mut md, &files, &full)?;

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

    // ---- PII look-alikes (tests/data/guard/pii_cases.jsonl)
    let cases = Path::new("tests/data/guard/pii_cases.jsonl");
    if cases.exists() {
        let _ = writeln!(
            md,
            "### PII look-alikes (`tests/data/guard/pii_cases.jsonl`)\n"
        );
        let _ = writeln!(md, "Generated by `tests/data/guard/gen_pii_cases.py`: per type 100 hard negatives (numbers shaped like the type that are not valid ones: NANP area codes 0xx/1xx/N11, wrong lengths for the country calling code, unassigned codes; cards failing Luhn, outside the issuer ranges or of the wrong length for the brand; SSNs with area 000/666/9xx, group 00, serial 0000; IBANs with a wrong checksum, a wrong length for the country or no such country) and 100 valid values, half of each next to a context word. *Altered* = the default guard redacts anything in the text.\n");
        let _ = writeln!(
            md,
            "| type | hard negatives | altered | valid values | found (recall) |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|");
        let verbose = std::env::var_os("GUARD_REPORT_VERBOSE").is_some();
        let mut per: BTreeMap<String, [u32; 4]> = BTreeMap::new();
        for r in read_jsonl(cases)? {
            let text = r.get("text").and_then(Value::as_str).unwrap_or("");
            let ent = r
                .get("entity")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            let valid = r.get("label").and_then(Value::as_str) == Some("valid");
            let found = det.find(text);
            let c = per.entry(ent.clone()).or_default();
            if valid {
                c[2] += 1;
                let hit = found.iter().any(|m| m.entity.name() == ent);
                c[3] += u32::from(hit);
                if verbose && !hit {
                    let names: Vec<&str> = found.iter().map(|m| m.entity.name()).collect();
                    eprintln!("missed {ent}: {text} {names:?}");
                }
            } else {
                c[0] += 1;
                let hit = found.iter().any(|m| !m.entity.is_secret());
                c[1] += u32::from(hit);
                if verbose && hit {
                    let names: Vec<&str> = found.iter().map(|m| m.entity.name()).collect();
                    eprintln!("altered {ent}: {text} {names:?}");
                }
            }
        }
        let mut tot = [0u32; 4];
        for (ent, c) in &per {
            for (t, v) in tot.iter_mut().zip(c.iter()) {
                *t += v;
            }
            let _ = writeln!(
                md,
                "| {ent} | {} | {} | {} | {} |",
                c[0],
                c[1],
                c[2],
                ratio(c[3], c[2])
            );
        }
        let _ = writeln!(
            md,
            "| **all** | {} | **{}** | {} | **{}** |\n",
            tot[0],
            tot[1],
            tot[2],
            ratio(tot[3], tot[2])
        );
    }

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
    let _ = writeln!(md, "Native release build (this machine), one OpenAI request whose user text is an e-mail-like document of the given size (with an e-mail address and a phone number), CPU time of the measuring thread (the machine is shared), median of five runs:\n");
    let _ = writeln!(md, "| user text | injection only (µs) | µs per KB | guard with PII redaction (µs) | µs per KB |");
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|");
    for kb in [1usize, 4, 16] {
        let (us_inj, us_all) = latency(kb)?;
        let _ = writeln!(
            md,
            "| {kb} KB | {us_inj:.1} | {:.1} | {us_all:.1} | {:.1} |",
            us_inj / kb as f64,
            us_all / kb as f64
        );
    }
    let _ = writeln!(
        md,
        "\nwasm in V8 is typically 2–3× slower; `make bench` measures it in Envoy.\n"
    );

    std::fs::write(output, md).map_err(|e| format!("{output}: {e}"))?;
    eprintln!("wrote {output}");
    Ok(())
}

fn add(c: &mut Counts, d: Det, ho: bool) {
    c.n += 1;
    c.guard += u32::from(d.guard);
    c.rules += u32::from(d.rules);
    c.cls += u32::from(d.cls);
    c.base += u32::from(d.base);
    if ho {
        c.ho_n += 1;
        c.ho_guard += u32::from(d.guard);
        c.ho_rules += u32::from(d.rules);
        c.ho_cls += u32::from(d.cls);
        c.ho_base += u32::from(d.base);
    }
}

/// Detections of one record: full guard, rules only, classifier only, the
/// seed's five patterns.
#[derive(Clone, Copy)]
struct Det {
    guard: bool,
    rules: bool,
    cls: bool,
    base: bool,
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

fn latency(kb: usize) -> Res<(f64, f64)> {
    let para = "Hello team, following up on the quarterly planning meeting. We agreed to move the launch to the second week of March, pending the security review. Please send comments to maria.keller@example.com or call me on +49 30 12345678 before Friday. The draft covers the onboarding flow, the billing changes and the new reporting dashboard. ";
    let mut text = String::new();
    while text.len() < kb * 1024 {
        text.push_str(para);
    }
    let cut = (kb * 1024).min(text.len());
    let mut cut = cut;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": text}
    ]});
    let g_all = compile(json!({}))?;
    let g_inj = compile(
        json!({"pii": {"email": "allow", "phone": "allow", "credit_card": "allow", "iban": "allow", "us_ssn": "allow"}, "secrets": {"default": "allow"}}),
    )?;
    let iters = (4000 / kb).max(50);
    let time = |g: Option<&Guard>| {
        let mut runs = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let c = cpu_ns();
            for _ in 0..iters {
                let mut b = body.clone();
                if let Some(g) = g {
                    let o = g.inspect_request(Api::OpenAi, &mut b);
                    std::hint::black_box(o);
                }
                std::hint::black_box(b);
            }
            // CPU time of this thread when the OS tells it (a shared machine
            // inflates wall time), else wall time
            let us = match (c, cpu_ns()) {
                (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e3,
                _ => t.elapsed().as_secs_f64() * 1e6,
            };
            runs.push(us / iters as f64);
        }
        runs.sort_by(|a, b| a.total_cmp(b));
        runs[2]
    };
    let _ = time(Some(&g_all));
    let clone = time(None);
    let all = time(Some(&g_all)) - clone;
    let inj = time(Some(&g_inj)) - clone;
    Ok((inj, all))
}

/// CPU time of the current thread in ns (Linux `/proc/thread-self/schedstat`).
fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn fnv(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in s.as_bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// 40 held-out attacks and 40 held-out benign texts (40–300 characters, at
/// most 4 per source, chosen by a hash of the text) under each evasion.
fn evasion_section(md: &mut String, files: &[(String, std::path::PathBuf)], g: &Guard) -> Res<()> {
    let mut pool: Vec<(u32, String, String, bool)> = Vec::new(); // hash, source, text, attack
    for (name, path) in files {
        for r in read_jsonl(path)? {
            let label = r.get("label").and_then(Value::as_str).unwrap_or("");
            let text = r.get("text").and_then(Value::as_str).unwrap_or("");
            let n = text.chars().count();
            if !(40..=300).contains(&n) || !(label == "attack" || label == "benign") {
                continue;
            }
            let key = dedup_key(text);
            if !heldout(&key) || r.get("system_prompt").is_some() {
                continue;
            }
            pool.push((
                fnv(&format!("evasion{key}")),
                name.clone(),
                text.to_string(),
                label == "attack",
            ));
        }
    }
    pool.sort();
    let pick = |attack: bool| -> Vec<String> {
        let mut per: BTreeMap<&str, u32> = BTreeMap::new();
        let mut out = Vec::new();
        for (_, src, t, a) in &pool {
            if *a != attack || out.len() >= 40 {
                continue;
            }
            let c = per.entry(src.as_str()).or_default();
            if *c >= 4 {
                continue;
            }
            *c += 1;
            out.push(t.clone());
        }
        out
    };
    let attacks = pick(true);
    let benign = pick(false);
    let flags = |t: &str| -> (bool, bool) {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": t}]});
        let o = g.inspect_request(Api::OpenAi, &mut body);
        let inj = o
            .block
            .as_ref()
            .is_some_and(|b| b.code == "prompt_injection_detected")
            || o.flagged.iter().any(|c| *c != "obfuscation");
        (inj, o.flagged.contains(&"obfuscation"))
    };
    let _ = writeln!(md, "### Evasion\n");
    let _ = writeln!(md, "{} held-out attacks and {} held-out benign texts (40–300 characters, at most 4 per source, chosen by a hash of the text), each under every transformation, through the default guard. *Detected* = blocked or flagged in an injection category; an `obfuscation` flag alone is a hint and is counted apart.\n", attacks.len(), benign.len());
    let _ = writeln!(md, "| transformation | attacks detected | relative to plain | benign detected as injection | benign with an `obfuscation` hint |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    let mut plain = 0u32;
    for kind in evasion::KINDS {
        let det = attacks
            .iter()
            .filter(|t| flags(&evasion::apply(kind, t)).0)
            .count() as u32;
        if *kind == "plain" {
            plain = det;
        }
        let bf: Vec<(bool, bool)> = benign
            .iter()
            .map(|t| flags(&evasion::apply(kind, t)))
            .collect();
        let b_inj = bf.iter().filter(|x| x.0).count();
        let b_obf = bf.iter().filter(|x| x.1).count();
        let rel = if plain == 0 {
            0.0
        } else {
            f64::from(det) / f64::from(plain)
        };
        let _ = writeln!(
            md,
            "| {kind} | {det}/{} | {:.0}% | {b_inj}/{} | {b_obf}/{} |",
            attacks.len(),
            rel * 100.0,
            benign.len(),
            benign.len()
        );
    }
    let _ = writeln!(md);
    Ok(())
}

/// Leave-one-source-out numbers from `scripts/train_guard.py --loso`
/// (target/guard-loso.json): the classifier trained without the source,
/// calibrated on the other sources' held-out benign texts, evaluated on the
/// source's texts that no training text equals; the rules (fixed) are run
/// here on the same texts.
fn loso_section(md: &mut String, rules: &Guard) -> Res<()> {
    let path = Path::new("target/guard-loso.json");
    let _ = writeln!(md, "### Leave one source out\n");
    let Ok(raw) = std::fs::read_to_string(path) else {
        let _ = writeln!(md, "Not run (`.venv/bin/python scripts/train_guard.py --loso` writes target/guard-loso.json; about half an hour).\n");
        return Ok(());
    };
    let v: Value = serde_json::from_str(&raw).map_err(|e| e.to_string())?;
    let mut texts: BTreeMap<u64, String> = BTreeMap::new();
    for r in read_jsonl(Path::new("target/guard-loso-texts.jsonl"))? {
        if let (Some(t), Some(x)) = (
            r.get("t").and_then(Value::as_u64),
            r.get("text").and_then(Value::as_str),
        ) {
            texts.insert(t, x.to_string());
        }
    }
    let rule_hit = |t: u64| -> bool {
        texts.get(&t).is_some_and(|x| {
            let r = json!({"text": x});
            detected(rules, &r)
        })
    };
    let _ = writeln!(md, "Per source: the classifier trained without that source (on the training split of all others), its operating point set on the other sources' held-out benign texts (same target FPR as the shipped model), evaluated on every text of the source that no training text equals after normalisation. The rules are fixed (they were written looking at the whole corpus), so *classifier or rules* is optimistic; *classifier* is the honest leave-one-source-out number.\n");
    let _ = writeln!(md, "| left-out source | attacks | classifier | rules | classifier or rules | benign | FPR classifier | FPR classifier or rules |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut avg = (0.0f64, 0.0f64, 0u32);
    for r in v
        .get("results")
        .and_then(Value::as_array)
        .map(|a| a.as_slice())
        .unwrap_or(&[])
    {
        let src = r.get("source").and_then(Value::as_str).unwrap_or("?");
        let scores = r.get("scores").and_then(Value::as_object);
        let ids = |k: &str| -> Vec<u64> {
            r.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default()
        };
        let cls = |t: u64| {
            scores
                .and_then(|s| s.get(&t.to_string()))
                .and_then(Value::as_f64)
                .is_some_and(|x| x > 0.0)
        };
        let att = ids("attack_texts");
        let ben = ids("benign_texts");
        let count = |v: &[u64], f: &dyn Fn(u64) -> bool| v.iter().filter(|&&t| f(t)).count() as u32;
        let a_c = count(&att, &cls);
        let a_r = count(&att, &rule_hit);
        let a_cr = count(&att, &|t| cls(t) || rule_hit(t));
        let b_c = count(&ben, &cls);
        let b_cr = count(&ben, &|t| cls(t) || rule_hit(t));
        let n = att.len() as u32;
        if n >= 20 {
            avg.0 += f64::from(a_c) / f64::from(n);
            avg.1 += f64::from(a_cr) / f64::from(n);
            avg.2 += 1;
        }
        let _ = writeln!(
            md,
            "| {src} | {n} | {} | {} | {} | {} | {} | {} |",
            pct(a_c, n),
            pct(a_r, n),
            pct(a_cr, n),
            ben.len(),
            pct(b_c, ben.len() as u32),
            pct(b_cr, ben.len() as u32)
        );
    }
    if avg.2 > 0 {
        let k = f64::from(avg.2);
        let _ = writeln!(md, "| **average over the {} sources with ≥ 20 left-out attacks** | | **{:.1}%** | | **{:.1}%** | | | |", avg.2, 100.0 * avg.0 / k, 100.0 * avg.1 / k);
    }
    let _ = writeln!(md);
    Ok(())
}

/// Where the time goes (development aid): rules only, classifier only, both.
fn latency_parts() -> Res<()> {
    let para = "Hello team, following up on the quarterly planning meeting. We agreed to move the launch to the second week of March, pending the security review. Please send comments to maria.keller@example.com or call me on +49 30 12345678 before Friday. The draft covers the onboarding flow, the billing changes and the new reporting dashboard. ";
    let text = para.repeat(13); // ≈ 4 KB
    let no_pii = json!({"pii": {"email": "allow", "phone": "allow", "credit_card": "allow", "iban": "allow", "us_ssn": "allow"}, "secrets": {"default": "allow"}});
    let mut rules = no_pii.clone();
    rules["injection"] = json!({"actions": {"classifier": "off"}});
    let g_full = compile(no_pii)?;
    let g_rules = compile(rules)?;
    let iters = 300;
    let t = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(g_rules.score_text(&text, self::core::guard::Origin::User));
    }
    let r_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
    let mut v = String::new();
    let t = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(normalise::letter_spaced_view(&text, &mut v));
        std::hint::black_box(normalise::leet_view(&text, &mut v));
    }
    let views = t.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
    let t = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(normalise::normalise(&text));
    }
    let norm_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
    println!("rules-only score_text {r_us:.1} µs, view prechecks {views:.1} µs, normalise {norm_us:.1} µs");
    let t = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(g_full.score_text(&text, self::core::guard::Origin::User));
    }
    let full = t.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
    let norm = normalise::normalise(&text);
    let mut w = Vec::new();
    classifier::words(&norm, &mut w);
    let m = classifier::Model::shipped().ok_or("no model")?;
    let mut sp = Vec::new();
    let t = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(m.score(&norm, &w, &mut sp));
    }
    let cls = t.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
    let t = Instant::now();
    let mut n = 0usize;
    for _ in 0..iters {
        classifier::spans(&norm, &mut sp);
        for &(s, e) in &sp {
            classifier::for_each_feature(
                norm.as_bytes().get(s..e).unwrap_or(&[]),
                classifier::words_in(&w, s, e),
                |i| n = n.wrapping_add(i as usize),
            );
        }
    }
    std::hint::black_box(n);
    let feats = t.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
    println!("{} bytes, {} spans: score_text {full:.1} µs, classifier {cls:.1} µs, feature hashing alone {feats:.1} µs", text.len(), sp.len());
    Ok(())
}

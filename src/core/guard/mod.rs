//! The request guard (issue 5): shape limits, prompt-injection detection
//! (rules + a learned classifier) and PII/secret redaction on a parsed
//! request body. Pure Rust, no `proxy_wasm`.
//!
//! Everything is compiled once by [`GuardConfig::compile`]; the hot path is
//! [`Guard::inspect_request`]. Matched text is never logged nor returned:
//! outcomes carry categories, entity types and counts only.
//!
//! What is scanned: the text of user and tool messages in every form the
//! APIs allow (OpenAI string content, `{"type":"text"}` parts, `role:"tool"`
//! / `"function"` messages; Anthropic string content, text blocks,
//! `tool_result` blocks whose content is a string or blocks, text
//! `document` blocks) and, with `scan_system_prompt`, the system prompt
//! (OpenAI `system`/`developer` messages, Anthropic `system`). Assistant
//! turns are not scanned. Text found in tool results is attributed to the
//! `tool_output_injection` category whatever rule matched.
//!
//! Each text is scored as written and through its de-obfuscation views
//! (base64 runs decoded, letter-spacing joined, leetspeak folded; see
//! [`normalise`]), keeping the per-category maximum; the classifier scores
//! the whole text and its overlapping windows ([`classifier::spans`]).
//! Obfuscation alone is only the `obfuscation` hint.
//!
//! Configuration (every field optional; unknown fields are rejected):
//!
//! ```json
//! {
//!   "limits": {"max_messages": 100, "max_chars_per_message": 20000, "max_total_chars": 100000},
//!   "scan_system_prompt": false,
//!   "injection": {
//!     "enabled": true,
//!     "threshold": 0.5,
//!     "actions": {"instruction_override": "block", "role_injection": "block",
//!                 "system_prompt_extraction": "block", "jailbreak_persona": "block",
//!                 "tool_output_injection": "flag", "obfuscation": "flag", "classifier": "block"},
//!     "extra_rules": [{"name": "acme", "pattern": "\\bacme override\\b",
//!                      "category": "jailbreak_persona", "weight": 1.0}],
//!     "allow_rules": ["^translate the following"]
//!   },
//!   "pii": {"email": "redact", "phone": "redact", "credit_card": "redact", "iban": "redact",
//!           "us_ssn": "redact", "ip_address": "allow"},
//!   "secrets": {"default": "redact", "private_key": "block"}
//! }
//! ```

pub mod classifier;
pub mod detect;
pub mod injection;
pub mod normalise;

use crate::core::api::Api;
use crate::core::error::ConfigError;
use serde::Deserialize;
use serde_json::Value;

pub use detect::{Action, Detectors, Entity, Match, PiiConfig, SecretsConfig};
pub use injection::Category;

use classifier::{Model, Word};
use injection::{RuleSet, Scores, UserRule, CATEGORY_COUNT};

/// Guard configuration (the `guard` section). Every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// `true` switches the whole request guard off (no scan at all).
    pub disabled: bool,
    /// Shape limits (0 = unlimited).
    pub limits: LimitsConfig,
    /// Also scan the system prompt (OpenAI `system`/`developer` messages,
    /// Anthropic `system`) for injection and PII. Default false: the system
    /// prompt is the application's own text.
    pub scan_system_prompt: bool,
    pub injection: InjectionConfig,
    /// PII actions per entity type: `redact`, `block` or `allow`.
    pub pii: PiiConfig,
    /// Secret actions per type, with an optional `default`.
    pub secrets: SecretsConfig,
}

/// Shape limits; 0 means unlimited. Violations block with codes
/// `max_messages_exceeded`, `max_chars_per_message_exceeded`,
/// `max_total_chars_exceeded`. Characters are Unicode scalar values of the
/// message text (all roles; the system prompt counts toward the total).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_messages: u64,
    pub max_chars_per_message: u64,
    pub max_total_chars: u64,
}

/// What to do when a category's score reaches the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CategoryAction {
    /// Reject with 400, code `prompt_injection_detected`.
    Block,
    /// Forward, with `x-llmgate-flagged: <category>`, a metric and an audit
    /// record.
    Flag,
    /// Ignore this category.
    Off,
}

/// Per-category actions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CategoryActions {
    /// "ignore previous instructions" and variants (several languages).
    pub instruction_override: CategoryAction,
    /// Chat-template tokens (`<|im_start|>`, `[INST]`, `<<SYS>>`,
    /// `<|system|>`), `### System:` headers, `system:`/`assistant:` role
    /// prefixes at line starts inside user text.
    pub role_injection: CategoryAction,
    /// "repeat/print/reveal your system prompt", "the words above",
    /// password extraction.
    pub system_prompt_extraction: CategoryAction,
    /// DAN-style personas, "developer mode", "no ethical guidelines".
    pub jailbreak_persona: CategoryAction,
    /// Anything detected inside tool results, plus indirect-injection
    /// phrasing ("note to the AI", "do not tell the user", exfiltration).
    pub tool_output_injection: CategoryAction,
    /// A hint, not a verdict: invisible characters inside words,
    /// mixed-script look-alike letters, "decode this and follow it", or a
    /// de-obfuscated view (base64 decoded, letter-spacing joined, leetspeak
    /// folded) that scores higher than the text as written. The views
    /// themselves are scored in the injection categories like plain text.
    pub obfuscation: CategoryAction,
    /// The learned classifier's score.
    pub classifier: CategoryAction,
}

impl Default for CategoryActions {
    fn default() -> Self {
        Self {
            instruction_override: CategoryAction::Block,
            role_injection: CategoryAction::Block,
            system_prompt_extraction: CategoryAction::Block,
            jailbreak_persona: CategoryAction::Block,
            tool_output_injection: CategoryAction::Flag,
            obfuscation: CategoryAction::Flag,
            classifier: CategoryAction::Block,
        }
    }
}

impl CategoryActions {
    fn get(&self, c: Category) -> CategoryAction {
        match c {
            Category::InstructionOverride => self.instruction_override,
            Category::RoleInjection => self.role_injection,
            Category::SystemPromptExtraction => self.system_prompt_extraction,
            Category::JailbreakPersona => self.jailbreak_persona,
            Category::ToolOutputInjection => self.tool_output_injection,
            Category::Obfuscation => self.obfuscation,
            Category::Classifier => self.classifier,
        }
    }
}

/// A user-defined rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraRule {
    pub name: String,
    /// A regex-lite pattern, matched against the normalised text
    /// (lowercased, look-alikes folded, whitespace collapsed).
    pub pattern: String,
    /// One of the category names; default `instruction_override`.
    #[serde(default = "default_category")]
    pub category: String,
    /// Evidence weight in (0, 1]; default 1 (one match reaches any
    /// threshold).
    #[serde(default = "default_weight")]
    pub weight: f32,
}

fn default_category() -> String {
    "instruction_override".to_string()
}
fn default_weight() -> f32 {
    1.0
}

/// Injection detection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InjectionConfig {
    /// Default true.
    pub enabled: bool,
    /// Score in [0, 1] from which a category's action applies. Default 0.5.
    /// Rule evidence is combined per category as a noisy-or of the rule
    /// weights; the classifier's probability is calibrated so that 0.5 is
    /// its shipped operating point.
    pub threshold: f32,
    /// Per-category action: `block`, `flag` or `off`.
    pub actions: CategoryActions,
    /// Extra rules, compiled at config time.
    pub extra_rules: Vec<ExtraRule>,
    /// Regex-lite patterns (matched against the normalised text); a text that
    /// matches any of them is not reported for injection.
    pub allow_rules: Vec<String>,
}

impl Default for InjectionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 0.5,
            actions: CategoryActions::default(),
            extra_rules: Vec::new(),
            allow_rules: Vec::new(),
        }
    }
}

/// The compiled guard.
#[derive(Debug)]
pub struct Guard {
    /// The guard is on (not `disabled`).
    pub enabled: bool,
    limits: LimitsConfig,
    scan_system: bool,
    injection_enabled: bool,
    threshold: f32,
    actions: [CategoryAction; CATEGORY_COUNT],
    rules: RuleSet,
    model: Option<Model>,
    detectors: Detectors,
}

/// Why a request is rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardBlock {
    /// `prompt_injection_detected`, `max_messages_exceeded`,
    /// `max_chars_per_message_exceeded`, `max_total_chars_exceeded`,
    /// `pii_detected`, `secret_detected`.
    pub code: &'static str,
    /// Human-readable, never contains matched text.
    pub message: String,
    /// Injection category, entity type or limit name.
    pub category: &'static str,
}

/// The result of inspecting a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuardOutcome {
    pub block: Option<GuardBlock>,
    /// Injection categories flagged (action `flag`, score ≥ threshold).
    pub flagged: Vec<&'static str>,
    /// Entity type → number of redactions.
    pub redacted: Vec<(&'static str, u32)>,
    /// The body was changed and must be re-serialised.
    pub modified: bool,
    /// Highest injection score over all categories and texts.
    pub injection_score: f32,
}

impl GuardConfig {
    /// Validates and compiles. Error fields are relative to the guard
    /// section (e.g. `injection.threshold`, `injection.extra_rules[0].pattern`).
    pub fn compile(&self) -> Result<Guard, ConfigError> {
        let inj = &self.injection;
        if !(0.0..=1.0).contains(&inj.threshold) || inj.threshold.is_nan() {
            return Err(ConfigError::new(
                "injection.threshold",
                "must be between 0 and 1",
            ));
        }
        let mut users = Vec::with_capacity(inj.extra_rules.len());
        for (i, r) in inj.extra_rules.iter().enumerate() {
            let category = Category::from_name(&r.category).ok_or_else(|| {
                ConfigError::new(
                    format!("injection.extra_rules[{i}].category"),
                    format!(
                        "unknown category '{}' (one of: {})",
                        r.category,
                        Category::ALL
                            .iter()
                            .map(|c| c.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
            if !(r.weight > 0.0 && r.weight <= 1.0) {
                return Err(ConfigError::new(
                    format!("injection.extra_rules[{i}].weight"),
                    "must be in (0, 1]",
                ));
            }
            if r.name.is_empty() {
                return Err(ConfigError::new(
                    format!("injection.extra_rules[{i}].name"),
                    "must not be empty",
                ));
            }
            users.push(UserRule {
                name: r.name.clone(),
                pattern: r.pattern.clone(),
                category,
                weight: r.weight,
            });
        }
        let rules = RuleSet::compile(&users, &inj.allow_rules).map_err(|(field, msg)| {
            ConfigError::new(
                format!("injection.{field}"),
                format!("invalid regex: {msg}"),
            )
        })?;
        let mut actions = [CategoryAction::Off; CATEGORY_COUNT];
        for c in Category::ALL {
            if let Some(a) = actions.get_mut(c.index()) {
                *a = inj.actions.get(c);
            }
        }
        Ok(Guard {
            enabled: !self.disabled,
            limits: self.limits.clone(),
            scan_system: self.scan_system_prompt,
            injection_enabled: inj.enabled,
            threshold: inj.threshold,
            actions,
            rules,
            model: Model::shipped(),
            detectors: Detectors::new(&self.pii, &self.secrets),
        })
    }
}

/// Where a scanned text comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    User,
    Tool,
    System,
}

/// Reusable buffers for one inspection.
#[derive(Default)]
struct Scratch {
    norm: String,
    decoded: String,
    view1: String,
    view2: String,
    words: Vec<Word>,
    spans: Vec<(usize, usize)>,
    matches: Vec<Match>,
}

/// Injection analysis of one text.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextScores {
    /// Per category, indexed by [`Category::index`].
    pub scores: Scores,
}

impl TextScores {
    pub fn max(&self) -> f32 {
        self.scores.iter().copied().fold(0.0, f32::max)
    }
    pub fn get(&self, c: Category) -> f32 {
        self.scores.get(c.index()).copied().unwrap_or(0.0)
    }
}

impl Guard {
    /// The shared PII/secret detectors, as configured.
    pub fn detectors(&self) -> &Detectors {
        &self.detectors
    }

    /// Names of the built-in injection rules matching `text` (diagnostics).
    pub fn matching_rules(&self, text: &str) -> Vec<&'static str> {
        let norm = normalise::normalise(text);
        let mut w = Vec::new();
        classifier::words(&norm, &mut w);
        self.rules.matching_rules(&norm, &w)
    }

    /// True when the learned classifier is loaded.
    pub fn has_classifier(&self) -> bool {
        self.model.is_some()
    }

    /// Injection scores of one text (rules, classifier, obfuscation), with
    /// the origin's attribution applied.
    pub fn score_text(&self, text: &str, origin: Origin) -> TextScores {
        let mut s = Scratch::default();
        self.score_with(text, origin, &mut s)
    }

    /// Rules and classifier on one view of a text (the text itself or a
    /// de-obfuscated view), into `sc`.
    /// `classify` false: rules only (the text is mostly letter-spaced: its
    /// joined view is what the classifier reads).
    fn score_view(
        &self,
        text: &str,
        sc: &mut Scores,
        s: &mut Scratch,
        classify: bool,
    ) -> normalise::NormStats {
        const MIN_CLASSIFIER_WORDS: usize = 3;
        let st = normalise::normalise_into(text, &mut s.norm);
        classifier::words(&s.norm, &mut s.words);
        self.rules.scan(&s.norm, &s.words, sc);
        // The classifier has no reliable signal in one or two words (a
        // greeting scores like the password-game attacks that start with
        // one): those texts are left to the rules.
        if let Some(m) = self
            .model
            .as_ref()
            .filter(|_| classify && s.words.len() >= MIN_CLASSIFIER_WORDS)
        {
            let p = m.score(&s.norm, &s.words, &mut s.spans);
            if let Some(x) = sc.get_mut(Category::Classifier.index()) {
                *x = p;
            }
        }
        // Two independent weak signals (a weak injection rule and a middling
        // classifier score) add up in the classifier category. An
        // obfuscation marker is a hint, not injection evidence: it does not
        // add up ("say it in reverse order").
        let p = sc.get(Category::Classifier.index()).copied().unwrap_or(0.0);
        let rule_max = Category::ALL
            .iter()
            .filter(|c| !matches!(c, Category::Classifier | Category::Obfuscation))
            .filter_map(|c| sc.get(c.index()).copied())
            .fold(0.0, f32::max);
        if p >= COMBINE_MIN && rule_max >= COMBINE_MIN {
            if let Some(x) = sc.get_mut(Category::Classifier.index()) {
                *x = 1.0 - (1.0 - p) * (1.0 - rule_max);
            }
        }
        st
    }

    /// Scores a de-obfuscated view like plain text and merges it into `sc`
    /// (per category maximum); the view's strength is also a hint in the
    /// `obfuscation` category when it scores above the plain text.
    fn merge_view(&self, view: &str, sc: &mut Scores, s: &mut Scratch) {
        let mut inner: Scores = [0.0; CATEGORY_COUNT];
        self.score_view(view, &mut inner, s, true);
        let plain = sc.iter().copied().fold(0.0, f32::max);
        let best = inner.iter().copied().fold(0.0, f32::max);
        for (m, v) in sc.iter_mut().zip(inner.iter()) {
            *m = m.max(*v);
        }
        if best > plain {
            injection::add_evidence(sc, Category::Obfuscation, best);
        }
    }

    fn score_with(&self, text: &str, origin: Origin, s: &mut Scratch) -> TextScores {
        let mut sc: Scores = [0.0; CATEGORY_COUNT];
        if text.is_empty() {
            return TextScores { scores: sc };
        }
        let mut joined = std::mem::take(&mut s.view1);
        let n_joined = normalise::letter_spaced_view(text, &mut joined) as usize;
        // one-letter tokens are out of the classifier's distribution: a text
        // that is mostly letter-spaced is classified through its joined view
        let mostly_spaced = n_joined > 0
            && n_joined.saturating_mul(2) >= text.chars().filter(|c| c.is_alphanumeric()).count();
        let st = self.score_view(text, &mut sc, s, !mostly_spaced);
        // Obfuscation alone is a hint (category `obfuscation`, flagged by
        // default), never an injection verdict.
        if st.invisible_in_words >= 3 {
            injection::add_evidence(&mut sc, Category::Obfuscation, 0.6);
        }
        if st.homoglyphs >= 2 {
            injection::add_evidence(&mut sc, Category::Obfuscation, 0.6);
        }
        // De-obfuscation views, scored like plain text: long base64 runs
        // decoded; letter-spaced text joined and leetspeak folded.
        if has_long_b64_run(text) {
            let mut decoded = std::mem::take(&mut s.decoded);
            decoded.clear();
            if normalise::decode_base64_runs(text, &mut decoded, 64 * 1024) > 0 {
                self.merge_view(&decoded, &mut sc, s);
            }
            s.decoded = decoded;
        }
        let mut folded = std::mem::take(&mut s.view2);
        let is_joined = n_joined > 0;
        let base = if is_joined { joined.as_str() } else { text };
        let is_folded = normalise::leet_view(base, &mut folded) > 0;
        if is_folded {
            self.merge_view(&folded, &mut sc, s);
        } else if is_joined {
            self.merge_view(&joined, &mut sc, s);
        }
        s.view1 = joined;
        s.view2 = folded;
        if self.rules.has_allow_rules() {
            normalise::normalise_into(text, &mut s.norm);
            if self.rules.allowed(&s.norm) {
                sc = [0.0; CATEGORY_COUNT];
            }
        }
        if origin == Origin::Tool {
            // everything found in a tool result is tool-output injection;
            // the obfuscation hint stays a hint
            let obf = sc
                .get(Category::Obfuscation.index())
                .copied()
                .unwrap_or(0.0);
            let best = Category::ALL
                .iter()
                .filter(|c| **c != Category::Obfuscation)
                .filter_map(|c| sc.get(c.index()).copied())
                .fold(0.0, f32::max);
            sc = [0.0; CATEGORY_COUNT];
            if let Some(x) = sc.get_mut(Category::ToolOutputInjection.index()) {
                *x = best;
            }
            if let Some(x) = sc.get_mut(Category::Obfuscation.index()) {
                *x = obf;
            }
        }
        TextScores { scores: sc }
    }

    /// Inspects (and, when redacting, edits in place) a parsed request body.
    pub fn inspect_request(&self, api: Api, body: &mut Value) -> GuardOutcome {
        let mut out = GuardOutcome::default();
        if let Some(b) = self.check_limits(api, body) {
            out.block = Some(b);
            return out;
        }
        let mut s = Scratch::default();
        let mut cat_max: Scores = [0.0; CATEGORY_COUNT];
        let mut pii_block: Option<Entity> = None;
        let detect = self.detectors.any_enabled();
        let inject = self.injection_enabled;
        let scan_system = self.scan_system;
        visit_texts(api, body, scan_system, &mut |origin, text: &mut String| {
            if inject {
                let ts = self.score_with(text, origin, &mut s);
                for (m, v) in cat_max.iter_mut().zip(ts.scores.iter()) {
                    *m = m.max(*v);
                }
            }
            if detect {
                self.detectors.find_into(text, &mut s.matches);
                if s.matches.is_empty() {
                    return;
                }
                if let Some(m) = s
                    .matches
                    .iter()
                    .find(|m| self.detectors.action(m.entity) == Action::Block)
                {
                    if pii_block.is_none() {
                        pii_block = Some(m.entity);
                    }
                }
                if pii_block.is_none() {
                    let new = detect::apply_redactions(text, &s.matches, &mut out.redacted);
                    *text = new;
                    out.modified = true;
                }
            }
        });
        out.injection_score = cat_max.iter().copied().fold(0.0, f32::max);
        let mut block_cat: Option<(Category, f32)> = None;
        for c in Category::ALL {
            let v = cat_max.get(c.index()).copied().unwrap_or(0.0);
            if v < self.threshold || v <= 0.0 {
                continue;
            }
            match self
                .actions
                .get(c.index())
                .copied()
                .unwrap_or(CategoryAction::Off)
            {
                CategoryAction::Block => {
                    // a rule's category names the block when a rule reaches
                    // the threshold; `classifier` only when none does
                    let rank = |c: Category, v: f32| (c != Category::Classifier, v);
                    if block_cat.is_none_or(|(bc, b)| rank(c, v) > rank(bc, b)) {
                        block_cat = Some((c, v));
                    }
                }
                CategoryAction::Flag => out.flagged.push(c.name()),
                CategoryAction::Off => {}
            }
        }
        if let Some((c, _)) = block_cat {
            out.block = Some(GuardBlock {
                code: "prompt_injection_detected",
                message: format!(
                    "request blocked by the prompt guard: possible prompt injection ({})",
                    c.name()
                ),
                category: c.name(),
            });
        } else if let Some(e) = pii_block {
            let (code, what) = if e.is_secret() {
                ("secret_detected", "a secret")
            } else {
                ("pii_detected", "personal data")
            };
            out.block = Some(GuardBlock {
                code,
                message: format!("request blocked: it contains {what} ({})", e.name()),
                category: e.name(),
            });
        }
        out
    }

    fn check_limits(&self, api: Api, body: &Value) -> Option<GuardBlock> {
        let l = &self.limits;
        if l.max_messages == 0 && l.max_chars_per_message == 0 && l.max_total_chars == 0 {
            return None;
        }
        let msgs = body.get("messages").and_then(Value::as_array);
        let n = msgs.map_or(0, |m| m.len()) as u64;
        if l.max_messages > 0 && n > l.max_messages {
            return Some(GuardBlock {
                code: "max_messages_exceeded",
                message: format!(
                    "the request has {n} messages; the limit is {}",
                    l.max_messages
                ),
                category: "max_messages",
            });
        }
        let mut total: u64 = 0;
        if api == Api::Anthropic {
            if let Some(sys) = body.get("system") {
                total = total.saturating_add(count_chars(sys));
            }
        }
        for (i, m) in msgs.into_iter().flatten().enumerate() {
            let c = m.get("content").map_or(0, count_chars);
            if l.max_chars_per_message > 0 && c > l.max_chars_per_message {
                return Some(GuardBlock {
                    code: "max_chars_per_message_exceeded",
                    message: format!(
                        "message {i} has {c} characters; the limit is {}",
                        l.max_chars_per_message
                    ),
                    category: "max_chars_per_message",
                });
            }
            total = total.saturating_add(c);
        }
        if l.max_total_chars > 0 && total > l.max_total_chars {
            return Some(GuardBlock {
                code: "max_total_chars_exceeded",
                message: format!(
                    "the request has {total} characters of text; the limit is {}",
                    l.max_total_chars
                ),
                category: "max_total_chars",
            });
        }
        None
    }
}

/// Both the best rule and the classifier must reach this for their evidence
/// to be combined.
const COMBINE_MIN: f32 = 0.25;

fn has_long_b64_run(text: &str) -> bool {
    let mut run = 0usize;
    for &c in text.as_bytes() {
        if c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'-' || c == b'_' {
            run += 1;
            if run >= normalise::MIN_B64 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// Characters of text in a content value (string, parts, blocks, nested
/// tool results), bounded depth.
fn count_chars(v: &Value) -> u64 {
    fn go(v: &Value, depth: u32) -> u64 {
        if depth > 4 {
            return 0;
        }
        match v {
            Value::String(s) => s.chars().count() as u64,
            Value::Array(a) => a
                .iter()
                .map(|x| go(x, depth + 1))
                .fold(0u64, u64::saturating_add),
            Value::Object(o) => {
                let mut n = 0u64;
                if let Some(Value::String(t)) = o.get("text") {
                    n = n.saturating_add(t.chars().count() as u64);
                }
                if let Some(c) = o.get("content") {
                    n = n.saturating_add(go(c, depth + 1));
                }
                n
            }
            _ => 0,
        }
    }
    go(v, 0)
}

/// Calls `f` on every scannable text of the body, mutably.
pub fn visit_texts(
    api: Api,
    body: &mut Value,
    scan_system: bool,
    f: &mut dyn FnMut(Origin, &mut String),
) {
    match api {
        Api::OpenAi => {
            let msgs = match body.get_mut("messages").and_then(Value::as_array_mut) {
                Some(m) => m,
                None => return,
            };
            for m in msgs.iter_mut() {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("");
                let origin = match role {
                    "user" => Origin::User,
                    "tool" | "function" => Origin::Tool,
                    "system" | "developer" if scan_system => Origin::System,
                    _ => continue,
                };
                if let Some(c) = m.get_mut("content") {
                    visit_content(c, origin, f, 0);
                }
            }
        }
        Api::Anthropic => {
            if scan_system {
                if let Some(sys) = body.get_mut("system") {
                    visit_content(sys, Origin::System, f, 0);
                }
            }
            let msgs = match body.get_mut("messages").and_then(Value::as_array_mut) {
                Some(m) => m,
                None => return,
            };
            for m in msgs.iter_mut() {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("");
                if role != "user" {
                    continue;
                }
                if let Some(c) = m.get_mut("content") {
                    visit_content(c, Origin::User, f, 0);
                }
            }
        }
    }
}

/// Content: a string, or an array of parts/blocks.
fn visit_content(
    c: &mut Value,
    origin: Origin,
    f: &mut dyn FnMut(Origin, &mut String),
    depth: u32,
) {
    if depth > 3 {
        return;
    }
    match c {
        Value::String(s) => f(origin, s),
        Value::Array(parts) => {
            for p in parts.iter_mut() {
                visit_part(p, origin, f, depth);
            }
        }
        Value::Object(_) => visit_part(c, origin, f, depth),
        _ => {}
    }
}

fn visit_part(p: &mut Value, origin: Origin, f: &mut dyn FnMut(Origin, &mut String), depth: u32) {
    let obj = match p.as_object_mut() {
        Some(o) => o,
        None => {
            if let Value::String(s) = p {
                f(origin, s);
            }
            return;
        }
    };
    #[derive(PartialEq)]
    enum Kind {
        Text,
        ToolResult,
        Document,
        Other,
    }
    let kind = match obj.get("type").and_then(Value::as_str) {
        None | Some("text") | Some("input_text") => Kind::Text,
        Some("tool_result") => Kind::ToolResult,
        Some("document") => Kind::Document,
        Some(_) => Kind::Other,
    };
    match kind {
        Kind::Text => {
            if let Some(Value::String(s)) = obj.get_mut("text") {
                f(origin, s);
            }
        }
        Kind::ToolResult => {
            if let Some(c) = obj.get_mut("content") {
                visit_content(c, Origin::Tool, f, depth + 1);
            }
        }
        Kind::Document => {
            if let Some(src) = obj.get_mut("source").and_then(Value::as_object_mut) {
                let is_text = src.get("type").and_then(Value::as_str) == Some("text");
                if is_text {
                    if let Some(Value::String(s)) = src.get_mut("data") {
                        f(origin, s);
                    }
                }
            }
        }
        Kind::Other => {}
    }
}

#[cfg(test)]
mod evasion;
#[cfg(test)]
mod tests;

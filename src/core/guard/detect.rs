//! PII and secret detectors: one implementation shared by the request guard
//! and response filtering.
//!
//! Hand-written scanners, no regex: a single pass over the bytes looks at
//! token starts (and at `@` for emails) and confirms candidates with cheap
//! checks (Luhn, mod-97, valid SSN ranges, token lengths, a placeholder
//! filter for secrets). Matched text is never logged or returned: callers get
//! entity types and byte ranges only.

use serde::Deserialize;

/// An entity type the detectors know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    Email,
    Phone,
    CreditCard,
    Iban,
    UsSsn,
    IpAddress,
    OpenaiKey,
    AnthropicKey,
    AwsAccessKey,
    GithubToken,
    GitlabToken,
    SlackToken,
    StripeKey,
    GoogleApiKey,
    HuggingfaceToken,
    Jwt,
    PrivateKey,
}

/// Number of entity types.
pub const ENTITY_COUNT: usize = 17;

impl Entity {
    pub const ALL: [Entity; ENTITY_COUNT] = [
        Entity::Email,
        Entity::Phone,
        Entity::CreditCard,
        Entity::Iban,
        Entity::UsSsn,
        Entity::IpAddress,
        Entity::OpenaiKey,
        Entity::AnthropicKey,
        Entity::AwsAccessKey,
        Entity::GithubToken,
        Entity::GitlabToken,
        Entity::SlackToken,
        Entity::StripeKey,
        Entity::GoogleApiKey,
        Entity::HuggingfaceToken,
        Entity::Jwt,
        Entity::PrivateKey,
    ];

    /// The configuration / metrics name, e.g. `credit_card`.
    pub fn name(self) -> &'static str {
        match self {
            Entity::Email => "email",
            Entity::Phone => "phone",
            Entity::CreditCard => "credit_card",
            Entity::Iban => "iban",
            Entity::UsSsn => "us_ssn",
            Entity::IpAddress => "ip_address",
            Entity::OpenaiKey => "openai_key",
            Entity::AnthropicKey => "anthropic_key",
            Entity::AwsAccessKey => "aws_access_key",
            Entity::GithubToken => "github_token",
            Entity::GitlabToken => "gitlab_token",
            Entity::SlackToken => "slack_token",
            Entity::StripeKey => "stripe_key",
            Entity::GoogleApiKey => "google_api_key",
            Entity::HuggingfaceToken => "huggingface_token",
            Entity::Jwt => "jwt",
            Entity::PrivateKey => "private_key",
        }
    }

    /// The text that replaces a redacted match, e.g. `[REDACTED_EMAIL]`.
    pub fn placeholder(self) -> &'static str {
        match self {
            Entity::Email => "[REDACTED_EMAIL]",
            Entity::Phone => "[REDACTED_PHONE]",
            Entity::CreditCard => "[REDACTED_CREDIT_CARD]",
            Entity::Iban => "[REDACTED_IBAN]",
            Entity::UsSsn => "[REDACTED_US_SSN]",
            Entity::IpAddress => "[REDACTED_IP_ADDRESS]",
            Entity::OpenaiKey => "[REDACTED_OPENAI_KEY]",
            Entity::AnthropicKey => "[REDACTED_ANTHROPIC_KEY]",
            Entity::AwsAccessKey => "[REDACTED_AWS_ACCESS_KEY]",
            Entity::GithubToken => "[REDACTED_GITHUB_TOKEN]",
            Entity::GitlabToken => "[REDACTED_GITLAB_TOKEN]",
            Entity::SlackToken => "[REDACTED_SLACK_TOKEN]",
            Entity::StripeKey => "[REDACTED_STRIPE_KEY]",
            Entity::GoogleApiKey => "[REDACTED_GOOGLE_API_KEY]",
            Entity::HuggingfaceToken => "[REDACTED_HUGGINGFACE_TOKEN]",
            Entity::Jwt => "[REDACTED_JWT]",
            Entity::PrivateKey => "[REDACTED_PRIVATE_KEY]",
        }
    }

    /// Secrets (credentials) as opposed to personal data.
    pub fn is_secret(self) -> bool {
        !matches!(
            self,
            Entity::Email
                | Entity::Phone
                | Entity::CreditCard
                | Entity::Iban
                | Entity::UsSsn
                | Entity::IpAddress
        )
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Overlap priority: the higher wins when two matches overlap.
    fn priority(self) -> u8 {
        match self {
            Entity::PrivateKey => 20,
            Entity::Jwt => 19,
            e if e.is_secret() => 18,
            Entity::Email => 12,
            Entity::CreditCard => 11,
            Entity::Iban => 10,
            Entity::UsSsn => 9,
            Entity::Phone => 8,
            Entity::IpAddress => 7,
            _ => 0,
        }
    }
}

/// What to do with an entity type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Replace with `[REDACTED_<TYPE>]`.
    Redact,
    /// Reject the request (or response).
    Block,
    /// Leave it; the detector does not even report it.
    Allow,
}

/// One detected entity: its type and byte range in the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub entity: Entity,
    pub start: usize,
    pub end: usize,
}

/// Per-entity-type PII actions. Defaults: `redact` for every type except
/// `ip_address` (`allow`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PiiConfig {
    pub email: Action,
    /// E.164 (`+` and 8–15 digits), NANP (`(415) 555-2671`, `415-555-2671`,
    /// with `x123` extensions), European trunk forms (`07700 900 123`,
    /// `03.93.92.16.85`), other grouped forms only next to a context word
    /// (phone, tel, mobile, fax, call…).
    pub phone: Action,
    /// 12–19 digits, optionally grouped by spaces or dashes, Luhn-checked,
    /// with a known brand prefix.
    pub credit_card: Action,
    /// Mod-97 checked, with or without spaces.
    pub iban: Action,
    /// `123-45-6789` / `123 45 6789` in valid ranges; 9 bare digits only next
    /// to a context word (SSN, social security).
    pub us_ssn: Action,
    /// IPv4 dotted quads and IPv6 (full and `::` forms).
    pub ip_address: Action,
}

impl Default for PiiConfig {
    fn default() -> Self {
        Self {
            email: Action::Redact,
            phone: Action::Redact,
            credit_card: Action::Redact,
            iban: Action::Redact,
            us_ssn: Action::Redact,
            ip_address: Action::Allow,
        }
    }
}

/// Per-type secret actions. `default` applies to every type not set
/// explicitly (itself defaulting to `redact`); e.g.
/// `{"default": "block", "jwt": "redact"}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    pub default: Option<Action>,
    /// `sk-…`, `sk-proj-…`, `sk-svcacct-…`, `sk-admin-…`.
    pub openai_key: Option<Action>,
    /// `sk-ant-api03-…`, `sk-ant-admin01-…`.
    pub anthropic_key: Option<Action>,
    /// `AKIA`/`ASIA`/`ABIA`/`ACCA`/`A3T?` + 16 base32 characters.
    pub aws_access_key: Option<Action>,
    /// `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`.
    pub github_token: Option<Action>,
    /// `glpat-…`.
    pub gitlab_token: Option<Action>,
    /// `xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`, `xoxo-`, `xoxe-`,
    /// `xapp-` tokens and `hooks.slack.com` webhook URLs.
    pub slack_token: Option<Action>,
    /// `sk_live_`, `sk_test_`, `sk_prod_`, `rk_live_`, `rk_test_`, `rk_prod_`.
    pub stripe_key: Option<Action>,
    /// `AIza` + 35 characters.
    pub google_api_key: Option<Action>,
    /// `hf_…` and `api_org_…`.
    pub huggingface_token: Option<Action>,
    /// Three-part `eyJ….eyJ….sig` tokens.
    pub jwt: Option<Action>,
    /// PEM `-----BEGIN … PRIVATE KEY-----` blocks.
    pub private_key: Option<Action>,
}

/// The compiled detectors: an action per entity type.
#[derive(Debug, Clone)]
pub struct Detectors {
    actions: [Action; ENTITY_COUNT],
    any_enabled: bool,
}

impl Default for Detectors {
    fn default() -> Self {
        Self::new(&PiiConfig::default(), &SecretsConfig::default())
    }
}

/// The longest match the detectors report, except PEM private keys, which
/// are capped at [`MAX_PEM_LEN`]: a streaming window of this many bytes
/// catches every other entity split across chunks.
const MAX_TOKEN_LEN: usize = 512;
/// PEM blocks longer than this are matched up to this length.
pub const MAX_PEM_LEN: usize = 8192;

impl Detectors {
    /// Compiles the actions.
    pub fn new(pii: &PiiConfig, secrets: &SecretsConfig) -> Self {
        let mut actions = [Action::Redact; ENTITY_COUNT];
        let d = secrets.default.unwrap_or(Action::Redact);
        let set = |a: &mut [Action; ENTITY_COUNT], e: Entity, v: Action| {
            if let Some(slot) = a.get_mut(e.index()) {
                *slot = v;
            }
        };
        set(&mut actions, Entity::Email, pii.email);
        set(&mut actions, Entity::Phone, pii.phone);
        set(&mut actions, Entity::CreditCard, pii.credit_card);
        set(&mut actions, Entity::Iban, pii.iban);
        set(&mut actions, Entity::UsSsn, pii.us_ssn);
        set(&mut actions, Entity::IpAddress, pii.ip_address);
        let s = |o: Option<Action>| o.unwrap_or(d);
        set(&mut actions, Entity::OpenaiKey, s(secrets.openai_key));
        set(&mut actions, Entity::AnthropicKey, s(secrets.anthropic_key));
        set(
            &mut actions,
            Entity::AwsAccessKey,
            s(secrets.aws_access_key),
        );
        set(&mut actions, Entity::GithubToken, s(secrets.github_token));
        set(&mut actions, Entity::GitlabToken, s(secrets.gitlab_token));
        set(&mut actions, Entity::SlackToken, s(secrets.slack_token));
        set(&mut actions, Entity::StripeKey, s(secrets.stripe_key));
        set(
            &mut actions,
            Entity::GoogleApiKey,
            s(secrets.google_api_key),
        );
        set(
            &mut actions,
            Entity::HuggingfaceToken,
            s(secrets.huggingface_token),
        );
        set(&mut actions, Entity::Jwt, s(secrets.jwt));
        set(&mut actions, Entity::PrivateKey, s(secrets.private_key));
        Self::with_actions(actions)
    }

    /// Detectors with an explicit action per entity (indexed as
    /// [`Entity::ALL`]).
    pub fn with_actions(actions: [Action; ENTITY_COUNT]) -> Self {
        let any_enabled = actions.iter().any(|a| *a != Action::Allow);
        Self {
            actions,
            any_enabled,
        }
    }

    /// Every entity type reported (nothing allowed): for evaluation.
    pub fn all_enabled() -> Self {
        Self::with_actions([Action::Redact; ENTITY_COUNT])
    }

    /// The configured action for an entity type.
    pub fn action(&self, e: Entity) -> Action {
        self.actions
            .get(e.index())
            .copied()
            .unwrap_or(Action::Allow)
    }

    /// True when at least one entity type is not `allow`.
    pub fn any_enabled(&self) -> bool {
        self.any_enabled
    }

    /// The longest span a match can have (PEM blocks excepted, see
    /// [`MAX_PEM_LEN`]), for streaming hold-back windows.
    pub fn max_match_len(&self) -> usize {
        if self.action(Entity::PrivateKey) == Action::Allow {
            MAX_TOKEN_LEN
        } else {
            MAX_PEM_LEN
        }
    }

    /// All entities found in `text` whose action is not `allow`,
    /// non-overlapping, in order.
    pub fn find(&self, text: &str) -> Vec<Match> {
        let mut out = Vec::new();
        if self.any_enabled {
            self.find_into(text, &mut out);
        }
        out
    }

    /// Like [`find`](Self::find), appending to `out` (cleared first).
    pub fn find_into(&self, text: &str, out: &mut Vec<Match>) {
        out.clear();
        if !self.any_enabled {
            return;
        }
        scan(text, out);
        resolve_overlaps(out);
        out.retain(|m| self.action(m.entity) != Action::Allow);
    }

    /// Replaces every match whose action is not `allow` (both `redact` and
    /// `block`: a caller that does not block still leaks nothing) with its
    /// placeholder. `None` when nothing was found; otherwise the new text and
    /// the count per entity type.
    pub fn redact(&self, text: &str) -> Option<(String, Vec<(&'static str, u32)>)> {
        let matches = self.find(text);
        if matches.is_empty() {
            return None;
        }
        let mut counts: Vec<(&'static str, u32)> = Vec::new();
        let out = apply_redactions(text, &matches, &mut counts);
        Some((out, counts))
    }
}

/// Builds the redacted text and adds to the per-type counts.
pub(crate) fn apply_redactions(
    text: &str,
    matches: &[Match],
    counts: &mut Vec<(&'static str, u32)>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0usize;
    for m in matches {
        if m.start < last {
            continue;
        }
        if let Some(seg) = text.get(last..m.start) {
            out.push_str(seg);
        }
        out.push_str(m.entity.placeholder());
        last = m.end;
        add_count(counts, m.entity.name(), 1);
    }
    if let Some(seg) = text.get(last..) {
        out.push_str(seg);
    }
    out
}

pub(crate) fn add_count(counts: &mut Vec<(&'static str, u32)>, name: &'static str, n: u32) {
    if let Some(c) = counts.iter_mut().find(|(k, _)| *k == name) {
        c.1 = c.1.saturating_add(n);
    } else {
        counts.push((name, n));
    }
}

fn resolve_overlaps(v: &mut Vec<Match>) {
    if v.len() < 2 {
        return;
    }
    v.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut kept: Vec<Match> = Vec::with_capacity(v.len());
    for m in v.drain(..) {
        match kept.last_mut() {
            Some(last) if m.start < last.end => {
                let better = m.entity.priority() > last.entity.priority()
                    || (m.entity.priority() == last.entity.priority()
                        && m.end - m.start > last.end - last.start);
                if better {
                    *last = m;
                }
            }
            _ => kept.push(m),
        }
    }
    // A replacement may now overlap its predecessor: drop such followers.
    let mut out: Vec<Match> = Vec::with_capacity(kept.len());
    for m in kept {
        match out.last() {
            Some(last) if m.start < last.end => {}
            _ => out.push(m),
        }
    }
    *v = out;
}

// ---------------------------------------------------------------------------
// byte helpers

#[inline]
fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

#[inline]
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

#[inline]
fn is_token(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

fn starts_with_at(b: &[u8], i: usize, p: &[u8]) -> bool {
    b.get(i..).is_some_and(|s| s.starts_with(p))
}

/// Length of the run starting at `i` whose bytes satisfy `f`, capped at `max`.
fn run_len(b: &[u8], i: usize, max: usize, f: impl Fn(u8) -> bool) -> usize {
    let mut n = 0;
    while n < max {
        match b.get(i + n) {
            Some(&c) if f(c) => n += 1,
            _ => break,
        }
    }
    n
}

/// Number of distinct bytes in `s` (placeholder filter: `xxxx…` has 1).
fn distinct(s: &[u8]) -> u32 {
    let mut seen = [0u64; 4];
    for &c in s {
        if let Some(w) = seen.get_mut(usize::from(c >> 6)) {
            *w |= 1u64 << (c & 63);
        }
    }
    seen.iter().map(|w| w.count_ones()).sum()
}

/// Looks random enough to be a credential rather than a placeholder or a
/// word: enough distinct characters and a mix of classes.
fn looks_random(s: &[u8], min_distinct: u32) -> bool {
    if distinct(s) < min_distinct {
        return false;
    }
    let digits = s.iter().any(|c| c.is_ascii_digit());
    let upper = s.iter().any(|c| c.is_ascii_uppercase());
    let lower = s.iter().any(|c| c.is_ascii_lowercase());
    (digits as u8) + (upper as u8) + (lower as u8) >= 2
}

/// Case-insensitive: does the ASCII window `[from, to)` contain any keyword?
fn context_has(b: &[u8], from: usize, to: usize, words: &[&[u8]]) -> bool {
    let w = match b.get(from..to.min(b.len())) {
        Some(w) => w,
        None => return false,
    };
    words
        .iter()
        .any(|k| k.len() <= w.len() && w.windows(k.len()).any(|win| win.eq_ignore_ascii_case(k)))
}

// ---------------------------------------------------------------------------
// the scanner

/// First bytes of the secret prefixes (`sk-`, `rk_`, `AKIA`, `gh?_`, `glpat-`,
/// `xox`, `hf_`, `hooks.`/`http`, `api_org_`, `eyJ`).
#[allow(clippy::indexing_slicing)] // const loop over a short literal
const SECRET_START: [bool; 256] = {
    let mut t = [false; 256];
    let s = b"srAgxhae";
    let mut i = 0;
    while i < s.len() {
        t[s[i] as usize] = true;
        i += 1;
    }
    t
};

/// IPv6 only when a short hex run is followed by ':'.
fn maybe_ipv6(b: &[u8], i: usize) -> Option<Match> {
    if at(b, i) == b':' && at(b, i + 1) == b':' {
        return ipv6_at(b, i);
    }
    let h = run_len(b, i, 5, |c| c.is_ascii_hexdigit());
    if (1..=4).contains(&h) && at(b, i + h) == b':' {
        return ipv6_at(b, i);
    }
    None
}

fn scan(text: &str, out: &mut Vec<Match>) {
    let b = text.as_bytes();
    let n = b.len();
    let has_colon = b.contains(&b':');
    let mut i = 0usize;
    // Positions before `skip_to` are inside a token already matched.
    let mut skip_to = 0usize;
    while i < n {
        let c = at(b, i);
        if !is_word(c) {
            if c == b'@' {
                if let Some((s, e)) = email_at(b, i) {
                    out.push(Match {
                        entity: Entity::Email,
                        start: s,
                        end: e,
                    });
                    i = e.max(i + 1);
                    skip_to = i;
                    continue;
                }
            } else if i >= skip_to && (i == 0 || !is_word(at(b, i - 1))) {
                let found = match c {
                    b'+' | b'(' => number_at(b, i),
                    b'-' => pem_at(b, i),
                    b':' if has_colon => maybe_ipv6(b, i),
                    _ => None,
                };
                if let Some(m) = found {
                    let e = m.end.max(i + 1);
                    out.push(m);
                    i = e;
                    skip_to = e;
                    continue;
                }
                if matches!(c, b'+' | b'(') {
                    // a number that is not valid as a whole is not searched
                    // for a valid-looking part ("+44 20 232 62")
                    skip_to = number_run_end(b, i);
                }
            }
            i += 1;
            continue;
        }
        // a word byte: a token can only start here at a boundary
        if i >= skip_to && (i == 0 || !is_word(at(b, i - 1))) {
            let found = match c {
                b'0'..=b'9' => {
                    let m =
                        number_at(b, i).or_else(|| if has_colon { maybe_ipv6(b, i) } else { None });
                    if m.is_none() {
                        skip_to = number_run_end(b, i);
                    }
                    m
                }
                b'a'..=b'z' | b'A'..=b'Z' => {
                    let s = if SECRET_START.get(usize::from(c)).copied().unwrap_or(false) {
                        secret_at(b, i)
                    } else {
                        None
                    };
                    if s.is_some() {
                        s
                    } else if at(b, i + 2).is_ascii_digit() && at(b, i + 3).is_ascii_digit() {
                        let m =
                            iban_at(b, i)
                                .or_else(|| if has_colon { maybe_ipv6(b, i) } else { None });
                        if m.is_none() {
                            // an invalid IBAN is not searched for a phone
                            skip_to = iban_run_end(b, i);
                        }
                        m
                    } else if has_colon && c.is_ascii_hexdigit() {
                        maybe_ipv6(b, i)
                    } else {
                        None
                    }
                }
                _ => None,
            };
            if let Some(m) = found {
                let e = m.end.max(i + 1);
                out.push(m);
                i = e;
                skip_to = e;
                continue;
            }
        }
        // skip the rest of the word
        let rest = b.get(i..).unwrap_or(&[]);
        i += rest.iter().position(|&d| !is_word(d)).unwrap_or(rest.len());
    }
}

/// End of the run of digits and number separators (space, `-`, `.`, `/`,
/// parentheses, `+`) starting at `i`; a separator counts only when a digit
/// or `(` follows it.
fn number_run_end(b: &[u8], i: usize) -> usize {
    let mut p = i;
    loop {
        let c = at(b, p);
        let sep_then_digit = matches!(c, b' ' | b'-' | b'.' | b'/' | b'(' | b')')
            && (at(b, p + 1).is_ascii_digit() || at(b, p + 1) == b'(');
        if c.is_ascii_digit() || (c == b'+' && p == i) || sep_then_digit || c == b')' {
            p += 1;
        } else {
            break;
        }
        if p >= b.len() {
            break;
        }
    }
    p
}

// --- email ------------------------------------------------------------------

fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-' | b'\'')
}

fn email_at(b: &[u8], at_pos: usize) -> Option<(usize, usize)> {
    // local part, leftwards
    let mut s = at_pos;
    let mut k = 0;
    while s > 0 && k < 64 {
        let c = at(b, s - 1);
        if !is_local(c) {
            break;
        }
        s -= 1;
        k += 1;
    }
    while s < at_pos && matches!(at(b, s), b'.' | b'\'' | b'-') {
        s += 1;
    }
    if s == at_pos || at(b, at_pos - 1) == b'.' {
        return None;
    }
    // domain, rightwards
    let d0 = at_pos + 1;
    let mut e = d0;
    while e < b.len() && e - d0 < 253 {
        let c = at(b, e);
        if c.is_ascii_alphanumeric() || c == b'-' || c == b'.' {
            e += 1;
        } else {
            break;
        }
    }
    while e > d0 && matches!(at(b, e - 1), b'.' | b'-') {
        e -= 1;
    }
    let dom = b.get(d0..e)?;
    let last_dot = dom.iter().rposition(|&c| c == b'.')?;
    let tld = dom.get(last_dot + 1..)?;
    if tld.len() < 2 || !tld.iter().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    if dom.first() == Some(&b'.') || dom.windows(2).any(|w| w == b"..") {
        return None;
    }
    Some((s, e))
}

// --- numbers: cards, SSNs, phones, IPv4 --------------------------------------

const PHONE_CONTEXT: &[&[u8]] = &[
    b"phone",
    b"tel",
    b"mobile",
    b"cell",
    b"fax",
    b"desk",
    b"office",
    b"call",
    b"answering",
    b"text me",
    b"whatsapp",
    b"sms",
    b"messages to",
    b"registered",
    b"contact",
    b"reach",
    b"landline",
    b"hotline",
    b"dial",
    b"ring",
    b"telefon",
    b"t\xc3\xa9l",
    b"handy",
    b"ph:",
    b"ph.",
    b"mob",
    b"numero",
    b"n\xc3\xbamero",
    b"nummer",
];

const SSN_CONTEXT: &[&[u8]] = &[
    b"ssn",
    b"social security",
    b"social sec",
    b"ss#",
    b"ss #",
    b"tax id",
    b"itin",
];

struct NumSpan {
    start: usize,
    end: usize,
    plus: bool,
    paren: bool,
    groups: [u8; 12],
    ngroups: usize,
    seps: [u8; 12],
    digits: [u8; 24],
    ndigits: usize,
    ext: bool,
}

impl NumSpan {
    fn group(&self, k: usize) -> usize {
        usize::from(self.groups.get(k).copied().unwrap_or(0))
    }
    fn digits(&self) -> &[u8] {
        self.digits.get(..self.ndigits).unwrap_or(&[])
    }
    fn shape(&self) -> &[u8] {
        self.groups.get(..self.ngroups).unwrap_or(&[])
    }
    fn seps(&self) -> &[u8] {
        self.seps
            .get(..self.ngroups.saturating_sub(1))
            .unwrap_or(&[])
    }
    fn first_digit(&self) -> u8 {
        self.digits.first().copied().unwrap_or(0)
    }
    fn uniform_sep(&self, allowed: &[u8]) -> bool {
        let s = self.seps();
        match s.first() {
            None => true,
            Some(f) => allowed.contains(f) && s.iter().all(|c| c == f),
        }
    }
}

/// Parses a run like `+44 (0)20 7946-0958`, `4111 1111 1111 1111`,
/// `192.168.0.1`.
fn parse_number(b: &[u8], i: usize) -> Option<NumSpan> {
    let mut sp = NumSpan {
        start: i,
        end: i,
        plus: false,
        paren: false,
        groups: [0; 12],
        ngroups: 0,
        seps: [0; 12],
        digits: [0; 24],
        ndigits: 0,
        ext: false,
    };
    let mut p = i;
    if at(b, p) == b'+' {
        sp.plus = true;
        p += 1;
    }
    loop {
        let mut opened = false;
        if at(b, p) == b'(' {
            opened = true;
            sp.paren = true;
            p += 1;
        }
        let g = run_len(b, p, 20, |c| c.is_ascii_digit());
        if g == 0 {
            if sp.ngroups == 0 {
                return None;
            }
            break;
        }
        if sp.ngroups >= sp.groups.len() {
            return None;
        }
        for k in 0..g {
            let d = at(b, p + k);
            let slot = sp.digits.get_mut(sp.ndigits)?;
            *slot = d;
            sp.ndigits += 1;
        }
        if let Some(slot) = sp.groups.get_mut(sp.ngroups) {
            *slot = g as u8;
        }
        sp.ngroups += 1;
        p += g;
        sp.end = p;
        if opened {
            if at(b, p) != b')' {
                return None;
            }
            p += 1;
            sp.end = p;
        }
        // separator
        let mut q = p;
        let mut sep = at(b, q);
        if matches!(sep, b' ' | b'-' | b'.' | b'/') {
            q += 1;
            // "(0) 20" / ") 555"
        } else if opened || at(b, q) == b'(' {
            sep = b' ';
        } else {
            break;
        }
        let nx = at(b, q);
        if nx.is_ascii_digit() || (nx == b'(' && at(b, q + 1).is_ascii_digit()) {
            if let Some(slot) = sp.seps.get_mut(sp.ngroups - 1) {
                *slot = sep;
            }
            p = q;
        } else {
            break;
        }
    }
    // extension: x123 / ext. 123
    let mut q = sp.end;
    if at(b, q) == b'x' && at(b, q + 1).is_ascii_digit() {
        q += 1;
        let g = run_len(b, q, 6, |c| c.is_ascii_digit());
        sp.end = q + g;
        sp.ext = true;
    }
    // right boundary: not glued to letters or more digits
    let nx = at(b, sp.end);
    if nx.is_ascii_alphanumeric() || nx == b'_' || nx == b'@' {
        return None;
    }
    // "1.5" followed by more dotted parts is handled by groups; a trailing
    // ".5" after the end means a decimal we cut: reject.
    if at(b, sp.end) == b'.' && at(b, sp.end + 1).is_ascii_digit() {
        return None;
    }
    Some(sp)
}

fn number_at(b: &[u8], i: usize) -> Option<Match> {
    // not glued to a preceding '.', '-', digit-ish token (e.g. "v1.2.3")
    if i > 0 {
        let p = at(b, i - 1);
        if p == b'.' || p == b'-' || p == b'/' || p == b'$' || p == b'#' || p == b'+' {
            return None;
        }
    }
    let sp = parse_number(b, i)?;
    let nd = sp.ndigits;
    let m = |entity| {
        Some(Match {
            entity,
            start: sp.start,
            end: sp.end,
        })
    };
    if !sp.plus && !sp.paren && !sp.ext {
        // IPv4
        if sp.ngroups == 4 && sp.uniform_sep(b".") && sp.seps().first() == Some(&b'.') {
            if ipv4_ok(&sp) {
                return m(Entity::IpAddress);
            }
            return None;
        }
        // payment card
        if (12..=19).contains(&nd) && sp.uniform_sep(b" -") && card_ok(sp.digits()) {
            return m(Entity::CreditCard);
        }
        // SSN
        if nd == 9 && ssn_ok(sp.digits()) {
            let shape = sp.shape();
            if shape == [3, 2, 4] && sp.uniform_sep(b"- ") {
                return m(Entity::UsSsn);
            }
            if shape == [9] && context_has(b, i.saturating_sub(40), i, SSN_CONTEXT) {
                return m(Entity::UsSsn);
            }
        }
    }
    phone_ok(b, &sp).then_some(Match {
        entity: Entity::Phone,
        start: sp.start,
        end: sp.end,
    })
}

fn ipv4_ok(sp: &NumSpan) -> bool {
    let d = sp.digits();
    let mut off = 0usize;
    for k in 0..4 {
        let g = sp.group(k);
        if g == 0 || g > 3 {
            return false;
        }
        let part = match d.get(off..off + g) {
            Some(p) => p,
            None => return false,
        };
        let v = part.iter().fold(0u32, |a, c| a * 10 + u32::from(c - b'0'));
        if v > 255 || (g > 1 && part.first() == Some(&b'0')) {
            return false;
        }
        off += g;
    }
    true
}

fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, c) in d.iter().rev().enumerate() {
        let mut v = u32::from(c.wrapping_sub(b'0'));
        if v > 9 {
            return false;
        }
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

fn prefix_num(d: &[u8], n: usize) -> u32 {
    d.iter()
        .take(n)
        .fold(0u32, |a, c| a * 10 + u32::from(c.wrapping_sub(b'0') % 10))
}

/// Known brand ranges and lengths, then Luhn.
fn card_ok(d: &[u8]) -> bool {
    let len = d.len();
    let p1 = prefix_num(d, 1);
    let p2 = prefix_num(d, 2);
    let p3 = prefix_num(d, 3);
    let p4 = prefix_num(d, 4);
    let p6 = prefix_num(d, 6);
    let brand = match p1 {
        4 => matches!(len, 13 | 16 | 19), // Visa
        5 => {
            ((51..=55).contains(&p2) && len == 16)
                || (p2 == 50 || p2 >= 56) && (12..=19).contains(&len)
        } // MC, Maestro
        2 => {
            // MC 2-series, Mir; old 15-digit JCB
            (len == 16 && ((2221..=2720).contains(&p4) || (2200..=2204).contains(&p4)))
                || (p4 == 2131 && len == 15)
        }
        3 => {
            ((p2 == 34 || p2 == 37) && len == 15)                        // Amex
            || (((300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39) && (14..=19).contains(&len)) // Diners
            || (p2 == 35 && (16..=19).contains(&len))
        } // JCB
        6 => {
            (p4 == 6011
                || (644..=649).contains(&p3)
                || p2 == 65
                || (622126..=622925).contains(&p6)
                || p2 == 62
                || p2 == 60
                || p2 == 63
                || p2 == 67
                || p2 == 69
                || p2 == 66
                || p2 == 68
                || p2 == 64
                || p2 == 61)
                && (12..=19).contains(&len)
        } // Discover, UnionPay, Maestro (6x), RuPay…
        1 => p4 == 1800 && len == 15, // JCB (old)
        _ => false,
    };
    brand && luhn(d)
}

fn ssn_ok(d: &[u8]) -> bool {
    let area = prefix_num(d, 3);
    let group = prefix_num(d.get(3..).unwrap_or(&[]), 2);
    let serial = prefix_num(d.get(5..).unwrap_or(&[]), 4);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
        // well-known invalid/advertising numbers
        && !(area == 123 && group == 45 && serial == 6789)
        && !(area == 78 && group == 5 && serial == 1120)
}

/// A phone context word within 40 bytes before or 12 bytes after the span.
fn phone_context(b: &[u8], sp: &NumSpan) -> bool {
    let before = sp.start.saturating_sub(40);
    let after = sp.end.saturating_add(12).min(b.len());
    context_has(b, before, sp.start, PHONE_CONTEXT)
        || context_has(
            b,
            sp.end,
            after,
            &[b"office", b"fax", b"mobile", b"phone", b"cell", b"tel"],
        )
}

/// North American Numbering Plan: `d` is area code + exchange + line (10
/// digits). The area code is NXX (N = 2–9) and not an N11 service code;
/// the exchange must be NXX too unless the number is marked as a phone
/// (`marked`: a context word, a `+1`/`1-` prefix or an extension).
fn nanp_ok(d: &[u8], marked: bool) -> bool {
    if d.len() != 10 {
        return false;
    }
    let area = prefix_num(d, 3);
    let exch = prefix_num(d.get(3..).unwrap_or(&[]), 3);
    let nxx = |v: u32| v >= 200 && v % 100 != 11;
    nxx(area) && (marked || nxx(exch))
}

/// International numbers (`+` and the country calling code): national
/// significant number lengths per country calling code (ITU-T E.164
/// assignments; common countries exact, other assigned codes 6–12 digits).
/// Unassigned codes are not phone numbers.
fn country_nsn(d: &[u8]) -> Option<(usize, usize, usize)> {
    // (code, min, max)
    const ONE: &[(u32, usize, usize)] = &[(1, 10, 10), (7, 10, 10)];
    const TWO: &[(u32, usize, usize)] = &[
        (20, 8, 10),
        (27, 9, 9),
        (30, 10, 10),
        (31, 9, 9),
        (32, 8, 9),
        (33, 9, 9),
        (34, 9, 9),
        (36, 8, 9),
        (39, 6, 11),
        (40, 9, 9),
        (41, 9, 9),
        (43, 4, 13),
        (44, 9, 10),
        (45, 8, 8),
        (46, 7, 13),
        (47, 5, 8),
        (48, 9, 9),
        (49, 6, 13),
        (51, 8, 9),
        (52, 10, 10),
        (53, 6, 8),
        (54, 10, 11),
        (55, 10, 11),
        (56, 9, 9),
        (57, 8, 10),
        (58, 10, 10),
        (60, 7, 10),
        (61, 9, 9),
        (62, 7, 12),
        (63, 8, 10),
        (64, 8, 10),
        (65, 8, 8),
        (66, 8, 9),
        (81, 9, 10),
        (82, 8, 11),
        (84, 9, 10),
        (86, 7, 12),
        (90, 10, 10),
        (91, 10, 10),
        (92, 9, 10),
        (93, 9, 9),
        (94, 9, 9),
        (95, 7, 10),
        (98, 10, 10),
    ];
    const THREE: &[(u32, usize, usize)] = &[
        (351, 9, 9),
        (352, 4, 11),
        (353, 7, 9),
        (354, 7, 9),
        (355, 8, 9),
        (356, 8, 8),
        (357, 8, 8),
        (358, 5, 12),
        (359, 7, 9),
        (370, 8, 8),
        (371, 8, 8),
        (372, 7, 8),
        (380, 9, 9),
        (381, 8, 9),
        (385, 8, 9),
        (386, 8, 8),
        (420, 9, 9),
        (421, 9, 9),
        (852, 8, 8),
        (886, 8, 9),
        (966, 9, 9),
        (971, 8, 9),
        (972, 8, 9),
    ];
    let c1 = prefix_num(d, 1);
    let c2 = prefix_num(d, 2);
    let c3 = prefix_num(d, 3);
    if let Some(&(_, lo, hi)) = ONE.iter().find(|(c, _, _)| *c == c1) {
        return Some((1, lo, hi));
    }
    if let Some(&(_, lo, hi)) = TWO.iter().find(|(c, _, _)| *c == c2) {
        return Some((2, lo, hi));
    }
    if let Some(&(_, lo, hi)) = THREE.iter().find(|(c, _, _)| *c == c3) {
        return Some((3, lo, hi));
    }
    // other assigned 3-digit codes (zones 2, 3, 4, 5, 6, 8, 9)
    let assigned = matches!(c3,
        211..=213 | 216 | 218 | 220..=258 | 260..=269 | 290 | 291 | 297..=299
        | 350 | 373..=378 | 382 | 383 | 387 | 389 | 423 | 500..=509 | 590..=599
        | 670 | 672..=692 | 800 | 808 | 850 | 853 | 855 | 856 | 870 | 878 | 880..=883
        | 888 | 960..=965 | 967 | 968 | 970 | 973..=977 | 979 | 992..=996 | 998);
    assigned.then_some((3, 6, 12))
}

fn intl_ok(d: &[u8], marked: bool) -> bool {
    let Some((cl, lo, hi)) = country_nsn(d) else {
        return false;
    };
    let nsn = d.get(cl..).unwrap_or(&[]);
    if cl == 1 && prefix_num(d, 1) == 1 {
        return nanp_ok(nsn, marked);
    }
    let len = nsn.len();
    // "+44 (0)20 …": a trunk 0 written after the country code
    let len_ok = |l: usize| (lo..=hi).contains(&l);
    len_ok(len) || (nsn.first() == Some(&b'0') && len_ok(len.saturating_sub(1)))
}

fn phone_ok(b: &[u8], sp: &NumSpan) -> bool {
    let nd = sp.ndigits;
    if !(7..=15).contains(&nd) {
        return false;
    }
    if sp.seps().contains(&b'/') && !(sp.first_digit() == b'0' && sp.ngroups == 2) {
        return false;
    }
    // dates and times look like grouped numbers
    let shape = sp.shape();
    if !sp.plus && looks_like_date(sp) {
        return false;
    }
    let d = sp.digits();
    if sp.plus {
        return intl_ok(d, true);
    }
    if shape == [3, 2, 4] {
        return false; // SSN-shaped
    }
    // NANP
    if shape == [3, 3, 4] {
        // "030 123 4567": trunk-prefixed, space-grouped (not NANP style)
        if sp.first_digit() == b'0' && !sp.paren && sp.uniform_sep(b" ") {
            return true;
        }
        return nanp_ok(d, sp.ext || phone_context(b, sp));
    }
    if shape == [1, 3, 3, 4] && sp.first_digit() == b'1' {
        return nanp_ok(d.get(1..).unwrap_or(&[]), true);
    }
    // international prefix 00 / 011
    if shape == [3, 3, 3, 4] && d.starts_with(b"00") {
        return intl_ok(d.get(2..).unwrap_or(&[]), true);
    }
    // European trunk-prefixed, grouped
    if sp.first_digit() == b'0' && (9..=12).contains(&nd) && sp.ngroups >= 2 {
        return true;
    }
    // anything else: needs a context word nearby
    if !phone_context(b, sp) {
        return false;
    }
    sp.ngroups >= 2 || (9..=12).contains(&nd)
}

fn looks_like_date(sp: &NumSpan) -> bool {
    let shape = sp.shape();
    let dateish = matches!(
        shape,
        [4, 2, 2] | [2, 2, 4] | [1, 2, 4] | [2, 1, 4] | [1, 1, 4]
    );
    dateish && sp.uniform_sep(b"-./")
}

// --- IBAN --------------------------------------------------------------------

fn iban_at(b: &[u8], i: usize) -> Option<Match> {
    let c0 = at(b, i);
    let c1 = at(b, i + 1);
    if !(c0.is_ascii_alphabetic() && c1.is_ascii_alphabetic()) {
        return None;
    }
    if !(at(b, i + 2).is_ascii_digit() && at(b, i + 3).is_ascii_digit()) {
        return None;
    }
    // consistent case for the country code
    if c0.is_ascii_uppercase() != c1.is_ascii_uppercase() {
        return None;
    }
    // collect alnum, allowing single spaces between groups; each space is
    // a place where the IBAN may also end ("… 9420 passed")
    let mut buf = [0u8; 34];
    let mut n = 0usize;
    let mut p = i;
    let mut end = i;
    let mut cuts: [(usize, usize); 9] = [(0, 0); 9];
    let mut ncuts = 0usize;
    while n < 34 {
        let c = at(b, p);
        if c.is_ascii_alphanumeric() {
            if let Some(s) = buf.get_mut(n) {
                *s = c.to_ascii_uppercase();
            }
            n += 1;
            p += 1;
            end = p;
        } else if c == b' ' && at(b, p + 1).is_ascii_alphanumeric() && n >= 4 && n.is_multiple_of(4)
        {
            if let Some(slot) = cuts.get_mut(ncuts) {
                *slot = (n, end);
                ncuts += 1;
            }
            p += 1;
        } else {
            break;
        }
    }
    // the whole run first, then each group boundary from the last
    let whole = (!is_word(at(b, end))).then_some((n, end));
    let valid = |(n, _): (usize, usize)| -> bool {
        let Some(s) = buf.get(..n) else {
            return false;
        };
        // the country's IBAN length (SWIFT IBAN registry), then mod 97
        (15..=34).contains(&n) && s.get(..2).and_then(iban_length) == Some(n) && iban_mod97(s)
    };
    let (_, end) = whole
        .into_iter()
        .chain(cuts.get(..ncuts).unwrap_or(&[]).iter().rev().copied())
        .find(|c| valid(*c))?;
    Some(Match {
        entity: Entity::Iban,
        start: i,
        end,
    })
}

/// End of an IBAN-shaped run at `i`: alphanumerics, and single spaces
/// followed by a digit.
fn iban_run_end(b: &[u8], i: usize) -> usize {
    let mut p = i;
    while p < b.len() {
        let c = at(b, p);
        if c.is_ascii_alphanumeric() || (c == b' ' && at(b, p + 1).is_ascii_digit()) {
            p += 1;
        } else {
            break;
        }
    }
    p
}

/// IBAN length per country code (SWIFT IBAN registry).
fn iban_length(cc: &[u8]) -> Option<usize> {
    const T: &[(&[u8; 2], u8)] = &[
        (b"AD", 24),
        (b"AE", 23),
        (b"AL", 28),
        (b"AT", 20),
        (b"AZ", 28),
        (b"BA", 20),
        (b"BE", 16),
        (b"BG", 22),
        (b"BH", 22),
        (b"BI", 27),
        (b"BR", 29),
        (b"BY", 28),
        (b"CH", 21),
        (b"CR", 22),
        (b"CY", 28),
        (b"CZ", 24),
        (b"DE", 22),
        (b"DJ", 27),
        (b"DK", 18),
        (b"DO", 28),
        (b"EE", 20),
        (b"EG", 29),
        (b"ES", 24),
        (b"FI", 18),
        (b"FK", 18),
        (b"FO", 18),
        (b"FR", 27),
        (b"GB", 22),
        (b"GE", 22),
        (b"GI", 23),
        (b"GL", 18),
        (b"GR", 27),
        (b"GT", 28),
        (b"HN", 28),
        (b"HR", 21),
        (b"HU", 28),
        (b"IE", 22),
        (b"IL", 23),
        (b"IQ", 23),
        (b"IS", 26),
        (b"IT", 27),
        (b"JO", 30),
        (b"KW", 30),
        (b"KZ", 20),
        (b"LB", 28),
        (b"LC", 32),
        (b"LI", 21),
        (b"LT", 20),
        (b"LU", 20),
        (b"LV", 21),
        (b"LY", 25),
        (b"MC", 27),
        (b"MD", 24),
        (b"ME", 22),
        (b"MK", 19),
        (b"MN", 20),
        (b"MR", 27),
        (b"MT", 31),
        (b"MU", 30),
        (b"NI", 28),
        (b"NL", 18),
        (b"NO", 15),
        (b"OM", 23),
        (b"PK", 24),
        (b"PL", 28),
        (b"PS", 29),
        (b"PT", 25),
        (b"QA", 29),
        (b"RO", 24),
        (b"RS", 22),
        (b"RU", 33),
        (b"SA", 24),
        (b"SC", 31),
        (b"SD", 18),
        (b"SE", 24),
        (b"SI", 19),
        (b"SK", 24),
        (b"SM", 27),
        (b"SO", 23),
        (b"ST", 25),
        (b"SV", 28),
        (b"TL", 23),
        (b"TN", 24),
        (b"TR", 26),
        (b"UA", 29),
        (b"VA", 22),
        (b"VG", 24),
        (b"XK", 20),
        (b"YE", 30),
    ];
    T.iter()
        .find(|(c, _)| c.as_slice() == cc)
        .map(|(_, n)| usize::from(*n))
}

fn iban_mod97(s: &[u8]) -> bool {
    let mut rem: u32 = 0;
    let (head, tail) = (s.get(..4).unwrap_or(&[]), s.get(4..).unwrap_or(&[]));
    for &c in tail.iter().chain(head.iter()) {
        if c.is_ascii_digit() {
            rem = (rem * 10 + u32::from(c - b'0')) % 97;
        } else if c.is_ascii_uppercase() {
            let v = u32::from(c - b'A') + 10;
            rem = (rem * 100 + v) % 97;
        } else {
            return false;
        }
    }
    rem == 1
}

// --- IPv6 --------------------------------------------------------------------

fn ipv6_at(b: &[u8], i: usize) -> Option<Match> {
    // hex groups separated by ':' with at most one '::'
    let mut p = i;
    let mut groups = 0;
    let mut double = false;
    let mut end = i;
    if at(b, p) == b':' {
        if at(b, p + 1) != b':' {
            return None;
        }
        double = true;
        p += 2;
        end = p;
    }
    loop {
        let g = run_len(b, p, 5, |c| c.is_ascii_hexdigit());
        if g == 0 || g > 4 {
            break;
        }
        groups += 1;
        p += g;
        end = p;
        if at(b, p) == b':' {
            if at(b, p + 1) == b':' {
                if double {
                    break;
                }
                double = true;
                p += 2;
                end = p;
            } else if at(b, p + 1).is_ascii_hexdigit() {
                p += 1;
            } else {
                break;
            }
        } else {
            break;
        }
        if groups > 8 {
            return None;
        }
    }
    if is_word(at(b, end)) || at(b, end) == b':' {
        return None;
    }
    let ok = (groups == 8 && !double) || (double && (2..=7).contains(&groups));
    if !ok {
        return None;
    }
    // avoid times like 12:30 (two groups) and words: require a ':' count and
    // at least one digit or a-f mix of length > 1
    let span = b.get(i..end)?;
    let colons = span.iter().filter(|&&c| c == b':').count();
    if colons < 3 {
        return None;
    }
    Some(Match {
        entity: Entity::IpAddress,
        start: i,
        end,
    })
}

// --- secrets -----------------------------------------------------------------

fn secret_at(b: &[u8], i: usize) -> Option<Match> {
    let c = at(b, i);
    let mk = |entity, end| {
        Some(Match {
            entity,
            start: i,
            end,
        })
    };
    match c {
        b's' | b'r' => {
            if starts_with_at(b, i, b"sk-ant-") {
                // sk-ant-api03-… / sk-ant-admin01-…
                let p = i + 7;
                let k = run_len(b, p, 16, |c| c.is_ascii_alphanumeric());
                if at(b, p + k) != b'-' || k == 0 {
                    return None;
                }
                let body = p + k + 1;
                let n = run_len(b, body, MAX_TOKEN_LEN, is_token);
                if n >= 32 && !is_token(at(b, body + n)) && looks_random(b.get(body..body + n)?, 12)
                {
                    return mk(Entity::AnthropicKey, body + n);
                }
                return None;
            }
            if starts_with_at(b, i, b"sk-") {
                let p = i + 3;
                // project / service-account / admin prefixes
                for pre in [&b"proj-"[..], b"svcacct-", b"admin-", b"None-"] {
                    if starts_with_at(b, p, pre) {
                        let body = p + pre.len();
                        let n = run_len(b, body, MAX_TOKEN_LEN, is_token);
                        if n >= 40
                            && !is_token(at(b, body + n))
                            && looks_random(b.get(body..body + n)?, 12)
                        {
                            return mk(Entity::OpenaiKey, body + n);
                        }
                        return None;
                    }
                }
                let n = run_len(b, p, MAX_TOKEN_LEN, |c| c.is_ascii_alphanumeric());
                if (32..=200).contains(&n)
                    && !is_token(at(b, p + n))
                    && looks_random(b.get(p..p + n)?, 12)
                {
                    return mk(Entity::OpenaiKey, p + n);
                }
                return None;
            }
            // Stripe
            if (starts_with_at(b, i, b"sk_") || starts_with_at(b, i, b"rk_"))
                && (starts_with_at(b, i + 3, b"live_")
                    || starts_with_at(b, i + 3, b"test_")
                    || starts_with_at(b, i + 3, b"prod_"))
            {
                let p = i + 8;
                let n = run_len(b, p, 200, |c| c.is_ascii_alphanumeric());
                if n >= 10 && !is_word(at(b, p + n)) && looks_random(b.get(p..p + n)?, 6) {
                    return mk(Entity::StripeKey, p + n);
                }
            }
            None
        }
        b'A' => {
            if starts_with_at(b, i, b"AIza") {
                let p = i + 4;
                let n = run_len(b, p, 40, is_token);
                if n == 35 && !is_token(at(b, p + n)) && looks_random(b.get(p..p + n)?, 10) {
                    return mk(Entity::GoogleApiKey, p + n);
                }
                return None;
            }
            let aws = [&b"AKIA"[..], b"ASIA", b"ABIA", b"ACCA"]
                .iter()
                .any(|p| starts_with_at(b, i, p))
                || (starts_with_at(b, i, b"A3T") && at(b, i + 3).is_ascii_alphanumeric());
            if aws {
                let p = i + 4;
                let n = run_len(b, p, 17, |c| {
                    c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c) || c.is_ascii_digit()
                });
                if n == 16 && !is_word(at(b, p + n)) {
                    let body = b.get(p..p + n)?;
                    if body.ends_with(b"EXAMPLE") || distinct(body) < 6 {
                        return None;
                    }
                    return mk(Entity::AwsAccessKey, p + n);
                }
            }
            None
        }
        b'g' => {
            if starts_with_at(b, i, b"gh")
                && matches!(at(b, i + 2), b'p' | b'o' | b'u' | b's' | b'r')
                && at(b, i + 3) == b'_'
            {
                let p = i + 4;
                let n = run_len(b, p, 256, |c| c.is_ascii_alphanumeric());
                if (36..=251).contains(&n)
                    && !is_word(at(b, p + n))
                    && looks_random(b.get(p..p + n)?, 10)
                {
                    return mk(Entity::GithubToken, p + n);
                }
                return None;
            }
            if starts_with_at(b, i, b"github_pat_") {
                let p = i + 11;
                let n = run_len(b, p, 256, is_word);
                if n >= 50 && !is_word(at(b, p + n)) && looks_random(b.get(p..p + n)?, 12) {
                    return mk(Entity::GithubToken, p + n);
                }
                return None;
            }
            if starts_with_at(b, i, b"glpat-") {
                let p = i + 6;
                let n = run_len(b, p, 300, |c| is_token(c) || c == b'.');
                let mut n2 = n;
                while n2 > 0 && at(b, p + n2 - 1) == b'.' {
                    n2 -= 1;
                }
                if n2 >= 20 && looks_random(b.get(p..p + n2)?, 10) {
                    return mk(Entity::GitlabToken, p + n2);
                }
            }
            None
        }
        b'x' => {
            if !(starts_with_at(b, i, b"xox") || starts_with_at(b, i, b"xapp-")) {
                return None;
            }
            let kind = at(b, i + 3);
            let p = if starts_with_at(b, i, b"xapp-") {
                i + 5
            } else if matches!(kind, b'b' | b'p' | b'a' | b'r' | b's' | b'o' | b'e')
                && (at(b, i + 4) == b'-' || (kind == b'e' && at(b, i + 4) == b'.'))
            {
                if at(b, i + 4) == b'.' {
                    // xoxe.xoxp-1-…
                    if !(starts_with_at(b, i + 5, b"xoxp-") || starts_with_at(b, i + 5, b"xoxb-")) {
                        return None;
                    }
                    i + 10
                } else {
                    i + 5
                }
            } else {
                return None;
            };
            let n = run_len(b, p, MAX_TOKEN_LEN, |c| {
                c.is_ascii_alphanumeric() || c == b'-'
            });
            let mut n2 = n;
            while n2 > 0 && at(b, p + n2 - 1) == b'-' {
                n2 -= 1;
            }
            let body = b.get(p..p + n2)?;
            if n2 < 14 || is_word(at(b, p + n)) {
                return None;
            }
            let mut long_digits = false;
            let mut long_seg = false;
            let mut last_len = 0;
            for seg in body.split(|&c| c == b'-') {
                if seg.len() >= 6 && seg.iter().all(|c| c.is_ascii_digit()) {
                    long_digits = true;
                }
                if seg.len() >= 40 {
                    long_seg = true;
                }
                last_len = seg.len();
            }
            let ok = (long_digits && last_len >= 8 && looks_random(body, 8))
                || (long_seg && looks_random(body, 16));
            if ok {
                return mk(Entity::SlackToken, p + n2);
            }
            None
        }
        b'h' => {
            if starts_with_at(b, i, b"hf_") {
                let p = i + 3;
                let n = run_len(b, p, 64, |c| c.is_ascii_alphanumeric());
                if (30..=40).contains(&n)
                    && !is_word(at(b, p + n))
                    && distinct(b.get(p..p + n)?) >= 10
                {
                    let body = b.get(p..p + n)?;
                    let up = body.iter().filter(|c| c.is_ascii_uppercase()).count();
                    let lo = body.iter().filter(|c| c.is_ascii_lowercase()).count();
                    if up >= 3 && lo >= 3 {
                        return mk(Entity::HuggingfaceToken, p + n);
                    }
                }
                return None;
            }
            slack_webhook_at(b, i)
        }
        b'a' => {
            if starts_with_at(b, i, b"api_org_") {
                let p = i + 8;
                let n = run_len(b, p, 64, |c| c.is_ascii_alphanumeric());
                if (30..=40).contains(&n)
                    && !is_word(at(b, p + n))
                    && looks_random(b.get(p..p + n)?, 10)
                {
                    let body = b.get(p..p + n)?;
                    let up = body.iter().filter(|c| c.is_ascii_uppercase()).count();
                    if up >= 3 {
                        return mk(Entity::HuggingfaceToken, p + n);
                    }
                }
            }
            None
        }
        b'e' => jwt_at(b, i),
        _ => None,
    }
}

fn slack_webhook_at(b: &[u8], i: usize) -> Option<Match> {
    let mut p = i;
    if starts_with_at(b, p, b"https://") {
        p += 8;
    } else if starts_with_at(b, p, b"http://") {
        p += 7;
    }
    if !starts_with_at(b, p, b"hooks.slack.com/") {
        return None;
    }
    p += 16;
    let kinds: [&[u8]; 3] = [b"services/", b"workflows/", b"triggers/"];
    let k = kinds.iter().find(|k| starts_with_at(b, p, k))?;
    p += k.len();
    let n = run_len(b, p, 200, |c| {
        c.is_ascii_alphanumeric() || c == b'/' || c == b'+'
    });
    if n >= 20 {
        return Some(Match {
            entity: Entity::SlackToken,
            start: i,
            end: p + n,
        });
    }
    None
}

fn is_jwt_seg(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'/' || c == b'\\'
}

fn jwt_at(b: &[u8], i: usize) -> Option<Match> {
    if !starts_with_at(b, i, b"ey") {
        return None;
    }
    let h = run_len(b, i, 4096, is_jwt_seg);
    if h < 17 || at(b, i + h) != b'.' {
        return None;
    }
    let p = i + h + 1;
    if !starts_with_at(b, p, b"ey") {
        return None;
    }
    let n = run_len(b, p, 16384, is_jwt_seg);
    if n < 17 {
        return None;
    }
    let mut end = p + n;
    if at(b, end) == b'.' {
        end += 1;
        let s = run_len(b, end, 4096, |c| is_jwt_seg(c) || c == b'+');
        end += s;
        end += run_len(b, end, 2, |c| c == b'=');
    }
    Some(Match {
        entity: Entity::Jwt,
        start: i,
        end,
    })
}

fn pem_at(b: &[u8], i: usize) -> Option<Match> {
    if !starts_with_at(b, i, b"-----BEGIN") {
        return None;
    }
    let p = i + 10;
    // header: "[ A-Z0-9_-]{0,100}PRIVATE KEY( BLOCK)?-----"
    let hdr = run_len(b, p, 120, |c| {
        c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, b' ' | b'_' | b'-')
    });
    let header = b.get(p..p + hdr)?;
    let pos = header.windows(11).position(|w| w == b"PRIVATE KEY")?;
    let mut q = p + pos + 11;
    if starts_with_at(b, q, b" BLOCK") {
        q += 6;
    }
    if !starts_with_at(b, q, b"-----") {
        return None;
    }
    q += 5;
    let body_start = q;
    // find "-----END" within the cap
    let limit = (i + MAX_PEM_LEN).min(b.len());
    let region = b.get(body_start..limit)?;
    if let Some(e) = region.windows(8).position(|w| w == b"-----END") {
        let body = region.get(..e)?;
        let payload = body.iter().filter(|c| !c.is_ascii_whitespace()).count();
        if payload < 20 {
            return None;
        }
        let mut end = body_start + e + 8;
        // through the closing "-----"
        let tail = b.get(end..limit).unwrap_or(&[]);
        if let Some(t) = tail.windows(5).take(80).position(|w| w == b"-----") {
            end += t + 5;
        }
        return Some(Match {
            entity: Entity::PrivateKey,
            start: i,
            end,
        });
    }
    // No END line (truncated paste): take the base64 body.
    let n = run_len(b, body_start, limit - body_start.min(limit), |c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'+' | b'/' | b'=' | b'\n' | b'\r' | b' ' | b':' | b'-' | b','
            )
    });
    if n >= 64 {
        return Some(Match {
            entity: Entity::PrivateKey,
            start: i,
            end: body_start + n,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<&'static str> {
        Detectors::all_enabled()
            .find(text)
            .iter()
            .map(|m| m.entity.name())
            .collect()
    }

    fn one(text: &str, want: &str) {
        let k = kinds(text);
        assert_eq!(k, vec![want], "{text:?}");
    }

    fn none(text: &str) {
        let k = kinds(text);
        assert!(k.is_empty(), "{text:?} gave {k:?}");
    }

    #[test]
    fn emails() {
        one("write to jane.doe+x@example.co.uk please", "email");
        one("UtaKortig@jourrapide.com", "email");
        none("user@localhost and @mention and a@b");
        none("foo@bar.c1");
    }

    #[test]
    fn cards() {
        one("card 4111 1111 1111 1111 ok", "credit_card");
        one("4111-1111-1111-1111", "credit_card");
        one("5555555555554444", "credit_card");
        one("2223003122003222", "credit_card"); // MC 2-series
        one("378282246310005", "credit_card"); // Amex
        one("6011111111111117", "credit_card");
        one("3530111333300000", "credit_card"); // JCB
        none("4111 1111 1111 1112"); // Luhn fails
        none("1234567890123456");
        none("order 9111111111111111");
    }

    #[test]
    fn ssn() {
        one("Here's my SSN: 460-89-9847", "us_ssn");
        one("ssn 460899847", "us_ssn");
        none("id 460899847");
        none("000-12-3456 and 666-12-3456 and 901-12-3456");
        none("123-00-4567");
    }

    #[test]
    fn phones() {
        one("call +1 415 555 2671", "phone");
        one("+14155552671", "phone");
        one("(415) 555-2671", "phone");
        one("415-555-2671", "phone");
        one("345-899-3560x4587", "phone");
        one("07700 900 123", "phone");
        one("03.93.92.16.85", "phone");
        one("+46 (0)8 928 571 38", "phone");
        one("Phone: 467 3395", "phone");
        one("Fax: 9498777106", "phone");
        none("in 2023-01-15 we sold 1 000 units");
        none("version 1.2.3 and 12:30");
        none("the total was 4 500 euros");
        none("order 1234567 shipped");
    }

    #[test]
    fn ibans() {
        one("My IBAN is GB82 WEST 1234 5698 7654 32", "iban");
        one("GB82WEST12345698765432", "iban");
        one("de89370400440532013000", "iban");
        none("GB82WEST12345698765433");
        none("AB12 is not an iban");
    }

    #[test]
    fn ips() {
        one("host 192.168.10.1 down", "ip_address");
        one("6e40:4041:c617:e898:c11:40d2:c669:2eb4", "ip_address");
        one("fe80::1ff:fe23:4567:890a", "ip_address");
        none("1.2.3 and 999.1.1.1 and 12:30:45");
    }

    #[test]
    fn secrets() {
        one("key 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", "openai_key");
        one(
            "sk-abcdefghij1234567890ABCDEFGHIJ1234567890abcdefgh",
            "openai_key",
        );
        one("sk-ant-api03-abc123xyz-456def789ghij-klmnopqrstuvwx-3456yza789bcde-1234fghijklmnopby56aaaogaopaaaabc123xyzAA", "anthropic_key");
        one("AWS_token = \"AKIALALEMEL33243OLIB\"", "aws_access_key");
        none("AKIAIOSFODNN7EXAMPLE");
        none("AKIAXXXXXXXXXXXXXXXX");
        one("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", "github_token");
        none("ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        one("glpat-Ab3dEf6hIj9kLm2nOp5q", "gitlab_token");
        one(
            "\"bot_token\": \"xoxb-781236542736-2364535789652-GkwFDQoHqzXDVsC6GzqYUypD\"",
            "slack_token",
        );
        none("xoxb-xxxxxxxxx-xxxxxxxxxx-xxxxxxxxxxxx");
        one(
            "https://hooks.slack.com/services/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",
            "slack_token",
        );
        one("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe_key");
        one("AIzaSyNHxIf32IQ1a1yjl3ZJIqKZqzLAK1XhDk-", "google_api_key");
        one(
            "--token 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",
            "huggingface_token",
        );
        none("(id)hf_requiredCharacteristicTypesForDisplayMetadata;");
        one("Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VybmFtZTpib2IifQ.HcfCW67Uda-0gz54ZWTqmtgJnZeNem0Q757eTa9EZuw", "jwt");
        one("-----BEGIN RSA PRIVATE KEY-----\nMIIEpQIBAAKCAQEAn6/O8li+SX4m98LLYt/PKSzEmQ++ZBD7Loh9P13f4yQ92EF3\n-----END RSA PRIVATE KEY-----\n", "private_key");
        none("-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----");
        none("ask-me-anything and task_live_demo and sk-llmgate-demo");
    }

    #[test]
    fn redact_text() {
        let d = Detectors::default();
        let (out, counts) = d
            .redact("mail bob@example.com or 4111 1111 1111 1111, ip 10.0.0.1")
            .unwrap();
        assert_eq!(
            out,
            "mail [REDACTED_EMAIL] or [REDACTED_CREDIT_CARD], ip 10.0.0.1"
        );
        assert_eq!(counts, vec![("email", 1), ("credit_card", 1)]);
        assert!(d.redact("nothing here").is_none());
    }

    #[test]
    fn no_panic_on_odd_input() {
        let d = Detectors::all_enabled();
        for s in [
            "",
            "@",
            "@@@",
            "a@",
            "@b.c",
            "+",
            "(",
            "((((",
            "-----BEGIN",
            "-----BEGIN PRIVATE KEY-----",
            "ey",
            "eyJ.eyJ.",
            "sk-",
            "xox",
            "xoxe.",
            "hooks.slack.com/services/",
            "AIza",
            "é@é.é",
            "1",
            "+1",
            "(1)",
            "9999999999999999999999999999",
            "::",
            ":::",
            "GB82",
            "\u{10FFFF}@x.io",
        ] {
            let _ = d.find(s);
            let _ = d.redact(s);
        }
        let big = "4".repeat(100_000) + &"@".repeat(1000) + &"a.".repeat(10_000);
        let _ = d.find(&big);
    }
}

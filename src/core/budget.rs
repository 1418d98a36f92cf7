//! Exact per-scope budgets (issue 4): request, token and dollar limits kept
//! in proxy-wasm shared data, shared by every worker, updated with
//! compare-and-swap and bounded retries.
//!
//! # Storage layout
//!
//! Counters live in a fixed set of pre-created bucket keys
//! `llmgate:budget:<i>` (`i` in `0..buckets`, default 64). A scope
//! (`key:<id>`, `tenant:<t>`, `user:<key id>:<user>`) hashes (FNV-1a) into one
//! bucket; a bucket holds a small JSON map `{"s":{"<scope>":{"m":[..],"d":[..],
//! "o":[..]}}}` of the scopes that hash into it, with one fixed window per
//! period the scope has a limit for (`m` minute, `d` day, `o` month), each
//! `[window index, requests, tokens used, tokens reserved, micro-USD used,
//! micro-USD reserved]`.
//!
//! Why buckets: the host has no create-if-absent (`set` on a missing key
//! succeeds whatever the CAS token), so a counter created on the request path
//! by two workers at once could lose an update. Every bucket key is created
//! once by [`Budgets::init`] at plugin start, before traffic; on the request
//! path every write is a CAS on an existing key, and dynamic scopes (end
//! users, tenants added by a reload) never need a new key. Windows that are
//! over are pruned from the whole bucket on every write, so a bucket holds only
//! the scopes active in their current windows (bounded further by
//! `max_scopes_per_bucket`).
//!
//! A bucket key that is missing on the request path is an anomaly (init did
//! not run, or ran with fewer buckets): it is treated as a shared-data failure
//! per the failure mode and never re-created there with a blind write, which
//! could clobber a concurrent creator's first update. Calling [`Budgets::init`]
//! again (e.g. on the next plugin start) repairs it. A corrupt bucket (value
//! that does not parse) is a failure for the request that meets it, and is
//! reset to empty with a CAS on the token just read, so the next requests work
//! again (its counts were already unreadable).
//!
//! # Exactness
//!
//! At every admission, for every limit of every scope,
//! `used + reserved + estimate ≤ limit` is checked and the estimate is added
//! to `reserved` in the same CAS write. So, in a window, the sum of the
//! estimates of admitted requests never exceeds the limit; real usage can
//! exceed it only by how much admitted requests used beyond their estimates.
//! Requests count at admission (`requests_per_minute` has nothing in flight).
//!
//! A reservation that is never settled nor released (the shell must call
//! [`Budgets::release`] when a request fails or the client goes away) stays
//! counted until its window ends. Settle after a window rolled over charges
//! the real usage to the current window (the old reservation went with its
//! window). Release keeps the request counted against `requests_per_minute`.
//!
//! # Failure mode
//!
//! Shared-data failures (host error, CAS retries exhausted, corrupt or
//! missing bucket, full bucket) follow [`FailureMode`]: `open` admits the
//! request without reserving in that bucket (`Reservation::store_failures`,
//! `Reservation::degraded`), `closed` refuses it with
//! [`DenialReason::StoreUnavailable`] (503) after rolling back what was
//! reserved. Settle/release failures are only reported.
//!
//! # Windows
//!
//! Fixed windows aligned to the Unix epoch, UTC: a minute is 60 s, a day is
//! 86,400 s, a month is a calendar month. A window whose index is at or past
//! the current one counts as current (so a clock stepping back a little does
//! not drop counts); an older one is reset.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::host::{Clock, SharedStore, StoreError};

/// Default number of bucket keys.
pub const DEFAULT_BUCKETS: u32 = 64;
/// Default number of CAS retries after a conflict.
pub const DEFAULT_CAS_RETRIES: u32 = 16;
/// Default cap on the scopes held by one bucket.
pub const DEFAULT_MAX_SCOPES_PER_BUCKET: usize = 2048;
/// Prefix of the bucket keys.
pub const BUCKET_KEY_PREFIX: &str = "llmgate:budget:";
/// Prefix of the per-key end-user bucket keys (`llmgate:users:<key>:<i>`).
pub const USER_BUCKET_KEY_PREFIX: &str = "llmgate:users:";
/// Default `max_users_per_key`.
pub const DEFAULT_MAX_USERS_PER_KEY: u32 = 1000;
/// End users per user bucket, about: a key with `max_users_per_key` M has
/// ceil(M / 128) user buckets (at most 1024).
const USERS_PER_BUCKET_TARGET: u32 = 128;
const MAX_USER_BUCKETS: u32 = 1024;

const MICROS_PER_USD: f64 = 1_000_000.0;
/// Largest accepted USD limit (keeps micro-USD far from `u64::MAX`).
const MAX_USD: f64 = 1.0e12;
const MINUTE_S: u64 = 60;
const DAY_S: u64 = 86_400;

// ---------------------------------------------------------------------------
// Failure mode and store failures (shared with the breaker)
// ---------------------------------------------------------------------------

/// What to do when shared data fails (unavailable, retries exhausted,
/// corrupt or missing value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Admit the request and count a failure.
    #[default]
    Open,
    /// Refuse the request (503) and count a failure.
    Closed,
}

pub use super::cas::StoreFailureKind;
use super::cas::{cas_loop, Cas, CasError};

/// A shared-data failure: which key, what kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFailure {
    pub key: String,
    pub kind: StoreFailureKind,
}

// ---------------------------------------------------------------------------
// Window arithmetic
// ---------------------------------------------------------------------------

/// A civil date (proleptic Gregorian, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: u64,
    /// 1..=12
    pub month: u64,
    /// 1..=31
    pub day: u64,
}

/// The civil date of `days` since 1970-01-01 (H. Hinnant's algorithm,
/// restricted to non-negative days).
pub fn civil_from_days(days: u64) -> Civil {
    let z = days.saturating_add(719_468);
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = doe
        .saturating_sub(doe / 1_460)
        .saturating_add(doe / 36_524)
        .saturating_sub(doe / 146_096)
        / 365; // [0, 399]
    let doy = doe.saturating_sub(
        yoe.saturating_mul(365)
            .saturating_add(yoe / 4)
            .saturating_sub(yoe / 100),
    ); // [0, 365]
    let mp = doy.saturating_mul(5).saturating_add(2) / 153; // [0, 11]
    let day = doy
        .saturating_sub(mp.saturating_mul(153).saturating_add(2) / 5)
        .saturating_add(1);
    let month = if mp < 10 {
        mp.saturating_add(3)
    } else {
        mp.saturating_sub(9)
    };
    let year = yoe
        .saturating_add(era.saturating_mul(400))
        .saturating_add(u64::from(month <= 2));
    Civil { year, month, day }
}

/// Days since 1970-01-01 of a civil date (saturating at 0 before 1970).
pub fn days_from_civil(date: Civil) -> u64 {
    let Civil { year, month, day } = date;
    let y = if month <= 2 {
        year.saturating_sub(1)
    } else {
        year
    };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if month > 2 {
        month.saturating_sub(3)
    } else {
        month.saturating_add(9)
    };
    let doy = mp
        .saturating_mul(153)
        .saturating_add(2)
        .checked_div(5)
        .unwrap_or(0)
        .saturating_add(day)
        .saturating_sub(1);
    let doe = yoe
        .saturating_mul(365)
        .saturating_add(yoe / 4)
        .saturating_sub(yoe / 100)
        .saturating_add(doy);
    era.saturating_mul(146_097)
        .saturating_add(doe)
        .saturating_sub(719_468)
}

/// Index of the month containing `days` since the epoch (`year * 12 + month - 1`).
pub fn month_index_of_day(days: u64) -> u64 {
    let c = civil_from_days(days);
    c.year
        .saturating_mul(12)
        .saturating_add(c.month.saturating_sub(1))
}

/// Unix seconds at which month `index` (as returned by
/// [`month_index_of_day`]) starts.
pub fn month_start_s(index: u64) -> u64 {
    let date = Civil {
        year: index / 12,
        month: (index % 12).saturating_add(1),
        day: 1,
    };
    days_from_civil(date).saturating_mul(DAY_S)
}

/// A budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Minute,
    Day,
    Month,
}

impl Period {
    /// Index of the window containing `now_s`.
    pub fn index(self, now_s: u64) -> u64 {
        match self {
            Period::Minute => now_s / MINUTE_S,
            Period::Day => now_s / DAY_S,
            Period::Month => month_index_of_day(now_s / DAY_S),
        }
    }

    /// Unix seconds at which the window containing `now_s` ends.
    pub fn window_end_s(self, now_s: u64) -> u64 {
        match self {
            Period::Minute => (now_s / MINUTE_S)
                .saturating_add(1)
                .saturating_mul(MINUTE_S),
            Period::Day => (now_s / DAY_S).saturating_add(1).saturating_mul(DAY_S),
            Period::Month => month_start_s(self.index(now_s).saturating_add(1)),
        }
    }

    /// Whole seconds (rounded up, at least 1) from `now_ms` until the window
    /// containing it ends.
    pub fn retry_after_s(self, now_ms: u64) -> u64 {
        let end_ms = self.window_end_s(now_ms / 1000).saturating_mul(1000);
        let left_ms = end_ms.saturating_sub(now_ms);
        left_ms.div_ceil(1000).max(1)
    }
}

/// The window indices of the three periods at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowIds {
    pub minute: u64,
    pub day: u64,
    pub month: u64,
}

impl WindowIds {
    pub fn at_ms(now_ms: u64) -> Self {
        let s = now_ms / 1000;
        Self {
            minute: Period::Minute.index(s),
            day: Period::Day.index(s),
            month: Period::Month.index(s),
        }
    }

    fn get(&self, p: Period) -> u64 {
        match p {
            Period::Minute => self.minute,
            Period::Day => self.day,
            Period::Month => self.month,
        }
    }

    fn set(&mut self, p: Period, v: u64) {
        match p {
            Period::Minute => self.minute = v,
            Period::Day => self.day = v,
            Period::Month => self.month = v,
        }
    }
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// Limits of one scope, as configured. All optional; absent = unlimited.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    #[serde(default)]
    pub usd_per_day: Option<f64>,
    #[serde(default)]
    pub usd_per_month: Option<f64>,
    /// `local` (default: this Envoy's shared data) or `fleet` (shared by
    /// every Envoy through the `fleet` block's Redis Cluster, leased).
    #[serde(default)]
    pub scope: LimitScope,
}

/// Where a scope's limits are enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitScope {
    #[default]
    Local,
    Fleet,
}

fn usd_to_micros(field: &str, usd: Option<f64>) -> Result<Option<u64>, ConfigError> {
    match usd {
        None => Ok(None),
        Some(v) if !v.is_finite() => Err(ConfigError::new(field, "must be a finite number")),
        Some(v) if v < 0.0 => Err(ConfigError::new(field, "must be >= 0")),
        Some(v) if v > MAX_USD => Err(ConfigError::new(field, "is too large")),
        // In range [0, 1e18]: the cast cannot saturate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(v) => Ok(Some((v * MICROS_PER_USD).round() as u64)),
    }
}

impl LimitsConfig {
    /// Validates and compiles. Errors name the field (`usd_per_day`, …).
    pub fn compile(&self) -> Result<CompiledLimits, ConfigError> {
        Ok(CompiledLimits {
            fleet: self.scope == LimitScope::Fleet,
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            tokens_per_day: self.tokens_per_day,
            micro_usd_per_day: usd_to_micros("usd_per_day", self.usd_per_day)?,
            micro_usd_per_month: usd_to_micros("usd_per_month", self.usd_per_month)?,
        })
    }
}

/// Validated limits; dollars in micro-USD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompiledLimits {
    /// Enforced by the fleet engine, not by local budgets.
    pub fleet: bool,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub micro_usd_per_day: Option<u64>,
    pub micro_usd_per_month: Option<u64>,
}

impl CompiledLimits {
    pub fn is_empty(&self) -> bool {
        self.tracked() == Tracked::default()
    }

    /// The limits as (kind, value) pairs.
    pub fn kinds(&self) -> Vec<(LimitKind, u64)> {
        limit_list(self)
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    }

    /// Local limits to enforce here (none when the scope is fleet-scoped).
    pub fn local(&self) -> bool {
        !self.fleet && !self.is_empty()
    }

    /// Whether a dollar limit is set.
    pub fn has_dollars(&self) -> bool {
        self.micro_usd_per_day.is_some() || self.micro_usd_per_month.is_some()
    }

    fn tracked(&self) -> Tracked {
        Tracked {
            minute: self.requests_per_minute.is_some() || self.tokens_per_minute.is_some(),
            day: self.tokens_per_day.is_some() || self.micro_usd_per_day.is_some(),
            month: self.micro_usd_per_month.is_some(),
        }
    }
}

/// Engine options (from the plugin configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetOptions {
    pub failure_mode: FailureMode,
    /// CAS retries after a conflict (attempts = retries + 1).
    pub cas_retries: u32,
    /// Number of bucket keys (1..=4096). Changing it remaps scopes, which
    /// resets their counters.
    pub buckets: u32,
    /// Cap on the key/tenant scopes of a global bucket (they come from the
    /// configuration, so this is only a safety net).
    pub max_scopes_per_bucket: usize,
    /// End users tracked per key with user limits (`max_users_per_key`).
    pub max_users_per_key: u32,
}

impl Default for BudgetOptions {
    fn default() -> Self {
        Self {
            failure_mode: FailureMode::Open,
            cas_retries: DEFAULT_CAS_RETRIES,
            buckets: DEFAULT_BUCKETS,
            max_scopes_per_bucket: DEFAULT_MAX_SCOPES_PER_BUCKET,
            max_users_per_key: DEFAULT_MAX_USERS_PER_KEY,
        }
    }
}

// ---------------------------------------------------------------------------
// Public request-path types
// ---------------------------------------------------------------------------

/// Plugin-start helper: creates `key` with `initial` when it is missing and
/// resets it (with a CAS) when `valid` rejects its value. Creating a key is a
/// blind write, so this must run before traffic; an existing valid value is
/// kept, so state survives a configuration reload. A concurrent writer that
/// wins the CAS is left alone.
pub fn ensure_key(
    store: &dyn SharedStore,
    key: &str,
    initial: &[u8],
    valid: impl Fn(&[u8]) -> bool,
) -> Result<(), StoreFailure> {
    let fail = || StoreFailure {
        key: key.to_string(),
        kind: StoreFailureKind::Unavailable,
    };
    match store.get(key) {
        Ok(Some((value, cas))) => {
            if !valid(&value) {
                match store.set(key, initial, Some(cas)) {
                    Ok(()) | Err(StoreError::CasMismatch) => {}
                    Err(StoreError::Unavailable) => return Err(fail()),
                }
            }
            Ok(())
        }
        Ok(None) => store.set(key, initial, None).map_err(|_| fail()),
        Err(_) => Err(fail()),
    }
}

/// Who a counter belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScopeId {
    /// A virtual key, by its configured id.
    Key(String),
    /// A tenant.
    Tenant(String),
    /// An end user (`x-llmgate-user`) of a key.
    User { key: String, user: String },
}

/// End-user ids longer than this are stored hashed.
const MAX_USER_ID_LEN: usize = 64;

impl ScopeId {
    /// Name of the scope inside its bucket: `key:<id>`, `tenant:<t>`,
    /// `user:<key id>:<user>` (a long or non-printable user id is replaced by
    /// `#` and its SHA-256 hex).
    pub fn storage_name(&self) -> String {
        match self {
            ScopeId::Key(id) => format!("key:{id}"),
            ScopeId::Tenant(t) => format!("tenant:{t}"),
            ScopeId::User { key, user } => {
                let plain =
                    user.len() <= MAX_USER_ID_LEN && user.bytes().all(|b| b.is_ascii_graphic());
                if plain {
                    format!("user:{key}:{user}")
                } else {
                    format!("user:{key}:#{}", super::util::sha256_hex(user.as_bytes()))
                }
            }
        }
    }

    fn is_key(&self) -> bool {
        matches!(self, ScopeId::Key(_))
    }
}

/// What a request is expected to use, reserved at admission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub tokens: u64,
    pub micro_usd: u64,
}

/// What a request really used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actual {
    pub tokens: u64,
    /// `None` when the cost is unknown (no price for the model): counted as 0.
    pub micro_usd: Option<u64>,
}

/// Which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    RequestsPerMinute,
    TokensPerMinute,
    TokensPerDay,
    UsdPerDay,
    UsdPerMonth,
}

impl LimitKind {
    /// The config field name.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::RequestsPerMinute => "requests_per_minute",
            LimitKind::TokensPerMinute => "tokens_per_minute",
            LimitKind::TokensPerDay => "tokens_per_day",
            LimitKind::UsdPerDay => "usd_per_day",
            LimitKind::UsdPerMonth => "usd_per_month",
        }
    }

    pub fn period(self) -> Period {
        match self {
            LimitKind::RequestsPerMinute | LimitKind::TokensPerMinute => Period::Minute,
            LimitKind::TokensPerDay | LimitKind::UsdPerDay => Period::Day,
            LimitKind::UsdPerMonth => Period::Month,
        }
    }
}

/// Values for the `x-ratelimit-*` response headers, from the key scope's
/// tightest limits (`None` where the key has no such limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitInfo {
    pub limit_requests: Option<u64>,
    pub remaining_requests: Option<u64>,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: Option<u64>,
}

/// A limit that refused the request (429).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExceeded {
    /// Storage name of the scope (`key:…`, `tenant:…`, `user:…`).
    pub scope: String,
    pub limit: LimitKind,
    /// The limit (requests, tokens or micro-USD).
    pub limit_value: u64,
    /// `limit − used − reserved`, saturating at 0, before this request.
    pub remaining: u64,
    /// Seconds until the limit's window ends (at least 1).
    pub retry_after_s: u64,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenialReason {
    /// 429 with `retry-after`.
    Limit(LimitExceeded),
    /// 503: shared data failed and the failure mode is `closed`.
    StoreUnavailable,
    /// 429: the key already tracks `max_users_per_key` end users (this
    /// user's bucket is full) in the current windows.
    TooManyUsers,
    /// 429 (`retry-after: 1`): every CAS attempt lost against other writers;
    /// the request is never admitted without its reservation.
    Contention,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: DenialReason,
    /// Rate-limit header values of the key scope, when known.
    pub rate_limit: Option<RateLimitInfo>,
    /// Shared-data failures met (count one metric each).
    pub store_failures: Vec<StoreFailure>,
}

impl Denial {
    /// 429 for a limit, 503 for a shared-data failure.
    pub fn status(&self) -> u16 {
        match self.reason {
            DenialReason::Limit(_) | DenialReason::TooManyUsers | DenialReason::Contention => 429,
            DenialReason::StoreUnavailable => 503,
        }
    }

    /// Value of the `retry-after` header.
    pub fn retry_after_s(&self) -> u64 {
        match &self.reason {
            DenialReason::Limit(l) => l.retry_after_s,
            DenialReason::StoreUnavailable | DenialReason::Contention => 1,
            DenialReason::TooManyUsers => 60,
        }
    }
}

/// Which windows a scope tracks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tracked {
    minute: bool,
    day: bool,
    month: bool,
}

impl Tracked {
    fn periods(self) -> impl Iterator<Item = Period> {
        [
            (self.minute, Period::Minute),
            (self.day, Period::Day),
            (self.month, Period::Month),
        ]
        .into_iter()
        .filter_map(|(on, p)| on.then_some(p))
    }
}

/// One scope of a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReservedScope {
    name: String,
    bucket: u32,
    tracked: Tracked,
    /// Index of the window reserved in, per tracked period.
    windows: WindowIds,
    /// False when shared data failed at admission (failure mode `open`).
    reserved: bool,
}

/// An admitted request's reservation. Pass it to exactly one of
/// [`Budgets::settle`] or [`Budgets::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    scopes: Vec<ReservedScope>,
    pub estimate: Estimate,
    /// Rate-limit header values of the key scope, after this reservation.
    pub rate_limit: Option<RateLimitInfo>,
    /// Shared-data failures met while admitting with failure mode `open`.
    pub store_failures: Vec<StoreFailure>,
}

impl Reservation {
    /// True if some scope could not be reserved (failure mode `open`).
    pub fn degraded(&self) -> bool {
        self.scopes.iter().any(|s| !s.reserved)
    }
}

/// Result of settle/release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettleReport {
    /// The cost was unknown and counted as 0.
    pub cost_unknown: bool,
    /// Shared-data failures (the update of that scope is lost).
    pub store_failures: Vec<StoreFailure>,
}

// ---------------------------------------------------------------------------
// Stored form
// ---------------------------------------------------------------------------

/// One window's counters, stored as a 6-number array.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "[u64; 6]", into = "[u64; 6]")]
struct Win {
    index: u64,
    requests: u64,
    tokens_used: u64,
    tokens_reserved: u64,
    cost_used: u64,
    cost_reserved: u64,
}

impl From<[u64; 6]> for Win {
    fn from(a: [u64; 6]) -> Self {
        let [index, requests, tokens_used, tokens_reserved, cost_used, cost_reserved] = a;
        Self {
            index,
            requests,
            tokens_used,
            tokens_reserved,
            cost_used,
            cost_reserved,
        }
    }
}

impl From<Win> for [u64; 6] {
    fn from(w: Win) -> Self {
        [
            w.index,
            w.requests,
            w.tokens_used,
            w.tokens_reserved,
            w.cost_used,
            w.cost_reserved,
        ]
    }
}

impl Win {
    fn tokens(&self) -> u64 {
        self.tokens_used.saturating_add(self.tokens_reserved)
    }
    fn cost(&self) -> u64 {
        self.cost_used.saturating_add(self.cost_reserved)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<Win>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<Win>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    o: Option<Win>,
}

impl Entry {
    fn slot(&mut self, p: Period) -> &mut Option<Win> {
        match p {
            Period::Minute => &mut self.m,
            Period::Day => &mut self.d,
            Period::Month => &mut self.o,
        }
    }

    fn peek(&self, p: Period) -> Option<&Win> {
        match p {
            Period::Minute => self.m.as_ref(),
            Period::Day => self.d.as_ref(),
            Period::Month => self.o.as_ref(),
        }
    }

    /// The current window of `p` (a stale one is reset, a missing one created).
    fn current(&mut self, p: Period, ids: &WindowIds) -> &mut Win {
        let now = ids.get(p);
        let slot = self.slot(p);
        match slot {
            Some(w) if w.index >= now => {}
            _ => {
                *slot = Some(Win {
                    index: now,
                    ..Win::default()
                })
            }
        }
        slot.get_or_insert_with(Win::default)
    }

    /// Drops windows that are over; true if nothing is left.
    fn prune(&mut self, ids: &WindowIds) -> bool {
        for p in [Period::Minute, Period::Day, Period::Month] {
            let now = ids.get(p);
            let slot = self.slot(p);
            if slot.is_some_and(|w| w.index < now) {
                *slot = None;
            }
        }
        self.m.is_none() && self.d.is_none() && self.o.is_none()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bucket {
    #[serde(default)]
    s: BTreeMap<String, Entry>,
}

impl Bucket {
    fn prune(&mut self, ids: &WindowIds) {
        self.s.retain(|_, e| !e.prune(ids));
    }
}

const EMPTY_BUCKET: &[u8] = b"{}";

/// Parses a stored bucket; `None` if corrupt. Only the object form is
/// accepted (serde would also take a struct as an array).
fn parse_bucket(value: &[u8]) -> Option<Bucket> {
    match value.first() {
        // The initial `{}` (and buckets written by earlier versions).
        Some(b'{') => serde_json::from_slice(value).ok(),
        Some(&BIN_MAGIC) => decode_bucket(value),
        _ => None,
    }
}

/// First byte of the binary bucket form.
const BIN_MAGIC: u8 = 0xB1;

/// The binary form of a bucket, written on every update (no JSON on the hot
/// path): `0xB1`, then per scope: name length (u16 LE), name (UTF-8), a flag
/// byte (bit 0 minute, bit 1 day, bit 2 month window present), and per
/// present window six u64 LE counters.
fn encode_bucket(b: &Bucket) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.s.len().saturating_mul(64).saturating_add(1));
    out.push(BIN_MAGIC);
    for (name, e) in &b.s {
        let Ok(len) = u16::try_from(name.len()) else {
            continue;
        };
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        let flags = u8::from(e.m.is_some())
            | (u8::from(e.d.is_some()) << 1)
            | (u8::from(e.o.is_some()) << 2);
        out.push(flags);
        for w in [e.m, e.d, e.o].into_iter().flatten() {
            for x in <[u64; 6]>::from(w) {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    out
}

fn decode_bucket(v: &[u8]) -> Option<Bucket> {
    let mut rest = v.strip_prefix(&[BIN_MAGIC])?;
    let mut s = BTreeMap::new();
    while !rest.is_empty() {
        let (len, r) = rest.split_first_chunk::<2>()?;
        let (name, r) = r.split_at_checked(usize::from(u16::from_le_bytes(*len)))?;
        let name = std::str::from_utf8(name).ok()?.to_string();
        let (&flags, r) = r.split_first()?;
        if flags > 7 {
            return None;
        }
        rest = r;
        let mut e = Entry::default();
        for (bit, slot) in [(1u8, &mut e.m), (2, &mut e.d), (4, &mut e.o)] {
            if flags & bit == 0 {
                continue;
            }
            let mut a = [0u64; 6];
            for x in &mut a {
                let (b, r) = rest.split_first_chunk::<8>()?;
                *x = u64::from_le_bytes(*b);
                rest = r;
            }
            *slot = Some(Win::from(a));
        }
        s.insert(name, e);
    }
    Some(Bucket { s })
}

fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

// ---------------------------------------------------------------------------
// Limit checks and counter updates
// ---------------------------------------------------------------------------

/// Counter change applied to every tracked window of a scope.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Admission: +1 request, +estimate reserved.
    Reserve(Estimate),
    /// Undo an admission (another scope refused): −1 request, −estimate.
    Rollback(Estimate),
    /// Release the reserved estimate; `used` is added as used.
    Settle { reserved: Estimate, used: Estimate },
}

fn apply(w: &mut Win, op: Op) {
    match op {
        Op::Reserve(e) => {
            w.requests = w.requests.saturating_add(1);
            w.tokens_reserved = w.tokens_reserved.saturating_add(e.tokens);
            w.cost_reserved = w.cost_reserved.saturating_add(e.micro_usd);
        }
        Op::Rollback(e) => {
            w.requests = w.requests.saturating_sub(1);
            w.tokens_reserved = w.tokens_reserved.saturating_sub(e.tokens);
            w.cost_reserved = w.cost_reserved.saturating_sub(e.micro_usd);
        }
        Op::Settle { reserved, used } => {
            w.tokens_reserved = w.tokens_reserved.saturating_sub(reserved.tokens);
            w.cost_reserved = w.cost_reserved.saturating_sub(reserved.micro_usd);
            w.tokens_used = w.tokens_used.saturating_add(used.tokens);
            w.cost_used = w.cost_used.saturating_add(used.micro_usd);
        }
    }
}

/// Each configured limit with what a window counts against it.
fn limit_list(l: &CompiledLimits) -> [(LimitKind, Option<u64>); 5] {
    [
        (LimitKind::RequestsPerMinute, l.requests_per_minute),
        (LimitKind::TokensPerMinute, l.tokens_per_minute),
        (LimitKind::TokensPerDay, l.tokens_per_day),
        (LimitKind::UsdPerDay, l.micro_usd_per_day),
        (LimitKind::UsdPerMonth, l.micro_usd_per_month),
    ]
}

fn counted(kind: LimitKind, w: &Win) -> u64 {
    match kind {
        LimitKind::RequestsPerMinute => w.requests,
        LimitKind::TokensPerMinute | LimitKind::TokensPerDay => w.tokens(),
        LimitKind::UsdPerDay | LimitKind::UsdPerMonth => w.cost(),
    }
}

fn wanted(kind: LimitKind, e: Estimate) -> u64 {
    match kind {
        LimitKind::RequestsPerMinute => 1,
        LimitKind::TokensPerMinute | LimitKind::TokensPerDay => e.tokens,
        LimitKind::UsdPerDay | LimitKind::UsdPerMonth => e.micro_usd,
    }
}

/// Used + reserved of `kind` in the entry's current window (0 if none).
fn usage(entry: &Entry, kind: LimitKind, ids: &WindowIds) -> u64 {
    let p = kind.period();
    entry
        .peek(p)
        .filter(|w| w.index >= ids.get(p))
        .map_or(0, |w| counted(kind, w))
}

/// Checks every limit; on success applies the reservation and returns the
/// indices of the windows reserved in.
fn check_and_reserve(
    entry: &mut Entry,
    name: &str,
    limits: &CompiledLimits,
    ids: &WindowIds,
    est: Estimate,
    now_ms: u64,
) -> Result<WindowIds, LimitExceeded> {
    let mut worst: Option<LimitExceeded> = None;
    for (kind, limit) in limit_list(limits) {
        let Some(limit) = limit else { continue };
        let have = usage(entry, kind, ids);
        if have.saturating_add(wanted(kind, est)) > limit {
            let retry_after_s = kind.period().retry_after_s(now_ms);
            // The client must wait for every refusing window: report the longest.
            if worst
                .as_ref()
                .is_none_or(|w| retry_after_s > w.retry_after_s)
            {
                worst = Some(LimitExceeded {
                    scope: name.to_string(),
                    limit: kind,
                    limit_value: limit,
                    remaining: limit.saturating_sub(have),
                    retry_after_s,
                });
            }
        }
    }
    if let Some(w) = worst {
        return Err(w);
    }
    let mut applied = *ids;
    for p in limits.tracked().periods() {
        let w = entry.current(p, ids);
        apply(w, Op::Reserve(est));
        applied.set(p, w.index);
    }
    Ok(applied)
}

fn rate_limit_info(entry: &Entry, limits: &CompiledLimits, ids: &WindowIds) -> RateLimitInfo {
    let mut info = RateLimitInfo::default();
    if let Some(rpm) = limits.requests_per_minute {
        info.limit_requests = Some(rpm);
        info.remaining_requests =
            Some(rpm.saturating_sub(usage(entry, LimitKind::RequestsPerMinute, ids)));
    }
    for (kind, limit) in [
        (LimitKind::TokensPerMinute, limits.tokens_per_minute),
        (LimitKind::TokensPerDay, limits.tokens_per_day),
    ] {
        let Some(limit) = limit else { continue };
        let remaining = limit.saturating_sub(usage(entry, kind, ids));
        let tighter = match (info.remaining_tokens, info.limit_tokens) {
            (Some(r), Some(l)) => remaining < r || (remaining == r && limit < l),
            _ => true,
        };
        if tighter {
            info.limit_tokens = Some(limit);
            info.remaining_tokens = Some(remaining);
        }
    }
    info
}

// ---------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------

/// Why a bucket update did not happen.
enum UpdateError<D> {
    Store(StoreFailureKind),
    /// The closure refused (a limit); nothing was written.
    Abort(D),
}

/// The budget engine. Stateless apart from its options: every worker may
/// have its own instance over the same shared data.
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    opts: BudgetOptions,
    /// Keys with user limits, in order: their user buckets follow the
    /// global ones in the bucket number space.
    user_keys: Vec<String>,
    user_key_index: std::collections::HashMap<String, u32>,
    /// User buckets per key, and end users per user bucket.
    user_buckets: u32,
    users_per_bucket: usize,
}

impl Budgets {
    pub fn new(opts: BudgetOptions) -> Self {
        let mut opts = opts;
        opts.buckets = opts.buckets.clamp(1, 4096);
        let m = opts.max_users_per_key.max(1);
        let user_buckets = m
            .div_ceil(USERS_PER_BUCKET_TARGET)
            .clamp(1, MAX_USER_BUCKETS);
        let users_per_bucket = usize::try_from(m.div_ceil(user_buckets)).unwrap_or(usize::MAX);
        Self {
            opts,
            user_keys: Vec::new(),
            user_key_index: std::collections::HashMap::new(),
            user_buckets,
            users_per_bucket,
        }
    }

    /// Declares the keys whose end users are tracked (keys with
    /// `user_limits`): each gets its own user buckets.
    pub fn with_user_keys(mut self, keys: impl IntoIterator<Item = String>) -> Self {
        for k in keys {
            if self.user_key_index.contains_key(&k) {
                continue;
            }
            let i = u32::try_from(self.user_keys.len()).unwrap_or(u32::MAX);
            self.user_key_index.insert(k.clone(), i);
            self.user_keys.push(k);
        }
        self
    }

    /// The end users a key may have in its current windows, at most.
    pub fn max_users_per_key(&self) -> usize {
        usize::try_from(self.user_buckets)
            .unwrap_or(usize::MAX)
            .saturating_mul(self.users_per_bucket)
    }

    pub fn options(&self) -> &BudgetOptions {
        &self.opts
    }

    /// Key of global bucket `i`.
    pub fn bucket_key(i: u32) -> String {
        format!("{BUCKET_KEY_PREFIX}{i}")
    }

    /// Key of bucket number `b`: a global bucket, or a key's user bucket.
    fn key_of(&self, b: u32) -> String {
        match b.checked_sub(self.opts.buckets) {
            None => Self::bucket_key(b),
            Some(j) => {
                let per = self.user_buckets.max(1);
                let key = self
                    .user_keys
                    .get(usize::try_from(j / per).unwrap_or(usize::MAX))
                    .map_or("", String::as_str);
                format!("{USER_BUCKET_KEY_PREFIX}{key}:{}", j % per)
            }
        }
    }

    /// The global bucket of a scope name.
    fn bucket_of(&self, name: &str) -> u32 {
        let n = u64::from(self.opts.buckets.max(1));
        let i = fnv1a64(name.as_bytes()).checked_rem(n).unwrap_or(0);
        u32::try_from(i).unwrap_or(0)
    }

    /// The bucket of a scope: end users of a declared key live in that
    /// key's user buckets, everything else in the global ones.
    fn bucket_of_scope(&self, scope: &ScopeId, name: &str) -> u32 {
        if let ScopeId::User { key, .. } = scope {
            if let Some(k) = self.user_key_index.get(key) {
                let per = self.user_buckets.max(1);
                let sub = fnv1a64(name.as_bytes())
                    .checked_rem(u64::from(per))
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(0);
                return self
                    .opts
                    .buckets
                    .saturating_add(k.saturating_mul(per))
                    .saturating_add(sub);
            }
        }
        self.bucket_of(name)
    }

    /// The cap on scopes in bucket `b`.
    fn cap_of(&self, b: u32) -> usize {
        if b >= self.opts.buckets {
            self.users_per_bucket
        } else {
            self.opts.max_scopes_per_bucket
        }
    }

    /// Creates every bucket key that is missing (and resets corrupt ones).
    /// Call from plugin start, before traffic: creating a key is a blind
    /// write, so it must not race with request-path updates. Existing
    /// buckets are kept, so counters survive a configuration reload.
    pub fn init(&self, store: &dyn SharedStore) -> Result<(), StoreFailure> {
        let users = u32::try_from(self.user_keys.len())
            .unwrap_or(u32::MAX)
            .saturating_mul(self.user_buckets);
        for i in 0..self.opts.buckets.saturating_add(users) {
            ensure_key(store, &self.key_of(i), EMPTY_BUCKET, |v| {
                parse_bucket(v).is_some()
            })?;
        }
        Ok(())
    }

    /// The CAS loop: read the bucket, prune it, let `f` change it, write it
    /// back with the token read; retry on a conflict.
    fn update<T, D>(
        &self,
        store: &dyn SharedStore,
        bucket: u32,
        ids: &WindowIds,
        mut f: impl FnMut(&mut Bucket) -> Result<T, D>,
    ) -> Result<T, UpdateError<D>> {
        let key = self.key_of(bucket);
        let cap = self.cap_of(bucket);
        cas_loop(
            store,
            &key,
            self.opts.cas_retries,
            EMPTY_BUCKET,
            parse_bucket,
            |b: &Bucket| Some(encode_bucket(b)),
            |mut data| {
                data.prune(ids);
                let scopes_before = data.s.len();
                let out = match f(&mut data) {
                    Ok(out) => out,
                    Err(d) => return Cas::Abort(UpdateError::Abort(d)),
                };
                let scopes_after = data.s.len();
                if scopes_after > scopes_before && scopes_after > cap {
                    return Cas::Abort(UpdateError::Store(StoreFailureKind::Full));
                }
                Cas::Write(data, out)
            },
        )
        .map_err(|e| match e {
            CasError::Store(kind) => UpdateError::Store(kind),
            CasError::Abort(u) => u,
        })
    }

    /// Admits a request against every limit of every scope, or refuses it.
    ///
    /// Scopes are grouped by bucket; each bucket is one CAS write that checks
    /// and reserves all its scopes. If a later bucket refuses, the buckets
    /// already written are rolled back (request and estimate removed), so a
    /// refused request leaves nothing behind (unless the rollback itself
    /// fails, reported in `store_failures`; the leftover reservation then
    /// expires with its window). Scopes without limits are skipped. The
    /// rate-limit info is that of the first [`ScopeId::Key`] scope.
    // The refusal is the cold path; its size does not matter.
    #[allow(clippy::result_large_err)]
    pub fn reserve(
        &self,
        store: &dyn SharedStore,
        clock: &dyn Clock,
        scopes: &[(ScopeId, &CompiledLimits)],
        estimate: Estimate,
    ) -> Result<Reservation, Denial> {
        let now_ms = clock.now_ms();
        let ids = WindowIds::at_ms(now_ms);
        let key_scope = scopes.iter().position(|(s, l)| s.is_key() && !l.is_empty());

        // (bucket, [(scope index, name)]) in order of first appearance.
        let mut groups: Vec<(u32, Vec<(usize, String)>)> = Vec::new();
        for (i, (scope, limits)) in scopes.iter().enumerate() {
            if limits.is_empty() {
                continue;
            }
            let name = scope.storage_name();
            let b = self.bucket_of_scope(scope, &name);
            match groups.iter_mut().find(|(gb, _)| *gb == b) {
                Some((_, members)) => members.push((i, name)),
                None => groups.push((b, vec![(i, name)])),
            }
        }

        let mut parts: Vec<ReservedScope> = Vec::new();
        let mut failures: Vec<StoreFailure> = Vec::new();
        let mut rate_limit: Option<RateLimitInfo> = None;

        for (bucket, members) in &groups {
            let key_here = members.iter().find(|(i, _)| Some(*i) == key_scope);
            let result = self.update(store, *bucket, &ids, |data| {
                let key_info = |data: &Bucket| {
                    let (i, name) = key_here?;
                    let (_, limits) = scopes.get(*i)?;
                    let entry = data.s.get(name).cloned().unwrap_or_default();
                    Some(rate_limit_info(&entry, limits, &ids))
                };
                let before = key_info(data);
                let mut windows = Vec::with_capacity(members.len());
                for (i, name) in members {
                    let Some((_, limits)) = scopes.get(*i) else {
                        continue;
                    };
                    let entry = data.s.entry(name.clone()).or_default();
                    let applied = check_and_reserve(entry, name, limits, &ids, estimate, now_ms)
                        .map_err(|l| (l, before))?;
                    windows.push((*i, applied));
                }
                Ok((key_info(data), windows))
            });
            match result {
                Ok((after, windows)) => {
                    if after.is_some() {
                        rate_limit = after;
                    }
                    for (i, applied) in windows {
                        let Some((_, name)) = members.iter().find(|(m, _)| *m == i) else {
                            continue;
                        };
                        let tracked = scopes.get(i).map(|(_, l)| l.tracked()).unwrap_or_default();
                        parts.push(ReservedScope {
                            name: name.clone(),
                            bucket: *bucket,
                            tracked,
                            windows: applied,
                            reserved: true,
                        });
                    }
                }
                Err(UpdateError::Abort((limit, before))) => {
                    let rate_limit = before.or(rate_limit.map(|r| unreserve_info(r, estimate)));
                    failures.extend(self.rollback(store, &ids, &parts, estimate));
                    return Err(Denial {
                        reason: DenialReason::Limit(limit),
                        rate_limit,
                        store_failures: failures,
                    });
                }
                Err(UpdateError::Store(kind)) => {
                    failures.push(StoreFailure {
                        key: self.key_of(*bucket),
                        kind,
                    });
                    // Never admitted without a reservation: a full user bucket
                    // or lost CAS races refuse, whatever the failure mode.
                    let refusal = match kind {
                        StoreFailureKind::Full if *bucket >= self.opts.buckets => {
                            Some(DenialReason::TooManyUsers)
                        }
                        StoreFailureKind::RetriesExhausted => Some(DenialReason::Contention),
                        _ => None,
                    };
                    if let Some(reason) = refusal {
                        failures.extend(self.rollback(store, &ids, &parts, estimate));
                        return Err(Denial {
                            reason,
                            rate_limit,
                            store_failures: failures,
                        });
                    }
                    if self.opts.failure_mode == FailureMode::Closed {
                        failures.extend(self.rollback(store, &ids, &parts, estimate));
                        return Err(Denial {
                            reason: DenialReason::StoreUnavailable,
                            rate_limit: None,
                            store_failures: failures,
                        });
                    }
                    for (i, name) in members {
                        let tracked = scopes.get(*i).map(|(_, l)| l.tracked()).unwrap_or_default();
                        parts.push(ReservedScope {
                            name: name.clone(),
                            bucket: *bucket,
                            tracked,
                            windows: ids,
                            reserved: false,
                        });
                    }
                }
            }
        }

        Ok(Reservation {
            scopes: parts,
            estimate,
            rate_limit,
            store_failures: failures,
        })
    }

    /// Undoes the reservations of `parts` (those marked reserved).
    fn rollback(
        &self,
        store: &dyn SharedStore,
        ids: &WindowIds,
        parts: &[ReservedScope],
        estimate: Estimate,
    ) -> Vec<StoreFailure> {
        let mut failures = Vec::new();
        let mut buckets: Vec<u32> = Vec::new();
        for p in parts.iter().filter(|p| p.reserved) {
            if !buckets.contains(&p.bucket) {
                buckets.push(p.bucket);
            }
        }
        for bucket in buckets {
            let r = self.update(store, bucket, ids, |data| {
                for s in parts.iter().filter(|s| s.reserved && s.bucket == bucket) {
                    let Some(entry) = data.s.get_mut(&s.name) else {
                        continue;
                    };
                    for p in s.tracked.periods() {
                        if let Some(w) = entry.slot(p) {
                            if w.index == s.windows.get(p) {
                                apply(w, Op::Rollback(estimate));
                            }
                        }
                    }
                }
                Ok::<(), ()>(())
            });
            if let Err(UpdateError::Store(kind)) = r {
                failures.push(StoreFailure {
                    key: self.key_of(bucket),
                    kind,
                });
            }
        }
        failures
    }

    /// Replaces the reservation with the real usage: the reserved estimate is
    /// released and the actual tokens/cost added as used.
    ///
    /// If a window rolled over since admission, its reservation went with
    /// it, and the actual usage is added to the current window instead (usage
    /// is charged when it is known). Cost unknown counts 0 and sets
    /// `cost_unknown`. Scopes that could not be reserved at admission
    /// (failure mode `open`) get the actual usage added (nothing to release).
    /// Call at most once per reservation (or [`Budgets::release`] instead).
    pub fn settle(
        &self,
        store: &dyn SharedStore,
        clock: &dyn Clock,
        reservation: &Reservation,
        actual: Actual,
    ) -> SettleReport {
        let used = Estimate {
            tokens: actual.tokens,
            micro_usd: actual.micro_usd.unwrap_or(0),
        };
        let mut report = self.finish(store, clock, reservation, Some(used));
        report.cost_unknown = actual.micro_usd.is_none();
        report
    }

    /// Releases the reserved tokens and cost of a request that failed or
    /// whose client went away. The request itself stays counted against
    /// `requests_per_minute`: it was admitted and may have reached the
    /// provider (and this keeps aborted requests from being free).
    pub fn release(
        &self,
        store: &dyn SharedStore,
        clock: &dyn Clock,
        reservation: &Reservation,
    ) -> SettleReport {
        self.finish(store, clock, reservation, None)
    }

    fn finish(
        &self,
        store: &dyn SharedStore,
        clock: &dyn Clock,
        reservation: &Reservation,
        used: Option<Estimate>,
    ) -> SettleReport {
        let ids = WindowIds::at_ms(clock.now_ms());
        let mut report = SettleReport::default();
        let mut buckets: Vec<u32> = Vec::new();
        for s in &reservation.scopes {
            if !buckets.contains(&s.bucket) {
                buckets.push(s.bucket);
            }
        }
        for bucket in buckets {
            let members: Vec<&ReservedScope> = reservation
                .scopes
                .iter()
                .filter(|s| s.bucket == bucket && (s.reserved || used.is_some()))
                .collect();
            if members.is_empty() {
                continue;
            }
            let r = self.update(store, bucket, &ids, |data| {
                for s in &members {
                    for p in s.tracked.periods() {
                        // Still in the window it was reserved in?
                        let release = s.reserved
                            && data
                                .s
                                .get(&s.name)
                                .and_then(|e| e.peek(p))
                                .is_some_and(|w| w.index == s.windows.get(p));
                        let used = used.unwrap_or_default();
                        if !release && used == Estimate::default() {
                            continue; // nothing to do for this window
                        }
                        let op = Op::Settle {
                            reserved: if release {
                                reservation.estimate
                            } else {
                                Estimate::default()
                            },
                            used,
                        };
                        let entry = data.s.entry(s.name.clone()).or_default();
                        let w = if release {
                            entry.slot(p).get_or_insert_with(Win::default)
                        } else {
                            entry.current(p, &ids)
                        };
                        apply(w, op);
                    }
                }
                Ok::<(), ()>(())
            });
            if let Err(UpdateError::Store(kind)) = r {
                report.store_failures.push(StoreFailure {
                    key: self.key_of(bucket),
                    kind,
                });
            }
        }
        report
    }

    /// Current rate-limit info of a scope (read only), e.g. for responses
    /// that did not go through [`Budgets::reserve`].
    pub fn peek(
        &self,
        store: &dyn SharedStore,
        clock: &dyn Clock,
        scope: &ScopeId,
        limits: &CompiledLimits,
    ) -> Result<RateLimitInfo, StoreFailure> {
        let ids = WindowIds::at_ms(clock.now_ms());
        let name = scope.storage_name();
        let key = self.key_of(self.bucket_of_scope(scope, &name));
        let fail = |kind| StoreFailure {
            key: key.clone(),
            kind,
        };
        let value = match store.get(&key) {
            Ok(Some((v, _))) => v,
            Ok(None) => return Err(fail(StoreFailureKind::Missing)),
            Err(_) => return Err(fail(StoreFailureKind::Unavailable)),
        };
        let data = parse_bucket(&value).ok_or_else(|| fail(StoreFailureKind::Corrupt))?;
        let entry = data.s.get(&name).cloned().unwrap_or_default();
        Ok(rate_limit_info(&entry, limits, &ids))
    }
}

/// Rate-limit info as it was before a reservation of `e`.
fn unreserve_info(mut r: RateLimitInfo, e: Estimate) -> RateLimitInfo {
    r.remaining_requests = r.remaining_requests.map(|v| v.saturating_add(1));
    r.remaining_tokens = r.remaining_tokens.map(|v| v.saturating_add(e.tokens));
    if let (Some(rem), Some(lim)) = (r.remaining_requests, r.limit_requests) {
        r.remaining_requests = Some(rem.min(lim));
    }
    if let (Some(rem), Some(lim)) = (r.remaining_tokens, r.limit_tokens) {
        r.remaining_tokens = Some(rem.min(lim));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::host::{FakeClock, FakeStore};
    use std::cell::{Cell, RefCell};

    /// 2024-01-01T00:00:00Z
    const JAN_1_2024_S: u64 = 1_704_067_200;

    fn date(year: u64, month: u64, day: u64) -> Civil {
        Civil { year, month, day }
    }

    fn ms(s: u64) -> u64 {
        s * 1000
    }

    fn limits(json: &str) -> CompiledLimits {
        serde_json::from_str::<LimitsConfig>(json)
            .unwrap()
            .compile()
            .unwrap()
    }

    fn est(tokens: u64, micro_usd: u64) -> Estimate {
        Estimate { tokens, micro_usd }
    }

    fn engine(mode: FailureMode) -> Budgets {
        Budgets::new(BudgetOptions {
            failure_mode: mode,
            ..BudgetOptions::default()
        })
    }

    fn setup(mode: FailureMode) -> (Budgets, FakeStore, FakeClock) {
        let b = engine(mode);
        let store = FakeStore::new();
        b.init(&store).unwrap();
        // 2024-01-01T00:00:10Z
        (b, store, FakeClock::at(ms(JAN_1_2024_S + 10)))
    }

    fn key(id: &str) -> ScopeId {
        ScopeId::Key(id.to_string())
    }

    fn stored_entry(b: &Budgets, store: &FakeStore, scope: &ScopeId) -> Option<Entry> {
        let name = scope.storage_name();
        let raw = store.raw(&Budgets::bucket_key(b.bucket_of(&name)))?;
        let bucket: Bucket = parse_bucket(&raw).unwrap();
        bucket.s.get(&name).cloned()
    }

    fn minute(b: &Budgets, store: &FakeStore, scope: &ScopeId) -> Win {
        stored_entry(b, store, scope)
            .and_then(|e| e.m)
            .unwrap_or_default()
    }

    fn limit_of(d: &Denial) -> &LimitExceeded {
        match &d.reason {
            DenialReason::Limit(l) => l,
            other => panic!("expected a limit denial, got {other:?}"),
        }
    }

    // ----- window arithmetic ------------------------------------------------

    #[test]
    fn civil_dates_known_values() {
        assert_eq!(civil_from_days(0), date(1970, 1, 1));
        assert_eq!(days_from_civil(date(1970, 1, 1)), 0);
        assert_eq!(days_from_civil(date(2024, 1, 1)), JAN_1_2024_S / DAY_S);
        assert_eq!(civil_from_days(19_782), date(2024, 2, 29));
        assert_eq!(civil_from_days(19_783), date(2024, 3, 1));
        assert_eq!(civil_from_days(11_016), date(2000, 2, 29)); // 2000 is leap
        assert_eq!(civil_from_days(19_416), date(2023, 2, 28));
        assert_eq!(civil_from_days(19_417), date(2023, 3, 1)); // 2023 is not
        let feb28_2100 = days_from_civil(date(2100, 2, 28));
        assert_eq!(civil_from_days(feb28_2100 + 1), date(2100, 3, 1)); // 2100 is not
        assert_eq!(civil_from_days(19_722), date(2023, 12, 31));
        assert_eq!(civil_from_days(19_723), date(2024, 1, 1));
    }

    #[test]
    fn civil_round_trip_and_monotonic() {
        let mut prev = civil_from_days(0);
        for d in 1..200_000u64 {
            let c = civil_from_days(d);
            assert_eq!(days_from_civil(c), d, "{c:?}");
            let next_day = c.day == prev.day + 1 && c.month == prev.month && c.year == prev.year;
            let next_month = c.day == 1 && c.month == prev.month + 1 && c.year == prev.year;
            let next_year =
                c.day == 1 && c.month == 1 && prev.month == 12 && c.year == prev.year + 1;
            assert!(next_day || next_month || next_year, "{prev:?} -> {c:?}");
            prev = c;
        }
        // Huge inputs do not panic.
        let _ = civil_from_days(u64::MAX);
        let _ = days_from_civil(date(u64::MAX, 12, 31));
        let _ = Period::Month.window_end_s(u64::MAX);
        let _ = Period::Month.retry_after_s(u64::MAX);
    }

    #[test]
    fn minute_and_day_boundaries() {
        assert_eq!(Period::Minute.index(59), 0);
        assert_eq!(Period::Minute.index(60), 1);
        assert_eq!(Period::Minute.window_end_s(60), 120);
        assert_eq!(Period::Minute.retry_after_s(59_999), 1);
        assert_eq!(Period::Minute.retry_after_s(59_001), 1);
        assert_eq!(Period::Minute.retry_after_s(59_000), 1);
        assert_eq!(Period::Minute.retry_after_s(58_999), 2);
        assert_eq!(Period::Minute.retry_after_s(60_000), 60);
        assert_eq!(Period::Day.index(86_399), 0);
        assert_eq!(Period::Day.index(86_400), 1);
        assert_eq!(Period::Day.retry_after_s(ms(86_399) + 500), 1);
        assert_eq!(Period::Day.retry_after_s(ms(JAN_1_2024_S)), 86_400);
    }

    #[test]
    fn month_boundaries() {
        // Dec -> Jan.
        let dec31_last = JAN_1_2024_S - 1;
        assert_eq!(Period::Month.index(dec31_last), 2023 * 12 + 11);
        assert_eq!(Period::Month.index(JAN_1_2024_S), 2024 * 12);
        assert_eq!(Period::Month.window_end_s(dec31_last), JAN_1_2024_S);
        assert_eq!(Period::Month.retry_after_s(ms(dec31_last)), 1);
        assert_eq!(month_start_s(2024 * 12), JAN_1_2024_S);
        // February of a leap year has 29 days.
        let feb1 = JAN_1_2024_S + 31 * DAY_S;
        assert_eq!(Period::Month.window_end_s(feb1), feb1 + 29 * DAY_S);
        assert_eq!(Period::Month.retry_after_s(ms(feb1)), 29 * DAY_S);
        // ... and 28 otherwise.
        let feb1_2023 = days_from_civil(date(2023, 2, 1)) * DAY_S;
        assert_eq!(
            Period::Month.window_end_s(feb1_2023),
            feb1_2023 + 28 * DAY_S
        );
        // The epoch.
        assert_eq!(Period::Month.index(0), 1970 * 12);
        assert_eq!(Period::Month.window_end_s(0), 31 * DAY_S);
    }

    // ----- configuration ----------------------------------------------------

    #[test]
    fn compile_limits() {
        let l = limits(r#"{"requests_per_minute": 5, "usd_per_day": 1.5, "usd_per_month": 0}"#);
        assert_eq!(l.requests_per_minute, Some(5));
        assert_eq!(l.micro_usd_per_day, Some(1_500_000));
        assert_eq!(l.micro_usd_per_month, Some(0));
        assert!(!l.is_empty());
        assert!(limits("{}").is_empty());

        let bad = |cfg: LimitsConfig| cfg.compile().unwrap_err().field;
        let nan = LimitsConfig {
            usd_per_day: Some(f64::NAN),
            ..LimitsConfig::default()
        };
        assert_eq!(bad(nan), "usd_per_day");
        let neg = LimitsConfig {
            usd_per_month: Some(-0.01),
            ..LimitsConfig::default()
        };
        assert_eq!(bad(neg), "usd_per_month");
        let inf = LimitsConfig {
            usd_per_month: Some(f64::INFINITY),
            ..LimitsConfig::default()
        };
        assert_eq!(bad(inf), "usd_per_month");
        let huge = LimitsConfig {
            usd_per_day: Some(1e300),
            ..LimitsConfig::default()
        };
        assert_eq!(bad(huge), "usd_per_day");
        assert!(serde_json::from_str::<LimitsConfig>(r#"{"rpm": 1}"#).is_err());
        assert!(serde_json::from_str::<LimitsConfig>(r#"{"tokens_per_minute": -1}"#).is_err());
        let mode: FailureMode = serde_json::from_str(r#""closed""#).unwrap();
        assert_eq!(mode, FailureMode::Closed);
    }

    #[test]
    fn user_scope_names() {
        let short = ScopeId::User {
            key: "k".into(),
            user: "alice".into(),
        };
        assert_eq!(short.storage_name(), "user:k:alice");
        let long = ScopeId::User {
            key: "k".into(),
            user: "x".repeat(500),
        };
        let name = long.storage_name();
        assert!(name.starts_with("user:k:#") && name.len() == "user:k:#".len() + 64);
        let odd = ScopeId::User {
            key: "k".into(),
            user: "a b\"".into(),
        };
        assert!(odd.storage_name().starts_with("user:k:#"));
        assert_eq!(ScopeId::Tenant("t".into()).storage_name(), "tenant:t");
    }

    // ----- reserve / settle / release ----------------------------------------

    #[test]
    fn init_creates_buckets_once_and_keeps_counts() {
        let (b, store, clock) = setup(FailureMode::Closed);
        assert_eq!(store.len(), DEFAULT_BUCKETS as usize);
        let l = limits(r#"{"requests_per_minute": 10}"#);
        b.reserve(&store, &clock, &[(key("a"), &l)], est(0, 0))
            .unwrap();
        b.init(&store).unwrap(); // a reload: counts survive
        assert_eq!(minute(&b, &store, &key("a")).requests, 1);
    }

    #[test]
    fn requests_per_minute_and_window_reset() {
        let (b, store, clock) = setup(FailureMode::Closed);
        let l = limits(r#"{"requests_per_minute": 2}"#);
        let scopes = [(key("a"), &l)];
        let r1 = b.reserve(&store, &clock, &scopes, est(5, 0)).unwrap();
        assert_eq!(
            r1.rate_limit,
            Some(RateLimitInfo {
                limit_requests: Some(2),
                remaining_requests: Some(1),
                limit_tokens: None,
                remaining_tokens: None,
            })
        );
        let r2 = b.reserve(&store, &clock, &scopes, est(5, 0)).unwrap();
        assert_eq!(r2.rate_limit.unwrap().remaining_requests, Some(0));
        let d = b.reserve(&store, &clock, &scopes, est(5, 0)).unwrap_err();
        assert_eq!(d.status(), 429);
        let l3 = limit_of(&d);
        assert_eq!(l3.limit, LimitKind::RequestsPerMinute);
        assert_eq!(l3.limit_value, 2);
        assert_eq!(l3.remaining, 0);
        assert_eq!(l3.retry_after_s, 50); // at :10 of the minute
        assert_eq!(d.retry_after_s(), 50);
        assert_eq!(d.rate_limit.unwrap().remaining_requests, Some(0));
        assert_eq!(minute(&b, &store, &key("a")).requests, 2);

        clock.advance(ms(50)); // the next minute
        let r = b.reserve(&store, &clock, &scopes, est(5, 0)).unwrap();
        assert_eq!(r.rate_limit.unwrap().remaining_requests, Some(1));
        assert_eq!(minute(&b, &store, &key("a")).requests, 1);
    }

    #[test]
    fn tokens_reserve_settle_release_arithmetic() {
        let (b, store, clock) = setup(FailureMode::Closed);
        let l = limits(r#"{"tokens_per_minute": 100, "tokens_per_day": 1000}"#);
        let scopes = [(key("a"), &l)];
        let r1 = b.reserve(&store, &clock, &scopes, est(30, 0)).unwrap();
        let r2 = b.reserve(&store, &clock, &scopes, est(30, 0)).unwrap();
        let r3 = b.reserve(&store, &clock, &scopes, est(30, 0)).unwrap();
        let info = r3.rate_limit.unwrap();
        assert_eq!(info.limit_tokens, Some(100)); // tightest: per minute
        assert_eq!(info.remaining_tokens, Some(10));
        // used + reserved + estimate > limit: refused.
        let d = b.reserve(&store, &clock, &scopes, est(30, 0)).unwrap_err();
        let l4 = limit_of(&d);
        assert_eq!((l4.limit, l4.remaining), (LimitKind::TokensPerMinute, 10));
        // A request that fits is still admitted.
        let r4 = b.reserve(&store, &clock, &scopes, est(10, 0)).unwrap();
        assert_eq!(r4.rate_limit.unwrap().remaining_tokens, Some(0));

        // Settle r1 at 12 real tokens: 30 reserved -> 12 used.
        let rep = b.settle(
            &store,
            &clock,
            &r1,
            Actual {
                tokens: 12,
                micro_usd: Some(0),
            },
        );
        assert_eq!(rep, SettleReport::default());
        let w = minute(&b, &store, &key("a"));
        assert_eq!(
            (w.tokens_used, w.tokens_reserved, w.requests),
            (12, 70, 5 - 1)
        );
        // Release r2: tokens freed, the request stays counted.
        let rep = b.release(&store, &clock, &r2);
        assert!(rep.store_failures.is_empty() && !rep.cost_unknown);
        let w = minute(&b, &store, &key("a"));
        assert_eq!((w.tokens_used, w.tokens_reserved, w.requests), (12, 40, 4));
        let day = stored_entry(&b, &store, &key("a")).unwrap().d.unwrap();
        assert_eq!((day.tokens_used, day.tokens_reserved), (12, 40));
        // Real usage above the estimate is charged in full.
        b.settle(
            &store,
            &clock,
            &r3,
            Actual {
                tokens: 80,
                micro_usd: Some(0),
            },
        );
        b.settle(
            &store,
            &clock,
            &r4,
            Actual {
                tokens: 0,
                micro_usd: Some(0),
            },
        );
        let w = minute(&b, &store, &key("a"));
        assert_eq!((w.tokens_used, w.tokens_reserved), (92, 0));
        let info = b.peek(&store, &clock, &key("a"), &l).unwrap();
        assert_eq!(info.remaining_tokens, Some(8));
    }

    #[test]
    fn estimate_above_limit_is_refused_small_ones_work() {
        let (b, store, clock) = setup(FailureMode::Closed);
        let l = limits(r#"{"tokens_per_minute": 50}"#);
        let scopes = [(key("small"), &l)];
        let d = b.reserve(&store, &clock, &scopes, est(51, 0)).unwrap_err();
        assert_eq!(limit_of(&d).remaining, 50);
        assert!(b.reserve(&store, &clock, &scopes, est(50, 0)).is_ok());
        // A zero limit refuses everything that costs something.
        let zero = limits(r#"{"tokens_per_minute": 0}"#);
        assert!(b
            .reserve(&store, &clock, &[(key("z"), &zero)], est(1, 0))
            .is_err());
    }

    #[test]
    fn dollars_settle_on_real_cost_and_unknown_cost_is_flagged() {
        let (b, store, clock) = setup(FailureMode::Closed);
        let l = limits(r#"{"usd_per_day": 1.0, "usd_per_month": 10}"#);
        let scopes = [(key("a"), &l)];
        let r = b
            .reserve(&store, &clock, &scopes, est(100, 600_000))
            .unwrap();
        assert!(r.rate_limit.unwrap().limit_tokens.is_none());
        let d = b
            .reserve(&store, &clock, &scopes, est(100, 500_000))
            .unwrap_err();
        let l2 = limit_of(&d);
        assert_eq!((l2.limit, l2.remaining), (LimitKind::UsdPerDay, 400_000));
        assert_eq!(l2.retry_after_s, 86_400 - 10);
        b.settle(
            &store,
            &clock,
            &r,
            Actual {
                tokens: 50,
                micro_usd: Some(250_000),
            },
        );
        let e = stored_entry(&b, &store, &key("a")).unwrap();
        let (d_w, o_w) = (e.d.unwrap(), e.o.unwrap());
        assert_eq!((d_w.cost_used, d_w.cost_reserved), (250_000, 0));
        assert_eq!((o_w.cost_used, o_w.cost_reserved), (250_000, 0));
        let r2 = b
            .reserve(&store, &clock, &scopes, est(100, 500_000))
            .unwrap();
        let rep = b.settle(
            &store,
            &clock,
            &r2,
            Actual {
                tokens: 50,
                micro_usd: None,
            },
        );
        assert!(rep.cost_unknown);
        let d_w = stored_entry(&b, &store, &key("a")).unwrap().d.unwrap();
        assert_eq!((d_w.cost_used, d_w.cost_reserved), (250_000, 0));
    }

    #[test]
    fn monthly_limit_retry_after() {
        let b = engine(FailureMode::Closed);
        let store = FakeStore::new();
        b.init(&store).unwrap();
        // 2024-02-28T12:00:00Z, leap year: month ends 2024-03-01.
        let now = JAN_1_2024_S + (31 + 27) * DAY_S + 43_200;
        let clock = FakeClock::at(ms(now));
        let l = limits(r#"{"usd_per_month": 0.000001}"#);
        let d = b
            .reserve(&store, &clock, &[(key("a"), &l)], est(0, 2))
            .unwrap_err();
        let l1 = limit_of(&d);
        assert_eq!(l1.limit, LimitKind::UsdPerMonth);
        assert_eq!(l1.retry_after_s, DAY_S + 43_200);
    }

    #[test]
    fn longest_retry_after_wins_when_several_limits_refuse() {
        let (b, store, clock) = setup(FailureMode::Closed);
        let l = limits(r#"{"tokens_per_minute": 10, "tokens_per_day": 10}"#);
        let d = b
            .reserve(&store, &clock, &[(key("a"), &l)], est(11, 0))
            .unwrap_err();
        assert_eq!(limit_of(&d).limit, LimitKind::TokensPerDay);
    }

    #[test]
    fn settle_after_the_window_rolled_over() {
        let (b, store, clock) = setup(FailureMode::Closed);
        let l = limits(r#"{"tokens_per_minute": 100, "tokens_per_day": 1000}"#);
        let scopes = [(key("a"), &l)];
        let r = b.reserve(&store, &clock, &scopes, est(60, 0)).unwrap();
        clock.advance(ms(60)); // next minute, same day
        b.settle(
            &store,
            &clock,
            &r,
            Actual {
                tokens: 40,
                micro_usd: Some(0),
            },
        );
        let e = stored_entry(&b, &store, &key("a")).unwrap();
        let m = e.m.unwrap();
        // The old minute's reservation went with it; the usage is charged now.
        assert_eq!((m.tokens_used, m.tokens_reserved, m.requests), (40, 0, 0));
        let d = e.d.unwrap();
        assert_eq!((d.tokens_used, d.tokens_reserved), (40, 0));
        // Release after rollover: nothing to release, nothing charged.
        let r2 = b.reserve(&store, &clock, &scopes, est(10, 0)).unwrap();
        clock.advance(ms(60));
        b.release(&store, &clock, &r2);
        let d = stored_entry(&b, &store, &key("a")).unwrap().d.unwrap();
        assert_eq!((d.tokens_used, d.tokens_reserved), (40, 0));
    }

    /// Two scope names that land in different buckets.
    fn two_buckets(b: &Budgets) -> (ScopeId, ScopeId) {
        let k = key("k1");
        let kb = b.bucket_of(&k.storage_name());
        for i in 0..1000 {
            let t = ScopeId::Tenant(format!("t{i}"));
            if b.bucket_of(&t.storage_name()) != kb {
                return (k, t);
            }
        }
        unreachable!()
    }

    #[test]
    fn rollback_across_buckets_when_a_later_scope_refuses() {
        let (b, store, clock) = setup(FailureMode::Closed);
        let (k, t) = two_buckets(&b);
        let kl = limits(r#"{"requests_per_minute": 100, "tokens_per_minute": 1000}"#);
        let tl = limits(r#"{"tokens_per_minute": 50}"#);
        let scopes = [(k.clone(), &kl), (t.clone(), &tl)];
        b.reserve(&store, &clock, &scopes, est(40, 0)).unwrap();
        let d = b.reserve(&store, &clock, &scopes, est(40, 0)).unwrap_err();
        let l = limit_of(&d);
        assert_eq!(l.scope, t.storage_name());
        assert_eq!(l.limit, LimitKind::TokensPerMinute);
        // The key's rate-limit info is as before this request.
        let info = d.rate_limit.unwrap();
        assert_eq!(info.remaining_requests, Some(99));
        assert_eq!(info.remaining_tokens, Some(960));
        // Nothing of the refused request is left on the key.
        let w = minute(&b, &store, &k);
        assert_eq!((w.requests, w.tokens_reserved), (1, 40));
        assert_eq!(minute(&b, &store, &t).tokens_reserved, 40);
    }

    #[test]
    fn same_bucket_scopes_are_one_write_and_leave_nothing_on_refusal() {
        let b = Budgets::new(BudgetOptions {
            failure_mode: FailureMode::Closed,
            buckets: 1,
            ..BudgetOptions::default()
        });
        let store = FakeStore::new();
        b.init(&store).unwrap();
        let clock = FakeClock::at(ms(JAN_1_2024_S));
        let kl = limits(r#"{"requests_per_minute": 100}"#);
        let ul = limits(r#"{"requests_per_minute": 1}"#);
        let u = ScopeId::User {
            key: "k".into(),
            user: "bob".into(),
        };
        let scopes = [(key("k"), &kl), (u.clone(), &ul)];
        b.reserve(&store, &clock, &scopes, est(1, 0)).unwrap();
        assert!(b.reserve(&store, &clock, &scopes, est(1, 0)).is_err());
        assert_eq!(minute(&b, &store, &key("k")).requests, 1);
        assert_eq!(minute(&b, &store, &u).requests, 1);
        // The same scope twice counts twice.
        let twice = [(key("x"), &ul), (key("x"), &ul)];
        assert!(b.reserve(&store, &clock, &twice, est(0, 0)).is_err());
        assert!(stored_entry(&b, &store, &key("x")).is_none());
    }

    #[test]
    fn scopes_without_limits_touch_nothing() {
        let b = engine(FailureMode::Closed);
        let store = FakeStore::new(); // not even initialised
        let clock = FakeClock::at(0);
        let none = CompiledLimits::default();
        let r = b
            .reserve(&store, &clock, &[(key("a"), &none)], est(1, 1))
            .unwrap();
        assert!(r.rate_limit.is_none() && r.store_failures.is_empty());
        b.settle(&store, &clock, &r, Actual::default());
        assert!(store.is_empty());
    }

    // ----- CAS loop and failures ---------------------------------------------

    #[test]
    fn cas_conflicts_within_retries_succeed() {
        let (b, store, clock) = setup(FailureMode::Closed);
        let l = limits(r#"{"requests_per_minute": 10}"#);
        store.inject_conflicts(DEFAULT_CAS_RETRIES);
        let r = b
            .reserve(&store, &clock, &[(key("a"), &l)], est(1, 0))
            .unwrap();
        assert!(r.store_failures.is_empty() && !r.degraded());
        assert_eq!(minute(&b, &store, &key("a")).requests, 1);
    }

    #[test]
    fn cas_retries_exhausted_refuse_whatever_the_failure_mode() {
        // Contention is not a broken store: admitting without a reservation
        // would let concurrent requests overshoot a limit.
        let l = limits(r#"{"requests_per_minute": 10}"#);
        for mode in [FailureMode::Open, FailureMode::Closed] {
            let (b, store, clock) = setup(mode);
            store.inject_conflicts(DEFAULT_CAS_RETRIES + 1);
            let d = b
                .reserve(&store, &clock, &[(key("a"), &l)], est(1, 0))
                .unwrap_err();
            assert_eq!(d.reason, DenialReason::Contention);
            assert_eq!((d.status(), d.retry_after_s()), (429, 1));
            assert_eq!(d.store_failures[0].kind, StoreFailureKind::RetriesExhausted);
            assert_eq!(minute(&b, &store, &key("a")).requests, 0);
        }
    }

    #[test]
    fn end_users_are_bounded_per_key_and_never_displace_key_limits() {
        let b = Budgets::new(BudgetOptions {
            max_users_per_key: 10,
            ..BudgetOptions::default()
        })
        .with_user_keys(["k".to_string()]);
        assert_eq!(b.max_users_per_key(), 10);
        let store = FakeStore::new();
        b.init(&store).unwrap();
        let clock = FakeClock::at(ms(JAN_1_2024_S + 10));
        let kl = limits(r#"{"requests_per_minute": 1000}"#);
        let ul = limits(r#"{"requests_per_minute": 5}"#);
        let mut admitted = 0;
        let mut too_many = 0;
        for i in 0..200 {
            let user = ScopeId::User {
                key: "k".into(),
                user: format!("u{i}"),
            };
            match b.reserve(&store, &clock, &[(key("k"), &kl), (user, &ul)], est(1, 0)) {
                Ok(r) => {
                    assert!(!r.degraded());
                    admitted += 1;
                }
                Err(d) => {
                    assert_eq!(d.reason, DenialReason::TooManyUsers);
                    assert_eq!(d.status(), 429);
                    too_many += 1;
                }
            }
        }
        assert_eq!(admitted, 10);
        assert_eq!(too_many, 190);
        // The refused requests left nothing in the key's own counts.
        assert_eq!(minute(&b, &store, &key("k")).requests, 10);
        // A tracked user keeps working, and its limit holds.
        let u0 = ScopeId::User {
            key: "k".into(),
            user: "u0".into(),
        };
        for _ in 0..4 {
            b.reserve(
                &store,
                &clock,
                &[(key("k"), &kl), (u0.clone(), &ul)],
                est(1, 0),
            )
            .unwrap();
        }
        let d = b
            .reserve(&store, &clock, &[(key("k"), &kl), (u0, &ul)], est(1, 0))
            .unwrap_err();
        assert!(matches!(d.reason, DenialReason::Limit(_)));
        // The next minute, the users' windows are over: new users fit again.
        let clock = FakeClock::at(ms(JAN_1_2024_S + 70));
        let fresh = ScopeId::User {
            key: "k".into(),
            user: "new".into(),
        };
        b.reserve(&store, &clock, &[(key("k"), &kl), (fresh, &ul)], est(1, 0))
            .unwrap();
    }

    #[test]
    fn host_failures_follow_the_failure_mode() {
        let l = limits(r#"{"requests_per_minute": 10}"#);
        let (b, store, clock) = setup(FailureMode::Open);
        store.inject_failures(1);
        let r = b
            .reserve(&store, &clock, &[(key("a"), &l)], est(1, 0))
            .unwrap();
        assert_eq!(r.store_failures[0].kind, StoreFailureKind::Unavailable);
        assert!(r.rate_limit.is_none());

        let (b, store, clock) = setup(FailureMode::Closed);
        store.inject_failures(1);
        let d = b
            .reserve(&store, &clock, &[(key("a"), &l)], est(1, 0))
            .unwrap_err();
        assert_eq!(d.reason, DenialReason::StoreUnavailable);
        // Fails on the write too (after a successful read).
        let (b, store, clock) = setup(FailureMode::Closed);
        let counting = CountingStore::new(&store, 1);
        let d = b
            .reserve(&counting, &clock, &[(key("a"), &l)], est(1, 0))
            .unwrap_err();
        assert_eq!(d.store_failures[0].kind, StoreFailureKind::Unavailable);
        // Settle reports failures, never panics.
        let (b, store, clock) = setup(FailureMode::Closed);
        let r = b
            .reserve(&store, &clock, &[(key("a"), &l)], est(1, 0))
            .unwrap();
        store.inject_failures(1);
        let rep = b.settle(&store, &clock, &r, Actual::default());
        assert_eq!(rep.store_failures[0].kind, StoreFailureKind::Unavailable);
        assert!(rep.cost_unknown);
    }

    #[test]
    fn failure_in_a_later_bucket_rolls_back_when_closed() {
        let (b, store, clock) = setup(FailureMode::Closed);
        let (k, t) = two_buckets(&b);
        let l = limits(r#"{"requests_per_minute": 10}"#);
        let scopes = [(k.clone(), &l), (t.clone(), &l)];
        // Corrupt the tenant's bucket.
        let tkey = Budgets::bucket_key(b.bucket_of(&t.storage_name()));
        store.set(&tkey, b"garbage", None).unwrap();
        let d = b.reserve(&store, &clock, &scopes, est(1, 0)).unwrap_err();
        assert_eq!(d.reason, DenialReason::StoreUnavailable);
        assert_eq!(d.store_failures[0].kind, StoreFailureKind::Corrupt);
        assert_eq!(minute(&b, &store, &k).requests, 0);
        // The corrupt bucket was reset: the next request works.
        b.reserve(&store, &clock, &scopes, est(1, 0)).unwrap();
        assert_eq!(minute(&b, &store, &t).requests, 1);
        // Open mode: the key is reserved, the tenant is skipped.
        let (b, store, clock) = setup(FailureMode::Open);
        store.set(&tkey, b"garbage", None).unwrap();
        let r = b.reserve(&store, &clock, &scopes, est(1, 0)).unwrap();
        assert!(r.degraded());
        assert_eq!(minute(&b, &store, &k).requests, 1);
    }

    #[test]
    fn corrupt_values_never_panic() {
        let l = limits(r#"{"requests_per_minute": 10, "tokens_per_day": 100, "usd_per_month": 1}"#);
        let max = u64::MAX;
        let cases: Vec<String> = vec![
            "".into(),
            "null".into(),
            "[]".into(),
            "{\"s\":1}".into(),
            "{\"s\":{\"key:a\":{\"m\":[1,2,3]}}}".into(),
            "{\"s\":{\"key:a\":{\"m\":[-1,0,0,0,0,0]}}}".into(),
            "{\"s\":{\"key:a\":{\"m\":[1.5,0,0,0,0,0]}}}".into(),
            "{\"s\":{\"key:a\":{\"zz\":[1,0,0,0,0,0]}}}".into(),
            "{\"s\":{\"key:a\":{\"m\":[1,0,0,0,0,0,0]}}}".into(),
            "{\"s\":{\"key:a\":{\"m\":[1,0,0,0,0,0]}}".into(),
            "\u{0}\u{ff}".into(),
        ];
        for case in cases {
            let (b, store, clock) = setup(FailureMode::Closed);
            let bkey = Budgets::bucket_key(b.bucket_of("key:a"));
            store.set(&bkey, case.as_bytes(), None).unwrap();
            let Err(d) = b.reserve(&store, &clock, &[(key("a"), &l)], est(1, 1)) else {
                panic!("accepted corrupt value {case:?}");
            };
            assert_eq!(
                d.store_failures[0].kind,
                StoreFailureKind::Corrupt,
                "{case}"
            );
            assert_eq!(store.raw(&bkey).unwrap(), EMPTY_BUCKET, "{case}");
            assert!(b.peek(&store, &clock, &key("a"), &l).is_ok());
        }
        // Saturated counters (valid JSON) refuse, they do not overflow.
        let (b, store, clock) = setup(FailureMode::Closed);
        let ids = WindowIds::at_ms(clock.now_ms());
        let bkey = Budgets::bucket_key(b.bucket_of("key:a"));
        let v = format!(
            "{{\"s\":{{\"key:a\":{{\"m\":[{},{max},{max},{max},{max},{max}],\"d\":[{max},{max},{max},{max},{max},{max}]}}}}}}",
            ids.minute
        );
        store.set(&bkey, v.as_bytes(), None).unwrap();
        let d = b
            .reserve(&store, &clock, &[(key("a"), &l)], est(max, max))
            .unwrap_err();
        assert!(matches!(d.reason, DenialReason::Limit(_)));
        let r = b.reserve(&store, &clock, &[(key("b"), &l)], est(max, max));
        assert!(r.is_err());
    }

    #[test]
    fn missing_bucket_is_a_failure_and_never_blindly_created() {
        let l = limits(r#"{"requests_per_minute": 10}"#);
        let clock = FakeClock::at(ms(JAN_1_2024_S));
        let store = FakeStore::new(); // init never ran
        let b = engine(FailureMode::Closed);
        let d = b
            .reserve(&store, &clock, &[(key("a"), &l)], est(1, 0))
            .unwrap_err();
        assert_eq!(d.reason, DenialReason::StoreUnavailable);
        assert_eq!(d.store_failures[0].kind, StoreFailureKind::Missing);
        let b = engine(FailureMode::Open);
        let r = b
            .reserve(&store, &clock, &[(key("a"), &l)], est(1, 0))
            .unwrap();
        assert_eq!(r.store_failures[0].kind, StoreFailureKind::Missing);
        let rep = b.settle(
            &store,
            &clock,
            &r,
            Actual {
                tokens: 3,
                micro_usd: Some(1),
            },
        );
        assert_eq!(rep.store_failures[0].kind, StoreFailureKind::Missing);
        assert!(store.is_empty(), "the request path must not create keys");
        // init repairs it.
        b.init(&store).unwrap();
        assert!(b
            .reserve(&store, &clock, &[(key("a"), &l)], est(1, 0))
            .is_ok());
    }

    #[test]
    fn init_failures_and_corrupt_repair() {
        let b = engine(FailureMode::Open);
        let store = FakeStore::new();
        store.inject_failures(1);
        assert_eq!(
            b.init(&store).unwrap_err().kind,
            StoreFailureKind::Unavailable
        );
        b.init(&store).unwrap();
        store.set(&Budgets::bucket_key(3), b"{bad", None).unwrap();
        b.init(&store).unwrap();
        assert_eq!(store.raw(&Budgets::bucket_key(3)).unwrap(), EMPTY_BUCKET);
    }

    #[test]
    fn full_bucket_and_pruning() {
        let b = Budgets::new(BudgetOptions {
            failure_mode: FailureMode::Closed,
            buckets: 1,
            max_scopes_per_bucket: 3,
            ..BudgetOptions::default()
        });
        let store = FakeStore::new();
        b.init(&store).unwrap();
        let clock = FakeClock::at(ms(JAN_1_2024_S));
        let l = limits(r#"{"requests_per_minute": 10}"#);
        let user = |u: &str| ScopeId::User {
            key: "k".into(),
            user: u.into(),
        };
        for u in ["a", "b", "c"] {
            b.reserve(&store, &clock, &[(user(u), &l)], est(0, 0))
                .unwrap();
        }
        let d = b
            .reserve(&store, &clock, &[(user("d"), &l)], est(0, 0))
            .unwrap_err();
        assert_eq!(d.store_failures[0].kind, StoreFailureKind::Full);
        // Existing scopes still work.
        b.reserve(&store, &clock, &[(user("a"), &l)], est(0, 0))
            .unwrap();
        // A minute later the old windows are pruned on the next write.
        clock.advance(ms(60));
        b.reserve(&store, &clock, &[(user("d"), &l)], est(0, 0))
            .unwrap();
        let raw = store.raw(&Budgets::bucket_key(0)).unwrap();
        let bucket: Bucket = parse_bucket(&raw).unwrap();
        assert_eq!(bucket.s.keys().collect::<Vec<_>>(), vec!["user:k:d"]);
    }

    // ----- concurrency -------------------------------------------------------

    type Hook<'a> = Box<dyn FnOnce(&FakeStore) + 'a>;

    /// A store that runs `hook` (another "worker") right before the first
    /// write, i.e. between this worker's read and its CAS write.
    struct HookStore<'a> {
        inner: &'a FakeStore,
        hook: RefCell<Option<Hook<'a>>>,
    }

    impl<'a> HookStore<'a> {
        fn new(inner: &'a FakeStore, hook: impl FnOnce(&FakeStore) + 'a) -> Self {
            Self {
                inner,
                hook: RefCell::new(Some(Box::new(hook))),
            }
        }
    }

    impl SharedStore for HookStore<'_> {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            let hook = self.hook.borrow_mut().take();
            if let Some(hook) = hook {
                hook(self.inner);
            }
            self.inner.set(key, value, cas)
        }
    }

    /// A store whose `fail_set`-th write fails with `Unavailable`.
    struct CountingStore<'a> {
        inner: &'a FakeStore,
        fail_set: u32,
        sets: Cell<u32>,
    }

    impl<'a> CountingStore<'a> {
        fn new(inner: &'a FakeStore, fail_set: u32) -> Self {
            Self {
                inner,
                fail_set,
                sets: Cell::new(0),
            }
        }
    }

    impl SharedStore for CountingStore<'_> {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.sets.set(self.sets.get() + 1);
            if self.sets.get() == self.fail_set {
                return Err(StoreError::Unavailable);
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn two_workers_interleaved_lose_nothing() {
        let (a, store, clock) = setup(FailureMode::Closed);
        let b = a.clone();
        let l = limits(r#"{"requests_per_minute": 100, "tokens_per_minute": 1000}"#);
        let scopes = [(key("k"), &l)];
        let hooked = HookStore::new(&store, |inner| {
            b.reserve(inner, &clock, &scopes, est(10, 0)).unwrap();
        });
        // Worker A reads, worker B reserves, A's CAS fails and A retries.
        a.reserve(&hooked, &clock, &scopes, est(20, 0)).unwrap();
        let w = minute(&a, &store, &key("k"));
        assert_eq!((w.requests, w.tokens_reserved), (2, 30));
    }

    #[test]
    fn two_workers_racing_for_the_last_tokens() {
        let (a, store, clock) = setup(FailureMode::Closed);
        let b = a.clone();
        let l = limits(r#"{"tokens_per_minute": 100}"#);
        let scopes = [(key("k"), &l)];
        let b_result = RefCell::new(None);
        let hooked = HookStore::new(&store, |inner| {
            *b_result.borrow_mut() = Some(b.reserve(inner, &clock, &scopes, est(60, 0)));
        });
        let a_result = a.reserve(&hooked, &clock, &scopes, est(60, 0));
        drop(hooked);
        let b_result = b_result.into_inner().unwrap();
        // Both read 0 used; only one may be admitted.
        assert!(b_result.is_ok());
        assert!(a_result.is_err());
        assert_eq!(minute(&a, &store, &key("k")).tokens_reserved, 60);
    }

    /// Tiny deterministic PRNG.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// What the simulated workers admitted and settled.
    #[derive(Default)]
    struct Tally {
        admitted: Cell<u64>,
        reserved: Cell<u64>,
        used: Cell<u64>,
        outstanding: RefCell<Vec<Reservation>>,
    }

    fn worker_op(
        e: &Budgets,
        s: &dyn SharedStore,
        clock: &FakeClock,
        scopes: &[(ScopeId, &CompiledLimits)],
        tally: &Tally,
        v: u64,
    ) {
        if v.is_multiple_of(3) {
            let popped = tally.outstanding.borrow_mut().pop();
            if let Some(r) = popped {
                // Real usage at most the estimate, so `used + reserved ≤ limit`
                // must hold at all times.
                let actual = v % (r.estimate.tokens + 1);
                let rep = e.settle(
                    s,
                    clock,
                    &r,
                    Actual {
                        tokens: actual,
                        micro_usd: Some(0),
                    },
                );
                assert!(rep.store_failures.is_empty());
                tally.reserved.set(tally.reserved.get() - r.estimate.tokens);
                tally.used.set(tally.used.get() + actual);
                return;
            }
        }
        let estimate = est(v % 100, 0);
        if let Ok(r) = e.reserve(s, clock, scopes, estimate) {
            assert!(r.store_failures.is_empty());
            tally.admitted.set(tally.admitted.get() + 1);
            tally.reserved.set(tally.reserved.get() + estimate.tokens);
            tally.outstanding.borrow_mut().push(r);
        }
    }

    #[test]
    fn simulated_workers_with_conflicts_count_every_admission() {
        let (engine_a, store, clock) = setup(FailureMode::Closed);
        let engine_b = engine_a.clone();
        let (k, t) = two_buckets(&engine_a);
        let kl = limits(r#"{"requests_per_minute": 1000000, "tokens_per_minute": 5000}"#);
        let tl = limits(r#"{"tokens_per_day": 4000}"#);
        let scopes = [(k.clone(), &kl), (t.clone(), &tl)];
        let tally = Tally::default();
        let mut rng = Lcg(42);
        let mut denied = 0;
        for _ in 0..400 {
            let (first, second) = if rng.next(2) == 0 {
                (&engine_a, &engine_b)
            } else {
                (&engine_b, &engine_a)
            };
            store.inject_conflicts(rng.next(4) as u32);
            let (v1, v2) = (rng.next(1 << 30), rng.next(1 << 30));
            let before = tally.admitted.get();
            if rng.next(2) == 0 {
                worker_op(first, &store, &clock, &scopes, &tally, v1);
            } else {
                // `second` runs between `first`'s read and its CAS write.
                let hooked = HookStore::new(&store, |inner| {
                    worker_op(second, inner, &clock, &scopes, &tally, v2)
                });
                worker_op(first, &hooked, &clock, &scopes, &tally, v1);
            }
            if tally.admitted.get() == before {
                denied += 1;
            }
            let w = minute(&engine_a, &store, &k);
            let d = stored_entry(&engine_a, &store, &t).unwrap().d.unwrap();
            assert_eq!(w.requests, tally.admitted.get());
            assert_eq!(w.tokens_reserved, tally.reserved.get());
            assert_eq!(w.tokens_used, tally.used.get());
            assert_eq!(d.tokens_reserved, tally.reserved.get());
            assert_eq!(d.tokens_used, tally.used.get());
            assert!(w.tokens_reserved + w.tokens_used <= 5000);
            assert!(d.tokens_reserved + d.tokens_used <= 4000);
        }
        assert!(tally.admitted.get() > 20, "{}", tally.admitted.get());
        assert!(denied > 20, "the limit was reached: {denied}");
    }

    #[test]
    fn binary_buckets_round_trip_and_hostile_bytes_never_panic() {
        let mut b = Bucket::default();
        let w = Win::from([7, 1, 2, 3, 4, 5]);
        b.s.insert(
            "key:a".into(),
            Entry {
                m: Some(w),
                d: None,
                o: Some(Win::from([u64::MAX, 0, 0, 0, 0, 9])),
            },
        );
        b.s.insert("user:a:é".into(), Entry::default());
        let bytes = encode_bucket(&b);
        assert_eq!(parse_bucket(&bytes), Some(b.clone()));
        assert_eq!(parse_bucket(b"{}"), Some(Bucket::default()));
        let legacy = serde_json::to_vec(&b).unwrap();
        assert_eq!(parse_bucket(&legacy), Some(b));
        let mut seed: u64 = 7;
        for len in 0..400usize {
            let mut v = vec![BIN_MAGIC];
            for _ in 0..len {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                v.push((seed >> 33) as u8);
            }
            let _ = parse_bucket(&v);
            let mut cut = bytes.clone();
            cut.truncate(len % (bytes.len() + 1));
            let _ = parse_bucket(&cut);
        }
    }
}

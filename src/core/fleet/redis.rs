//! The Redis side of fleet mode: two atomic Lua scripts, the Redis key
//! names, the webdis callout that runs them (`EVAL` through webdis →
//! Envoy `redis_proxy` → Redis Cluster) and the parser of webdis's answers.
//!
//! # Data in Redis
//!
//! One hash per (scope, limit, window), key
//! `{<prefix>:<scope>}:<limit code>:<window index>` (the `{…}` hashtag puts
//! every key of a scope in one slot, so one script may touch several):
//!
//! - `s`: the fleet's reported use in the window (every sidecar's net use,
//!   reported at each exchange; never decreases except by refunds);
//! - `h:<pod>`: what sidecar `<pod>` holds (its unused lease, as of its
//!   last exchange, plus what it was granted then);
//! - `e:<pod>`: when that lease expires (Redis `TIME`, milliseconds).
//!
//! `granted = s + Σ live h ≤ limit` always holds after a script. An expired
//! `h` is deleted by the next script that touches the key, which returns that
//! capacity to the fleet (a dead sidecar). The key expires a little after its
//! window.
//!
//! # The scripts
//!
//! [`GRANT_SCRIPT`]: for each key, with the pod's report `c` (net use since
//! its last exchange, may be negative after refunds), `need`, `chunk`,
//! `limit`, lease TTL and key TTL: sweep expired leases; `s += c` (≥ 0);
//! `h = max(0, h − c)`; `remaining = limit − s − Σh`; grant
//! `min(max(need, min(chunk, remaining / 4)), remaining)` (a partial grant
//! when less than the ask is left; 0 when nothing is); renew `e`. Answers
//! `[granted, held, remaining]` per key: `held` is what the fleet now
//! counts as this pod's lease, the sidecar's authoritative new balance.
//!
//! [`RELEASE_SCRIPT`]: the give-back: `s += c`, delete the pod's lease.
//! Answers `[returned, 0, remaining]` per key.

use serde_json::Value;

use super::config::MAX_LUA_INT;
use crate::core::budget::LimitKind;
use crate::core::cache::encode_path_arg;

/// The grant (exchange) script. ARGV: pod id, then per key: report, need,
/// chunk, limit, lease TTL ms, key TTL ms.
pub const GRANT_SCRIPT: &str = "local function n(v) local x=tonumber(v) if x==nil or x~=x or x==math.huge or x==-math.huge then return nil end return math.floor(x) end \
local pod=ARGV[1] \
if pod==nil or pod=='' or #ARGV~=1+6*#KEYS then return redis.error_reply('ERR llmgate: bad arguments') end \
local t=redis.call('TIME') local now=tonumber(t[1])*1000+math.floor(tonumber(t[2])/1000) \
local out={} \
for i=1,#KEYS do \
local k=KEYS[i] local b=1+(i-1)*6 \
local rep,need,chunk,limit,ttl,kttl=n(ARGV[b+1]),n(ARGV[b+2]),n(ARGV[b+3]),n(ARGV[b+4]),n(ARGV[b+5]),n(ARGV[b+6]) \
if not (rep and need and chunk and limit and ttl and kttl) or need<0 or chunk<0 or limit<0 or ttl<1 or kttl<1 then return redis.error_reply('ERR llmgate: bad arguments') end \
local all=redis.call('HGETALL',k) local s,h,e=0,{},{} \
for j=1,#all,2 do local f=all[j] local v=n(all[j+1]) or 0 local g,p=string.sub(f,1,2),string.sub(f,3) \
if f=='s' then s=v elseif g=='h:' then h[p]=v elseif g=='e:' then e[p]=v end end \
for p,_ in pairs(e) do if h[p]==nil then redis.call('HDEL',k,'e:'..p) end end \
local mine,others=0,0 \
for p,v in pairs(h) do if (e[p] or 0)<=now then redis.call('HDEL',k,'h:'..p,'e:'..p) elseif p==pod then mine=v else others=others+v end end \
s=math.max(0,s+rep) mine=math.max(0,mine-rep) \
local rem=math.max(0,limit-s-others-mine) \
local g=math.min(math.max(need,math.min(chunk,math.floor(rem/4))),rem) \
mine=mine+g rem=rem-g \
redis.call('HSET',k,'s',string.format('%d',s)) \
if mine>0 then redis.call('HSET',k,'h:'..pod,string.format('%d',mine),'e:'..pod,string.format('%d',now+ttl)) else redis.call('HDEL',k,'h:'..pod,'e:'..pod) end \
redis.call('PEXPIRE',k,kttl) \
out[#out+1]=g out[#out+1]=mine out[#out+1]=rem \
end \
return out";

/// The give-back script. ARGV: pod id, then per key: report, limit, key TTL ms.
pub const RELEASE_SCRIPT: &str = "local function n(v) local x=tonumber(v) if x==nil or x~=x or x==math.huge or x==-math.huge then return nil end return math.floor(x) end \
local pod=ARGV[1] \
if pod==nil or pod=='' or #ARGV~=1+3*#KEYS then return redis.error_reply('ERR llmgate: bad arguments') end \
local t=redis.call('TIME') local now=tonumber(t[1])*1000+math.floor(tonumber(t[2])/1000) \
local out={} \
for i=1,#KEYS do \
local k=KEYS[i] local b=1+(i-1)*3 \
local rep,limit,kttl=n(ARGV[b+1]),n(ARGV[b+2]),n(ARGV[b+3]) \
if not (rep and limit and kttl) or limit<0 or kttl<1 then return redis.error_reply('ERR llmgate: bad arguments') end \
local all=redis.call('HGETALL',k) local s,h,e=0,{},{} \
for j=1,#all,2 do local f=all[j] local v=n(all[j+1]) or 0 local g,p=string.sub(f,1,2),string.sub(f,3) \
if f=='s' then s=v elseif g=='h:' then h[p]=v elseif g=='e:' then e[p]=v end end \
for p,_ in pairs(e) do if h[p]==nil then redis.call('HDEL',k,'e:'..p) end end \
local mine,others=0,0 \
for p,v in pairs(h) do if (e[p] or 0)<=now then redis.call('HDEL',k,'h:'..p,'e:'..p) elseif p==pod then mine=v else others=others+v end end \
s=math.max(0,s+rep) local back=math.max(0,mine-rep) \
redis.call('HDEL',k,'h:'..pod,'e:'..pod) \
redis.call('HSET',k,'s',string.format('%d',s)) \
redis.call('PEXPIRE',k,kttl) \
out[#out+1]=back out[#out+1]=0 out[#out+1]=math.max(0,limit-s-others) \
end \
return out";

/// Short code of a limit in Redis keys and local records.
pub fn limit_code(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::RequestsPerMinute => "rpm",
        LimitKind::TokensPerMinute => "tpm",
        LimitKind::TokensPerDay => "tpd",
        LimitKind::UsdPerDay => "usdd",
        LimitKind::UsdPerMonth => "usdm",
    }
}

/// The limit of a code written by [`limit_code`].
pub fn limit_of_code(code: &str) -> Option<LimitKind> {
    Some(match code {
        "rpm" => LimitKind::RequestsPerMinute,
        "tpm" => LimitKind::TokensPerMinute,
        "tpd" => LimitKind::TokensPerDay,
        "usdd" => LimitKind::UsdPerDay,
        "usdm" => LimitKind::UsdPerMonth,
        _ => return None,
    })
}

/// The Redis key of a scope's limit in a window:
/// `{<prefix>:<scope>}:<limit code>:<window>`. The scope is percent-encoded
/// (`{`, `}` and every byte outside `A-Z a-z 0-9 : _ -` become `%XX`) so the
/// hashtag is exactly the braces written here.
pub fn redis_key(prefix: &str, scope: &str, kind: LimitKind, window: u64) -> String {
    format!(
        "{{{}:{}}}:{}:{}",
        prefix,
        encode_path_arg(scope.as_bytes()),
        limit_code(kind),
        window
    )
}

/// The hashtag of a scope's keys (what Redis Cluster hashes).
pub fn hashtag(prefix: &str, scope: &str) -> String {
    format!("{}:{}", prefix, encode_path_arg(scope.as_bytes()))
}

/// One key of a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantArg {
    pub key: String,
    /// Net use since the last exchange (negative after refunds).
    pub report: i64,
    /// What the waiting request needs beyond the local balance (0: none).
    pub need: u64,
    /// The lease chunk (0: ask nothing, only report and renew).
    pub chunk: u64,
    pub limit: u64,
    pub lease_ttl_ms: u64,
    pub key_ttl_ms: u64,
}

/// One key of a give-back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseArg {
    pub key: String,
    pub report: i64,
    pub limit: u64,
    pub key_ttl_ms: u64,
}

/// An HTTP request to webdis (the shell dispatches it with
/// `dispatch_http_call(cluster, headers, body, [], timeout)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebdisRequest {
    pub method: &'static str,
    /// The command as a path: every argument percent-encoded (`.` as `%2E`,
    /// `/` as `%2F`), webdis's default JSON answer form.
    pub path: String,
    /// Always empty for `EVAL`: webdis appends a body as the last argument,
    /// and a long POST body is where webdis was measured to hang.
    pub body: Vec<u8>,
}

impl WebdisRequest {
    /// The pseudo-headers of the callout.
    pub fn headers<'a>(&'a self, authority: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            (":method", self.method),
            (":path", self.path.as_str()),
            (":authority", authority),
        ]
    }
}

fn clamp_i(v: i64) -> i64 {
    let m = i64::try_from(MAX_LUA_INT).unwrap_or(i64::MAX);
    v.clamp(-m, m)
}

fn clamp_u(v: u64) -> u64 {
    v.min(MAX_LUA_INT)
}

fn eval_path(script: &str, keys: &[&str], args: &[String]) -> String {
    let mut path = String::from("/EVAL/");
    path.push_str(&encode_path_arg(script.as_bytes()));
    path.push('/');
    path.push_str(&keys.len().to_string());
    for k in keys {
        path.push('/');
        path.push_str(&encode_path_arg(k.as_bytes()));
    }
    for a in args {
        path.push('/');
        path.push_str(&encode_path_arg(a.as_bytes()));
    }
    path
}

/// The webdis request running [`GRANT_SCRIPT`] for `pod` on `items` (all
/// keys of one scope, so one slot). Amounts are clamped to 2^53 − 1.
pub fn grant_request(pod: &str, items: &[GrantArg]) -> WebdisRequest {
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    let mut args = vec![pod.to_string()];
    for i in items {
        args.push(clamp_i(i.report).to_string());
        args.push(clamp_u(i.need).to_string());
        args.push(clamp_u(i.chunk).to_string());
        args.push(clamp_u(i.limit).to_string());
        args.push(clamp_u(i.lease_ttl_ms).max(1).to_string());
        args.push(clamp_u(i.key_ttl_ms).max(1).to_string());
    }
    WebdisRequest {
        method: "GET",
        path: eval_path(GRANT_SCRIPT, &keys, &args),
        body: Vec::new(),
    }
}

/// The webdis request running [`RELEASE_SCRIPT`] for `pod` on `items`.
pub fn release_request(pod: &str, items: &[ReleaseArg]) -> WebdisRequest {
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    let mut args = vec![pod.to_string()];
    for i in items {
        args.push(clamp_i(i.report).to_string());
        args.push(clamp_u(i.limit).to_string());
        args.push(clamp_u(i.key_ttl_ms).max(1).to_string());
    }
    WebdisRequest {
        method: "GET",
        path: eval_path(RELEASE_SCRIPT, &keys, &args),
        body: Vec::new(),
    }
}

/// The answer for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemReply {
    /// Granted now (grant) or given back (give-back).
    pub granted: u64,
    /// What the fleet counts as this sidecar's lease now.
    pub held: u64,
    /// The fleet's remaining after this exchange (not counting any sidecar's
    /// lease).
    pub remaining: u64,
}

/// Why a lease callout failed. Every one is a dependency failure (metric
/// label [`CalloutFailure::reason`]) handled by the failure mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalloutFailure {
    /// No answer: the callout timed out or was reset.
    Timeout,
    /// The shell could not dispatch the callout.
    Dispatch,
    /// 503 (webdis cannot reach its backend), empty body.
    Unavailable,
    /// Any other HTTP status.
    HttpStatus(u32),
    /// 200 with an empty body.
    Empty,
    /// A shard is down: `{"EVAL":[false,"upstream failure"]}` or `.txt`
    /// `-upstream failure` (Envoy's `redis_proxy`).
    UpstreamFailure,
    /// The script is not loaded (`EVALSHA`): send it again with `EVAL`.
    NoScript,
    /// Any other Redis error (`{"EVAL":[false,"…"]}`, `-ERR …`).
    RedisError,
    /// 200 with something that is not the script's answer.
    BadAnswer,
}

impl CalloutFailure {
    pub fn reason(self) -> &'static str {
        match self {
            CalloutFailure::Timeout => "timeout",
            CalloutFailure::Dispatch => "dispatch",
            CalloutFailure::Unavailable => "unavailable",
            CalloutFailure::HttpStatus(_) => "http_status",
            CalloutFailure::Empty => "empty",
            CalloutFailure::UpstreamFailure => "upstream_failure",
            CalloutFailure::NoScript => "noscript",
            CalloutFailure::RedisError => "redis_error",
            CalloutFailure::BadAnswer => "bad_answer",
        }
    }
}

fn classify_error(message: &str) -> CalloutFailure {
    let m = message.trim_start_matches('-').trim();
    if m.contains("upstream failure") || m.contains("no upstream host") {
        CalloutFailure::UpstreamFailure
    } else if m.starts_with("NOSCRIPT") {
        CalloutFailure::NoScript
    } else {
        CalloutFailure::RedisError
    }
}

fn as_amount(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.len() <= 20 => s.parse().ok(),
        _ => None,
    }
}

/// Parses webdis's answer to a grant or give-back of `items` keys whose
/// limits are `limits` (same order). `status` `None`: no answer.
///
/// Accepted: 200 with `{"EVAL":[g,h,r, …]}` (or `EVALSHA`), three
/// non-negative integers per key, with `g ≤ h ≤ limit` and `r ≤ limit`
/// (anything else, however well-formed, is `BadAnswer`: a hostile or
/// garbled answer can never raise a sidecar's lease above the limit).
pub fn parse_reply(
    status: Option<u32>,
    body: Option<&[u8]>,
    limits: &[u64],
) -> Result<Vec<ItemReply>, CalloutFailure> {
    let body = body.unwrap_or_default();
    match status {
        None => return Err(CalloutFailure::Timeout),
        Some(200) => {}
        Some(503) => return Err(CalloutFailure::Unavailable),
        Some(s) => return Err(CalloutFailure::HttpStatus(s)),
    }
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() {
        return Err(CalloutFailure::Empty);
    }
    if trimmed.first() == Some(&b'-') {
        return Err(classify_error(&String::from_utf8_lossy(trimmed)));
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(trimmed) else {
        return Err(CalloutFailure::BadAnswer);
    };
    if map.len() != 1 {
        return Err(CalloutFailure::BadAnswer);
    }
    let reply = match (map.get("EVAL"), map.get("EVALSHA")) {
        (Some(v), None) | (None, Some(v)) => v,
        _ => return Err(CalloutFailure::BadAnswer),
    };
    let Value::Array(items) = reply else {
        return Err(CalloutFailure::BadAnswer);
    };
    // webdis's error form: [false, "message"].
    if let (Some(Value::Bool(false)), Some(msg)) = (items.first(), items.get(1)) {
        if items.len() == 2 {
            return Err(classify_error(msg.as_str().unwrap_or_default()));
        }
    }
    if items.len() != limits.len().saturating_mul(3) || limits.is_empty() {
        return Err(CalloutFailure::BadAnswer);
    }
    let mut out = Vec::with_capacity(limits.len());
    for (triple, &limit) in items.chunks(3).zip(limits) {
        let mut it = triple.iter().map(as_amount);
        let (Some(Some(granted)), Some(Some(held)), Some(Some(remaining))) =
            (it.next(), it.next(), it.next())
        else {
            return Err(CalloutFailure::BadAnswer);
        };
        // A give-back answers held = 0 with granted = what was returned.
        let sane = granted <= limit && held <= limit && remaining <= limit;
        if !sane {
            return Err(CalloutFailure::BadAnswer);
        }
        out.push(ItemReply {
            granted,
            held,
            remaining,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_keys_are_hashtagged_and_encoded() {
        assert_eq!(
            redis_key("llmgate:fleet", "key:demo", LimitKind::TokensPerMinute, 7),
            "{llmgate:fleet:key:demo}:tpm:7"
        );
        // Braces and dots in a scope cannot move the hashtag.
        assert_eq!(
            redis_key("p", "tenant:a}{b.c", LimitKind::UsdPerMonth, 1),
            "{p:tenant:a%7D%7Bb%2Ec}:usdm:1"
        );
        assert_eq!(hashtag("p", "key:x"), "p:key:x");
        for k in [
            LimitKind::RequestsPerMinute,
            LimitKind::TokensPerMinute,
            LimitKind::TokensPerDay,
            LimitKind::UsdPerDay,
            LimitKind::UsdPerMonth,
        ] {
            assert_eq!(limit_of_code(limit_code(k)), Some(k));
        }
        assert_eq!(limit_of_code("x"), None);
    }

    #[test]
    fn fleet_grant_request_shape() {
        let r = grant_request(
            "pod.1",
            &[GrantArg {
                key: "{p:key:a}:tpm:9".into(),
                report: -5,
                need: 10,
                chunk: u64::MAX,
                limit: 100,
                lease_ttl_ms: 0,
                key_ttl_ms: 60_000,
            }],
        );
        assert_eq!(r.method, "GET");
        assert!(r.body.is_empty());
        assert!(r.path.starts_with("/EVAL/local%20function"), "{}", r.path);
        assert!(
            r.path
                .ends_with("/1/%7Bp:key:a%7D:tpm:9/pod%2E1/-5/10/9007199254740991/100/1/60000"),
            "{}",
            r.path
        );
        // No literal dot anywhere (webdis would take it as a format suffix).
        assert!(!r.path.contains('.'));
        assert!(!r.path.contains('{'));
        assert_eq!(r.path.matches('/').count(), 11);
        let rel = release_request(
            "p",
            &[ReleaseArg {
                key: "k".into(),
                report: i64::MIN,
                limit: 5,
                key_ttl_ms: 1,
            }],
        );
        assert!(
            rel.path.ends_with("/1/k/p/-9007199254740991/5/1"),
            "{}",
            rel.path
        );
        assert_eq!(
            r.headers("webdis"),
            vec![
                (":method", "GET"),
                (":path", r.path.as_str()),
                (":authority", "webdis")
            ]
        );
    }

    #[test]
    fn fleet_parse_every_webdis_form() {
        let ok = parse_reply(Some(200), Some(br#"{"EVAL":[10,25,900]}"#), &[1000]).unwrap();
        assert_eq!(
            ok,
            vec![ItemReply {
                granted: 10,
                held: 25,
                remaining: 900
            }]
        );
        let two = parse_reply(
            Some(200),
            Some(br#" {"EVALSHA":[1,2,3,"4",5,6]} "#),
            &[10, 10],
        )
        .unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].granted, 4);
        let cases: Vec<(Option<u32>, &[u8], CalloutFailure)> = vec![
            (None, b"", CalloutFailure::Timeout),
            (Some(503), b"", CalloutFailure::Unavailable),
            (Some(500), b"x", CalloutFailure::HttpStatus(500)),
            (Some(403), b"", CalloutFailure::HttpStatus(403)),
            (Some(200), b"", CalloutFailure::Empty),
            (Some(200), b"  \n", CalloutFailure::Empty),
            (
                Some(200),
                br#"{"EVAL":[false,"upstream failure"]}"#,
                CalloutFailure::UpstreamFailure,
            ),
            (
                Some(200),
                b"-upstream failure\r\n",
                CalloutFailure::UpstreamFailure,
            ),
            (
                Some(200),
                br#"{"EVALSHA":[false,"NOSCRIPT No matching script."]}"#,
                CalloutFailure::NoScript,
            ),
            (
                Some(200),
                br#"{"EVAL":[false,"ERR llmgate: bad arguments"]}"#,
                CalloutFailure::RedisError,
            ),
            (
                Some(200),
                br#"{"EVAL":[false,"CROSSSLOT Keys in request don't hash to the same slot"]}"#,
                CalloutFailure::RedisError,
            ),
            (Some(200), b"-ERR unknown", CalloutFailure::RedisError),
            (Some(200), b"garbage", CalloutFailure::BadAnswer),
            (Some(200), b"\xff\xfe\x00", CalloutFailure::BadAnswer),
            (Some(200), b"[1,2,3]", CalloutFailure::BadAnswer),
            (Some(200), br#"{"EVAL":null}"#, CalloutFailure::BadAnswer),
            (Some(200), br#"{"EVAL":[1,2]}"#, CalloutFailure::BadAnswer),
            (
                Some(200),
                br#"{"EVAL":[1,2,3,4]}"#,
                CalloutFailure::BadAnswer,
            ),
            (
                Some(200),
                br#"{"EVAL":[-1,2,3]}"#,
                CalloutFailure::BadAnswer,
            ),
            (
                Some(200),
                br#"{"EVAL":[1.5,2,3]}"#,
                CalloutFailure::BadAnswer,
            ),
            (
                Some(200),
                br#"{"EVAL":[1,null,3]}"#,
                CalloutFailure::BadAnswer,
            ),
            (
                Some(200),
                br#"{"EVAL":[[1],2,3]}"#,
                CalloutFailure::BadAnswer,
            ),
            (
                Some(200),
                br#"{"EVAL":[1,2,"x"]}"#,
                CalloutFailure::BadAnswer,
            ),
            (
                Some(200),
                br#"{"EVAL":[1,2,3],"GET":1}"#,
                CalloutFailure::BadAnswer,
            ),
            (Some(200), br#"{"GET":[1,2,3]}"#, CalloutFailure::BadAnswer),
            (Some(200), br#"{"EVAL":[false]}"#, CalloutFailure::BadAnswer),
            // Hostile: a lease above the limit, a grant above what is held.
            (
                Some(200),
                br#"{"EVAL":[1,18446744073709551615,3]}"#,
                CalloutFailure::BadAnswer,
            ),
            (
                Some(200),
                br#"{"EVAL":[1,1001,3]}"#,
                CalloutFailure::BadAnswer,
            ),
            (
                Some(200),
                br#"{"EVAL":[1,2,1001]}"#,
                CalloutFailure::BadAnswer,
            ),
            (
                Some(200),
                br#"{"EVAL":[1,2,99999999999999999999999]}"#,
                CalloutFailure::BadAnswer,
            ),
        ];
        for (status, body, want) in cases {
            assert_eq!(
                parse_reply(status, Some(body), &[1000]),
                Err(want),
                "{status:?} {:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            parse_reply(Some(200), None, &[1]),
            Err(CalloutFailure::Empty)
        );
        assert_eq!(
            parse_reply(Some(200), Some(br#"{"EVAL":[]}"#), &[]),
            Err(CalloutFailure::BadAnswer)
        );
        // Every failure has a metric label.
        assert_eq!(CalloutFailure::HttpStatus(1).reason(), "http_status");
    }

    /// Arbitrary bytes never panic the parser.
    #[test]
    fn fleet_parse_never_panics() {
        let mut x: u64 = 1;
        for len in 0..400usize {
            let mut body = Vec::with_capacity(len);
            for _ in 0..len {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                body.push(b"{}[]\",:-0123456789EVALfalsetrue nul"[(x >> 33) as usize % 35]);
            }
            let _ = parse_reply(Some(200), Some(&body), &[10, 20]);
            let _ = parse_reply(Some(200), Some(&body[..len / 2]), &[]);
        }
    }
}

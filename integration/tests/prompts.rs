//! Prompt templates, versions and A/B tests, and promotion without restart
//! (ECDS from a watched file).

use llmgate_integration::{config, Mock, Options, Request, Stack};
use serde_json::json;
use std::time::{Duration, Instant};

fn prompts(current: &str, ab: Option<serde_json::Value>) -> serde_json::Value {
    let mut support = json!({
        "versions": {
            "v1": "You are the support agent of {{company}}.",
            "v2": "You are the concise support agent of {{company}}. Answer in one line."
        },
        "current": current
    });
    if let Some(ab) = ab {
        support["ab_test"] = ab;
    }
    json!({"prompts": {"support": support, "static": {"versions": {"1": "Static system prompt."}, "current": "1"}}})
}

fn ask_system(api: &str) -> Request {
    match api {
        "openai" => Request::openai(
            json!({"model": "gpt-4o", "messages": [{"role": "system", "content": "client system"}, {"role": "user", "content": "SYSTEM?"}]}),
        ),
        _ => Request::anthropic(
            json!({"model": "claude-haiku-4-5", "max_tokens": 50, "system": "client system", "messages": [{"role": "user", "content": "SYSTEM?"}]}),
        ),
    }
}

fn reply_text(r: &llmgate_integration::HttpResponse) -> String {
    let j = r.json();
    j["choices"][0]["message"]["content"]
        .as_str()
        .or(j["content"][0]["text"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn rendered_template_reaches_the_model_in_both_apis() {
    let s = Stack::start(Options::new(&config(prompts("v1", None))));
    for api in ["openai", "anthropic"] {
        let r = s.send(
            &ask_system(api)
                .header("x-llmgate-prompt", "support")
                .header("x-llmgate-prompt-vars", r#"{"company": "Acme"}"#),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            reply_text(&r),
            "You are the support agent of Acme.",
            "{api}"
        );
        assert_eq!(r.header("x-llmgate-prompt-version"), Some("support@v1"));
        let r = s.send(
            &ask_system(api)
                .header("x-llmgate-prompt", "support@v2")
                .header("x-llmgate-prompt-vars", r#"{"company": "Acme"}"#),
        );
        assert_eq!(
            reply_text(&r),
            "You are the concise support agent of Acme. Answer in one line."
        );
        assert_eq!(r.header("x-llmgate-prompt-version"), Some("support@v2"));
    }
    // Without the header the client's own system prompt is kept.
    let r = s.send(&ask_system("openai"));
    assert_eq!(reply_text(&r), "client system");
    let last = s.mock_json(Mock::Primary, "/mock/last");
    assert!(last["headers"].get("x-llmgate-prompt").is_none());
    let audit = s.wait_audit(5);
    let l = &audit[0];
    assert_eq!(l["prompt_id"], "support");
    assert_eq!(l["prompt_version"], "v1");
    assert_eq!(l["prompt_variant"], "control");
    assert_eq!(
        s.metric(
            "llmgate_prompt_requests_total",
            &[("prompt", "support"), ("version", "v1"), ("outcome", "ok")]
        ),
        Some(2.0)
    );
}

#[test]
fn unknown_prompt_version_or_missing_variable_is_400_in_both_shapes() {
    let s = Stack::start(Options::new(&config(prompts("v1", None))));
    for (header, vars, code) in [
        ("nope", r#"{"company":"A"}"#, "unknown_prompt"),
        ("support@v7", r#"{"company":"A"}"#, "unknown_prompt_version"),
        ("support", r#"{}"#, "prompt_variable_missing"),
        ("support", "not json", "invalid_prompt_vars"),
    ] {
        let r = s.send(
            &ask_system("openai")
                .header("x-llmgate-prompt", header)
                .header("x-llmgate-prompt-vars", vars),
        );
        assert_eq!(r.status, 400, "{header}");
        assert_eq!(r.json()["error"]["code"], code);
        let r = s.send(
            &ask_system("anthropic")
                .header("x-llmgate-prompt", header)
                .header("x-llmgate-prompt-vars", vars),
        );
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["type"], "error");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    assert_eq!(s.mock_requests(Mock::Primary), 0);
}

#[test]
fn ab_split_is_sticky_and_near_the_configured_share() {
    let s = Stack::start(Options::new(&config(prompts(
        "v1",
        Some(json!({"variant": "v2", "percent": 25, "salt": "exp-2026-11"})),
    ))));
    // 1,000 distinct users through the real filter.
    let mut v2 = 0;
    for i in 0..1000 {
        let user = format!("user-{i}");
        let r = s.send(
            &ask_system("openai")
                .header("x-llmgate-prompt", "support")
                .header("x-llmgate-prompt-vars", r#"{"company":"A"}"#)
                .header("x-llmgate-user", &user),
        );
        let version = r.header("x-llmgate-prompt-version").unwrap().to_string();
        if version == "support@v2" {
            v2 += 1;
        }
        if i % 100 == 0 {
            // The same user always gets the same version.
            let again = s.send(
                &ask_system("openai")
                    .header("x-llmgate-prompt", "support")
                    .header("x-llmgate-prompt-vars", r#"{"company":"A"}"#)
                    .header("x-llmgate-user", &user),
            );
            assert_eq!(
                again.header("x-llmgate-prompt-version"),
                Some(version.as_str())
            );
        }
    }
    assert!((200..=300).contains(&v2), "variant share {v2}/1000");
}

#[test]
fn promotion_through_ecds_takes_effect_without_restart() {
    let mut opts = Options::new(&config(prompts("v1", None)));
    opts.ecds = true;
    let s = Stack::start(opts);
    let ask = || {
        s.send(
            &ask_system("openai")
                .header("x-llmgate-prompt", "support")
                .header("x-llmgate-prompt-vars", r#"{"company": "Acme"}"#),
        )
    };
    assert_eq!(ask().header("x-llmgate-prompt-version"), Some("support@v1"));
    let envoy_pid = s.pids().into_iter().find(|(n, _)| *n == "envoy").unwrap().1;
    s.update_plugin_config(&config(prompts("v2", None)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = ask();
        if r.header("x-llmgate-prompt-version") == Some("support@v2") {
            assert_eq!(
                reply_text(&r),
                "You are the concise support agent of Acme. Answer in one line."
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new version never took effect"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        s.pids().into_iter().find(|(n, _)| *n == "envoy").unwrap().1,
        envoy_pid,
        "same Envoy process"
    );
}

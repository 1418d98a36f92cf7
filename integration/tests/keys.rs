//! Virtual keys: 401 and 403 in both API shapes, and credential injection.

use llmgate::core::util::sha256_hex;
use llmgate_integration::{config, Mock, Options, Request, Stack};
use serde_json::json;

fn two_keys() -> Stack {
    Stack::start(Options::new(&config(json!({
        "keys": [
            {"id": "demo", "sha256": sha256_hex(b"sk-llmgate-demo"), "tenant": "demo"},
            {"id": "mini-only", "sha256": sha256_hex(b"sk-mini-only"), "tenant": "t2", "models": ["gpt-4o-mini*", "claude-*-haiku*"]}
        ]
    }))))
}

fn chat() -> serde_json::Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

fn claude() -> serde_json::Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
}

#[test]
fn missing_and_unknown_keys_are_401_in_both_shapes() {
    let s = two_keys();
    let r = s.send(&Request::openai(chat()).without("authorization"));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    assert_eq!(r.json()["error"]["code"], "missing_api_key");
    assert!(r.header("x-llmgate-request-id").is_some());

    let r = s.send(
        &Request::openai(chat())
            .without("authorization")
            .bearer("sk-wrong"),
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");

    let r = s.send(&Request::anthropic(claude()).without("x-api-key"));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "authentication_error");

    let r = s.send(
        &Request::anthropic(claude())
            .without("x-api-key")
            .header("x-api-key", "nope"),
    );
    assert_eq!(r.status, 401);
    assert_eq!(s.mock_requests(Mock::Primary), 0);
}

#[test]
fn model_not_allowed_is_403_in_both_shapes() {
    let s = two_keys();
    let r = s.send(
        &Request::openai(chat())
            .without("authorization")
            .bearer("sk-mini-only"),
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["type"], "permission_error");
    assert_eq!(r.json()["error"]["code"], "model_not_allowed");
    let r = s.send(
        &Request::anthropic(claude())
            .without("x-api-key")
            .header("x-api-key", "sk-mini-only"),
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["type"], "permission_error");
    assert_eq!(s.mock_requests(Mock::Primary), 0);

    let r = s.send(
        &Request::openai(
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .without("authorization")
        .bearer("sk-mini-only"),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn upstream_gets_the_provider_credential_never_the_virtual_key() {
    let s = two_keys();
    let r = s.send(&Request::openai(chat()));
    assert_eq!(r.status, 200);
    let last = s.mock_json(Mock::Primary, "/mock/last");
    assert_eq!(
        last["headers"]["authorization"],
        "Bearer sk-provider-openai-test"
    );
    assert!(last["headers"].get("x-api-key").is_none());
    assert!(!last.to_string().contains("sk-llmgate-demo"));

    // Anthropic client sending its virtual key as a Bearer token.
    let r = s.send(
        &Request::anthropic(claude())
            .without("x-api-key")
            .bearer("sk-llmgate-demo"),
    );
    assert_eq!(r.status, 200);
    let last = s.mock_json(Mock::Primary, "/mock/last");
    assert_eq!(last["headers"]["x-api-key"], "sk-ant-provider-test");
    assert_eq!(last["headers"]["anthropic-version"], "2023-06-01");
    assert!(last["headers"].get("authorization").is_none());
    assert!(!last.to_string().contains("sk-llmgate-demo"));
}

#[test]
fn a_client_cannot_pick_the_route() {
    let s = two_keys();
    let r = s.send(&Request::openai(chat()).header("x-llmgate-route", "fallback"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-mock-name"), Some("primary"));
    assert_eq!(s.mock_requests(Mock::Fallback), 0);
}

#[test]
fn trusted_identity_header_instead_of_keys() {
    let s = Stack::start(Options::new(&config(json!({
        "auth": {"mode": "trusted_header", "identity_header": "x-llmgate-identity"},
        "keys": [{"id": "team-a", "tenant": "acme", "models": ["gpt-*"]}]
    }))));
    let r = s.send(
        &Request::openai(chat())
            .without("authorization")
            .header("x-llmgate-identity", "team-a"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let last = s.mock_json(Mock::Primary, "/mock/last");
    assert!(
        last["headers"].get("x-llmgate-identity").is_none(),
        "identity header stripped"
    );
    let r = s.send(&Request::openai(chat()).without("authorization"));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "missing_identity");
    let r = s.send(
        &Request::openai(chat())
            .without("authorization")
            .header("x-llmgate-identity", "someone-else"),
    );
    assert_eq!(r.status, 401);
    let r = s.send(
        &Request::anthropic(claude())
            .without("x-api-key")
            .header("x-llmgate-identity", "team-a"),
    );
    assert_eq!(r.status, 403, "model not allowed for this identity");
    let audit = s.wait_audit(4);
    assert!(audit
        .iter()
        .any(|l| l["key_id"] == "team-a" && l["tenant"] == "acme"));
}

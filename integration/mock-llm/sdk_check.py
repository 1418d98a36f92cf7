#!/usr/bin/env python3
"""Wire-compatibility check with the official OpenAI and Anthropic Python SDKs.

    python3 -m venv /tmp/sdkvenv && /tmp/sdkvenv/bin/pip install openai anthropic
    /tmp/sdkvenv/bin/python sdk_check.py http://127.0.0.1:PORT [--api-key KEY] [--skip-errors]

BASE is the server root: the mock itself, or Envoy in front of it. OpenAI calls go to
BASE/v1, Anthropic calls to BASE. Only the /v1 routes and x-mock-* request headers are
used (no /mock/* endpoints), so it works through a proxy as long as the proxy passes
those headers on. --skip-errors leaves out the injected-error checks (for a proxy that
retries or rewrites errors). Exits non-zero on the first failed check.
"""

import argparse
import math
import sys

import anthropic
import openai

PASSED = 0


def check(cond, what):
    global PASSED
    if not cond:
        print(f"FAIL: {what}")
        sys.exit(1)
    PASSED += 1
    print(f"ok: {what}")


def openai_checks(client, skip_errors):
    msgs = [
        {"role": "system", "content": "you are terse"},
        {"role": "user", "content": "hello wide world"},
    ]

    r = client.chat.completions.create(model="gpt-4o-mini", messages=msgs)
    check(r.object == "chat.completion", "openai: non-streaming object")
    check(r.model == "gpt-4o-mini", "openai: model echoed")
    check(r.choices[0].message.role == "assistant", "openai: assistant role")
    check(r.choices[0].message.content == "echo: hello wide world", "openai: echo reply")
    check(r.choices[0].finish_reason == "stop", "openai: finish_reason stop")
    check(
        (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (6, 4, 10),
        f"openai: usage {r.usage}",
    )

    r = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "line one"},
            {"role": "system", "content": [{"type": "text", "text": "line two"}]},
            {"role": "user", "content": [{"type": "text", "text": "SYSTEM?"}]},
        ],
    )
    check(r.choices[0].message.content == "line one\nline two", "openai: SYSTEM? rule")

    for headers in ({}, {"x-mock-write-bytes": "3"}, {"x-mock-chunk-chars": "2"}):
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=msgs, stream=True, extra_headers=headers
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        check(text == "echo: hello wide world", f"openai: streamed text {headers}")
        check(chunks[0].choices[0].delta.role == "assistant", f"openai: first chunk role {headers}")
        check(chunks[-1].choices[0].finish_reason == "stop", f"openai: last chunk stop {headers}")
        check(all(c.usage is None for c in chunks), f"openai: no usage without include_usage {headers}")

    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=msgs,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    last = chunks[-1]
    check(last.choices == [] and last.usage is not None, "openai: include_usage final chunk")
    check(last.usage.completion_tokens == 4 and last.usage.prompt_tokens == 6, "openai: streamed usage")

    # The SDK asks for base64 by default and decodes it; also ask for floats explicitly.
    for fmt in (openai.NOT_GIVEN, "float"):
        e = client.embeddings.create(
            model="text-embedding-3-small",
            input=["Hello, world!", "hello world", "something else"],
            encoding_format=fmt,
        )
        vecs = [d.embedding for d in e.data]
        check(e.model == "text-embedding-3-small", f"openai: embeddings model ({fmt})")
        check(all(len(v) == 64 for v in vecs), f"openai: 64 dimensions ({fmt})")
        check(abs(math.sqrt(sum(x * x for x in vecs[0])) - 1) < 1e-6, f"openai: unit vector ({fmt})")
        check(
            max(abs(a - b) for a, b in zip(vecs[0], vecs[1])) < 1e-6,
            f"openai: same words, same vector ({fmt})",
        )
        check(e.usage.prompt_tokens == 6, f"openai: embeddings usage ({fmt})")
    e = client.embeddings.create(model="m", input="single string")
    check(len(e.data) == 1 and e.data[0].index == 0, "openai: single-string input")

    if not skip_errors:
        try:
            client.with_options(max_retries=0).chat.completions.create(
                model="m", messages=msgs, extra_headers={"x-mock-status": "503"}
            )
            check(False, "openai: 503 raises")
        except openai.APIStatusError as err:
            check(err.status_code == 503, "openai: 503 raises APIStatusError")
            check(isinstance(err.body, dict) and "message" in err.body, "openai: error body parsed")
        try:
            client.with_options(max_retries=0).chat.completions.create(
                model="m", messages=msgs, extra_headers={"x-mock-status": "429"}
            )
            check(False, "openai: 429 raises")
        except openai.RateLimitError as err:
            check(err.status_code == 429, "openai: 429 raises RateLimitError")
        try:
            stream = client.with_options(max_retries=0).chat.completions.create(
                model="m",
                messages=msgs,
                stream=True,
                extra_headers={"x-mock-reset-after-chunks": "2"},
            )
            list(stream)
            check(False, "openai: reset mid-stream raises")
        except (openai.APIError, Exception) as err:  # httpx surfaces the broken body
            check(True, f"openai: reset mid-stream raises ({type(err).__name__})")


def anthropic_checks(client, skip_errors):
    msgs = [{"role": "user", "content": "hello wide world"}]

    m = client.messages.create(model="claude-test", max_tokens=100, system="be brief", messages=msgs)
    check(m.type == "message" and m.role == "assistant", "anthropic: message shape")
    check(m.model == "claude-test", "anthropic: model echoed")
    check(m.content[0].type == "text" and m.content[0].text == "echo: hello wide world", "anthropic: echo reply")
    check(m.stop_reason == "end_turn" and m.stop_sequence is None, "anthropic: stop_reason")
    check((m.usage.input_tokens, m.usage.output_tokens) == (5, 4), f"anthropic: usage {m.usage}")

    m = client.messages.create(
        model="claude-test",
        max_tokens=100,
        system=[{"type": "text", "text": "block one"}, {"type": "text", "text": "block two"}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "SYSTEM?"}]}],
    )
    check(m.content[0].text == "block one\nblock two", "anthropic: SYSTEM? rule")
    m = client.messages.create(
        model="claude-test",
        max_tokens=100,
        messages=[{"role": "user", "content": "REPLY: exactly this"}],
    )
    check(m.content[0].text == "exactly this", "anthropic: REPLY: rule")

    for headers in ({}, {"x-mock-write-bytes": "3"}, {"x-mock-chunk-chars": "3"}):
        with client.messages.stream(
            model="claude-test", max_tokens=100, system="be brief", messages=msgs, extra_headers=headers
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        check(text == "echo: hello wide world", f"anthropic: streamed text {headers}")
        check(final.content[0].text == text, f"anthropic: final message {headers}")
        check(final.stop_reason == "end_turn", f"anthropic: final stop_reason {headers}")
        check(
            (final.usage.input_tokens, final.usage.output_tokens) == (5, 4),
            f"anthropic: streamed usage {final.usage} {headers}",
        )

    events = list(client.messages.create(model="claude-test", max_tokens=100, messages=msgs, stream=True))
    types = [e.type for e in events]
    check(types[0] == "message_start" and types[-1] == "message_stop", f"anthropic: raw events {types}")
    check("message_delta" in types and "content_block_stop" in types, "anthropic: all event types")

    if not skip_errors:
        try:
            client.with_options(max_retries=0).messages.create(
                model="m", max_tokens=10, messages=msgs, extra_headers={"x-mock-status": "503"}
            )
            check(False, "anthropic: 503 raises")
        except anthropic.APIStatusError as err:
            check(err.status_code == 503, "anthropic: 503 raises APIStatusError")
            check(err.body["type"] == "error" and "message" in err.body["error"], "anthropic: error body parsed")
        try:
            client.with_options(max_retries=0).messages.create(
                model="m", max_tokens=10, messages=msgs, extra_headers={"x-mock-status": "429"}
            )
            check(False, "anthropic: 429 raises")
        except anthropic.RateLimitError as err:
            check(err.status_code == 429, "anthropic: 429 raises RateLimitError")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", help="server root, e.g. http://127.0.0.1:18080")
    ap.add_argument("--api-key", default="sk-mock", help="API key sent by both SDKs")
    ap.add_argument("--skip-errors", action="store_true", help="skip the injected-error checks")
    args = ap.parse_args()
    base = args.base.rstrip("/")

    oa = openai.OpenAI(base_url=f"{base}/v1", api_key=args.api_key, max_retries=0, timeout=30)
    an = anthropic.Anthropic(base_url=base, api_key=args.api_key, max_retries=0, timeout=30)
    openai_checks(oa, args.skip_errors)
    anthropic_checks(an, args.skip_errors)
    print(f"{PASSED} passed, 0 failed")


if __name__ == "__main__":
    main()

"""Issue 17 with the official SDKs: a streamed question, then a paraphrase of
it, through llmgate's semantic cache, with the OpenAI and the Anthropic SDK.
Prints, per SDK, the x-llmgate-cache header of both answers, whether the raw
bytes of the two streams are identical, and the text the SDK assembled, as
JSON.

usage: semantic_sdk.py BASE_URL KEY
"""
import json
import sys

import anthropic
import httpx
from openai import OpenAI


def openai_run(base, key):
    c = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=30)
    out = []
    for q in ["Which river flows through Paris?", "which RIVER flows through paris"]:
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", temperature=0, stream=True,
            messages=[{"role": "user", "content": q}],
        )
        body = b"".join(raw.http_response.iter_bytes())
        out.append((raw.headers.get("x-llmgate-cache"), body))
        waits_for_store(base)
    text = "".join(
        (json.loads(l[6:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for l in out[1][1].decode().splitlines()
        if l.startswith("data: {")
    )
    return {"cache": [h for h, _ in out], "identical": out[0][1] == out[1][1], "text": text}


def anthropic_run(base, key):
    c = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, timeout=30)
    out = []
    texts = []
    for q in ["Which mountain is the highest in Europe?", "the highest mountain in Europe: which is it"]:
        with c.messages.with_streaming_response.create(
            model="claude-haiku-4-5", max_tokens=64, stream=True,
            messages=[{"role": "user", "content": q}],
        ) as resp:
            body = b"".join(resp.iter_bytes())
            out.append((resp.headers.get("x-llmgate-cache"), body))
        waits_for_store(base)
    # The SDK's own stream parser on the replayed bytes.
    with c.messages.stream(
        model="claude-haiku-4-5", max_tokens=64,
        messages=[{"role": "user", "content": "Which mountain is the highest in Europe"}],
    ) as s:
        texts.append(s.get_final_text())
    return {"cache": [h for h, _ in out], "identical": out[0][1] == out[1][1], "text": texts[0]}


def waits_for_store(base):
    # The store is sent by the root context on its next tick.
    import time
    time.sleep(0.3)


def main():
    base, key = sys.argv[1], sys.argv[2]
    print(json.dumps({"openai": openai_run(base, key), "anthropic": anthropic_run(base, key)}))


if __name__ == "__main__":
    main()

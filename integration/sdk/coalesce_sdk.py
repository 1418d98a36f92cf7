"""Issue 21 with the official OpenAI SDK: N concurrent identical streaming
requests through llmgate with coalescing on; prints how many came back
coalesced and the distinct texts, as JSON.

usage: coalesce_sdk.py BASE_URL KEY N
"""
import json
import sys
import threading

from openai import OpenAI


def main():
    base, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    c = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=60)
    barrier = threading.Barrier(n)
    out = []
    lock = threading.Lock()

    errors = []

    def one():
        try:
            barrier.wait(timeout=60)
            run()
        except Exception as e:  # reported, never silently dropped
            with lock:
                errors.append(repr(e)[:300])

    def run():
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            temperature=0,
            stream=True,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            extra_headers={"x-mock-delay-ms": "500"},
        )
        cache = raw.headers.get("x-llmgate-cache")
        text = "".join(
            ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices
        )
        with lock:
            out.append((cache, text))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({
        "coalesced": sum(1 for c, _ in out if c == "coalesced"),
        "texts": sorted(set(t for _, t in out)),
        "answers": len(out),
        "errors": errors,
    }))


if __name__ == "__main__":
    main()

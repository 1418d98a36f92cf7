"""Issue 19 acceptance with the official SDKs, through llmgate in Envoy.

usage: translation_sdk.py openai|anthropic BASE_URL KEY

`openai`: the OpenAI SDK against llmgate whose upstream speaks Anthropic.
`anthropic`: the Anthropic SDK against llmgate whose upstream speaks OpenAI.
Each checks a plain answer, a stream with usage, and a tool-call round trip
(tool call, tool result, final answer), then prints OK.
"""
import json
import sys


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)


def openai_checks(base, key):
    from openai import OpenAI

    c = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
    r = c.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello sdk"}],
    )
    check(r.choices[0].message.content == "echo: hello sdk", r)
    check(r.choices[0].finish_reason == "stop", r)
    check(r.usage.completion_tokens == 3, r.usage)

    text, usage = "", None
    for chunk in c.chat.completions.create(
        model="gpt-4o-mini",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "REPLY: streamed through the sdk"}],
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    check(text == "streamed through the sdk", text)
    check(usage is not None and usage.completion_tokens == 4, usage)

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    msgs = [{"role": "user", "content": 'TOOL:get_weather {"city":"Paris"}'}]
    r = c.chat.completions.create(model="gpt-4o-mini", tools=tools, messages=msgs)
    call = r.choices[0].message.tool_calls[0]
    check(r.choices[0].finish_reason == "tool_calls", r)
    check(json.loads(call.function.arguments) == {"city": "Paris"}, call)
    msgs += [
        {"role": "assistant", "content": None, "tool_calls": [{"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    r = c.chat.completions.create(model="gpt-4o-mini", tools=tools, messages=msgs)
    check(r.choices[0].message.content == "tool result: sunny", r)

    # The streamed tool call, too.
    args, name = "", None
    for chunk in c.chat.completions.create(model="gpt-4o-mini", tools=tools, stream=True, messages=msgs[:1]):
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name = tc.function.name or name
            args += tc.function.arguments or ""
    check(name == "get_weather" and json.loads(args) == {"city": "Paris"}, (name, args))


def anthropic_checks(base, key):
    import anthropic

    c = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
    r = c.messages.create(
        model="claude-haiku-4-5", max_tokens=50, system="be brief",
        messages=[{"role": "user", "content": "hello sdk"}],
    )
    check(r.content[0].text == "echo: hello sdk", r)
    check(r.stop_reason == "end_turn", r)
    check(r.usage.output_tokens == 3, r.usage)

    with c.messages.stream(
        model="claude-haiku-4-5", max_tokens=50,
        messages=[{"role": "user", "content": "REPLY: streamed through the sdk"}],
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    check(text == "streamed through the sdk", text)
    check(final.usage.output_tokens == 4, final.usage)

    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    msgs = [{"role": "user", "content": 'TOOL:get_weather {"city":"Paris"}'}]
    r = c.messages.create(model="claude-haiku-4-5", max_tokens=100, tools=tools, messages=msgs)
    use = [b for b in r.content if b.type == "tool_use"][0]
    check(r.stop_reason == "tool_use", r)
    check(use.input == {"city": "Paris"}, use)
    msgs += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
    ]
    r = c.messages.create(model="claude-haiku-4-5", max_tokens=100, tools=tools, messages=msgs)
    check(r.content[0].text == "tool result: sunny", r)

    with c.messages.stream(model="claude-haiku-4-5", max_tokens=100, tools=tools, messages=msgs[:1]) as s:
        final = s.get_final_message()
    use = [b for b in final.content if b.type == "tool_use"][0]
    check(use.input == {"city": "Paris"}, use)


if __name__ == "__main__":
    which, base, key = sys.argv[1], sys.argv[2], sys.argv[3]
    (openai_checks if which == "openai" else anthropic_checks)(base, key)
    print("OK")

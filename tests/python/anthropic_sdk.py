"""The official Anthropic Python SDK through the gateway, one scenario per run (the first argument):

- basics: messages.create; messages.stream whose text_stream arrives as it is produced; count_tokens;
  models.list;
- tools: a tool-use round trip (tool_use, then tool_result, then the final text), streamed and not;
- errors: the SDK's exception for a bad key, a paused key, a management key, a child key over its limit
  (402 with its remaining budgets), an unknown model;
- rpm: a requests-per-minute refusal is a RateLimitError with retry-after, and the SDK's own retry,
  waiting as retry-after says, gets the answer.

ANTHROPIC_BASE_URL (the gateway's root) and ANTHROPIC_API_KEY come from the environment, as in real use.
"""
import os
import sys
import time

import anthropic

model = os.environ["MODEL"]
scenario = sys.argv[1]
client = anthropic.Anthropic()
hello = [{"role": "user", "content": "Tell me about the Gonka network."}]


def basics():
    m = client.messages.create(model=model, max_tokens=100, messages=hello, system="Be brief.")
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_"), m
    assert m.stop_reason == "end_turn", m.stop_reason
    assert [b.type for b in m.content] == ["text"], m.content
    assert m.usage.input_tokens > 0 and m.usage.output_tokens == 20, m.usage
    expected = m.content[0].text

    start = time.monotonic()
    arrivals = []
    text = ""
    with client.messages.stream(model=model, max_tokens=100, messages=hello, system="Be brief.") as stream:
        for piece in stream.text_stream:
            arrivals.append(time.monotonic() - start)
            text += piece
        final = stream.get_final_message()
    assert text == expected, f"streamed {text!r} != {expected!r}"
    assert len(arrivals) == 20, arrivals
    first, last = arrivals[0], arrivals[-1]
    # 20 tokens, one every 50 ms: the last arrives ~950 ms after the first.
    assert last - first > 0.7, f"text was bunched: first {first:.3f}s last {last:.3f}s"
    assert first < last / 3, f"first text at {first:.3f}s, last at {last:.3f}s"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 20, final
    assert final.usage.input_tokens == m.usage.input_tokens, (final.usage, m.usage)
    assert final.content[0].text == expected

    count = client.messages.count_tokens(model=model, messages=hello, system="Be brief.")
    assert count.input_tokens > 0, count
    with_tools = client.messages.count_tokens(
        model=model, messages=hello, system="Be brief.",
        tools=[{"name": "Bash", "description": "Runs a command", "input_schema": {"type": "object"}}])
    assert with_tools.input_tokens > count.input_tokens, (with_tools, count)

    models = [m.id for m in client.models.list()]
    assert model in models, models
    return f"first={first:.3f}s last={last:.3f}s count={count.input_tokens}"


BASH = {"name": "Bash", "description": "Runs a shell command",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}


def tools():
    ask = [{"role": "user", "content": 'run Bash {"command": "echo gonka"}'}]
    for streamed in (False, True):
        if streamed:
            with client.messages.stream(model=model, max_tokens=200, tools=[BASH], messages=ask) as s:
                call = s.get_final_message()
        else:
            call = client.messages.create(model=model, max_tokens=200, tools=[BASH], messages=ask)
        assert call.stop_reason == "tool_use", call
        use = [b for b in call.content if b.type == "tool_use"]
        assert len(use) == 1 and use[0].name == "Bash" and use[0].input == {"command": "echo gonka"}, call.content
        follow = ask + [
            {"role": "assistant", "content": call.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use[0].id, "content": "gonka"}]},
        ]
        if streamed:
            with client.messages.stream(model=model, max_tokens=200, tools=[BASH], messages=follow) as s:
                text = "".join(s.text_stream)
                answer = s.get_final_message()
        else:
            answer = client.messages.create(model=model, max_tokens=200, tools=[BASH], messages=follow)
            text = answer.content[0].text
        assert answer.stop_reason == "end_turn", answer
        assert text.startswith("The tool returned: gonka."), text
    return "round trips"


def expect(exc, key, fields, model_id=None):
    """The request with `key` raises exactly `exc`, whose error body has `fields`."""
    c = anthropic.Anthropic(api_key=key, max_retries=0)
    try:
        c.messages.create(model=model_id or model, max_tokens=10, messages=hello)
    except exc as e:
        assert type(e) is exc, f"{type(e).__name__} is not exactly {exc.__name__}"
        assert e.body["type"] == "error", e.body
        assert e.request_id and e.request_id.startswith("req_"), e.request_id
        for k, v in fields.items():
            assert e.body["error"].get(k) == v, (k, v, e.body)
        return
    raise AssertionError(f"expected {exc.__name__}")


def errors():
    expect(anthropic.AuthenticationError, "gk-prx-" + "0" * 40, {"type": "authentication_error"})
    expect(anthropic.PermissionDeniedError, os.environ["PAUSED_KEY"],
           {"type": "permission_error", "code": "key_paused"})
    expect(anthropic.PermissionDeniedError, os.environ["MANAGEMENT_KEY"],
           {"type": "permission_error", "code": "management_key_not_allowed"})
    expect(anthropic.PaymentRequiredError, os.environ["CHILD_KEY"],
           {"type": "child_key_limit", "daily_remaining": "1", "monthly_remaining": None})
    expect(anthropic.NotFoundError, os.environ["ANTHROPIC_API_KEY"], {"type": "not_found_error"},
           model_id="no/such-model")
    return "exceptions"


def rpm():
    key = os.environ["RPM_KEY"]
    rpm = int(os.environ["RPM"])
    once = anthropic.Anthropic(api_key=key, max_retries=0)
    for _ in range(rpm):
        once.messages.create(model=model, max_tokens=1, messages=hello)
    try:
        once.messages.create(model=model, max_tokens=1, messages=hello)
        raise AssertionError("expected RateLimitError")
    except anthropic.RateLimitError as e:
        retry_after = float(e.response.headers["retry-after"])
        assert e.body["error"]["type"] == "rate_limit_error", e.body
        assert 1 <= retry_after <= 60 / rpm + 1, retry_after
        assert "x-should-retry" not in e.response.headers, "retrying helps here"
    # One retry only: the SDK's own backoff (0.5 s) would retry too early and fail again; waiting as
    # retry-after says gets the answer.
    retrying = anthropic.Anthropic(api_key=key, max_retries=1)
    start = time.monotonic()
    m = retrying.messages.create(model=model, max_tokens=1, messages=hello)
    waited = time.monotonic() - start
    assert m.type == "message", m
    assert waited >= 1.5, f"retried after {waited:.2f}s, retry-after said {retry_after}"
    return f"retry-after={retry_after} waited={waited:.2f}s"


print("OK", {"basics": basics, "tools": tools, "errors": errors, "rpm": rpm}[scenario]())

"""The official OpenAI SDK's Responses API (`client.responses`) through the gateway. SCENARIO picks what
runs; the simulator is asked directly (chat completions, without the gateway) for what its answers must
be, since its text is a function of the conversation it is sent."""
import json
import os
import time

import openai
import pydantic

model = os.environ["MODEL"]
client = openai.OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY from the environment
direct = openai.OpenAI(base_url=os.environ["SIM_BASE_URL"], api_key="unused")


def node_says(messages, **kw):
    """What the simulated node answers to these chat messages."""
    return direct.chat.completions.create(model=model, messages=messages, **kw).choices[0].message.content


def not_found(call):
    try:
        call()
    except openai.NotFoundError as e:
        return e
    raise AssertionError("expected NotFoundError")


def create():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about Gonka."}]
    expected = node_says(messages, max_tokens=100)

    r = client.responses.create(model=model, instructions="Be brief.", input="Tell me about Gonka.", max_output_tokens=100)
    assert r.object == "response" and r.status == "completed", r
    assert r.id.startswith("resp_"), r.id
    assert r.output_text == expected, (r.output_text, expected)
    assert r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.usage.output_tokens == 20 and r.usage.total_tokens == r.usage.input_tokens + 20, r.usage

    # A raw stream: events arrive as the node produces tokens, numbered in order.
    start = time.monotonic()
    arrivals, text, seq = [], "", []
    stream = client.responses.create(
        model=model, instructions="Be brief.", input="Tell me about Gonka.", max_output_tokens=100, stream=True
    )
    for event in stream:
        seq.append(event.sequence_number)
        if event.type == "response.output_text.delta":
            arrivals.append(time.monotonic() - start)
            text += event.delta
        if event.type == "response.completed":
            completed = event.response
    assert seq == list(range(len(seq))), seq
    assert text == expected, (text, expected)
    assert completed.output_text == expected and completed.usage.output_tokens == 20
    assert len(arrivals) == 20, arrivals
    first, last = arrivals[0], arrivals[-1]
    # 20 tokens, one every 50 ms: the last arrives ~950 ms after the first.
    assert last - first > 0.7, f"tokens were bunched: first {first:.3f}s last {last:.3f}s"
    assert first < last / 3, f"first delta at {first:.3f}s, last at {last:.3f}s"

    # The SDK's strict stream helper (it checks item identities and indexes) agrees.
    with client.responses.stream(model=model, instructions="Be brief.", input="Tell me about Gonka.") as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    assert "".join(deltas) == final.output_text == node_says(messages)
    assert client.responses.retrieve(final.id).output_text == final.output_text

    try:
        client.responses.create(model="no/such-model", input="hi")
        raise AssertionError("expected NotFoundError")
    except openai.NotFoundError as e:
        assert e.body["code"] == "model_not_found", e.body
    try:
        client.responses.create(model=model, input="hi", tools=[{"type": "file_search", "vector_store_ids": ["v"]}])
        raise AssertionError("expected BadRequestError")
    except openai.BadRequestError as e:
        assert "file_search" in e.body["message"] and e.body["param"] == "tools[0]", e.body
    print(f"OK first={first:.3f}s last={last:.3f}s")


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


def tools():
    # The whole history every time, as Codex sends it (store false).
    history = [{"role": "user", "content": 'get_weather {"city": "Paris"}'}]
    r = client.responses.create(model=model, input=history, tools=[WEATHER], store=False)
    call = r.output[0]
    assert call.type == "function_call" and call.name == "get_weather", r.output
    assert json.loads(call.arguments) == {"city": "Paris"}, call.arguments
    assert call.call_id and call.status == "completed"
    history += [item.model_dump(exclude_none=True) for item in r.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "18 C and sunny"})
    final = client.responses.create(model=model, input=history, tools=[WEATHER], store=False)
    assert final.output_text.startswith("The tool returned: 18 C and sunny."), final.output_text

    # Streamed, the call's arguments arrive as deltas that add up to the whole.
    with client.responses.stream(model=model, input=history[:1], tools=[WEATHER]) as s:
        events = list(s)
        done = s.get_final_response()
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert len([e for e in events if e.type == "response.function_call_arguments.delta"]) > 1
    assert json.loads(deltas) == {"city": "Paris"} == json.loads(done.output[0].arguments)
    print("OK")


def conversation():
    first = client.responses.create(model=model, instructions="Remember names.", input="My name is Ada.")
    second = client.responses.create(model=model, previous_response_id=first.id, input="What is my name?")
    # The node got the whole conversation (but not the first request's instructions, as OpenAI does).
    expected = node_says(
        [
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "What is my name?"},
        ]
    )
    assert second.output_text == expected, (second.output_text, expected)
    assert second.previous_response_id == first.id
    third = client.responses.create(model=model, previous_response_id=second.id, input="And again?")
    assert third.output_text == node_says(
        [
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "What is my name?"},
            {"role": "assistant", "content": second.output_text},
            {"role": "user", "content": "And again?"},
        ]
    )
    assert client.responses.retrieve(second.id).output_text == second.output_text

    other = openai.OpenAI(api_key=os.environ["OTHER_API_KEY"])
    e = not_found(lambda: other.responses.retrieve(second.id))
    assert e.status_code == 404
    e = not_found(lambda: other.responses.create(model=model, previous_response_id=second.id, input="hi"))
    assert e.body["code"] == "previous_response_not_found", e.body
    not_found(lambda: other.responses.delete(second.id))

    client.responses.delete(second.id)
    not_found(lambda: client.responses.retrieve(second.id))
    not_found(lambda: client.responses.create(model=model, previous_response_id=second.id, input="hi"))
    assert client.responses.retrieve(third.id).output_text == third.output_text, "later responses stand alone"

    unstored = client.responses.create(model=model, input="Forget this.", store=False)
    assert unstored.store is False
    not_found(lambda: client.responses.retrieve(unstored.id))
    not_found(lambda: client.responses.create(model=model, previous_response_id=unstored.id, input="hi"))
    print("OK")


class Weather(pydantic.BaseModel):
    city: str
    degrees: int
    sunny: bool


def structured():
    r = client.responses.parse(model=model, input="The weather in Paris, as JSON.", text_format=Weather)
    assert isinstance(r.output_parsed, Weather), r.output_parsed
    assert r.output_parsed == Weather(city="sim", degrees=1, sunny=True), r.output_parsed
    assert r.text.format.type == "json_schema" and r.text.format.name == "Weather", r.text
    r = client.responses.create(model=model, input="Answer in JSON.", text={"format": {"type": "json_object"}})
    assert isinstance(json.loads(r.output_text)["text"], str), r.output_text
    print("OK")


def expire_create():
    r = client.responses.create(model=model, input="Keep this for a while.")
    assert client.responses.retrieve(r.id).id == r.id
    print(f"ID={r.id}")


def expire_check():
    rid = os.environ["RESPONSE_ID"]
    not_found(lambda: client.responses.retrieve(rid))
    e = not_found(lambda: client.responses.create(model=model, previous_response_id=rid, input="still there?"))
    assert e.body["code"] == "previous_response_not_found", e.body
    print("OK")


{
    "create": create,
    "tools": tools,
    "conversation": conversation,
    "structured": structured,
    "expire-create": expire_create,
    "expire-check": expire_check,
}[os.environ["SCENARIO"]]()

"""The official OpenAI SDK through the gateway: streaming arrives as it is produced, and the text is
exactly what the simulator generates (asked directly, without the gateway)."""
import os
import time

import openai

model = os.environ["MODEL"]
messages = [{"role": "user", "content": "Tell me about the Gonka network."}]

direct = openai.OpenAI(base_url=os.environ["SIM_BASE_URL"], api_key="unused")
expected = direct.chat.completions.create(model=model, messages=messages, max_tokens=100).choices[0].message.content

client = openai.OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY from the environment
start = time.monotonic()
arrivals = []
text = ""
stream = client.chat.completions.create(model=model, messages=messages, max_tokens=100, stream=True)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        arrivals.append(time.monotonic() - start)
        text += chunk.choices[0].delta.content

assert text == expected, f"streamed {text!r} != generated {expected!r}"
assert len(arrivals) == 20, arrivals
first, last = arrivals[0], arrivals[-1]
# 20 tokens, one every 50 ms: the last arrives ~950 ms after the first.
assert last - first > 0.7, f"tokens were bunched: first {first:.3f}s last {last:.3f}s"
assert first < last / 3, f"first chunk at {first:.3f}s, last at {last:.3f}s"

non_stream = client.chat.completions.create(model=model, messages=messages, max_tokens=100)
assert non_stream.choices[0].message.content == expected
assert non_stream.usage.completion_tokens == 20

models = [m.id for m in client.models.list()]
assert model in models, models

try:
    client.chat.completions.create(model="no/such-model", messages=messages)
    raise AssertionError("expected NotFoundError")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body

print(f"OK first={first:.3f}s last={last:.3f}s")

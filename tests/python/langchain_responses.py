"""LangChain's ChatOpenAI on the Responses API (`use_responses_api=True`) through the gateway: invoke,
stream (chunks arrive as the node produces them) and a bound tool. What the answers must be is asked of
the simulator directly."""
import os
import time

import openai
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

model = os.environ["MODEL"]
direct = openai.OpenAI(base_url=os.environ["SIM_BASE_URL"], api_key="unused")
expected = (
    direct.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about Gonka."}],
    )
    .choices[0]
    .message.content
)

llm = ChatOpenAI(
    model=model,
    use_responses_api=True,
    base_url=os.environ["OPENAI_BASE_URL"],
    api_key=os.environ["OPENAI_API_KEY"],
    max_retries=0,
)
messages = [SystemMessage("Be brief."), HumanMessage("Tell me about Gonka.")]

answer = llm.invoke(messages)
assert answer.text == expected, (answer.text, expected)
assert answer.usage_metadata["output_tokens"] == 20, answer.usage_metadata
assert answer.response_metadata["id"].startswith("resp_"), answer.response_metadata

start = time.monotonic()
arrivals, text, last_chunk = [], "", None
for chunk in llm.stream(messages):
    if chunk.text:
        arrivals.append(time.monotonic() - start)
        text += chunk.text
    last_chunk = chunk if last_chunk is None else last_chunk + chunk
assert text == expected, (text, expected)
assert len(arrivals) == 20, arrivals
first, last = arrivals[0], arrivals[-1]
assert last - first > 0.7, f"chunks were bunched: first {first:.3f}s last {last:.3f}s"
assert last_chunk.usage_metadata["output_tokens"] == 20, last_chunk.usage_metadata


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"18 C in {city}"


call = llm.bind_tools([get_weather]).invoke("get_weather Lisbon")
assert [c["name"] for c in call.tool_calls] == ["get_weather"], call.tool_calls
assert call.tool_calls[0]["args"] == {"city": "sim"}, call.tool_calls

print(f"OK first={first:.3f}s last={last:.3f}s")

"""The official Gonka SDK (gonka-openai 0.2.6) paying for signed inference from the simulated chain: an
account that is funded and has published its public key completes chats (plain and streamed) and its
on-chain balance drops by exactly the usage × the price; an account whose balance cannot cover the
escrow gets 402 "Insufficient balance"; a funded account that never published its key gets 401."""
import os

import httpx
import openai
from gonka_openai import GonkaOpenAI
from gonka_openai.utils import Endpoint

node_url = os.environ["SIM_NODE_URL"]          # http://127.0.0.1:port/v1
node_address = os.environ["SIM_NODE_ADDRESS"]
rest_url = os.environ["CHAIN_REST_URL"]
model = os.environ["MODEL"]
price = int(os.environ["CHAIN_PRICE"])
endpoints = [Endpoint(url=node_url, address=node_address)]


def balance(address):
    r = httpx.get(f"{rest_url}/cosmos/bank/v1beta1/balances/{address}/by_denom", params={"denom": "ngonka"})
    assert r.status_code == 200, r.text
    return int(r.json()["balance"]["amount"])


def client(key):
    return GonkaOpenAI(gonka_private_key=key, endpoints=endpoints, max_retries=0)


# A funded account with its key on chain.
funded, funded_address = os.environ["FUNDED_KEY"], os.environ["FUNDED_ADDRESS"]
node_before = balance(node_address)
before = balance(funded_address)
answer = client(funded).chat.completions.create(
    model=model, messages=[{"role": "user", "content": "what does the chain charge?"}], max_tokens=7)
assert answer.choices[0].message.content, answer
used = answer.usage.prompt_tokens + answer.usage.completion_tokens
assert answer.usage.completion_tokens == 7, answer.usage
after = balance(funded_address)
assert before - after == used * price, (before, after, used, price)

stream = client(funded).chat.completions.create(
    model=model, messages=[{"role": "user", "content": "and when streamed?"}], max_tokens=4, stream=True,
    stream_options={"include_usage": True})
usage = None
text = ""
for chunk in stream:
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
    if chunk.usage:
        usage = chunk.usage
assert text and usage is not None, (text, usage)
streamed_used = usage.prompt_tokens + usage.completion_tokens
assert after - balance(funded_address) == streamed_used * price, (after, balance(funded_address), streamed_used)
assert balance(node_address) - node_before == (used + streamed_used) * price, "the node is paid what was charged"

# Its balance cannot cover the escrow: 402, and nothing is taken.
poor, poor_address = os.environ["POOR_KEY"], os.environ["POOR_ADDRESS"]
poor_before = balance(poor_address)
try:
    client(poor).chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=50)
    raise AssertionError("an account that cannot pay was served")
except openai.APIStatusError as e:
    assert e.status_code == 402, (e.status_code, e.response.text)
    assert e.response.json() == {"error": "Insufficient balance"}, e.response.text
assert balance(poor_address) == poor_before

# Funded, but its public key was never published: 401.
silent = os.environ["UNPUBLISHED_KEY"]
try:
    client(silent).chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    raise AssertionError("an account without a public key on chain was served")
except openai.APIStatusError as e:
    assert e.status_code == 401, (e.status_code, e.response.text)
    assert "public key" in e.response.json()["error"].lower(), e.response.text
assert balance(os.environ["UNPUBLISHED_ADDRESS"]) == int(os.environ["UNPUBLISHED_FUNDS"])
print("OK")

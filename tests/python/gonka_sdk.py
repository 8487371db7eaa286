"""The official Gonka SDK (gonka-openai 0.2.6) against the simulator in gonka mode, and against the gateway's
own signer: a request the SDK signs is accepted; the same signature over a body with one byte changed is
refused; a reused signature is refused; and `gonka-gateway gonka sign` produces the SDK's signatures."""
import json
import os
import subprocess
import time

import httpx
from gonka_openai import GonkaOpenAI
from gonka_openai.utils import Endpoint, gonka_address, gonka_signature

node_url = os.environ["SIM_NODE_URL"]          # http://127.0.0.1:port/v1
node_address = os.environ["SIM_NODE_ADDRESS"]  # its transfer address
model = os.environ["MODEL"]
key = "5f1d3c2b4a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff001"
me = gonka_address(key)

# 1. The SDK's own client, end to end.
client = GonkaOpenAI(gonka_private_key=key, endpoints=[Endpoint(url=node_url, address=node_address)])
answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello gonka"}], max_tokens=5)
assert answer.choices[0].message.content, answer
assert answer.usage.completion_tokens == 5, answer.usage
stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True)
streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
assert len(streamed.split()) == 3, streamed

# 2. Signed by the SDK, then one byte of the body changed: refused.
body = json.dumps({"model": model, "messages": [{"role": "user", "content": "tamper"}], "max_tokens": 2}).encode()
ts = time.time_ns()
headers = {
    "Authorization": gonka_signature(body, key, ts, node_address),
    "X-Requester-Address": me,
    "X-Timestamp": str(ts),
    "Content-Type": "application/json",
}
tampered = body.replace(b"tamper", b"tampex")
r = httpx.post(f"{node_url}/chat/completions", content=tampered, headers=headers)
assert r.status_code == 401, (r.status_code, r.text)
assert r.json()["error"] == "Unable to validate request against PubKey", r.text

# 3. The untouched body with the same signature is accepted, once.
r = httpx.post(f"{node_url}/chat/completions", content=body, headers=headers)
assert r.status_code == 200, (r.status_code, r.text)
r = httpx.post(f"{node_url}/chat/completions", content=body, headers=headers)
assert r.status_code == 400 and r.json()["error"].startswith("AuthKey has already been used"), r.text

# 4. Stale and future timestamps, and a missing signature.
for skew in (-61 * 10**9, 31 * 10**9):
    t = time.time_ns() + skew
    h = dict(headers, **{"Authorization": gonka_signature(body, key, t, node_address), "X-Timestamp": str(t)})
    r = httpx.post(f"{node_url}/chat/completions", content=body, headers=h)
    assert r.status_code == 400, (skew, r.status_code, r.text)
r = httpx.post(f"{node_url}/chat/completions", content=body, headers={"Content-Type": "application/json"})
assert r.status_code == 401 and r.json()["error"] == "Authorization is required", r.text

# 5. The gateway's signer agrees with the SDK's, byte for byte, on assorted bodies.
gateway = os.environ["GATEWAY_BIN"]
env = dict(os.environ, GONKA_PRIVATE_KEY=key)
address = subprocess.run([gateway, "gonka", "address"], env=env, capture_output=True, check=True).stdout.decode().strip()
assert address == me, (address, me)
for i, payload in enumerate([b"", b"{}", "é漢 ünïcode".encode(), os.urandom(4096), body]):
    t = 1_763_800_000_000_000_000 + i
    ours = subprocess.run(
        [gateway, "gonka", "sign", "--transfer-address", node_address, "--timestamp-ns", str(t)],
        input=payload, env=env, capture_output=True, check=True,
    ).stdout.decode().strip()
    assert ours == gonka_signature(payload, key, t, node_address), i

print("OK")

"""The official Gonka SDK (gonka-openai) spending a direct key peer-to-peer: GONKA_PRIVATE_KEY is the direct
key's private key and GONKA_ENDPOINTS names the node ("<url>/v1;<transfer address>"), exactly as a user of
a direct key sets them; the gateway is not on the request path. `direct_keys.py N` sends N chats one after
the other and prints one JSON line per request: its usage, or the status and body the node refused it with.
The SDK is not allowed to retry, so a refusal is the node's own answer."""
import json
import os
import sys

import openai
from gonka_openai import GonkaOpenAI

model = os.environ["MODEL"]
max_tokens = int(os.environ.get("MAX_TOKENS", "5"))
n = int(sys.argv[1]) if len(sys.argv) > 1 else 1
tag = os.environ.get("TAG", "direct")

client = GonkaOpenAI(api_key="unused-with-a-direct-key", max_retries=0)
for i in range(n):
    try:
        a = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"{tag} request {i}"}],
            max_tokens=max_tokens,
        )
        assert a.choices[0].message.content, a
        print(json.dumps({"ok": True, "prompt_tokens": a.usage.prompt_tokens,
                          "completion_tokens": a.usage.completion_tokens}), flush=True)
    except openai.APIStatusError as e:
        print(json.dumps({"ok": False, "status": e.status_code, "body": e.response.text}), flush=True)

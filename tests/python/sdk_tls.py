"""The official OpenAI SDK talking HTTPS to the gateway, trusting only the test CA."""
import os

import openai

ca = os.environ["CA_PEM"]
client = openai.OpenAI(http_client=openai.DefaultHttpxClient(verify=ca))
stream = client.chat.completions.create(
    model=os.environ["MODEL"], messages=[{"role": "user", "content": "over tls"}], max_tokens=5, stream=True
)
text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
assert len(text.split()) == 5, text
answer = client.chat.completions.create(model=os.environ["MODEL"], messages=[{"role": "user", "content": "x"}], max_tokens=3)
assert answer.usage.completion_tokens == 3

# A client that does not trust the CA refuses the gateway's certificate.
strict = openai.OpenAI(max_retries=0)
try:
    strict.models.list()
    raise AssertionError("an untrusted certificate was accepted")
except openai.APIConnectionError:
    pass
print("OK")

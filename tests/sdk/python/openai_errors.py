"""How the official `openai` client raises the errors an upstream answers.

Reads OPENAI_BASE_URL and OPENAI_API_KEY (accepted) and BAD_OPENAI_API_KEY
(refused). Prints one JSON line of what it saw.
"""

import json
import os

import openai
from openai import OpenAI

MODEL = "gpt-4o-mini"


def ask(client, content, **options):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **options
    )


client = OpenAI(max_retries=0)
seen = {}

try:
    ask(client, "slow down [mock status=429 retry_after=2]")
    raise AssertionError("a 429 was not raised")
except openai.RateLimitError as e:
    assert e.status_code == 429
    assert e.response.headers["retry-after"] == "2"
    assert e.code == "rate_limit_exceeded", e.body
    seen["rate_limit"] = {"status": e.status_code, "type": e.type}

try:
    ask(client, "break [mock status=500]")
    raise AssertionError("a 500 was not raised")
except openai.InternalServerError as e:
    assert isinstance(e, openai.APIStatusError)
    assert e.status_code == 500 and e.type == "server_error"
    seen["server_error"] = {"status": e.status_code, "type": e.type}

try:
    ask(client, "unavailable", extra_headers={"x-mock": "status=503"})
    raise AssertionError("a 503 was not raised")
except openai.APIStatusError as e:
    assert e.status_code == 503
    seen["header_directive"] = {"status": e.status_code}

# A stream cut after two chunks ends in an error, never in a clean end.
received = []
error = None
try:
    for chunk in ask(client, "cut me [mock cut_after=2 tokens=10]", stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            received.append(chunk.choices[0].delta.content)
except Exception as e:  # httpx's or the SDK's error, depending on where the cut is seen
    error = type(e).__name__
assert error is not None, "a cut stream ended cleanly"
assert len(received) == 2, received
seen["cut"] = {"chunks": len(received), "error": error}

bad = OpenAI(api_key=os.environ["BAD_OPENAI_API_KEY"], max_retries=0)
try:
    ask(bad, "hello")
    raise AssertionError("a bad key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401 and e.code == "invalid_api_key", e.body
    seen["bad_key"] = {"status": e.status_code, "code": e.code}

print(json.dumps(seen))

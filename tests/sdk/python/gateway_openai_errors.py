"""The official `openai` client through Tollgate: Tollgate's own refusals and
the provider's errors are raised as the SDK's usual exceptions.

Reads OPENAI_BASE_URL (the gateway's /v1), OPENAI_API_KEY (a user's gateway
key), EXHAUSTED_API_KEY (a user whose quota is used up) and BAD_API_KEY.
Prints one JSON line of what it saw.
"""

import json
import os

import openai
from openai import OpenAI

MODEL = "gpt-4o-mini"


def ask(client, content, model=MODEL, **options):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **options)


client = OpenAI(max_retries=0)
seen = {}

# Tollgate's quota: a RateLimitError before any provider is called, with
# Retry-After and the meter, limit, used and reset time in the body.
exhausted = OpenAI(api_key=os.environ["EXHAUSTED_API_KEY"], max_retries=0)
for stream in (False, True):
    try:
        ask(exhausted, "hello there, tell me a story", stream=stream)
        raise AssertionError("an exhausted quota was not raised")
    except openai.RateLimitError as e:
        assert e.status_code == 429 and e.code == "insufficient_quota", e.body
        assert int(e.response.headers["retry-after"]) >= 1
        assert e.body["meter"] == "tokens" and e.body["limit"] == 1 and "reset_at" in e.body, e.body
        assert "x-ratelimit-remaining-tokens" in e.response.headers
        seen["quota"] = {"status": e.status_code, "code": e.code, "meter": e.body["meter"]}

# The provider's own 429 passes through as it came.
try:
    ask(client, "slow down [mock status=429 retry_after=2]")
    raise AssertionError("a 429 was not raised")
except openai.RateLimitError as e:
    assert e.response.headers["retry-after"] == "2" and e.code == "rate_limit_exceeded", e.body
    seen["upstream_rate_limit"] = {"status": e.status_code, "code": e.code}

# A provider's 5xx is a 502 naming the provider.
try:
    ask(client, "break [mock status=500]")
    raise AssertionError("a 502 was not raised")
except openai.APIStatusError as e:
    assert isinstance(e, openai.InternalServerError)
    assert e.status_code == 502 and e.code == "upstream_error" and e.body["provider"] == "openai", e.body
    seen["upstream_error"] = {"status": e.status_code, "type": e.type}

# A model the plan does not allow.
try:
    ask(client, "hello", model="gpt-4o")
    raise AssertionError("a model outside the plan was allowed")
except openai.PermissionDeniedError as e:
    assert e.status_code == 403 and "gpt-4o" in e.message
    seen["not_allowed"] = {"status": e.status_code}

# A key Tollgate does not know.
try:
    ask(OpenAI(api_key=os.environ["BAD_API_KEY"], max_retries=0), "hello")
    raise AssertionError("a bad key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401 and e.code == "invalid_api_key", e.body
    seen["bad_key"] = {"status": e.status_code, "code": e.code}

# A stream cut by the provider is cut for the client too.
received, error = [], None
try:
    for chunk in ask(client, "cut me [mock cut_after=2 tokens=10]", stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            received.append(chunk.choices[0].delta.content)
except Exception as e:  # httpx's or the SDK's error, depending on where the cut is seen
    error = type(e).__name__
assert error is not None and len(received) == 2, (error, received)
seen["cut"] = {"chunks": len(received)}

print(json.dumps(seen))

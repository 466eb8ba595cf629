"""The official `anthropic` client through Tollgate: `messages.create`,
`messages.stream`, `messages.count_tokens`, and Tollgate's refusals raised as
the SDK's exceptions.

Reads ANTHROPIC_BASE_URL (the gateway), ANTHROPIC_API_KEY (a user's gateway
key) and EXHAUSTED_API_KEY (a user whose quota is used up). Prints one JSON
line of what it saw.
"""

import json
import os

import anthropic

MODEL = "claude-haiku-4-5"
PROMPT = [{"role": "user", "content": "Describe a toll gate [mock tokens=7 cached=2]"}]

client = anthropic.Anthropic(max_retries=0)

message = client.messages.create(model=MODEL, max_tokens=100, messages=PROMPT)
assert message.stop_reason == "end_turn" and message.usage.output_tokens == 7, message
assert message.usage.cache_read_input_tokens == 2, message.usage

with client.messages.stream(model=MODEL, max_tokens=100, messages=PROMPT) as stream:
    streamed_text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert streamed_text == message.content[0].text
assert final.usage.output_tokens == 7 and final.usage.input_tokens == message.usage.input_tokens, final.usage

# The provider's own count of the same input, passed through unmetered.
counted = client.messages.count_tokens(model=MODEL, messages=PROMPT)
whole = message.usage
assert counted.input_tokens == whole.input_tokens + (whole.cache_read_input_tokens or 0), (counted, whole)

exhausted = anthropic.Anthropic(api_key=os.environ["EXHAUSTED_API_KEY"], max_retries=0)
try:
    exhausted.messages.create(model=MODEL, max_tokens=100, messages=PROMPT)
    raise AssertionError("an exhausted quota was not raised")
except anthropic.RateLimitError as e:
    assert e.status_code == 429 and e.body["error"]["type"] == "rate_limit_error", e.body
    assert e.body["error"]["meter"] == "tokens" and int(e.response.headers["retry-after"]) >= 1

try:
    client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "[mock status=529]"}])
    raise AssertionError("a provider failure was not raised")
except anthropic.APIStatusError as e:
    assert e.status_code == 502 and e.body["error"]["type"] == "api_error", e.body
    assert "anthropic answered HTTP 529" in e.body["error"]["message"], e.body

usage = lambda u: {  # noqa: E731
    "input": u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0),
    "output": u.output_tokens,
}
print(json.dumps({"usage": usage(message.usage), "stream_usage": usage(final.usage)}))

"""The official `anthropic` client: `messages.create` and `messages.stream`.

Reads ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY as the SDK does. Prints one
JSON line of what it saw.
"""

import json

import anthropic

MODEL = "claude-haiku-4-5"
PROMPT = [{"role": "user", "content": "Describe a toll gate [mock tokens=7]"}]

client = anthropic.Anthropic(max_retries=0)

message = client.messages.create(model=MODEL, max_tokens=100, messages=PROMPT)
assert message.stop_reason == "end_turn", message
assert message.content[0].type == "text" and len(message.content[0].text.split()) == 7
assert message.usage.output_tokens == 7, message.usage

with client.messages.stream(model=MODEL, max_tokens=100, messages=PROMPT) as stream:
    streamed_text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert streamed_text == message.content[0].text
assert final.usage.input_tokens == message.usage.input_tokens, final.usage
assert final.usage.output_tokens == 7, final.usage
assert final.stop_reason == "end_turn"

# max_tokens bounds the reply.
short = client.messages.create(model=MODEL, max_tokens=2, messages=PROMPT)
assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2

# Cache reads are reported apart from the uncached input.
cached = client.messages.create(
    model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "again [mock cached=2]"}]
)
assert cached.usage.cache_read_input_tokens == 2, cached.usage

# A tool is called, then the tool result is answered with text.
tools = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    }
]
question = [{"role": "user", "content": "Weather in Paris? [mock tokens=4]"}]
with client.messages.stream(model=MODEL, max_tokens=100, messages=question, tools=tools) as stream:
    call = stream.get_final_message()
assert call.stop_reason == "tool_use", call
use = call.content[0]
assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "mock", "unit": "c"}, use
answer = client.messages.create(
    model=MODEL,
    max_tokens=100,
    tools=tools,
    messages=question
    + [
        {"role": "assistant", "content": call.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C"}]},
    ],
)
assert answer.stop_reason == "end_turn" and answer.content[0].type == "text", answer
assert answer.usage.output_tokens == 4, answer.usage

try:
    client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "[mock status=529]"}])
    raise AssertionError("a 529 was not raised")
except anthropic.APIStatusError as e:
    assert e.status_code == 529 and e.body["error"]["type"] == "overloaded_error", e.body

print(
    json.dumps(
        {
            "text": message.content[0].text,
            "usage": message.usage.model_dump(),
            "stream_usage": final.usage.model_dump(),
        }
    )
)

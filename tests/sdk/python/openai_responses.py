"""The official `openai` client's Responses API (`client.responses`) against
an OpenAI-format endpoint: created (its input counted first,
`responses.input_tokens.count`) and streamed (the raw events and the
SDK's `responses.stream` helper), with a function tool over two turns,
bounded by `max_output_tokens`, and stored: fetched again, its input
listed, gone on from (`previous_response_id`), its output item named in a
next input (`item_reference`), refused cancelling (it was not made in the
background) and deleted.

Reads OPENAI_BASE_URL and OPENAI_API_KEY as the SDK does. Prints one JSON
line: the usage of every call, for the Rust test to compare with what the
upstream reported and with what Tollgate recorded.
"""

import json

from openai import BadRequestError, NotFoundError, OpenAI

MODEL = "gpt-4o-mini"
client = OpenAI(max_retries=0)
usages = []


def seen(usage):
    usages.append(
        {
            "input": usage.input_tokens,
            "output": usage.output_tokens,
            "cached": usage.input_tokens_details.cached_tokens,
            "reasoning": usage.output_tokens_details.reasoning_tokens,
        }
    )
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens, usage


# Created: the text and the usage.
reply = client.responses.create(
    model=MODEL, instructions="Be brief.", input="Tell me about toll gates [mock tokens=6]"
)
assert reply.status == "completed", reply.status
assert len(reply.output_text.split()) == 6, reply.output_text
# The same input counted beforehand, as the call counted it (no call: no usage).
counted = client.responses.input_tokens.count(
    model=MODEL, instructions="Be brief.", input="Tell me about toll gates [mock tokens=6]"
)
assert counted.object == "response.input_tokens", counted
assert counted.input_tokens == reply.usage.input_tokens, (counted, reply.usage)
assert reply.usage.output_tokens == 6, reply.usage
seen(reply.usage)

# Streamed, event by event: the deltas make the text, the last event
# (response.completed) carries the usage.
events = list(client.responses.create(model=MODEL, input="Tell me about toll gates [mock tokens=6]", stream=True))
types = [e.type for e in events]
assert types[0] == "response.created" and types[-1] == "response.completed", types
text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
assert text == reply.output_text, (text, reply.output_text)
assert [e.sequence_number for e in events] == sorted(e.sequence_number for e in events)
seen(events[-1].response.usage)

# The SDK's stream helper accumulates the events into the final response.
with client.responses.stream(model=MODEL, input=[{"role": "user", "content": "Stream it [mock tokens=4]"}]) as stream:
    streamed = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    final = stream.get_final_response()
assert final.output_text == streamed and len(streamed.split()) == 4, (final.output_text, streamed)
seen(final.usage)

# A function tool over two turns: the call, then the answer to its output.
tools = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]
question = [{"role": "user", "content": "What is the weather in Paris? [mock tokens=5]"}]
called = client.responses.create(model=MODEL, input=question, tools=tools)
calls = [item for item in called.output if item.type == "function_call"]
assert len(calls) == 1 and calls[0].name == "get_weather", called.output
arguments = json.loads(calls[0].arguments)
assert isinstance(arguments["city"], str), arguments
seen(called.usage)
answered = client.responses.create(
    model=MODEL,
    input=question
    + [calls[0].model_dump(exclude_none=True)]
    + [{"type": "function_call_output", "call_id": calls[0].call_id, "output": json.dumps({"temperature": 21})}],
    tools=tools,
)
assert len(answered.output_text.split()) == 5, answered.output_text
seen(answered.usage)

# Cached and reasoning tokens where the Responses API reports them.
detailed = client.responses.create(model=MODEL, input="Think first [mock cached=3 reasoning=2 tokens=4]")
assert detailed.usage.input_tokens_details.cached_tokens == 3, detailed.usage
assert detailed.usage.output_tokens_details.reasoning_tokens == 2, detailed.usage
assert detailed.usage.output_tokens == 6, detailed.usage
seen(detailed.usage)

# max_output_tokens bounds the reply, and the status says so.
# (OpenAI takes no limit below 16.)
short = client.responses.create(model=MODEL, input="Tell me about toll gates [mock tokens=30]", max_output_tokens=16)
assert short.status == "incomplete" and short.incomplete_details.reason == "max_output_tokens", short
assert short.usage.output_tokens == 16, short.usage
seen(short.usage)

# Stored: the first response again, its input, a next turn from it, and
# gone once deleted.
kept = client.responses.retrieve(reply.id)
assert kept.id == reply.id and kept.output_text == reply.output_text, kept
assert kept.usage.output_tokens == reply.usage.output_tokens, kept.usage
items = client.responses.input_items.list(reply.id)
assert [item.content[0].text for item in items.data] == ["Tell me about toll gates [mock tokens=6]"], items
following = client.responses.create(model=MODEL, input="And then? [mock tokens=3]", previous_response_id=reply.id)
assert len(following.output_text.split()) == 3, following.output_text
seen(following.usage)
referring = client.responses.create(
    model=MODEL,
    input=[{"type": "item_reference", "id": reply.output[0].id}, {"role": "user", "content": "Shorter [mock tokens=2]"}],
)
assert len(referring.output_text.split()) == 2, referring.output_text
seen(referring.usage)
try:
    client.responses.cancel(reply.id)
    raise AssertionError("a response made in the foreground was cancelled")
except BadRequestError as e:
    assert e.status_code == 400, e
client.responses.delete(reply.id)
try:
    client.responses.retrieve(reply.id)
    raise AssertionError("a deleted response was still there")
except NotFoundError:
    pass

print(json.dumps({"usage": usages}))

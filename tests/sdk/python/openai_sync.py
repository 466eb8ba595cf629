"""The official `openai` client (sync) against an OpenAI-format endpoint.

Reads OPENAI_BASE_URL and OPENAI_API_KEY as the SDK does. Checks what a user
of the SDK relies on and prints one JSON line of what it saw, for the Rust
test to compare with what the upstream recorded.
"""

import json

from openai import OpenAI

MODEL = "gpt-4o-mini"
PROMPT = [{"role": "user", "content": "Tell me about toll gates [mock tokens=6]"}]

client = OpenAI(max_retries=0)

# Not streamed: the text and the usage block.
reply = client.chat.completions.create(model=MODEL, messages=PROMPT)
text = reply.choices[0].message.content
assert len(text.split()) == 6, text
assert reply.choices[0].finish_reason == "stop"
assert reply.usage.completion_tokens == 6, reply.usage
assert reply.usage.total_tokens == reply.usage.prompt_tokens + 6

# Streamed without include_usage: the same text, and no usage anywhere.
chunks = list(client.chat.completions.create(model=MODEL, messages=PROMPT, stream=True))
assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
assert all(c.usage is None for c in chunks), "usage without include_usage"
assert chunks[-1].choices[0].finish_reason == "stop"

# Streamed with include_usage: a last chunk with no choices carries the usage.
chunks = list(
    client.chat.completions.create(
        model=MODEL, messages=PROMPT, stream=True, stream_options={"include_usage": True}
    )
)
last = chunks[-1]
assert last.choices == [] and last.usage is not None, last
assert all(c.usage is None for c in chunks[:-1])
assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1] if c.choices) == text
stream_usage = last.usage

# Cached and reasoning tokens where OpenAI reports them.
detailed = client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": "Think first [mock cached=3 reasoning=2 tokens=4]"}],
    max_completion_tokens=100,
)
assert detailed.usage.prompt_tokens_details.cached_tokens == 3, detailed.usage
assert detailed.usage.completion_tokens_details.reasoning_tokens == 2, detailed.usage
assert detailed.usage.completion_tokens == 6, detailed.usage

# max_tokens bounds the reply, and the finish reason says so.
short = client.chat.completions.create(model=MODEL, messages=PROMPT[:1], max_tokens=3)
assert short.usage.completion_tokens == 3 and short.choices[0].finish_reason == "length"

# Legacy completions, whole and streamed with include_usage.
legacy = client.completions.create(model=MODEL, prompt="Tell me about toll gates [mock tokens=5]")
assert len(legacy.choices[0].text.split()) == 5 and legacy.usage.completion_tokens == 5, legacy
pieces = list(
    client.completions.create(
        model=MODEL, prompt="Tell me about toll gates [mock tokens=5]", stream=True, stream_options={"include_usage": True}
    )
)
assert "".join(p.choices[0].text for p in pieces if p.choices) == legacy.choices[0].text
assert pieces[-1].choices == [] and pieces[-1].usage.completion_tokens == 5, pieces[-1]

# Embeddings (the SDK asks for base64 and decodes it) and models.
embedding = client.embeddings.create(model="text-embedding-3-small", input=["a toll gate", "a gate"])
assert [len(d.embedding) for d in embedding.data] == [1536, 1536]
assert embedding.usage.prompt_tokens == 5, embedding.usage
assert MODEL in [m.id for m in client.models.list()]

print(
    json.dumps(
        {
            "text": text,
            "usage": reply.usage.model_dump(),
            "stream_usage": stream_usage.model_dump(),
        }
    )
)

"""The official `openai` client (async) against an OpenAI-format endpoint.

Reads OPENAI_BASE_URL and OPENAI_API_KEY. Prints one JSON line of what it saw.
"""

import asyncio
import json

from openai import AsyncOpenAI

MODEL = "gpt-4o-mini"
PROMPT = [{"role": "user", "content": "Tell me about async toll gates [mock tokens=5]"}]


async def streamed(client, **options):
    stream = await client.chat.completions.create(model=MODEL, messages=PROMPT, stream=True, **options)
    return [chunk async for chunk in stream]


async def main():
    client = AsyncOpenAI(max_retries=0)
    reply = await client.chat.completions.create(model=MODEL, messages=PROMPT)
    text = reply.choices[0].message.content
    assert len(text.split()) == 5 and reply.usage.completion_tokens == 5, reply

    plain, with_usage = await asyncio.gather(
        streamed(client), streamed(client, stream_options={"include_usage": True})
    )
    assert all(c.usage is None for c in plain)
    assert "".join(c.choices[0].delta.content or "" for c in plain if c.choices) == text
    last = with_usage[-1]
    assert last.choices == [] and last.usage.completion_tokens == 5, last
    assert last.usage.prompt_tokens == reply.usage.prompt_tokens

    # Many requests at once on one client.
    replies = await asyncio.gather(
        *[
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"request {i} [mock tokens=2]"}]
            )
            for i in range(20)
        ]
    )
    assert all(r.usage.completion_tokens == 2 for r in replies)

    print(json.dumps({"text": text, "usage": reply.usage.model_dump(), "stream_usage": last.usage.model_dump()}))


asyncio.run(main())

"""Google's official `google-genai` client against a Gemini endpoint:
`models.list`, `generate_content`, `count_tokens` and
`generate_content_stream`, on the SDK's default API version (`v1`) and on
`v1beta`.

Reads GEMINI_BASE_URL and GEMINI_API_KEY, and EXHAUSTED_API_KEY when set (a
key whose quota is used up: its call must raise the SDK's 429). Prints one
JSON line of what it saw: the usage of each call, in order, and the models
listed.
"""

import json
import os

from google import genai
from google.genai import errors

MODEL = "gemini-2.5-flash"
PROMPT = "Tell me about toll gates [mock tokens=5]"
BASE = os.environ["GEMINI_BASE_URL"]


def client(key, version=None):
    options = {"base_url": BASE, "retry_options": {"attempts": 1}}
    if version:
        options["api_version"] = version
    return genai.Client(api_key=key, http_options=options)


def usage(meta):
    return {"input": meta.prompt_token_count, "output": meta.candidates_token_count}


seen = []
models = {}
for version in [None, "v1beta"]:
    gemini = client(os.environ["GEMINI_API_KEY"], version)
    models[version or "v1"] = sorted(m.name for m in gemini.models.list())
    reply = gemini.models.generate_content(model=MODEL, contents=PROMPT)
    assert len(reply.text.split()) == 5, reply.text
    assert reply.usage_metadata.candidates_token_count == 5, reply.usage_metadata
    seen.append(usage(reply.usage_metadata))
    counted = gemini.models.count_tokens(model=MODEL, contents=PROMPT)
    assert counted.total_tokens == reply.usage_metadata.prompt_token_count, (counted, reply.usage_metadata)

    chunks = list(gemini.models.generate_content_stream(model=MODEL, contents=PROMPT))
    assert "".join(c.text or "" for c in chunks) == reply.text
    # Each chunk carries the counts so far: the last has them all.
    counts = [c.usage_metadata.candidates_token_count for c in chunks]
    assert counts == sorted(counts) and counts[-1] == 5, counts
    seen.append(usage(chunks[-1].usage_metadata))

exhausted = os.environ.get("EXHAUSTED_API_KEY")
if exhausted:
    # Kept in a name: a client nothing holds is closed before it sends.
    broke = client(exhausted)
    try:
        broke.models.generate_content(model=MODEL, contents=PROMPT)
        raise AssertionError("an exhausted quota was not raised")
    except errors.ClientError as e:
        assert e.code == 429 and e.status == "RESOURCE_EXHAUSTED", (e.code, e.status, e.details)

assert models["v1"] == models["v1beta"], models
print(json.dumps({"usage": seen, "models": models["v1"]}))

"""The official `openai` client's Conversations API (`client.conversations`)
against an OpenAI-format endpoint: a conversation made with an opening item
and metadata, fetched and updated; two responses made in it (by its id, and
by `{"id": …}`), which add their turns to it; its items listed, one added,
fetched and deleted; its opening item named in a later input
(`item_reference`); the conversation deleted, and then not found.

Reads OPENAI_BASE_URL and OPENAI_API_KEY as the SDK does. Prints one JSON
line: the usage of every response and the ids of the items listed, for the
Rust test to compare with what the upstream saw and Tollgate recorded.
"""

import json

from openai import NotFoundError, OpenAI

MODEL = "gpt-4o-mini"
client = OpenAI(max_retries=0)
usages = []


def seen(usage):
    usages.append({"input": usage.input_tokens, "output": usage.output_tokens})


opening = [{"type": "message", "role": "user", "content": "Hi"}]
conversation = client.conversations.create(items=opening, metadata={"topic": "tolls"})
assert conversation.id and conversation.metadata == {"topic": "tolls"}, conversation
assert client.conversations.retrieve(conversation.id).id == conversation.id
updated = client.conversations.update(conversation.id, metadata={"topic": "gates"})
assert updated.metadata == {"topic": "gates"}, updated

first = client.responses.create(
    model=MODEL, input="Tell me about toll gates [mock tokens=4]", conversation=conversation.id
)
assert len(first.output_text.split()) == 4, first.output_text
seen(first.usage)
second = client.responses.create(model=MODEL, input="Shorter [mock tokens=2]", conversation={"id": conversation.id})
seen(second.usage)

# Its items: the opening, then each turn's question and answer.
items = client.conversations.items.list(conversation.id, order="asc")
ids = [item.id for item in items.data]
assert len(ids) == 5, ids
assert ids[2] == first.output[0].id and ids[4] == second.output[0].id, (ids, first.output, second.output)
added = client.conversations.items.create(
    conversation.id, items=[{"type": "message", "role": "user", "content": "noted"}]
)
noted = added.data[0].id
assert client.conversations.items.retrieve(noted, conversation_id=conversation.id).id == noted
client.conversations.items.delete(noted, conversation_id=conversation.id)

# Its opening item, named by id in a response outside it.
again = client.responses.create(
    model=MODEL, input=[{"type": "item_reference", "id": ids[0]}, {"role": "user", "content": "Again [mock tokens=3]"}]
)
assert len(again.output_text.split()) == 3, again.output_text
seen(again.usage)

client.conversations.delete(conversation.id)
try:
    client.conversations.retrieve(conversation.id)
    raise AssertionError("a deleted conversation was still there")
except NotFoundError:
    pass

print(json.dumps({"usage": usages, "items": ids}))

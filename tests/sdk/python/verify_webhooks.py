"""Verifies webhooks Tollgate sent, with the `standardwebhooks` package (an
independent implementation of the Standard Webhooks scheme).

Env: WEBHOOK_SECRET (whsec_...), DELIVERIES (a JSON file: a list of
{"headers": {...}, "body": "..."} as the receiver got them).
Prints JSON: the verified payloads in order, and how many tampered copies
(body changed, or signature from another secret) were refused.
"""
import json
import os

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

secret = os.environ["WEBHOOK_SECRET"]
with open(os.environ["DELIVERIES"]) as f:
    deliveries = json.load(f)

hook = Webhook(secret)
other = Webhook("whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY")
verified = []
refused = 0
for d in deliveries:
    verified.append(hook.verify(d["body"], d["headers"]))
    try:
        hook.verify(d["body"].replace("}", " }", 1), d["headers"])
    except WebhookVerificationError:
        refused += 1
    try:
        other.verify(d["body"], d["headers"])
    except WebhookVerificationError:
        refused += 1

print(json.dumps({"verified": verified, "tampered_refused": refused}))

"""Signs Stripe events the way Stripe does, with the official `stripe`
package (`stripe.WebhookSignature.generate_signature_header`).

Env: STRIPE_SECRET (whsec_...), EVENTS (a JSON file: a list of
{"payload": "<raw body>", "timestamp": <unix seconds or null for now>}).
Prints JSON: one Stripe-Signature header per event, in order.
"""
import json
import os

import stripe

secret = os.environ["STRIPE_SECRET"]
with open(os.environ["EVENTS"]) as f:
    events = json.load(f)

headers = [
    stripe.WebhookSignature.generate_signature_header(e["payload"], secret, timestamp=e.get("timestamp"))
    for e in events
]
print(json.dumps(headers))

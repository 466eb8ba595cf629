//! `GET /openapi.json`: every route but the proxy ones, with its schemas.
//! Written by hand from the same shapes the handlers use; a test checks
//! that every route of the router is described here.

use serde_json::{Map, Value, json};

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn nullable(t: &str) -> Value {
    json!({ "type": [t, "null"] })
}

fn time() -> Value {
    json!({ "type": "string", "format": "date-time" })
}

fn time_or_null() -> Value {
    json!({ "type": ["string", "null"], "format": "date-time" })
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": r("Error") } } })
}

/// One operation: summary, security, optional request body schema, and the
/// success status with its schema (`None`: no body).
fn op(summary: &str, security: &str, body: Option<Value>, status: u16, response: Option<Value>) -> Value {
    let mut responses = Map::new();
    let success = match response {
        Some(schema) => {
            json!({ "description": "success", "content": { "application/json": { "schema": schema } } })
        }
        None => json!({ "description": "success, no body" }),
    };
    responses.insert(status.to_string(), success);
    responses.insert("400".into(), error_response("invalid request; `error.field` names what is wrong"));
    responses.insert("401".into(), error_response("no valid credential"));
    responses.insert("403".into(), error_response("the credential may not do this"));
    responses.insert("404".into(), error_response("not found"));
    responses.insert("429".into(), error_response("too many failed authentications; see Retry-After"));
    let mut op = json!({ "summary": summary, "responses": responses, "security": [{ security: [] }] });
    if let Some(schema) = body {
        op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": schema } } });
    }
    op
}

fn admin(summary: &str, body: Option<Value>, status: u16, response: Option<Value>) -> Value {
    op(summary, "adminToken", body, status, response)
}

fn key(summary: &str, body: Option<Value>, status: u16, response: Option<Value>) -> Value {
    op(summary, "gatewayKey", body, status, response)
}

fn public(summary: &str, response: Value) -> Value {
    json!({ "summary": summary, "responses": { "200": { "description": "success", "content": { "application/json": { "schema": response } } } } })
}

/// `operation` with query parameters.
fn with_params(mut operation: Value, parameters: Value) -> Value {
    operation["parameters"] = parameters;
    operation
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" }, "description": description })
}

fn usage_params() -> Value {
    let q = |name: &str, description: &str| json!({ "name": name, "in": "query", "schema": { "type": "string" }, "description": description });
    json!([
        q("period", "YYYY-MM: that calendar month instead of the current period"),
        q("group_by", "day, model, feature, key or provider"),
        q("from", "RFC 3339; with Accept: text/csv"),
        q("to", "RFC 3339; with Accept: text/csv"),
    ])
}

pub fn document() -> Value {
    let list = |field: &str, item: &str| json!({ "type": "object", "properties": { field: { "type": "array", "items": r(item) } } });
    let slug = path_param("slug", "the plan's slug");
    let id = path_param("id", "the app's own user id (percent-encoded)");
    let key_id = path_param("key_id", "a key id, `key_…`");
    let provider = path_param("provider", "a provider: openai, anthropic, gemini, groq, github, or a configured name");
    let validate = json!({ "name": "validate", "in": "query", "schema": { "type": "boolean", "default": false },
                           "description": "call the provider's models list (GitHub: /user) with the key and store the outcome" });
    let mut paths = json!({
        "/healthz": { "get": public("liveness", json!({ "type": "object" })) },
        "/readyz": { "get": public("readiness: the store answers (503 when it does not)", json!({ "type": "object" })) },
        "/metrics": { "get": { "summary": "Prometheus metrics", "responses": { "200": { "description": "text exposition format" } } } },
        "/openapi.json": { "get": public("this document", json!({ "type": "object" })) },
        "/v1/me": { "get": key("who the key belongs to", None, 200, Some(r("Me"))) },
        "/v1/me/keys": {
            "get": key("the caller's keys (scope keys:manage)", None, 200, Some(list("keys", "Key"))),
            "post": key("a new key for the caller, with at most the caller's scopes", Some(r("KeyCreate")), 201, Some(r("KeyCreated"))),
        },
        "/v1/me/keys/{key_id}": { "parameters": [key_id], "delete": key("revoke one of the caller's keys", None, 204, None) },
        "/v1/plans": { "get": key("the plans on offer", None, 200, Some(list("plans", "Plan"))) },
        "/admin/v1/plans": {
            "get": admin("list plans", None, 200, Some(list("plans", "Plan"))),
            "post": admin("create a plan (409 if the slug exists)", Some(r("PlanInput")), 201, Some(r("Plan"))),
        },
        "/admin/v1/plans/{slug}": {
            "parameters": [slug],
            "get": admin("one plan", None, 200, Some(r("Plan"))),
            "put": admin("replace a plan; absent fields take their defaults", Some(r("PlanInput")), 200, Some(r("Plan"))),
            "patch": admin("change some fields of a plan", Some(r("PlanInput")), 200, Some(r("Plan"))),
            "delete": admin("delete a plan no user is on (409 otherwise)", None, 204, None),
        },
        "/admin/v1/users": {
            "get": {
                "parameters": [
                    { "name": "cursor", "in": "query", "schema": { "type": "string" } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } },
                    { "name": "plan", "in": "query", "schema": { "type": "string" } },
                ],
                "summary": "list users in id order",
                "security": [{ "adminToken": [] }],
                "responses": { "200": { "description": "success", "content": { "application/json": { "schema": {
                    "type": "object", "properties": { "users": { "type": "array", "items": r("User") }, "next_cursor": nullable("string") } } } } } },
            },
            "post": admin("create a user (409 if the id exists)", Some(r("UserCreate")), 201, Some(r("User"))),
        },
        "/admin/v1/users/{id}": {
            "parameters": [id],
            "get": admin("one user", None, 200, Some(r("User"))),
            "patch": admin("change a user's e-mail, Stripe customer or status", Some(r("UserUpdate")), 200, Some(r("User"))),
            "delete": admin("delete a user and their keys", None, 204, None),
        },
        "/admin/v1/users/{id}/suspend": { "parameters": [id], "post": admin("suspend: the user's keys get 403", None, 200, Some(r("User"))) },
        "/admin/v1/users/{id}/unsuspend": { "parameters": [id], "post": admin("lift a suspension", None, 200, Some(r("User"))) },
        "/admin/v1/users/{id}/plan": { "parameters": [id], "put": admin("move a user to another plan", Some(r("PlanChange")), 200, Some(r("User"))) },
        "/admin/v1/users/{id}/portal-sessions": { "parameters": [id], "post": admin("a one-time URL that opens the portal (/portal) as this user: signed, short-lived, single use; the body may be left out", Some(r("PortalSessionInput")), 201, Some(r("PortalSession"))) },
        "/admin/v1/users/{id}/keys": {
            "parameters": [id],
            "get": admin("a user's keys, never the secrets", None, 200, Some(list("keys", "Key"))),
            "post": admin("issue a key; the secret is in this response only", Some(r("KeyCreate")), 201, Some(r("KeyCreated"))),
        },
        "/admin/v1/keys/{key_id}": {
            "parameters": [key_id],
            "get": admin("one key", None, 200, Some(r("Key"))),
            "delete": admin("revoke a key at once", None, 204, None),
        },
        "/admin/v1/keys/{key_id}/rotate": {
            "parameters": [key_id],
            "post": admin("a successor key; the old one works for grace_seconds more", Some(r("Rotate")), 201, Some(r("KeyCreated"))),
        },
        "/admin/v1/service-keys": {
            "get": admin("the app's own keys", None, 200, Some(list("keys", "Key"))),
            "post": admin("issue a service key (scopes meter, credentials:read, usage:read)", Some(r("KeyCreate")), 201, Some(r("KeyCreated"))),
        },
        "/admin/v1/service-keys/{key_id}": { "parameters": [key_id], "delete": admin("revoke a service key", None, 204, None) },
        "/v1/usage/events": { "post": op("record a batch of usage events, idempotent by id; 2xx means committed (scope meter)", "gatewayKey", Some(r("EventBatch")), 200, Some(r("EventBatchResult"))) },
        "/v1/quota/check": { "post": op("may a user spend this much of a meter? optionally reserve it (scope meter); a refusal is 200 with allowed false", "gatewayKey", Some(r("QuotaCheck")), 200, Some(r("QuotaCheckResult"))) },
        "/v1/quota/reservations/{id}/settle": { "parameters": [path_param("id", "a reservation id, res_…")], "post": op("record the amount actually used and end the hold", "gatewayKey", Some(json!({"type":"object","required":["amount"],"properties":{"amount":{"type":"integer","minimum":0}}})), 200, Some(json!({"type":"object"}))) },
        "/v1/quota/reservations/{id}": { "parameters": [path_param("id", "a reservation id, res_…")], "delete": op("release a hold unused", "gatewayKey", None, 204, None) },
        "/v1/me/usage": { "get": { "summary": "the caller's usage (scope usage:read)", "security": [{ "gatewayKey": [] }], "parameters": usage_params(), "responses": { "200": { "description": "success", "content": { "application/json": { "schema": r("Usage") } } } } } },
        "/admin/v1/usage": { "get": admin("every user's usage, sorted by the largest share of a limit used", None, 200, Some(json!({"type":"object","properties":{"users":{"type":"array","items":{"type":"object"}}}}))) },
        "/admin/v1/users/{id}/usage": { "parameters": [id], "get": { "summary": "a user's usage; with Accept: text/csv the ledger for from..to as CSV", "security": [{ "adminToken": [] }], "parameters": usage_params(), "responses": { "200": { "description": "success", "content": { "application/json": { "schema": r("Usage") }, "text/csv": { "schema": { "type": "string" } } } } } } },
        "/admin/v1/users/{id}/usage/reset": { "parameters": [id], "post": admin("start a new period now; lifetime totals stay", None, 200, Some(r("Usage"))) },
        "/admin/v1/users/{id}/usage/events": { "parameters": [id], "get": admin("a page of the user's ledger (from, to, cursor, limit); CSV with Accept: text/csv", None, 200, Some(json!({"type":"object","properties":{"events":{"type":"array","items":{"type":"object"}},"next_cursor":nullable("string"),"total":{"type":"integer"}}}))) },
        "/admin/v1/users/{id}/grants": {
            "parameters": [id],
            "get": admin("a user's grants", None, 200, Some(list("grants", "Grant"))),
            "post": admin("add allowance for a meter, by default until the end of the period", Some(r("GrantInput")), 201, Some(r("Grant"))),
        },
        "/admin/v1/prices": { "get": admin("model prices (USD per million tokens)", None, 200, Some(json!({"type":"object","properties":{"prices":{"type":"array","items":r("Price")}}}))) },
        "/admin/v1/prices/{model}": {
            "parameters": [path_param("model", "a model name")],
            "put": admin("set a model's price", Some(r("Price")), 200, Some(r("Price"))),
            "delete": admin("remove a price set through the API", None, 204, None),
        },
        "/admin/v1/users/{id}/credentials": {
            "parameters": [id],
            "get": admin("a user's provider credentials: status only, never the secrets", None, 200, Some(list("credentials", "Credential"))),
        },
        "/admin/v1/users/{id}/credentials/{provider}": {
            "parameters": [id, provider],
            "get": admin("one provider credential's status (never the secret)", None, 200, Some(r("Credential"))),
            "put": with_params(admin("store (or replace) a user's own key for a provider, encrypted; ?validate=true asks the provider first and stores its answer", Some(r("CredentialSet")), 200, Some(r("Credential"))), json!([validate])),
            "delete": admin("delete a user's credential for a provider", None, 204, None),
        },
        "/v1/me/credentials": {
            "get": key("the caller's provider credentials, status only (scope credentials:manage)", None, 200, Some(list("credentials", "Credential"))),
        },
        "/v1/me/credentials/{provider}": {
            "parameters": [provider],
            "get": key("one of the caller's provider credentials (scope credentials:manage)", None, 200, Some(r("Credential"))),
            "put": with_params(key("store (or replace) the caller's own key for a provider (scope credentials:manage)", Some(r("CredentialSet")), 200, Some(r("Credential"))), json!([validate])),
            "delete": key("delete the caller's credential for a provider (scope credentials:manage)", None, 204, None),
        },
        "/v1/credentials/resolve": {
            "post": key("the secret to call a provider with for a user: the user's own credential, else the platform key (a service key with credentials:read); audited; 400 no_credential when there is neither", Some(r("Resolve")), 200, Some(r("Resolved"))),
        },
        "/admin/v1/audit": {
            "get": {
                "summary": "the audit log, newest first: who did what, to which thing, from where (never a secret)",
                "security": [{ "adminToken": [] }],
                "parameters": [
                    { "name": "user", "in": "query", "schema": { "type": "string" }, "description": "entries about this user" },
                    { "name": "action", "in": "query", "schema": { "type": "string" }, "description": "an action (credential.set) or a family (credential)" },
                    { "name": "since", "in": "query", "schema": time(), "description": "entries at or after this time" },
                    { "name": "until", "in": "query", "schema": time(), "description": "entries before this time" },
                    { "name": "cursor", "in": "query", "schema": { "type": "string" }, "description": "next_cursor of the previous page" },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
                ],
                "responses": {
                    "200": { "description": "success", "content": { "application/json": { "schema": { "type": "object", "properties": {
                        "entries": { "type": "array", "items": r("AuditEntry") }, "next_cursor": nullable("string") } } } } },
                    "400": error_response("invalid request; `error.field` names what is wrong"),
                },
            },
        },
        "/admin/v1/webhooks": {
            "get": admin("every webhook endpoint (never its secret)", None, 200, Some(json!({ "type": "object", "properties": { "webhooks": { "type": "array", "items": r("Webhook") } } }))),
            "post": admin("add a webhook endpoint; the answer holds its signing secret (whsec_…) this once", Some(r("WebhookInput")), 201, Some(r("WebhookCreated"))),
        },
        "/admin/v1/webhooks/{id}": {
            "get": admin("one webhook endpoint", None, 200, Some(r("Webhook"))),
            "patch": admin("change an endpoint's url, events, description or enabled", Some(r("WebhookPatch")), 200, Some(r("Webhook"))),
            "delete": admin("remove an endpoint and its deliveries", None, 204, None),
        },
        "/admin/v1/webhooks/{id}/deliveries": {
            "get": with_params(admin("an endpoint's deliveries, newest first, each with every attempt (time, duration, status code, error)", None, 200,
                Some(json!({ "type": "object", "properties": { "deliveries": { "type": "array", "items": r("Delivery") }, "next_cursor": nullable("string") } }))),
                json!([
                    { "name": "status", "in": "query", "schema": { "type": "string", "enum": ["pending", "delivered", "failed"] } },
                    { "name": "cursor", "in": "query", "schema": { "type": "string" }, "description": "next_cursor of the previous page" },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 500, "default": 50 } },
                ])),
        },
        "/admin/v1/webhooks/{id}/deliveries/{delivery_id}": {
            "get": admin("one delivery, with its attempts and the event's payload", None, 200, Some(r("Delivery"))),
        },
        "/admin/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver": {
            "post": admin("send a delivery again now (same webhook-id, a new day of retries); the attempt is marked manual", None, 202, Some(r("Delivery"))),
        },
        "/webhooks/stripe": {
            "post": {
                "summary": "Stripe's webhook: Stripe-Signature verified over the raw body (several v1 accepted, 300 s tolerance); deduplicated by event id; invoice.paid starts a new period, customer.subscription.created/updated moves the user to the plan with the first item's price, customer.subscription.deleted to free; unknown customers and prices are acknowledged",
                "parameters": [{ "name": "Stripe-Signature", "in": "header", "required": true, "schema": { "type": "string" }, "description": "t=…,v1=…[,v1=…]" }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "description": "a Stripe event: id, type, data.object" } } } },
                "responses": {
                    "200": { "description": "acknowledged", "content": { "application/json": { "schema": { "type": "object", "properties": {
                        "received": { "type": "boolean" }, "id": { "type": "string" },
                        "outcome": { "type": "string", "enum": ["applied", "duplicate", "ignored"] }, "reason": nullable("string") } } } } },
                    "400": error_response("a missing, malformed, mismatched or stale signature, or a body that is not an event"),
                    "404": error_response("TOLLGATE_STRIPE_WEBHOOK_SECRET is not set"),
                },
            },
        },
    });
    // Conflicts are possible wherever something is created or deleted.
    for (path, method) in [
        ("/admin/v1/plans", "post"),
        ("/admin/v1/plans/{slug}", "delete"),
        ("/admin/v1/users", "post"),
        ("/admin/v1/keys/{key_id}/rotate", "post"),
    ] {
        paths[path][method]["responses"]["409"] = error_response("conflict");
    }

    let scopes = json!({ "type": "array", "items": { "type": "string", "enum": ["proxy", "usage:read", "keys:manage", "credentials:manage", "meter", "credentials:read"] } });
    let limits = json!({ "type": "object", "additionalProperties": { "type": ["integer", "null"], "minimum": 0 }, "description": "limit per meter per period; null = unlimited" });
    let key_properties = json!({
        "id": { "type": "string" }, "kind": { "type": "string", "enum": ["user", "service"] },
        "user_id": nullable("string"), "name": { "type": "string" }, "prefix": { "type": "string" },
        "last4": { "type": "string" }, "scopes": scopes, "created_at": time(),
        "expires_at": time_or_null(), "revoked_at": time_or_null(), "last_used_at": time_or_null(),
    });
    let mut created_properties = key_properties.clone();
    created_properties["key"] = json!({ "type": "string", "description": "the secret, shown this once" });
    let plan_properties = json!({
        "slug": { "type": "string" }, "name": { "type": "string" }, "price_cents": { "type": "integer" },
        "currency": { "type": "string" }, "period": { "type": "string", "enum": ["month", "anchored", "lifetime"] },
        "limits": limits, "rpm": nullable("integer"), "tpm": nullable("integer"),
        "byok_counts": { "type": "boolean" }, "byok_required": { "type": "boolean" },
        "allowed_models": { "type": ["array", "null"], "items": { "type": "string" } },
        "alert_thresholds": { "type": "array", "items": { "type": "integer" } },
        "stripe_price_id": nullable("string"),
        "payment_link": { "type": ["string", "null"], "description": "where the portal's upgrade button for this plan goes (a Stripe payment link, say); else upgrade_url" },
        "default_output_reservation": { "type": "integer", "minimum": 1, "description": "output tokens the gateway reserves when a request names no output limit (default 4096)" },
    });
    let event_types = json!({ "type": "array", "description": "event types, or [\"*\"] (the default) for all",
        "items": { "type": "string", "enum": std::iter::once("*").chain(tollgate_domain::hooks::EventType::ALL.iter().map(|e| e.as_str())).collect::<Vec<_>>() } });
    let webhook_properties = json!({
        "id": { "type": "string" }, "url": { "type": "string" }, "events": event_types.clone(),
        "description": nullable("string"), "enabled": { "type": "boolean" }, "created_at": time(), "updated_at": time(),
    });
    let mut webhook_created = webhook_properties.clone();
    webhook_created["secret"] =
        json!({ "type": "string", "description": "whsec_…: the signing secret, shown this once" });
    let mut plan_read = plan_properties.clone();
    plan_read["created_at"] = time();
    plan_read["updated_at"] = time();

    json!({
        "openapi": "3.1.0",
        "info": { "title": "Tollgate", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Admin, self-service and operations routes. Proxy routes follow the providers' own APIs." },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminToken": { "type": "http", "scheme": "bearer", "description": "the admin token" },
                "gatewayKey": { "type": "http", "scheme": "bearer", "description": "a gateway key, tg_…; also X-API-Key, x-goog-api-key or ?key=" },
            },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["type", "message"], "properties": {
                    "type": { "type": "string", "enum": ["invalid_request", "unauthorized", "forbidden", "not_found", "conflict", "quota_exceeded", "rate_limited", "provider_error", "no_credential", "internal"] },
                    "message": { "type": "string" }, "field": { "type": "string" } } } } },
                "Plan": { "type": "object", "properties": plan_read },
                "PlanInput": { "type": "object", "additionalProperties": false, "properties": plan_properties },
                "User": { "type": "object", "properties": {
                    "id": { "type": "string" }, "plan": { "type": "string" }, "status": { "type": "string", "enum": ["active", "suspended"] },
                    "email": nullable("string"), "stripe_customer_id": nullable("string"), "billing_anchor": time(),
                    "created_at": time(), "updated_at": time() } },
                "UserCreate": { "type": "object", "required": ["id"], "additionalProperties": false, "properties": {
                    "id": { "type": "string" }, "plan": { "type": "string", "default": "free" }, "email": { "type": "string" }, "stripe_customer_id": { "type": "string" } } },
                "UserUpdate": { "type": "object", "additionalProperties": false, "properties": {
                    "email": nullable("string"), "stripe_customer_id": nullable("string"), "status": { "type": "string", "enum": ["active", "suspended"] } } },
                "PortalSessionInput": { "type": "object", "additionalProperties": false, "properties": {
                    "ttl_seconds": { "type": "integer", "minimum": 1, "maximum": 86400, "description": "how long the link can be opened; default portal_link_ttl_seconds (300)" } } },
                "PortalSession": { "type": "object", "properties": {
                    "url": { "type": "string", "description": "the one-time link, on TOLLGATE_PUBLIC_URL (or the request's host)" },
                    "path": { "type": "string", "description": "the same link without the scheme and host" },
                    "expires_at": time(), "user_id": { "type": "string" } } },
                "PlanChange": { "type": "object", "required": ["plan"], "additionalProperties": false, "properties": {
                    "plan": { "type": "string" }, "reset_usage": { "type": "boolean", "default": false } } },
                "Key": { "type": "object", "properties": key_properties },
                "KeyCreated": { "type": "object", "properties": created_properties },
                "KeyCreate": { "type": "object", "additionalProperties": false, "properties": {
                    "name": { "type": "string" }, "scopes": scopes, "expires_at": time_or_null() } },
                "Rotate": { "type": "object", "additionalProperties": false, "properties": {
                    "grace_seconds": { "type": "integer", "minimum": 0, "default": 0 } } },
                "EventBatch": { "type": "object", "required": ["events"], "properties": { "events": { "type": "array", "items": { "type": "object", "required": ["id"], "properties": {
                    "id": { "type": "string", "description": "idempotency key" }, "user_id": { "type": "string" }, "key_id": { "type": "string" },
                    "timestamp": time(), "feature": { "type": "string" }, "route": { "type": "string" }, "provider": { "type": "string" }, "model": { "type": "string" },
                    "input_tokens": { "type": "integer", "minimum": 0 }, "output_tokens": { "type": "integer", "minimum": 0 },
                    "cached_tokens": { "type": "integer", "minimum": 0 }, "reasoning_tokens": { "type": "integer", "minimum": 0 },
                    "requests": { "type": "integer", "minimum": 0, "default": 1 }, "cost_usd": { "type": "integer", "description": "micro-dollars; computed when absent" },
                    "meters": { "type": "object", "additionalProperties": { "type": "integer", "minimum": 0 } },
                    "latency_ms": { "type": "integer" }, "ttft_ms": { "type": "integer" }, "status_code": { "type": "integer" },
                    "request_bytes": { "type": "integer" }, "response_bytes": { "type": "integer" }, "client_ip": { "type": "string" },
                    "user_agent": { "type": "string" }, "key_source": { "type": "string", "enum": ["platform", "byok"] }, "estimated": { "type": "boolean" } } } } } },
                "EventBatchResult": { "type": "object", "properties": { "accepted": { "type": "integer" }, "duplicates": { "type": "integer" }, "rejected": { "type": "integer" },
                    "errors": { "type": "array", "items": { "type": "object", "properties": { "index": { "type": "integer" }, "id": nullable("string"), "field": { "type": "string" }, "message": { "type": "string" } } } } } },
                "QuotaCheck": { "type": "object", "required": ["meter", "amount"], "properties": { "user_id": { "type": "string" }, "meter": { "type": "string" },
                    "amount": { "type": "integer", "minimum": 0 }, "reserve": { "type": "boolean", "default": false }, "ttl_seconds": { "type": "integer", "minimum": 1, "maximum": 86400, "default": 600 } } },
                "QuotaCheckResult": { "type": "object", "properties": { "allowed": { "type": "boolean" }, "limit": nullable("integer"), "used": { "type": "integer" },
                    "reserved": { "type": "integer" }, "remaining": nullable("integer"), "reset_at": time_or_null(), "reservation_id": nullable("string") } },
                "Usage": { "type": "object", "properties": { "user_id": { "type": "string" }, "plan": { "type": "string" },
                    "period": { "type": "object", "properties": { "start": time(), "end": time_or_null() } },
                    "meters": { "type": "object", "additionalProperties": { "type": "object", "properties": { "used": { "type": "integer" }, "limit": nullable("integer"), "remaining": nullable("integer"), "reserved": { "type": "integer" } } } },
                    "lifetime": { "type": "object", "additionalProperties": { "type": "integer" } },
                    "groups": { "type": "array", "items": { "type": "object" } } } },
                "Grant": { "type": "object", "properties": { "id": { "type": "string" }, "user_id": { "type": "string" }, "meter": { "type": "string" }, "amount": { "type": "integer" },
                    "starts_at": time(), "expires_at": time_or_null(), "created_at": time() } },
                "GrantInput": { "type": "object", "required": ["meter", "amount"], "properties": { "meter": { "type": "string" }, "amount": { "type": "integer", "minimum": 1 },
                    "starts_at": time(), "expires_at": time_or_null() } },
                "Price": { "type": "object", "properties": { "model": { "type": "string" }, "input": { "type": "number" }, "cached_input": { "type": "number" }, "output": { "type": "number" } } },
                "Credential": { "type": "object", "properties": {
                    "user_id": { "type": "string" }, "provider": { "type": "string" }, "label": nullable("string"),
                    "last4": { "type": "string", "description": "the secret's last four characters" },
                    "created_at": time(), "updated_at": time(), "last_used_at": time_or_null(),
                    "validation": { "type": ["object", "null"], "properties": {
                        "outcome": { "type": "string", "enum": ["valid", "invalid", "unreachable"] },
                        "checked_at": time(), "message": { "type": "string" } } } } },
                "CredentialSet": { "type": "object", "required": ["secret"], "additionalProperties": false, "properties": {
                    "secret": { "type": "string", "description": "the provider key: sk-… (OpenAI), sk-ant-… (Anthropic), AIza… (Gemini), gsk_… (Groq), ghp_…/github_pat_… (GitHub)" },
                    "label": nullable("string") } },
                "Resolve": { "type": "object", "required": ["user_id", "provider"], "additionalProperties": false, "properties": {
                    "user_id": { "type": "string" }, "provider": { "type": "string" } } },
                "Resolved": { "type": "object", "properties": {
                    "user_id": { "type": "string" }, "provider": { "type": "string" },
                    "source": { "type": "string", "enum": ["byok", "platform"] }, "secret": { "type": "string" } } },
                "AuditEntry": { "type": "object", "properties": {
                    "id": { "type": "integer" }, "time": time(),
                    "actor": { "type": "string", "description": "admin, system, or the key id (key_…) that acted" },
                    "action": { "type": "string", "enum": tollgate_domain::audit::AuditAction::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>() },
                    "target": { "type": "string", "description": "credential:USER/PROVIDER, key:KEY_ID, plan:SLUG or user:USER" },
                    "user_id": nullable("string"), "client_ip": nullable("string"),
                    "details": { "type": "object", "additionalProperties": { "type": "string" } } } },
                "Webhook": { "type": "object", "properties": webhook_properties.clone() },
                "WebhookCreated": { "type": "object", "properties": webhook_created },
                "WebhookInput": { "type": "object", "required": ["url"], "additionalProperties": false, "properties": {
                    "url": { "type": "string", "description": "http(s) URL that receives POSTs" },
                    "events": event_types.clone(), "description": nullable("string"), "enabled": { "type": "boolean", "default": true } } },
                "WebhookPatch": { "type": "object", "additionalProperties": false, "properties": {
                    "url": { "type": "string" }, "events": event_types, "description": nullable("string"), "enabled": { "type": "boolean" } } },
                "Delivery": { "type": "object", "properties": {
                    "id": { "type": "string" }, "event_id": { "type": "string", "description": "the webhook-id header" },
                    "event_type": { "type": "string" }, "endpoint_id": nullable("string"), "kind": { "type": "string", "enum": ["webhook", "email"] },
                    "status": { "type": "string", "enum": ["pending", "delivered", "failed"] }, "attempt_count": { "type": "integer" },
                    "next_attempt_at": time_or_null(), "retry_until": time(), "created_at": time(), "updated_at": time(),
                    "last_attempt": { "type": ["object", "null"] },
                    "attempts": { "type": "array", "items": { "type": "object", "properties": {
                        "at": time(), "duration_ms": { "type": "integer" }, "status_code": nullable("integer"), "error": nullable("string"),
                        "response": { "type": ["string", "null"], "description": "the start of the answer's body" }, "manual": { "type": "boolean" } } } },
                    "payload": { "type": "object", "description": "the event as sent: type, timestamp, data (one delivery only)" } } },
                "Me": { "type": "object", "properties": {
                    "user_id": nullable("string"), "plan": nullable("string"), "admin": { "type": "boolean" },
                    "key": { "type": ["object", "null"], "properties": { "id": { "type": "string" }, "prefix": { "type": "string" }, "scopes": scopes } } } },
            },
        },
    })
}

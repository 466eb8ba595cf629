//! OpenAI's Conversations API (mounted under `/v1` and `/openai/v1` by
//! `openai::routes`): a conversation keeps items, which a response made
//! with `"conversation": id` (or `{"id": id}`) adds its input and output
//! to.
//!
//! * `POST conversations` (`items`, at most 20, and `metadata`) answers
//!   `{"id": "conv_…", "object": "conversation", "created_at", "metadata"}`;
//! * `GET`, `POST` (new `metadata`) and `DELETE conversations/{id}`
//!   (`{"id", "object": "conversation.deleted", "deleted": true}`);
//! * `GET conversations/{id}/items` a page at a time (`order`, `limit`,
//!   `after`, as `input_items`), `POST conversations/{id}/items` (`items`)
//!   the added items as a list, `GET` and `DELETE
//!   conversations/{id}/items/{item_id}` (the item; the conversation).
//!
//! Each item gets an id as `input_items` gives one (`msg_…`, `fc_…`). As
//! stored responses are, a conversation is seen only with the key that
//! created it, and the newest [`KEPT`] are kept. Its items are kept, and
//! may be named in a response's input (`item_reference`), but not read: the
//! reply to a response does not depend on them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::openai;
use crate::responses::{Page, key, list_item, listing};
use crate::{Answer, Exchange, Incoming, Provider, Shared, unix_now};

/// How many conversations the mock keeps (the newest).
const KEPT: usize = 10_000;
/// The most items one request adds.
const MAX_ADDED: usize = 20;

struct Conversation {
    /// The credential that created it, the only one that may see it.
    key: String,
    created_at: u64,
    metadata: Value,
    /// Its items, oldest first.
    items: Vec<Value>,
}

impl Conversation {
    fn object(&self, id: &str) -> Value {
        json!({ "id": id, "object": "conversation", "created_at": self.created_at, "metadata": self.metadata })
    }
}

/// The conversations: the newest [`KEPT`], by id.
#[derive(Default)]
pub(crate) struct Store {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    by_id: HashMap<String, Conversation>,
    /// The ids, oldest first: the next to drop.
    order: VecDeque<String>,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        // A panic while holding this lock leaves plain data behind; keep going.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn keep(&self, id: String, conversation: Conversation) {
        let mut kept = self.lock();
        if kept.order.len() == KEPT
            && let Some(oldest) = kept.order.pop_front()
        {
            kept.by_id.remove(&oldest);
        }
        kept.order.push_back(id.clone());
        kept.by_id.insert(id, conversation);
    }

    /// Runs `f` on the conversation `id` if `key` created it.
    fn with<T>(&self, id: &str, key: &str, f: impl FnOnce(&mut Conversation) -> T) -> Option<T> {
        self.lock().by_id.get_mut(id).filter(|c| c.key == key).map(f)
    }

    /// Whether `key` may add to the conversation `id`.
    pub(crate) fn sees(&self, id: &str, key: &str) -> bool {
        self.with(id, key, |_| ()).is_some()
    }

    /// Whether a conversation `key` created holds the item `item_id`.
    pub(crate) fn has_item(&self, item_id: &str, key: &str) -> bool {
        self.lock().by_id.values().any(|c| c.key == key && c.items.iter().any(|item| item["id"] == *item_id))
    }

    /// Adds `items` (as `input_items` lists them) to the conversation `id`.
    pub(crate) fn add(&self, id: &str, items: impl IntoIterator<Item = Value>) {
        let mut kept = self.lock();
        if let Some(conversation) = kept.by_id.get_mut(id) {
            conversation.items.extend(items);
        }
    }

    fn remove(&self, id: &str, key: &str) -> bool {
        let mut kept = self.lock();
        if kept.by_id.get(id).is_none_or(|c| c.key != key) {
            return false;
        }
        kept.by_id.remove(id);
        kept.order.retain(|kept_id| kept_id != id);
        true
    }
}

/// The conversation a Responses request names, as a string or `{"id"}`.
pub(crate) fn named(request: &Value) -> Option<&str> {
    match request.get("conversation")? {
        Value::String(id) => Some(id),
        other => other.get("id")?.as_str(),
    }
}

/// `items` as a request gives them: each as listed, with an id of its own.
fn items_of(shared: &Shared, body: &Value, required: bool) -> Result<Vec<Value>, String> {
    let items = match body.get("items") {
        None | Some(Value::Null) if !required => return Ok(Vec::new()),
        Some(Value::Array(items)) if !items.is_empty() || !required => items,
        _ => return Err("items: expected a non-empty array of items".into()),
    };
    if items.len() > MAX_ADDED {
        return Err(format!("items: expected at most {MAX_ADDED} items, got {}", items.len()));
    }
    Ok(items.iter().map(|item| list_item(item, &shared.next_id())).collect())
}

fn metadata_of(body: &Value) -> Result<Value, String> {
    match body.get("metadata") {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(metadata @ Value::Object(fields)) if fields.values().all(Value::is_string) => Ok(metadata.clone()),
        Some(_) => Err("metadata: expected an object of strings".into()),
    }
}

pub(crate) fn not_found(exchange: &Exchange, id: &str, param: Option<&str>) -> Response {
    let message = format!("Conversation with id '{id}' not found.");
    exchange.refuse(openai::invalid_request(StatusCode::NOT_FOUND, &message, param))
}

fn bad_request(exchange: &Exchange, message: &str) -> Response {
    exchange.fail(StatusCode::BAD_REQUEST, message)
}

/// `POST conversations`.
pub async fn create(State(shared): State<Arc<Shared>>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::OpenAi, &call)?;
    let body = exchange.json(&call.body)?;
    let items = items_of(&shared, &body, false).map_err(|m| bad_request(&exchange, &m))?;
    let metadata = metadata_of(&body).map_err(|m| bad_request(&exchange, &m))?;
    let id = format!("conv_mock{}", shared.next_id());
    let conversation = Conversation { key: key(&call).to_owned(), created_at: unix_now(), metadata, items };
    let object = conversation.object(&id);
    shared.conversations.keep(id, conversation);
    Ok(exchange.answer(object, None, 0))
}

/// `GET conversations/{id}`.
pub async fn retrieve(State(shared): State<Arc<Shared>>, Path(id): Path<String>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::OpenAi, &call)?;
    let object = shared.conversations.with(&id, key(&call), |c| c.object(&id));
    Ok(exchange.answer(object.ok_or_else(|| not_found(&exchange, &id, None))?, None, 0))
}

/// `POST conversations/{id}`: new metadata.
pub async fn update(State(shared): State<Arc<Shared>>, Path(id): Path<String>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::OpenAi, &call)?;
    let body = exchange.json(&call.body)?;
    let metadata = metadata_of(&body).map_err(|m| bad_request(&exchange, &m))?;
    let object = shared.conversations.with(&id, key(&call), |c| {
        c.metadata = metadata;
        c.object(&id)
    });
    Ok(exchange.answer(object.ok_or_else(|| not_found(&exchange, &id, None))?, None, 0))
}

/// `DELETE conversations/{id}`.
pub async fn delete(State(shared): State<Arc<Shared>>, Path(id): Path<String>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::OpenAi, &call)?;
    if !shared.conversations.remove(&id, key(&call)) {
        return Err(not_found(&exchange, &id, None));
    }
    Ok(exchange.answer(json!({ "id": id, "object": "conversation.deleted", "deleted": true }), None, 0))
}

/// `GET conversations/{id}/items`: a page of its items.
pub async fn list_items(State(shared): State<Arc<Shared>>, Path(id): Path<String>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::OpenAi, &call)?;
    let refuse = |(param, message): (&str, String)| {
        exchange.refuse(openai::invalid_request(StatusCode::BAD_REQUEST, &message, Some(param)))
    };
    let page = Page::read(&call.uri).map_err(refuse)?;
    let items = shared.conversations.with(&id, key(&call), |c| c.items.clone());
    let items = items.ok_or_else(|| not_found(&exchange, &id, None))?;
    let list = listing(items, &page, &format!("conversation '{id}'")).map_err(refuse)?;
    Ok(exchange.answer(list, None, 0))
}

/// `POST conversations/{id}/items`: adds them; the list of those added.
pub async fn add_items(State(shared): State<Arc<Shared>>, Path(id): Path<String>, call: Incoming) -> Answer {
    let exchange = Exchange::open(&shared, Provider::OpenAi, &call)?;
    let body = exchange.json(&call.body)?;
    let items = items_of(&shared, &body, true).map_err(|m| bad_request(&exchange, &m))?;
    let added = shared.conversations.with(&id, key(&call), |c| c.items.extend(items.iter().cloned()));
    added.ok_or_else(|| not_found(&exchange, &id, None))?;
    let list = json!({
        "object": "list",
        "data": items,
        "first_id": items.first().map(|item| &item["id"]),
        "last_id": items.last().map(|item| &item["id"]),
        "has_more": false
    });
    Ok(exchange.answer(list, None, 0))
}

/// `GET conversations/{id}/items/{item_id}`.
pub async fn item(
    State(shared): State<Arc<Shared>>,
    Path((id, item_id)): Path<(String, String)>,
    call: Incoming,
) -> Answer {
    let exchange = Exchange::open(&shared, Provider::OpenAi, &call)?;
    let found = shared.conversations.with(&id, key(&call), |c| c.items.iter().find(|i| i["id"] == *item_id).cloned());
    item_answer(&exchange, &id, &item_id, found)
}

/// `DELETE conversations/{id}/items/{item_id}`: the conversation.
pub async fn delete_item(
    State(shared): State<Arc<Shared>>,
    Path((id, item_id)): Path<(String, String)>,
    call: Incoming,
) -> Answer {
    let exchange = Exchange::open(&shared, Provider::OpenAi, &call)?;
    let removed = shared.conversations.with(&id, key(&call), |c| {
        let before = c.items.len();
        c.items.retain(|i| i["id"] != *item_id);
        (c.items.len() < before).then(|| c.object(&id))
    });
    item_answer(&exchange, &id, &item_id, removed)
}

/// The answer about one item of conversation `id`: `found` is `None` when
/// the caller cannot see the conversation, `Some(None)` when it has no
/// such item.
fn item_answer(exchange: &Exchange, id: &str, item_id: &str, found: Option<Option<Value>>) -> Answer {
    match found {
        None => Err(not_found(exchange, id, None)),
        Some(None) => {
            let message = format!("Item with id '{item_id}' not found.");
            Err(exchange.refuse(openai::invalid_request(StatusCode::NOT_FOUND, &message, None)))
        }
        Some(Some(answer)) => Ok(exchange.answer(answer, None, 0)),
    }
}

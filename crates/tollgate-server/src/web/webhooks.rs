//! `/ui/webhooks`: the operator's webhook endpoints (add one and see its
//! signing secret once, change, disable, delete) and each endpoint's
//! deliveries with every attempt, with redelivery by hand. Every action
//! goes through the same functions as `/admin/v1/webhooks`
//! (`routes::webhooks`), so it is checked and audited the same way.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use tollgate_domain::Timestamp;
use tollgate_domain::hooks::{EndpointId, EventFilter, EventType, Webhook};
use tollgate_store::{AttemptRow, DeliveryRow};

use super::session::{AdminArea, Posted, Session};
use super::view;
use super::{Choice, DoneQuery, Empty, WebError, notice, page};
use crate::routes::webhooks::{self as api, DeliveryQuery, WebhookIn, WebhookPatchIn};
use crate::state::AppState;

type Admin = Session<AdminArea>;
type AdminForm<T> = Posted<AdminArea, T>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/webhooks", get(list_page).post(create))
        .route("/ui/webhooks/{id}", get(endpoint_page).post(update))
        .route("/ui/webhooks/{id}/delete", post(delete))
        .route("/ui/webhooks/{id}/deliveries/{delivery_id}/redeliver", post(redeliver))
}

fn endpoint_path(id: &EndpointId) -> String {
    format!("/ui/webhooks/{id}")
}

/// An event type a form offers, ticked when the endpoint receives it.
struct EventChoice {
    value: &'static str,
    description: &'static str,
    checked: bool,
}

/// Every event type, ticked as `filter` says (nothing ticked for all: the
/// "all events" box says that).
fn event_choices(filter: Option<&EventFilter>) -> Vec<EventChoice> {
    EventType::ALL
        .iter()
        .map(|&e| EventChoice {
            value: e.as_str(),
            description: e.description(),
            checked: matches!(filter, Some(f @ EventFilter::Only(_)) if f.wants(e)),
        })
        .collect()
}

struct EndpointRow {
    id: String,
    path: String,
    url: String,
    description: String,
    /// "all events", or the types it receives.
    events: Vec<&'static str>,
    all_events: bool,
    enabled: bool,
    created: String,
}

impl EndpointRow {
    fn of(w: &Webhook) -> Self {
        EndpointRow {
            id: w.id.to_string(),
            path: endpoint_path(&w.id),
            url: w.url.clone(),
            description: w.description.clone().unwrap_or_default(),
            events: w.events.names(),
            all_events: w.events == EventFilter::All,
            enabled: w.enabled,
            created: view::date_time(w.created_at),
        }
    }
}

/// A new endpoint's signing secret, shown this once.
struct NewSecret {
    url: String,
    secret: String,
}

#[derive(Template)]
#[template(path = "admin_webhooks.html")]
struct ListPage {
    csrf: String,
    notice: Option<&'static str>,
    endpoints: Vec<EndpointRow>,
    event_choices: Vec<EventChoice>,
    new_secret: Option<NewSecret>,
}

async fn render_list(
    state: &AppState,
    session: &Admin,
    notice: Option<&'static str>,
    new_secret: Option<NewSecret>,
) -> Result<Response, WebError> {
    page(&ListPage {
        csrf: session.csrf(&state.web_key),
        notice,
        endpoints: state.store.webhooks().await?.iter().map(EndpointRow::of).collect(),
        event_choices: event_choices(None),
        new_secret,
    })
}

async fn list_page(
    State(state): State<AppState>,
    session: Admin,
    Query(q): Query<DoneQuery>,
) -> Result<Response, WebError> {
    render_list(&state, &session, notice(q.done.as_deref()), None).await
}

#[derive(Deserialize)]
struct EndpointForm {
    #[serde(default)]
    url: String,
    #[serde(default)]
    description: String,
    /// The checkbox of the edit form; absent when unticked.
    #[serde(default)]
    enabled: Option<String>,
}

impl EndpointForm {
    fn description(&self) -> Option<String> {
        Some(self.description.trim().to_owned()).filter(|d| !d.is_empty())
    }
}

async fn create(State(state): State<AppState>, posted: AdminForm<EndpointForm>) -> Result<Response, WebError> {
    let input = WebhookIn {
        url: posted.form.url.clone(),
        events: Some(posted.all("events")),
        description: posted.form.description(),
        enabled: None,
    };
    let (webhook, secret) = api::create_webhook(&state, &posted.origin(), input).await?;
    let new_secret = NewSecret { url: webhook.url, secret: secret.expose().to_owned() };
    render_list(&state, &posted.session, None, Some(new_secret)).await
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: AdminForm<EndpointForm>,
) -> Result<Response, WebError> {
    let id = api::parse_id(&id)?;
    let input = WebhookPatchIn {
        url: Some(posted.form.url.clone()),
        events: Some(posted.all("events")),
        description: Some(posted.form.description()),
        enabled: Some(posted.form.enabled.is_some()),
    };
    api::update_webhook(&state, &posted.origin(), &id, input).await?;
    Ok(super::admin::done(&endpoint_path(&id), "webhook-saved"))
}

async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    posted: AdminForm<Empty>,
) -> Result<Response, WebError> {
    api::delete_webhook(&state, &posted.origin(), &api::parse_id(&id)?).await?;
    Ok(super::admin::done("/ui/webhooks", "webhook-deleted"))
}

async fn redeliver(
    State(state): State<AppState>,
    Path((id, delivery_id)): Path<(String, String)>,
    posted: AdminForm<Empty>,
) -> Result<Response, WebError> {
    let id = api::parse_id(&id)?;
    api::redeliver_delivery(&state, &posted.origin(), &id, &delivery_id).await?;
    Ok(super::admin::done(&endpoint_path(&id), "redelivered"))
}

struct AttemptView {
    at: String,
    /// "HTTP 500", or what went wrong before an answer.
    outcome: String,
    ok: bool,
    duration: String,
    manual: bool,
    response: String,
}

impl AttemptView {
    fn of(a: &AttemptRow) -> Self {
        let outcome = match (a.status_code, &a.error) {
            (Some(code), _) => format!("HTTP {code}"),
            (None, Some(error)) => error.clone(),
            (None, None) => "no answer".into(),
        };
        AttemptView {
            at: view::date_time_seconds(Timestamp::from_millis(a.at)),
            ok: a.status_code.is_some_and(|c| (200..300).contains(&c)),
            outcome,
            duration: format!("{} ms", view::number(a.duration_ms)),
            manual: a.manual,
            response: a.response.clone().unwrap_or_default(),
        }
    }
}

struct DeliveryView {
    id: String,
    event_id: String,
    event_type: String,
    status: String,
    created: String,
    /// When it is tried next, for a pending one.
    next: Option<String>,
    attempts: Vec<AttemptView>,
    redeliver_action: String,
}

impl DeliveryView {
    fn of(d: &DeliveryRow, attempts: &[AttemptRow], endpoint: &str) -> Self {
        DeliveryView {
            id: d.id.clone(),
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
            status: d.status.clone(),
            created: view::date_time_seconds(Timestamp::from_millis(d.created_at)),
            next: (d.status == "pending").then(|| view::date_time_seconds(Timestamp::from_millis(d.next_attempt_at))),
            attempts: attempts.iter().filter(|a| a.delivery_id == d.id).map(AttemptView::of).collect(),
            redeliver_action: format!("{endpoint}/deliveries/{}/redeliver", d.id),
        }
    }
}

#[derive(Template)]
#[template(path = "admin_webhook.html")]
struct EndpointPage {
    csrf: String,
    notice: Option<&'static str>,
    endpoint: EndpointRow,
    event_choices: Vec<EventChoice>,
    statuses: Vec<Choice>,
    first_page: bool,
    deliveries: Vec<DeliveryView>,
    newest_href: String,
    older_href: Option<String>,
}

#[derive(Deserialize, Default)]
struct PageQuery {
    done: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
}

async fn endpoint_page(
    State(state): State<AppState>,
    session: Admin,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, WebError> {
    let id = api::parse_id(&id)?;
    let webhook = state.store.webhook(&id).await?.webhook;
    let status = q.status.filter(|s| !s.is_empty());
    let query = DeliveryQuery { status: status.clone(), limit: Some(25), cursor: q.cursor.clone() };
    let found = api::list_deliveries(&state, &id, &query).await?;
    let path = endpoint_path(&id);
    let with_status = |mut pairs: Vec<(&str, String)>| {
        if let Some(s) = &status {
            pairs.push(("status", s.clone()));
        }
        let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        if query.is_empty() { format!("{path}#deliveries") } else { format!("{path}?{query}#deliveries") }
    };
    page(&EndpointPage {
        csrf: session.csrf(&state.web_key),
        notice: notice(q.done.as_deref()),
        event_choices: event_choices(Some(&webhook.events)),
        endpoint: EndpointRow::of(&webhook),
        statuses: ["pending", "delivered", "failed"]
            .into_iter()
            .map(|s| Choice { value: s.into(), label: s.into(), selected: status.as_deref() == Some(s) })
            .collect(),
        first_page: q.cursor.is_none(),
        deliveries: found.rows.iter().map(|d| DeliveryView::of(d, &found.attempts, &path)).collect(),
        newest_href: with_status(Vec::new()),
        older_href: found.next_cursor.map(|c| with_status(vec![("cursor", c)])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKUP: &str = "<script>alert(1)</script>";

    fn endpoint(description: &str) -> EndpointRow {
        let webhook = Webhook {
            id: EndpointId::generate(),
            url: format!("https://example.com/in?x={MARKUP}"),
            events: EventFilter::All,
            description: Some(description.into()),
            enabled: true,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
        };
        EndpointRow::of(&webhook)
    }

    #[test]
    fn endpoints_and_attempts_with_markup_render_inert() {
        let list = ListPage {
            csrf: "t".into(),
            notice: None,
            endpoints: vec![endpoint(MARKUP)],
            event_choices: event_choices(None),
            new_secret: None,
        }
        .render()
        .unwrap();
        assert!(!list.contains(MARKUP), "{list}");
        assert!(list.contains("&#60;script&#62;") || list.contains("&lt;script&gt;"), "{list}");

        let attempt = AttemptRow {
            delivery_id: "dlv_1".into(),
            at: 0,
            duration_ms: 3,
            status_code: Some(500),
            error: None,
            response: Some(MARKUP.into()),
            manual: false,
        };
        let row = DeliveryRow {
            id: "dlv_1".into(),
            event_id: "evt_1".into(),
            event_type: MARKUP.into(),
            endpoint_id: None,
            kind: "webhook".into(),
            status: "failed".into(),
            attempts: 1,
            next_attempt_at: 0,
            retry_until: 0,
            created_at: 0,
            updated_at: 0,
        };
        let one = EndpointPage {
            csrf: "t".into(),
            notice: None,
            endpoint: endpoint(MARKUP),
            event_choices: event_choices(Some(&EventFilter::All)),
            statuses: Vec::new(),
            first_page: true,
            deliveries: vec![DeliveryView::of(&row, &[attempt], "/ui/webhooks/whk_x")],
            newest_href: "/ui/webhooks/whk_x".into(),
            older_href: None,
        }
        .render()
        .unwrap();
        assert!(!one.contains(MARKUP), "{one}");
        assert!(one.contains("HTTP 500"), "{one}");
    }

    #[test]
    fn the_edit_form_ticks_the_types_an_endpoint_receives() {
        let only = EventFilter::new(&["key.created".into(), "usage.reset".into()]).unwrap();
        let ticked: Vec<&str> = event_choices(Some(&only)).iter().filter(|c| c.checked).map(|c| c.value).collect();
        assert_eq!(ticked, ["key.created", "usage.reset"]);
        assert!(event_choices(Some(&EventFilter::All)).iter().all(|c| !c.checked));
        assert_eq!(event_choices(None).len(), EventType::ALL.len());
    }
}

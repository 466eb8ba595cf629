//! `/portal`: one user's page, the way an app embeds a billing portal. The
//! app's backend asks for a one-time link (`POST
//! /admin/v1/users/{id}/portal-sessions`); opening it sets the portal
//! session cookie. A user can also sign in with one of their own gateway
//! keys (one that may read usage); that session lasts only as long as the
//! key does and may do only what the key may.
//!
//! A link is `<id>.<expiry ms>.<base64url user id>.<HMAC>`: signed with the
//! key derived from the master key, short-lived, and single use (its id is
//! recorded in the store, so a second use fails on every instance).
//!
//! The page also manages the user's own provider keys ("bring your own
//! key") through the functions the JSON routes use
//! (`routes::credentials`), so the audit log records the portal's actions
//! too. A secret typed into the form is sealed by the vault and never
//! rendered back, not even in a refused form.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::Deserialize;
use serde_json::json;
use tollgate_domain::model::{Credential, KeyKind, UserStatus, ValidationOutcome};
use tollgate_domain::{KnownProvider, ProviderName, Scope, Scopes, SecretString, Timestamp, UserId, base62};
use tollgate_store::SessionOwner;

use super::admin::{KeyForm, login_response, signin};
use super::session::{PortalArea, Posted, Session, is_https};
use super::view::{self, CredentialView, KeyView, PlanView};
use super::{
    Choice, Empty, NewKey, ScopeChoice, UsageSection, WebError, field_message, notice, page, parse_scopes,
    scope_choices,
};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::OptionalBody;
use crate::routes::admin::parse_user_id;
use crate::routes::credentials;
use crate::routes::keys::{self, KeyInput};
use crate::state::AppState;

type Portal = Session<PortalArea>;
type PortalForm<T> = Posted<PortalArea, T>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/portal/login", get(login_page).post(login))
        .route("/portal/session/{token}", get(open_link))
        .route("/portal/logout", post(logout))
        .route("/portal", get(home))
        .route("/portal/keys", post(create_key))
        .route("/portal/keys/{key_id}/revoke", post(revoke_key))
        .route("/portal/provider-keys", post(set_provider_key))
        .route("/portal/provider-keys/{provider}/remove", post(remove_provider_key))
        .route("/portal/plans", get(plans_page))
}

/// Everything a user's key may hold: what a session opened by a one-time
/// link may do.
fn all_user_scopes() -> Scopes {
    Scopes::new(Scope::ALL.into_iter().filter(|s| s.allowed_for_user_key()))
}

// ---- one-time links ----

pub(crate) struct PortalLink {
    pub url: String,
    pub path: String,
    pub expires_at: Timestamp,
}

/// The base URL browsers reach this service at: the configured public URL,
/// else the request's own host.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.web.public_url {
        return url.clone();
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1");
    let scheme = if is_https(state, headers) { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// A signed one-time link that opens the portal as `user`, valid for `ttl`
/// seconds (default: the configured link lifetime).
pub(crate) async fn new_link(
    state: &AppState,
    headers: &HeaderMap,
    user: &UserId,
    ttl: Option<u64>,
) -> ApiResult<PortalLink> {
    state.store.user(user).await?;
    let ttl = ttl.unwrap_or(state.config.web.portal_link_ttl.as_secs());
    let expires_at = Timestamp::now().plus_seconds(ttl as i64);
    let payload = format!("{}.{}.{}", base62::random(22), expires_at.millis(), B64URL.encode(user.as_str()));
    let signature = state.web_key.sign("portal-link", &[payload.as_bytes()]);
    let path = format!("/portal/session/{payload}.{signature}");
    Ok(PortalLink { url: format!("{}{path}", base_url(state, headers)), path, expires_at })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalSessionInput {
    /// How long the link can be opened (default: the configured lifetime).
    ttl_seconds: Option<u64>,
}

/// Longest lifetime a caller may ask of a one-time link.
const MAX_LINK_TTL_SECONDS: u64 = 24 * 3600;

/// `POST /admin/v1/users/{id}/portal-sessions`: a one-time URL that opens
/// the portal as this user.
pub async fn create_portal_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    OptionalBody(input): OptionalBody<PortalSessionInput>,
) -> ApiResult<impl IntoResponse> {
    if input.ttl_seconds.is_some_and(|t| !(1..=MAX_LINK_TTL_SECONDS).contains(&t)) {
        return Err(ApiError::invalid("ttl_seconds", format!("ttl_seconds: 1 to {MAX_LINK_TTL_SECONDS}")));
    }
    let user = parse_user_id(&id)?;
    let link = new_link(&state, &headers, &user, input.ttl_seconds).await?;
    let body = json!({ "url": link.url, "path": link.path, "expires_at": link.expires_at, "user_id": user });
    Ok((StatusCode::CREATED, Json(body)))
}

/// Why a link does not open.
fn link_refused(message: &str) -> WebError {
    WebError::Api(ApiError::Forbidden(message.into()))
}

/// The user a link opens the portal for, once: checks the signature and
/// the expiry, then records the link as used.
async fn redeem(state: &AppState, token: &str) -> Result<UserId, WebError> {
    let invalid = || link_refused("This portal link is not valid. Ask the app for a new one.");
    let (payload, signature) = token.rsplit_once('.').ok_or_else(invalid)?;
    if !state.web_key.verify("portal-link", &[payload.as_bytes()], signature) {
        return Err(invalid());
    }
    let mut parts = payload.splitn(3, '.');
    let (Some(id), Some(expires), Some(user)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let expires_at = Timestamp::from_millis(expires.parse().map_err(|_| invalid())?);
    let user = String::from_utf8(B64URL.decode(user).map_err(|_| invalid())?).map_err(|_| invalid())?;
    let user = UserId::parse(&user).map_err(|_| invalid())?;
    let now = Timestamp::now();
    if expires_at <= now {
        return Err(link_refused("This portal link has expired. Ask the app for a new one."));
    }
    if !state.store.use_portal_link(id, now, expires_at).await? {
        return Err(link_refused("This portal link has been used already. Ask the app for a new one."));
    }
    Ok(user)
}

async fn open_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, WebError> {
    let user = redeem(&state, &token).await?;
    let owner = SessionOwner::User { id: user, key: None };
    let cookie = Portal::start(&state, &headers, owner, all_user_scopes()).await?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/portal")).into_response())
}

// ---- sign-in with a key ----

async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, WebError> {
    super::admin::login_response(&state, &headers, true, StatusCode::OK, None)
}

async fn login(State(state): State<AppState>, parts: Parts, body: Bytes) -> Result<Response, WebError> {
    let refuse =
        |message: &str| login_response(&state, &parts.headers, true, StatusCode::FORBIDDEN, Some(message.into()));
    let authed = match signin(&state, &parts, &body, true).await? {
        Err(refusal) => return Ok(refusal),
        Ok(Principal::Key(authed)) if authed.user.is_some() && authed.key.kind == KeyKind::User => authed,
        Ok(_) => return refuse("Sign in with one of your own gateway keys (tg_…)."),
    };
    if !authed.key.scopes.contains(Scope::UsageRead) {
        return refuse(
            "This key may not read usage (it lacks usage:read). Use another key, or open the portal from the app.",
        );
    }
    let Some(user) = &authed.user else { return refuse("Sign in with one of your own gateway keys (tg_…).") };
    let owner = SessionOwner::User { id: user.id.clone(), key: Some(authed.key.id.clone()) };
    let cookie = Portal::start(&state, &parts.headers, owner, authed.key.scopes.clone()).await?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/portal")).into_response())
}

async fn logout(State(state): State<AppState>, posted: PortalForm<Empty>) -> Result<Response, WebError> {
    let cookie = posted.session.end(&state).await?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/portal/login")).into_response())
}

// ---- the page ----

#[derive(Template)]
#[template(path = "portal.html")]
struct PortalPage {
    csrf: String,
    notice: Option<&'static str>,
    user_id: String,
    suspended: bool,
    usage: UsageSection,
    keys: Vec<KeyView>,
    new_key: Option<NewKey>,
    scope_choices: Vec<ScopeChoice>,
    keys_action: String,
    can_manage_keys: bool,
    credentials: Vec<CredentialView>,
    credential_form: CredentialFormView,
    credentials_action: String,
    can_manage_credentials: bool,
    byok_counts: bool,
    byok_required: bool,
    portal: bool,
}

/// The form that adds or replaces an own provider key. It never holds the
/// secret: a refused form comes back with its provider, label and error,
/// and an empty secret field.
struct CredentialFormView {
    providers: Vec<Choice>,
    /// The provider whose key the form replaces, as people write it.
    replacing: Option<String>,
    label: String,
    validate: bool,
    /// The field a refusal names (`provider`, `secret`, `label`,
    /// `validate`, or `form` for the form as a whole); empty if none.
    error_field: String,
    error: String,
    secret_hint: String,
}

/// What the form is filled with: the provider to replace (`?provider=`),
/// or what a refused form asked for.
#[derive(Default)]
struct Asked<'a> {
    provider: Option<&'a str>,
    label: Option<String>,
    validate: bool,
    /// The refusal, as (field, message).
    refusal: Option<(String, String)>,
}

/// What the secret field says about formats, from the known providers.
fn secret_hint() -> String {
    let formats: Vec<String> = KnownProvider::ALL
        .into_iter()
        .map(|p| format!("{} {}", p.display_name(), p.secret_prefixes().join(" or ")))
        .collect();
    format!("Paste it as the provider gave it. Keys start with: {}.", formats.join(", "))
}

/// The form, offering the configured providers (the built-in ones first)
/// and any other the user has a key for.
fn credential_form(config: &crate::config::Config, held: &[Credential], asked: Asked<'_>) -> CredentialFormView {
    let rank = |name: &ProviderName| {
        name.known().and_then(|k| KnownProvider::ALL.iter().position(|p| *p == k)).unwrap_or(usize::MAX)
    };
    let mut names: Vec<ProviderName> =
        config.providers.values().map(|p| p.name.clone()).chain(held.iter().map(|c| c.provider.clone())).collect();
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    names.dedup();
    let providers: Vec<Choice> = names
        .into_iter()
        .map(|name| Choice {
            selected: asked.provider == Some(name.as_str()),
            label: view::provider_name(&name),
            value: name.to_string(),
        })
        .collect();
    let replacing = held.iter().find(|c| asked.provider == Some(c.provider.as_str()));
    let label = match (asked.label, replacing) {
        (Some(label), _) => label,
        (None, Some(c)) => c.label.clone().unwrap_or_default(),
        (None, None) => String::new(),
    };
    let (error_field, error) = match asked.refusal {
        Some((field, message)) => {
            let shown = if ["provider", "secret", "label", "validate"].contains(&field.as_str()) {
                field
            } else {
                "form".to_owned()
            };
            let text = field_message(&shown, &message);
            (shown, text)
        }
        None => (String::new(), String::new()),
    };
    CredentialFormView {
        providers,
        replacing: replacing.map(|c| view::provider_name(&c.provider)),
        label,
        validate: asked.validate,
        error_field,
        error,
        secret_hint: secret_hint(),
    }
}

fn session_user(session: &Portal) -> Result<UserId, WebError> {
    session.user().cloned().ok_or_else(|| ApiError::Forbidden("not a user's session".into()).into())
}

/// What a portal page shows once, beside the usual.
#[derive(Default)]
struct Extras<'a> {
    new_key: Option<NewKey>,
    asked: Asked<'a>,
}

async fn render_home(
    state: &AppState,
    session: &Portal,
    notice: Option<&'static str>,
    extras: Extras<'_>,
) -> Result<Response, WebError> {
    let user = session_user(session)?;
    let account = state.metering.account(&user).await?;
    let can_manage_keys = session.record.scopes.contains(Scope::KeysManage);
    let keys = if can_manage_keys || extras.new_key.is_some() {
        view::keys(state, &state.store.keys_of_user(&user).await?)
    } else {
        Vec::new()
    };
    let can_manage_credentials = session.record.scopes.contains(Scope::CredentialsManage);
    let held = if can_manage_credentials { state.vault.list(&user).await? } else { Vec::new() };
    page(&PortalPage {
        csrf: session.csrf(&state.web_key),
        notice,
        user_id: user.to_string(),
        suspended: account.user.status == UserStatus::Suspended,
        usage: super::usage_section(state, &account).await?,
        keys,
        new_key: extras.new_key,
        scope_choices: scope_choices(|s| session.record.scopes.contains(s)),
        keys_action: "/portal/keys".into(),
        can_manage_keys,
        credential_form: credential_form(&state.config, &held, extras.asked),
        credentials: view::credentials(&held),
        credentials_action: "/portal/provider-keys".into(),
        can_manage_credentials,
        byok_counts: account.plan.byok_counts,
        byok_required: account.plan.byok_required,
        portal: true,
    })
}

#[derive(Deserialize)]
struct HomeQuery {
    done: Option<String>,
    /// Fills the provider key form to replace this provider's key.
    provider: Option<String>,
}

async fn home(
    State(state): State<AppState>,
    session: Portal,
    Query(q): Query<HomeQuery>,
) -> Result<Response, WebError> {
    let extras = Extras { asked: Asked { provider: q.provider.as_deref(), ..Asked::default() }, ..Extras::default() };
    render_home(&state, &session, notice(q.done.as_deref()), extras).await
}

async fn create_key(State(state): State<AppState>, posted: PortalForm<KeyForm>) -> Result<Response, WebError> {
    let session = &posted.session;
    let user = session_user(session)?;
    if !session.record.scopes.contains(Scope::KeysManage) {
        return Err(ApiError::Forbidden(
            "this session may not manage keys (the key it began with lacks keys:manage)".into(),
        )
        .into());
    }
    let allowed = |s: Scope| s.allowed_for_user_key() && session.record.scopes.contains(s);
    let scopes = parse_scopes(&posted.all("scopes"))?;
    let input = KeyInput { name: Some(posted.form.name.clone()), scopes, expires_at: None };
    let default = Scopes::new(Scopes::default_for_user_key().iter().filter(|s| allowed(*s)));
    let (new, secret) = keys::prepare(KeyKind::User, Some(user), input, Some(default), allowed)?;
    let record = keys::insert(&state, &posted.origin(), &new).await?;
    let new_key = NewKey { name: record.name, secret: secret.expose().to_owned() };
    render_home(&state, session, None, Extras { new_key: Some(new_key), ..Extras::default() }).await
}

async fn revoke_key(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
    posted: PortalForm<Empty>,
) -> Result<Response, WebError> {
    let session = &posted.session;
    let user = session_user(session)?;
    if !session.record.scopes.contains(Scope::KeysManage) {
        return Err(ApiError::Forbidden("this session may not manage keys".into()).into());
    }
    let key_id = keys::parse_key_id(&key_id)?;
    let record = state.store.key(&key_id).await?;
    // Another user's key is, to this user, a key that does not exist.
    if record.user_id.as_ref() != Some(&user) {
        return Err(ApiError::NotFound(format!("no key {:?}", key_id.as_str())).into());
    }
    keys::revoke(&state, &posted.origin(), &key_id).await?;
    Ok(Redirect::to("/portal?done=revoked#keys").into_response())
}

// ---- own provider keys ----

#[derive(Deserialize)]
struct ProviderKeyForm {
    #[serde(default)]
    provider: String,
    /// Read straight into a type that never prints and is zeroized.
    #[serde(default)]
    secret: Option<SecretString>,
    #[serde(default)]
    label: String,
    validate: Option<String>,
}

/// The session's user, if the session may change provider keys: a
/// one-time link's session may; a key's, if the key has
/// `credentials:manage`.
fn credentials_user(session: &Portal) -> Result<UserId, WebError> {
    let user = session_user(session)?;
    if !session.record.scopes.contains(Scope::CredentialsManage) {
        return Err(ApiError::Forbidden(
            "this session may not manage provider keys (the key it began with lacks credentials:manage)".into(),
        )
        .into());
    }
    Ok(user)
}

async fn set_provider_key(
    State(state): State<AppState>,
    posted: PortalForm<ProviderKeyForm>,
) -> Result<Response, WebError> {
    let session = &posted.session;
    let user = credentials_user(session)?;
    let form = &posted.form;
    let empty = SecretString::new("");
    let secret = form.secret.as_ref().unwrap_or(&empty);
    let label = Some(form.label.trim().to_owned()).filter(|l| !l.is_empty());
    let validate = form.validate.is_some();
    let provider = form.provider.trim();
    match credentials::set_credential(&state, &posted.origin(), &user, provider, secret, label, validate).await {
        Ok(credential) => {
            let done = match credential.validation.map(|v| v.outcome) {
                None => "provider-key-saved",
                Some(ValidationOutcome::Valid) => "provider-key-accepted",
                Some(ValidationOutcome::Invalid) => "provider-key-refused",
                Some(ValidationOutcome::Unreachable) => "provider-key-unchecked",
            };
            Ok(Redirect::to(&format!("/portal?done={done}#provider-keys")).into_response())
        }
        // Refused input: the page again, the error beside its field, the
        // secret field empty.
        Err(ApiError::InvalidRequest { message, field }) => {
            let label = Some(form.label.clone()).filter(|l| !l.is_empty());
            let field = field.unwrap_or_else(|| "form".into());
            let refusal = Some((field, message));
            let asked = Asked { provider: Some(provider), label, validate, refusal };
            let extras = Extras { asked, ..Extras::default() };
            let mut response = render_home(&state, session, None, extras).await?;
            *response.status_mut() = StatusCode::BAD_REQUEST;
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

async fn remove_provider_key(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    posted: PortalForm<Empty>,
) -> Result<Response, WebError> {
    let user = credentials_user(&posted.session)?;
    credentials::remove_credential(&state, &posted.origin(), &user, &provider).await?;
    Ok(Redirect::to("/portal?done=provider-key-removed#provider-keys").into_response())
}

// ---- plans ----

struct PortalPlan {
    plan: PlanView,
    current: bool,
    upgrade: Option<String>,
}

#[derive(Template)]
#[template(path = "portal_plans.html")]
struct PlansPage {
    csrf: String,
    user_id: String,
    plans: Vec<PortalPlan>,
    upgrade_configured: bool,
}

/// `base` with `pairs` added to its query.
fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    let join = if base.contains('?') { '&' } else { '?' };
    format!("{base}{join}{}", query.finish())
}

/// Where the upgrade button for `plan` goes: the plan's payment link with
/// the user as Stripe's `client_reference_id`, else the app's upgrade page
/// with the plan and the user in its query.
fn upgrade_link(plan: &tollgate_domain::model::Plan, upgrade_url: Option<&str>, user: &UserId) -> Option<String> {
    match (&plan.payment_link, upgrade_url) {
        (Some(link), _) => Some(with_query(link, &[("client_reference_id", user.as_str())])),
        (None, Some(base)) => Some(with_query(base, &[("plan", plan.slug.as_str()), ("user_id", user.as_str())])),
        (None, None) => None,
    }
}

async fn plans_page(State(state): State<AppState>, session: Portal) -> Result<Response, WebError> {
    let user = session_user(&session)?;
    let account = state.metering.account(&user).await?;
    let upgrade = state.config.web.upgrade_url.as_deref();
    let mut plans = state.store.plans().await?;
    plans.sort_by(|a, b| a.price_cents.cmp(&b.price_cents).then_with(|| a.slug.cmp(&b.slug)));
    let plans: Vec<PortalPlan> = plans
        .iter()
        .map(|p| {
            let current = p.slug == account.plan.slug;
            PortalPlan { plan: view::plan(p), current, upgrade: upgrade_link(p, upgrade, &user).filter(|_| !current) }
        })
        .collect();
    let upgrade_configured = plans.iter().any(|p| p.upgrade.is_some());
    page(&PlansPage { csrf: session.csrf(&state.web_key), user_id: user.to_string(), plans, upgrade_configured })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_markup_render_inert_in_the_portal() {
        let markup = "<script>alert(1)</script>";
        let usage = UsageSection {
            plan_name: markup.into(),
            plan_slug: "free".into(),
            period: "1 Nov 2026 – 1 Dec 2026".into(),
            meters: Vec::new(),
            others: Vec::new(),
            chart: String::new(),
            chart_summary: markup.into(),
            days: vec![(markup.into(), "1".into())],
            by_model: vec![view::GroupView {
                name: markup.into(),
                requests: "1".into(),
                tokens: "1".into(),
                cost: "$0.00".into(),
            }],
            by_feature: Vec::new(),
        };
        let key = KeyView {
            id: "key_1".into(),
            name: markup.into(),
            shown: "tg_AbCd…wxyz".into(),
            scopes: "proxy".into(),
            created: "1 Nov 2026".into(),
            last_used: "never".into(),
            status: "active",
            active: true,
        };
        let page = PortalPage {
            csrf: "t".into(),
            notice: None,
            user_id: format!("u_{markup}"),
            suspended: false,
            usage,
            keys: vec![key],
            new_key: Some(NewKey { name: markup.into(), secret: "tg_secret".into() }),
            scope_choices: scope_choices(|_| true),
            keys_action: "/portal/keys".into(),
            can_manage_keys: true,
            credentials: Vec::new(),
            credential_form: form_with(Vec::new(), Asked::default()),
            credentials_action: "/portal/provider-keys".into(),
            can_manage_credentials: true,
            byok_counts: false,
            byok_required: false,
            portal: true,
        };
        let html = page.render().unwrap();
        assert!(!html.contains(markup), "{html}");
        assert!(html.contains("u_&#60;script&#62;"), "{html}");
        assert!(html.matches("&#60;script&#62;alert(1)").count() >= 7, "{html}");
    }

    /// The form as `credential_form` makes it, without a running server.
    fn form_with(held: Vec<Credential>, asked: Asked<'_>) -> CredentialFormView {
        let env = [("TOLLGATE_LOCAL_BASE_URL".to_owned(), "http://127.0.0.1:9/v1".to_owned())];
        let config = crate::config::Config::from_sources(None, &env).unwrap();
        credential_form(&config, &held, asked)
    }

    fn markup_credential(markup: &str) -> Credential {
        let at = Timestamp::from_millis(1_790_000_000_000);
        Credential {
            user_id: UserId::parse("u_1").unwrap(),
            provider: ProviderName::parse("openai").unwrap(),
            label: Some(markup.into()),
            last4: "x9Qz".into(),
            created_at: at,
            updated_at: at,
            last_used_at: None,
            validation: Some(tollgate_domain::model::Validation {
                outcome: ValidationOutcome::Invalid,
                checked_at: at,
                message: markup.into(),
            }),
        }
    }

    #[test]
    fn a_provider_key_label_with_markup_renders_inert_in_the_portal_and_a_refused_form_keeps_no_secret() {
        let markup = "<script>alert(1)</script>";
        let held = vec![markup_credential(markup)];
        let refusal = Some(("secret".to_owned(), format!("secret: {markup}")));
        let asked = Asked { provider: Some("openai"), label: Some(markup.into()), validate: true, refusal };
        let form = form_with(held.clone(), asked);
        let usage = UsageSection {
            plan_name: "Free".into(),
            plan_slug: "free".into(),
            period: "1 Nov 2026 – 1 Dec 2026".into(),
            meters: Vec::new(),
            others: Vec::new(),
            chart: String::new(),
            chart_summary: String::new(),
            days: Vec::new(),
            by_model: Vec::new(),
            by_feature: Vec::new(),
        };
        let page = PortalPage {
            csrf: "t".into(),
            notice: None,
            user_id: "u_1".into(),
            suspended: false,
            usage,
            keys: Vec::new(),
            new_key: None,
            scope_choices: Vec::new(),
            keys_action: "/portal/keys".into(),
            can_manage_keys: false,
            credentials: view::credentials(&held),
            credential_form: form,
            credentials_action: "/portal/provider-keys".into(),
            can_manage_credentials: true,
            byok_counts: false,
            byok_required: false,
            portal: true,
        };
        let html = page.render().unwrap();
        assert!(!html.contains(markup), "{html}");
        // The label in the table and in the form, the check's message, the
        // error beside the secret field.
        assert_eq!(html.matches("&#60;script&#62;alert(1)").count(), 4, "{html}");
        assert!(html.contains("using your own key") && html.contains("…x9Qz"), "{html}");
        assert!(html.contains("Replace your OpenAI key"), "{html}");
        // Built-in providers first, in their usual order, then configured ones.
        let options: Vec<&str> = html.split("<option value=\"").skip(1).map(|o| &o[..o.find('"').unwrap()]).collect();
        assert_eq!(options, ["openai", "anthropic", "gemini", "groq", "github", "local"]);
        assert!(html.contains("<option value=\"openai\" selected>OpenAI</option>"), "{html}");
        assert!(
            html.contains("aria-describedby=\"cred-secret-hint cred-secret-error\" aria-invalid=\"true\""),
            "{html}"
        );
        let secret_input = &html[html.find("id=\"cred-secret\"").unwrap()..];
        let secret_input = &secret_input[..secret_input.find('>').unwrap()];
        assert!(!secret_input.contains("value="), "the secret field comes back empty: {secret_input}");
    }

    #[test]
    fn upgrade_links_carry_the_plan_and_the_user() {
        let user = UserId::parse("u 1&x").unwrap();
        let slug = tollgate_domain::PlanSlug::parse("pro").unwrap();
        let mut plan = tollgate_domain::model::Plan::blank(slug, Timestamp::now());
        let app = Some("https://app.example/billing");
        assert_eq!(upgrade_link(&plan, app, &user).unwrap(), "https://app.example/billing?plan=pro&user_id=u+1%26x");
        assert_eq!(upgrade_link(&plan, None, &user), None);
        plan.payment_link = Some("https://buy.stripe.com/x?a=1".into());
        let link = upgrade_link(&plan, app, &user).unwrap();
        assert_eq!(link, "https://buy.stripe.com/x?a=1&client_reference_id=u+1%26x");
    }
}

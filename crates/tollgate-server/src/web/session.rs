//! Web sessions: cookies, the signing key, CSRF tokens, and the extractors
//! that give a handler its signed-in session (or send the browser to the
//! sign-in page).
//!
//! A session id is 32 random base62 characters, kept only in an HttpOnly
//! cookie; the store holds its SHA-256. The CSRF token of a session is an
//! HMAC of its id, so nothing more is stored and every instance agrees.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tollgate_domain::{KeyHash, Scopes, Timestamp, UserId, base62};
use tollgate_store::{SessionOwner, WebSession};

use super::WebError;
use crate::audit::Origin;
use crate::error::without_values;
use crate::state::AppState;
use tollgate_domain::audit::Actor;

/// The key that signs portal links and CSRF tokens, derived from the
/// master key (`Keyring::derive`). It never prints.
pub struct SigningKey([u8; 32]);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length: this cannot fail.
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length")
}

impl SigningKey {
    pub fn derive(keyring: &tollgate_vault::Keyring) -> SigningKey {
        SigningKey(*keyring.derive("tollgate web signing key v1"))
    }

    /// The HMAC of `parts` under `purpose`, each length-prefixed so that no
    /// two different inputs sign alike.
    fn mac(&self, purpose: &str, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = hmac(&self.0);
        for part in std::iter::once(purpose.as_bytes()).chain(parts.iter().copied()) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// A signature as base64url text.
    pub fn sign(&self, purpose: &str, parts: &[&[u8]]) -> String {
        B64URL.encode(self.mac(purpose, parts).finalize().into_bytes())
    }

    /// Whether `signature` (base64url) signs `parts`; compared in constant time.
    pub fn verify(&self, purpose: &str, parts: &[&[u8]], signature: &str) -> bool {
        match B64URL.decode(signature) {
            Ok(tag) => self.mac(purpose, parts).verify_slice(&tag).is_ok(),
            Err(_) => false,
        }
    }
}

/// The part of the site a session belongs to.
pub trait Area: Send + Sync + 'static {
    const COOKIE: &'static str;
    /// Where the cookie is sent.
    const PATH: &'static str;
    const LOGIN: &'static str;
    /// SameSite: `Strict` for the admin; `Lax` for the portal, whose one-time
    /// link is opened from the app's own site.
    const SAME_SITE: &'static str;
    /// Whether its sessions are the admin's (else a user's).
    const ADMIN: bool;
}

pub struct AdminArea;
pub struct PortalArea;

impl Area for AdminArea {
    const COOKIE: &'static str = "tollgate_ui";
    const PATH: &'static str = "/ui";
    const LOGIN: &'static str = "/ui/login";
    const SAME_SITE: &'static str = "Strict";
    const ADMIN: bool = true;
}

impl Area for PortalArea {
    const COOKIE: &'static str = "tollgate_portal";
    const PATH: &'static str = "/portal";
    const LOGIN: &'static str = "/portal/login";
    const SAME_SITE: &'static str = "Lax";
    const ADMIN: bool = false;
}

/// The cookie that ties a sign-in form to the browser that loaded it.
const SIGNIN_COOKIE: &str = "tollgate_signin";

/// The value of cookie `name`, if the request sent it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether browsers reach this service over https: the configured public
/// URL says so, or a trusted proxy does.
pub fn is_https(state: &AppState, headers: &HeaderMap) -> bool {
    match &state.config.web.public_url {
        Some(url) => url.starts_with("https://"),
        None => {
            state.config.trust_forwarded_for
                && headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https")
        }
    }
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, same_site: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}");
    // Names, base62 values and numbers only: always a valid header value.
    HeaderValue::from_str(&text).expect("a cookie of plain characters")
}

/// A signed-in session of area `A`.
pub struct Session<A> {
    raw_id: String,
    pub record: WebSession,
    _area: PhantomData<A>,
}

impl<A: Area> Session<A> {
    /// The token every form of this session carries.
    pub fn csrf(&self, key: &SigningKey) -> String {
        key.sign("csrf", &[self.raw_id.as_bytes()])
    }

    /// The user of a portal session.
    pub fn user(&self) -> Option<&UserId> {
        match &self.record.owner {
            SessionOwner::User { id, .. } => Some(id),
            SessionOwner::Admin => None,
        }
    }

    /// Starts a session: stores its hash and returns the cookie to set.
    pub async fn start(
        state: &AppState,
        headers: &HeaderMap,
        owner: SessionOwner,
        scopes: Scopes,
    ) -> Result<HeaderValue, WebError> {
        let raw_id = base62::random(32);
        let now = Timestamp::now();
        let ttl = state.config.web.session_ttl.as_secs() as i64;
        let record = WebSession {
            id_hash: KeyHash::of(&raw_id),
            owner,
            scopes,
            created_at: now,
            expires_at: now.plus_seconds(ttl),
        };
        state.store.insert_web_session(&record).await.map_err(crate::error::ApiError::from)?;
        Ok(set_cookie(A::COOKIE, &raw_id, A::PATH, ttl, A::SAME_SITE, is_https(state, headers)))
    }

    /// Ends the session in the store and returns the cookie that clears it.
    pub async fn end(self, state: &AppState) -> Result<HeaderValue, WebError> {
        state.store.delete_web_session(&self.record.id_hash).await.map_err(crate::error::ApiError::from)?;
        Ok(set_cookie(A::COOKIE, "", A::PATH, 0, A::SAME_SITE, false))
    }

    /// The request's session, if it has a live one of this area.
    async fn load(state: &AppState, headers: &HeaderMap) -> Result<Option<Session<A>>, WebError> {
        let Some(raw_id) = cookie(headers, A::COOKIE).filter(|v| !v.is_empty() && v.len() <= 64) else {
            return Ok(None);
        };
        let now = Timestamp::now();
        let hash = KeyHash::of(raw_id);
        let Some(record) = state.store.web_session(&hash, now).await.map_err(crate::error::ApiError::from)? else {
            return Ok(None);
        };
        let fits = match &record.owner {
            SessionOwner::Admin => A::ADMIN,
            SessionOwner::User { .. } if A::ADMIN => false,
            SessionOwner::User { key, .. } => match key {
                // A session opened with a key lasts only as long as the key.
                Some(key_id) => match state.store.key(key_id).await {
                    Ok(k) => k.refusal(now).is_none(),
                    Err(tollgate_store::StoreError::NotFound(_)) => false,
                    Err(e) => return Err(crate::error::ApiError::from(e).into()),
                },
                None => true,
            },
        };
        Ok(fits.then(|| Session { raw_id: raw_id.to_owned(), record, _area: PhantomData }))
    }
}

/// A request without a live session goes to the sign-in page.
fn to_login<A: Area>() -> Response {
    Redirect::to(A::LOGIN).into_response()
}

impl<A: Area> FromRequestParts<AppState> for Session<A> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match Session::<A>::load(state, &parts.headers).await {
            Ok(Some(session)) => Ok(session),
            Ok(None) => Err(to_login::<A>()),
            Err(e) => Err(e.into_response()),
        }
    }
}

/// A posted form of a signed-in session, its CSRF token checked.
pub struct Posted<A, T> {
    pub session: Session<A>,
    pub form: T,
    raw: Bytes,
    client_ip: Option<std::net::IpAddr>,
}

impl<A, T> Posted<A, T> {
    /// Who sent the form, for the audit log: the admin, the key a portal
    /// session was opened with, or the user of a one-time portal link.
    pub fn origin(&self) -> Origin {
        let actor = match &self.session.record.owner {
            SessionOwner::Admin => Actor::Admin,
            SessionOwner::User { key: Some(key), .. } => Actor::Key(key.clone()),
            SessionOwner::User { id, key: None } => Actor::Portal(id.clone()),
        };
        Origin { actor, client_ip: self.client_ip }
    }

    /// Every value of a field that may repeat (a group of checkboxes).
    pub fn all(&self, name: &str) -> Vec<String> {
        form_urlencoded::parse(&self.raw).filter(|(k, _)| k == name).map(|(_, v)| v.into_owned()).collect()
    }
}

#[derive(serde::Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// Parses a form body as `T`, naming the field at fault.
pub fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WebError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(bytes));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let message = without_values(&e.into_inner().to_string());
        WebError::invalid(&field, &message)
    })
}

impl<A: Area, T: DeserializeOwned + Send> FromRequest<AppState> for Posted<A, T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let session = Session::<A>::from_request_parts(&mut parts, state).await?;
        let client_ip = crate::auth::client_ip(&parts, state.config.trust_forwarded_for);
        let req = Request::from_parts(parts, body);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| WebError::invalid("body", "the form could not be read").into_response())?;
        let CsrfField { csrf } = parse_form(&bytes).map_err(IntoResponse::into_response)?;
        if !bool::from(csrf.as_bytes().ct_eq(session.csrf(&state.web_key).as_bytes())) {
            return Err(WebError::Csrf.into_response());
        }
        let form = parse_form(&bytes).map_err(IntoResponse::into_response)?;
        Ok(Posted { session, form, raw: bytes, client_ip })
    }
}

/// The token of a sign-in form, and the cookie that ties it to this browser
/// (no session exists yet to tie it to).
pub fn signin_token(state: &AppState, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    match cookie(headers, SIGNIN_COOKIE).filter(|v| v.len() == 32) {
        Some(nonce) => (state.web_key.sign("signin", &[nonce.as_bytes()]), None),
        None => {
            let nonce = base62::random(32);
            let cookie = set_cookie(SIGNIN_COOKIE, &nonce, "/", 3600, "Strict", is_https(state, headers));
            (state.web_key.sign("signin", &[nonce.as_bytes()]), Some(cookie))
        }
    }
}

/// Checks a sign-in form's token against the browser's sign-in cookie.
pub fn check_signin_token(state: &AppState, headers: &HeaderMap, token: &str) -> Result<(), WebError> {
    match cookie(headers, SIGNIN_COOKIE) {
        Some(nonce) if state.web_key.verify("signin", &[nonce.as_bytes()], token) => Ok(()),
        _ => Err(WebError::Csrf),
    }
}
